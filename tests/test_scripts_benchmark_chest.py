"""scripts.benchmark_chest's tables, from fake evaluation outputs (the benchmark itself trains for minutes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from scripts.benchmark_chest import RECIPES, build_parser, main, parse_overrides, result_rows, scores, write_markdown
from scripts.benchmark_common import cell
from scripts.chest_data import real_ct_list, relocated, reused_data, write_manifest
from scripts.quality_recipes import RECIPES as QUALITY_RECIPES
from tests.phantom_fixtures import labelled_chest_ct


def _results(path: Path, *, tumours: bool) -> Path:
    """A long results.csv as pipeline.xray.evaluation writes it: 2 images; 3 tumours (the last behind a rib);
    with ``tumours`` (phantoms) also the lung fields' leak, which DRR sets older than the lung path lack."""
    rows = []
    for method, psnr, leak in (("pix2pix", 30.0, 0.10), ("se_scaled", 26.0, 0.50)):
        for image, offset in (("2TP901_p000", 0.0), ("2TP901_p001", 2.0)):
            lung = (("bone_leak_lung", 0.05 + offset / 100),) if tumours else ()
            for metric, value in (("psnr", psnr + offset), ("ssim", 0.90), ("mae", 0.2), ("bone_leak", leak),
                                  ("soft_gain", 0.04), ("bone_leak_fine", 0.2), *lung):
                rows.append((method, "2TP901", image, "de_soft", metric, value))
            rows.append((method, "2TP901", image, "de_bone", "psnr", 99.0))  # another region: not in the table
            rows.append((method, "2TP901", image, "de_bone", "edge_gain", 0.7 + offset / 10))  # this one is
    if tumours:
        cnr = {"pix2pix": (1.0, 2.0, 3.0), "true_de_soft": (1.0, 1.0, 2.0), "se_scaled": (0.5, 3.0, 1.0)}
        for method, values in cnr.items():
            for k, value in enumerate(values):
                image = f"2TP901_p000/tumour{k + 1}"
                rows.append((method, "2TP901", image, "tumour", "cnr", value))
                if k == 2:
                    rows.append((method, "2TP901", image, "tumour_behind_rib", "cnr", value))
    pd.DataFrame(rows, columns=["method", "subject_id", "image_id", "region", "metric", "value"]).to_csv(path, index=False)
    return path


def test_scores_average_images_and_compare_tumour_cnr(tmp_path: Path):
    got = scores(_results(tmp_path / "results.csv", tumours=True))
    model, baseline = got["pix2pix"], got["se_scaled"]
    assert model["images"] == 2 and model["psnr"] == pytest.approx(31.0) and model["bone_leak"] == pytest.approx(0.1)
    assert model["bone_edge_gain"] == pytest.approx(0.8)
    assert model["tumours"] == 3 and model["tumours_behind_rib"] == 1
    assert model["cnr_pred"] == pytest.approx(2.0) and model["cnr_true"] == pytest.approx(4 / 3)
    assert model["cnr_se"] == pytest.approx(1.5) and model["cnr_ratio"] == pytest.approx(1.5)  # ratio of means
    assert model["pred_above_se"] == pytest.approx(2 / 3)
    assert model["cnr_pred_behind_rib"] == 3.0 and model["pred_above_se_behind_rib"] == 1.0
    assert baseline["cnr_pred"] == pytest.approx(1.5) and math.isnan(baseline["pred_above_se"])  # SE vs itself


def test_markdown_has_one_table_per_test_set_and_empty_cnr_without_tumour_labels(tmp_path: Path):
    rows = []
    for test_set, tumours in (("phantoms", True), ("real", False), ("real_unenhanced", False)):
        for recipe in ("transpose", "resize"):
            rows += result_rows(recipe, {"upsample": recipe}, test_set=test_set, minutes=20.0, train_minutes=20.4,
                                iterations=900, results_csv=_results(tmp_path / f"{test_set}.csv", tumours=tumours))
    table = pd.DataFrame(rows)
    assert list(table["recipe"]).count("se_scaled (baseline)") == 6  # one per recipe and set in the CSV ...
    text = write_markdown(table, tmp_path / "chest.md", command="python -m scripts.benchmark_chest",
                          details="details").read_text()
    assert text.startswith("Measured ") and "`python -m scripts.benchmark_chest`" in text
    phantoms, real, unenhanced = text.split("## real chest CT")
    assert unenhanced.startswith(" without its contrast agent") and "| issue 20's real-CT target, for reference |" in unenhanced
    assert "## held-out chest phantoms: 2 images, 3 tumour views (1 behind a rib)" in phantoms
    assert phantoms.count("| se_scaled (baseline) |") == 1  # ... and once per table
    resize = next(line for line in phantoms.splitlines() if line.startswith("| resize |"))
    assert "| 2.00 / 1.33 / 1.50 | 1.50 |" in resize and "| upsample=resize | 900 | 31.00 | 0.900 |" in resize
    assert "| 0.100 | 0.200 | 0.060 | +0.040 |" in resize  # leak: whole image, < 10 mm, lung fields
    real_resize = next(line for line in real.splitlines() if line.startswith("| resize |"))
    cells = [c.strip() for c in real_resize.strip("|").split("|")]
    assert cells[3] == "31.00" and cells[7:11] == ["0.200", "", "+0.040", "0.80"]  # metrics there (no lung path) ...
    assert cells[11:] == [""] * 5  # ... CNR columns empty
    assert "| target (issue 20) |" in real and "≤ 0.25" in real


