"""Text generation from a trained model: seeded, cropped to the context, never a fake token.

Why these rules: ids >= 50257 pad the vocabulary to a multiple of 64 and decode to nothing, so
they are masked out; generation stops at the end-of-text token (it ends a document); the
context is cropped to the last ``block_size`` tokens because learned positions go no further.
Sampling uses its own ``torch.Generator`` on the CPU, so a seed gives the same text on any
device, whatever else has used the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from symbreak.data import GPT2Tokenizer
from symbreak.data.tokenizer import Tokenizer
from symbreak.errors import SymbreakError
from symbreak.eval.scoring import BatchLogits


@dataclass
class Sample:
    prompt: str
    prompt_ids: list[int]
    new_ids: list[int]
    stopped_at_eot: bool
    tokenizer: Tokenizer = field(default_factory=GPT2Tokenizer)

    @property
    def text(self) -> str:
        """The generated continuation (the prompt not included)."""
        return self.tokenizer.decode(self.new_ids)


def _check(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    if max_new_tokens < 0:
        raise SymbreakError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise SymbreakError(f"--temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise SymbreakError(f"--top-k must be at least 1, got {top_k}")


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = 50,
    seed: int = 0,
    block_size: int | None = None,
    device: torch.device | str = "cpu",
    tokenizer: Tokenizer | None = None,
) -> Sample:
    """Continue ``prompt`` token by token.

    ``temperature`` 0 is greedy decoding; ``top_k`` keeps the k most likely tokens (None: all).
    An empty prompt starts from the end-of-text token, like a new document. ``tokenizer``:
    the run's (default GPT-2 BPE; a character-level run passes its own).
    """
    tok = tokenizer or GPT2Tokenizer()
    _check(max_new_tokens, temperature, top_k)
    if block_size is None:
        block_size = model.cfg.block_size  # type: ignore[union-attr]
    device = torch.device(device)
    prompt_ids = tok.encode(prompt)
    context = list(prompt_ids) or [tok.eot_id]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    new: list[int] = []
    stopped = False
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            window = context[-block_size:]
            idx = torch.tensor([window], dtype=torch.long, device=device)
            last = torch.tensor([len(window) - 1], device=device)
            logits = BatchLogits(model, idx).at(torch.zeros_like(last), last)[0].cpu()
            token = _pick(logits, temperature, top_k, gen)
            if token == tok.eot_id:
                stopped = True
                break
            new.append(token)
            context.append(token)
    finally:
        model.train(was_training)
    return Sample(prompt, prompt_ids, new, stopped, tok)


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> int:
    """One token id from masked float32 logits (V,); padding ids are already -inf."""
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.double(), dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))
