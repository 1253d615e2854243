"""Full-volume sCT inference: window reassembly, geometry of the written sCT, input errors, inputs,
weights, TorchScript export (eager vs traced, and MONAI's ``ckpt_export`` on the bundle config)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from networks import Pix2PixUNet
from pipeline.data.manifest import find_subjects, write_manifest
from pipeline.data.phantoms.head import write_phantom_dataset
from pipeline.engine.model_card import write_model_card
from pipeline.errors import InputError
from pipeline.io.volumes import read_volume
from pipeline.sct.batch import resolve_inputs, subject_id_from_path
from pipeline.sct.inference import SCTPredictor, predict_unit_volume
from pipeline.sct.model_card import MODEL_CARD_NAME, training_card
from transforms.intensity import HU_AIR, HU_MAX, HU_MIN, normalize_mr, unit_range_to_hu
from transforms.mask import body_mask_from_mr

REPO = Path(__file__).resolve().parents[1]
BUNDLE_CONFIGS = REPO / "bundles" / "mri_to_ct" / "configs"

SHAPE = (27, 31, 13)  # odd, not a multiple of any window
SPACING = np.array([0.9, 1.2, 2.5])
PATCH = 16


class CentreSlice(torch.nn.Module):
    """"Identity" generator: returns the centre channel (the centre slice of a 2.5D slab; x itself in 2D/3D)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        return x[:, k // 2 : k // 2 + 1]


def tiny_generator(mode: str = "2.5d", *, slab_size: int = 5) -> Pix2PixUNet:
    torch.manual_seed(0)
    return Pix2PixUNet(spatial_dims=3 if mode == "3d" else 2, in_channels=slab_size if mode == "2.5d" else 1,
                       num_downs=4, base_channels=8).eval()


def predictor(mode: str = "2.5d", **kwargs) -> SCTPredictor:
    slab_size = {"2.5d": 5, "2d": 1, "3d": 1}[mode]
    return SCTPredictor(CentreSlice(), mode=mode, patch_size=PATCH, slab_size=slab_size, device="cpu", progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize(("mode", "slab_size"), [("2.5d", 5), ("2.5d", 3), ("2d", 1), ("3d", 1)])
@pytest.mark.parametrize("shape", [(37, 29, 23), (10, 7, 5)], ids=["larger", "smaller-than-window"])
def test_windows_reassemble_the_volume(mode, slab_size, shape):
    volume = torch.rand((1, *shape), generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = predict_unit_volume(CentreSlice(), volume, mode=mode, patch_size=PATCH, slab_size=slab_size, sw_batch_size=4,
                              slices_per_batch=7)
    assert out.shape == volume.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, volume, atol=1e-5, rtol=0)


def test_2p5d_feeds_neighbouring_slices_in_order():
    """Slab channel j is slice z + j - k//2 (border slices replicated): a generator returning channel 0
    gives the volume shifted by two slices, also across the ends of the slice batches."""

    class FirstChannel(CentreSlice):
        def forward(self, x):
            return x[:, :1]

    volume = torch.rand(1, 20, 18, 9, generator=torch.Generator().manual_seed(2))
    out = predict_unit_volume(FirstChannel(), volume, mode="2.5d", patch_size=PATCH, slab_size=5, slices_per_batch=4)
    expected = volume[..., np.clip(np.arange(9) - 2, 0, 8)]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


class LastChannel(CentreSlice):
    def forward(self, x):
        return x[:, -1:]


@pytest.mark.parametrize(("mode", "slab_size"), [("2.5d", 5), ("2d", 1), ("3d", 1)])
def test_channels_after_the_mr_reach_the_network_beside_it_at_the_centre_slice(mode, slab_size):
    """Position channels (1 + 3 channels in): a generator returning the last input channel gives back the
    volume's last channel, whatever the slab and the slice batches."""
    volume = torch.rand(4, 20, 18, 9, generator=torch.Generator().manual_seed(3)) * 2 - 1
    out = predict_unit_volume(LastChannel(), volume, mode=mode, patch_size=PATCH, slab_size=slab_size, slices_per_batch=4)
    assert out.shape == (1, 20, 18, 9)
    torch.testing.assert_close(out, volume[3:], atol=1e-5, rtol=0)


def test_network_keeps_the_callers_threads_and_they_are_restored():
    """The window bookkeeping runs single-threaded on CPU; the network runs with the caller's thread count."""
    seen = []

    class Recorder(CentreSlice):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            if len(seen) > 2:
                raise KeyboardInterrupt
            return super().forward(x)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = predict_unit_volume(Recorder(), torch.zeros(1, 8, 8, 2), mode="2.5d", patch_size=PATCH)
        assert out.shape == (1, 8, 8, 2) and seen == [2] and torch.get_num_threads() == 2
        with pytest.raises(KeyboardInterrupt):
            predict_unit_volume(Recorder(), torch.zeros(1, 8, 8, 40), mode="2.5d", patch_size=PATCH, slices_per_batch=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_window_input_checks():
    with pytest.raises(ValueError, match="mode"):
        predict_unit_volume(CentreSlice(), torch.zeros(1, 8, 8, 8), mode="4d", patch_size=PATCH)
    with pytest.raises(ValueError, match=r"\(1, X, Y, Z\)"):
        predict_unit_volume(CentreSlice(), torch.zeros(8, 8, 8), mode="3d", patch_size=PATCH)


# ---------------------------------------------------------------------------------------------------- files


def oblique_affine(*, permuted: bool = False) -> np.ndarray:
    """Rotated 12 deg about x and 7 deg about z, LPS-like flips; optionally the voxel axes permuted too
    (stored as P, S, L), so orientation to RAS must transpose the volume as well as flip it."""
    axes = np.diag([-1.0, -1.0, 1.0])
    if permuted:
        axes = axes[:, [1, 2, 0]]
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xz", [12.0, 7.0], degrees=True).as_matrix() @ axes @ np.diag(SPACING)
    affine[:3, 3] = [14.2, -31.7, 6.9]
    return affine


def head_like(shape=SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth bright ellipsoid on a dark noisy background: MR (float32, a.u.) and its mask (uint8)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    centre = (np.asarray(shape) - 1) / 2
    radius = np.asarray(shape) * 0.38
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) < 1
    texture = 400 + 250 * np.sin(grid[0] / 4) * np.cos(grid[1] / 5) + 100 * np.cos(grid[2] / 3)
    mr = np.where(inside, ndimage.gaussian_filter(texture, 1.0), 0) + np.abs(rng.normal(0, 4, shape))
    return mr.astype(np.float32), inside.astype(np.uint8)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)  # different codes: both must be copied as they are
    image.header.set_xyzt_units("mm")
    nib.save(image, path)
    return path


def save_mha(array: np.ndarray, affine_ras: np.ndarray, path: Path) -> Path:
    """MetaImage written by SimpleITK (LPS header) for the same grid as ``affine_ras``."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine_ras[:3, :4]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    sitk.WriteImage(image, str(path))
    return path


def expected_hu(mr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What an identity generator must give inside the body: the normalised MR read as HU."""
    return np.where(mask > 0, np.rint(unit_range_to_hu(normalize_mr(mr, mask))), HU_AIR)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subject")
    mr, mask = head_like()
    files = {"mr": mr, "mask": mask, "folder": folder}
    for name, permuted in (("lps", False), ("permuted", True)):
        affine = oblique_affine(permuted=permuted)
        files[name] = {
            "affine": affine,
            "mr": save_nifti(mr, affine, folder / f"mr_{name}.nii.gz"),
            "mask": save_nifti(mask, affine, folder / f"mask_{name}.nii.gz"),
        }
    files["lps"]["mr_mha"] = save_mha(mr, files["lps"]["affine"], folder / "mr_lps.mha")
    files["lps"]["mask_mha"] = save_mha(mask, files["lps"]["affine"], folder / "mask_lps.mha")
    return files


def assert_same_header_grid(out_path: Path, reference_path: Path) -> None:
    out, ref = nib.load(out_path), nib.load(reference_path)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out.affine, ref.affine)
    np.testing.assert_array_equal(out.get_qform(), ref.get_qform())
    np.testing.assert_array_equal(out.get_sform(), ref.get_sform())
    assert int(out.header["qform_code"]) == int(ref.header["qform_code"]) == 1
    assert int(out.header["sform_code"]) == int(ref.header["sform_code"]) == 2
    assert out.get_data_dtype() == np.int16


@pytest.mark.parametrize("mode", ["2.5d", "3d"])
@pytest.mark.parametrize("grid", ["lps", "permuted"])
def test_sct_on_the_mr_grid_with_identity_generator(subject, tmp_path, mode, grid):
    files = subject[grid]
    out = predictor(mode).predict_file(files["mr"], tmp_path / "sct.nii.gz", mask_path=files["mask"])
    assert out == tmp_path / "sct.nii.gz"
    assert_same_header_grid(out, files["mr"])
    sct = np.asarray(nib.load(out).dataobj)
    assert np.all(sct[subject["mask"] == 0] == HU_AIR)
    np.testing.assert_allclose(sct, expected_hu(subject["mr"], subject["mask"]), atol=1, rtol=0)
    assert len(np.unique(sct[subject["mask"] > 0])) > 100  # a real image, not a constant


@pytest.mark.parametrize("ras_axis", [0, 2], ids=["left-right", "inferior-superior"])
def test_position_channels_are_each_voxels_place_in_the_body_box_on_an_oblique_permuted_grid(subject, tmp_path, ras_axis):
    """A generator that returns one position channel writes, on the MR file's grid, that voxel's position in
    the body box along that RAS axis: the channels follow every plane permutation and flip of the ensemble.
    The expectation is computed from the file's affine with nibabel's orientation code and the mask alone."""
    files = subject["permuted"]

    class PositionChannel(CentreSlice):
        def forward(self, x):
            first = x.shape[1] - 3 + ras_axis
            return x[:, first : first + 1]

    sct_predictor = SCTPredictor(PositionChannel(), mode="2.5d", patch_size=PATCH, slab_size=5, device="cpu",
                                 progress=False, planes="all", tta=True, position_channels=True)
    sct = np.asarray(nib.load(sct_predictor.predict_file(files["mr"], tmp_path / "sct.nii.gz",
                                                         mask_path=files["mask"])).dataobj)
    orientation = nib.orientations.io_orientation(files["affine"])  # per file axis: (RAS axis, direction)
    file_axis = int(np.flatnonzero(orientation[:, 0] == ras_axis)[0])
    mask = subject["mask"]
    count = mask.shape[file_axis]
    ras_index = np.arange(count)[::-1] if orientation[file_axis, 1] < 0 else np.arange(count)
    inside = ras_index[mask.any(axis=tuple(a for a in range(3) if a != file_axis))]
    low, high = inside.min(), inside.max() + 1
    coordinate = (ras_index + 0.5 - (low + high) / 2) / ((high - low) / 2)
    coordinate = np.abs(coordinate) if ras_axis == 0 else coordinate
    view = [1, 1, 1]
    view[file_axis] = count
    expected = np.where(mask > 0, np.rint(unit_range_to_hu(np.broadcast_to(coordinate.reshape(view), mask.shape))), HU_AIR)
    np.testing.assert_allclose(sct, expected, atol=1, rtol=0)
    assert len(np.unique(sct[mask > 0])) > 3  # not a constant


def test_sct_with_resampling_is_back_on_the_mr_grid(subject, tmp_path):
    files = subject["lps"]
    sct_predictor = predictor("2.5d", target_spacing=(1.6, 1.6, 1.6))
    network_grid = sct_predictor.preprocess(sct_predictor.load(files["mr"], mask_path=files["mask"]))["mr"]
    assert network_grid.shape[1:] != SHAPE  # resampling did happen
    out = sct_predictor.predict_file(files["mr"], tmp_path / "sct.nii.gz", mask_path=files["mask"])
    assert_same_header_grid(out, files["mr"])
    sct = np.asarray(nib.load(out).dataobj).astype(float)
    assert np.all(sct[subject["mask"] == 0] == HU_AIR)
    # Voxels one away from the body surface: interpolation across the MR's bright/dark edge aside,
    # the round trip through the 1.6 mm grid must reproduce the image.
    interior = ndimage.binary_erosion(subject["mask"] > 0)
    expected = expected_hu(subject["mr"], subject["mask"])
    assert np.corrcoef(sct[interior], expected[interior])[0, 1] > 0.99


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz"])
def test_mha_input(subject, tmp_path, suffix):
    files = subject["lps"]
    out = predictor("2.5d").predict_file(files["mr_mha"], tmp_path / f"sct{suffix}", mask_path=files["mask_mha"])
    values, affine = read_volume(out)
    np.testing.assert_allclose(affine, files["affine"], atol=1e-5)
    np.testing.assert_allclose(values, expected_hu(subject["mr"], subject["mask"]), atol=1, rtol=0)
    if suffix == ".mha":
        written, reference = sitk.ReadImage(str(out)), sitk.ReadImage(str(files["mr_mha"]))
        assert written.GetPixelID() == sitk.sitkInt16
        assert written.GetSize() == reference.GetSize()
        for get in ("GetOrigin", "GetSpacing", "GetDirection"):
            np.testing.assert_allclose(getattr(written, get)(), getattr(reference, get)(), atol=1e-9)
    else:
        assert nib.load(out).get_data_dtype() == np.int16


def test_without_mask_the_body_mask_comes_from_the_mr(subject, tmp_path):
    files = subject["lps"]
    out = predictor("2.5d").predict_file(files["mr"], tmp_path / "sct.nii.gz")
    sct = np.asarray(nib.load(out).dataobj)
    # Orientation to RAS only flips this grid, and the mask is flip-equivariant: same mask as in file order.
    body = body_mask_from_mr(subject["mr"])
    assert 0.1 < body.mean() < 0.9
    assert np.all(sct[~body] == HU_AIR)
    np.testing.assert_allclose(sct, expected_hu(subject["mr"], body.astype(np.uint8)), atol=1, rtol=0)


def test_refuses_to_overwrite(subject, tmp_path):
    files = subject["lps"]
    out = tmp_path / "sct.nii.gz"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="sct.nii.gz"):
        predictor("2.5d").predict_file(files["mr"], out, mask_path=files["mask"])
    assert out.read_bytes() == b"precious"
    predictor("2.5d").predict_file(files["mr"], out, mask_path=files["mask"], overwrite=True)
    assert nib.load(out).shape == SHAPE
    assert not [p for p in tmp_path.iterdir() if p.name != "sct.nii.gz"]  # no temporary left behind