def test_manifests_are_rebased_and_split(tmp_path: Path):
    trainval = tmp_path / "drr" / "trainval"
    trainval.mkdir(parents=True)
    pd.DataFrame({"subject_id": ["2TP001", "2TP002"], "se": ["se/a.nii.gz", "se/b.nii.gz"],
                  "tumour_mask": ["tumour_mask/a.nii.gz", "tumour_mask/b.nii.gz"], "split": ["train", "train"]}
                 ).to_csv(trainval / "manifest.csv", index=False)
    real = tmp_path / "drr" / "real"
    real.mkdir()
    pd.DataFrame({"subject_id": ["CXR001"], "se": ["se/c.nii.gz"], "split": ["train"]}).to_csv(
        real / "manifest.csv", index=False)
    root = tmp_path / "drr"
    parts = [relocated(trainval / "manifest.csv", root, {"2TP001": "train", "2TP002": "val"}),
             relocated(real / "manifest.csv", root, "test")]
    table = pd.read_csv(write_manifest(parts, root / "real.csv"), dtype=str, keep_default_na=False)
    assert list(table["se"]) == ["trainval/se/a.nii.gz", "trainval/se/b.nii.gz", "real/se/c.nii.gz"]
    assert list(table["split"]) == ["train", "val", "test"]
    assert list(table["tumour_mask"]) == ["trainval/tumour_mask/a.nii.gz", "trainval/tumour_mask/b.nii.gz", ""]
    # rebased again one folder down (the --real-variants manifests), the splits kept
    elsewhere = tmp_path / "drr_variants"
    elsewhere.mkdir()
    again = relocated(root / "real.csv", elsewhere, None)
    assert list(again["se"]) == [f"../drr/{p}" for p in table["se"]] and list(again["split"]) == list(table["split"])


def test_real_ct_list_separates_the_originals_from_their_deformed_variants(tmp_path: Path):
    for subject in ("CXR001", "CXR001-D01", "CXR001-D02"):
        (tmp_path / "cts" / subject).mkdir(parents=True)
        (tmp_path / "cts" / subject / "ct.nii.gz").write_bytes(b"")
    originals = pd.read_csv(real_ct_list(tmp_path / "cts", tmp_path / "a.csv"))
    variants = pd.read_csv(real_ct_list(tmp_path / "cts", tmp_path / "b.csv", variants=True))
    assert list(originals["subject_id"]) == ["CXR001"]
    assert sorted(variants["subject_id"]) == ["CXR001-D01", "CXR001-D02"]
    (tmp_path / "cts" / "CXR001-D01" / "ct.nii.gz").unlink()
    (tmp_path / "cts" / "CXR001-D02" / "ct.nii.gz").unlink()
    with pytest.raises(ValueError, match="no deformed variant"):
        real_ct_list(tmp_path / "cts", tmp_path / "c.csv", variants=True)


def test_reused_data_needs_both_manifests_of_an_earlier_run(tmp_path: Path):
    (tmp_path / "run" / "drr").mkdir(parents=True)
    (tmp_path / "run" / "drr" / "phantoms.csv").write_text("subject_id\n")
    with pytest.raises(FileNotFoundError, match="real.csv"):
        reused_data(tmp_path / "run")
    (tmp_path / "run" / "drr" / "real.csv").write_text("subject_id\n")
    assert reused_data(tmp_path / "run") == {"phantoms": tmp_path / "run" / "drr" / "phantoms.csv",
                                             "real": tmp_path / "run" / "drr" / "real.csv"}
    # a run that reused older DRRs rendered the real CT without contrast agent in a folder of its own
    (tmp_path / "run" / "drr_unenhanced").mkdir()
    (tmp_path / "run" / "drr_unenhanced" / "real_unenhanced.csv").write_text("subject_id\n")
    assert reused_data(tmp_path / "run")["real_unenhanced"] == tmp_path / "run" / "drr_unenhanced" / "real_unenhanced.csv"


