"""scripts.lung_field_figure: the panels of a fake benchmark run, the figure, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import InputError
from pipeline.io.images2d import save_image_2d
from pipeline.xray.image_measures import high_pass
from scripts.chest_data import TEST_SETS
from scripts.lung_field_figure import ROW_LABELS, main, parse_models, row_panels


def test_missing_inputs_are_named_in_one_error(tmp_path: Path):
    with pytest.raises(InputError, match="phantoms.csv.*results.csv"):
        main(["--data", str(tmp_path), "--model", f"m={tmp_path / 'm'}", "--sets", "phantoms", "--out", str(tmp_path / "f.png")])


def test_model_specs_need_a_label_and_a_folder():
    assert parse_models(["a=runs/x"]) == {"a": Path("runs/x")}
    with pytest.raises(SystemExit, match="LABEL=MODEL_DIR"):
        parse_models(["runs/x"])


def _fake_run(tmp_path: Path, test_set: str = "phantoms", folder: str = "drr",
              ) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A benchmark run with one training and one test image in ``<folder>/<test_set>.csv`` and one recipe folder."""
    rng = np.random.default_rng(1)
    run, model = tmp_path / "run", tmp_path / "run" / "recipe"
    lung = np.zeros((32, 32), np.float32)
    lung[6:26, 4:14] = lung[6:26, 18:28] = 80.0  # two lung fields, mm of lung per ray
    images = {"se": rng.normal(size=(32, 32)), "de_soft_noiseless": rng.normal(size=(32, 32)), "lung_path": lung,
              "pred": rng.normal(size=(32, 32))}
    rows = []
    for split, image_id in (("train", "A_p000"), ("test", "B_p000")):
        for key in ("se", "de_soft_noiseless", "lung_path"):
            # the training row gets other images: the panels must come from the test row
            image = images[key] if split == "test" or key == "lung_path" else rng.normal(size=(32, 32))
            save_image_2d(image.astype(np.float32), run / folder / split / key / f"{image_id}.nii.gz")
        rows.append({"projection_id": image_id, "split": split,
                     **{key: f"{split}/{key}/{image_id}.nii.gz" for key in ("se", "de_soft_noiseless", "lung_path")}})
    pd.DataFrame(rows).to_csv(run / folder / f"{test_set}.csv", index=False)
    save_image_2d(images["pred"].astype(np.float32), model / f"predictions_{test_set}" / "de_soft" / "B_p000.nii.gz")
    (model / f"evaluation_{test_set}").mkdir(parents=True)
    pd.DataFrame({"method": ["pix2pix", "pix2pix", "se_scaled"], "metric": ["bone_leak_lung"] * 3,
                  "value": [0.3, 0.5, 0.9]}).to_csv(model / f"evaluation_{test_set}" / "results.csv", index=False)
    return run, model, images


def test_panels_are_the_test_image_high_passed_with_the_models_mean_lung_leak(tmp_path: Path):
    run, model, images = _fake_run(tmp_path)
    lung, panels = row_panels(run, "phantoms", {"recipe": model}, index=0, sigma_px=2.0)
    assert lung.sum() == 2 * 20 * 10
    titles = [title for title, _ in panels]
    assert titles[:2] == ["SE", "true DE soft"] and "lung-field leak 0.40" in titles[2]  # pix2pix's mean, not SE's
    truth, pred = (high_pass(images[key].astype(np.float32), 2.0) for key in ("de_soft_noiseless", "pred"))
    np.testing.assert_allclose(panels[0][1], high_pass(images["se"].astype(np.float32), 2.0), atol=1e-5)
    np.testing.assert_allclose(panels[1][1], truth, atol=1e-5)
    np.testing.assert_allclose(panels[3][1], pred - truth, atol=1e-5)


def test_figure_from_a_fake_run_named_by_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_run(tmp_path)
    monkeypatch.chdir(tmp_path)  # as the docs' command: folders relative to the working directory
    out = tmp_path / "figure.png"
    main(["--data", "run", "--model", "recipe=run/recipe", "--sets", "phantoms", "--out", str(out)])
    assert out.stat().st_size > 5000


def test_the_unenhanced_set_of_a_run_that_reused_older_drrs_is_found_in_its_own_folder(tmp_path: Path):
    run, model, images = _fake_run(tmp_path, test_set="real_unenhanced", folder="drr_unenhanced")
    _, panels = row_panels(run, "real_unenhanced", {"recipe": model}, index=0, sigma_px=2.0)
    np.testing.assert_allclose(panels[0][1], high_pass(images["se"].astype(np.float32), 2.0), atol=1e-5)
    out = tmp_path / "figure.png"
    main(["--data", str(run), "--model", f"recipe={model}", "--sets", "real_unenhanced", "--out", str(out)])
    assert out.is_file()


def test_every_test_set_has_a_row_label():
    assert set(ROW_LABELS) == set(TEST_SETS)
