"""The quality benchmark's phantom sets (:mod:`scripts.benchmark_quality`): which phantoms, their manifests.

- ``detailed`` (default): :mod:`pipeline.data.phantoms.detailed_head`, one MR per family per subject. The
  first family is the training family (``manifest.csv``); every other family gets ``manifest_<family>.csv``
  over the same subjects and splits with that family's MR: the cross-family test set.
- ``simple``: the project's earlier heads (:mod:`pipeline.data.phantoms.head`, one T1w SPGR-like MR); no
  cross-family set.

Training and validation subjects come from ``train_seed``, held-out test subjects from ``test_seed``
(other anatomy, renamed ``1B?9xx``). A run's ``phantoms/`` folder can be reused (``--data``).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pandas as pd

from scripts.benchmark_common import write_phantom_sets

PHANTOMS = ("detailed", "simple")
SIMPLE = "simple"  # the family name of the simple phantoms' MR (a T1w SPGR without scanner variation)


def default_size(phantoms: str) -> tuple[int, int, int]:
    """1 mm voxels: the detailed heads' 1 mm preset; the simple heads' 224 x 224 x 180 mm field of view."""
    if phantoms == "detailed":
        from pipeline.data.phantoms.detailed_head import SIZES

        return SIZES["1mm"][0]
    return (224, 224, 180)


def make_data(out: Path, *, phantoms: str, size: tuple[int, int, int], n_train: int, n_val: int, n_test: int,
              train_seed: int, test_seed: int, families: tuple[str, ...] = ("spgr", "mprage")) -> dict[str, Path]:
    """Write the phantoms into ``out`` and their manifests; returns ``{family: manifest}``, the training
    family first (``manifest.csv``), then one ``manifest_<family>.csv`` per other family."""
    from pipeline.data.manifest import find_subjects, write_manifest

    if phantoms == "detailed":
        from pipeline.data.phantoms.detailed_head import write_detailed_dataset

        writer, prefix = partial(write_detailed_dataset, families=families), "1BD"
    elif phantoms == SIMPLE:
        from pipeline.data.phantoms.head import write_phantom_dataset

        writer, prefix, families = write_phantom_dataset, "1BP", (SIMPLE,)
    else:
        raise ValueError(f"phantoms must be one of {PHANTOMS}, got {phantoms!r}")
    write_phantom_sets(writer, out, n_trainval=n_train + n_val, n_test=n_test, train_seed=train_seed,
                       test_seed=test_seed, size=size, test_id=lambda i: f"{prefix}{901 + i:03d}")
    trainval = find_subjects(out / "trainval")
    trainval["split"] = ["train"] * n_train + ["val"] * n_val
    test = find_subjects(out / "test")
    test["split"] = "test"
    subjects = pd.concat([trainval, test], ignore_index=True)
    manifests = {families[0]: write_manifest(subjects, out / "manifest.csv")}
    for family in families[1:]:
        other = subjects.copy()
        other["mr"] = [str(Path(path).with_name(f"mr_{family}.nii.gz")) for path in subjects["mr"]]
        manifests[family] = write_manifest(other, out / f"manifest_{family}.csv")
    return manifests


def existing_manifests(data: Path) -> dict[str, Path]:
    """``{family: manifest}`` of phantoms written by :func:`make_data` (training family first)."""
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"--data {data}: no manifest.csv there")
    records = sorted(data.glob("trainval/*/phantom.json"))
    train_family = next(iter(json.loads(records[0].read_text())["families"])) if records else SIMPLE
    others = {path.stem.removeprefix("manifest_"): path for path in sorted(data.glob("manifest_*.csv"))}
    return {train_family: manifest, **others}


def training_fit_manifest(manifest: Path, out: Path, *, n: int) -> Path:
    """A manifest holding the first ``n`` training subjects of ``manifest`` as its ``test`` split: inference
    on it measures how well a model fits the subjects it was trained on (the same way as the held-out MAE)."""
    from pipeline.data.manifest import read_manifest, write_manifest

    df = read_manifest(manifest)
    fit = df[df["split"] == "train"].head(n).copy()
    fit["split"] = "test"
    return write_manifest(fit, out, overwrite=True)
