"""Batched training crops on the training device (pipeline.data.crop_sampler).

Every MR voxel of the test volumes holds a unique value (its flat index over all subjects), so each crop
voxel tells where it came from: subject, x, y, z. Expectations are written with numpy slicing of the
original arrays, independently of the sampler's index arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.crop_sampler import BodyCropSampler, VolumeBank, bank_bytes, choose_storage
from transforms.crop import mask_bounding_box
from transforms.intensity import unit_range_to_hu
from transforms.plane import PLANES, to_plane
from transforms.slab import volume_to_slabs

SHAPES = [(20, 18, 9), (14, 16, 11)]


def make_subjects(shapes=SHAPES):
    """Subjects whose MR voxel values are unique across all of them; CT = a function of the position."""
    subjects, start = [], 0
    for shape in shapes:
        count = int(np.prod(shape))
        mr = torch.arange(start, start + count, dtype=torch.float32).reshape(1, *shape)
        start += count
        mask = torch.zeros(1, *shape, dtype=torch.uint8)
        mask[0, 4:shape[0] - 4, 3:shape[1] - 3, :] = 1
        ct = ((mr.to(torch.int64) % 4000) - 1000).to(torch.int16)
        subjects.append({"mr": mr, "ct": ct, "mask": mask, "mask_box": mask_bounding_box(mask)})
    return subjects


def locate(values: torch.Tensor, subjects) -> np.ndarray:
    """``(..., 4)`` array of (subject, x, y, z) for MR values."""
    flat = values.numpy().astype(np.int64)
    sizes = np.cumsum([0] + [int(np.prod(s["mr"].shape[1:])) for s in subjects])
    subject = np.searchsorted(sizes, flat, side="right") - 1
    out = np.zeros(flat.shape + (4,), dtype=np.int64)
    out[..., 0] = subject
    for index, s in enumerate(subjects):
        here = subject == index
        out[here, 1:] = np.stack(np.unravel_index(flat[here] - sizes[index], s["mr"].shape[1:]), axis=-1)
    return out


def sampler(subjects=None, **options) -> BodyCropSampler:
    subjects = make_subjects() if subjects is None else subjects
    settings = dict(spatial_size=(6, 6, 5), replicate_axis=2, batch_size=4, samples_per_volume=2, pos_fraction=0.75,
                    flip_prob=0.0, seed=0)
    return BodyCropSampler(VolumeBank(subjects), **{**settings, **options})


def test_batches_have_the_network_shapes_and_every_image_comes_from_the_same_place():
    subjects = make_subjects()
    batch = sampler(subjects).draw()
    assert batch["mr"].shape == (8, 5, 6, 6) and batch["ct"].shape == (8, 1, 6, 6) == batch["mask"].shape
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in batch.values())
    where = locate(batch["mr"], subjects)  # (N, k, P, P, 4)
    for n in range(8):
        s, x, y, z = where[n, 2].reshape(-1, 4).T  # the centre slice of the slab
        assert len(set(s)) == 1
        expected_ct = subjects[s[0]]["ct"][0].numpy()[x, y, z].reshape(6, 6)
        expected_mask = subjects[s[0]]["mask"][0].numpy()[x, y, z].reshape(6, 6)
        np.testing.assert_allclose(unit_range_to_hu(batch["ct"][n, 0]).numpy(), expected_ct, atol=1e-3)
        np.testing.assert_array_equal(batch["mask"][n, 0].numpy(), expected_mask)
        # channel j is slab offset j - k // 2 along z, every other coordinate the same
        np.testing.assert_array_equal(where[n, :, :, :, 1:3], np.broadcast_to(where[n, 2, :, :, 1:3], (5, 6, 6, 2)))


def test_an_iteration_always_has_batch_times_samples_crops_whatever_the_number_of_subjects():
    one = make_subjects(SHAPES[:1])
    draws = sampler(one, batch_size=8, samples_per_volume=4)
    assert draws.crops_per_batch == 32 and draws.draw()["mr"].shape[0] == 32
    subjects = make_subjects()
    seen = set()
    for _ in range(10):
        where = locate(sampler(subjects, seed=len(seen)).draw()["mr"][:, 2, 3, 3], subjects)
        assert np.all(where[0::2, 0] == where[1::2, 0])  # samples_per_volume crops of one subject in a row
        seen |= set(where[:, 0].tolist())
    assert seen == {0, 1}


def test_centres_inside_the_mask_at_the_asked_rate_and_every_slice_is_a_centre():
    subjects = make_subjects()
    inside, slices = [], {0: set(), 1: set()}
    # one-voxel windows in-plane: never shifted, so the crop's voxel is the drawn centre
    draws = sampler(subjects, spatial_size=(1, 1, 5), batch_size=50, samples_per_volume=4)
    for _ in range(3):
        for s, x, y, z in locate(draws.draw()["mr"][:, 2, 0, 0], subjects):
            inside.append(bool(subjects[s]["mask"][0, x, y, z]))
            slices[s].add(int(z))
    assert 0.70 < np.mean(inside) < 0.80  # pos_fraction 0.75, 600 draws
    assert slices[0] == set(range(9)) and slices[1] == set(range(11))  # end slices too
    for fraction in (1.0, 0.0):
        mask = sampler(subjects, spatial_size=(1, 1, 5), pos_fraction=fraction, batch_size=50).draw()["mask"]
        assert torch.all(mask == fraction)


def test_air_bone_crops_are_centred_on_air_or_bone_inside_the_body_at_the_asked_rate():
    subjects = make_subjects()
    for subject in subjects:  # soft tissue (40 HU) but a block of air beside one of bone, inside the mask
        ct = torch.full_like(subject["ct"], 40)
        x = subject["ct"].shape[1]
        ct[0, 4 : x // 2, 3:9], ct[0, x // 2 : x - 4, 3:9] = -900, 1200
        subject["ct"] = ct
    block = [(s["ct"][0].numpy() != 40) for s in subjects]
    assert all(bool(s["mask"][0].numpy()[b].all()) for s, b in zip(subjects, block))  # the blocks lie in the body

    def centres(fraction: float) -> np.ndarray:  # one-voxel windows: the crop's voxel is the drawn centre
        draws = sampler(subjects, spatial_size=(1, 1, 5), batch_size=50, samples_per_volume=4,
                        air_bone_fraction=fraction)
        return np.concatenate([locate(draws.draw()["mr"][:, 2, 0, 0], subjects) for _ in range(3)])

    on_block = lambda where: np.array([block[s][x, y, z] for s, x, y, z in where])  # noqa: E731
    assert on_block(centres(1.0)).all()  # the blocks fill 33 % and 60 % of the mask boxes: 32 probes find them
    base = on_block(centres(0.0)).mean()  # crops that land there anyway
    assert 0.1 < base < 0.5
    share = on_block(centres(0.5)).mean()  # 600 draws each
    assert abs(share - (0.5 + 0.5 * base)) < 0.08, (share, base)
    # without the option nothing more is drawn: the stream of crops is a plain sampler's
    plain, off = sampler(subjects).draw(), sampler(subjects, air_bone_fraction=0.0).draw()
    assert all(torch.equal(plain[k], off[k]) for k in plain)


def test_end_slabs_replicate_edge_slices_exactly_as_inference_builds_them():
    subjects = make_subjects(SHAPES[:1])
    draws = sampler(subjects, batch_size=100, samples_per_volume=2, pos_fraction=1.0)
    slabs = volume_to_slabs(subjects[0]["mr"], slab_size=5)  # (Z, k, X, Y): what inference feeds the network
    checked = 0
    for crop in draws.draw()["mr"]:
        _, x, y, z = locate(crop[2, 0, 0], subjects)
        if z in (0, 1, 7, 8):
            torch.testing.assert_close(crop, slabs[z][:, x:x + 6, y:y + 6])
            checked += 1
    assert checked > 0


def test_in_plane_windows_stay_inside_and_small_volumes_replicate_their_edges():
    subjects = make_subjects(SHAPES[:1])
    for crop in sampler(subjects, pos_fraction=0.0, batch_size=25).draw()["mr"]:  # background centres reach the edges
        where = locate(crop[2], subjects)
        assert len(np.unique(where[..., 1])) == 6 and len(np.unique(where[..., 2])) == 6  # no repeated rows
    small = make_subjects([(4, 4, 9)])
    crop = sampler(small, batch_size=1, samples_per_volume=1).draw()["mr"][0]
    assert crop.shape == (5, 6, 6)
    xs = locate(crop[2], small)[..., 1]
    # a window around the centre c (0..3) with the edge voxels replicated: clip(c - 3 ... c + 2)
    assert any(np.array_equal(xs[:, 0], np.clip(np.arange(c - 3, c + 3), 0, 3)) for c in range(4)), xs[:, 0]


@pytest.mark.parametrize("plane", PLANES)
def test_the_left_right_flip_mirrors_the_patient_in_every_plane(plane):
    subjects = make_subjects([(6, 6, 6)])
    subjects[0]["mask"][:] = 1
    subjects[0]["mask_box"] = mask_bounding_box(subjects[0]["mask"])
    crops = sampler(subjects, planes=[plane], flip_prob=1.0, batch_size=30,
                    samples_per_volume=1).draw()["mr"]  # whole slices in-plane: only the flip and the plane shape them
    view = to_plane(torch.flip(subjects[0]["mr"], dims=[1]), plane)[0]  # mirrored along RAS x, normal last
    for crop in crops:
        centre = [j for j in range(6) if torch.equal(crop[2], view[:, :, j])]
        assert len(centre) == 1, plane
        for channel in range(5):
            torch.testing.assert_close(crop[channel], view[:, :, min(max(centre[0] + channel - 2, 0), 5)])


def test_flips_mirror_every_image_together_at_the_asked_rate():
    subjects = make_subjects()
    for flip_prob, low, high in ((0.0, 0.0, 0.0), (0.5, 0.4, 0.6), (1.0, 1.0, 1.0)):
        batch = sampler(subjects, flip_prob=flip_prob, batch_size=100, seed=3).draw()
        where = locate(batch["mr"][:, 2], subjects)  # (N, P, P, 4)
        steps = np.diff(where[..., 1], axis=1)  # along crop axis 0 = R-L in the axial plane
        assert np.all(np.abs(steps) == 1)
        mirrored = steps[:, 0, 0] == -1
        assert low <= mirrored.mean() <= high, flip_prob
        for n in np.flatnonzero(mirrored)[:5]:
            s, x, y, z = where[n].reshape(-1, 4).T
            expected = subjects[s[0]]["mask"][0].numpy()[x, y, z]
            np.testing.assert_array_equal(batch["mask"][n, 0].numpy().ravel(), expected)


def test_multi_plane_crops_are_slabs_along_each_plane():
    subjects = make_subjects()
    where = locate(sampler(subjects, planes="all", batch_size=60).draw()["mr"], subjects)  # (N, k, P, P, 4)
    seen = set()
    for crop in where:
        varying = [axis for axis in (1, 2, 3) if len(np.unique(crop[..., axis])) > 1]
        slab_axis = [axis for axis in (1, 2, 3) if len(np.unique(crop[:, 0, 0, axis])) > 1]
        # the slab runs along one RAS axis, the in-plane axes along the other two
        if slab_axis:
            seen.add({1: "sagittal", 2: "coronal", 3: "axial"}[slab_axis[0]])
        assert len(varying) == 3
    assert seen == set(PLANES)


def test_draws_are_seeded_and_a_restored_state_continues_the_stream():
    subjects = make_subjects()
    first, second = sampler(subjects, seed=7), sampler(subjects, seed=7)
    assert torch.equal(first.draw()["mr"], second.draw()["mr"])
    assert not torch.equal(sampler(subjects, seed=8).draw()["mr"], sampler(subjects, seed=7).draw()["mr"])
    state = first.state_dict()
    expected = first.draw()["mr"]
    resumed = sampler(subjects, seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.draw()["mr"], expected)


@pytest.mark.parametrize("batches_per_draw", [1, 3])
def test_draws_of_several_batches_prefetch_and_resume_keep_the_stream(batches_per_draw):
    subjects = make_subjects()
    make = lambda: sampler(subjects, seed=3, batches_per_draw=batches_per_draw)  # noqa: E731
    plain = make()
    expected = [plain.draw() for _ in range(7)]
    assert all(b["mr"].shape == (8, 5, 6, 6) and b["ct"].shape == (8, 1, 6, 6) for b in expected)
    assert len({b["mr"][:, 2].sum().item() for b in expected}) == 7  # every batch other crops
    ahead = make()
    stream, got, states = iter(ahead), [], []
    for _ in range(7):
        states.append(ahead.state_dict())  # before each batch: mid-draw or between draws
        got.append(next(stream))
        ahead.prefetch()  # the trainer's call once an iteration is queued
    assert all(torch.equal(a["mr"], b["mr"]) and torch.equal(a["ct"], b["ct"]) for a, b in zip(got, expected))
    for k in (1, 4, 5):  # a resumed run continues with the batch it had not yet handed out
        resumed = make()
        resumed.load_state_dict(states[k])
        assert torch.equal(next(iter(resumed))["mr"], expected[k]["mr"])


def test_memory_estimate_and_storage_choice(monkeypatch):
    assert bank_bytes([(10, 10, 10), (2, 3, 4)]) == 7 * (1000 + 24)
    assert choose_storage(10**12, torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 80 * 2**30))
    cuda = torch.device("cuda:0")
    assert choose_storage(3 * 2**30, cuda) == cuda  # fits in half of the free memory
    assert choose_storage(5 * 2**30, cuda) == torch.device("cpu")  # does not: pinned host memory
    assert choose_storage(5 * 2**30, cuda, storage="device") == cuda
    assert choose_storage(1, cuda, storage="host") == torch.device("cpu")
    with pytest.raises(ValueError, match="storage"):
        choose_storage(1, cuda, storage="gpu")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="pos_fraction"):
        sampler(pos_fraction=1.5)
    with pytest.raises(ValueError, match="air_bone_fraction"):
        sampler(air_bone_fraction=-0.1)
    with pytest.raises(ValueError, match="batch_size"):
        sampler(batch_size=0)
    with pytest.raises(ValueError, match="batches_per_draw"):
        sampler(batches_per_draw=0)
    with pytest.raises(ValueError, match="no training subjects"):
        VolumeBank([])


def test_3d_crops_are_cubes_shifted_inside_the_volume():
    subjects = make_subjects()
    batch = sampler(subjects, spatial_size=(6, 6, 6), replicate_axis=None, channels_slab=False, flip_prob=0.5).draw()
    assert batch["mr"].shape == (8, 1, 6, 6, 6) == batch["ct"].shape == batch["mask"].shape
    for n, where in enumerate(locate(batch["mr"][:, 0], subjects)):
        s, x, y, z = where.reshape(-1, 4).T
        assert len(set(s)) == 1 and all(len(np.unique(a)) == 6 for a in (x, y, z))  # inside: nothing replicated
        np.testing.assert_allclose(unit_range_to_hu(batch["ct"][n, 0]).numpy().ravel(),
                                   subjects[s[0]]["ct"][0].numpy()[x, y, z], atol=1e-3)


def test_the_bank_can_take_the_volumes_over_without_changing_a_crop():
    kept, freed = make_subjects(), make_subjects()
    options = dict(spatial_size=(6, 6, 5), batch_size=4, samples_per_volume=2, seed=4)
    reference = BodyCropSampler(VolumeBank(kept), **options).draw()
    bank = VolumeBank(freed, free_inputs=True)
    assert all(set(subject) == {"mask_box"} for subject in freed)  # the host holds the volumes once
    batch = BodyCropSampler(bank, **options).draw()
    assert all(torch.equal(batch[key], reference[key]) for key in reference)


def linear_subject(shape=(40, 40, 9)):
    """MR = 100 x + y + 10000 z and CT = x + 10 y - 500 (HU): bilinear interpolation reproduces both exactly, and
    together they give back each crop voxel's (x, y) position; the mask is x >= 20."""
    x, y, z = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    mask = torch.zeros(1, *shape, dtype=torch.uint8)
    mask[0, 12:28, 12:28, 1:-1] = 1  # crop centres inside: rotated windows and slabs stay inside the volume
    subject = {"mr": (100 * x + y + 10000 * z)[None], "ct": (x + 10 * y - 500).to(torch.int16)[None],
               "mask": mask, "mask_box": mask_bounding_box(mask)}
    return subject, (x >= 20).to(torch.uint8)[None]