# ---------------------------------------------------------------------------------------------------- errors


def test_input_errors_name_subject_and_file(subject, tmp_path):
    files, affine, mr, mask = subject["lps"], subject["lps"]["affine"], subject["mr"], subject["mask"]
    sct_predictor = predictor("2.5d")

    def error(mr_path, mask_path=None) -> str:
        with pytest.raises(InputError) as info:
            sct_predictor.predict_file(mr_path, tmp_path / "sct.nii.gz", mask_path=mask_path, subject_id="1BA042")
        assert not (tmp_path / "sct.nii.gz").exists()
        message = str(info.value)
        assert message.startswith("1BA042: ")
        return message

    nib.save(nib.Nifti1Image(np.stack([mr, mr], axis=-1), affine), tmp_path / "mr4d.nii.gz")
    assert "mr4d.nii.gz is 4-D" in error(tmp_path / "mr4d.nii.gz")

    with_nan = mr.copy()
    with_nan[13, 15, 6] = np.nan  # inside the body
    save_nifti(with_nan, affine, tmp_path / "mr_nan.nii.gz")
    for mask_path in (None, files["mask"]):  # with or without a mask, before any statistics on it
        message = error(tmp_path / "mr_nan.nii.gz", mask_path)
        assert "mr_nan.nii.gz" in message and "1 NaN" in message

    save_nifti(np.zeros_like(mr), affine, tmp_path / "mr_blank.nii.gz")
    assert "constant" in error(tmp_path / "mr_blank.nii.gz")
    save_nifti(-mr, affine, tmp_path / "mr_negative.nii.gz")  # caught by the body mask, inside MONAI's chain
    message = error(tmp_path / "mr_negative.nii.gz")
    assert "mr_negative.nii.gz" in message and "no positive signal" in message

    assert "missing" in error(tmp_path / "absent.nii.gz")
    assert "absent_mask.nii.gz missing" in error(files["mr"], tmp_path / "absent_mask.nii.gz")

    shifted = affine.copy()
    shifted[:3, 3] += [0.0, 2.0, 0.0]
    save_nifti(mask, shifted, tmp_path / "mask_shifted.nii.gz")
    message = error(files["mr"], tmp_path / "mask_shifted.nii.gz")
    assert "not on the same grid" in message and "mask_shifted.nii.gz" in message

    save_nifti(np.zeros_like(mask), affine, tmp_path / "mask_empty.nii.gz")
    assert "empty" in error(files["mr"], tmp_path / "mask_empty.nii.gz")


