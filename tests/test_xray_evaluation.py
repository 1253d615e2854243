"""X-ray evaluation: image metrics and the bone-suppression numbers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.xray.evaluation import bone_suppression, image_metrics


def test_metrics_and_bone_suppression() -> None:
    rng = np.random.default_rng(0)
    body = np.ones((24, 24), bool)
    soft = 2.0 + rng.random((24, 24))
    bone = np.zeros((24, 24))
    bone[8:16, 4:20] = 1.0
    perfect = image_metrics(soft, soft, body)
    assert perfect["mae"] == 0.0 and perfect["ssim"] == pytest.approx(1.0) and perfect["psnr"] == float("inf")
    worse = image_metrics(soft + 0.3 * bone, soft, body)
    assert worse["mae"] == pytest.approx(0.3 * bone.mean()) and worse["ssim"] < 1.0
    assert bone_suppression(soft, soft, bone, body)["bone_leak"] == pytest.approx(0.0, abs=1e-12)
    assert bone_suppression(soft + bone, soft, bone, body)["bone_leak"] == pytest.approx(1.0)
    assert bone_suppression(soft + 0.25 * bone, soft, bone, body)["bone_leak"] == pytest.approx(0.25)


def test_bone_leak_separates_a_soft_tissue_gain_from_bone_left_in() -> None:
    """Soft and bone paths rise together in a chest: a soft image 10 % too bright has no bone in it
    (leak 0, gain 0.1), and bone left in reads as the same leak whatever the gain. The references are
    the constructions themselves; a slope of the error on bone alone gives 0.1 x slope(soft, bone)
    for the first."""
    rng = np.random.default_rng(1)
    body = np.ones((32, 32), bool)
    bone = rng.random((32, 32))
    soft = 2.0 + 3.0 * bone + 0.5 * rng.random((32, 32))  # correlated with bone, as thick paths are
    gained = bone_suppression(1.1 * soft, soft, bone, body)
    assert gained["bone_leak"] == pytest.approx(0.0, abs=1e-9) and gained["soft_gain"] == pytest.approx(0.1)
    both = bone_suppression(0.95 * soft + 0.3 * bone + 0.2, soft, bone, body)
    assert both["bone_leak"] == pytest.approx(0.3) and both["soft_gain"] == pytest.approx(-0.05)
    flat = bone_suppression(soft, soft, np.zeros_like(bone), body)  # no bone: leak undefined, not 0
    assert np.isnan(flat["bone_leak"])


def test_tumour_visibility_rows_for_chest_drrs(tmp_path):
    """A tumour under a rib: the true DE-soft image (no rib) shows it with a higher CNR than SE (rib
    stripes around it), reported per tumour in regions tumour and tumour_behind_rib."""
    from pipeline.io.images2d import save_image_2d
    from pipeline.xray.evaluation import evaluate_images

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:48, :48]
    tumour = (rows - 24) ** 2 + (cols - 24) ** 2 <= 16
    ribs = ((rows // 6) % 2 == 0).astype(float)  # horizontal rib stripes across the whole field
    soft = 2.0 + 0.3 * tumour + 0.01 * rng.normal(size=rows.shape)
    se = soft + 0.8 * ribs
    labels = tumour.astype(np.float32)
    bone = 0.9 * np.ones_like(soft)  # the tumour's median bone path is above 0.5 g/cm^2: behind a rib
    for key, image in (("se", se), ("de_soft", soft), ("de_bone", 0.8 * ribs), ("tumour_mask", labels),
                       ("bone_path", bone)):
        save_image_2d(image.astype(np.float32), tmp_path / key / "S1_p000.nii.gz")
    record = {"subject_id": "S1", "image_id": "S1_p000", **{k: str(tmp_path / k / "S1_p000.nii.gz") for k in
              ("se", "de_soft", "de_bone")}, "tumour_mask": "tumour_mask/S1_p000.nii.gz",
              "bone_path": "bone_path/S1_p000.nii.gz"}
    results = evaluate_images([record], prediction_dir=None, image_key="se", target_keys=["de_soft", "de_bone"],
                              baseline={"de_soft": 0.7, "de_bone": 0.3}, label_root=tmp_path)
    cnr = results[results["metric"] == "cnr"]
    assert set(cnr["region"]) == {"tumour", "tumour_behind_rib"}
    assert set(cnr["image_id"]) == {"S1_p000/tumour1"}
    by_method = cnr[cnr["region"] == "tumour"].set_index("method")["value"]
    assert by_method["true_de_soft"] > 3 * by_method["se_scaled"]  # the rib stripes hide it in SE


def test_figure_outlines_projected_tumours_in_red(tmp_path):
    from PIL import Image

    from pipeline.io.images2d import save_image_2d
    from pipeline.xray.evaluation import save_figure

    rows, cols = np.mgrid[:32, :32]
    tumour = ((rows - 16) ** 2 + (cols - 16) ** 2 <= 16).astype(np.float32)
    for key in ("se", "de_soft", "de_bone", "tumour_mask"):
        save_image_2d(tumour if key == "tumour_mask" else np.full((32, 32), 2.0, np.float32) + 0.01 * rows,
                      tmp_path / key / "S1_p000.nii.gz")
        if key != "tumour_mask":
            save_image_2d(np.full((32, 32), 2.0, np.float32), tmp_path / "pred" / key / "S1_p000.nii.gz")
    record = {"subject_id": "S1", "image_id": "S1_p000", **{k: str(tmp_path / k / "S1_p000.nii.gz") for k in
              ("se", "de_soft", "de_bone")}}

    def red_pixels(path):
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=int)
        return int(((rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum())

    options = dict(prediction_dir=tmp_path / "pred", image_key="se", target_keys=["de_soft", "de_bone"])
    plain = save_figure([record], tmp_path / "plain.png", **options)
    outlined = save_figure([{**record, "tumour_mask": "tumour_mask/S1_p000.nii.gz"}], tmp_path / "outlined.png",
                           label_root=tmp_path, **options)
    assert red_pixels(plain) == 0 and red_pixels(outlined) > 20
