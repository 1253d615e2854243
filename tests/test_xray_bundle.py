"""The xray_dual_energy bundle (SE -> DE Pix2Pix) run as users run it, plus its data/metric helpers, and
the README's 2-D image-pair workflow (MR/CT slices as PNG and JPEG, grey and RGB) run from its own commands.

Tiny data: 2 tiny phantoms x 3 projections on a 32 x 32 detector (one CT for training, one held out);
5 tiny head phantoms x 2 slices of 64 x 64 for the image pairs.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bundle_runner import REPO, bundle_error_line, read_events, readme_commands, run_command
from bundle_runner import run_bundle as run_bundle_config
from networks import BoneSubtractionUNet, Pix2PixUNet
from pipeline.io.images2d import load_image_2d
from pipeline.xray.data import load_records
from pipeline.xray.inference import DEPredictor

CONFIGS = REPO / "bundles" / "xray_dual_energy" / "configs"
NET = ["--num_downs", "4", "--base_channels", "8"]
# the bundle trains L1-only by default (0.3.0); the adversarial path is exercised from the first iteration
TINY = [*NET, "--batch_size", "2", "--val_interval", "1", "--amp", "false", "--adversarial_start_fraction", "0"]


def run_bundle(config: str, *args: str) -> str:
    return run_bundle_config(str(CONFIGS / config), *args)


@pytest.fixture(scope="module")
def drr(tmp_path_factory) -> Path:
    from pipeline.data.phantoms.head import write_phantom_dataset
    from pipeline.xray.drr_dataset import DRRDatasetConfig, build_drr_dataset

    root = tmp_path_factory.mktemp("xray")
    write_phantom_dataset(root / "phantoms", n=2, size="tiny")
    config = DRRDatasetConfig(projections_per_ct=3, detector_size=32, val_fraction=0.5, test_fraction=0.0)
    build_drr_dataset(root / "phantoms", root / "drr", config=config, progress=False)
    return root / "drr"


def test_train_infer_evaluate(drr: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_bundle("train.json", "--dataset", str(drr), "--output_dir", str(out), "--epochs", "2", "--epoch_length", "2", *TINY)

    scalars, images = read_events(out / "tensorboard")
    for tag in ("G_l1", "G_adversarial", "D_real", "D_fake", "val_mae", "val_mae_de_soft", "val_mae_de_bone"):
        assert any(t.endswith(tag) for t in scalars), (tag, scalars)
    assert "validation/se|pred de_soft|true de_soft|pred de_bone|true de_bone" in images
    checkpoint = torch.load(out / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 4
    assert set(torch.load(out / "models" / "model.pt", weights_only=True)) == set(checkpoint["generator"])
    card = json.loads((out / "models" / "xray_model.json").read_text())
    assert card["target_keys"] == ["de_soft", "de_bone"]
    assert card["network"] == {"num_downs": 4, "base_channels": 8, "upsample": "resize", "attention": False,
                               "norm": "instance", "soft_output": "direct", "dropout": 0.0}
    se_max = max(load_image_2d(r["se"]).max() for r in load_records(drr, keys=["se"], split="train"))
    assert card["windows"]["image"][0] <= 0.0 < se_max < card["windows"]["image"][1]

    log = run_bundle("train.json", "--dataset", str(drr), "--output_dir", str(out), "--epochs", "3", "--epoch_length", "2", *TINY)
    assert "resuming from" in log
    assert torch.load(out / "checkpoints" / "latest.pt", weights_only=True)["trainer"]["iteration"] == 6

    infer = ["--input", str(drr), "--split", "val", "--output_dir", str(out)]  # network settings: from the card
    run_bundle("inference.json", *infer, "--formats", "['nii.gz','png']", "--png_scale", "0.0002")
    refused = bundle_error_line(str(CONFIGS / "inference.json"), *infer, "--num_downs", "5", "--prediction_dir",
                                str(tmp_path / "other"))  # one clear line, not a state-dict page
    assert refused.startswith("error: num_downs = 5 was asked for, but the model was trained with num_downs = 4")
    assert not (tmp_path / "other").exists()
    held_out = load_records(drr, keys=["se", "de_soft", "de_bone"], split="val")
    for record in held_out:
        for key in ("de_soft", "de_bone"):
            nifti = nib.load(out / "predictions" / key / f"{record['image_id']}.nii.gz")
            assert nifti.get_data_dtype() == np.float32 and nifti.shape == (32, 32)
            # pixel spacing carried over from the SE image
            assert np.allclose(nifti.header.get_zooms()[:2], nib.load(record["se"]).header.get_zooms()[:2])
            # same units as the inputs: inside the model card's target window, not in [-1, 1] network units
            values = np.asarray(nifti.dataobj)
            lo, hi = card["windows"]["target"]
            assert lo - 1e-4 <= values.min() and values.max() <= hi + 1e-4 and values.max() > 1.0
            png = load_image_2d(out / "predictions" / key / f"{record['image_id']}.png", png_scale=2e-4)[0]
            assert np.abs(png - np.clip(values, 0, None)).max() <= 1.01e-4
    before = (out / "predictions" / "predictions.csv").stat().st_mtime_ns
    predictor = DEPredictor(generator=Pix2PixUNet(spatial_dims=2, in_channels=1, out_channels=2, num_downs=4,
                                                  base_channels=8, upsample="resize"), divisor=16)
    predictor.load_weights(out / "models" / "model.pt")
    with pytest.raises(FileExistsError, match="exist"):  # no silent overwrite, checked before predicting
        predictor.predict_inputs(drr, output_dir=out / "predictions", split="val")
    assert (out / "predictions" / "predictions.csv").stat().st_mtime_ns == before

    run_bundle("evaluate.json", "--dataset", str(drr), "--split", "val", "--output_dir", str(out))
    evaluation = out / "evaluation"
    results = pd.read_csv(evaluation / "results.csv", keep_default_na=False)
    assert set(results["method"]) == {"pix2pix", "se_scaled"}
    mae_soft = results[(results["metric"] == "mae") & (results["region"] == "de_soft")]
    assert len(mae_soft) == 2 * len(held_out) and mae_soft["image_id"].str.len().min() > 0
    leak_se = results[results["metric"] == "bone_leak_se"]["value"].astype(float)
    assert len(leak_se) == 2 * len(held_out) and np.allclose(leak_se, 1.0, atol=1e-3)  # SE = soft + bone (120 kVp)
    summary = pd.read_csv(evaluation / "summary.csv")
    for region, metric in (("de_soft", "mae"), ("de_bone", "psnr"), ("de_soft", "ssim"), ("de_soft", "bone_leak"),
                           ("de_soft", "soft_bone_corr")):
        assert ((summary["region"] == region) & (summary["metric"] == metric)).sum() == 2  # both methods
    markdown = (evaluation / "summary.md").read_text()
    assert "## de soft" in markdown and "| se_scaled |" in markdown
    with Image.open(evaluation / "figure.png") as figure:
        assert figure.width > 500 and figure.height > 150


def test_soft_output_se_minus_bone_trains_and_infers_from_the_card(drr: Path, tmp_path: Path) -> None:
    from pipeline.xray.data import read_windows

    out = tmp_path / "run"
    run_bundle("train.json", "--dataset", str(drr), "--output_dir", str(out), "--epochs", "1", "--epoch_length", "2",
               "--soft_output", "se_minus_bone", *TINY)
    card = json.loads((out / "models" / "xray_model.json").read_text())
    assert card["network"]["soft_output"] == "se_minus_bone"
    infer = ["--input", str(drr), "--split", "val", "--output_dir", str(out)]
    refused = bundle_error_line(str(CONFIGS / "inference.json"), *infer, "--soft_output", "direct",
                                "--prediction_dir", str(tmp_path / "other"))
    assert refused.startswith("error: soft_output = 'direct' was asked for, but the model was trained with "
                              "soft_output = 'se_minus_bone'")
    run_bundle("inference.json", *infer)  # the generator from the card: the subtraction included
    windows = read_windows(card)
    generator = BoneSubtractionUNet(input_window=windows["image"].as_list(), target_window=windows["target"].as_list(),
                                    num_downs=4, base_channels=8, upsample="resize", dropout=0.0)
    generator.load_state_dict(torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True))
    for record in load_records(drr, keys=["se"], split="val"):
        se = torch.from_numpy(windows["image"].to_unit(load_image_2d(record["se"])[None].astype(np.float32)))
        with torch.no_grad():  # inference's default flip TTA: the mean of the image's and its mirror's predictions
            unit = (generator.eval()(se) + generator(se.flip(-1)).flip(-1)) / 2
            expected = windows["target"].from_unit(unit[0]).numpy()
        for channel, key in enumerate(("de_soft", "de_bone")):
            written = np.asarray(nib.load(out / "predictions" / key / f"{record['image_id']}.nii.gz").dataobj)
            assert np.allclose(written, expected[channel], atol=1e-4), key
    bad = bundle_error_line(str(CONFIGS / "train.json"), "--dataset", str(drr), "--output_dir", str(tmp_path / "bad"),
                            "--soft_output", "bone", *TINY)
    assert bad == "error: soft_output must be one of direct, se_minus_bone, se_minus_bone_detail, got 'bone'"


def test_time_budget_stops_the_run_and_validates_at_the_end(drr: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # 3 s of training against 1000 epochs x 50 iterations asked for, interval validation never due: the
    # only validation is the budget's final one, which must still write models/model.pt
    log = run_bundle("train.json", "--dataset", str(drr), "--output_dir", str(out), "--epochs", "1000",
                     "--epoch_length", "50", "--max_minutes", "0.05", "--adversarial_start_fraction", "0.5",
                     "--val_interval", "1000", *NET, "--batch_size", "2", "--amp", "false")
    assert "time budget of 0.1 min spent" in log
    checkpoint = torch.load(out / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert checkpoint["progress"]["elapsed_seconds"] >= 3.0
    assert 0 < checkpoint["trainer"]["iteration"] < 1000 * 50
    assert (out / "models" / "model.pt").is_file()
    scalars, _ = read_events(out / "tensorboard")
    assert any(t.endswith("val_mae_de_soft") for t in scalars), scalars


def test_a_patch_size_the_u_net_cannot_halve_is_one_line_before_training(drr: Path, tmp_path: Path) -> None:
    last = bundle_error_line(str(CONFIGS / "train.json"), "--dataset", str(drr), "--output_dir", str(tmp_path / "run"),
                             *TINY, "--patch_size", "24")  # num_downs 4: 16 | 32
    assert last == ("error: patch_size 24 is not a multiple of 2 ** num_downs = 16 (the U-Net halves the window 4 "
                    "times): use e.g. --patch_size 32, or fewer --num_downs")
    assert not (tmp_path / "run" / "checkpoints").exists()


def _write_png_pairs(root: Path, n_subjects: int = 4, size: int = 32) -> None:
    """Fake 2-D brain MR/CT slices (8-bit MR, 16-bit CT) in ``root/{mr,ct}/``."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    for i in range(n_subjects):
        r = np.hypot(x, y)
        head = r < size * 0.4
        mr = np.where(head, 120 + 40 * rng.random((size, size)), 0).astype(np.uint8)
        ct = np.where(head, 1024 + 40, 0) + np.where((r > size * 0.33) & head, 1000, 0)
        for sub, array in (("mr", mr), ("ct", ct.astype(np.uint16))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / sub / f"BRAIN{i}_p000.png")