# ---------------------------------------------------------------------------------------------------- inputs


@pytest.fixture()
def synthrad_folder(subject, tmp_path):
    root = tmp_path / "brain"
    for subject_id, roles in (("1BA001", ("mr", "mask")), ("1BA002", ("mr",)), ("1BA003", ("ct",))):
        (root / subject_id).mkdir(parents=True)
        for role in roles:
            (root / subject_id / f"{role}.nii.gz").symlink_to(subject["lps"]["mask" if role == "mask" else "mr"])
    (root / "overview").mkdir()  # SynthRAD's spreadsheet folder: not a subject
    return root


def test_resolve_inputs_file_and_folders(subject, synthrad_folder, tmp_path):
    assert resolve_inputs(subject["lps"]["mr"]) == [{"subject_id": "mr_lps", "mr": str(subject["lps"]["mr"])}]
    assert subject_id_from_path(synthrad_folder / "1BA001" / "mr.nii.gz") == "1BA001"

    records = resolve_inputs(synthrad_folder)  # 1BA003 has no MR: skipped
    assert [r["subject_id"] for r in records] == ["1BA001", "1BA002"]
    assert Path(records[0]["mr"]) == (synthrad_folder / "1BA001" / "mr.nii.gz").absolute()
    assert Path(records[0]["mask"]) == (synthrad_folder / "1BA001" / "mask.nii.gz").absolute()
    assert "mask" not in records[1]

    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("2BB007.nii.gz", "2BB008.mha"):
        (flat / name).symlink_to(subject["lps"]["mr"])
    (flat / "notes.txt").write_text("not a volume")
    assert [r["subject_id"] for r in resolve_inputs(flat)] == ["2BB007", "2BB008"]

    with pytest.raises(InputError, match="does not exist"):
        resolve_inputs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no (subjects|MR volumes)"):
        resolve_inputs(tmp_path / "empty")


