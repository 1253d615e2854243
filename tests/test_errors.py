"""Errors at the bottom of the package: one-line reports of bad input, and yes/no options that mean what
the user typed (the bundle command line hands ``false`` over as the string "false", which is truthy)."""

from __future__ import annotations

import pytest

from pipeline.errors import InputError, as_flag, find_input_error
from pipeline.io.atomic import atomic_write


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("false", False), ("False", False),
                                                 ("TRUE", True), ("no", False), ("on", True), (0, False), (1, True)])
def test_as_flag_reads_what_the_user_typed(value, expected):
    assert as_flag(value, name="x") is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, "fasle"])
def test_as_flag_refuses_anything_else_naming_the_option(value):
    with pytest.raises(InputError, match=r"--overwrite .*not a yes/no value"):
        as_flag(value, name="overwrite")


def test_overwrite_false_as_text_does_not_overwrite(tmp_path):
    target = tmp_path / "sct.nii.gz"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        atomic_write(target, lambda tmp: tmp.write_bytes(b"new"), overwrite="false")
    assert target.read_bytes() == b"keep"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"), overwrite="true")
    assert target.read_bytes() == b"new"


def test_find_input_error_walks_the_cause_chain():
    try:
        try:
            raise InputError("1BA001: mr.nii.gz missing")
        except InputError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression") from inner
    except RuntimeError as outer:
        assert str(find_input_error(outer)) == "1BA001: mr.nii.gz missing"
    assert find_input_error(ValueError("other")) is None
