"""The bad-input matrix: one faulty subject per fault among good ones, checked as a user would.

For every fault this runs the manifest check (``scripts.make_manifest --read-data``) and the inference
bundle over the whole folder (a tiny untrained model with its model card), and reports what the user
sees: the one-line message naming the subject, the exit code, and whether any good subject's sCT was
lost. Example::

    python -m scripts.fault_matrix --out /tmp/faults

Writes ``OUT/fault_matrix.md`` (the table) and prints it.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from pipeline.data.phantoms.head import write_phantom_dataset

GOOD = ("1BA001", "1BA099")  # sorted before and after every faulty subject


def _load(path: Path) -> nib.Nifti1Image:
    return nib.load(path)


def _save(image: nib.Nifti1Image, path: Path) -> None:
    path.unlink(missing_ok=True)
    nib.save(image, path)


def _replace(path: Path, data: np.ndarray, *, affine: np.ndarray | None = None) -> None:
    source = _load(path)
    image = nib.Nifti1Image(data, source.affine if affine is None else affine)
    image.set_qform(image.affine, 1)
    image.set_sform(image.affine, 1)
    _save(image, path)


def _missing_mr(folder: Path) -> None:
    (folder / "mr.nii.gz").unlink()


def _truncated(folder: Path) -> None:
    path = folder / "mr.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(raw) // 20])


def _four_d(folder: Path) -> None:
    mr = np.asarray(_load(folder / "mr.nii.gz").dataobj)
    _replace(folder / "mr.nii.gz", np.stack([mr, mr], axis=-1))


def _nan_mr(folder: Path) -> None:
    mr = np.asarray(_load(folder / "mr.nii.gz").dataobj, dtype=np.float32)
    mr[10:20, 10:20, 10:20] = np.nan
    _replace(folder / "mr.nii.gz", mr)


def _blank_mr(folder: Path) -> None:
    _replace(folder / "mr.nii.gz", np.zeros(_load(folder / "mr.nii.gz").shape, np.float32))


def _ct_other_shape(folder: Path) -> None:
    ct = np.asarray(_load(folder / "ct.nii.gz").dataobj)
    _replace(folder / "ct.nii.gz", ct[:, :, :-2].copy())


def _mask_shifted(folder: Path) -> None:
    image = _load(folder / "mask.nii.gz")
    affine = image.affine.copy()
    affine[:3, 3] += 5.0
    _replace(folder / "mask.nii.gz", np.asarray(image.dataobj), affine=affine)


def _ct_flipped(folder: Path) -> None:
    image = _load(folder / "ct.nii.gz")
    affine = image.affine.copy()
    affine[:, 0] *= -1  # first axis reversed: another orientation on the same voxels
    _replace(folder / "ct.nii.gz", np.asarray(image.dataobj), affine=affine)


def _empty_mask(folder: Path) -> None:
    _replace(folder / "mask.nii.gz", np.zeros(_load(folder / "mask.nii.gz").shape, np.uint8))


def _no_orientation(folder: Path) -> None:
    image = _load(folder / "mr.nii.gz")
    bare = nib.Nifti1Image(np.asarray(image.dataobj), None)
    bare.set_qform(None, code=0)
    bare.set_sform(None, code=0)
    _save(bare, folder / "mr.nii.gz")


def _forms_disagree(folder: Path) -> None:
    image = _load(folder / "mr.nii.gz")
    shifted = image.affine.copy()
    shifted[:3, 3] += 3.0
    other = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    other.set_qform(image.affine, 1)
    other.set_sform(shifted, 1)
    _save(other, folder / "mr.nii.gz")


def _ct_without_offset(folder: Path) -> None:
    ct = np.asarray(_load(folder / "ct.nii.gz").dataobj).astype(np.int16)
    _replace(folder / "ct.nii.gz", (ct + 1024).astype(np.int16))


def _no_ct(folder: Path) -> None:
    (folder / "ct.nii.gz").unlink()


def _copy_of_good(folder: Path) -> None:
    for role in ("mr", "ct", "mask"):
        shutil.copyfile(folder.parent / GOOD[0] / f"{role}.nii.gz", folder / f"{role}.nii.gz")


FAULTS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "1BA010": ("MR file missing", _missing_mr),
    "1BA011": ("MR .nii.gz truncated (5 % of the bytes)", _truncated),
    "1BA012": ("MR 4-D (two volumes)", _four_d),
    "1BA013": ("NaN voxels in the MR", _nan_mr),
    "1BA014": ("blank MR (all zero)", _blank_mr),
    "1BA015": ("CT on another grid (2 slices fewer)", _ct_other_shape),
    "1BA016": ("mask shifted by 5 mm", _mask_shifted),
    "1BA017": ("CT axis flipped (another orientation)", _ct_flipped),
    "1BA018": ("empty mask", _empty_mask),
    "1BA019": ("MR with qform_code = sform_code = 0", _no_orientation),
    "1BA020": ("MR qform and sform disagree by 5 mm", _forms_disagree),
    "1BA021": ("CT stored without the -1024 offset", _ct_without_offset),
    "1BA022": ("training subject without CT", _no_ct),
    "1BA023": ("same files as 1BA001 under another ID, other split", _copy_of_good),
}


def build(out: Path) -> Path:
    """Good phantoms 1BA001 and 1BA099 and one faulty subject per fault in ``out/data``."""
    data = out / "data"
    ids = [*GOOD, *FAULTS]
    write_phantom_dataset(data, n=len(ids), seed=5, size="tiny")
    # rename the generated subjects to the matrix's IDs (sorted generation order is kept)
    generated = sorted(p for p in data.iterdir() if p.is_dir())
    for folder, subject_id in zip(generated, sorted(ids)):
        folder.rename(data / f"tmp-{subject_id}")
    for subject_id in ids:
        (data / f"tmp-{subject_id}").rename(data / subject_id)
    for subject_id, (_, make_fault) in FAULTS.items():
        make_fault(data / subject_id)
    return data


def write_model(out: Path) -> Path:
    """A tiny untrained 2.5D generator and its model card: enough to run the inference bundle."""
    from networks import Pix2PixUNet
    from pipeline.engine.model_card import write_model_card
    from pipeline.sct.model_card import MODEL_CARD_NAME, training_card

    models = out / "run" / "models"
    models.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = Pix2PixUNet(spatial_dims=2, in_channels=5, num_downs=3, base_channels=4)
    torch.save(generator.state_dict(), models / "model.pt")
    write_model_card(models / MODEL_CARD_NAME, training_card(mode="2.5d", patch_size=32, slab_size=5, target_spacing=None,
                                                             num_downs=3, base_channels=4, attention=False))
    return models / "model.pt"


def _run(cmd: list[str]) -> tuple[int, str]:
    result = subprocess.run(cmd, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new work folder")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists")
    data = build(args.out)
    write_model(args.out)
    manifest = args.out / "manifest.csv"
    check_code, check_log = _run([sys.executable, "-m", "scripts.make_manifest", "--root", str(data), "--out",
                                  str(manifest), "--read-data", "--no-progress", "--allow-problems"])
    # splits for the leak and no-CT faults: everything train, the copy of 1BA001 in test
    import pandas as pd

    table = pd.read_csv(manifest)
    table["split"] = ["test" if s == "1BA023" else "train" for s in table["subject_id"]]
    table.to_csv(manifest, index=False)
    leak_code, leak_log = _run([sys.executable, "-c", (
        "import sys; from pipeline.data.manifest import read_manifest, validate_manifest, format_problems;"
        f"p = validate_manifest(read_manifest({str(manifest)!r}), progress=False);"
        "print(format_problems(p)); sys.exit(1 if p else 0)")])
    infer_code, infer_log = _run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                                  "bundles/mri_to_ct/configs/inference.json", "--input", str(data), "--output_dir",
                                  str(args.out / "run")])
    written = {p.parent.name for p in (args.out / "run" / "predictions").glob("*/sct.nii.gz")}
    lines = ["| subject | fault | manifest check (exit %d) | inference (exit %d): message | good sCTs lost |" % (
        check_code, infer_code), "|---|---|---|---|---|"]
    for subject_id, (fault, _) in FAULTS.items():
        found = [line.strip() for line in (check_log + leak_log).splitlines() if subject_id + ":" in line]
        inference = [part.split("were written: ")[-1].strip() for line in infer_log.splitlines()
                     if line.startswith("error:") for part in line.split("|") if subject_id + ":" in part]
        inference += [line.split(" - ")[-1].strip() for line in infer_log.splitlines()
                      if "WARNING" in line and subject_id + ":" in line]
        check = found[0][:150] if found else "— (not flagged)"
        message = inference[0][:150] if inference else ("sCT written" if subject_id in written else "—")
        lines.append(f"| {subject_id} | {fault} | {check} | {message} | "
                     f"{', '.join(sorted(set(GOOD) - written)) or 'none'} |")
    text = "\n".join(lines) + "\n"
    (args.out / "fault_matrix.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