def test_resolve_inputs_manifest(synthrad_folder, tmp_path):
    subjects = find_subjects(synthrad_folder)
    subjects = subjects[subjects["mr"].notna()].assign(split=["train", "test"])
    manifest = write_manifest(subjects, tmp_path / "manifests" / "set.csv")
    every = resolve_inputs(manifest)
    assert [r["subject_id"] for r in every] == ["1BA001", "1BA002"]
    assert Path(every[0]["mask"]).resolve() == (synthrad_folder / "1BA001" / "mask.nii.gz").resolve()
    assert set(every[1]) == {"subject_id", "mr"}  # empty cells are not paths
    test = resolve_inputs(manifest, split="test")
    assert [r["subject_id"] for r in test] == ["1BA002"] and Path(test[0]["mr"]).is_file()


def test_predict_inputs_writes_one_sct_per_subject(synthrad_folder, tmp_path):
    written = predictor("2.5d").predict_inputs(synthrad_folder, output_dir=tmp_path / "out")
    assert written == [tmp_path / "out" / "1BA001" / "sct.nii.gz", tmp_path / "out" / "1BA002" / "sct.nii.gz"]
    assert all(nib.load(p).shape == SHAPE for p in written)
    before = written[0].stat().st_mtime_ns
    with pytest.raises(InputError, match="2 of 2 subject.*1BA001: .*exists"):
        predictor("2.5d").predict_inputs(synthrad_folder, output_dir=tmp_path / "out")
    assert written[0].stat().st_mtime_ns == before  # never overwritten silently


