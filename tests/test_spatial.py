"""Geometry round trips: oblique, anisotropic, flipped volumes through load_oriented and Invertd."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from scipy.spatial.transform import Rotation

from pipeline.io.geometry import read_geometry
from transforms.spatial import affine_matches_file, invert_to_input_grid, load_oriented

SHAPE = (23, 31, 17)
SPACING = np.array([0.9, 1.3, 2.7])
LPS = np.diag([-1.0, -1.0, 1.0])


def _oblique_affine() -> np.ndarray:
    # 15 deg about x, 5 deg about z, with the first two axes flipped (LPS-like voxel order)
    rotation = Rotation.from_euler("xz", [15.0, 5.0], degrees=True).as_matrix() @ LPS
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(SPACING)
    affine[:3, 3] = [12.3, -40.1, 7.7]
    return affine


def _smooth_pattern(affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")).reshape(3, -1)
    x, y, z = affine[:3, :3] @ ijk + affine[:3, 3:]
    return (100 + 50 * np.sin(x / 6) + 40 * np.cos(y / 7) + 30 * np.sin(z / 9)).reshape(SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same volume as NIfTI (RAS affine) and as .mha/.nrrd written by SimpleITK (LPS header)."""
    folder = tmp_path_factory.mktemp("geometry")
    affine = _oblique_affine()
    data = _smooth_pattern(affine)
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    nib.save(nifti, folder / "mr.nii.gz")
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))  # SimpleITK arrays are (z, y, x)
    image.SetSpacing(SPACING.tolist())
    image.SetDirection((LPS @ affine[:3, :3] @ np.diag(1 / SPACING)).ravel().tolist())
    image.SetOrigin((LPS @ affine[:3, 3]).tolist())
    paths = {"nii.gz": folder / "mr.nii.gz"}
    for suffix in ("mha", "nrrd"):
        paths[suffix] = folder / f"mr.{suffix}"
        sitk.WriteImage(image, str(paths[suffix]))
    return {"affine": affine, "data": data, "paths": paths}


def _round_trip(path, target_spacing):
    preprocessing = Compose(load_oriented(["mr"], target_spacing=target_spacing))
    data = preprocessing({"mr": str(path)})
    data["pred"] = data["mr"].clone()  # a "prediction" on the network grid
    restored = invert_to_input_grid(pred_key="pred", orig_key="mr", preprocessing=preprocessing)(data)
    return data["mr"], restored["pred"]


@pytest.mark.parametrize("suffix", ["nii.gz", "mha", "nrrd"])
def test_file_affine_is_the_same_ras_affine_for_every_format(files, suffix):
    assert np.allclose(read_geometry(files["paths"][suffix]).affine, files["affine"], atol=1e-4)


@pytest.mark.parametrize("suffix", ["nii.gz", "mha", "nrrd"])
def test_resampled_round_trip_restores_shape_and_affine(files, suffix):
    network, restored = _round_trip(files["paths"][suffix], (1.5, 1.5, 1.5))
    # the network grid really is different: RAS orientation and 1.5 mm voxels
    assert np.allclose(np.linalg.norm(network.affine[:3, :3].numpy(), axis=0), 1.5, atol=1e-4)
    assert tuple(network.shape[1:]) != SHAPE
    assert tuple(restored.shape) == (1, *SHAPE)
    assert np.allclose(restored.affine.numpy(), files["affine"], atol=1e-4)
    assert affine_matches_file(restored, files["paths"]["nii.gz"])
    values = restored[0].numpy()
    assert np.corrcoef(values.ravel(), files["data"].ravel())[0, 1] > 0.995  # interpolation loss only


@pytest.mark.parametrize("suffix", ["nii.gz", "mha", "nrrd"])
def test_orientation_only_round_trip_is_exact(files, suffix):
    network, restored = _round_trip(files["paths"][suffix], None)
    assert nib.orientations.aff2axcodes(network.affine.numpy()) == ("R", "A", "S")
    assert not np.allclose(network.affine.numpy(), files["affine"])  # axes were flipped
    assert tuple(restored.shape) == (1, *SHAPE)
    assert np.allclose(restored.affine.numpy(), files["affine"], atol=1e-4)
    np.testing.assert_array_equal(restored[0].numpy(), files["data"])


def test_loaded_nifti_mha_nrrd_agree(files):
    loaded = {s: Compose(load_oriented(["mr"]))({"mr": str(p)})["mr"] for s, p in files["paths"].items()}
    for suffix in ("mha", "nrrd"):
        assert np.allclose(loaded[suffix].affine.numpy(), loaded["nii.gz"].affine.numpy(), atol=1e-4)
        np.testing.assert_array_equal(loaded[suffix].numpy(), loaded["nii.gz"].numpy())


def test_labels_use_nearest_and_missing_keys_are_skipped(files, tmp_path):
    labels = (files["data"] > 110).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, files["affine"]), tmp_path / "mask.nii.gz")
    chain = Compose(load_oriented(["mr", "mask"], target_spacing=(1.5, 1.5, 1.5)))
    data = chain({"mr": str(files["paths"]["nii.gz"]), "mask": str(tmp_path / "mask.nii.gz")})
    assert set(np.unique(data["mask"].numpy())) <= {0.0, 1.0}
    assert data["mask"].shape == data["mr"].shape
    only_mr = chain({"mr": str(files["paths"]["nii.gz"])})
    assert "mask" not in only_mr and only_mr["mr"].shape == data["mr"].shape


def test_unknown_key_and_bad_spacing_raise():
    with pytest.raises(ValueError, match="neither image_keys"):
        load_oriented(["mr", "pet"])
    with pytest.raises(ValueError, match="target_spacing"):
        load_oriented(["mr"], target_spacing=(1.0, 0.0, 1.0))


def test_affine_matches_file_detects_a_shift(files):
    shifted = MetaTensor(torch.zeros(1, *SHAPE), affine=torch.as_tensor(files["affine"]))
    assert affine_matches_file(shifted, files["paths"]["mha"])
    moved = files["affine"].copy()
    moved[0, 3] += 0.01
    assert not affine_matches_file(moved, files["paths"]["mha"])


def test_building_a_loader_leaves_no_nvimagecodec_notice_in_the_log(caplog) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_oriented(["mr"])
    notices = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [n for n in notices if "nvImageCodec" in n]
