"""DRR dataset builder (pipeline/xray/drr_dataset.py, scripts/make_drr_dataset.py): paired files, manifest,
splits by subject, overwrite refusal, bad input, and (when present) the real chest CT."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import InputError
from pipeline.io.images2d import LoadPairedImaged, find_paired_images, read_paired_manifest
from pipeline.xray.drr_dataset import (
    METADATA_NAME,
    DRRDatasetConfig,
    build_drr_dataset,
    find_cts,
    load_densities,
    render_pair,
)
from transforms.drr import ProjectionGeometry

N, SPACING = 32, 4.0
CHEST_CT = Path(__file__).resolve().parents[1] / "data" / "chest_ct" / "CXR001" / "ct.nii.gz"


def _tiny_ct(seed: int) -> np.ndarray:
    """Air around a soft-tissue cylinder (40 HU) with a bone rod (1200 HU), slightly varied by seed."""
    rng = np.random.default_rng(seed)
    axis = (np.arange(N) - (N - 1) / 2.0) * SPACING
    x, y, _ = np.meshgrid(axis, axis, axis, indexing="ij")
    hu = np.full((N, N, N), -1000.0, np.float32)
    hu[x**2 + y**2 < (50.0 + rng.uniform(-5, 5))**2] = 40.0
    hu[(x - 15.0)**2 + y**2 < 10.0**2] = 1200.0
    return hu.astype(np.int16)


def _write_cts(root: Path, ids) -> None:
    affine = np.diag([-SPACING, -SPACING, SPACING, 1.0])  # LPS-like storage: the projector must not care
    for i, sid in enumerate(ids):
        (root / sid).mkdir(parents=True)
        nib.save(nib.Nifti1Image(_tiny_ct(i), affine), root / sid / "ct.nii.gz")


def _config(**kw) -> DRRDatasetConfig:
    base = dict(projections_per_ct=2, detector_size=16, volume_spacing_mm=8.0, val_fraction=0.25, test_fraction=0.25)
    return DRRDatasetConfig(**{**base, **kw})


def test_builder_writes_pairs_manifest_and_never_mixes_splits(tmp_path):
    ids = ["CT01", "CT02", "CT03", "CT04"]
    _write_cts(tmp_path / "cts", ids)
    out = tmp_path / "drr"
    manifest = build_drr_dataset(tmp_path / "cts", out, config=_config(), progress=False,
                                 extra_manifest=tmp_path / "data_manifests" / "drr.csv")
    table = pd.read_csv(manifest)
    assert list(table.columns[:6]) == ["subject_id", "projection_id", "se", "de_soft", "de_bone", "split"]
    assert len(table) == 8 and sorted(table["subject_id"].unique()) == ids
    assert (table.groupby("subject_id")["split"].nunique() == 1).all()
    assert {"train", "val", "test"} == set(table["split"])
    for key in ("se", "de_soft", "de_bone"):
        assert all((out / p).exists() for p in table[key])
    # Both readers find the same pairs; images are (1, H, W) float32 and physically sensible.
    records = read_paired_manifest(manifest)
    assert [r["image_id"] for r in records] == [r["image_id"] for r in find_paired_images(out)]
    assert len(read_paired_manifest(tmp_path / "data_manifests" / "drr.csv")) == 8
    data = LoadPairedImaged(["se", "de_soft", "de_bone"])(records[0])
    se, soft, bone = (data[k][0].numpy() for k in ("se", "de_soft", "de_bone"))
    assert se.shape == (16, 16) and se.min() >= 0 and se.max() > 1.0
    assert bone.max() > 0.3 and soft.max() > 1.0
    np.testing.assert_allclose(soft + bone, se, atol=0.02 * se.max())  # se = high kVp here
    assert (out / "drr_dataset.json").exists()
    # A second run refuses before writing anything; overwrite=True replaces.
    with pytest.raises(FileExistsError):
        build_drr_dataset(tmp_path / "cts", out, config=_config(), progress=False)
    build_drr_dataset(tmp_path / "cts", out, config=_config(), progress=False, overwrite=True)


def test_builder_png_format_and_cli(tmp_path):
    from scripts.make_drr_dataset import main

    _write_cts(tmp_path / "cts", ["A1", "A2"])
    rc = main(["--ct-dir", str(tmp_path / "cts"), "--out", str(tmp_path / "png"), "--projections-per-ct", "1",
               "--size", "16", "--format", "png", "--volume-spacing", "8", "--figure", str(tmp_path / "f.png")])
    assert rc == 0 and (tmp_path / "f.png").exists()
    records = read_paired_manifest(tmp_path / "png" / "manifest.csv")
    assert len(records) == 2 and records[0]["se"].endswith(".png")
    se = LoadPairedImaged(["se"], png_scale=DRRDatasetConfig().png_scale)(records[0])["se"]
    assert se.shape == (1, 16, 16) and 1.0 < float(se.max()) < 13.0
    assert main(["--ct-dir", str(tmp_path / "cts"), "--out", str(tmp_path / "png"), "--size", "16"]) == 2


def test_bad_ct_is_reported_with_subject(tmp_path):
    (tmp_path / "cts").mkdir()
    raw = np.full((8, 8, 8), 1000, np.int16)  # scanner units, not HU: no air
    nib.save(nib.Nifti1Image(raw, np.eye(4)), tmp_path / "cts" / "B07.nii.gz")
    assert find_cts(tmp_path / "cts") == [("B07", tmp_path / "cts" / "B07.nii.gz")]
    for workers in (1, 2):  # from a worker process too: the same one-line error
        with pytest.raises(InputError, match="^B07: CT .* does not look like HU"):
            build_drr_dataset(tmp_path / "cts", tmp_path / f"out{workers}", config=_config(), progress=False,
                              workers=workers)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no CT found"):
        find_cts(tmp_path / "empty")


def test_chest_ct_drr_shows_spine_in_bone_image():
    assert CHEST_CT.exists(), "make test fetches it: python -m scripts.get_chest_ct --out data/chest_ct"
    densities, affine = load_densities("CXR001", CHEST_CT, volume_spacing_mm=2.8, with_lung=True)
    geometry = ProjectionGeometry(detector_shape=(32, 32), pixel_spacing_mm=17.0)  # AP view, 544 mm panel
    images = render_pair(densities, affine, geometry, config=DRRDatasetConfig())
    materials_only = render_pair(densities[:2], affine, geometry, config=DRRDatasetConfig())
    assert "lung_path" not in materials_only and np.array_equal(materials_only["se"], images["se"])
    bone, soft = images["de_bone"].numpy(), images["de_soft"].numpy()
    assert np.isfinite(bone).all() and images["se"].min() >= 0
    rows = slice(12, 22)  # mid-thorax: spine (centre columns) vs lungs (a quarter of the way in)
    spine, lung = bone[rows, 15:17].mean(), bone[rows, [8, 23]].mean()
    assert spine > 1.5 * lung
    assert soft[rows, 15:17].mean() > soft[rows, [8, 23]].mean()  # mediastinum denser than lung
    # lung path (mm): a lung is 100-200 mm deep front to back; little lung in front of the spine
    lung_path = images["lung_path"].numpy()
    assert lung_path[rows, [8, 23]].mean() > 80.0
    assert lung_path[rows, 15:17].mean() < 0.5 * lung_path[rows, [8, 23]].mean()
    assert lung_path[:, :2].max() < 5.0  # beside the body, no lung (nor a table pad counted as lung)


def test_chest_phantoms_with_tumour_masks_tilts_and_seeded_realism(tmp_path):
    import json

    from pipeline.data.phantoms.chest_dataset import write_chest_dataset
    from pipeline.xray.radiograph import RealismConfig

    write_chest_dataset(tmp_path / "cts", n=1, seed=5, size="tiny")
    config = _config(projections_per_ct=2, detector_size=32, volume_spacing_mm=None, angle_range_deg=(-10.0, 10.0),
                     max_tilt_deg=5.0, realism=RealismConfig(mas_high=0.5, mas_low=2.0))
    manifest = build_drr_dataset(tmp_path / "cts", tmp_path / "a", config=config, progress=False,
                                 extra_manifest=tmp_path / "copies" / "m.csv")
    table = pd.read_csv(manifest)
    assert table["tilt_deg"].abs().max() <= 5.0 and table["tilt_deg"].abs().min() > 0.0
    listed = {t["label"] for t in json.loads((tmp_path / "cts" / "2TP001" / "tumours.json").read_text())["tumours"]}
    for row in table.itertuples():
        labels = nib.load(manifest.parent / row.tumour_mask).get_fdata()
        assert set(np.unique(labels)) - {0.0} <= listed and labels.max() > 0  # the tumours are in view
        assert nib.load(manifest.parent / row.bone_path).get_fdata().min() >= 0.0
        assert nib.load(manifest.parent / row.lung_path).get_fdata().max() > 30.0  # mm: the lung fields
    copy = pd.read_csv(tmp_path / "copies" / "m.csv")
    for key in ("tumour_mask", "lung_path", "de_soft_noiseless"):  # the copy's paths are relative to itself
        assert (tmp_path / "copies" / copy[key][0]).resolve() == (manifest.parent / table[key][0]).resolve()
    # Same seed, same realisation; the masks' files are refused like the images without overwrite.
    again = build_drr_dataset(tmp_path / "cts", tmp_path / "b", config=config, progress=False)
    se_a = nib.load(manifest.parent / table["se"][0]).get_fdata()
    assert np.array_equal(se_a, nib.load(again.parent / table["se"][0]).get_fdata())
    with pytest.raises(FileExistsError):
        build_drr_dataset(tmp_path / "cts", tmp_path / "b", config=config, progress=False)
    # The noiseless references (bone-leak metric) are the expected images: what a dose so high that the
    # noise vanishes gives for the same views, independently of the zero-noise path that writes them.
    bright = build_drr_dataset(tmp_path / "cts", tmp_path / "c", progress=False, config=dataclasses.replace(
        config, realism=RealismConfig(mas_high=5e6, mas_low=2e7)))
    for key in ("de_soft", "de_bone"):
        reference = nib.load(manifest.parent / table[f"{key}_noiseless"][0]).get_fdata()
        noisy = nib.load(manifest.parent / table[key][0]).get_fdata()
        high_dose = nib.load(bright.parent / table[key][0]).get_fdata()
        assert np.abs(reference - high_dose).max() < 0.01 * np.abs(reference).max()
        assert np.abs(noisy - reference).mean() > 10 * np.abs(high_dose - reference).mean()  # 0.5 mAs is noisy
    from scripts.make_drr_dataset import save_figure  # SE | DE soft | DE bone with tumour outlines

    assert save_figure(manifest, tmp_path / "fig.png", rows=1).stat().st_size > 1000


def test_test_cts_all_go_to_the_test_split_and_shared_ids_are_refused(tmp_path):
    from scripts.make_drr_dataset import main

    _write_cts(tmp_path / "train", ["T01", "T02", "T03"])
    _write_cts(tmp_path / "held_out", ["A901", "A902"])  # IDs that sort before the training ones
    out = tmp_path / "drr"
    rc = main(["--ct-dir", str(tmp_path / "train"), "--test-ct-dir", str(tmp_path / "held_out"), "--out", str(out),
               "--projections-per-ct", "1", "--size", "16", "--volume-spacing", "8", "--val-fraction", "0.34",
               "--test-fraction", "0"])
    assert rc == 0
    splits = pd.read_csv(out / "manifest.csv").groupby("subject_id")["split"].first().to_dict()
    assert {s for s, split in splits.items() if split == "test"} == {"A901", "A902"}
    assert sorted(split for s, split in splits.items() if s.startswith("T0")) == ["train", "train", "val"]
    # the training CTs' views are those of a run without the test CTs (rendered after them)
    alone = build_drr_dataset(tmp_path / "train", tmp_path / "alone",
                              config=_config(projections_per_ct=1, val_fraction=0.34, test_fraction=0.0),
                              progress=False)
    with_test, without = pd.read_csv(out / "manifest.csv"), pd.read_csv(alone)
    columns = ["subject_id", "angle_deg", "shift_x_mm", "split"]
    pd.testing.assert_frame_equal(with_test[with_test["split"] != "test"][columns].reset_index(drop=True),
                                  without[columns])
    _write_cts(tmp_path / "clash", ["T02"])
    with pytest.raises(InputError, match="^T02: subject ID in both"):
        build_drr_dataset(tmp_path / "train", tmp_path / "x", config=_config(), progress=False,
                          test_source=tmp_path / "clash")
    assert not (tmp_path / "x").exists()


def test_test_cts_keep_their_images_whatever_the_training_cts_and_views(tmp_path):
    from scripts.make_drr_dataset import main

    _write_cts(tmp_path / "three", ["T01", "T02", "T03"])
    _write_cts(tmp_path / "one", ["T01"])
    _write_cts(tmp_path / "held_out", ["A901"])
    tests = {}
    for name, views in (("one", 3), ("three", 1)):  # 3 training views either way, from other CTs
        out = tmp_path / f"drr_{name}"
        assert main(["--ct-dir", str(tmp_path / name), "--test-ct-dir", str(tmp_path / "held_out"), "--out", str(out),
                     "--projections-per-ct", str(views), "--test-projections-per-ct", "2", "--size", "16",
                     "--volume-spacing", "8", "--val-fraction", "0", "--test-fraction", "0", "--realism"]) == 0
        table = pd.read_csv(out / "manifest.csv")
        assert (table["split"] == "train").sum() == 3
        tests[name] = table[table["split"] == "test"].reset_index(drop=True)
        assert json.loads((out / METADATA_NAME).read_text())["test_cts"] == {"A901": 2}
    assert list(tests["one"]["projection_id"]) == ["A901_p000", "A901_p001"]
    geometry = ["projection_id", "angle_deg", "tilt_deg", "shift_x_mm", "shift_y_mm", "shift_z_mm"]
    pd.testing.assert_frame_equal(tests["one"][geometry], tests["three"][geometry])
    for key in ("se", "de_soft", "de_bone"):  # noisy images (--realism): the noise is the same draw too
        for a, b in zip(tests["one"][key], tests["three"][key]):
            np.testing.assert_array_equal(nib.load(tmp_path / "drr_one" / a).get_fdata(),
                                          nib.load(tmp_path / "drr_three" / b).get_fdata())
    with pytest.raises(SystemExit):
        main(["--ct-dir", str(tmp_path / "one"), "--out", str(tmp_path / "x"), "--test-projections-per-ct", "2"])
    assert main(["--ct-dir", str(tmp_path / "one"), "--test-ct-dir", str(tmp_path / "held_out"), "--out",
                 str(tmp_path / "x"), "--test-projections-per-ct", "0"]) == 2  # one line, nothing written
    assert not (tmp_path / "x").exists()


def test_workers_render_the_same_images(tmp_path):
    """Views, noise and drawn physics are fixed before any CT is read: two processes write what one does."""
    from pipeline.xray.radiograph import RealismConfig
    from pipeline.xray.randomisation import PhysicsRanges

    _write_cts(tmp_path / "cts", ["T01", "T02", "T03"])
    _write_cts(tmp_path / "held_out", ["A901", "A902"])
    tables = {}
    for name, workers, config in (("w1", 1, _config(realism=RealismConfig())), ("w2", 2, _config(realism=RealismConfig())),
                                  ("drawn1", 1, _config(physics_ranges=PhysicsRanges())),
                                  ("drawn3", 3, _config(physics_ranges=PhysicsRanges()))):
        manifest = build_drr_dataset(tmp_path / "cts", tmp_path / name, config=config, progress=False, workers=workers,
                                     test_source=tmp_path / "held_out", test_projections_per_ct=3)
        tables[name] = pd.read_csv(manifest)
    one = tables["w1"]
    assert list(one["subject_id"]) == ["T01"] * 2 + ["T02"] * 2 + ["T03"] * 2 + ["A901"] * 3 + ["A902"] * 3
    pd.testing.assert_frame_equal(one, tables["w2"])
    for key in ("se", "de_soft", "de_bone", "de_soft_noiseless", "lung_path"):
        for path in one[key]:
            np.testing.assert_array_equal(nib.load(tmp_path / "w1" / path).get_fdata(),
                                          nib.load(tmp_path / "w2" / path).get_fdata())
    # drawn physics: each image's system is its row's draw, whatever process rendered it
    drawn = tables["drawn3"]
    assert drawn["mas_high"].nunique() == len(drawn)
    pd.testing.assert_frame_equal(tables["drawn1"], drawn)
    for path in drawn["se"]:
        np.testing.assert_array_equal(nib.load(tmp_path / "drawn1" / path).get_fdata(),
                                      nib.load(tmp_path / "drawn3" / path).get_fdata())
