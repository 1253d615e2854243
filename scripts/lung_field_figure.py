"""Figure of the lung fields: where the ribs left in a predicted DE soft-tissue image show, for the X-ray docs.

    python -m scripts.lung_field_figure --data RUN --model LABEL=MODEL_DIR [--model LABEL=MODEL_DIR ...]
        [--sets phantoms real] [--index 0] [--sigma-px 4] [--out lung_field_leak.png]

``RUN`` is a ``scripts.benchmark_chest`` run (its test sets' manifests, ``scripts.chest_data.run_manifest``: SE,
noiseless DE soft, lung path) and each ``MODEL_DIR`` a recipe's folder of a benchmark run on those DRRs (``predictions_<set>/`` and
``evaluation_<set>/results.csv``). One row per test set (the ``--index``-th test image of its manifest), columns:
SE, the true DE soft image, then per model its predicted DE soft and the prediction minus the truth, each
high-passed (the image minus its Gaussian blur of ``--sigma-px`` pixels, as the detail loss of
``networks.losses``: rib shadows, not the body's load) and shown only in the lung fields (rays through at least
``pipeline.xray.evaluation.LUNG_FIELD_MIN_MM`` of lung). The titles give each model's mean lung-field bone leak
over the whole test set, read from its evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.io.images2d import load_image_2d
from pipeline.xray.evaluation import LUNG_FIELD_MIN_MM, require_prediction
from pipeline.xray.image_measures import high_pass
from scripts.chest_data import TEST_SETS, run_manifest

#: Short row labels of the benchmark's test sets (:data:`scripts.chest_data.TEST_SETS` has the long titles).
ROW_LABELS = {"phantoms": "held-out phantom", "real": "real CT", "systems": "drawn system",
              "real_unenhanced": "real CT, no contrast"}


def mean_lung_leak(model_dir: Path, test_set: str) -> float:
    """Mean ``bone_leak_lung`` of the model's predictions over a test set (NaN without that measure)."""
    results = pd.read_csv(model_dir / f"evaluation_{test_set}" / "results.csv")
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


def row_panels(data: Path, test_set: str, models: dict[str, Path], *, index: int, sigma_px: float,
               ) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """``(lung fields, [(title, high-passed image), ...])`` of one test set's ``index``-th test image: SE, the
    true DE soft image, then per model its prediction and the prediction minus the truth."""
    manifest_path = run_manifest(data, test_set)
    drr = manifest_path.parent  # paths in a manifest are relative to its folder
    manifest = pd.read_csv(manifest_path)
    record = manifest[manifest["split"] == "test"].iloc[index]

    def load(path: Path) -> np.ndarray:
        return load_image_2d(path if path.is_absolute() else drr / path)[0]

    lung = load(Path(record["lung_path"])) >= LUNG_FIELD_MIN_MM
    truth = high_pass(load(Path(record["de_soft_noiseless"])), sigma_px)
    panels = [("SE", high_pass(load(Path(record["se"])), sigma_px)), ("true DE soft", truth)]
    for model, model_dir in models.items():
        prediction = require_prediction(model_dir / f"predictions_{test_set}", "de_soft", record["projection_id"],
                                        subject_id=record.get("subject_id", ""))
        pred = high_pass(load_image_2d(prediction)[0], sigma_px)  # the model's folder as given, not under drr/
        leak = mean_lung_leak(model_dir, test_set)
        panels += [(f"{model}\n(lung-field leak {leak:.2f})", pred), (f"{model}: pred − true", pred - truth)]
    return lung, panels


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a benchmark_chest run with drr/ sets")
    p.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR (repeatable)")
    p.add_argument("--sets", nargs="+", default=["phantoms", "real"], choices=sorted(TEST_SETS))
    p.add_argument("--index", type=int, default=0, help="which test image of each set's manifest")
    p.add_argument("--sigma-px", type=float, default=4.0)
    p.add_argument("--out", type=Path, default=Path("lung_field_leak.png"))
    args = p.parse_args(argv)
    models = parse_models(args.model)
    needed = [run_manifest(args.data, name) for name in args.sets]
    needed += [model_dir / f"evaluation_{name}" / "results.csv" for model_dir in models.values() for name in args.sets]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise InputError(f"lung_field_figure: missing {', '.join(missing)} (a benchmark_chest run and its recipes' folders)")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 + 2 * len(models)
    fig, axes = plt.subplots(len(args.sets), ncols, figsize=(2.3 * ncols, 2.5 * len(args.sets)), squeeze=False)
    for row, name in zip(axes, args.sets):
        lung, panels = row_panels(args.data, name, models, index=args.index, sigma_px=args.sigma_px)
        truth = panels[1][1]
        # one grey window per row (the images), the differences at the same scale: equal contrast = equal signal
        window = np.percentile(np.abs(truth[lung]), 99) if lung.any() else 1.0
        rows_any, cols_any = np.nonzero(lung)
        for ax, (title, img) in zip(row, panels):
            ax.imshow(np.where(lung, img, np.nan), cmap="gray", vmin=-window, vmax=window)
            if rows_any.size:
                ax.set_xlim(cols_any.min() - 2, cols_any.max() + 2)
                ax.set_ylim(rows_any.max() + 2, rows_any.min() - 2)
            ax.set_title(f"{ROW_LABELS[name]}: {title}", fontsize=7)
            ax.axis("off")
    fig.suptitle(f"Lung fields (rays crossing ≥ {LUNG_FIELD_MIN_MM:.0f} mm of lung), detail below {args.sigma_px:g} px: "
                 "rib shadows the DE soft image should not have", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
