"""X-ray / 2-D pair evaluation: image metrics, the bone-suppression numbers, any pair keys from a folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def test_fine_bone_leak_sees_rib_shadows_that_a_smooth_correction_hides_from_the_whole_image_fit() -> None:
    """Bone = thin ribs + a broad bone load. A prediction that keeps 30 % of the ribs but subtracts a
    smooth, bone-shaped correction can bring the whole-image leak near 0; the high-passed fit still
    reports the ribs' 0.3 (the Gaussian removes the broad parts on both sides)."""
    rows, cols = np.mgrid[:96, :96]
    body = np.ones((96, 96), bool)
    ribs = ((rows // 4) % 2 == 0).astype(float)  # 4-px stripes
    broad = np.exp(-((cols - 48) / 30.0) ** 2)  # spine and mediastinum: smooth
    bone = 0.5 * ribs + 2.0 * broad
    soft = 3.0 + 0.005 * cols + 0.2 * np.sin(rows / 15.0)  # smooth anatomy, not bone-shaped
    left_in = 0.3 * 0.5 * ribs
    # the smooth correction's size that cancels the ribs' covariance with bone (np.cov: plain statistics)
    c = np.cov(left_in.ravel(), bone.ravel())[0, 1] / np.cov(broad.ravel(), bone.ravel())[0, 1]
    gamed = soft + left_in - c * broad
    scores = bone_suppression(gamed, soft, bone, body, fine_sigma_px=2.0)
    assert abs(scores["bone_leak"]) < 0.02  # the whole-image fit is fooled ...
    assert scores["bone_leak_fine"] == pytest.approx(0.3, abs=0.03)  # ... the fine one is not
    assert "bone_leak_fine" not in bone_suppression(gamed, soft, bone, body)  # no pixel scale: left out


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


def test_bone_leak_is_measured_against_the_noiseless_references_when_the_manifest_has_them(tmp_path):
    """DE subtraction gives the soft and bone images anti-correlated noise (one low-kVp noise field
    enters both with opposite signs). A perfect denoiser (prediction = noiseless soft) then shows a
    positive "leak" against the noisy true images, and none against the noiseless references."""
    from pipeline.io.images2d import save_image_2d
    from pipeline.xray.evaluation import evaluate_images

    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[:64, :64]
    bone_clean = 0.4 * ((rows // 8) % 2 == 0) + 0.02 * cols
    soft_clean = 2.0 + 0.01 * rows + 0.5 * bone_clean  # thick paths cross more bone
    low_noise = 0.1 * rng.normal(size=rows.shape)
    images = {"se": soft_clean + bone_clean, "de_soft": soft_clean - low_noise, "de_bone": bone_clean + low_noise,
              "de_soft_noiseless": soft_clean, "de_bone_noiseless": bone_clean}
    for key, image in images.items():
        save_image_2d(image.astype(np.float32), tmp_path / key / "S1_p000.nii.gz")
        save_image_2d(soft_clean.astype(np.float32), tmp_path / "pred" / key / "S1_p000.nii.gz")
    record = {"subject_id": "S1", "image_id": "S1_p000",
              **{k: str(tmp_path / k / "S1_p000.nii.gz") for k in ("se", "de_soft", "de_bone")}}
    references = {k: f"{k}/S1_p000.nii.gz" for k in ("de_soft_noiseless", "de_bone_noiseless")}

    def leak(rec):
        results = evaluate_images([rec], prediction_dir=tmp_path / "pred", image_key="se",
                                  target_keys=["de_soft", "de_bone"], label_root=tmp_path)
        return results.query("method == 'pix2pix' and metric == 'bone_leak'")["value"].astype(float).item()

    assert leak(record) > 0.1  # against the noisy images: biased (0.15 here)
    assert leak({**record, **references}) == pytest.approx(0.0, abs=1e-5)


def test_any_pair_keys_from_a_folder_of_8bit_images(tmp_path):
    """MR -> CT slices as 8-bit PNG/JPEG: per-image MAE, PSNR and SSIM in the long table for the model and
    the scaled-input baseline, the table's units from the files, the figure input | predicted | true |
    error, and missing predictions refused up front naming them."""
    from PIL import Image

    from pipeline.errors import InputError
    from pipeline.xray.evaluation import run_evaluation

    rows, cols = np.mgrid[:32, :32]
    head = (rows - 16) ** 2 + (cols - 16) ** 2 < 144
    data, predictions = tmp_path / "pairs", tmp_path / "run" / "predictions"
    for i in range(10):
        mr = np.where(head, 90 + 3 * i + (cols % 7) * 10, 0).astype(np.uint8)
        ct = np.where(head, 60 + 2 * i + (rows % 5) * 12, 0).astype(np.uint8)
        for key, image in (("mr", mr), ("ct", ct)):
            (data / key).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.stack([image] * 3, -1)).save(data / key / f"B{i}_p000.png")  # RGB, as Kaggle's
        (predictions / "ct").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(head, ct.astype(int) + 5, 0).astype(np.uint8)).save(predictions / "ct" / f"B{i}_p000.png")
    options = {"dataset": data, "prediction_dir": predictions, "image_key": "mr", "target_keys": ["ct"],
               "soft_key": None, "bone_key": None, "val_fraction": 0.2, "test_fraction": 0.3, "seed": 1}
    paths = run_evaluation(output_dir=tmp_path / "evaluation", **options)
    results = pd.read_csv(paths["results.csv"], keep_default_na=False)
    assert set(results["method"]) == {"pix2pix", "mr_scaled"} and set(results["region"]) == {"ct"}
    ours = results[results["method"] == "pix2pix"].pivot(index="image_id", columns="metric", values="value")
    assert len(ours) == 3 and set(ours.columns) == {"mae", "psnr", "ssim"}  # 3 test subjects of 10
    assert np.allclose(ours["mae"], 5 / 255)  # +5 grey levels inside the head (the body mask)
    assert (ours["ssim"] < 1).all() and (ours["psnr"] > 20).all()
    markdown = paths["summary.md"].read_text()
    assert "mr → ct evaluation" in markdown and "grey levels / 255" in markdown and "(test split)" in markdown
    with Image.open(paths["figure.png"]) as figure:
        assert figure.width >= 4 * 2.4 * 100 - 20  # four panels: mr | predicted ct | true ct | error ct
    tested = sorted(ours.index)
    (predictions / "ct" / f"{tested[0]}.png").unlink()
    with pytest.raises(InputError, match=rf"no prediction for 1 of 3 held-out image\(s\) .*ct/{tested[0]}"):
        run_evaluation(output_dir=tmp_path / "again", **options)


def test_lung_field_leak_sees_the_ribs_over_the_lungs_apart_from_bone_left_in_the_mediastinum(tmp_path):
    """A prediction that removes the ribs over the lungs but keeps the spine and mediastinum's "bone"
    (a real CT's iodine) leaks over the whole image and not in the lung fields; the SE image leaks in both."""
    from pipeline.io.images2d import save_image_2d
    from pipeline.xray.evaluation import LUNG_FIELD_MIN_MM, evaluate_images

    rows, cols = np.mgrid[:64, :64]
    centre = np.abs(cols - 31.5) < 10  # spine and mediastinum, between the lungs
    ribs = 0.3 * ((rows // 6) % 2 == 0) * ~centre
    bone = ribs + 0.8 * centre + 0.005 * rows
    soft = 2.0 + 0.01 * rows + 0.3 * centre + 0.002 * cols
    lung_path = np.where(centre, 10.0, 150.0)  # mm of lung along each ray
    lung_path[:, :3] = lung_path[:, -3:] = 0.5 * LUNG_FIELD_MIN_MM  # the chest wall at the image's sides
    images = {"se": soft + bone, "de_soft": soft, "de_bone": bone, "lung_path": lung_path}
    prediction = {"de_soft": soft + 0.5 * bone * centre, "de_bone": bone - 0.5 * bone * centre}
    for key, image in images.items():
        save_image_2d(image.astype(np.float32), tmp_path / key / "S1_p000.nii.gz")
    for key, image in prediction.items():
        save_image_2d(image.astype(np.float32), tmp_path / "pred" / key / "S1_p000.nii.gz")
    record = {"subject_id": "S1", "image_id": "S1_p000",
              **{k: str(tmp_path / k / "S1_p000.nii.gz") for k in ("se", "de_soft", "de_bone")}}

    def metrics(rec):
        results = evaluate_images([rec], prediction_dir=tmp_path / "pred", image_key="se",
                                  target_keys=["de_soft", "de_bone"], label_root=tmp_path)
        return results.query("method == 'pix2pix'").set_index("metric")["value"].astype(float)

    without = metrics(record)
    assert "bone_leak_lung" not in without.index  # no lung_path: no lung-field leak
    got = metrics({**record, "lung_path": "lung_path/S1_p000.nii.gz"})
    assert got["bone_leak"] > 0.2
    assert got["bone_leak_lung"] == pytest.approx(0.0, abs=1e-6)
    assert got["bone_leak_se_lung"] == pytest.approx(1.0, abs=1e-6)  # SE = soft + bone everywhere
