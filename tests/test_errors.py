"""Errors at the bottom of the package: one-line reports of bad input, and yes/no options that mean what
the user typed (the bundle command line hands ``false`` over as the string "false", which is truthy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.errors import InputError, as_flag, as_optional_number, find_input_error
from pipeline.io.atomic import atomic_write


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("false", False), ("False", False),
                                                 ("TRUE", True), ("no", False), ("on", True), (0, False), (1, True)])
def test_as_flag_reads_what_the_user_typed(value, expected):
    assert as_flag(value, name="x") is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, "fasle"])
def test_as_flag_refuses_anything_else_naming_the_option(value):
    with pytest.raises(InputError, match=r"--overwrite .*not a yes/no value"):
        as_flag(value, name="overwrite")


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("null", None), ("None", None), (" NULL ", None),
                                                 ("", None), (0.25, 0.25), ("0.25", 0.25), (3, 3.0), ("1e-1", 0.1)])
def test_as_optional_number_reads_null_as_off(value, expected):
    assert as_optional_number(value, name="x") == expected


@pytest.mark.parametrize("value", ["tenth", True, [0.1]])
def test_as_optional_number_refuses_anything_else_naming_the_option(value):
    with pytest.raises(InputError, match=r"--val_max_share .*not a number or null"):
        as_optional_number(value, name="val_max_share")


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


@pytest.mark.parametrize(("raised", "one_line"), [
    ("InputError('1BA001: mr.nii.gz: not a NIfTI')", "error: 1BA001: mr.nii.gz: not a NIfTI"),
    ("FileExistsError('out/summary.csv exists; pass --overwrite true to replace it')",
     "error: out/summary.csv exists; pass --overwrite true to replace it"),
])
def test_bad_input_and_refused_overwrites_are_one_line_other_errors_keep_the_traceback(raised, one_line):
    code = ("from pipeline.errors import InputError, install_one_line_errors\n"
            "install_one_line_errors()\n"
            "try:\n"
            f"    raise {raised}\n"
            "except Exception as inner:\n"
            "    raise RuntimeError('Failed to evaluate ConfigExpression') from inner\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and result.stderr.strip() == one_line
    bug = subprocess.run([sys.executable, "-c", "from pipeline.errors import install_one_line_errors\n"
                          "install_one_line_errors(); raise KeyError('bug')"],
                         capture_output=True, text=True, check=False)
    assert bug.returncode != 0 and "Traceback" in bug.stderr