@pytest.mark.parametrize("flag, bad_ranges, message", [
    ("--train-rib-density", (["1.5", "0.8"], ["0", "1"]), "needs 0 < LOW <= HIGH"),
    ("--train-extra-tumours", (["3", "1"], ["-1", "2"]), "needs whole numbers 0 <= LOW <= HIGH"),
])
def test_training_phantom_ranges_are_refused_in_one_line_before_anything_is_written(
        tmp_path: Path, capsys, flag: str, bad_ranges, message: str):
    for bad in bad_ranges:
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "run"), flag, *bad])
        assert f"{flag} LOW HIGH {message}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_training_phantom_defaults_are_the_measured_ones():
    args = build_parser().parse_args([])  # bundle docs, section 7
    assert args.train_rib_density == [0.8, 1.5] and args.train_extra_tumours == [2, 4]


def test_overrides_and_cells():
    assert parse_overrides(["num_downs=4", "upsample=resize"]) == {"num_downs": "4", "upsample": "resize"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["num_downs"])
    assert cell(float("nan")) == "" and cell(None) == "" and cell(0.1234, "{:.3f}") == "0.123"


@pytest.mark.parametrize("benchmark", ["chest", "quality"])
def test_every_recipe_overrides_a_key_of_its_bundle(benchmark: str):
    # a misspelt key would only show after a 20-minute race (the bundle CLI adds unknown keys silently)
    recipes, config = (RECIPES, "xray_dual_energy") if benchmark == "chest" else (QUALITY_RECIPES, "mri_to_ct")
    keys = set(json.loads(Path(f"bundles/{config}/configs/train.json").read_text()))
    unknown = {name: sorted(set(overrides) - keys) for name, overrides in recipes.items() if set(overrides) - keys}
    assert not unknown, unknown


def test_unenhanced_set_renders_the_real_ct_without_iodine_beside_the_training_rows(tmp_path: Path):
    import argparse

    import nibabel as nib
    import numpy as np

    from scripts.chest_data import unenhanced_set

    labelled_chest_ct(tmp_path / "cts" / "CXR007")
    (tmp_path / "cts" / "CXR007-D01").mkdir()  # a deformed variant: augmentation, not a test case
    (tmp_path / "drr").mkdir()
    real = tmp_path / "drr" / "real.csv"
    pd.DataFrame({"subject_id": ["2TP001", "CXR007"], "se": ["trainval/se/a.nii.gz", "real/se/b.nii.gz"],
                  "split": ["train", "test"]}).to_csv(real, index=False)
    args = argparse.Namespace(real_ct_dir=tmp_path / "cts", test_views=1, size=32, test_seed=5,
                              real_volume_spacing=None, workers=1)
    manifest, timing = unenhanced_set(real, tmp_path / "out", args=args, pitch=15.0)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    assert list(table["split"]) == ["train", "test"] and timing["pairs"] == 1
    assert table["se"].iloc[0] == "../drr/trainval/se/a.nii.gz"  # the real set's training rows, rebased
    assert table["subject_id"].iloc[1] == "CXR007" and (tmp_path / "out" / table["se"].iloc[1]).is_file()
    original = np.asarray(nib.load(tmp_path / "cts" / "CXR007" / "ct.nii.gz").dataobj)
    plain = np.asarray(nib.load(tmp_path / "out" / "real_unenhanced_ct" / "CXR007" / "ct.nii.gz").dataobj)
    assert (original > 150).sum() > (plain > 150).sum() > 0  # iodine gone, the skeleton kept
    assert not (tmp_path / "out" / "real_unenhanced_ct" / "CXR007-D01").exists()


def test_unenhanced_set_is_skipped_without_a_segmentation(tmp_path: Path, caplog):
    import argparse

    from scripts.chest_data import unenhanced_set

    (tmp_path / "cts" / "CXR001").mkdir(parents=True)
    (tmp_path / "cts" / "CXR001" / "ct.nii.gz").write_bytes(b"")
    (tmp_path / "cts" / "CXR002").mkdir()  # a segmentation that cannot be read: left out in one line
    for name in ("ct.nii.gz", "mask.nii.gz", "structures.csv"):
        (tmp_path / "cts" / "CXR002" / name).write_bytes(b"")
    args = argparse.Namespace(real_ct_dir=tmp_path / "cts", test_views=1, size=32, test_seed=5,
                              real_volume_spacing=None, workers=1)
    assert unenhanced_set(tmp_path / "real.csv", tmp_path / "out", args=args, pitch=15.0) is None
    assert "no real_unenhanced test set" in caplog.text and "left out of real_unenhanced: CXR002" in caplog.text
