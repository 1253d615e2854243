"""Tests for pipeline.report.figures: every figure function writes a PNG that decodes (PIL) to the size
its figure and dpi imply and is not blank; existing files are refused unless ``overwrite``; the error
map's colours follow the sign of sCT - CT; region bars show the means computed by hand; image grids.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.report import figures
from pipeline.report.figures import save_error_slices, save_hu_histograms, save_image_grid, save_png, save_region_bars

SHAPE = (20, 18, 12)
AFFINE = np.diag([-2.0, 2.0, 3.0, 1.0])  # LAS-like voxel order: the figures reorient to RAS


def decoded(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels.var() > 0 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


def phantom():
    """A ball of soft tissue with a bone shell in air, on an anisotropic grid."""
    ijk = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1) / 2
    r = np.sqrt(sum(((ijk[a] - centre[a]) * abs(AFFINE[a, a])) ** 2 for a in range(3)))
    ct = np.where(r < 14, 40.0, -1000.0)
    ct[(r >= 11) & (r < 14)] = 1200.0
    mask = (r < 14).astype(np.uint8)
    mr = np.where(mask > 0, 500.0 + 10 * ijk[0], 0.0)
    return ct, mr, mask


def figure_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_save_error_slices_size_content_and_optional_mr_column(tmp_path):
    ct, mr, mask = phantom()
    sct = ct + 50.0
    with_mr = save_error_slices(ct=ct, sct=sct, mask=mask, affine=AFFINE, mr=mr, title="S001",
                                out_path=tmp_path / "with_mr.png")
    without_mr = save_error_slices(ct=ct, sct=sct, mask=mask, affine=AFFINE, out_path=tmp_path / "ct_only.png")
    # Figure(figsize=(3.1 * columns, 8.4)) at 110 dpi: four columns with MR, three without
    assert figure_size(with_mr) == (round(3.1 * 4 * 110), round(8.4 * 110))
    assert figure_size(without_mr) == (round(3.1 * 3 * 110), round(8.4 * 110))
    assert_not_blank(decoded(with_mr))
    assert_not_blank(decoded(without_mr))


def test_save_error_slices_adds_an_uncertainty_column(tmp_path):
    ct, mr, mask = phantom()
    with_std = save_error_slices(ct=ct, sct=ct + 50.0, mask=mask, affine=AFFINE, mr=mr, std=30.0 * mask,
                                 out_path=tmp_path / "with_std.png")
    assert figure_size(with_std) == (round(3.1 * 5 * 110), round(8.4 * 110))
    assert_not_blank(decoded(with_std))


def _red_and_blue(pixels: np.ndarray) -> tuple[int, int]:
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    red = int(np.sum((r > 150) & (r - b > 80) & (r - g > 40)))
    blue = int(np.sum((b > 150) & (b - r > 80) & (b - g > 20)))
    return red, blue


def test_error_map_colour_follows_the_sign_of_the_error(tmp_path):
    """RdBu_r over +-error_range: sCT above CT is red, below is blue (the colour bar holds both, so compare)."""
    ct, _, mask = phantom()
    over = decoded(save_error_slices(ct=ct, sct=ct + 400.0 * mask, mask=mask, affine=AFFINE,
                                     out_path=tmp_path / "over.png"))
    under = decoded(save_error_slices(ct=ct, sct=ct - 400.0 * mask, mask=mask, affine=AFFINE,
                                      out_path=tmp_path / "under.png"))
    red_over, blue_over = _red_and_blue(over)
    red_under, blue_under = _red_and_blue(under)
    assert red_over > 2 * red_under and blue_under > 2 * blue_over


def test_save_hu_histograms(tmp_path, monkeypatch):
    ct, _, mask = phantom()
    sct = np.where(mask > 0, ct + np.random.default_rng(0).normal(0, 30, ct.shape), -1000.0)
    shown = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path, **kw: shown.append(fig) or save_png(fig, path, **kw))
    path = save_hu_histograms(ct=ct, sct=sct, mask=mask, out_path=tmp_path / "hist.png", title="HU",
                              hu_range=(-200.0, 1500.0), bin_width_hu=20.0)
    assert figure_size(path) == (round(7.0 * 110), round(3.8 * 110))
    assert_not_blank(decoded(path))
    (ax,) = shown[0].axes
    assert ax.get_yscale() == "log" and ax.get_xlim() == (-200.0, 1500.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CT", "sCT"]


def test_save_region_bars_heights_are_the_means_by_hand(tmp_path, monkeypatch):
    per_region = pd.DataFrame([
        {"method": "unet", "region": "soft_tissue", "mae_hu": 40.0},
        {"method": "unet", "region": "soft_tissue", "mae_hu": 60.0},
        {"method": "unet", "region": "bone", "mae_hu": 200.0},
        {"method": "unet", "region": "bone", "mae_hu": 260.0},
        {"method": "bulk", "region": "soft_tissue", "mae_hu": 90.0},
        {"method": "bulk", "region": "bone", "mae_hu": 500.0},
        {"method": "bulk", "region": "bone", "mae_hu": 700.0},
    ])
    shown = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path, **kw: shown.append(fig) or save_png(fig, path, **kw))
    path = save_region_bars(per_region, out_path=tmp_path / "bars.png")
    assert_not_blank(decoded(path))
    width, height = figure_size(path)
    assert height == round(4.0 * 110) and width >= round(6.0 * 110)
    (ax,) = shown[0].axes
    heights = [bar.get_height() for container in ax.containers if hasattr(container, "patches")
               for bar in container.patches]
    # methods as bar series (first-seen order), regions as groups (first-seen order)
    assert heights == pytest.approx([50.0, 230.0, 90.0, 600.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["soft tissue", "bone"]
    assert ax.get_ylabel() == "MAE (HU)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["unet", "bulk"]


def test_figures_refuse_to_overwrite_unless_asked(tmp_path):
    ct, _, mask = phantom()
    path = tmp_path / "hist.png"
    path.write_bytes(b"not a png")
    with pytest.raises(FileExistsError):
        save_hu_histograms(ct=ct, sct=ct, mask=mask, out_path=path)
    assert path.read_bytes() == b"not a png"
    per_region = pd.DataFrame([{"method": "m", "region": "body", "mae_hu": 1.0}])
    for call in (lambda p, **kw: save_error_slices(ct=ct, sct=ct, mask=mask, affine=AFFINE, out_path=p, **kw),
                 lambda p, **kw: save_region_bars(per_region, out_path=p, **kw),
                 lambda p, **kw: save_image_grid([[(ct[:, :, 6], "ct", (-1000, 1500))]], p, **kw)):
        with pytest.raises(FileExistsError):
            call(path, overwrite=False)
        assert path.read_bytes() == b"not a png"
    save_hu_histograms(ct=ct, sct=ct, mask=mask, out_path=path, overwrite=True)
    assert_not_blank(decoded(path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_save_image_grid_layout_and_windows(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 16), (12, 1))
    rows = [[(ramp, "ramp", (0.0, 1.0)), (1 - ramp, "inverse", (0.0, 1.0)), (ramp * 4, "x4", (0.0, 4.0))],
            [(ramp, "only one", (0.0, 1.0))]]  # a short row leaves empty panels
    path = save_image_grid(rows, tmp_path / "grid.png", overwrite=False, panel_inches=2.0)
    assert figure_size(path) == (3 * 2 * 100, 2 * 2 * 100)  # columns = longest row, dpi 100
    pixels = decoded(path)
    assert_not_blank(pixels)
    grey = pixels[..., 0]
    assert np.allclose(pixels[..., 0], pixels[..., 1]) and np.allclose(pixels[..., 1], pixels[..., 2])
    # the bottom-right panel (no image) is white; the top-left one holds dark and bright grey
    assert grey[300:, 300:].min() == 255.0
    top_left = grey[40:160, 20:180]
    assert top_left.min() < 30 and top_left.max() > 225
    same = save_image_grid([[(np.zeros((4, 4)), "flat", (0.0, 1.0))]], tmp_path / "flat.png", overwrite=False)
    assert figure_size(same) == (260, 260)
