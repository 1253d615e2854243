"""Time the dose evaluation (photon + proton plan on the CT, recomputed on the baseline sCTs) per phantom
subject, and report the baselines' gamma pass rates.

    python -m scripts.benchmark_dose --out /tmp/dose_bench --n-train 2 --n-test 2

Phantoms: ``pipeline.data.phantoms.head.write_phantom_dataset`` (default size 112 x 112 x 72 at 2 x 2 x 2.5 mm);
the tissue-lookup baseline is fitted on the first ``--n-train`` subjects, the others are evaluated with the
default :class:`pipeline.dose.evaluate.DoseConfig` (3 mm dose grid). Prints one line per subject and a
Markdown table; writes everything under ``--out`` (refuses an existing folder unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from pipeline.data.phantoms.head import write_phantom_dataset
from pipeline.dose.evaluate import DoseConfig, evaluate_subject
from pipeline.sct.baselines import bulk_density, fit_tissue_lookup, write_baseline_predictions
from pipeline.sct.evaluation import find_prediction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-train", type=int, default=2)
    parser.add_argument("--n-test", type=int, default=2)
    parser.add_argument("--size", default="default", choices=["default", "tiny"])
    parser.add_argument("--dose-grid-mm", type=float, default=3.0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    folders = write_phantom_dataset(out / "phantoms", n=args.n_train + args.n_test, size=args.size,
                                    overwrite=args.overwrite)
    records = [{"subject_id": f.name, **{k: str(f / f"{k}.nii.gz") for k in ("ct", "mr", "mask")}} for f in folders]
    train, test = records[: args.n_train], records[args.n_train:]
    lookup = fit_tissue_lookup(train, progress=False)
    methods = write_baseline_predictions(test, output_dir=out / "baselines", overwrite=args.overwrite, progress=False,
                                         predictors={"bulk_density": bulk_density, "tissue_lookup": lookup.predict})
    base = replace(DoseConfig(), dose_grid_mm=args.dose_grid_mm)
    rows, timings = [], []
    for index, record in enumerate(test):
        predictions = {name: find_prediction(folder, record["subject_id"]) for name, folder in methods.items()}
        timing = {"subject": record["subject_id"]}
        for modality in ("photons", "protons"):
            start = time.perf_counter()
            rows += evaluate_subject(record, predictions, config=replace(base, modalities=(modality,)),
                                     output_dir=out / "evaluation", make_figures=index == 0,
                                     overwrite=args.overwrite)
            timing[f"{modality}_s"] = time.perf_counter() - start
        timing["total_s"] = timing["photons_s"] + timing["protons_s"]
        timings.append(timing)
        print(f"{record['subject_id']}: photons {timing['photons_s']:.1f} s, protons {timing['protons_s']:.1f} s "
              f"({len(methods)} sCT methods)", flush=True)
    table = pd.DataFrame(rows)
    gamma = table[table["metric"].str.contains("gamma_2mm2pct") & (table["region"] == "body")]
    print("\nseconds per subject (CT plan + recompute on", len(methods), "sCTs):")
    print(pd.DataFrame(timings).round(1).to_string(index=False))
    print("\ngamma 2 %/2 mm pass rate (%), body, per subject:")
    print(gamma.pivot_table(index=["subject", "method"], columns="metric", values="value").round(1).to_string())
    from pipeline.report.tables import write_tables

    for path in write_tables(rows, out / "evaluation", prefix="dose_", title="Dosimetric evaluation (sCT vs CT)", overwrite=args.overwrite).values():
        print(path)


if __name__ == "__main__":
    main()
