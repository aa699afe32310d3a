"""Puzzle items from reasoning-gym (optional extra ``symbreak[reasoning-gym]``).

``--suite reasoning-gym:TASK[,TASK...]`` turns seeded reasoning-gym items into completion
items scored like the built-in suite (:mod:`symbreak.eval.scoring`): the teacher-forced
cross-entropy of the answer (``answer_ce``) and the Top-1/Top-5/rank of its first token.

Item ``i`` of task ``T`` under suite seed ``S`` is reasoning-gym's
``create_dataset(T, seed=S, size=N)[i]``, so anyone with reasoning-gym can rebuild the exact
items without symbreak. The prompt is the question followed by ``"\\nAnswer:"`` and the
expected continuation is ``" " + answer``: a bare GPT-style model has no chat template, and the
leading space makes the answer's first token the word as it appears in running text.

Not every task fits: some have no single reference answer (``answer`` is ``None``:
reasoning-gym scores them with a verifier, e.g. ``propositional_logic``), and some need files
or the network to build. Those are refused with one line naming the task, rather than scored
on a subset. Note also that small models read long questions through their ``block_size``
window: the prompt is truncated on the left and the truncation is reported per item.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from collections.abc import Sequence

from symbreak.errors import SymbreakError
from symbreak.eval.puzzles import Item

PREFIX = "reasoning-gym:"
PIN = "reasoning-gym==0.1.25"
ANSWER_CUE = "\nAnswer:"


def parse_suite(value: str) -> tuple[str, ...] | None:
    """The task names of a ``reasoning-gym:TASK[,TASK...]`` suite, or ``None`` for another
    suite name. Empty or repeated task names are an error."""
    if not value.startswith(PREFIX):
        return None
    tasks = tuple(t.strip() for t in value[len(PREFIX) :].split(","))
    if not tasks or any(not t for t in tasks):
        raise SymbreakError(
            f"--suite {value!r}: name one or more tasks, e.g. "
            "reasoning-gym:syllogism,knights_knaves"
        )
    if len(set(tasks)) != len(tasks):
        raise SymbreakError(f"--suite {value!r}: a task is named twice")
    return tasks


def _module():
    if importlib.util.find_spec("reasoning_gym") is None:
        raise SymbreakError(
            f"--suite reasoning-gym needs the reasoning-gym package, which is not installed: "
            f"pip install 'symbreak[reasoning-gym]' (or pip install {PIN})"
        )
    # reasoning-gym's import prints and warns about optional pieces it does not need here.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        import reasoning_gym
    return reasoning_gym


def available_tasks() -> list[str]:
    """Every task name the installed reasoning-gym registers."""
    _module()
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def reasoning_gym_items(tasks: Sequence[str], seed: int, per_task: int) -> list[Item]:
    """``per_task`` completion items of each task, in the order given, category = task name."""
    rg = _module()
    known = available_tasks()
    for task in tasks:
        if task not in known:
            raise SymbreakError(
                f"--suite reasoning-gym: unknown task '{task}'; reasoning-gym "
                f"{rg_version()} has {len(known)} tasks, e.g. syllogism, knights_knaves, "
                "family_relationships, letter_counting (python -c \"import reasoning_gym."
                'factory as f; print(sorted(f.DATASETS))" lists them)'
            )
    items: list[Item] = []
    for task in tasks:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                entries = list(rg.create_dataset(task, seed=seed, size=per_task))
        except Exception as e:  # a task's own generator: any failure is the task's, say which
            raise SymbreakError(
                f"--suite reasoning-gym: task '{task}' could not be built "
                f"({type(e).__name__}: {e}); choose another task"
            ) from None
        for i, entry in enumerate(entries):
            answer = entry.get("answer")
            if not isinstance(answer, str) or not answer.strip():
                raise SymbreakError(
                    f"--suite reasoning-gym: task '{task}' has no reference answer for item "
                    f"{i} (reasoning-gym scores it with a verifier), so it cannot be scored "
                    "by teacher forcing; choose another task"
                )
            items.append(
                Item(
                    category=task,
                    prompt=str(entry["question"]).rstrip() + ANSWER_CUE,
                    expected=" " + answer.strip(),
                    source=f"reasoning-gym:{task}:{i}",
                )
            )
    return items


def rg_version() -> str:
    from importlib.metadata import version

    return version("reasoning-gym")
