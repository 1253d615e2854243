"""Chest dual-energy quality per wall-clock minute: each named recipe trained for the same budget, scored on
held-out chest phantoms and on DRRs of the real chest CT.

    python -m scripts.benchmark_chest [--minutes 20] [--recipes default gan resize pixelshuffle] [--size 256]
        [--train-subjects 576] [--views 1] [--test-views 12] [--physics fixed|random] [--real-ct-dir data/chest_ct]
        [--real-variants] [--train-contrast drawn|none|venous|arterial] [--train-rib-density LOW HIGH]
        [--train-extra-tumours LOW HIGH] [--data RUN] [--workers N] [--out runs/chest-<time>]

Steps, all through the commands a user runs (printed before they run):

1. chest phantoms (``--phantom-size``, default the 2.5 mm preset): training and validation subjects from
   ``--train-seed``, held-out test subjects from ``--test-seed`` (other anatomy; IDs 2TP901...), ``--workers``
   at a time (default: the cores this process may use, at most 8; the same phantoms whatever the number);
2. DRRs with ``scripts.make_drr_dataset --preset chest`` (views within +-10 deg of AP, shifts, tilts,
   scatter, quantum noise, detector blur) at ``--size`` pixels with one detector pitch for every set (the
   phantoms' 400 mm field of view fills the detector; the real CT keeps its own size in mm): ``--views``
   per training/validation CT, all from the preset's one system (``--physics fixed``, the default: it won on
   the held-out and real-CT tests) or each image's kVp pair, filtration, scatter, dose and blur drawn from
   the documented ranges (``--physics random``, ``make_drr_dataset --random-physics``), ``--test-views`` per test CT and of each real CT in ``--real-ct-dir`` (always the preset's system)
   (deformed variants ``<ID>-Dnn`` there are left out: they are augmentation, not test cases), and the
   held-out phantoms once more with each view's system drawn (``--random-physics``, another seed): does the
   model know only one simulator? and the real CT without its contrast agent (``pipeline.data.unenhanced``,
   the same views and noise as the real set; needs the CT's segmentation), ``--workers`` CTs at a time (the
   same images whatever the number). Four manifests: ``drr/phantoms.csv``
   (train / val / test), ``drr/real.csv``, ``drr/systems.csv`` and ``drr/real_unenhanced.csv`` (the same
   training rows, the real CT, the drawn-system views or the unenhanced real CT as test: the SE baseline is
   fitted on the training split, the real CT never trains); ``--train-contrast`` forces the training
   phantoms' contrast phase (the held-out ones keep the drawn mix) and ``--train-rib-density LOW HIGH`` scales
   their ribs' HU by a factor drawn per subject (default 0.8-1.5; the held-out ones keep 1);
   ``--train-extra-tumours LOW HIGH`` gives each training phantom that many more tumours behind ribs (default
   2-4; the held-out ones get none);
   ``--real-variants`` renders the real CT's deformed variants (``<ID>-Dnn``) with ``--views`` each and
   adds them to the training split of both manifests (``drr_variants/``): the real-CT test then shows what
   real anatomy in training buys, but is the same patient, no longer held out (its heading says so);
   ``--data RUN`` skips steps 1-2 and trains on an earlier run's ``RUN/drr`` sets (the same pixels for
   every recipe compared across runs; the data options are then the earlier run's);
3. per recipe (a dict of ``train.json`` overrides, :data:`RECIPES`, plus any ``--override KEY=VALUE``):
   ``train.json --max_minutes M``, then ``inference.json`` (network settings from the model card) and
   ``evaluate.json`` on each test set;
4. ``chest.csv`` (one row per recipe and test set, the SE-scaled baseline included), ``chest.md`` (DE-soft
   PSNR / SSIM / MAE, bone leak whole-image, below 10 mm and in the lung fields (DRR sets rendered since the
   lung path was written; empty for older ``--data``), soft gain, DE-bone edge gain, tumour CNR
   predicted vs true vs SE overall and behind ribs) and ``chest.png`` (validation DE-soft MAE over training minutes per recipe,
   held-out MAE at the end).

The real CT has no tumour labels: its CNR columns stay empty. Minutes are wall clock on whatever else the
machine is doing, hence the iterations column.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd

from pipeline.data.phantoms.chest import (
    TRAINING_EXTRA_TUMOURS,
    TRAINING_RIB_DENSITY,
    check_extra_tumours,
    check_rib_density,
)
from scripts.benchmark_common import (
    TEST_SEED,
    cell,
    markdown_table,
    measured_on,
    plot_curves,
    trained_iterations,
    validation_curve,
)
from scripts.chest_data import (
    TEST_SETS,
    UNENHANCED_FOLDER,
    add_real_variants,
    make_data,
    manifest_pitch,
    reused_data,
    unenhanced_set,
)
from scripts.commands import add_workers_option, bundle_command, command_line, run

BUNDLE = Path("bundles/xray_dual_energy/configs")
#: Recipe name -> ``train.json`` overrides, one difference each from the bundle as shipped ("default": L1
#: and 300 x the detail L1 since 0.5.4, no adversarial term, lr 5e-4, no dropout, base_channels 32,
#: resize-convolution up-sampling since 0.5.3).
RECIPES: dict[str, dict[str, object]] = {
    "default": {},
    "gan": {"adversarial_start_fraction": 0.0},
    "transpose": {"upsample": "transpose"},  # the default until 0.5.3
    "resize": {"upsample": "resize"},  # the default since 0.5.3 (kept: the name of the earlier rows)
    "pixelshuffle": {"upsample": "pixelshuffle"},
    "light": {"base_channels": 16},
    "subtract": {"soft_output": "se_minus_bone"},  # soft = SE - predicted bone + a learned correction
    "subtract_detail": {"soft_output": "se_minus_bone_detail"},  # soft = SE - the bone's detail (< ~10 mm) + correction
    "crop128": {"patch_size": 128},
    "noiseless": {"noiseless_targets": True},
    "no_detail": {"detail_weight": 0.0},  # the plain L1 alone: the default until 0.5.4
    "detail": {"detail_weight": 100.0},  # the L1 of the high-pass error (sigma 4 px, ~10 mm) beside the plain L1
    "detail300": {"detail_weight": 300.0},  # the default since 0.5.4
    "detail1000": {"detail_weight": 1000.0},
    "detail3000": {"detail_weight": 3000.0},
    "detail300_sigma8": {"detail_weight": 300.0, "detail_sigma_px": 8.0},  # up to ~20 mm: whole rib widths
    # the detail term against noiseless targets: a noisy DE image's high-pass is mostly quantum noise
    "detail1000_noiseless": {"detail_weight": 1000.0, "noiseless_targets": True},
    # float32 throughout: on a CPU with native bf16 (AMX, AVX512-BF16) the default's amp trains in bf16 autocast
    "fp32": {"amp": False},
}
DEFAULT_RECIPES = ("default",)
#: Shared by every recipe: an epoch of 100 iterations, validation after each (a few seconds at 128 px), so the
#: curve has a point every ~2 minutes here.
COMMON: dict[str, object] = {"epoch_length": 100, "val_interval": 1}
#: DE-soft metrics of the evaluation's results.csv in the table (mean over images).
SOFT_METRICS = ("psnr", "ssim", "mae", "bone_leak", "bone_leak_fine", "bone_leak_lung", "soft_gain")


def scores(results_csv: Path) -> dict[str, dict[str, float]]:
    """``{"pix2pix": {...}, "se_scaled": {...}}`` from an evaluation's long ``results.csv``: DE-soft PSNR,
    SSIM, MAE and bone leak (mean over images) and tumour CNR (:func:`pipeline.xray.visibility.
    summarise_visibility`, the method's CNR as "pred", ``true_de_soft`` as "true", SE's as "se"; NaN
    where there are no tumour labels)."""
    from pipeline.xray.visibility import summarise_visibility

    df = pd.read_csv(results_csv)
    soft = df[df["region"] == "de_soft"]
    edges = df[(df["region"] == "de_bone") & (df["metric"] == "edge_gain")]
    checker = df[(df["region"] == "de_bone") & (df["metric"] == "checkerboard_ratio")]
    cnr = df[df["metric"] == "cnr"]
    behind = set(cnr.loc[cnr["region"] == "tumour_behind_rib", "image_id"])
    per_tumour = cnr[cnr["region"] == "tumour"].pivot_table(index="image_id", columns="method", values="value")
    out = {}
    for method in ("pix2pix", "se_scaled"):
        mine = soft[soft["method"] == method].groupby("metric")["value"].mean()
        row = {"images": int(soft.loc[soft["method"] == method, "image_id"].nunique()),
               **{name: float(mine.get(name, float("nan"))) for name in SOFT_METRICS},
               "bone_edge_gain": float(edges.loc[edges["method"] == method, "value"].mean()),
               "bone_checkerboard": float(checker.loc[checker["method"] == method, "value"].mean())}
        if method in per_tumour and "true_de_soft" in per_tumour and "se_scaled" in per_tumour:
            tumours = [{"behind_rib": image_id in behind, "cnr_pred": r[method], "cnr_true": r["true_de_soft"],
                        "cnr_se": r["se_scaled"]} for image_id, r in per_tumour.iterrows()]
            summary = summarise_visibility(tumours, predicted="pred", true="true", single_energy="se")
        else:
            summary = {"all": {}, "behind_rib": {}}
        for group, suffix in (("all", ""), ("behind_rib", "_behind_rib")):
            got = summary[group]
            row.update({f"tumours{suffix}": int(got.get("n", 0)),
                        **{f"cnr_{k}{suffix}": got.get(f"mean_cnr_{k}", float("nan")) for k in ("pred", "true", "se")},
                        f"cnr_ratio{suffix}": got.get("cnr_ratio_pred_true", float("nan")),
                        f"pred_above_se{suffix}": got.get("fraction_pred_above_se", float("nan"))})
        if method == "se_scaled":
            row["pred_above_se"] = row["pred_above_se_behind_rib"] = float("nan")  # SE against itself
        out[method] = row
    return out


def result_rows(name: str, overrides: Mapping[str, object], *, test_set: str, results_csv: Path,
                minutes: float, train_minutes: float, iterations: int) -> list[dict]:
    """The recipe's row of one test set, and the SE-scaled baseline's (the same for every recipe).
    ``overrides``: the recipe's own (the ones every recipe got are in the report's header)."""
    both = scores(results_csv)
    common = {"test_set": test_set, "budget_min": minutes}
    return [{"recipe": name, "overrides": " ".join(f"{k}={v}" for k, v in overrides.items()) or "(bundle default)",
             **common, "train_min": round(train_minutes, 2), "iterations": iterations, **both["pix2pix"]},
            {"recipe": "se_scaled (baseline)", "overrides": "a × SE, a fitted on the training split", **common,
             "train_min": float("nan"), "iterations": float("nan"), **both["se_scaled"]}]


def write_markdown(rows: pd.DataFrame, path: Path, *, command: str, details: str,
                   titles: Mapping[str, str] = TEST_SETS) -> Path:
    """``chest.md``: one table per test set (recipes, then the baseline once, then the issue's targets)."""
    header = ["recipe", "overrides", "iterations", "DE-soft PSNR dB", "SSIM", "MAE (log)", "bone leak",
              "bone leak < 10 mm", "bone leak, lung fields", "soft gain", "DE-bone edge gain", "CNR pred / true / SE", "CNR pred ÷ true",
              "behind rib: CNR pred / true / SE", "pred ÷ true", "pred > SE (fraction)"]
    targets = {"phantoms": ["target (issue 20)", "", "", "≥ 38", "", "", "", "≤ 0.05", "", "", "1", "", "", "", "",
                            "> SE"],
               "real": ["target (issue 20)", "", "", "≥ 33", "", "", "≤ 0.25", "", "", "", "1", "", "", "", "", ""]}
    targets["real_unenhanced"] = ["issue 20's real-CT target, for reference", *targets["real"][1:]]
    lines = [f"{measured_on(command)}. {details}", ""]
    for test_set, title in titles.items():
        chosen = rows[rows["test_set"] == test_set]
        chosen = pd.concat([chosen[chosen["recipe"] != "se_scaled (baseline)"],
                            chosen[chosen["recipe"] == "se_scaled (baseline)"].head(1)])
        if chosen.empty:
            continue
        first = chosen.iloc[0]
        heading = (f"## {title}: {first['images']} images, {first['tumours']} tumour views "
                   f"({first['tumours_behind_rib']} behind a rib)")
        lines += [heading, ""]
        body = [[r.recipe, r.overrides, cell(r.iterations, "{:.0f}"), cell(r.psnr), cell(r.ssim, "{:.3f}"),
                 cell(r.mae, "{:.3f}"), cell(r.bone_leak, "{:.3f}"), cell(r.bone_leak_fine, "{:.3f}"),
                 cell(getattr(r, "bone_leak_lung", None), "{:.3f}"), cell(r.soft_gain, "{:+.3f}"), cell(r.bone_edge_gain), _triple(r.cnr_pred, r.cnr_true, r.cnr_se),
                 cell(r.cnr_ratio), _triple(r.cnr_pred_behind_rib, r.cnr_true_behind_rib, r.cnr_se_behind_rib),
                 cell(r.cnr_ratio_behind_rib), cell(r.pred_above_se_behind_rib)] for r in chosen.itertuples()]
        lines += [*markdown_table(header, [*body, *([targets[test_set]] if test_set in targets else [])]), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _triple(*values: float) -> str:
    cells = [cell(v) for v in values]
    return " / ".join(cells) if any(cells) else ""


def plot(curves: Mapping[str, pd.DataFrame], rows: pd.DataFrame, path: Path) -> Path:
    """Validation DE-soft MAE per recipe, held-out phantom MAE at the end, the SE baseline as a line."""
    phantoms = rows[rows["test_set"] == "phantoms"]
    model = phantoms[phantoms["recipe"] != "se_scaled (baseline)"]
    points = [(r.recipe, r.train_min, r.mae, f"{r.recipe} held-out phantoms: {r.mae:.3f}", "*")
              for r in model.itertuples()]
    baseline = phantoms[phantoms["recipe"] == "se_scaled (baseline)"]
    lines = [(float(baseline["mae"].iloc[0]), "SE scaled (held-out phantoms)", "k", "--")] if len(baseline) else []
    return plot_curves(curves, path, column="val_mae_de_soft", ylabel="DE-soft MAE in the body (log units)",
                       points=points, lines=lines)


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings -> dict (values passed to the bundle CLI as typed)."""
    bad = [p for p in pairs if "=" not in p or not p.split("=", 1)[0]]
    if bad:
        raise ValueError(f"--override expects KEY=VALUE, got {bad}")
    return dict(p.split("=", 1) for p in pairs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs") / f"chest-{datetime.now():%Y%m%d-%H%M%S}")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per recipe (wall clock)")
    p.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), choices=sorted(RECIPES))
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="train.json overrides for every recipe (network keys reach inference too)")
    p.add_argument("--size", type=int, default=256, help="DRR detector pixels per side")
    # 576 phantoms x 1 view beat 192 x 3 (and those 48 x 12 and 24 x 24, the same 576 pairs) on the held-out phantoms
    # in each draw of the training phantoms; the real CT's leak was level, and swung with the draw: bundle docs
    # section 7, "One view per phantom"
    p.add_argument("--views", type=int, default=1, help="DRR views per training / validation phantom")
    p.add_argument("--physics", choices=("random", "fixed"), default="fixed",
                   help="training/validation DRRs: each image's system drawn from the documented ranges, or the "
                        "preset's one system (test sets always use the preset's)")
    p.add_argument("--test-views", type=int, default=12, help="DRR views per held-out phantom and real CT")
    p.add_argument("--phantom-size", default="default", help="chest phantom grid preset (default: 2.5 mm; tiny)")
    p.add_argument("--real-ct-dir", type=Path, default=Path("data/chest_ct"),
                   help="real chest CTs (<ID>/ct.nii.gz; scripts.get_chest_ct writes one)")
    p.add_argument("--real-volume-spacing", type=float, default=2.0,
                   help="block-average the real CT to at least this spacing (mm) before projecting")
    p.add_argument("--train-contrast", choices=("drawn", "none", "venous", "arterial"), default="drawn",
                   help="contrast phase of the training/validation phantoms (drawn: 30 %% none, 30 %% venous, 40 %% "
                        "arterial, as the held-out phantoms always are)")
    p.add_argument("--train-rib-density", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   default=list(TRAINING_RIB_DENSITY),
                   help="training/validation phantoms: each subject's ribs scaled in HU by a factor drawn from "
                        "[LOW, HIGH] (default %(default)s: less bone left over the lungs, bundle docs section 7; "
                        "1 1 for the phantoms as generated; the held-out phantoms always keep 1)")
    p.add_argument("--train-extra-tumours", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   default=list(TRAINING_EXTRA_TUMOURS),
                   help="training/validation phantoms: each subject gets that many more tumours (drawn from [LOW, "
                        "HIGH]), behind ribs where there is room (default %(default)s: the real chest predicted "
                        "better, bundle docs section 7; 0 0 for none; the held-out phantoms never get them)")
    p.add_argument("--train-subjects", type=int, default=576)
    p.add_argument("--val-subjects", type=int, default=1)
    p.add_argument("--test-subjects", type=int, default=10,
                   help="held-out phantoms (default %(default)s; 2 until 2026-12-06, whose 24 views are the first of "
                        "these: two phantoms read 0.7 dB high and held too few tumours behind ribs to tell a model "
                        "from SE, bundle docs section 7)")
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--test-seed", type=int, default=TEST_SEED)
    p.add_argument("--real-variants", action="store_true",
                   help="also train on DRRs of the real CT's deformed variants (<ID>-Dnn in --real-ct-dir; "
                        "the real-CT test is then not held out)")
    p.add_argument("--data", type=Path, default=None,
                   help="reuse the phantoms and DRRs of an earlier run of this benchmark (its --out folder)")
    add_workers_option(p, what="making phantoms and rendering DRRs, one subject each",
                       same="the same phantoms and images")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out (the benchmark never overwrites)")
    if args.train_seed == args.test_seed:
        parser.error("--test-seed must differ from --train-seed (held-out anatomy)")
    # the generator's own checks, before any rendering
    for flag, check, value in (("--train-rib-density", check_rib_density, args.train_rib_density),
                               ("--train-extra-tumours", check_extra_tumours, args.train_extra_tumours)):
        try:
            check(value)
        except ValueError as err:
            parser.error(f"{flag} {err}")
    if (args.data is None or args.real_variants) and not args.real_ct_dir.is_dir():
        parser.error(f"--real-ct-dir {args.real_ct_dir} is not a folder; fetch the CT with "
                     "python -m scripts.get_chest_ct --out data/chest_ct")
    try:
        extra = parse_overrides(args.override)
    except ValueError as err:
        parser.error(str(err))
    command = command_line("scripts.benchmark_chest", argv)

    if args.data is not None:
        try:
            manifests = reused_data(args.data)
        except FileNotFoundError as err:
            parser.error(str(err))
        args.out.mkdir(parents=True)
        data = f"DRR sets of {args.data} (reused: the data options of that run apply)"
        if "real_unenhanced" not in manifests and args.real_ct_dir.is_dir():
            made = unenhanced_set(manifests["real"], args.out / UNENHANCED_FOLDER, args=args,
                                  pitch=manifest_pitch(manifests["real"]))
            if made is not None:
                manifests["real_unenhanced"], took = made
                data += (f"; the real CT without contrast agent rendered here ({took['pairs']} pairs in "
                         f"{took['seconds']:.0f} s, seed {args.test_seed})")
    else:
        manifests, timing = make_data(args.out, args=args)
        data = (f"Chest phantoms {args.phantom_size}: {args.train_subjects} train / {args.val_subjects} val "
                f"(seed {args.train_seed}, contrast {args.train_contrast}"
                + ", ribs × U({:g}, {:g})".format(*args.train_rib_density)
                + (", {} to {} extra tumours behind ribs".format(*args.train_extra_tumours)
                   if max(args.train_extra_tumours) else "")
                + f") × {args.views} views ({args.physics} "
                f"physics), {args.test_subjects} "
                f"held-out (seed {args.test_seed}) and the real CT × {args.test_views} views; DRRs {args.size} px, "
                "`--preset chest`; rendering "
                + ", ".join(f"{k} {v['pairs']} pairs in {v['seconds']:.0f} s ({v['pairs'] / v['seconds']:.2f} "
                            "pairs/s with start-up)" for k, v in timing.items()))
    if args.real_variants:
        try:
            manifests, took = add_real_variants(manifests, args.out, args=args)
        except ValueError as err:
            parser.error(str(err))
        data += (f"; trained also on the real CT's deformed variants × {args.views} views ({took['pairs']} pairs "
                 f"in {took['seconds']:.0f} s): the real-CT test is the same patient, not held out")
    details = (data + f". Training budget {args.minutes:g} min per recipe; extra overrides: {extra or 'none'}. "
               "CNR: tumour vs a ring around it (detrended), mean over tumour views; SE's CNR = the baseline's.")
    titles = {**TEST_SETS, **({"real": "real chest CT (its deformed variants trained: not held out)"}
                              if args.real_variants else {})}
    rows, curves = [], {}
    for name in args.recipes:
        overrides, work = {**RECIPES[name], **extra}, args.out / name
        train_minutes = run(bundle_command(BUNDLE / "train.json", dataset=manifests["phantoms"], output_dir=work,
                                           max_minutes=args.minutes, **{**COMMON, **overrides})) / 60.0
        for test_set, manifest in manifests.items():
            predictions, evaluation = work / f"predictions_{test_set}", work / f"evaluation_{test_set}"
            run(bundle_command(BUNDLE / "inference.json", input=manifest, split="test", output_dir=work,
                               prediction_dir=predictions))
            run(bundle_command(BUNDLE / "evaluate.json", dataset=manifest, split="test", output_dir=work,
                               prediction_dir=predictions, evaluation_dir=evaluation))
            rows += result_rows(name, RECIPES[name], test_set=test_set, results_csv=evaluation / "results.csv",
                                minutes=args.minutes, train_minutes=train_minutes, iterations=trained_iterations(work))
        curves[name] = validation_curve(work / "tensorboard", tag="val_mae_de_soft")
        table = pd.DataFrame(rows)
        table.to_csv(args.out / "chest.csv", index=False)  # after every recipe: a crash keeps what ran
        write_markdown(table, args.out / "chest.md", command=command, details=details, titles=titles)
        plot(curves, table, args.out / "chest.png")
    print("\n" + (args.out / "chest.md").read_text())
    print(f"plot: {args.out / 'chest.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
