"""The quality benchmark's own measures (stripe ratio, training-crop L1, volume MAE), the tables it reads and
its phantom sets (scripts/quality_data.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts.benchmark_quality import region_mae, stripe_ratio


def test_stripe_ratio_sees_slice_to_slice_jumps_and_not_smooth_errors():
    rng = np.random.default_rng(0)
    shape = (20, 22, 18)
    ct = rng.normal(0, 300, shape).astype(np.float32)
    mask = np.ones(shape, np.uint8)
    per_slice = rng.normal(0, 40, shape[2])[None, None, :]  # one offset per axial slice: stripes
    assert stripe_ratio(ct + per_slice, ct, mask) > 10
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    smooth = 30 * np.sin(grid[0] / 3) + 30 * np.sin(grid[1] / 3) + 30 * np.sin(grid[2] / 3)  # no preferred axis
    assert 0.8 < stripe_ratio(ct + smooth, ct, mask) < 1.25
    # only voxel pairs inside the body count: a jump outside it is ignored
    body = np.zeros(shape, np.uint8)
    body[:, :, :9] = 1
    jump = np.zeros(shape)
    jump[:, :, 9:] = 500
    assert stripe_ratio(ct + smooth + jump, ct, body) < 1.25


def test_region_mae_reads_the_long_table(tmp_path):
    rows = [("pix2pix", "a", "air", "mae_hu", 100.0), ("pix2pix", "b", "air", "mae_hu", 200.0),
            ("pix2pix", "a", "bone", "mae_hu", 50.0), ("pix2pix", "a", "body", "mae_hu", 70.0),
            ("tissue_lookup", "a", "air", "mae_hu", 900.0), ("pix2pix", "a", "air", "me_hu", -5.0)]
    path = tmp_path / "results.csv"
    pd.DataFrame(rows, columns=["method", "subject_id", "region", "metric", "value"]).to_csv(path, index=False)
    assert region_mae(path) == {"air": 150.0, "bone": 50.0}


def test_training_crop_l1_is_the_last_tenth_of_iterations_in_hu(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from scripts.benchmark_quality import training_crop_l1_hu

    writer = SummaryWriter(log_dir=str(tmp_path))
    for step in range(100):
        writer.add_scalar("G_l1", 0.05 if step < 90 else 0.01, step)  # the network's [-1, 1] units
        writer.add_scalar("G_total", 1.0, step)
    writer.close()
    l1_hu, curve = training_crop_l1_hu(tmp_path)
    assert l1_hu == pytest.approx(0.01 * (3000 + 1024) / 2, rel=1e-5)  # 20.12 HU: half the window per unit
    assert len(curve) == 100 and curve["l1_hu"].iloc[0] == pytest.approx(0.05 * 2012, rel=1e-5)


def test_volume_mae_averages_the_masked_mae_of_the_test_split(tmp_path):
    from pipeline.data.manifest import write_manifest
    from pipeline.io.volumes import write_nifti
    from scripts.benchmark_quality import volume_mae

    rows = []
    for subject, offset in (("1BD001", 10.0), ("1BD002", 30.0)):
        ct = np.zeros((6, 5, 4), np.int16)
        mask = np.zeros_like(ct, dtype=np.uint8)
        mask[1:5, 1:4, 1:3] = 1
        sct = (ct + offset).astype(np.int16)
        sct[mask == 0] = 999  # outside the body: not counted
        folder = tmp_path / subject
        for name, array in (("ct", ct), ("mask", mask)):
            write_nifti(array, np.eye(4), folder / f"{name}.nii.gz")
        write_nifti(sct, np.eye(4), tmp_path / "pred" / subject / "sct.nii.gz")
        rows.append({"subject_id": subject, "mr": str(folder / "ct.nii.gz"), "ct": str(folder / "ct.nii.gz"),
                     "mask": str(folder / "mask.nii.gz"), "split": "test"})
    manifest = write_manifest(pd.DataFrame(rows), tmp_path / "m.csv")
    assert volume_mae(tmp_path / "pred", manifest) == pytest.approx(20.0)


def test_detailed_sets_have_a_manifest_per_family_over_the_same_subjects(tmp_path):
    from pipeline.data.manifest import read_manifest
    from scripts.quality_data import existing_manifests, make_data, training_fit_manifest

    manifests = make_data(tmp_path / "ph", phantoms="detailed", size=(46, 54, 52), n_train=1, n_val=1, n_test=1,
                          train_seed=0, test_seed=1000, families=("spgr", "t2_tse"))
    assert list(manifests) == ["spgr", "t2_tse"]
    spgr, t2 = read_manifest(manifests["spgr"]), read_manifest(manifests["t2_tse"])
    assert list(spgr["subject_id"]) == list(t2["subject_id"]) == ["1BD001", "1BD002", "1BD901"]
    assert list(spgr["split"]) == list(t2["split"]) == ["train", "val", "test"]
    assert list(spgr["ct"]) == list(t2["ct"])
    assert all(Path(p).name == "mr.nii.gz" for p in spgr["mr"])
    assert all(Path(p).name == "mr_t2_tse.nii.gz" and Path(p).is_file() for p in t2["mr"])
    assert existing_manifests(tmp_path / "ph") == manifests
    fit = read_manifest(training_fit_manifest(manifests["spgr"], tmp_path / "fit.csv", n=1))
    assert list(fit["subject_id"]) == ["1BD001"] and list(fit["split"]) == ["test"]
    # an intensity lookup fitted on T1w SPGR does not carry to T2w (inverted contrast)
    from scripts.benchmark_quality import transferred_lookup_mae

    same = transferred_lookup_mae(manifests["spgr"], manifests["spgr"])
    assert transferred_lookup_mae(manifests["spgr"], manifests["t2_tse"]) > 1.2 * same


def test_registration_floor_of_detailed_sets_and_a_clear_refusal_when_the_ct_was_not_made_so(tmp_path):
    import nibabel as nib

    from scripts.benchmark_quality import transferred_lookup_mae
    from scripts.quality_data import make_data, registration_floors

    manifests = make_data(tmp_path / "ph", phantoms="detailed", size=(46, 54, 52), n_train=1, n_val=0, n_test=1,
                          train_seed=0, test_seed=1000, families=("spgr", "mprage"))
    floors = registration_floors(manifests)
    assert set(floors) == {"spgr", "mprage"}
    lookup = transferred_lookup_mae(manifests["spgr"], manifests["spgr"])
    for floor in floors.values():
        assert set(floor) == {f"{p}{k}" for p in ("", "visible_") for k in ("mae_hu", "air", "soft_tissue", "bone")}
        assert 0 < floor["mae_hu"] < lookup  # a perfect reading of the anatomy beats an intensity lookup
        assert floor["soft_tissue"] < floor["bone"]  # bone edges pay most for a shift
        assert abs(floor["air"] - floor["visible_air"]) < 5.0  # air has neither a field nor an offset (its edges do)
        assert floor["visible_bone"] != floor["bone"]
    # a CT that the generator did not make (edited, or another version) gets no floor, and says why
    ct_path = tmp_path / "ph" / "test" / "1BD901" / "ct.nii.gz"
    image = nib.load(ct_path)
    edited = np.asarray(image.dataobj).copy()
    edited[10, 10, 10] += 1
    nib.save(nib.Nifti1Image(edited, image.affine, image.header), ct_path)
    with pytest.warns(UserWarning, match="1BD901.*does not reproduce"):
        assert registration_floors(manifests) == {}
    with pytest.warns(UserWarning, match="not the detailed phantoms"):
        assert registration_floors({"simple": manifests["spgr"]}) == {}
