"""Errors a user can cause.

Anything raised as :class:`BlmkdError` (or a subclass) is printed by the CLI as one line
(``error: ...``) with a non-zero exit code and no traceback. Raise it for bad input: missing or
corrupt files, unknown names, impossible splits, mismatched checkpoints. Programming errors stay
ordinary exceptions so that they keep their tracebacks.
"""

from __future__ import annotations


class BlmkdError(Exception):
    """A problem the user can fix; the message is shown as a single line."""

    exit_code = 2


class DataError(BlmkdError):
    """A scene, ground truth or split cannot be read or built as asked."""


class ModelError(BlmkdError):
    """An unknown preset, a checkpoint that does not load or does not match the data."""


class ExportError(BlmkdError):
    """An export that cannot be made or that fails its check against PyTorch."""


class TrainingError(BlmkdError):
    """Training options that cannot work, or a run that stopped (NaN/Inf loss, a refused resume)."""


class RunError(BlmkdError):
    """A run folder that is in use, holds another run, or cannot be resumed as asked."""
