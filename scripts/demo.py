"""End-to-end demo on generated phantoms: data -> manifest -> train -> infer -> evaluate -> table.

    python -m scripts.demo [--out runs/demo-<time>] [--subjects 16] [--no-dose] [--chest]

Every step is the command a user would run (the MONAI bundle CLI), printed before it runs, so the
demo doubles as a recipe. Outputs go to a new folder each time; nothing is overwritten.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from scripts.commands import bundle_command as bundle
from scripts.commands import run

BUNDLE = Path("bundles/mri_to_ct/configs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}")
    parser.add_argument("--subjects", type=int, default=16, help="phantom subjects (train/val/test split 12/2/2)")
    parser.add_argument("--size", default="default", help="phantom size preset (default or tiny)")
    # 64 x 30 iterations of 0.4.4's 8 crops (1.5x the time per iteration of 0.4.3's 4): about the minutes
    # of 0.4.3's 3000 iterations on one core (README)
    parser.add_argument("--epochs", type=int, default=64)
    parser.add_argument("--epoch-length", type=int, default=30, help="iterations per epoch")
    parser.add_argument("--val-interval", type=int, default=10)
    # None: each bundle's own train.json (sCT 1e-3 since 0.4.2, X-ray 5e-4; no dropout in either), which
    # the demo runs as shipped. A CPU demo has ~2000 iterations, not the ~100k of a real run: Pix2Pix's
    # 2e-4 and dropout 0.5 lost there (val MAE 160 vs 129 HU after 900 iterations at 2e-4 vs 5e-4).
    parser.add_argument("--learning-rate", type=float, default=None, help="both bundles (default: each its own)")
    parser.add_argument("--dropout", type=float, default=None, help="both bundles (default: each its own, 0)")
    parser.add_argument("--dose", action=argparse.BooleanOptionalAction, default=True,
                        help="photon and proton dose evaluation of the test subjects (CT vs sCT and baselines)")
    parser.add_argument("--chest", action="store_true",
                        help="also run task 2: chest phantoms -> DRRs -> SE->DE training -> evaluation")
    # anatomy over views: 12 training phantoms beat 6 by 4.7 dB in the chest benchmark; 52 x 3 beat 13 x 12 by 1.1 dB
    # but took contrast from the tumours behind ribs, the demo's target, in 3 minutes more (bundle docs, section 7)
    parser.add_argument("--chest-subjects", type=int, default=13,
                        help="training + validation chest phantoms (n-1 / 1), with the benchmark's heavier ribs and "
                             "extra tumours behind ribs")
    # 4 held-out phantoms x 12 views: enough tumours behind ribs for their contrast to be read (2 gave 2 views)
    parser.add_argument("--chest-test-subjects", type=int, default=4,
                        help="held-out chest phantoms (another seed, IDs 2TP901...; as the generator makes them)")
    parser.add_argument("--chest-views", type=int, default=12, help="DRR views per training / validation chest phantom")
    parser.add_argument("--chest-test-views", type=int, default=12,
                        help="DRR views per held-out chest phantom (drawn apart: the same images whatever the "
                             "training set)")
    # 40 x 36 iterations: on the benchmark's training phantoms the tumours behind ribs keep more contrast than in
    # SE (0.92 against 0.85 over 24 views) where 20 epochs fell below it (0.83), for ~3 minutes more (README)
    parser.add_argument("--chest-epochs", type=int, default=40)
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out (the demo never overwrites)")

    start = time.perf_counter()
    data, manifest, work = args.out / "phantoms", args.out / "manifest.csv", args.out / "mri_to_ct"
    run([sys.executable, "-m", "scripts.make_phantoms", "--out", str(data), "--n", str(args.subjects), "--size", args.size])
    run([sys.executable, "-m", "scripts.make_manifest", "--root", str(data), "--out", str(manifest),
         "--val", str(2 / args.subjects), "--test", str(2 / args.subjects)])
    t_train = time.perf_counter()
    run(bundle(BUNDLE / "train.json", manifest=manifest, output_dir=work, epochs=args.epochs,
               epoch_length=args.epoch_length, val_interval=args.val_interval, **recipe_overrides(args)))
    train_minutes = (time.perf_counter() - t_train) / 60
    run(bundle(BUNDLE / "inference.json", input=manifest, split="test", output_dir=work))  # eval mode: no dropout
    run(bundle(BUNDLE / "evaluate.json", manifest=manifest, split="test", output_dir=work))
    if args.dose:
        run(bundle(BUNDLE / "evaluate_dose.json", manifest=manifest, split="test", output_dir=work))
    chest = run_chest_task(args) if args.chest else None

    print("\n" + "=" * 80)
    summaries = [work / "evaluation" / "summary.md"] + ([work / "evaluation_dose" / "dose_summary.md"] if args.dose else [])
    for summary in summaries + ([chest / "evaluation" / "summary.md"] if chest else []):
        print(summary.read_text() if summary.exists() else f"(no summary at {summary})")
    print(f"sCT volumes:   {work / 'predictions'}/<subject>/sct.nii.gz")
    print(f"figures:       {work / 'evaluation'}")
    print(f"TensorBoard:   tensorboard --logdir {work / 'tensorboard'}")
    print(f"phantoms:      {data} (montage: {data / 'montage.png'})")
    print(f"training {train_minutes:.1f} min; whole demo {(time.perf_counter() - start) / 60:.1f} min")
    return 0


def recipe_overrides(args) -> dict[str, float]:
    """The ``--learning-rate`` / ``--dropout`` given on the command line, as bundle overrides (none: the bundle's own)."""
    given = {"learning_rate": args.learning_rate, "dropout": args.dropout}
    return {key: value for key, value in given.items() if value is not None}


def run_chest_task(args) -> Path:
    """Task 2 on chest phantoms: DRR pairs (SE, DE soft, DE bone, tumour labels) -> Pix2Pix -> evaluation.

    The training and validation phantoms carry the chest benchmark's training options (ribs heavier by a factor
    drawn per subject, 2-4 extra tumours behind ribs); the held-out ones are other anatomy (the benchmark's
    held-out seed, IDs 2TP901...) as the generator makes it, so the test is the benchmark's kind of test."""
    from pipeline.data.phantoms.chest import TRAINING_EXTRA_TUMOURS, TRAINING_RIB_DENSITY
    from scripts.benchmark_common import TEST_FIRST_ID, TEST_SEED

    phantoms, drr, work = args.out / "chest_phantoms", args.out / "chest_drr", args.out / "xray_dual_energy"
    run([sys.executable, "-m", "scripts.make_phantoms", "--anatomy", "chest", "--out", str(phantoms / "trainval"),
         "--n", str(args.chest_subjects), "--rib-density", *map(str, TRAINING_RIB_DENSITY),
         "--extra-tumours", *map(str, TRAINING_EXTRA_TUMOURS)])
    run([sys.executable, "-m", "scripts.make_phantoms", "--anatomy", "chest", "--out", str(phantoms / "test"),
         "--n", str(args.chest_test_subjects), "--seed", str(TEST_SEED), "--first-id", str(TEST_FIRST_ID)])
    run([sys.executable, "-m", "scripts.make_drr_dataset", "--ct-dir", str(phantoms / "trainval"),
         "--test-ct-dir", str(phantoms / "test"), "--out", str(drr),
         "--preset", "chest", "--projections-per-ct", str(args.chest_views),
         "--test-projections-per-ct", str(args.chest_test_views), "--size", "128",
         "--val-fraction", f"{1 / args.chest_subjects:.4f}", "--test-fraction", "0"])
    xray = Path("bundles/xray_dual_energy/configs")
    run(bundle(xray / "train.json", dataset=drr / "manifest.csv", output_dir=work, epochs=args.chest_epochs,
               val_interval=5, **recipe_overrides(args)))
    run(bundle(xray / "inference.json", input=drr / "manifest.csv", split="test", output_dir=work))
    run(bundle(xray / "evaluate.json", dataset=drr / "manifest.csv", split="test", output_dir=work))
    return work


if __name__ == "__main__":
    raise SystemExit(main())
