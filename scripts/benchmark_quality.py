"""sCT quality per wall-clock minute: each named recipe trained for the same budget, scored on held-out phantoms.

    python -m scripts.benchmark_quality [--minutes 20] [--recipes default l1_only] [--out runs/quality-<time>]

Steps, all through the bundle commands a user runs:

1. phantoms (:mod:`scripts.quality_data`): by default the detailed heads at 1 mm (184 x 216 x 208 voxels;
   skull base, air cells, teeth, C1-C3, MR physics with per-subject scanners, MR/CT misregistration), with
   a T1w SPGR MR to train on and an MPRAGE MR of the same subjects as a cross-family test
   (``--families spgr mprage``); ``--phantoms simple`` for the earlier heads. Training and validation
   subjects from ``--train-seed``, held-out test subjects from ``--test-seed`` (other anatomy), ``--workers``
   at a time (default: the cores this process may use, at most 8; the same phantoms whatever the number);
   ``--data`` reuses an earlier run's phantoms;
2. per recipe (a dict of ``train.json`` overrides, see :mod:`scripts.quality_recipes`): ``train.json --max_minutes M``,
   then ``inference.json`` and ``evaluate.json`` on the test split of every family (which also writes the
   tissue-lookup and bulk-density baselines, fitted on that family's training split), and inference on the
   first ``--fit-subjects`` training subjects;
3. ``quality.csv`` (one row per recipe and test family), ``quality.md``, ``quality.png`` (validation MAE and
   the training crops' L1 in HU over training minutes per recipe, held-out MAE at the end, baselines as
   horizontal lines) and ``sagittal.png`` (a mid-sagittal slice of each recipe's sCT and error).

Under- and overfitting show side by side in each row: the training crops' L1 (masked, in HU, over the last
10 % of iterations), the full-volume MAE on training subjects, the final validation MAE, the held-out MAE
and the cross-family MAE. Errors are reported as ratios to the tissue lookup's held-out MAE measured in the
same run (the cross-family row: to the lookup fitted on that family), so they carry across machines;
minutes are wall clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.manifest import load_split
from scripts.benchmark_common import (
    TEST_SEED,
    cell,
    markdown_table,
    measured_on,
    plot_curves,
    trained_iterations,
    validation_curve,
)
from scripts.commands import add_workers_option, bundle_command, command_line, run
from scripts.quality_data import (
    PHANTOMS,
    default_size,
    existing_manifests,
    make_data,
    registration_floors,
    training_fit_manifest,
)
from scripts.quality_recipes import COMMON, DEFAULT_RECIPES, RECIPES
from transforms.intensity import HU_MAX, HU_MIN

BUNDLE = Path("bundles/mri_to_ct/configs")


def bundle(config: str, **overrides: object) -> list[str]:
    return bundle_command(BUNDLE / config, **overrides)


def held_out(results_csv: Path) -> dict[str, dict[str, float]]:
    """Mean over test subjects of body-region metrics per method (``pix2pix``, baselines)."""
    df = pd.read_csv(results_csv)
    body = df[df["region"] == "body"]
    table = body.groupby(["method", "metric"])["value"].mean()
    return {method: table[method].to_dict() for method in table.index.get_level_values(0).unique()}


HU_PER_UNIT = (HU_MAX - HU_MIN) / 2.0  # the network's CT window [-1, 1] in HU: an L1 of 0.01 is 20.1 HU


def training_crop_l1_hu(log_dir: Path, *, last_fraction: float = 0.1) -> tuple[float, pd.DataFrame]:
    """The training crops' masked L1 in HU: mean over the last ``last_fraction`` of the logged iterations
    (TensorBoard ``G_l1``, in the network's [-1, 1] units), and the whole curve (``minutes, l1_hu``, a
    running mean over 50 iterations) for the plot."""
    curve = validation_curve(log_dir, tag="G_l1")
    if curve.empty:
        return float("nan"), pd.DataFrame(columns=["minutes", "l1_hu"])
    hu = curve["G_l1"] * HU_PER_UNIT
    tail = hu.iloc[-max(1, int(round(len(hu) * last_fraction))):]
    smooth = pd.DataFrame({"minutes": curve["minutes"], "l1_hu": hu.rolling(50, min_periods=1).mean()})
    return float(tail.mean()), smooth


def volume_mae(predictions: Path, manifest: Path) -> float:
    """Mean over the ``test`` split of ``manifest`` of the sCT's MAE (HU) inside the mask."""
    import nibabel as nib

    from pipeline.report.metrics import mae

    read = lambda path: np.asarray(nib.load(path).dataobj, dtype=np.float32)  # noqa: E731  (all on the MR grid)
    return float(np.mean([mae(read(predictions / s["subject_id"] / "sct.nii.gz"), read(s["ct"]), read(s["mask"]))
                          for s in load_split(manifest, "test")]))


