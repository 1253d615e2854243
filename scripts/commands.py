"""The commands a user would type, run from a script: printed first, so a demo or benchmark log is a recipe.

Shared by :mod:`scripts.demo`, :mod:`scripts.benchmark_quality` and :mod:`scripts.benchmark_chest`, with the
``--workers`` option of the scripts that make phantoms.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def run(cmd: Sequence[str]) -> float:
    """Print ``cmd`` as a shell line, run it (an error stops the caller), return its wall-clock seconds."""
    print("\n$ " + shlex.join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True)
    return time.perf_counter() - start


def bundle_command(config: str | Path, **overrides: object) -> list[str]:
    """``python -m monai.bundle run --config_file CONFIG --logging_file <CONFIG's folder>/logging.conf
    --key value ...``; each override as ``str(value)``.

    Booleans as ``True``/``False``: the bundle CLI (fire) reads those as booleans (the bundles'
    ``as_flag`` accepts both), whereas a bare ``false`` would be a truthy string to fire.
    """
    config = Path(config)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config),
           "--logging_file", str(config.parent / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def module_command(module: str, *args: object) -> list[str]:
    """``python -m MODULE ARGS`` with this interpreter."""
    return [sys.executable, "-m", module, *(str(a) for a in args)]


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """How the user started ``module`` (for the record in a report): ``python -m module ARGS``."""
    return shlex.join(["python", "-m", module, *(argv if argv is not None else sys.argv[1:])])


#: The most processes ``--workers`` starts by default: each holds one subject (peak 0.5 GB for a chest phantom,
#: 2.6 GB for a 1 mm detailed head), so a many-core machine is not run out of memory by default.
DEFAULT_MAX_WORKERS = 8


def add_workers_option(parser: argparse.ArgumentParser, *,
                       what: str = "making phantoms; each holds one subject, up to 2.6 GB for a 1 mm detailed head",
                       same: str = "the same phantoms") -> None:
    """``--workers N``: processes that work side by side, one subject each (default: the cores this process may
    use, at most :data:`DEFAULT_MAX_WORKERS`). Every seed is fixed before any subject is made, so the files are
    the same whatever ``N``. ``what`` and ``same`` complete the help text."""
    from pipeline.data.parallel import available_cores

    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        return value

    parser.add_argument("--workers", type=positive, default=min(available_cores(), DEFAULT_MAX_WORKERS), metavar="N",
                        help=f"processes side by side (default %(default)s: the cores this process may use, at most "
                             f"{DEFAULT_MAX_WORKERS}), {what}; {same} whatever N")
