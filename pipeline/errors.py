"""Errors every layer may raise. Kept at the bottom of the package so that ``io`` and ``data`` (and the
tasks above them) can raise the same error without importing each other."""

from __future__ import annotations

import sys

__all__ = ["USER_ERRORS", "InputError", "as_flag", "find_input_error", "install_one_line_errors", "subject_prefix"]


class InputError(ValueError):
    """Bad input data. The message starts with the subject ID (when known), names the file, says the problem.

    Command-line entry points print it as one line and exit non-zero (no traceback).
    """


def subject_prefix(subject_id: str | None) -> str:
    """``"1BA001: "`` for a known subject, ``""`` otherwise: the start of every :class:`InputError` message."""
    return f"{subject_id}: " if subject_id else ""


#: What a command reports in one line: bad input, and an output it refuses to overwrite (a user's situation,
#: not a bug: the message names the file and says to pass overwrite).
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, FileExistsError)


def find_input_error(error: BaseException | None, kinds: tuple[type[BaseException], ...] = (InputError,),
                     ) -> BaseException | None:
    """The first error of ``kinds`` (default :class:`InputError`) in ``error``'s chain of causes (MONAI's
    bundle runner wraps it in a ``RuntimeError: Failed to evaluate ConfigExpression``), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kinds):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install_one_line_errors() -> None:
    """Make an uncaught :data:`USER_ERRORS` (also a wrapped one) print as ``error: <message>`` on one line
    instead of a page of traceback; the process still exits non-zero. Other errors keep their traceback.

    Called first by every bundle config (``initialize``) and script: a user's bad input is not a bug."""
    previous = sys.excepthook
    if getattr(previous, "one_line_input_errors", False):
        return

    def hook(exc_type, exc, traceback):
        error = find_input_error(exc, USER_ERRORS)
        if error is None:
            return previous(exc_type, exc, traceback)
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)

    hook.one_line_input_errors = True
    sys.excepthook = hook


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def as_flag(value: object, *, name: str) -> bool:
    """A yes/no option as a bool. The bundle command line (``python -m monai.bundle run ... --overwrite
    false``) hands ``false`` over as the *string* ``"false"``, which Python treats as true: a flag that
    decides whether files are overwritten must not follow that. Accepts bools, 0/1 and the words
    true/false, yes/no, on/off (any case); anything else is an :class:`InputError` naming the option."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise InputError(f"--{name} {value!r}: not a yes/no value (use true or false)")


_NULL = ("", "none", "null")


def as_optional_number(value: object, *, name: str) -> float | None:
    """An option that is a number or off, as a float or None. The bundle docs write "off" as JSON's ``null``,
    and the command line hands ``--val_budget_fraction null`` over as the *string* ``"null"`` (``None`` comes
    through as None): both mean None here. Numbers and numeric strings give a float; anything else is an
    :class:`InputError` naming the option."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NULL):
        return None
    if isinstance(value, bool):
        raise InputError(f"--{name} {value!r}: not a number or null")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"--{name} {value!r}: not a number or null") from None
