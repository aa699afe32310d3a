"""Training: the :class:`~symbreak.train.trainer.Trainer` and what it needs below the features.

Modules: :mod:`.trainer` (the run, in phases), :mod:`.step` (one optimizer step, also timed by
``bench train``), :mod:`.validation` (held-out loss), :mod:`.heldout` (the held-out set and its
fingerprint), :mod:`.checkpoint` (safetensors + JSON, atomic), :mod:`.lock` (one trainer per
run directory), :mod:`.run_dir`, :mod:`.metrics` (metrics.csv), :mod:`.loggers` (TensorBoard,
W&B), :mod:`.noether` and :mod:`.noether_log` (the charges and their logging),
:mod:`.init_from` and :mod:`.gpt2_weights` (starting from other weights), :mod:`.distributed`
and :mod:`.fsdp` (DDP, FSDP). Nothing is imported here: ``import symbreak.train.trainer``.
"""
