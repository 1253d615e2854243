"""Figure of the lung fields: where the ribs left in a predicted DE soft-tissue image show, for the X-ray docs.

    python -m scripts.lung_field_figure --data RUN --model LABEL=MODEL_DIR [--model LABEL=MODEL_DIR ...]
        [--sets test real] [--index 0] [--sigma-px 4] [--out lung_field_leak.png]

``RUN`` is a ``scripts.benchmark_chest`` run (its ``drr/`` sets: SE, noiseless DE soft, lung path) and each
``MODEL_DIR`` a recipe's folder of a benchmark run on those DRRs (``predictions_phantoms/``,
``predictions_real/`` and the matching ``evaluation_*/results.csv``). One row per test set (the ``--index``-th
image of ``drr/<set>/manifest.csv``), columns: SE, the true DE soft image, then per model its predicted DE soft
and the prediction minus the truth, each high-passed (the image minus its Gaussian blur of ``--sigma-px``
pixels, as the detail loss of ``networks.losses``: rib shadows, not the body's load) and shown only in the lung
fields (rays through at least ``pipeline.xray.evaluation.LUNG_FIELD_MIN_MM`` of lung). The titles give each
model's mean lung-field bone leak over the whole test set, read from its evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.io.images2d import load_image_2d
from pipeline.xray.evaluation import LUNG_FIELD_MIN_MM
from pipeline.xray.image_measures import high_pass

#: Test set name in ``drr/`` -> (prediction folder suffix, row label).
SETS = {"test": ("phantoms", "held-out phantom"), "real": ("real", "real CT"), "test_systems": ("systems", "drawn system")}


def mean_lung_leak(model_dir: Path, suffix: str) -> float:
    """Mean ``bone_leak_lung`` of the model's predictions over a test set (NaN without that measure)."""
    results = pd.read_csv(model_dir / f"evaluation_{suffix}" / "results.csv")
    rows = results[(results["method"] == "pix2pix") & (results["metric"] == "bone_leak_lung")]
    return float(rows["value"].mean()) if len(rows) else float("nan")


def parse_models(specs: list[str]) -> dict[str, Path]:
    models = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"lung_field_figure: --model expects LABEL=MODEL_DIR, got {spec!r}")
        models[label] = Path(path)
    return models


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a benchmark_chest run with drr/ sets")
    p.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR (repeatable)")
    p.add_argument("--sets", nargs="+", default=["test", "real"], choices=sorted(SETS))
    p.add_argument("--index", type=int, default=0, help="which image of each set's manifest")
    p.add_argument("--sigma-px", type=float, default=4.0)
    p.add_argument("--out", type=Path, default=Path("lung_field_leak.png"))
    args = p.parse_args(argv)
    models = parse_models(args.model)
    needed = [args.data / "drr" / name / "manifest.csv" for name in args.sets]
    needed += [model_dir / f"evaluation_{SETS[name][0]}" / "results.csv" for model_dir in models.values() for name in args.sets]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise InputError(f"lung_field_figure: missing {', '.join(missing)} (a benchmark_chest run and its recipes' folders)")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 + 2 * len(models)
    fig, axes = plt.subplots(len(args.sets), ncols, figsize=(2.3 * ncols, 2.5 * len(args.sets)), squeeze=False)
    for row, name in zip(axes, args.sets):
        suffix, label = SETS[name]
        folder = args.data / "drr" / name
        record = pd.read_csv(folder / "manifest.csv").iloc[args.index]
        image_id = record["projection_id"]

        def load(path) -> np.ndarray:
            return load_image_2d(Path(path) if Path(path).is_absolute() else folder / path)[0]

        lung = load(record["lung_path"]) >= LUNG_FIELD_MIN_MM
        truth = high_pass(load(record["de_soft_noiseless"]), args.sigma_px)
        panels = [("SE", high_pass(load(record["se"]), args.sigma_px)), ("true DE soft", truth)]
        for model, model_dir in models.items():
            pred = load_image_2d(model_dir / f"predictions_{suffix}" / "de_soft" / f"{image_id}.nii.gz")[0]
            pred = high_pass(pred, args.sigma_px)
            leak = mean_lung_leak(model_dir, suffix)
            panels += [(f"{model}\n(lung-field leak {leak:.2f})", pred), (f"{model}: pred − true", pred - truth)]
        # one grey window per row (the images), the differences at the same scale: equal contrast = equal signal
        window = np.percentile(np.abs(truth[lung]), 99) if lung.any() else 1.0
        for ax, (title, img) in zip(row, panels):
            shown = np.where(lung, img, np.nan)
            rows_any, cols_any = np.nonzero(lung)
            ax.imshow(shown, cmap="gray", vmin=-window, vmax=window)
            if rows_any.size:
                ax.set_xlim(cols_any.min() - 2, cols_any.max() + 2)
                ax.set_ylim(rows_any.max() + 2, rows_any.min() - 2)
            ax.set_title(f"{label}: {title}", fontsize=7)
            ax.axis("off")
    fig.suptitle(f"Lung fields (rays crossing ≥ {LUNG_FIELD_MIN_MM:.0f} mm of lung), detail below {args.sigma_px:g} px: "
                 "rib shadows the DE soft image should not have", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
