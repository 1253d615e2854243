"""What the quality benchmarks share (:mod:`scripts.benchmark_quality`, :mod:`scripts.benchmark_chest`):
held-out phantom sets, a run's validation curve and iteration count, Markdown cells, the curve plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

#: Seed of the held-out phantoms (``--test-seed``; training phantoms: ``--train-seed`` 0) and the number of their
#: first subject ID (1BD901, 2TP901, ...: no ID is in both sets).
TEST_SEED = 1000
TEST_FIRST_ID = 901


def write_phantom_sets(write_dataset: Callable[..., list[Path]], out: Path, *, n_trainval: int, n_test: int,
                       train_seed: int, test_seed: int, size: object,
                       trainval_options: Mapping[str, object] | None = None,
                       workers: int = 1) -> tuple[list[Path], list[Path]]:
    """Training/validation phantoms from ``train_seed`` in ``out/trainval``, held-out ones from
    ``test_seed`` in ``out/test`` (other anatomy, not only other views), numbered from :data:`TEST_FIRST_ID`
    so no ID is in both sets. ``write_dataset(folder, n=, seed=, size=, progress=, first_id=)`` writes one set
    (``pipeline.data.phantoms.head.write_phantom_dataset`` or ``...chest_dataset.write_chest_dataset``;
    ``workers=`` too).
    ``trainval_options``: further keywords for the training/validation set only (e.g. the chest phantoms'
    ``contrast``), so the held-out set stays the one every run is compared on. Returns ``(trainval folders,
    test folders)``. ``workers``: processes making subjects side by side (the same files whatever the number)."""
    trainval = write_dataset(out / "trainval", n=n_trainval, seed=train_seed, size=size, progress=True,
                             workers=workers, **(trainval_options or {}))
    test = write_dataset(out / "test", n=n_test, seed=test_seed, size=size, progress=True, first_id=TEST_FIRST_ID,
                         workers=workers)
    return trainval, test


def validation_curve(log_dir: Path, *, tag: str) -> pd.DataFrame:
    """``minutes, <tag>`` from the TensorBoard scalars of a run: every value of the scalar whose name ends
    with ``tag``, minutes since the run's first scalar (its first training iteration)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points, start = [], None
    for event_file in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        for name in acc.Tags()["scalars"]:
            events = acc.Scalars(name)
            if events:
                start = min(start if start is not None else events[0].wall_time, events[0].wall_time)
            if name.endswith(tag):
                points += [(e.wall_time, e.value) for e in events]
    if start is None:
        return pd.DataFrame(columns=["minutes", tag])
    return pd.DataFrame([((t - start) / 60.0, v) for t, v in sorted(points)], columns=["minutes", tag])


def trained_iterations(work: Path) -> int:
    """Iterations the run managed in its budget (from ``latest.pt``): on a shared machine the same minutes
    buy different numbers of iterations, so the tables show both."""
    import torch

    checkpoint = torch.load(work / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    return int(checkpoint["trainer"]["iteration"])


def measured_on(command: str) -> str:
    """The first words of a benchmark report: when (UTC) and with which command."""
    return f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}`"


def cell(value: object, fmt: str = "{:.2f}") -> str:
    """A Markdown table cell: ``fmt`` of a number, empty for None / NaN (a metric that does not apply)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt.format(value) if isinstance(value, (int, float)) else str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a Markdown table (header, separator, rows)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def plot_curves(curves: Mapping[str, pd.DataFrame], path: Path, *, column: str, ylabel: str,
                points: Sequence[tuple[str, float, float, str, str]] = (),
                lines: Sequence[tuple[float, str, str, str]] = (),
                dashed: Mapping[str, pd.DataFrame] | None = None, dashed_label: str = "training",
                ylim: tuple[float, float] | None = None) -> Path:
    """Validation curves over training minutes, one per run, into the PNG ``path``.

    ``points``: ``(curve name, minutes, value, label, marker)`` drawn in that curve's colour (e.g. the
    held-out score at the end); ``lines``: ``(value, label, colour, linestyle)`` horizontal references
    (baselines, targets); ``dashed``: a second curve per run (same ``column``, e.g. the training loss in the
    same unit), dashed in that run's colour and labelled ``<name> (<dashed_label>)``; ``ylim``: the value axis
    (e.g. to keep the first iterations' large losses from squashing the rest).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {}
    for name, curve in curves.items():
        line, = ax.plot(curve["minutes"], curve[column], marker=".", label=f"{name} (validation)")
        colours[name] = line.get_color()
    for name, curve in (dashed or {}).items():
        ax.plot(curve["minutes"], curve[column], linestyle="--", linewidth=1, color=colours.get(name),
                label=f"{name} ({dashed_label})")
    for name, x, y, label, marker in points:
        ax.plot([x], [y], marker=marker, markersize=12, color=colours.get(name), linestyle="none", label=label)
    for y, label, colour, style in lines:
        ax.axhline(y, color=colour, linestyle=style, label=label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("training wall-clock minutes")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
