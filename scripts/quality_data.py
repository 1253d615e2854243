"""The quality benchmark's phantom sets (:mod:`scripts.benchmark_quality`): which phantoms, their manifests.

- ``detailed`` (default): :mod:`pipeline.data.phantoms.detailed_head`, one MR per family per subject. The
  first family is the training family (``manifest.csv``); every other family gets ``manifest_<family>.csv``
  over the same subjects and splits with that family's MR: the cross-family test set.
- ``simple``: the project's earlier heads (:mod:`pipeline.data.phantoms.head`, one T1w SPGR-like MR); no
  cross-family set.

Training and validation subjects come from ``train_seed``, held-out test subjects from ``test_seed``
(other anatomy, numbered ``1B?901``...). A run's ``phantoms/`` folder can be reused (``--data``).

:func:`registration_floors` regenerates the detailed test subjects from their ``phantom.json`` and scores
each family's registration floor (the CT without its noise, moved as that MR was): what the CT's noise and
the MR/CT misregistration alone cost a model that read the anatomy perfectly from the MR; and its MR-visible
floor, which also leaves out what no MR shows (the density field of cortical bone and teeth, the per-subject
HU offsets): what a model that read everything the MR shows perfectly would still miss.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
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
              train_seed: int, test_seed: int, families: tuple[str, ...] = ("spgr", "mprage"),
              workers: int = 1) -> dict[str, Path]:
    """Write the phantoms into ``out`` (``workers`` processes side by side) and their manifests; returns
    ``{family: manifest}``, the training family first (``manifest.csv``), then one ``manifest_<family>.csv`` per
    other family."""
    from pipeline.data.manifest import find_subjects, write_manifest

    if phantoms == "detailed":
        from pipeline.data.phantoms.detailed_head import write_detailed_dataset

        writer = partial(write_detailed_dataset, families=families)
    elif phantoms == SIMPLE:
        from pipeline.data.phantoms.head import write_phantom_dataset

        writer, families = write_phantom_dataset, (SIMPLE,)
    else:
        raise ValueError(f"phantoms must be one of {PHANTOMS}, got {phantoms!r}")
    write_phantom_sets(writer, out, n_trainval=n_train + n_val, n_test=n_test, train_seed=train_seed,
                       test_seed=test_seed, size=size, workers=workers)
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


def registration_floors(manifests: Mapping[str, Path]) -> dict[str, dict[str, float]]:
    """Per family of ``manifests`` (``{family: manifest}``, :func:`make_data`'s): the mean over the test split of
    the registration floor's MAE (HU) against the stored CT, in the body and per CT region (``mae_hu``,
    ``air``, ``soft_tissue``, ``bone``; :func:`pipeline.report.metrics.region_statistics`), and the same of
    the MR-visible floor (``visible_mae_hu``, ``visible_air``, ...; the module docstring).

    Each test subject is regenerated from its ``phantom.json`` (seed, grid) with
    :func:`~pipeline.data.phantoms.detailed_head.make_detailed_subject` (``return_floor``); a subject whose
    regenerated CT differs from its stored ``ct.nii.gz`` (written by another version of the generator), or a
    set that is not detailed phantoms, gives ``{}`` with a warning instead of a wrong floor."""
    from pipeline.data.manifest import load_split
    from pipeline.data.phantoms.detailed_head import make_detailed_subject
    from pipeline.data.phantoms.mr_acquisition import FAMILIES
    from pipeline.io.volumes import read_volumes_on_one_grid
    from pipeline.report.metrics import region_statistics

    families = list(manifests)
    if not set(families) <= set(FAMILIES):
        warnings.warn(f"MR families {families} are not the detailed phantoms' {FAMILIES}; no registration floor",
                      stacklevel=2)
        return {}
    per_family: dict[str, list[dict[str, float]]] = {family: [] for family in families}
    for record in load_split(next(iter(manifests.values())), "test"):
        phantom = Path(record["ct"]).with_name("phantom.json")
        if not phantom.is_file():
            warnings.warn(f"{record['subject_id']}: no {phantom.name} beside its CT (not a detailed phantom); "
                          "no registration floor", stacklevel=2)
            return {}
        drawn = json.loads(phantom.read_text())
        subject = make_detailed_subject(seed=drawn["seed"], size=tuple(drawn["shape"]), families=families,
                                        return_floor=True)
        stored, _ = read_volumes_on_one_grid(record, ("ct", "mask"))
        if not np.array_equal(np.asarray(stored["ct"]), subject.ct):
            warnings.warn(f"{record['subject_id']}: regenerating {phantom} does not reproduce its ct.nii.gz "
                          "(another version of the generator); no registration floor", stacklevel=2)
            return {}
        for family in families:
            scores = {}
            for prefix, floor in (("", subject.registration_floor[family]), ("visible_", subject.visible_floor[family])):
                scores.update({prefix + ("mae_hu" if s["region"] == "body" else s["region"]): s["mae_hu"]
                               for s in region_statistics(floor, subject.ct, stored["mask"])})
            per_family[family].append(scores)
    return {family: pd.DataFrame(values).mean().to_dict() for family, values in per_family.items() if values}
