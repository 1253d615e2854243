"""Peak memory of sCT training data against the number of subjects (SynthRAD-sized volumes at 1 mm).

For each N, a fresh process builds the training sampler of ``bundles/mri_to_ct`` on the CPU (the cached,
deterministic part of the chain for N subjects, moved into the volume bank) and draws a few batches; its
peak RSS is recorded. The
slope (MB per subject) is fitted over N and extrapolated to SynthRAD2023 brain (180 subjects). To keep
the benchmark short, a few phantoms are generated once and listed under N subject IDs (the cache holds
N copies, as it would for N different subjects).

Example::

    python -m scripts.benchmark_memory --out /tmp/memory --counts 4 16 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SYNTHRAD_SUBJECTS = 180


def measure(manifest: Path, *, batches: int) -> dict:
    """Runs in the child process: build the sampler, draw ``batches`` batches, report peak RSS."""
    from pipeline.data.loaders import training_sampler
    from pipeline.data.manifest import load_split

    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    records = load_split(manifest, "train")
    sampler = training_sampler(records, mode="2.5d", patch_size=64, slab_size=5, batch_size=2, samples_per_volume=8,
                               progress=False)
    for _ in range(batches):
        sampler.draw()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"subjects": len(records), "peak_rss_mb": peak_mb, "import_rss_mb": baseline_mb,
            "seconds": time.perf_counter() - start}


def _write_manifest(source: list[dict], n: int, path: Path) -> Path:
    import pandas as pd

    rows = [{**source[i % len(source)], "subject_id": f"1BM{i:03d}", "split": "train"} for i in range(n)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (phantoms, manifests, results)")
    parser.add_argument("--counts", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--phantoms", type=int, default=2, help="distinct phantoms generated")
    parser.add_argument("--shape", type=int, nargs=3, default=[224, 224, 180],
                        help="voxels per phantom (224 x 224 x 180 = the phantom FOV at 1 mm, ~9e6 voxels)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child mode: a manifest
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, batches=args.batches)))
        return 0

    from pipeline.data.manifest import find_subjects
    from pipeline.data.phantoms.head import write_phantom_dataset

    data = args.out / "phantoms"
    if not data.exists():
        write_phantom_dataset(data, n=args.phantoms, seed=11, size=tuple(args.shape))
    source = [{k: row[k] for k in ("mr", "ct", "mask")} for row in find_subjects(data).to_dict("records")]
    voxels = int(np.prod(args.shape))
    results = []
    for n in args.counts:
        manifest = _write_manifest(source, n, args.out / f"manifest_{n}.csv")
        cmd = [sys.executable, "-m", "scripts.benchmark_memory", "--out", str(args.out), "--measure", str(manifest),
               "--batches", str(args.batches)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{n:4d} subjects: peak RSS {result['peak_rss_mb']:8.0f} MB ({result['seconds']:.0f} s)", flush=True)
    counts = np.array([r["subjects"] for r in results], float)
    peaks = np.array([r["peak_rss_mb"] for r in results], float)
    # Peak RSS has a floor (imports, one volume's preprocessing temporaries) that small N never exceed, so
    # the slope is taken between the two largest counts, where the cache dominates.
    slope = (peaks[-1] - peaks[-2]) / (counts[-1] - counts[-2]) if len(counts) > 1 else float("nan")
    intercept = peaks[-1] - slope * counts[-1]
    summary = {"voxels_per_subject": voxels, "results": results, "mb_per_subject": slope,
               "bytes_per_voxel": slope * 2**20 / voxels, "intercept_mb": intercept,
               "synthrad_180_estimate_gb": (intercept + slope * SYNTHRAD_SUBJECTS) / 1024}
    (args.out / "memory.json").write_text(json.dumps(summary, indent=2))
    print(f"slope {slope:.1f} MB/subject = {summary['bytes_per_voxel']:.2f} bytes/voxel; "
          f"180 SynthRAD-sized subjects -> {summary['synthrad_180_estimate_gb']:.1f} GB per process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
