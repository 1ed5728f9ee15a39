"""Errors that name what went wrong and where, so a user can fix their data or config."""
from __future__ import annotations

from pathlib import Path


class MedvlpError(Exception):
    """Base class for all errors raised on purpose by medvlp."""


class DataError(MedvlpError):
    """A data file or record could not be used.

    The message always names the file (and the record or field when there is one) and what was
    expected, e.g. ``/data/x.npz: truncated or not a zip archive (expected an .npz with keys
    train_images, train_labels)``.
    """

    def __init__(self, path: str | Path | None, problem: str, expected: str | None = None,
                 record: str | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.expected = expected
        self.record = record
        where = self.path or "<data>"
        if record is not None:
            where = f"{where} [{record}]"
        msg = f"{where}: {problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)


class ConfigError(MedvlpError):
    """A configuration value is missing, of the wrong type or inconsistent."""
