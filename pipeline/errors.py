"""Errors every layer may raise. Kept at the bottom of the package so that ``io`` and ``data`` (and the
tasks above them) can raise the same error without importing each other."""

from __future__ import annotations

__all__ = ["InputError", "subject_prefix"]


class InputError(ValueError):
    """Bad input data. The message starts with the subject ID (when known), names the file, says the problem.

    Command-line entry points print it as one line and exit non-zero (no traceback).
    """


def subject_prefix(subject_id: str | None) -> str:
    """``"1BA001: "`` for a known subject, ``""`` otherwise: the start of every :class:`InputError` message."""
    return f"{subject_id}: " if subject_id else ""
