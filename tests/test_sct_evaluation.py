"""Evaluation driver: per-subject metrics from files, tables, summary, figures, baselines, refusals."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import InputError
from pipeline.report.tables import summary_value
from pipeline.sct.evaluation import evaluate_predictions, evaluate_subject, run_evaluation
from synthrad_reference import official_ms_ssim, official_ssim

SHAPE = (24, 22, 20)
AFFINE = np.array([[-2.0, 0.05, 0.0, 40.0], [0.05, -2.0, 0.0, 30.0], [0.0, 0.0, 2.5, -20.0], [0, 0, 0, 1]])


def _head(seed: int):
    """Ellipsoid 'head': 1000 HU skull shell, 40 HU brain, -800 HU air pocket; MR dark bone/air."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    r = np.sqrt((x / 0.85) ** 2 + (y / 0.8) ** 2 + (z / 0.8) ** 2)
    mask = (r < 1.0).astype(np.uint8)
    ct = np.full(SHAPE, -1000.0)
    ct[r < 1.0] = 1000.0
    ct[r < 0.8] = 40.0
    ct[(r < 0.8) & (x > 0.3) & (np.abs(y) < 0.2)] = -800.0
    ct += rng.normal(0, 10, SHAPE) * mask
    mr = np.where(r < 0.8, 60.0, 0.0) + np.where((r >= 0.8) & (r < 1.0), 5.0, 0.0)
    mr[ct < -500] = 2.0
    mr = (mr + rng.normal(0, 1.0, SHAPE) * mask) * (1 + seed)
    labels = np.where(r < 0.8, 2, np.where(r < 1.0, 1, 0)).astype(np.uint8)
    return mr.astype(np.float32), np.rint(ct).astype(np.int16), mask, labels


def _save(array, path, affine=AFFINE):
    nib.save(nib.Nifti1Image(array, affine), path)
    return str(path)


@pytest.fixture
def dataset(tmp_path):
    """Two subjects with mr/ct/mask/labels and two prediction folders: 'perfect' (sCT = CT, nested
    layout) and 'offset' (+50 HU inside the mask, flat <id>_sct.nii.gz layout)."""
    rows = []
    for i, sid in enumerate(["1BP001", "1BP002"]):
        mr, ct, mask, labels = _head(i)
        folder = tmp_path / "data" / sid
        folder.mkdir(parents=True)
        rows.append({"subject_id": sid, "mr": _save(mr, folder / "mr.nii.gz"), "ct": _save(ct, folder / "ct.nii.gz"),
                     "mask": _save(mask, folder / "mask.nii.gz"), "labels": _save(labels, folder / "labels.nii.gz")})
        (tmp_path / "perfect" / sid).mkdir(parents=True)
        _save(ct, tmp_path / "perfect" / sid / "sct.nii.gz")
        (tmp_path / "offset").mkdir(exist_ok=True)
        _save((ct + 50 * mask).astype(np.int16), tmp_path / "offset" / f"{sid}_sct.nii.gz")
    return tmp_path, rows


def test_evaluate_subject_matches_metrics(dataset):
    root, rows = dataset
    row = rows[0]
    result = evaluate_subject(sct_path=root / "offset" / "1BP001_sct.nii.gz", ct_path=row["ct"], mask_path=row["mask"],
                              subject_id="1BP001", label_path=row["labels"], label_names={1: "skull", 2: "brain"},
                              bone_thresholds=(250.0, 600.0))
    ct = nib.load(row["ct"]).get_fdata()
    mask = nib.load(row["mask"]).get_fdata()
    sct = ct + 50 * mask
    assert result["subject_id"] == "1BP001"
    assert result["mae_hu"] == pytest.approx(50.0) and result["me_hu"] == pytest.approx(50.0)
    assert result["psnr_db"] == pytest.approx(10 * np.log10(4024**2 / 2500))
    assert abs(result["ssim"] - official_ssim(sct, ct, mask)[0]) <= 1e-6
    assert abs(result["ms_ssim"] - official_ms_ssim(sct, ct, mask)) <= 1e-6
    bone_sct, bone_ct = (sct >= 250) & (mask > 0), (ct >= 250) & (mask > 0)
    assert result["dice_bone_250hu"] == pytest.approx(2 * (bone_sct & bone_ct).sum() / (bone_sct.sum() + bone_ct.sum()))
    assert "dice_bone_600hu" in result
    regions = {r["region"]: r for r in result["regions"]}
    assert {"body", "air", "soft_tissue", "bone", "skull", "brain"} <= set(regions)
    assert regions["skull"]["me_hu"] == pytest.approx(50.0) and regions["skull"]["sd_hu"] == pytest.approx(0.0)