def test_png_mr_ct_pairs_train(tmp_path: Path) -> None:
    _write_png_pairs(tmp_path / "pairs")
    out = tmp_path / "run"
    run_bundle("train.json", "--dataset", str(tmp_path / "pairs"), "--output_dir", str(out), "--image_key", "mr",
               "--target_keys", "['ct']", "--val_fraction", "0.25", "--test_fraction", "0.25",
               "--epochs", "1", "--epoch_length", "2", *TINY)
    state = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state["output_block.1.1.weight"].shape[0] == 1  # resize-convolution (out, in, 3, 3): one channel, the CT
    assert json.loads((out / "models" / "xray_model.json").read_text())["image_key"] == "mr"


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_upsample_option_reaches_the_generator(config: str) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / config))
    # no dataset here: the windows (which only soft_output se_minus_bone reads) are not fitted
    parser.update({"upsample": "resize", "num_downs": 3, "base_channels": 4, "windows": None})
    generator = parser.get_parsed_content("generator_def" if config == "train.json" else "network_def")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in generator.modules())
    parser.update({"upsample": "transpose"})
    generator = parser.get_parsed_content("generator_def" if config == "train.json" else "network_def", lazy=False)
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in generator.modules())


def _mix_formats(pairs: Path) -> None:
    """Re-save every subject's first slice pair (``_p000``) as greyscale PNG; the rest stays RGB JPG."""
    for path in sorted(pairs.glob("*/*_p000.jpg")):
        with Image.open(path) as rgb:
            grey = rgb.convert("L")
        grey.save(path.with_suffix(".png"))
        path.unlink()


