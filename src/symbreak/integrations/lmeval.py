"""lm-evaluation-harness on symbreak checkpoints: the ``symbreak`` model of ``lm_eval``.

::

    python -m symbreak.integrations.lmeval run --model symbreak \\
        --model_args run=RUN_DIR,checkpoint=best --tasks hellaswag

    import symbreak.integrations.lmeval  # registers "symbreak"
    lm_eval.simple_evaluate(model="symbreak", model_args="run=RUN_DIR", tasks=[...])

lm-eval discovers only its own models, so the ``symbreak`` name exists once this module is
imported; ``python -m symbreak.integrations.lmeval`` is lm-eval's own command line with it
registered. Needs the extra: ``pip install 'symbreak[lm-eval]'``.

Scoring is symbreak's: the run's model in eval mode (biases at ``sb.eval``, default the mean),
GPT-2 BPE as in training (a literal ``<|endoftext|>`` in text is text), vocabulary padding
masked. A request longer than ``block_size + 1`` tokens keeps its rightmost tokens (the
continuation is never cut); how many were truncated is counted in ``truncated`` and reported
once per call.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch
import torch.nn.functional as F

try:
    # lm-eval fills its registry with its own models only while it is empty: load them first,
    # or registering "symbreak" would hide "hf" and the others.
    import lm_eval.models  # noqa: F401
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # an optional extra
    raise ImportError(
        f"symbreak's lm-eval model needs lm-evaluation-harness ({e}); "
        "pip install 'symbreak[lm-eval]'"
    ) from None

from symbreak.data.tokenizer import EOT_ID, decode, encode
from symbreak.eval.sample import generate
from symbreak.eval.scoring import BatchLogits
from symbreak.runs import load_run

log = logging.getLogger(__name__)


class SymbreakLM(TemplateLM):
    """A symbreak run as an lm-eval model (loglikelihood, rolling, generate_until)."""

    def __init__(
        self,
        run: str,
        checkpoint: str = "latest",
        sb_eval: str | None = None,
        device: str | None = None,
        batch_size: int | str = 8,
        max_gen_toks: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        device = str(device or "auto")
        if device.startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda:0 unless told otherwise; like its hf model,
            # fall back to the CPU rather than fail.
            log.warning("CUDA is not available; running on the CPU")
            device = "cpu"
        self.run = load_run(run, str(checkpoint), sb_eval=sb_eval, device=device)
        self.model = self.run.model.eval()
        self._batch_size = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self.block_size = self.run.cfg.model.block_size
        self.truncated = 0

    # ---- what TemplateLM needs -----------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return EOT_ID

    @property
    def max_length(self) -> int:
        return self.block_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self.run.device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kw: Any) -> list:
        return encode(string)

    def tok_decode(self, tokens: list[int], **kw: Any) -> str:
        return decode(tokens)

    # ---- scoring ---------------------------------------------------------------------------

    @torch.inference_mode()
    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """``sum_t log p(cont_t | ctx, cont_<t)`` and whether greedy decoding gives ``cont``.

        Requests are scored longest first in batches of ``batch_size`` (right-padded: causal
        attention never looks at the padding), then put back in order."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1] + requests[i][2]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        before = self.truncated
        for start in range(0, len(order), self._batch_size):
            chunk = order[start : start + self._batch_size]
            seqs, conts = [], []
            for i in chunk:
                _, ctx, cont = requests[i]
                whole = (ctx + cont)[-(self.block_size + 1) :]
                self.truncated += len(ctx) + len(cont) > self.block_size + 1
                seqs.append(whole[:-1])
                conts.append(cont)
            width = max(len(s) for s in seqs)
            idx = torch.zeros(len(seqs), width, dtype=torch.long)
            for r, s in enumerate(seqs):
                idx[r, : len(s)] = torch.tensor(s)
            logits = BatchLogits(self.model, idx.to(self.device))
            for r, (i, s, cont) in enumerate(zip(chunk, seqs, conts, strict=True)):
                cols = torch.arange(len(s) - len(cont), len(s), device=self.device)
                lp = F.log_softmax(logits.at(torch.full_like(cols, r), cols), dim=-1)
                target = torch.tensor(cont, device=self.device)
                score = lp.gather(1, target[:, None]).sum().item()
                out[i] = (score, bool((lp.argmax(-1) == target).all()))
        if self.truncated > before:
            log.warning(
                "%d of %d requests were longer than block_size+1=%d tokens; their leftmost "
                "context tokens were dropped",
                self.truncated - before,
                len(requests),
                self.block_size + 1,
            )
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list:
        """Full-text log-likelihood in disjoint windows of at most ``block_size`` predictions,
        each with as much preceding context as fits (lm-eval's own windowing)."""
        windows, owner = [], []
        for n, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (score, _) in zip(owner, self._loglikelihood_tokens(windows), strict=True):
            totals[n] += score
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or, with ``do_sample`` and a temperature, sampled) continuation, cut at the
        first of the ``until`` strings; the context keeps its last ``block_size`` tokens."""
        out = []
        for context, gen_kwargs in (req.args for req in requests):
            kw = dict(gen_kwargs)
            until = kw.get("until") or [decode([EOT_ID])]
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kw.get("temperature", 0.0)) if kw.get("do_sample") else 0.0
            sample = generate(
                self.model,
                context,
                max_new_tokens=int(kw.get("max_gen_toks", self.max_gen_toks)),
                temperature=temperature,
                top_k=None,
                seed=0,
                device=self.device,
            )
            text = sample.text if hasattr(sample, "text") else decode(sample.new_ids)
            for stop in until:
                if stop and stop in text:
                    text = text.split(stop)[0]
            out.append(text)
        return out


def main() -> None:
    """lm-eval's command line with the ``symbreak`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "python -m symbreak.integrations.lmeval"
    cli_evaluate()


if __name__ == "__main__":
    # Run as a script this file is "__main__"; register the class of the real module instead.
    import importlib

    importlib.import_module("symbreak.integrations.lmeval").main()
else:
    register_model("symbreak")(SymbreakLM)
