"""Build (or check) a CSV manifest of a SynthRAD2023-style data folder.

    python -m scripts.make_manifest --root data/Task1/brain --out data_manifests/brain.csv \\
        [--val 0.1 --test 0.1 --seed 0 --stratify centre] [--allow-problems] [--overwrite] [--read-data]
    python -m scripts.make_manifest --check-only data_manifests/brain.csv

Every file's header is checked (missing, unreadable, not 3-D, CT/mask off the MR grid). Problems are
printed one per line, each starting with the subject ID, and the exit code is 1; the manifest is then
not written unless ``--allow-problems`` (which writes it but still exits 1). Exit code 0: manifest written (or checked) without problems.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.data.manifest import (
    assign_splits,
    find_subjects,
    format_problems,
    read_manifest,
    summarize,
    validate_manifest,
    write_manifest,
)
from pipeline.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.make_manifest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="data folder holding <ID>/{mr,ct,mask}.nii.gz (e.g. Task1/brain)")
    parser.add_argument("--out", type=Path, help="manifest CSV to write, e.g. data_manifests/brain.csv")
    parser.add_argument("--val", type=float, default=0.1, help="fraction of subjects for validation (default 0.1)")
    parser.add_argument("--test", type=float, default=0.1, help="fraction of subjects for test (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--stratify", default="auto",
                        help="column to stratify splits by; 'auto' (default): centre when there are several; 'none'")
    parser.add_argument("--check-only", type=Path, metavar="MANIFEST", help="only check an existing manifest")
    parser.add_argument("--allow-problems", action="store_true", help="write the manifest even if files have problems")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--read-data", action="store_true",
                        help="also load voxels (slow): finds truncated data, NaN/Inf, blank images, empty masks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _report(problems: dict[str, list[str]]) -> None:
    n = sum(len(v) for v in problems.values())
    print(format_problems(problems), file=sys.stderr)
    print(f"{n} problem(s) in {len(problems)} subject(s)", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    progress = not args.no_progress
    try:
        if args.check_only is not None:
            df = read_manifest(args.check_only)
            print(f"{args.check_only}: {summarize(df)}")
            problems = validate_manifest(df, read_data=args.read_data, progress=progress)
            if problems:
                _report(problems)
                return 1
            print("no problems found")
            return 0

        if args.root is None or args.out is None:
            parser.error("--root and --out are required (or use --check-only MANIFEST)")
        if args.out.exists() and not args.overwrite:  # fail before spending time on the scan
            print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
            return 1
        stratify = None if args.stratify.lower() == "none" else args.stratify
        df = assign_splits(find_subjects(args.root), val_fraction=args.val, test_fraction=args.test,
                           seed=args.seed, stratify=stratify)
        print(summarize(df))
        problems = validate_manifest(df, read_data=args.read_data, progress=progress)
        if problems:
            _report(problems)
            if not args.allow_problems:
                print(f"not writing {args.out} (pass --allow-problems to write it anyway)", file=sys.stderr)
                return 1
        write_manifest(df, args.out, overwrite=args.overwrite)
        print(f"wrote {args.out}")
        return 1 if problems else 0
    except (InputError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