@pytest.mark.parametrize("read_ahead", [0, 2])  # one after the other (the CPU default), and pipelined (pipeline.sct.batch)
def test_a_bad_subject_does_not_cost_the_others_and_skip_existing_finishes_a_run(synthrad_folder, tmp_path, read_ahead):
    """1BA002's MR is all NaN: 1BA001 and 1BA004 (after it) are still written; the error lists 1BA002 only.
    Rerunning with skip_existing after the MR is fixed writes just the missing subject."""
    good = synthrad_folder / "1BA001" / "mr.nii.gz"
    (synthrad_folder / "1BA004").mkdir()
    (synthrad_folder / "1BA004" / "mr.nii.gz").symlink_to(good.resolve())
    bad = synthrad_folder / "1BA002" / "mr.nii.gz"
    source = nib.load(bad)
    bad.unlink()
    nib.save(nib.Nifti1Image(np.full(source.shape, np.nan, np.float32), source.affine, source.header), bad)
    out = tmp_path / "out"
    with pytest.raises(InputError) as error:
        predictor("2.5d").predict_inputs(synthrad_folder, output_dir=out, read_ahead=read_ahead)
    assert str(error.value).startswith("1 of 3 subject(s) failed") and "1BA002: mr" in str(error.value)
    assert "1BA001" not in str(error.value) and "1BA004" not in str(error.value)
    assert sorted(p.parent.name for p in out.glob("*/sct.nii.gz")) == ["1BA001", "1BA004"]

    bad.unlink()
    bad.symlink_to(good.resolve())
    stamp = (out / "1BA001" / "sct.nii.gz").stat().st_mtime_ns
    written = predictor("2.5d").predict_inputs(synthrad_folder, output_dir=out, skip_existing=True, read_ahead=read_ahead)
    assert [p.parent.name for p in written] == ["1BA001", "1BA002", "1BA004"]
    assert (out / "1BA001" / "sct.nii.gz").stat().st_mtime_ns == stamp  # skipped, not rewritten
    assert nib.load(out / "1BA002" / "sct.nii.gz").shape == SHAPE


