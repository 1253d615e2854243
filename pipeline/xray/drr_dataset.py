"""Paired single-energy / dual-energy DRR datasets from CT volumes (the SE -> DE Pix2Pix task).

For each CT: HU -> partial densities (:func:`transforms.drr.decompose_materials`), then
``projections_per_ct`` random projections (gantry angle, small isocentre shift), each rendered as
material line integrals (:func:`transforms.drr.project_line_integrals`) and turned into log images
(:func:`pipeline.xray.physics.xray_images`): ``se`` (120 kVp), ``de_soft`` and ``de_bone`` (60/120 kVp
weighted log subtraction). All three are dimensionless log attenuation ``-ln(I/I0)`` units.

Output layout (``find_paired_images`` and ``read_paired_manifest`` in :mod:`pipeline.io.images2d`
read both)::

    OUT/se/CXR001_p000.nii.gz   OUT/de_soft/CXR001_p000.nii.gz   OUT/de_bone/CXR001_p000.nii.gz ...
    OUT/manifest.csv            subject_id, projection_id, se, de_soft, de_bone, split, angle_deg, shift_*_mm
    with realism also OUT/de_soft_noiseless/..., OUT/de_bone_noiseless/... (bone-leak references, NIfTI)
    OUT/lung_path/...           lung path length per pixel (mm, NIfTI): the lung fields of the evaluation
    OUT/drr_dataset.json        geometry, physics (kVp, mean energies, DE weights), PNG scaling

NIfTI images are float32 ``(H, W)``; 16-bit PNGs store ``round(value / png_scale)`` (default
``png_scale`` 2e-4 log units per count, saturating at 13.1). Splits are by CT subject: all projections
of one CT share one split. Every file is written atomically; nothing is overwritten without
``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.manifest import subject_splits
from pipeline.data.parallel import map_in_processes
from pipeline.errors import InputError
from pipeline.io.atomic import atomic_path
from pipeline.xray.drr_render import (
    NOISELESS_KEYS,
    CTTask,
    DRRDatasetConfig,
    fit_pixel_spacing,
    load_densities,
    projected_tumour_labels,
    render_ct,
    render_pair,
    sample_geometries,
    with_realism,
)
from pipeline.xray.physics import describe_physics

CT_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
MANIFEST_NAME = "manifest.csv"
METADATA_NAME = "drr_dataset.json"


def find_cts(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(subject_id, ct_path)`` pairs from a folder or a manifest CSV, sorted by subject ID.

    - CSV: columns ``subject_id`` and ``ct`` (relative paths resolved against the CSV's folder; a
      :mod:`pipeline.data.manifest` MR/CT manifest works, rows with an empty ``ct`` are skipped);
    - folder with ``<ID>/ct.<nii.gz|nii|mha|nrrd>`` sub-folders (SynthRAD2023 / phantom layout);
    - otherwise a folder of CT files, subject ID = file name without suffix.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
        if not {"subject_id", "ct"} <= set(table.columns):
            raise ValueError(f"{source}: a CT manifest needs columns subject_id and ct; has {list(table.columns)}")
        found = []
        for subject, ct in zip(table["subject_id"], table["ct"]):
            if not ct.strip():  # e.g. an inference-only row of an MR/CT manifest: nothing to project
                continue
            path = Path(ct) if Path(ct).is_absolute() else source.parent / ct
            found.append((subject, path))
    elif source.is_dir():
        found = []
        for sub in sorted(p for p in source.iterdir() if p.is_dir()):
            cts = [sub / f"ct{s}" for s in CT_SUFFIXES if (sub / f"ct{s}").exists()]
            if cts:
                found.append((sub.name, cts[0]))
        if not found:
            for path in sorted(source.iterdir()):
                suffix = next((s for s in CT_SUFFIXES if path.name.lower().endswith(s)), None)
                if path.is_file() and suffix and not path.name.startswith("."):
                    found.append((path.name[: -len(suffix)], path))
    else:
        raise ValueError(f"{source}: neither a folder nor a .csv manifest")
    if not found:
        raise ValueError(f"{source}: no CT found (expected <ID>/ct.nii.gz, *.nii.gz files or a CSV)")
    ids = [s for s, _ in found]
    duplicates = sorted({s for s in ids if ids.count(s) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate subject IDs {duplicates}")
    for subject, path in found:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", subject):
            raise InputError(f"{subject}: subject ID is not a safe file name ({path})")
        if not path.exists():
            raise InputError(f"{subject}: CT file {path} does not exist")
    return sorted(found)


def _write_table(table: pd.DataFrame, path: Path, *, overwrite: bool) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False)


#: row index from which held-out CTs draw their noise and physics (no training set has this many rows), so
#: those draws do not depend on the training set's size
HELD_OUT_FIRST_ROW = 1_000_000


def build_drr_dataset(ct_source: str | os.PathLike, out_dir: str | os.PathLike, *,
                      config: DRRDatasetConfig = DRRDatasetConfig(), overwrite: bool = False,
                      progress: bool = True, extra_manifest: str | os.PathLike | None = None,
                      test_source: str | os.PathLike | None = None, test_projections_per_ct: int | None = None,
                      workers: int = 1) -> Path:
    """Render the dataset (see the module docstring); returns the path of ``OUT/manifest.csv``.

    ``test_source``: further CTs (a folder or CSV, as ``ct_source``), every one in the test split: held-out
    anatomy made apart (e.g. phantoms without the training set's options); ``ct_source``'s subjects are split
    by the config's fractions as always (and get the same views as without ``test_source``), and an ID in both
    sources is refused. The test CTs' views and noise come from streams of their own, so they are the same
    images whatever the training CTs and their number of views; ``test_projections_per_ct`` (default: the
    config's) views each. ``extra_manifest``: also write
    a copy whose paths are relative to its own folder (e.g. ``data_manifests/drr_chest.csv``). Raises
    ``FileExistsError`` before rendering anything if the manifest or any output image exists and
    ``overwrite`` is False. ``workers`` > 1 renders that many CTs at a time, each in a process of its own
    (:func:`pipeline.xray.drr_render.render_ct`): the same images whatever ``workers``, as every view, noise
    and physics draw is fixed before any CT is read.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    cts = find_cts(ct_source)
    splits = subject_splits([s for s, _ in cts], val_fraction=config.val_fraction,
                           test_fraction=config.test_fraction, seed=config.seed)
    held_out = find_cts(test_source) if test_source is not None else []
    shared = sorted({s for s, _ in cts} & {s for s, _ in held_out})
    if shared:
        raise InputError(f"{shared[0]}: subject ID in both {ct_source} and the test CTs {test_source} "
                         f"({len(shared)} shared); held-out subjects need IDs of their own")
    cts += held_out  # after the others, so the others' views are a run's without them
    splits.update({s: "test" for s, _ in held_out})
    held_out_ids = {s for s, _ in held_out}
    test_config = (config if test_projections_per_ct is None  # replace() checks the count as the config does
                   else replace(config, projections_per_ct=test_projections_per_ct))
    views = {s: (test_config if s in held_out_ids else config).projections_per_ct for s, _ in cts}
    suffix = "." + config.image_format
    names = [f"{subject}_p{p:03d}" for subject, _ in cts for p in range(views[subject])]
    targets = [out / MANIFEST_NAME, out / METADATA_NAME] + [out / k / f"{n}{suffix}" for k in config.keys
                                                          for n in names]
    targets += [out / k / f"{subject}_p{p:03d}.nii.gz" for subject, path in cts
                if (Path(path).parent / "tumours.nii.gz").exists()
                for k in ("tumour_mask", "bone_path") for p in range(views[subject])]
    targets += [out / "lung_path" / f"{n}.nii.gz" for n in names]
    if with_realism(config):
        targets += [out / k / f"{n}.nii.gz" for k in NOISELESS_KEYS for n in names]
    if extra_manifest is not None:
        targets.append(Path(extra_manifest))
    if not overwrite:
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise FileExistsError(f"{len(existing)} output file(s) exist, e.g. {existing[0]}; "
                                  "pass overwrite=True / --overwrite to replace them")
    rngs = {False: np.random.default_rng(config.seed), True: np.random.default_rng([config.seed, 1])}  # held out?
    tasks, next_index = [], {False: 0, True: HELD_OUT_FIRST_ROW}
    for subject, path in cts:  # every draw in subject order, before any CT is read: the same whatever `workers`
        held = subject in held_out_ids
        # the pitch is set where the CT is read (render_ct): a placeholder here
        poses = sample_geometries(rngs[held], test_config if held else config, pixel_spacing_mm=1.0)
        tasks.append((CTTask(subject, Path(path), splits[subject], tuple(poses), next_index[held]), config, out))
        next_index[held] += len(poses)
    bar = tqdm(total=len(names), desc="DRR pairs" + (f" ({min(workers, len(tasks))} processes)" if workers > 1 else ""),
               unit="pair", disable=not progress)
    results = map_in_processes(partial(render_ct, overwrite=overwrite), tasks, workers=workers,
                               on_result=lambda result: bar.update(len(result[0])))
    bar.close()
    rows = [row for ct_rows, _ in results for row in ct_rows]
    saturated = sum(count for _, count in results)
    if saturated:
        warnings.warn(f"{saturated} PNG pixels saturated at {65535 * config.png_scale:.2f}; "
                      "raise png_scale or use NIfTI", stacklevel=2)
    table = pd.DataFrame(rows)
    for key in ("tumour_mask", "bone_path", "lung_path", *NOISELESS_KEYS):  # subjects without tumour labels: empty cells
        if key in table:
            table[key] = table[key].fillna("")
    physics = (describe_physics(kvp_se=config.kvp_se, kvp_low=config.kvp_low, kvp_high=config.kvp_high)
               if config.physics_ranges is None else
               "drawn per image from config.physics_ranges: see the manifest's kvp_low, kvp_high, al_filter_mm, "
               "spr, scatter_sigma_mm, mas_high, mas_low, psf_sigma_mm, quantum_efficiency columns")
    metadata = {"config": asdict(config), "physics": physics, "test_cts": {s: views[s] for s in sorted(held_out_ids)},
        "units": "all images are log attenuation -ln(I/I0) (dimensionless); see docs/xray_physics.md",
        "png": {"value = count * png_scale": config.png_scale} if config.image_format == "png" else None,
        "nifti_axes": "array (H, W): axis 0 = detector rows (superior -> inferior), axis 1 = columns"}
    with atomic_path(out / METADATA_NAME, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, default=str))
    manifest = out / MANIFEST_NAME
    _write_table(table, manifest, overwrite=overwrite)
    if extra_manifest is not None:
        extra = Path(extra_manifest)
        extra.parent.mkdir(parents=True, exist_ok=True)
        copy = table.copy()
        for key in [k for k in (*config.keys, "tumour_mask", "bone_path", "lung_path", *NOISELESS_KEYS) if k in table]:
            # paths relative to the copy's own folder, as read_paired_manifest expects
            copy[key] = [os.path.relpath((out / v).resolve(), extra.parent.resolve()) if v else ""
                         for v in table[key]]
        _write_table(copy, extra, overwrite=overwrite)
    return manifest


__all__: Sequence[str] = [
    "NOISELESS_KEYS", "DRRDatasetConfig", "find_cts", "fit_pixel_spacing", "sample_geometries",
    "render_pair", "projected_tumour_labels", "load_densities", "build_drr_dataset",
]