def test_evaluate_predictions_tables_figures_and_refusal(dataset):
    root, rows = dataset
    out = root / "eval"
    summary = evaluate_predictions(manifest_rows=rows, prediction_dir=root / "perfect", model_name="perfect",
                                   methods={"offset": root / "offset"}, output_dir=out, n_figure_subjects=1,
                                   label_names={1: "skull", 2: "brain"}, progress=False)
    assert list(dict.fromkeys(summary["method"])) == ["perfect", "offset"]

    def value(method, metric, region="body", stat="mean"):
        return summary_value(summary, method=method, metric=metric, region=region, stat=stat)

    assert value("offset", "mae_hu", stat="n") == 2
    assert value("offset", "mae_hu") == pytest.approx(50.0) and value("offset", "mae_hu", stat="sd") == pytest.approx(0.0)
    assert value("perfect", "mae_hu") == 0.0 and value("perfect", "ssim") == pytest.approx(1.0)
    assert value("perfect", "dice_bone_250hu") == pytest.approx(1.0)

    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(results.columns) == ["method", "subject_id", "image_id", "region", "metric", "value"]
    body_mae = results[(results["region"] == "body") & (results["metric"] == "mae_hu")]
    assert len(body_mae) == 4 and set(body_mae["subject_id"]) == {"1BP001", "1BP002"}
    skull = results[(results["method"] == "offset") & (results["region"] == "skull") & (results["metric"] == "me_hu")]
    assert len(skull) == 2 and np.allclose(skull["value"].astype(float), 50.0)
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), summary, check_dtype=False, atol=1e-4)

    markdown = (out / "summary.md").read_text()
    assert "| offset | 2 | 50.0 ± 0.0 | 50.0 ± 0.0 |" in markdown
    assert "## Whole body mask" in markdown and "## soft tissue" in markdown and "## skull" in markdown

    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["figures/offset/1BP001_hu_hist.png", "figures/offset/1BP001_slices.png",
                    "figures/perfect/1BP001_hu_hist.png", "figures/perfect/1BP001_slices.png", "figures/region_mae.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    before = (out / "results.csv").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        evaluate_predictions(manifest_rows=rows, methods={"offset": root / "offset"}, output_dir=out, progress=False)
    assert (out / "results.csv").read_bytes() == before
    evaluate_predictions(manifest_rows=rows, methods={"offset": root / "offset"}, output_dir=out, progress=False,
                         n_figure_subjects=0, overwrite=True)
    assert set(pd.read_csv(out / "results.csv")["method"]) == {"offset"}
    assert not list(out.glob("**/.*tmp*"))  # atomic writes leave no temporaries


def test_missing_prediction_and_grid_mismatch_name_the_subject(dataset):
    root, rows = dataset
    (root / "perfect" / "1BP002" / "sct.nii.gz").unlink()
    with pytest.raises(InputError, match="1BP002: no sCT prediction"):
        evaluate_predictions(manifest_rows=rows, prediction_dir=root / "perfect", output_dir=root / "e1", progress=False)
    assert not (root / "e1").exists()

    ct = nib.load(rows[0]["ct"]).get_fdata().astype(np.int16)
    moved = AFFINE.copy()
    moved[2, 3] += 5.0
    _save(ct, root / "offset" / "1BP001_sct.nii.gz", affine=moved)
    with pytest.raises(ValueError, match=r"1BP001: ct \(ct.nii.gz\) and offset sCT \(1BP001_sct.nii.gz\) are not on the same grid: origin"):
        evaluate_predictions(manifest_rows=rows[:1], methods={"offset": root / "offset"}, output_dir=root / "e2",
                             progress=False)
    nan_sct = ct.astype(np.float32)
    nan_sct[3, 3, 3] = np.nan
    _save(nan_sct, root / "offset" / "1BP001_sct.nii.gz")
    with pytest.raises(ValueError, match="1BP001: offset sCT: sCT contains 1 NaN"):
        evaluate_predictions(manifest_rows=rows[:1], methods={"offset": root / "offset"}, output_dir=root / "e3",
                             progress=False)


def test_run_evaluation_with_baselines(dataset):
    from pipeline.data.manifest import find_subjects, write_manifest

    root, rows = dataset
    table = find_subjects(root / "data")
    table["split"] = ["test", "train"]  # 1BP001 evaluated, 1BP002 fits the tissue lookup
    manifest = write_manifest(table, root / "manifest.csv")

    out = root / "run"
    summary = run_evaluation(manifest=str(manifest), prediction_dir=str(root / "perfect"), output_dir=str(out),
                             progress=False)
    assert list(dict.fromkeys(summary["method"])) == ["pix2pix", "bulk_density", "tissue_lookup"]
    mae = {m: summary_value(summary, method=m, metric="mae_hu", region="body") for m in ("bulk_density", "tissue_lookup")}
    ct = nib.load(rows[0]["ct"]).get_fdata()
    mask = nib.load(rows[0]["mask"]).get_fdata() > 0
    assert mae["bulk_density"] == pytest.approx(np.abs(ct[mask]).mean(), abs=1e-4)
    # intensity classes separate brain from dark skull/air here, so the lookup must beat bulk density
    assert mae["tissue_lookup"] < mae["bulk_density"]

    written = nib.load(out / "baselines" / "tissue_lookup" / "1BP001" / "sct.nii.gz")
    assert written.get_data_dtype() == np.int16
    np.testing.assert_allclose(written.affine, nib.load(rows[0]["mr"]).affine)
    assert (out / "baselines" / "tissue_lookup.json").exists()
    with pytest.raises(FileExistsError):
        run_evaluation(manifest=str(manifest), prediction_dir=str(root / "perfect"), output_dir=str(out), progress=False)


def test_uncertainty_map_beside_the_sct_gives_spearman_rows(dataset):
    """A 'noisy' method whose error grows along x, with std maps: one that ranks the error (rho 1 in the
    body) beside the flat-layout sCTs; a method without maps gets no such rows."""
    root, rows = dataset
    x = np.linspace(0, 1, SHAPE[0])[:, None, None] * np.ones(SHAPE)
    for row in rows:
        sid = row["subject_id"]
        ct = nib.load(row["ct"]).get_fdata()
        mask = nib.load(row["mask"]).get_fdata()
        (root / "noisy" / sid).mkdir(parents=True)
        _save(np.rint(ct + 300 * x * mask).astype(np.int16), root / "noisy" / sid / "sct.nii.gz")
        _save((np.sqrt(300 * x) * mask).astype(np.float32), root / "noisy" / sid / "sct_std.nii.gz")  # monotone in |error|
    evaluate_predictions(manifest_rows=rows, methods={"noisy": root / "noisy", "offset": root / "offset"},
                         output_dir=root / "eval_std", n_figure_subjects=1, progress=False)
    results = pd.read_csv(root / "eval_std" / "results.csv", keep_default_na=False)
    rho = results[results["metric"] == "spearman_std_abs_error"]
    assert set(rho["method"]) == {"noisy"} and set(rho["subject_id"]) == {"1BP001", "1BP002"}
    assert set(rho["region"]) == {"body", "air", "soft_tissue", "bone"}
    body = rho[rho["region"] == "body"]["value"].astype(float)
    assert np.all(body > 0.99)
    from PIL import Image  # the slices figure of a method with a map has the std column (5 columns with MR)

    with Image.open(root / "eval_std" / "figures" / "noisy" / "1BP001_slices.png") as with_std, \
            Image.open(root / "eval_std" / "figures" / "offset" / "1BP001_slices.png") as without:
        assert with_std.size[0] > without.size[0]
