"""User-facing errors.

Anything a user can cause (bad config, missing or corrupt file, NaN loss, ...) raises a
subclass of :class:`SymbreakError` whose message is one line saying what is wrong and what to
do. The CLI prints ``error: <message>`` and exits non-zero, without a traceback.
"""


class SymbreakError(Exception):
    """Base class for errors whose message is meant for the user."""

    exit_code = 2


class ConfigError(SymbreakError):
    """An unknown key, a wrong type or an impossible combination in the config."""


class DataError(SymbreakError):
    """Missing, empty or corrupt data; a token id past the vocabulary."""


class CheckpointError(SymbreakError):
    """A missing, incomplete, corrupt or incompatible checkpoint."""


class TrainingError(SymbreakError):
    """Training cannot go on (non-finite loss, frozen optimizer, ...)."""


class ExperimentError(SymbreakError):
    """A bad grid file, a sweep that would change a trained cell, a report with nothing to say."""
