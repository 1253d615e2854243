"""scripts.lung_field_figure: a figure from a fake benchmark run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import InputError
from pipeline.io.images2d import save_image_2d
from scripts.lung_field_figure import main, parse_models


def test_missing_inputs_are_named_in_one_error(tmp_path: Path):
    with pytest.raises(InputError, match="manifest.csv.*results.csv"):
        main(["--data", str(tmp_path), "--model", f"m={tmp_path / 'm'}", "--sets", "test", "--out", str(tmp_path / "f.png")])


def test_model_specs_need_a_label_and_a_folder():
    assert parse_models(["a=runs/x"]) == {"a": Path("runs/x")}
    with pytest.raises(SystemExit, match="LABEL=MODEL_DIR"):
        parse_models(["runs/x"])


def test_figure_from_a_fake_run(tmp_path: Path):
    rng = np.random.default_rng(1)
    folder, model = tmp_path / "run" / "drr" / "test", tmp_path / "run" / "recipe"
    lung = np.zeros((32, 32), np.float32)
    lung[6:26, 4:14] = lung[6:26, 18:28] = 80.0  # two lung fields, mm of lung per ray
    images = {"se": rng.normal(size=(32, 32)), "de_soft_noiseless": rng.normal(size=(32, 32)), "lung_path": lung}
    for key, image in images.items():
        save_image_2d(image.astype(np.float32), folder / key / "A_p000.nii.gz")
    save_image_2d(rng.normal(size=(32, 32)).astype(np.float32), model / "predictions_phantoms" / "de_soft" / "A_p000.nii.gz")
    pd.DataFrame({key: [f"{key}/A_p000.nii.gz"] for key in images}).assign(projection_id="A_p000").to_csv(
        folder / "manifest.csv", index=False)
    (model / "evaluation_phantoms").mkdir(parents=True)
    pd.DataFrame({"method": ["pix2pix", "se_scaled"], "metric": ["bone_leak_lung"] * 2, "value": [0.4, 0.9]}).to_csv(
        model / "evaluation_phantoms" / "results.csv", index=False)
    out = tmp_path / "figure.png"
    main(["--data", str(tmp_path / "run"), "--model", f"recipe={model}", "--sets", "test", "--out", str(out)])
    assert out.stat().st_size > 5000