@pytest.mark.parametrize("mode", ["2.5d", "3d"])
def test_phantom_with_a_real_generator(tmp_path, mode):
    """The real (tiny, untrained) Pix2Pix U-Net through the whole chain on a phantom subject: windows of
    the patch size divisible by 2**num_downs, output on the phantom's oblique LPS grid, HU in the window."""
    (folder,) = write_phantom_dataset(tmp_path / "data", n=1, size="tiny")
    sct_predictor = SCTPredictor(tiny_generator(mode, slab_size=5 if mode == "2.5d" else 1), mode=mode,
                                 patch_size=32, overlap=0.25, device="cpu", progress=False)
    (out,) = sct_predictor.predict_inputs(tmp_path / "data", output_dir=tmp_path / "pred")
    assert out == tmp_path / "pred" / folder.name / "sct.nii.gz"
    sct, mr, mask = (nib.load(p) for p in (out, folder / "mr.nii.gz", folder / "mask.nii.gz"))
    assert sct.shape == mr.shape and sct.get_data_dtype() == np.int16
    np.testing.assert_array_equal(sct.affine, mr.affine)
    values, inside = np.asarray(sct.dataobj), np.asarray(mask.dataobj) > 0
    assert np.all(values[~inside] == HU_AIR)
    assert values.min() >= HU_MIN and values.max() <= HU_MAX and values[inside].std() > 0


