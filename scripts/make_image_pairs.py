"""Cut 2-D MR/CT image pairs from 3-D subjects, as the public Kaggle brain MR/CT sets store them: 8-bit
PNG or JPEG (optionally RGB), CT windowed to 8 bits (no HU), one file per slice.

Example::

    python -m scripts.make_phantoms --out data/phantoms --n 12
    python -m scripts.make_image_pairs --root data/phantoms --out data/brain_pairs --format jpg --rgb

Reads ``ROOT/<ID>/{mr,ct}.*`` (SynthRAD2023 layout, e.g. the head phantoms), orients each subject to RAS
and writes ``--slices`` axial slices through the head (evenly spaced over those whose head area is at
least half the largest) as ``OUT/mr/<ID>_p<k>.<ext>`` and ``OUT/ct/<ID>_p<k>.<ext>``, ``--size`` x
``--size`` pixels, anterior up, the patient's right on the image's left (radiological view). The name
before ``_p`` is the subject: the 2-D workflow splits by it. Grey levels: MR per subject, 0 -> 0 and the
99.5th percentile inside the head -> 255; CT linearly from ``--ct-window LO HI`` HU to 0..255 (clipped),
so ``HU = LO + count / 255 * (HI - LO)``, recorded in ``OUT/pairs.json``. Existing files are refused
unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from pipeline.data.manifest import find_subjects
from pipeline.errors import InputError, install_one_line_errors
from pipeline.io.atomic import atomic_path, atomic_write
from pipeline.io.volumes import read_volumes_on_one_grid

DEFAULT_CT_WINDOW_HU = (-1000.0, 2000.0)
HEAD_HU = -500.0  # above: inside the head (for choosing slices and the MR scale)


def axial_slices(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(Z, rows, columns)`` axial images of an ``(X, Y, Z)`` volume: RAS-oriented first, then each slice
    anterior up and the patient's right on the left (x increases to the patient's left in RAS)."""
    ras = nib.orientations.apply_orientation(volume, nib.orientations.io_orientation(affine))
    return np.flip(np.transpose(ras, (2, 1, 0)), axis=1)  # rows = y (posterior -> anterior), then flipped


def chosen_slices(head: np.ndarray, count: int) -> list[int]:
    """``count`` slice indices, evenly spaced over slices whose head area is >= half the largest."""
    area = head.reshape(head.shape[0], -1).sum(axis=1)
    candidates = np.flatnonzero(area >= 0.5 * area.max())
    return sorted({int(candidates[round(i)]) for i in np.linspace(0, len(candidates) - 1, min(count, len(candidates)))})


def to_counts(image: np.ndarray, lo: float, hi: float, size: int) -> np.ndarray:
    """``image`` resampled (linear) to ``size`` x ``size`` and mapped ``[lo, hi] -> 0..255`` (uint8, clipped)."""
    resized = ndimage.zoom(image.astype(np.float64), (size / image.shape[0], size / image.shape[1]), order=1)
    return np.clip(np.rint((resized - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def subject_pairs(record: dict, *, slices: int, size: int, ct_window: tuple[float, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(mr counts, ct counts), ...]`` of one subject (:func:`chosen_slices`)."""
    arrays, affine = read_volumes_on_one_grid(record, ["mr", "ct"])
    mr, ct = (axial_slices(arrays[k], affine) for k in ("mr", "ct"))
    head = ct > HEAD_HU
    if not head.any():
        raise InputError(f"{record['subject_id']}: {record['ct']}: no head in the CT (nothing above {HEAD_HU:g} HU)")
    mr_top = float(np.percentile(mr[head], 99.5))
    if not mr_top > 0:
        raise InputError(f"{record['subject_id']}: {record['mr']}: MR is blank inside the head")
    return [(to_counts(mr[k], 0.0, mr_top, size), to_counts(ct[k], *ct_window, size))
            for k in chosen_slices(head, slices)]


def main(argv: list[str] | None = None) -> int:
    install_one_line_errors()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder of subjects ROOT/<ID>/{mr,ct}.*")
    parser.add_argument("--out", type=Path, required=True, help="output folder (mr/ and ct/ go inside)")
    parser.add_argument("--slices", type=int, default=6, help="axial slices per subject (default 6)")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels (default 256)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="file format (default png)")
    parser.add_argument("--rgb", action="store_true", help="save as RGB (three equal channels), as many Kaggle sets")
    parser.add_argument("--ct-window", type=float, nargs=2, default=DEFAULT_CT_WINDOW_HU, metavar=("LO", "HI"),
                        help="HU mapped to 0 and 255 (default -1000 2000)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing image files")
    args = parser.parse_args(argv)
    if args.slices < 1 or args.size < 8 or not args.ct_window[1] > args.ct_window[0]:
        parser.error("--slices >= 1, --size >= 8 and --ct-window LO < HI")
    subjects = [r for r in find_subjects(args.root).to_dict("records") if r["mr"] and r["ct"]]
    if not subjects:
        raise InputError(f"{args.root}: no subject with both an mr and a ct file")
    existing = [p for key in ("mr", "ct") if (args.out / key).is_dir() for p in (args.out / key).iterdir()]
    if existing and not args.overwrite:
        raise InputError(f"{args.out}: {len(existing)} file(s) already in mr/ and ct/, e.g. {existing[0]}; "
                         "pass --overwrite to replace them")
    written = 0
    for record in tqdm(subjects, desc="pairs", unit="subject"):
        for k, pair in enumerate(subject_pairs(record, slices=args.slices, size=args.size,
                                               ct_window=tuple(args.ct_window))):
            for key, counts in zip(("mr", "ct"), pair):
                image = Image.fromarray(np.stack([counts] * 3, axis=-1) if args.rgb else counts)
                options = {"quality": 95} if args.format == "jpg" else {}
                with atomic_path(args.out / key / f"{record['subject_id']}_p{k:03d}.{args.format}",
                                 overwrite=args.overwrite) as tmp:
                    image.save(tmp, format="JPEG" if args.format == "jpg" else "PNG", **options)
            written += 1
    lo, hi = args.ct_window
    description = {"source": str(args.root), "subjects": len(subjects), "pairs": written, "size": args.size,
                   "format": args.format, "rgb": args.rgb, "ct_window_hu": [lo, hi],
                   "ct_hu_from_count": f"HU = {lo:g} + count / 255 * {hi - lo:g}",
                   "mr_counts": "per subject: 0 -> 0, 99.5th percentile inside the head (CT > -500 HU) -> 255",
                   "orientation": "axial, anterior up, patient's right on the image's left"}
    atomic_write(args.out / "pairs.json", lambda tmp: tmp.write_text(json.dumps(description, indent=2) + "\n"),
                 overwrite=True)
    print(f"wrote {written} MR/CT pairs of {len(subjects)} subjects to {args.out}/{{mr,ct}} "
          f"({args.size}x{args.size} {'RGB ' if args.rgb else ''}{args.format.upper()}); CT window {lo:g}..{hi:g} HU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