def test_spatial_augmentation_rotates_and_scales_every_image_alike_in_plane():
    subject, threshold_mask = linear_subject()
    options = {"spatial_size": (8, 8, 3), "batch_size": 20, "samples_per_volume": 1, "pos_fraction": 1.0, "seed": 1}
    draws = sampler([subject], spatial_prob=1.0, rotation_deg=30.0, scale_fraction=0.2, **options)
    draws.bank.mask.copy_(threshold_mask.reshape(-1))  # the image mask: x >= 20 (the box keeps centres inside)
    batch = draws.draw()
    mr, ct_hu = batch["mr"].double(), unit_range_to_hu(batch["ct"][:, 0]).double()
    np.testing.assert_allclose(mr.diff(dim=1).numpy(), 10000.0, atol=0.05)  # the slab axis (z) untouched (float32)
    centre = mr[:, 1] - 10000 * torch.round(mr[:, 1] / 10000)  # 100 x + y
    x = (10 * centre - (ct_hu + 500)) / 999.0  # solve 100 x + y = centre, x + 10 y = ct + 500
    y = (ct_hu + 500 - x) / 10.0
    angles = []
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    design = torch.stack([torch.ones(64), i.ravel(), j.ravel()], 1).double()
    for n in range(20):
        fit_x = torch.linalg.lstsq(design, x[n].reshape(-1, 1)).solution[:, 0]
        fit_y = torch.linalg.lstsq(design, y[n].reshape(-1, 1)).solution[:, 0]
        assert (design @ fit_x - x[n].ravel()).abs().max() < 1e-3  # an affine map of the crop grid
        linear = torch.tensor([[fit_x[1], fit_x[2]], [fit_y[1], fit_y[2]]])
        scale = torch.linalg.det(linear).abs().sqrt()
        assert 1 / 1.2 - 1e-3 <= scale <= 1.2 + 1e-3
        torch.testing.assert_close(linear @ linear.T / scale**2, torch.eye(2, dtype=linear.dtype), atol=1e-3, rtol=0)
        angles.append(float(torch.rad2deg(torch.atan2(linear[1, 0], linear[0, 0]))))
        decided = (x[n] - 20).abs() > 1  # away from the edge the vote agrees with the mask of the position
        assert torch.equal(batch["mask"][n, 0][decided] > 0, (x[n] >= 20)[decided])
    assert max(abs(a) for a in angles) <= 30.0 + 1e-3 and np.std(angles) > 5


