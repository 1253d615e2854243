"""The data of :mod:`scripts.benchmark_chest`: chest phantoms and the real CT rendered as DRR pairs at one
detector pitch, and the manifests of its test sets (the benchmark's docstring says which)."""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from scripts.benchmark_common import write_phantom_sets
from scripts.commands import module_command, run

#: Image columns of a DRR manifest besides the noiseless references (pipeline.xray.drr_dataset.NOISELESS_KEYS).
PATH_KEYS = ("se", "de_soft", "de_bone", "tumour_mask", "bone_path", "lung_path")
TEST_SETS = {"phantoms": "held-out chest phantoms", "real": "real chest CT",
             "systems": "held-out chest phantoms, each image from another system (kVp, filtration, scatter, dose, blur drawn)",
             "real_unenhanced": "real chest CT without its contrast agent (iodine outside the skeleton set to 40 HU; "
                                "the same views)"}
#: Test sets an older run's ``--data`` may lack (``real_unenhanced`` is then made in the new run's folder).
OPTIONAL_TEST_SETS = ("systems", "real_unenhanced")
logger = logging.getLogger(__name__)
VARIANT_ID = re.compile(r"-D\d+$")  # pipeline.data.deformation.variant_id


def detector_pitch(size: int) -> float:
    """Detector pitch (mm) at which ``size`` pixels cover the chest phantoms' widest extent (+5 %), as
    ``make_drr_dataset`` would fit it for a phantom; given explicitly so every set has one scale."""
    from pipeline.data.phantoms.chest import FOV_MM
    from pipeline.xray.drr_dataset import DRRDatasetConfig

    config = DRRDatasetConfig()
    return round(float(FOV_MM.max()) * config.sdd_mm / config.sid_mm * 1.05 / size, 4)


def manifest_pitch(manifest: Path) -> float:
    """The detector pitch (mm) of a manifest's DRRs: every set of one benchmark run shares it."""
    return float(pd.read_csv(manifest)["pixel_spacing_mm"].iloc[0])


def real_ct_list(real_ct_dir: Path, out_csv: Path, *, variants: bool = False) -> Path:
    """``subject_id, ct`` of the real CTs in ``real_ct_dir``: the originals, or with ``variants`` only their
    deformed variants (``<ID>-Dnn``, :mod:`pipeline.data.deformation`)."""
    from pipeline.xray.drr_dataset import find_cts

    cts = [(s, p) for s, p in find_cts(real_ct_dir) if bool(VARIANT_ID.search(s)) == variants]
    if not cts:
        what = "no deformed variant (python -m scripts.get_chest_ct --variants K)" if variants else \
            "no real CT besides deformed variants"
        raise ValueError(f"{real_ct_dir}: {what}")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"subject_id": [s for s, _ in cts], "ct": [str(Path(p).resolve()) for _, p in cts]}).to_csv(
        out_csv, index=False)
    return out_csv


def render(ct_source: Path, out: Path, *, views: int, size: int, pitch: float, seed: int,
           volume_spacing: float | None = None, random_physics: bool = False, workers: int = 1) -> dict[str, float]:
    """DRR pairs of every CT in ``ct_source`` with the chest preset, ``workers`` CTs at a time;
    ``{"pairs", "seconds"}``."""
    args = ["--ct-dir", ct_source, "--out", out, "--preset", "chest", "--projections-per-ct", views,
            "--size", size, "--pitch", pitch, "--seed", seed, "--val-fraction", 0, "--test-fraction", 0,
            "--workers", workers, *(["--random-physics"] if random_physics else [])]
    if volume_spacing:
        args += ["--volume-spacing", volume_spacing]
    seconds = run(module_command("scripts.make_drr_dataset", *args))
    return {"pairs": len(pd.read_csv(out / "manifest.csv")), "seconds": seconds}