def transferred_lookup_mae(train_manifest: Path, test_manifest: Path) -> float:
    """Held-out MAE (HU, mean over the test split of ``test_manifest``) of the tissue lookup fitted on the
    training split of ``train_manifest``: an intensity lookup carried to another MR family, the cross-family
    row's naive reference."""
    from pipeline.io.volumes import read_volumes_on_one_grid
    from pipeline.report.metrics import mae
    from pipeline.sct.baselines import fit_tissue_lookup

    lookup = fit_tissue_lookup(load_split(train_manifest, "train"))
    errors = []
    for record in load_split(test_manifest, "test"):
        volumes, _ = read_volumes_on_one_grid(record, ("mr", "ct", "mask"))
        errors.append(mae(lookup.predict(volumes["mr"], volumes["mask"]), volumes["ct"], volumes["mask"]))
    return float(np.mean(errors))


def region_mae(results_csv: Path, method: str = "pix2pix") -> dict[str, float]:
    """Mean over test subjects of ``mae_hu`` per tissue region (``air``, ``soft_tissue``, ``bone``) for ``method``."""
    df = pd.read_csv(results_csv)
    rows = df[(df["method"] == method) & (df["metric"] == "mae_hu") & (df["region"].isin(["air", "soft_tissue", "bone"]))]
    return rows.groupby("region")["value"].mean().to_dict()


def canonical(path: Path) -> np.ndarray:
    """Volume reoriented to the closest RAS axes (nibabel; no resampling): Z runs inferior-superior."""
    import nibabel as nib

    return np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj, dtype=np.float32)


def stripe_ratio(sct: np.ndarray, ct: np.ndarray, mask: np.ndarray) -> float:
    """Slice-to-slice stripes as a number: mean |error step| between axial slices (along Z) over the mean
    |error step| in-plane (along X and Y), error = sCT - CT, over voxel pairs inside the body; arrays
    ``(X, Y, Z)`` in RAS. An axial 2.5D model predicts each slice on its own, so its error jumps between
    slices (ratio > 1); an error field with no preferred direction gives ~1 on isotropic voxels."""
    error, body = sct - ct, mask > 0
    steps = []
    for axis in range(3):
        both = np.logical_and(np.take(body, range(1, body.shape[axis]), axis=axis),
                              np.take(body, range(body.shape[axis] - 1), axis=axis))
        steps.append(np.abs(np.diff(error, axis=axis))[both].mean())
    return float(steps[2] / ((steps[0] + steps[1]) / 2))


def stripe_ratio_of_run(manifest: Path, predictions: Path) -> float:
    """:func:`stripe_ratio` averaged over the test subjects of one inference run."""
    return float(np.mean([stripe_ratio(canonical(predictions / s["subject_id"] / "sct.nii.gz"), canonical(s["ct"]),
                                       canonical(s["mask"])) for s in load_split(manifest, "test")]))


def train_recipe(overrides: Mapping[str, object], *, manifest: Path, work: Path, minutes: float) -> float:
    """Train into ``work`` for ``minutes``; returns the wall-clock minutes of the whole command."""
    return run(bundle("train.json", manifest=manifest, output_dir=work, max_minutes=minutes, **COMMON,
                      **overrides)) / 60.0