def test_spatial_augmentation_off_or_identity_gives_the_exact_voxel_windows():
    subjects = make_subjects()
    exact = sampler(subjects, seed=2).draw()
    identity = sampler(subjects, seed=2, spatial_prob=1.0, rotation_deg=0.0, scale_fraction=0.0).draw()
    for key in exact:
        torch.testing.assert_close(identity[key], exact[key], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="3D"):
        sampler(subjects, spatial_size=(4, 4, 4), replicate_axis=None, channels_slab=False, spatial_prob=0.5)


def expected_position(subject: dict, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``(3, ...)`` (|x|, y, z) of voxels in units of the mask box's half-extent from its centre, written
    with numpy from the box alone (transforms.position states the convention)."""
    box = mask_bounding_box(subject["mask"]).astype(np.float64)
    centre, half = box.mean(axis=1), (box[:, 1] - box[:, 0]) / 2
    coordinates = [(v + 0.5 - centre[a]) / half[a] for a, v in enumerate(np.broadcast_arrays(x, y, z))]
    return np.stack([np.abs(coordinates[0]), coordinates[1], coordinates[2]])


@pytest.mark.parametrize("plane", PLANES)
def test_position_channels_give_each_pixel_its_place_in_the_body_box_whatever_the_plane_and_flip(plane):
    subjects = make_subjects()
    batch = sampler(subjects, planes=(plane,), flip_prob=0.5, position_channels=True, seed=3).draw()
    assert batch["mr"].shape == (8, 5 + 3, 6, 6)
    where = locate(batch["mr"][:, :5], subjects)  # the MR channels as before
    for n in range(8):
        s, x, y, z = where[n, 2].reshape(-1, 4).T  # the centre slice
        expected = expected_position(subjects[s[0]], x, y, z).reshape(3, 6, 6)
        np.testing.assert_allclose(batch["mr"][n, 5:].numpy(), expected, atol=1e-5)


def test_position_channels_of_rotated_crops_are_the_interpolated_position():
    subject, _ = linear_subject()
    shape = subject["mr"].shape[1:]
    # an MR that *is* the expected anterior-posterior channel: rotated and scaled with the crop, bilinearly
    y = np.broadcast_to(np.arange(shape[1])[None, :, None], shape)
    subject["mr"] = torch.as_tensor(expected_position(subject, 0, y, 0)[1], dtype=torch.float32)[None]
    draws = sampler([subject], spatial_size=(8, 8, 3), batch_size=20, samples_per_volume=1, pos_fraction=1.0, seed=1,
                    planes="all", spatial_prob=1.0, rotation_deg=30.0, scale_fraction=0.2, position_channels=True)
    mr = draws.draw()["mr"]
    np.testing.assert_allclose(mr[:, 3 + 1].numpy(), mr[:, 1].numpy(), atol=1e-5)  # y channel = the centre slice
    with pytest.raises(ValueError, match="3D"):
        sampler(spatial_size=(4, 4, 4), replicate_axis=None, channels_slab=False, position_channels=True)
