"""Write phantoms, plus a PNG montage: paired MR/CT heads (task 1, SynthRAD2023 layout) or chest CTs with
labelled lung tumours (task 2).

Example::

    python -m scripts.make_phantoms --out data/phantoms --n 10 --seed 0
    python -m scripts.make_phantoms --out /tmp/ph --n 3 --size tiny --montage /tmp/ph.png
    python -m scripts.make_phantoms --anatomy detailed_head --out data/detailed --n 8 --families spgr mprage t2_tse
    python -m scripts.make_phantoms --anatomy chest --out data/chest_phantoms --n 10 [--contrast none] [--rib-density 0.8 1.5] [--extra-tumours 2 4]
    python -m scripts.make_phantoms --anatomy chest --out data/chest_test --n 2 --seed 1 --first-id 901   # 2TP901, 2TP902

Heads: ``OUT/1BP001/{mr,ct,mask}.nii.gz`` ... (:mod:`pipeline.data.phantoms.head`). Detailed heads (skull
base, teeth, MR physics, misregistration; docs/head_phantoms.md): ``OUT/1BD001/{ct,mask,mr}.nii.gz`` with one
``mr_<family>.nii.gz`` per further MR family and ``phantom.json`` (:mod:`pipeline.data.phantoms.detailed_head`). Chests:
``OUT/2TP001/{ct,tumours}.nii.gz, tumours.json`` ... (:mod:`pipeline.data.phantoms.chest_dataset`). And
``OUT/montage.png``. Existing subject folders are never replaced unless ``--overwrite`` is given.

``--workers N`` makes N subjects at a time in processes of their own (default: the cores this process may use,
``taskset`` counts, at most 8: each process holds one subject, peak 0.5 GB for a chest phantom and 2.6 GB for a
1 mm detailed head): every subject's seed is fixed before any is made, so the files are the same whatever N.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

from pipeline.data.phantoms import chest, chest_dataset, detailed_head, head
from pipeline.data.phantoms.mr_acquisition import FAMILIES
from scripts.commands import add_workers_option

#: anatomy -> (size presets, dataset writer, montage writer, grid help)
ANATOMIES = {
    "head": (head.SIZES, head.write_phantom_dataset, head.save_montage,
             "default 112x112x72 @ 2x2x2.5 mm, tiny 56x56x36 @ 4x4x5 mm"),
    "detailed_head": (detailed_head.SIZES, detailed_head.write_detailed_dataset, detailed_head.save_detailed_montage,
                      "1mm 184x216x208 @ 1 mm (default), 2mm, tiny 46x54x52 @ 4 mm"),
    "chest": (chest.SIZES, chest_dataset.write_chest_dataset, chest_dataset.save_chest_montage,
              "default 160x128x144 @ 2.5 mm, tiny 50x40x45 @ 8 mm (400x320x360 mm FOV)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--anatomy", choices=sorted(ANATOMIES), default="head",
                        help="head: paired MR/CT (sCT task); detailed_head: paired MR/CT with skull base, teeth, "
                             "MR physics and misregistration (the quality benchmark's); chest: CT with lung tumours "
                             "(dual-energy task)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (subject folders go inside)")
    parser.add_argument("--n", type=int, default=10, help="number of subjects (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical arrays")
    parser.add_argument("--first-id", type=int, default=1,
                        help="number of the first subject's ID (default 1: 1BP001, 2TP001, ...; e.g. 901 for a held-out "
                             "set beside a training set); the anatomy is the seed's whatever the number")
    parser.add_argument("--size", default=None,
                        help="grid preset (default: 'default', for detailed_head '1mm'): "
                             + "; ".join(f"{name}: {spec[3]}" for name, spec in ANATOMIES.items()))
    parser.add_argument("--families", nargs="+", default=list(detailed_head.DEFAULT_FAMILIES), choices=FAMILIES,
                        help="detailed_head: MR families, the first written as mr.nii.gz, the others as mr_<family>.nii.gz")
    parser.add_argument("--contrast", choices=("none", "venous", "arterial"), default=None,
                        help="chest: every subject's contrast phase (default drawn: 30 %% none, 30 %% venous, "
                             "40 %% arterial); none for the plain chest of a patient at the linac")
    parser.add_argument("--rib-density", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="chest: each subject's ribs scaled in HU by a factor drawn from [LOW, HIGH] (a stream of "
                             "its own: the anatomy stays the seed's); default 1")
    parser.add_argument("--extra-tumours", type=int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="chest: each subject gets that many more tumours (drawn from [LOW, HIGH]), behind ribs "
                             "where there is room (a stream of its own); default none")
    parser.add_argument("--montage", type=Path, default=None, help="PNG montage path (default OUT/montage.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing subject folders")
    add_workers_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sizes, write_dataset, save_montage, _ = ANATOMIES[args.anatomy]
    size = args.size or ("default" if "default" in sizes else next(iter(sizes)))
    if size not in sizes:
        parser.error(f"--size {size!r}: {args.anatomy} phantoms come in {', '.join(sorted(sizes))}")
    if args.first_id < 1:
        parser.error(f"--first-id must be >= 1, got {args.first_id}")
    if args.anatomy == "detailed_head":
        write_dataset = partial(write_dataset, families=tuple(args.families))
    # chest-only options: (value, flag, check of the value or None)
    chest_options = {"contrast": (args.contrast, "--contrast", None),
                     "rib_density": (args.rib_density, "--rib-density", chest.check_rib_density),
                     "extra_tumours": (args.extra_tumours, "--extra-tumours", chest.check_extra_tumours)}
    for key, (value, flag, check) in chest_options.items():
        if value is None:
            continue
        if args.anatomy != "chest":
            parser.error(f"{flag} is for --anatomy chest")
        try:
            write_dataset = partial(write_dataset, **{key: value if check is None else check(value)})
        except ValueError as err:
            parser.error(f"{flag} {err}")
    start = time.perf_counter()
    try:
        folders = write_dataset(args.out, n=args.n, seed=args.seed, size=size, overwrite=args.overwrite,
                                progress=True, first_id=args.first_id, workers=args.workers)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    montage = save_montage(folders, args.montage or args.out / "montage.png")
    print(f"wrote {len(folders)} {args.anatomy} phantoms to {args.out} in {elapsed:.1f} s "
          f"({elapsed / len(folders):.2f} s per subject); montage: {montage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
