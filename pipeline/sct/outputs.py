"""Write one subject's sCT as NIfTI and/or a DICOM CT series, all-or-nothing and never silently overwritten.

``output_format``: ``"nifti"`` (``<out>/<ID>/sct.nii.gz``, int16 HU with the MR's header), ``"dicom"``
(``<out>/<ID>/sct_dicom/CT_0001.dcm ...``, :func:`pipeline.io.dicom.write_ct_dicom_series`) or ``"both"``.
When the MR came as a DICOM series, the sCT series joins its patient, study and Frame of Reference (the
MR series' grid is checked against the sCT's first) and copies its PatientPosition; otherwise a new
study is made (PatientPosition ``HFS``, with a warning).

Atomicity: every target is checked before inference (:func:`refuse_existing_outputs`); the DICOM series
is written into a hidden temporary folder next to its destination, the NIfTI atomically, and only then
is the folder moved into place, so a failure leaves no half-written series under the final name.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import as_flag
from pipeline.io.atomic import full_suffix, refuse_existing
from pipeline.io.dicom import write_ct_dicom_series
from pipeline.io.dicom_series import select_series
from pipeline.io.volumes import write_like_reference

__all__ = ["OUTPUT_FORMATS", "check_output_format", "output_paths", "refuse_existing_outputs", "write_sct_outputs"]

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("nifti", "dicom", "both")


def check_output_format(output_format: str) -> str:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    return output_format


def output_paths(out_path: str | os.PathLike, *, output_format: str) -> dict[str, Path]:
    """``{"nifti": out_path}`` and/or ``{"dicom": <out_path without suffix>_dicom}`` for ``output_format``."""
    out_path = Path(out_path)
    check_output_format(output_format)
    stem = out_path.name[: len(out_path.name) - len(full_suffix(out_path))]
    paths = {"nifti": out_path, "dicom": out_path.with_name(f"{stem}_dicom")}
    return {kind: path for kind, path in paths.items() if output_format in (kind, "both")}


def refuse_existing_outputs(out_path: str | os.PathLike, *, output_format: str, overwrite: bool) -> None:
    """``FileExistsError`` naming the first existing target unless ``overwrite`` (call before inference)."""
    if as_flag(overwrite, name="overwrite"):
        return
    for path in output_paths(out_path, output_format=output_format).values():
        if path.exists():
            refuse_existing(path)


def _move_into_place(staged: Path, final: Path, *, overwrite: bool) -> None:
    """Rename the staged series folder onto ``final``; an old one is moved aside first, then deleted."""
    old = None
    if final.exists():
        if not as_flag(overwrite, name="overwrite"):
            refuse_existing(final)
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old)


def write_sct_outputs(
    hu: np.ndarray,
    *,
    mr_file: str | os.PathLike,
    out_path: str | os.PathLike,
    output_format: str = "nifti",
    mr_dicom_dir: str | os.PathLike | None = None,
    mr_series_uid: str | None = None,
    model_id: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the sCT ``hu`` (``(X, Y, Z)`` HU on the grid of ``mr_file``) in ``output_format``.

    Args:
        mr_file: the MR volume file inference read (for a DICOM MR, its converted NIfTI): its header is
            the sCT's grid.
        out_path: the NIfTI path; the DICOM folder is derived from it (:func:`output_paths`).
        mr_dicom_dir, mr_series_uid: the MR's DICOM folder and series (default: its only MR series) whose
            identifiers the sCT series shares; None for a NIfTI/MHA MR.
        model_id: model identifier (card hash) for SoftwareVersions and DerivationDescription.
        description: provenance for the NIfTI ``descrip`` field.

    Returns:
        The written paths: the NIfTI file first (when written), then the DICOM folder.
    """
    targets = output_paths(out_path, output_format=output_format)
    refuse_existing_outputs(out_path, output_format=output_format, overwrite=overwrite)
    written, staged = [], None
    parent = Path(out_path).parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        if "dicom" in targets:
            if mr_dicom_dir is not None and mr_series_uid is None:
                mr_series_uid = select_series(mr_dicom_dir, modality="MR").uid
            staged = Path(tempfile.mkdtemp(prefix=f".{targets['dicom'].name}.tmp-", dir=parent))
            write_ct_dicom_series(hu, reference_image=mr_file, out_dir=staged, reference_dicom_dir=mr_dicom_dir,
                                  reference_series_uid=mr_series_uid, model_id=model_id, overwrite=True)
        if "nifti" in targets:
            written.append(write_like_reference(hu, reference_path=mr_file, out_path=targets["nifti"],
                                                dtype=np.int16, overwrite=overwrite, description=description))
        if staged is not None:
            _move_into_place(staged, targets["dicom"], overwrite=overwrite)
            staged = None
            written.append(targets["dicom"])
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    return written
