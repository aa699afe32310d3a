"""``symbreak <command>``: one entry point for every command.

The command line only: :data:`COMMANDS` names one module per command (``symbreak.cli.train``,
``symbreak.cli.eval`` ...), whose ``register(subparsers)`` holds the command's options and whose
handler turns them into a call of a library function (``symbreak.eval.evaluate_run``,
``symbreak.experiments.build_report`` ...) and prints. Building the parser imports no torch, so
``symbreak --help`` and every ``symbreak COMMAND --help`` answer at once.

User errors (:class:`~symbreak.errors.SymbreakError`) print one ``error: ...`` line and exit
with status 2; no traceback. What the machine refuses where no command expected it (an
``OSError`` such as a full disk or a denied permission, running out of memory) prints one line
too and exits with status 1. Set ``SYMBREAK_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from symbreak import __version__
from symbreak.allocator import reuse_freed_memory
from symbreak.errors import SymbreakError

# Every command, in the order ``symbreak --help`` lists them: name -> the module under
# symbreak.cli that defines it. Each module has ``register(subparsers)``, which adds the
# command's parser (and sets ``func``, its handler: ``args -> exit code``), and imports no
# torch: the handlers import the library when they run.
COMMANDS: dict[str, str] = {
    "train": "symbreak.cli.train",
    "finetune": "symbreak.cli.finetune",
    "prepare": "symbreak.cli.prepare",
    "eval": "symbreak.cli.eval",
    "compare": "symbreak.cli.compare",
    "sample": "symbreak.cli.sample",
    "bench": "symbreak.cli.bench",
    "sweep": "symbreak.cli.sweep",
    "report": "symbreak.cli.report",
    "noether": "symbreak.cli.noether",
    "analyze": "symbreak.cli.analyze",
    "probe": "symbreak.cli.probe",
    "export": "symbreak.cli.export",
}


def command_module(name: str) -> ModuleType:
    """The module that defines command ``name`` (see :data:`COMMANDS`)."""
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symbreak",
        description="Train GPT-style transformers with symmetry breaking in attention.",
    )
    parser.add_argument("--version", action="version", version=f"symbreak {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        command_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow options (`sweep GRID --jobs 2 train.seed=0`), which
    # argparse alone does not allow for a positional list.
    if (
        extra
        and hasattr(args, "overrides")
        and all("=" in a and not a.startswith("-") for a in extra)
    ):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    reuse_freed_memory()
    try:
        return args.func(args)
    except SymbreakError as e:
        if os.environ.get("SYMBREAK_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, MemoryError, RuntimeError) as e:
        # What the machine refuses (a full disk, a permission, memory) also ends in one line;
        # any other RuntimeError is a bug and keeps its traceback.
        if os.environ.get("SYMBREAK_DEBUG") or not _environmental(e):
            raise
        print(f"error: {_describe_environmental(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _environmental(e: BaseException) -> bool:
    return isinstance(e, OSError | MemoryError) or type(e).__name__ == "OutOfMemoryError"


def _describe_environmental(e: BaseException) -> str:
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (
        f"out of memory{' (' + first + ')' if first else ''}; use a smaller model, "
        "train.batch_size or train.micro_batch_size"
    )


if __name__ == "__main__":
    sys.exit(main())
