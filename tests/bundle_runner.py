"""Shared by the bundle tests: run a MONAI bundle command as a user would, take commands from the README,
read TensorBoard back."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    """``cmd`` from the repository root, one torch thread, output captured; never raises on its exit code."""
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _bundle_command(config: str, *args: str, launcher: list[str] | None = None) -> list[str]:
    return [*(launcher or [sys.executable]), "-m", "monai.bundle", "run", "--config_file", config, *args]


def run_command(cmd: list[str]) -> str:
    """Run ``cmd`` from the repository root (one torch thread); assert it succeeds; returns the log."""
    result = _run(cmd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


def run_bundle(config: str, *args: str, launcher: list[str] | None = None) -> str:
    """``python -m monai.bundle run --config_file CONFIG ARGS`` from the repository root; returns the log."""
    return run_command(_bundle_command(config, *args, launcher=launcher))


def bundle_error_line(config: str, *args: str) -> str:
    """Run a bundle command that must refuse its input: asserts a non-zero exit without a traceback (one clear
    line, not a page) and returns that last line of stderr."""
    result = _run(_bundle_command(config, *args))
    assert result.returncode != 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
    return result.stderr.strip().splitlines()[-1]


def readme_commands(heading: str, readme: Path = REPO / "README.md") -> list[list[str]]:
    """The commands of the first ``bash`` block under the ``## heading`` of ``readme``, each split as a shell
    would (continuation lines joined, comments dropped): so a test runs what the README tells users to type."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    block = re.search(r"```bash\n(.*?)```", text[start:], flags=re.DOTALL)
    assert block, f"no bash block under {heading!r}"
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_events(log_dir: Path) -> tuple[set[str], set[str]]:
    """Scalar and image tags in every TensorBoard event file of ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = set(), set()
    for event_file in Path(log_dir).glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        images |= set(acc.Tags()["images"])
    return scalars, images


def tiny_phantom_manifest(root: Path, *, seed: int) -> Path:
    """4 tiny head phantoms in ``root/data`` split 2/1/1 (train/val/test) into ``root/manifest.csv``."""
    from pipeline.data.manifest import assign_splits, find_subjects, write_manifest
    from pipeline.data.phantoms.head import write_phantom_dataset

    write_phantom_dataset(root / "data", n=4, seed=seed, size="tiny")
    table = assign_splits(find_subjects(root / "data"), val_fraction=0.25, test_fraction=0.25, seed=0)
    return write_manifest(table, root / "manifest.csv")
