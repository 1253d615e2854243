"""Write paired MR/CT head phantoms in the SynthRAD2023 layout, plus a PNG montage.

Example::

    python -m scripts.make_phantoms --out data/phantoms --n 10 --seed 0
    python -m scripts.make_phantoms --out /tmp/ph --n 3 --size tiny --montage /tmp/ph.png

Writes ``OUT/1BP001/{mr,ct,mask}.nii.gz`` ... (see :mod:`pipeline.data.phantoms.head`) and ``OUT/montage.png``.
Existing subject folders are never replaced unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.data.phantoms.head import SIZES, save_montage, write_phantom_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (subject folders go inside)")
    parser.add_argument("--n", type=int, default=10, help="number of subjects (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical arrays")
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help="grid: default 112x112x72 @ 2x2x2.5 mm, tiny 56x56x36 @ 4x4x5 mm")
    parser.add_argument("--montage", type=Path, default=None, help="PNG montage path (default OUT/montage.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing subject folders")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        folders = write_phantom_dataset(args.out, n=args.n, seed=args.seed, size=args.size,
                                        overwrite=args.overwrite, progress=True)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    montage = save_montage(folders, args.montage or args.out / "montage.png")
    print(f"wrote {len(folders)} subjects to {args.out} in {elapsed:.1f} s; montage: {montage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