# ---------------------------------------------------------------------------------------------------- torchrun


def _phantom_manifest_with_a_bad_subject(root: Path, *, n: int, bad: int) -> tuple[Path, list[str], str]:
    """``n`` tiny phantoms, all in the test split, the ``bad``-th (sorted) with an all-NaN MR."""
    folders = sorted(write_phantom_dataset(root / "data", n=n, size="tiny"))
    mr = nib.load(folders[bad] / "mr.nii.gz")
    nib.save(nib.Nifti1Image(np.full(mr.shape, np.nan, np.float32), mr.affine, mr.header), folders[bad] / "mr.nii.gz")
    manifest = write_manifest(find_subjects(root / "data").assign(split="test"), root / "manifest.csv")
    good = [folder.name for i, folder in enumerate(folders) if i != bad]
    return manifest, good, folders[bad].name


def _run_inference_bundle(*args: str, launcher: list[str], configs: str) -> subprocess.CompletedProcess:
    command = [*launcher, "-m", "monai.bundle", "run", "--config_file", configs, *args]
    return subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # same threads in both runs: same sums


@pytest.mark.distributed
def test_torchrun_shards_subjects_over_ranks_and_rank_zero_reports_every_failure(tmp_path):
    """``multi_gpu_inference.json`` under torchrun (2 gloo processes) over 5 phantoms, the 4th bad, which falls
    to rank 1: each good sCT is written once, by the rank it was dealt to, bit-identical to single-process
    inference; the run exits non-zero and rank 0 prints the one-line listing (rank 1's failure) once."""
    manifest, good, bad = _phantom_manifest_with_a_bad_subject(tmp_path, n=5, bad=3)
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    torch.save(tiny_generator("2.5d").state_dict(), models / "model.pt")
    card = training_card(mode="2.5d", patch_size=32, slab_size=5, target_spacing=None, num_downs=4, base_channels=8,
                         attention=False)
    write_model_card(models / MODEL_CARD_NAME, card)
    common = ["--input", str(manifest), "--output_dir", str(tmp_path / "run")]

    single = _run_inference_bundle(*common, "--prediction_dir", str(tmp_path / "single"), launcher=[sys.executable],
                                   configs=str(BUNDLE_CONFIGS / "inference.json"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "--log-dir", str(tmp_path / "logs"), "--tee", "3"]
    configs = f"['{BUNDLE_CONFIGS / 'inference.json'}','{BUNDLE_CONFIGS / 'multi_gpu_inference.json'}']"
    multi = _run_inference_bundle(*common, "--prediction_dir", str(tmp_path / "multi"), launcher=torchrun,
                                  configs=configs)

    listing = single.stderr.strip().splitlines()[-1]
    assert single.returncode != 0 and listing.startswith("error: 1 of 5 subject(s) failed") and f"{bad}: mr" in listing
    assert multi.returncode != 0 and multi.stderr.count(listing) == 1, multi.stderr[-3000:]

    logs = {rank: (tmp_path / "logs").glob(f"*/attempt_0/{rank}/std*.log") for rank in (0, 1)}
    logs = {rank: "".join(path.read_text() for path in paths) for rank, paths in logs.items()}
    for i, subject_id in enumerate([*good[:3], bad, *good[3:]]):  # dealt in order: rank i % 2
        line = f"ERROR - {subject_id}: " if subject_id == bad else f"INFO - {subject_id}: wrote"
        assert line in logs[i % 2] and line not in logs[1 - i % 2], (subject_id, line)
    assert listing in logs[0] and listing not in logs[1]

    for subject_id in good:
        assert (multi.stdout + multi.stderr).count(f"{subject_id}: wrote") == 1
        expected, written = (nib.load(tmp_path / run / subject_id / "sct.nii.gz") for run in ("single", "multi"))
        np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(expected.dataobj))
        assert written.header.binaryblock == expected.header.binaryblock
    assert sorted(p.parent.name for p in (tmp_path / "multi").glob("*/sct.nii.gz")) == good