def test_readme_image_pair_commands_run_from_training_to_evaluation(tmp_path: Path) -> None:
    """The commands of the README's "2D image pairs" section, as written there, on a tiny folder: paths
    moved to tmp_path, 5 tiny phantoms x 2 slices of 64 x 64, 2 iterations of a small network. Each
    subject's first slice pair is re-saved as greyscale PNG and the second stays RGB JPG, so the folder
    mixes both formats and colour models. Inference must write only the test subjects' images, as 8-bit
    greyscale PNG; evaluation scores each of them; a colour image gives one error line and costs no other."""
    moved = {"data/phantoms": str(tmp_path / "phantoms"), "data/brain_pairs": str(tmp_path / "pairs"),
             "runs/brain_pairs": str(tmp_path / "run")}
    smaller = {"scripts.make_phantoms": ["--size", "tiny"], "scripts.make_image_pairs": ["--size", "64", "--slices", "2"]}
    commands = readme_commands("2D image pairs (e.g. the Kaggle brain MR/CT sets)")
    assert [c[:3] for c in commands] == [["python", "-m", "scripts.make_phantoms"], ["python", "-m", "scripts.make_image_pairs"],
                                         *[["python", "-m", "monai.bundle"]] * 3]
    for module, *args in (cmd[2:] for cmd in commands):
        args = [moved.get(a, a) for a in args]
        if module in smaller:  # the scripts run in this process: two interpreter start-ups fewer
            args = ["5" if a == "12" else a for a in args] + smaller[module]  # --n 12 -> 5 phantoms
            assert importlib.import_module(module).main(args) == 0
            if module == "scripts.make_image_pairs":
                _mix_formats(tmp_path / "pairs")
            continue
        if args[2].endswith("train.json"):
            args = args[: args.index("--max_minutes")] + ["--epochs", "1", "--epoch_length", "2", *TINY]
        else:
            args += NET
        run_command([sys.executable, "-m", module, *args])

    pairs, run = tmp_path / "pairs", tmp_path / "run"
    assert {p.suffix for p in pairs.glob("*/*")} == {".png", ".jpg"}
    tested = load_records(pairs, keys=["mr", "ct"], split="test")  # the training split's test subjects
    assert len({r["subject_id"] for r in tested}) == 1 and len(tested) == 2
    assert {Path(r["mr"]).suffix for r in tested} == {".png", ".jpg"}
    assert sorted(p.name for p in (run / "predictions" / "ct").iterdir()) == sorted(f"{r['image_id']}.png" for r in tested)
    for record in tested:
        with Image.open(run / "predictions" / "ct" / f"{record['image_id']}.png") as png:
            assert png.mode == "L" and png.size == (64, 64)  # 8-bit grey, the input's size
    results = pd.read_csv(run / "evaluation" / "results.csv", keep_default_na=False)
    ours = results[results["method"] == "pix2pix"]
    assert set(ours["region"]) == {"ct"} and set(ours["metric"]) == {"mae", "psnr", "ssim"}
    assert sorted(ours["image_id"].unique()) == sorted(r["image_id"] for r in tested)
    assert (run / "evaluation" / "figure.png").is_file() and "mr_scaled" in set(results["method"])

    colour = np.asarray(Image.open(pairs / "mr" / f"{tested[1]['image_id']}.jpg")).copy()
    colour[..., 0] = 255  # a red-tinted picture is not a greyscale scan
    Image.fromarray(colour).save(pairs / "mr" / f"{tested[1]['image_id']}.jpg")
    infer = commands[3][3:] + NET + ["--prediction_dir", str(tmp_path / "again")]
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *[moved.get(a, a) for a in infer]], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: 1 of 2 image(s) failed, the other 1 predictions were written: {tested[1]['subject_id']}: ")
    assert [p.name for p in (tmp_path / "again" / "ct").iterdir()] == [f"{tested[0]['image_id']}.png"]
