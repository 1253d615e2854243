"""Write chest CT phantoms with lung tumours (the SE -> DE chest task's embedded data), plus a montage.

Example::

    python -m scripts.make_chest_phantoms --out data/chest_phantoms --n 10 --seed 0
    python -m scripts.make_chest_phantoms --out /tmp/chest --n 3 --size tiny

Writes ``OUT/2TP001/{ct,tumours}.nii.gz`` + ``tumours.json`` ... (see
:mod:`pipeline.data.phantoms.chest_dataset`) and ``OUT/montage.png``. Existing subject folders are
never replaced unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.data.phantoms.chest import SIZES
from pipeline.data.phantoms.chest_dataset import save_chest_montage, write_chest_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (subject folders go inside)")
    parser.add_argument("--n", type=int, default=10, help="number of subjects (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical arrays")
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help="grid: default 160x112x144 @ 2.5 mm, tiny 50x35x45 @ 8 mm (400x280x360 mm FOV)")
    parser.add_argument("--montage", type=Path, default=None, help="PNG montage path (default OUT/montage.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing subject folders")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        folders = write_chest_dataset(args.out, n=args.n, seed=args.seed, size=args.size,
                                      overwrite=args.overwrite, progress=True)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    montage = save_chest_montage(folders, args.montage or args.out / "montage.png")
    print(f"wrote {len(folders)} chest phantoms to {args.out} in {elapsed:.1f} s "
          f"({elapsed / len(folders):.2f} s per subject); montage: {montage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
