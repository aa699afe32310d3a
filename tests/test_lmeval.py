"""lm-evaluation-harness end to end on a tiny run, with a task defined here (offline)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from symbreak.data import EOT_ID, encode
from symbreak.eval.sample import generate
from symbreak.eval.scoring import mask_padding
from symbreak.model import GPT

# Before lm_eval / datasets are imported (inside the tests): offline, caches in a temp dir.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="symbreak-datasets-"))

ITEMS = [
    {"prompt": "Fire is", "choices": ["hot", "cold", "blue"], "answer": 0},
    {"prompt": "Two plus two is", "choices": ["four", "five"], "answer": 0},
    {"prompt": "The sky at noon is", "choices": ["green", "blue", "loud"], "answer": 1},
    {"prompt": "If it rains, the street gets", "choices": ["wet", "dry"], "answer": 0},
    {"prompt": "A cat says", "choices": ["woof", "meow"], "answer": 1},
    {"prompt": "One, two, three,", "choices": ["four", "seven", "one"], "answer": 0},
]

TASK = """task: symbreak_toy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


# A 2-layer run, every weight random (make_run's noise), one checkpoint at step 1.
RUN = {
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16},
    "checkpoints": ((1, None),),
    "noise": 0.5,
}


@torch.no_grad()
def logprob(gpt: GPT, context: list[int], cont: list[int]) -> float:
    """Straightforward reference: one forward, full logits, padding masked."""
    ids = torch.tensor([context + cont])
    lp = F.log_softmax(mask_padding(gpt(ids[:, :-1])[0][0].float()), dim=-1)
    pos = range(len(context) - 1, len(context) + len(cont) - 1)
    return sum(lp[p, t].item() for p, t in zip(pos, cont, strict=True))


@pytest.mark.slow
def test_harness_accuracy_equals_symbreak_scoring(tmp_path: Path, make_run) -> None:
    import lm_eval
    from lm_eval.api.registry import model_registry
    from lm_eval.tasks import TaskManager

    import symbreak.integrations.lmeval  # noqa: F401  (registers "symbreak")

    assert "symbreak" in model_registry and "hf" in model_registry  # lm-eval's own kept

    run_dir, gpt, _ = make_run(tmp_path, **RUN)
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "toy.yaml").write_text(TASK.format(data=data))
    res = lm_eval.simple_evaluate(
        model="symbreak",
        model_args=f"run={run_dir}",
        tasks=["symbreak_toy"],
        task_manager=TaskManager(include_path=str(tmp_path / "task")),
        batch_size=4,
    )
    acc = res["results"]["symbreak_toy"]["acc,none"]
    correct = []
    for it in ITEMS:
        scores = [logprob(gpt, encode(it["prompt"]), encode(" " + c)) for c in it["choices"]]
        correct.append(max(range(len(scores)), key=scores.__getitem__) == it["answer"])
    assert acc == sum(correct) / len(ITEMS)


def test_rolling_generation_and_truncation(tmp_path: Path, make_run) -> None:
    from symbreak.integrations.lmeval import SymbreakLM

    run_dir, gpt, _ = make_run(tmp_path, **RUN)
    lm = SymbreakLM(run=str(run_dir), batch_size=2)
    short, long = "To be, or not to be", "All the world's a stage, and all the men " * 3
    rolled = lm.loglikelihood_rolling(
        [SimpleNamespace(args=(short,)), SimpleNamespace(args=(long,))]
    )
    torch.testing.assert_close(rolled[0], logprob(gpt, [EOT_ID], encode(short)), atol=1e-4, rtol=0)
    # The long text (> block_size tokens): windows of 16 predictions, each with full context.
    toks = encode(long)
    want = logprob(gpt, [EOT_ID], toks[:16])
    for s in range(16, len(toks), 16):
        cont = toks[s : s + 16]
        ctx = toks[max(0, s + len(cont) - 17) : s]
        want += logprob(gpt, ctx, cont)
    torch.testing.assert_close(rolled[1], want, atol=1e-3, rtol=0)
    # loglikelihood: a request past block_size keeps its right end and is counted.
    ctx, cont = encode(long), encode(" stage")
    ((score, _),) = lm._loglikelihood_tokens([(None, ctx, cont)])
    assert lm.truncated == 1
    torch.testing.assert_close(
        score, logprob(gpt, ctx[-(17 - len(cont)) :], cont), atol=1e-4, rtol=0
    )
    (text,) = lm.generate_until(
        [SimpleNamespace(args=("Fire is", {"until": ["\n"], "max_gen_toks": 6}))]
    )
    greedy = generate(gpt, "Fire is", max_new_tokens=6, temperature=0.0, top_k=None).text
    assert text == greedy.split("\n")[0]