# ---------------------------------------------------------------------------------------------------- weights


def test_load_weights_state_dict_and_training_checkpoint(tmp_path, monkeypatch):
    trained = tiny_generator()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.01)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    optimizer = torch.optim.Adam(trained.parameters())
    torch.save({"generator": trained.state_dict(), "discriminator": {}, "g_optimizer": optimizer.state_dict(),
                "trainer": {"epoch": 3, "iteration": 30}}, tmp_path / "latest.pt")

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    for name in ("model.pt", "latest.pt"):
        sct_predictor = SCTPredictor(tiny_generator(), mode="2.5d", patch_size=16, device="cpu", progress=False)
        assert sct_predictor.load_weights(tmp_path / name) is sct_predictor
        for key, value in trained.state_dict().items():
            torch.testing.assert_close(sct_predictor.generator.state_dict()[key], value)
    assert [call.get("weights_only") for call in calls] == [True, True]

    torch.save({"generator": {"nonsense": torch.zeros(1)}}, tmp_path / "wrong.pt")
    with pytest.raises(RuntimeError, match="nonsense"):
        SCTPredictor(tiny_generator(), mode="2.5d", patch_size=16, device="cpu").load_weights(tmp_path / "wrong.pt")


# ---------------------------------------------------------------------------------------------------- TorchScript


def test_traced_generator_matches_eager():
    generator = tiny_generator("2.5d")
    x = torch.rand(2, 5, 32, 32) * 2 - 1
    traced = torch.jit.trace(generator, x)
    volume = torch.rand(1, 40, 24, 7) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(traced(x), generator(x))
        torch.testing.assert_close(traced(torch.ones(3, 5, 48, 16)), generator(torch.ones(3, 5, 48, 16)))
    torch.testing.assert_close(
        predict_unit_volume(traced, volume, mode="2.5d", patch_size=32, device="cpu"),
        predict_unit_volume(generator, volume, mode="2.5d", patch_size=32),
    )


@pytest.mark.slow
def test_bundle_ckpt_export(tmp_path):
    """``python -m monai.bundle ckpt_export`` builds ``network_def`` from the bundle's inference config
    (tiny sizes overridden on the command line), takes the generator out of a training checkpoint
    (``--key_in_ckpt generator``; a bare ``model.pt`` works the same without it) and traces it."""
    generator = tiny_generator("2.5d")
    torch.save({"generator": generator.state_dict(), "discriminator": {}}, tmp_path / "latest.pt")
    command = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
        "--filepath", str(tmp_path / "model.ts"), "--ckpt_file", str(tmp_path / "latest.pt"), "--key_in_ckpt", "generator",
        "--meta_file", str(BUNDLE_CONFIGS / "metadata.json"), "--config_file", str(BUNDLE_CONFIGS / "inference.json"),
        "--use_trace", "True", "--input_shape", "[1, 5, 64, 64]", "--num_downs", "4", "--base_channels", "8",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
    assert b"network_def" in extra["inference.json"] and b"Pix2Pix" in extra["metadata.json"]
    x = torch.rand(3, 5, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():  # exported in eval mode: dropout off, deterministic, equal to eager
        torch.testing.assert_close(exported(x), generator(x))
        torch.testing.assert_close(exported(x), exported(x))
