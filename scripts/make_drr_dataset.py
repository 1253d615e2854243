"""Render paired single-energy / dual-energy DRRs from CTs (SE -> DE Pix2Pix training data).

Examples::

    python -m scripts.get_chest_ct --out data/chest_ct
    python -m scripts.make_drr_dataset --ct-dir data/chest_ct --out data/drr_chest \\
        --projections-per-ct 8 --size 256 --volume-spacing 1.4 --figure data/drr_chest/figure.png
    python -m scripts.make_drr_dataset --ct-dir data/phantoms --out data/drr_phantoms --format png \\
        --manifest-copy data_manifests/drr_phantoms.csv
    python -m scripts.make_phantoms --anatomy chest --out data/chest_phantoms --n 10
    python -m scripts.make_drr_dataset --preset chest --ct-dir data/chest_phantoms --out data/drr_chest_phantoms

``--preset chest`` (the chest task's recipe): 200 views per CT around AP (angles -10..10 deg, shifts
+-10 mm, cranio-caudal tilts +-5 deg), realism on (scatter, quantum noise, detector blur); any option
given explicitly still wins. ``--random-physics`` draws every image's kVp pair, filtration, scatter, dose
and detector blur (training data that does not teach one simulator; docs/xray_physics.md, section 8).
CTs with ``tumours.nii.gz`` beside them also get projected tumour labels (``OUT/tumour_mask/``) and bone
line integrals (``OUT/bone_path/``, g/cm^2), always as NIfTI.

``--ct-dir`` takes a folder of ``<ID>/ct.nii.gz`` subjects, a folder of CT files, or a CSV with
columns subject_id, ct; ``--test-ct-dir`` (the same forms) adds CTs that all go to the test split, e.g.
held-out phantoms generated apart (``make_phantoms --seed 1 --first-id 901``) while ``--ct-dir``'s are
split into train/val (``--test-fraction 0``). Writes ``OUT/{se,de_soft,de_bone}/<ID>_pNNN.<nii.gz|png>``, ``OUT/manifest.csv``
(subject_id, projection_id, se, de_soft, de_bone, split, geometry) and ``OUT/drr_dataset.json``.
Nothing is replaced unless ``--overwrite`` is given. ``--workers N`` renders N CTs at a time, each in a process
of its own with its share of the cores (default: the cores this process may use, at most 8); every view, noise and
physics draw is fixed before any CT is read, so the images are the same whatever N. See docs/xray_physics.md for the physics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from pipeline.errors import InputError
from pipeline.io.images2d import load_image_2d
from pipeline.xray.drr_dataset import DRRDatasetConfig, build_drr_dataset
from pipeline.xray.radiograph import RealismConfig
from pipeline.xray.randomisation import PhysicsRanges
from scripts.commands import add_workers_option

#: Option defaults per ``--preset``; explicit options override them.
PRESETS: dict[str, dict] = {
    "chest": {"projections_per_ct": 200, "angle_range": (-10.0, 10.0), "max_shift": 10.0, "max_tilt": 5.0,
              "realism": True},
}


def build_parser() -> argparse.ArgumentParser:
    defaults = DRRDatasetConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ct-dir", type=Path, required=True, help="CT folder or CSV manifest (subject_id, ct)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--test-ct-dir", type=Path, default=None,
                   help="CT folder or CSV whose subjects all go to the test split (held-out anatomy made apart); "
                        "--ct-dir's are split by --val-fraction / --test-fraction as usual")
    p.add_argument("--projections-per-ct", type=int, default=defaults.projections_per_ct)
    p.add_argument("--test-projections-per-ct", type=int, default=None,
                   help="views per --test-ct-dir CT (default: --projections-per-ct); drawn apart, so the test images "
                        "do not change with the training CTs or their views")
    p.add_argument("--size", type=int, default=defaults.detector_size, help="detector pixels per side")
    p.add_argument("--pitch", type=float, default=None,
                   help="detector pixel pitch in mm (default: fit the CT's extent after magnification)")
    p.add_argument("--sid", type=float, default=defaults.sid_mm, help="source-isocentre distance, mm")
    p.add_argument("--sdd", type=float, default=defaults.sdd_mm, help="source-detector distance, mm")
    p.add_argument("--parallel", action="store_true", help="parallel beam instead of cone beam")
    p.add_argument("--angle-range", type=float, nargs=2, default=defaults.angle_range_deg,
                   metavar=("MIN", "MAX"), help="gantry angles drawn uniformly from [MIN, MAX) degrees")
    p.add_argument("--max-shift", type=float, default=defaults.max_shift_mm, help="isocentre shift +-mm per axis")
    p.add_argument("--max-tilt", type=float, default=defaults.max_tilt_deg,
                   help="cranio-caudal beam tilt +-degrees (0: none)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="task recipe (see above)")
    realism = RealismConfig()
    p.add_argument("--realism", action=argparse.BooleanOptionalAction, default=False,
                   help="scatter + quantum noise + detector blur (docs/xray_physics.md section 8)")
    p.add_argument("--mas-high", type=float, default=realism.mas_high, help="mAs of the 120 kVp (SE, DE high) exposure")
    p.add_argument("--mas-low", type=float, default=realism.mas_low, help="mAs of the 60 kVp (DE low) exposure")
    p.add_argument("--spr", type=float, default=realism.spr, help="scatter-to-primary ratio at log attenuation 4")
    p.add_argument("--random-physics", action=argparse.BooleanOptionalAction, default=False,
                   help="draw each image's kVp pair, filtration, scatter, dose and blur from the documented ranges "
                        "(pipeline/xray/randomisation.py; implies realism; overrides --kvp-*, --mas-*, --spr)")
    p.add_argument("--volume-spacing", type=float, default=None,
                   help="block-average the CT to at least this spacing (mm) before projecting (faster)")
    p.add_argument("--kvp-se", type=float, default=defaults.kvp_se)
    p.add_argument("--kvp-low", type=float, default=defaults.kvp_low)
    p.add_argument("--kvp-high", type=float, default=defaults.kvp_high)
    p.add_argument("--format", choices=("nii.gz", "nii", "png"), default=defaults.image_format)
    p.add_argument("--png-scale", type=float, default=defaults.png_scale, help="log units per 16-bit PNG count")
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="CT subjects for validation")
    p.add_argument("--test-fraction", type=float, default=defaults.test_fraction, help="CT subjects for testing")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads with --workers 1 (default: torch's choice; with more workers each process "
                        "gets its share of the cores)")
    # as many processes as cores: never slower here, 2.2-2.4x faster where each process has one torch thread
    # (OMP_NUM_THREADS=1, as the benchmarks run); X-ray bundle docs, section 1
    add_workers_option(p, what="rendering one CT each (a real CT's densities up to ~1 GB), each with its share "
                       "of the cores' torch threads", same="the same images")
    p.add_argument("--manifest-copy", type=Path, default=None,
                   help="also write the manifest here (e.g. data_manifests/drr_chest.csv), paths relative to it")
    p.add_argument("--figure", type=Path, default=None, help="PNG figure of the first pairs (SE | DE soft | DE bone)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def save_figure(manifest: Path, figure: Path, *, rows: int = 3, png_scale: float | None = None,
                overwrite: bool = False) -> Path:
    """SE | DE soft | DE bone for the first ``rows`` pairs of ``manifest``, each column with its own
    grey window (1st-99.5th percentile), projected tumours outlined when the manifest has them;
    written atomically."""
    import numpy as np

    from pipeline.report.figures import save_image_grid

    table = pd.read_csv(manifest).head(rows)
    grid = []
    for row in table.itertuples(index=False):
        panels = []
        mask_path = getattr(row, "tumour_mask", "")
        outline = load_image_2d(manifest.parent / mask_path)[0] if isinstance(mask_path, str) and mask_path else None
        for key in ("se", "de_soft", "de_bone"):
            image = load_image_2d(manifest.parent / getattr(row, key), png_scale=png_scale)[0]
            panels.append((image, f"{row.projection_id} {key} ({row.angle_deg:.0f} deg)",
                           np.percentile(image, [1.0, 99.5]), outline))
        grid.append(panels)
    return save_image_grid(grid, figure, overwrite=overwrite, panel_inches=3.0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse once to find ``--preset``, then again with the preset's values as defaults."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    if args.test_projections_per_ct is not None and args.test_ct_dir is None:
        parser.error("--test-projections-per-ct needs --test-ct-dir")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = DRRDatasetConfig(
        projections_per_ct=args.projections_per_ct, detector_size=args.size, pixel_spacing_mm=args.pitch,
        sid_mm=args.sid, sdd_mm=args.sdd, parallel=args.parallel, angle_range_deg=tuple(args.angle_range),
        max_shift_mm=args.max_shift, volume_spacing_mm=args.volume_spacing, kvp_se=args.kvp_se,
        kvp_low=args.kvp_low, kvp_high=args.kvp_high, image_format=args.format, png_scale=args.png_scale,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed, max_tilt_deg=args.max_tilt,
        realism=RealismConfig(mas_high=args.mas_high, mas_low=args.mas_low, spr=args.spr) if args.realism else None,
        physics_ranges=PhysicsRanges() if args.random_physics else None)
    start = time.perf_counter()
    try:
        manifest = build_drr_dataset(args.ct_dir, args.out, config=config, overwrite=args.overwrite,
                                     progress=True, extra_manifest=args.manifest_copy, test_source=args.test_ct_dir,
                                     test_projections_per_ct=args.test_projections_per_ct, workers=args.workers)
    except (FileExistsError, InputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    table = pd.read_csv(manifest)
    counts = table.groupby("split")["subject_id"].nunique().to_dict()
    print(f"wrote {len(table)} pairs from {table['subject_id'].nunique()} CTs to {args.out} in {elapsed:.1f} s "
          f"({elapsed / max(len(table), 1):.2f} s/pair); subjects per split {counts}; manifest {manifest}")
    if args.figure:
        scale = args.png_scale if args.format == "png" else None
        print(f"figure: {save_figure(manifest, args.figure, png_scale=scale, overwrite=args.overwrite)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
