"""Export a synthetic CT (NIfTI/MHA, HU) as a DICOM CT Image Storage series for a planning system.

Example::

    python -m scripts.export_dicom out/1BA001/sct.nii.gz out/1BA001/sct_dicom --reference-dicom dicom/1BA001/MR

With ``--reference-dicom`` (the folder of the MR series the sCT was computed from; ``--reference-series-uid``
when it holds several series) the series joins the MR's patient, study and Frame of Reference, after its
grid is checked to be the sCT's. The output folder must be empty unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.io.dicom import write_ct_dicom_series
from pipeline.io.volumes import read_volume


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sct", type=Path, help="synthetic CT in HU (.nii.gz / .nii / .mha)")
    parser.add_argument("out_dir", type=Path, help="folder for the DICOM series (one file per slice)")
    parser.add_argument("--reference-dicom", type=Path, default=None,
                        help="folder of the source MR DICOM series: patient/study/frame-of-reference IDs are copied")
    parser.add_argument("--reference-series-uid", default=None,
                        help="SeriesInstanceUID of the reference series when the folder holds several")
    parser.add_argument("--model-id", default=None, help="model identifier (e.g. model card hash) for SoftwareVersions")
    parser.add_argument("--series-description", default="rtsynth synthetic CT", help="SeriesDescription (<= 64 chars)")
    parser.add_argument("--patient-id", default=None, help="PatientID (overrides the reference)")
    parser.add_argument("--patient-name", default=None, help="PatientName, e.g. 'Doe^Jane' (overrides the reference)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        hu, _ = read_volume(args.sct)
        files = write_ct_dicom_series(
            hu, reference_image=args.sct, out_dir=args.out_dir, reference_dicom_dir=args.reference_dicom,
            reference_series_uid=args.reference_series_uid, model_id=args.model_id,
            series_description=args.series_description, patient_id=args.patient_id,
            patient_name=args.patient_name, overwrite=args.overwrite,
        )
    except (FileExistsError, FileNotFoundError, NotADirectoryError, ValueError) as err:
        print(f"error: {args.sct}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} CT slices to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