def fit_measures(work: Path, *, fit_manifest: Path | None) -> dict:
    """How well the run fits what it trained on, and its last validation: ``train_crop_l1_hu``,
    ``train_mae_hu`` (full volumes of training subjects, inferred like the held-out ones) and ``val_mae_hu``."""
    crop_l1, _ = training_crop_l1_hu(work / "tensorboard")
    curve = validation_curve(work / "tensorboard", tag="val_mae_hu")
    row = {"train_crop_l1_hu": crop_l1, "val_mae_hu": float(curve["val_mae_hu"].iloc[-1]) if len(curve) else None,
           "train_mae_hu": None}
    if fit_manifest is not None:
        predictions = work / "predictions_train"
        run(bundle("inference.json", input=fit_manifest, split="test", output_dir=work, prediction_dir=predictions))
        row["train_mae_hu"] = volume_mae(predictions, fit_manifest)
    return row


def evaluate_recipe(name: str, overrides: Mapping[str, object], *, manifest: Path, work: Path, minutes: float,
                    train_minutes: float, family: str, cross: bool = False, tta: bool = False) -> dict:
    """Inference on the test split of ``manifest`` (flip TTA when ``tta``), evaluation with baselines
    fitted on its training split, one result row. ``cross``: ``manifest`` holds another MR family than
    the one trained on (outputs go to ``predictions_<family>``)."""
    suffix = ("_tta" if tta else "") + (f"_{family}" if cross else "")
    predictions, evaluation = work / f"predictions{suffix}", work / f"evaluation{suffix}"
    # the whole command: start-up, all test subjects
    infer_seconds = run(bundle("inference.json", input=manifest, split="test", output_dir=work,
                               prediction_dir=predictions, tta=tta))
    run(bundle("evaluate.json", manifest=manifest, split="test", output_dir=work, prediction_dir=predictions,
               evaluation_dir=evaluation))
    scores = held_out(evaluation / "results.csv")
    model, lookup, bulk = scores["pix2pix"], scores["tissue_lookup"], scores["bulk_density"]
    regions = region_mae(evaluation / "results.csv")
    lookup_regions = region_mae(evaluation / "results.csv", method="tissue_lookup")
    air_ratio = (regions["air"] / lookup_regions["air"]) if regions.get("air") and lookup_regions.get("air") else None
    return {
        "recipe": name + ("+tta" if tta else "") + (f" -> {family}" if cross else ""), "test_family": family,
        "overrides": " ".join(f"{k}={v}" for k, v in overrides.items()) or "(bundle default)",
        "budget_min": minutes, "train_min": round(train_minutes, 2), "iterations": trained_iterations(work),
        "inference_s": round(infer_seconds, 1),
        "spearman_std_abs_error": model.get("spearman_std_abs_error"),
        "mae_hu": model["mae_hu"], "ratio_to_lookup": model["mae_hu"] / lookup["mae_hu"],
        "psnr_db": model.get("psnr_db"), "ssim": model.get("ssim"), "dice_bone_250": model.get("dice_bone_250hu"),
        "mae_air_hu": regions.get("air"), "mae_soft_hu": regions.get("soft_tissue"), "mae_bone_hu": regions.get("bone"),
        "air_ratio_to_lookup": air_ratio,
        "stripe_ratio": stripe_ratio_of_run(manifest, predictions), "predictions": str(predictions),
        "lookup_mae_hu": lookup["mae_hu"], "lookup_mae_air_hu": lookup_regions.get("air"),
        "lookup_mae_soft_hu": lookup_regions.get("soft_tissue"), "lookup_mae_bone_hu": lookup_regions.get("bone"),
        "lookup_dice_bone_250": lookup.get("dice_bone_250hu"), "bulk_mae_hu": bulk["mae_hu"],
        "bulk_ratio_to_lookup": bulk["mae_hu"] / lookup["mae_hu"],
    }