def relocated(manifest: Path, root: Path, split: Mapping[str, str] | str | None) -> pd.DataFrame:
    """Rows of a DRR ``manifest`` with image paths relative to ``root`` and ``split`` (one for all, per
    subject ID, or None to keep the manifest's)."""
    from pipeline.xray.drr_dataset import NOISELESS_KEYS

    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for key in (k for k in (*PATH_KEYS, *NOISELESS_KEYS) if k in table):
        table[key] = [os.path.relpath((manifest.parent / v).resolve(), root.resolve()) if v else "" for v in table[key]]
    if split is not None:
        table["split"] = [split if isinstance(split, str) else split[s] for s in table["subject_id"]]
    return table


def write_manifest(parts: Sequence[pd.DataFrame], path: Path) -> Path:
    """One pair manifest of ``parts`` (columns a part lacks, e.g. tumour labels of a real CT, are empty)."""
    pd.concat(parts, ignore_index=True).fillna("").to_csv(path, index=False)
    return path


def make_data(out: Path, *, args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, dict[str, float]]]:
    """Phantoms, DRR sets and the two manifests (module docstring); ``({test set: manifest}, render times)``."""
    from pipeline.data.phantoms.chest_dataset import write_chest_dataset

    trainval, _ = write_phantom_sets(
        write_chest_dataset, out / "phantoms", n_trainval=args.train_subjects + args.val_subjects,
        n_test=args.test_subjects, train_seed=args.train_seed, test_seed=args.test_seed, size=args.phantom_size,
        trainval_options={"contrast": None if args.train_contrast == "drawn" else args.train_contrast,
                          "rib_density": tuple(args.train_rib_density),
                          "extra_tumours": tuple(args.train_extra_tumours) if max(args.train_extra_tumours) else None},
        workers=args.workers)
    ids = sorted(f.name for f in trainval)
    trainval_split = {s: "train" if i < args.train_subjects else "val" for i, s in enumerate(ids)}
    drr, pitch = out / "drr", detector_pitch(args.size)
    options = {"size": args.size, "pitch": pitch, "workers": args.workers}
    timing = {"phantoms train/val": render(out / "phantoms" / "trainval", drr / "trainval", views=args.views,
                                           seed=args.train_seed, random_physics=args.physics == "random", **options),
              "phantoms test": render(out / "phantoms" / "test", drr / "test", views=args.test_views,
                                      seed=args.test_seed, **options),
              "phantoms test, drawn systems": render(out / "phantoms" / "test", drr / "test_systems",
                                                     views=args.test_views, seed=args.test_seed + 1,
                                                     random_physics=True, **options),
              "real CT": render(real_ct_list(args.real_ct_dir, drr / "real_cts.csv"), drr / "real",
                                views=args.test_views, seed=args.test_seed, volume_spacing=args.real_volume_spacing,
                                **options)}
    train_rows = relocated(drr / "trainval" / "manifest.csv", drr, trainval_split)
    real = write_manifest([train_rows[train_rows["split"] == "train"],
                           relocated(drr / "real" / "manifest.csv", drr, "test")], drr / "real.csv")
    manifests = {
        "phantoms": write_manifest([train_rows, relocated(drr / "test" / "manifest.csv", drr, "test")],
                                   drr / "phantoms.csv"),
        "real": real,
        "systems": write_manifest([train_rows[train_rows["split"] == "train"],
                                   relocated(drr / "test_systems" / "manifest.csv", drr, "test")], drr / "systems.csv"),
    }
    unenhanced = unenhanced_set(real, drr, args=args, pitch=pitch)
    if unenhanced is not None:
        manifests["real_unenhanced"], timing["real CT, contrast removed"] = unenhanced
    return manifests, timing