def write_markdown(rows: pd.DataFrame, path: Path, *, command: str, size: tuple[int, int, int], phantoms: str,
                   transferred: Mapping[str, tuple[str, float]] | None = None,
                   floors: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """``quality.md``; ``transferred``: test family -> (training family, MAE of the lookup fitted on it);
    ``floors``: test family -> its registration floor (:func:`scripts.quality_data.registration_floors`)."""
    header = ["recipe", "test MR", "iterations", "train crops L1 HU", "train subjects MAE HU", "validation MAE HU",
              "held-out MAE HU", "× lookup", "PSNR dB", "SSIM", "Dice bone@250", "MAE air / soft / bone HU",
              "air × lookup air", "stripe ratio", "inference s", "Spearman ρ(std, \\|error\\|)"]
    fit = lambda r, key: cell(getattr(r, key, None), "{:.1f}")  # noqa: E731
    body = [[r.recipe, r.test_family, str(r.iterations), fit(r, "train_crop_l1_hu"), fit(r, "train_mae_hu"),
             fit(r, "val_mae_hu"), cell(r.mae_hu, "{:.1f}"), cell(r.ratio_to_lookup, "{:.3f}"), cell(r.psnr_db),
             cell(r.ssim, "{:.3f}"), cell(r.dice_bone_250),
             " / ".join(cell(v, "{:.0f}") for v in (r.mae_air_hu, r.mae_soft_hu, r.mae_bone_hu)),
             cell(r.air_ratio_to_lookup, "{:.3f}"), cell(r.stripe_ratio), cell(r.inference_s, "{:.0f}"),
             cell(r.spearman_std_abs_error)] for r in rows.itertuples()]
    for _, first in rows.groupby("test_family", sort=False).head(1).iterrows():
        body += [[f"tissue lookup (fitted on {first.test_family})", first.test_family, *[""] * 4,
                  cell(first.lookup_mae_hu, "{:.1f}"), "1.000", "", "", cell(first.lookup_dice_bone_250),
                  " / ".join(cell(first[k], "{:.0f}") for k in ("lookup_mae_air_hu", "lookup_mae_soft_hu",
                                                                  "lookup_mae_bone_hu")), "1.000", "", "", ""],
                 ["bulk density", first.test_family, *[""] * 4, cell(first.bulk_mae_hu, "{:.1f}"),
                  cell(first.bulk_ratio_to_lookup, "{:.3f}"), *[""] * 8]]
        if transferred and first.test_family in transferred:
            source, value = transferred[first.test_family]
            body.append([f"tissue lookup fitted on {source}", first.test_family, *[""] * 4, cell(value, "{:.1f}"),
                         cell(value / first.lookup_mae_hu, "{:.3f}"), *[""] * 8])
        floor = (floors or {}).get(first.test_family, {})
        for prefix, name in (("", "registration floor (the CT without noise, moved as the MR)"),
                             ("visible_", "MR-visible floor (also without what no MR shows: cortical bone density, "
                                          "per-subject HU offsets)")):
            if prefix + "mae_hu" not in floor:
                continue
            air = floor[prefix + "air"]
            body.append([name, first.test_family, *[""] * 4, cell(floor[prefix + "mae_hu"], "{:.1f}"),
                         cell(floor[prefix + "mae_hu"] / first.lookup_mae_hu, "{:.3f}"), "", "", "",
                         " / ".join(cell(floor[prefix + k], "{:.0f}") for k in ("air", "soft_tissue", "bone")),
                         cell(air / first.lookup_mae_air_hu if first.lookup_mae_air_hu else None, "{:.3f}"), "", "", ""])
    note = (f"{measured_on(command)}; {phantoms} phantoms {'x'.join(map(str, size))} voxels; MAE on held-out test "
            "subjects (other seed), ratio to the tissue lookup's MAE in the same run, fitted on the training split "
            "of the same MR family (lower is better).")
    recipes = rows.drop_duplicates("overrides")[["recipe", "overrides"]]
    legend = [f"Torch threads per training process: {torch_threads()}. Train crops L1: the masked L1 of the "
              "training crops in HU, mean over the last 10 % of iterations; train subjects MAE: full volumes of "
              "training subjects inferred like the held-out ones; validation MAE: the last validation. Stripe "
              "ratio: mean |error step| between axial slices over the in-plane one, inside the body (1 = no "
              "slice-to-slice stripes; `stripe_ratio`). Registration floor: each test subject regenerated from its "
              "`phantom.json` with the CT's noise left out and moved through that MR's misregistration: the sCT of "
              "a model that read the anatomy perfectly from the MR, an estimate of the error no MR-only model "
              "avoids (noise, misregistration). MR-visible floor: the same with the density field of cortical bone "
              "and teeth (no MR signal) and the per-subject HU offsets at their mean: what a model that read "
              "everything the MR shows would still miss.", "",
              *(f"- `{r.recipe}`: {r.overrides}" for r in recipes.itertuples())]
    lines = [note, "", *markdown_table(header, body), "", *legend]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()  # from OMP_NUM_THREADS, which the bundle commands inherit


def sagittal_figure(rows: pd.DataFrame, manifest: Path, path: Path) -> None:
    """Mid-sagittal slice of the first test subject: CT, then each recipe's sCT and its error (an axial
    model's stripes show as horizontal bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subject = load_split(manifest, "test")[0]
    ct = canonical(subject["ct"])
    x = ct.shape[0] // 2
    fig, axes = plt.subplots(2, len(rows) + 1, figsize=(2.6 * (len(rows) + 1), 5.4), squeeze=False)
    axes[0, 0].imshow(ct[x].T, origin="lower", cmap="gray", vmin=-1000, vmax=1500)
    axes[0, 0].set_title("CT", fontsize=8)
    axes[1, 0].axis("off")
    for column, row in enumerate(rows.itertuples(), start=1):
        sct = canonical(Path(row.predictions) / subject["subject_id"] / "sct.nii.gz")
        axes[0, column].imshow(sct[x].T, origin="lower", cmap="gray", vmin=-1000, vmax=1500)
        axes[0, column].set_title(f"{row.recipe}\nstripe ratio {row.stripe_ratio:.2f}", fontsize=8)
        axes[1, column].imshow((sct - ct)[x].T, origin="lower", cmap="RdBu_r", vmin=-300, vmax=300)
        axes[1, column].set_title("sCT - CT (±300 HU)", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{subject['subject_id']}, mid-sagittal (anterior right, superior up)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(curves: Mapping[str, pd.DataFrame], train_curves: Mapping[str, pd.DataFrame], rows: pd.DataFrame,
         path: Path, *, floor_mae_hu: float | None = None) -> None:
    """Validation MAE and the training crops' L1 (HU, dashed) per trained recipe, its held-out MAE
    (``+tta``: the TTA row; cross-family rows as x), the training family's baselines (and its registration
    floor, when known) as lines."""
    points = [(r.recipe.split(" -> ")[0].removesuffix("+tta"), r.train_min, r.mae_hu,
               f"{r.recipe} held-out: {r.ratio_to_lookup:.2f} x lookup",
               "x" if " -> " in r.recipe else "P" if r.recipe.endswith("+tta") else "*")
              for r in rows.itertuples()]
    first = rows.iloc[0]
    lines = [(first.lookup_mae_hu, f"tissue lookup {first.lookup_mae_hu:.0f} HU", "k", "--"),
             (first.bulk_mae_hu, f"bulk density {first.bulk_mae_hu:.0f} HU", "grey", ":")]
    if floor_mae_hu is not None:
        lines.append((floor_mae_hu, f"registration floor {floor_mae_hu:.0f} HU", "tab:green", "-."))
    plot_curves(curves, path, column="val_mae_hu", ylabel="MAE in the body (HU)", points=points, lines=lines,
                dashed={name: c.rename(columns={"l1_hu": "val_mae_hu"}) for name, c in train_curves.items()},
                dashed_label="training crops L1", ylim=(0.0, 1.2 * max(first.bulk_mae_hu, first.lookup_mae_hu)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs") / f"quality-{datetime.now():%Y%m%d-%H%M%S}")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per recipe (wall clock)")
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), choices=sorted(RECIPES))
    parser.add_argument("--phantoms", choices=PHANTOMS, default="detailed",
                        help="detailed: heads with skull base, teeth, MR physics and misregistration (default); "
                             "simple: the earlier heads")
    parser.add_argument("--families", nargs="+", default=["spgr", "mprage"],
                        help="detailed phantoms: MR families, the first trained on, the others cross-family tests")
    parser.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="phantom voxels over the phantoms' field of view (default 1 mm: 184 216 208 detailed, "
                             "224 224 180 simple)")
    parser.add_argument("--tta", action="store_true",
                        help="also run flip-TTA inference for each recipe (a second row <recipe>+tta, with Spearman rho)")
    parser.add_argument("--fit-subjects", type=int, default=1,
                        help="training subjects inferred whole for the train-subjects MAE (0: skip)")
    parser.add_argument("--no-cross", action="store_true", help="skip the cross-family test sets (quicker)")
    parser.add_argument("--train-subjects", type=int, default=5)
    parser.add_argument("--val-subjects", type=int, default=1)
    parser.add_argument("--test-subjects", type=int, default=2)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--test-seed", type=int, default=TEST_SEED)
    parser.add_argument("--data", type=Path, default=None,
                        help="reuse the phantoms of an earlier run (its phantoms/ folder with manifest.csv) instead of "
                             "generating them: the same subjects for recipes compared across runs")
    add_workers_option(parser)
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out (the benchmark never overwrites)")
    if args.train_seed == args.test_seed:
        parser.error("--test-seed must differ from --train-seed (held-out anatomy)")
    command = command_line("scripts.benchmark_quality", argv)
    size = tuple(args.size) if args.size else default_size(args.phantoms)

    if args.data is not None:
        try:
            manifests = existing_manifests(args.data)
        except FileNotFoundError as err:
            parser.error(str(err))
    else:
        manifests = make_data(args.out / "phantoms", phantoms=args.phantoms, size=size, n_train=args.train_subjects,
                              n_val=args.val_subjects, n_test=args.test_subjects, train_seed=args.train_seed,
                              test_seed=args.test_seed, families=tuple(args.families), workers=args.workers)
    train_family, manifest = next(iter(manifests.items()))
    tests = list(manifests.items())[:1 if args.no_cross else None]
    fit_manifest = (training_fit_manifest(manifest, args.out / "manifest_train_fit.csv", n=args.fit_subjects)
                    if args.fit_subjects > 0 else None)
    transferred = {family: (train_family, transferred_lookup_mae(manifest, test_manifest))
                   for family, test_manifest in tests if family != train_family}
    floors = registration_floors(dict(tests)) if args.phantoms == "detailed" else {}
    for family, floor in floors.items():
        print(f"registration floor on the {family} test subjects: {floor['mae_hu']:.1f} HU (what the CT's noise and the "
              "MR/CT misregistration cost a model that read the anatomy perfectly from the MR); MR-visible floor "
              f"{floor['visible_mae_hu']:.1f} HU (also without the cortical bone density and HU offsets no MR shows)")
    rows, curves, train_curves = [], {}, {}
    for name in args.recipes:
        work = args.out / name
        train_minutes = train_recipe(RECIPES[name], manifest=manifest, work=work, minutes=args.minutes)
        fit = fit_measures(work, fit_manifest=fit_manifest)
        for family, test_manifest in tests:
            cross = family != train_family
            for tta in (False, True) if args.tta and not cross else (False,):
                rows.append({**evaluate_recipe(name, RECIPES[name], manifest=test_manifest, work=work,
                                               minutes=args.minutes, train_minutes=train_minutes, family=family,
                                               cross=cross, tta=tta), **fit})
        curves[name] = validation_curve(work / "tensorboard", tag="val_mae_hu")
        train_curves[name] = training_crop_l1_hu(work / "tensorboard")[1]
        table = pd.DataFrame(rows)
        table.to_csv(args.out / "quality.csv", index=False)  # after every recipe: a crash keeps what ran
        write_markdown(table, args.out / "quality.md", command=command, size=size, phantoms=args.phantoms,
                       transferred=transferred, floors=floors)
        plot(curves, train_curves, table, args.out / "quality.png",
             floor_mae_hu=floors.get(train_family, {}).get("mae_hu"))
        sagittal_figure(table[table["test_family"] == train_family], manifest, args.out / "sagittal.png")
    print("\n" + (args.out / "quality.md").read_text())
    print(f"plots: {args.out / 'quality.png'}, {args.out / 'sagittal.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