def unenhanced_set(real_manifest: Path, folder: Path, *, args: argparse.Namespace, pitch: float,
                   ) -> tuple[Path, dict[str, float]] | None:
    """The ``real_unenhanced`` test set: each real CT of ``args.real_ct_dir`` that has its segmentation, without
    its contrast agent (:mod:`pipeline.data.unenhanced`, into ``folder/real_unenhanced_ct``), rendered as the
    real set is (``--test-views``, ``--test-seed``: the same views and noise as the real CT's when the seeds
    match); manifest ``folder/real_unenhanced.csv`` with the training rows of ``real_manifest``.
    ``(manifest, render time)``, or None (logged) when no real CT has a segmentation."""
    from pipeline.data.unenhanced import write_unenhanced_ct
    from pipeline.errors import InputError
    from pipeline.xray.drr_dataset import find_cts

    labelled = [Path(p).parent for s, p in find_cts(args.real_ct_dir) if not VARIANT_ID.search(s)
                and all((Path(p).parent / name).is_file() for name in ("mask.nii.gz", "structures.csv"))]
    cts, written = folder / "real_unenhanced_ct", 0
    for subject in labelled:
        try:
            write_unenhanced_ct(subject, cts)
            written += 1
        except InputError as err:  # one bad segmentation does not cost the others
            logger.warning("left out of real_unenhanced: %s", err)
    if not written:
        logger.warning("%s: no real CT with a usable mask.nii.gz and structures.csv; no real_unenhanced test set",
                       args.real_ct_dir)
        return None
    timing = render(cts, folder / "real_unenhanced", views=args.test_views, size=args.size, pitch=pitch,
                    seed=args.test_seed, volume_spacing=args.real_volume_spacing, workers=args.workers)
    rows = relocated(real_manifest, folder, None)
    return write_manifest([rows[rows["split"] == "train"], relocated(folder / "real_unenhanced" / "manifest.csv", folder, "test")],
                          folder / "real_unenhanced.csv"), timing


def add_real_variants(manifests: Mapping[str, Path], out: Path, *, args: argparse.Namespace,
                      ) -> tuple[dict[str, Path], dict[str, float]]:
    """DRRs of the real CT's deformed variants (``--views`` each) added to the training split of both
    manifests, written anew in ``out/drr_variants``; ``({test set: manifest}, render time)``. The real-CT
    test is then no longer held out (the variants are that patient)."""
    folder = out / "drr_variants"
    pitch = manifest_pitch(manifests["phantoms"])
    timing = render(real_ct_list(args.real_ct_dir, folder / "variant_cts.csv", variants=True), folder / "variants",
                    views=args.views, size=args.size, pitch=pitch, seed=args.train_seed + 1,
                    volume_spacing=args.real_volume_spacing, random_physics=args.physics == "random",
                    workers=args.workers)
    variants = relocated(folder / "variants" / "manifest.csv", folder, "train")
    return {name: write_manifest([relocated(manifest, folder, None), variants], folder / f"{name}.csv")
            for name, manifest in manifests.items()}, timing


#: Where a run made with ``--data`` renders the ``real_unenhanced`` set its reused DRRs lack (:func:`unenhanced_set`).
UNENHANCED_FOLDER = "drr_unenhanced"


def run_manifest(run_dir: Path, test_set: str) -> Path:
    """The manifest of ``test_set`` in a benchmark run: ``run_dir/drr/<set>.csv`` (``make_data``'s layout), or for
    ``real_unenhanced`` rendered beside reused DRRs ``run_dir/drr_unenhanced/real_unenhanced.csv``; the first
    that exists (else the first). Paths inside a manifest are relative to its folder."""
    places = [run_dir / "drr" / f"{test_set}.csv"]
    if test_set == "real_unenhanced":
        places.append(run_dir / UNENHANCED_FOLDER / f"{test_set}.csv")
    return next((p for p in places if p.is_file()), places[0])


def reused_data(run_dir: Path) -> dict[str, Path]:
    """``{test set: manifest}`` of an earlier run (:func:`run_manifest`); optional sets it lacks are left out."""
    manifests = {name: run_manifest(run_dir, name) for name in TEST_SETS}
    manifests = {name: p for name, p in manifests.items() if p.is_file() or name not in OPTIONAL_TEST_SETS}
    missing = [str(p) for p in manifests.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--data {run_dir}: no {', '.join(missing)} (not a benchmark_chest output folder)")
    return manifests
