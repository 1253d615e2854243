"""Chest phantom files (pipeline/data/phantoms/chest_dataset.py) and the CLI: layout, headers, JSON,
no silent overwrite, montage."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.phantoms.chest import make_chest_subject
from pipeline.data.phantoms.chest_dataset import write_chest_dataset
from scripts.make_phantoms import main as make_phantoms_main


def main(argv):
    return make_phantoms_main(["--anatomy", "chest", *argv])


def test_written_subjects_round_trip(tmp_path):
    folders = write_chest_dataset(tmp_path, n=2, seed=7, size="tiny")
    assert [f.name for f in folders] == ["2TP001", "2TP002"]
    for folder in folders:
        ct, labels = nib.load(folder / "ct.nii.gz"), nib.load(folder / "tumours.nii.gz")
        assert ct.get_data_dtype() == np.int16 and labels.get_data_dtype() == np.uint8
        assert np.allclose(ct.affine, labels.affine) and nib.aff2axcodes(ct.affine) == ("L", "A", "S")
        assert int(ct.header["qform_code"]) == 1 and int(ct.header["sform_code"]) == 1
        info = json.loads((folder / "tumours.json").read_text())
        values = set(np.unique(np.asarray(labels.dataobj)).tolist())
        assert values == {0, *(t["label"] for t in info["tumours"])}
        assert 0.0 <= info["params"]["breath"] <= 1.0
    assert not list(tmp_path.rglob(".*tmp-*"))  # no temporary files left behind
    # Subject i does not depend on n: the first subject equals a fresh 1-subject dataset's.
    again = write_chest_dataset(tmp_path / "one", n=1, seed=7, size="tiny")[0]
    assert np.array_equal(np.asarray(nib.load(again / "ct.nii.gz").dataobj),
                          np.asarray(nib.load(folders[0] / "ct.nii.gz").dataobj))


def test_refuses_to_overwrite_and_cli(tmp_path, capsys):
    write_chest_dataset(tmp_path, n=1, size="tiny")
    with pytest.raises(FileExistsError, match="2TP001"):
        write_chest_dataset(tmp_path, n=1, size="tiny")
    assert main(["--out", str(tmp_path), "--n", "1", "--size", "tiny"]) == 2
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--n", "2", "--size", "tiny", "--seed", "1"]) == 0
    assert (out / "montage.png").stat().st_size > 1000 and (out / "2TP002" / "ct.nii.gz").exists()
    assert "per subject" in capsys.readouterr().out


def test_stored_ct_is_the_generated_one(tmp_path):
    folder = write_chest_dataset(tmp_path, n=1, seed=11, size="tiny")[0]
    seed = int(np.random.SeedSequence(11).spawn(1)[0].generate_state(1)[0])
    subject = make_chest_subject(seed=seed, size="tiny")
    assert np.array_equal(np.asarray(nib.load(folder / "ct.nii.gz").dataobj), subject.ct)


def test_forced_contrast_changes_only_the_contrast(tmp_path):
    drawn = write_chest_dataset(tmp_path / "drawn", n=2, seed=11, size="tiny")
    plain = write_chest_dataset(tmp_path / "plain", n=2, seed=11, size="tiny", contrast="none")
    for a, b in zip(drawn, plain):
        info_a, info_b = (json.loads((f / "tumours.json").read_text()) for f in (a, b))
        assert info_b["params"]["contrast"]["phase"] == "none"
        assert info_a["tumours"] == info_b["tumours"]  # the same anatomy
        ct_b = np.asarray(nib.load(b / "ct.nii.gz").dataobj)
        if info_a["params"]["contrast"]["phase"] == "none":
            assert np.array_equal(np.asarray(nib.load(a / "ct.nii.gz").dataobj), ct_b)


def test_cli_forces_the_contrast_of_chests_only(tmp_path):
    assert main(["--out", str(tmp_path / "c"), "--n", "1", "--size", "tiny", "--contrast", "arterial"]) == 0
    info = json.loads((tmp_path / "c" / "2TP001" / "tumours.json").read_text())
    assert info["params"]["contrast"]["phase"] == "arterial"
    with pytest.raises(SystemExit):
        make_phantoms_main(["--anatomy", "head", "--out", str(tmp_path / "h"), "--n", "1", "--contrast", "none"])


def test_cli_scales_the_ribs_of_chests_only(tmp_path):
    assert main(["--out", str(tmp_path / "c"), "--n", "1", "--size", "tiny", "--rib-density", "1.2", "1.4"]) == 0
    info = json.loads((tmp_path / "c" / "2TP001" / "tumours.json").read_text())
    assert 1.2 <= info["params"]["rib_density"] <= 1.4
    for bad in (["--rib-density", "1.4", "1.2"], ["--rib-density", "0", "1"]):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "d"), "--n", "1", "--size", "tiny", *bad])
    with pytest.raises(SystemExit):
        make_phantoms_main(["--anatomy", "head", "--out", str(tmp_path / "h"), "--n", "1", "--rib-density", "1", "1"])


def test_cli_adds_tumours_to_chests_only(tmp_path):
    assert main(["--out", str(tmp_path / "c"), "--n", "1", "--size", "tiny", "--extra-tumours", "2", "2"]) == 0
    info = json.loads((tmp_path / "c" / "2TP001" / "tumours.json").read_text())
    assert info["params"]["extra_tumours"] == 2 and len(info["tumours"]) >= 3
    for bad in (["--extra-tumours", "3", "1"], ["--extra-tumours", "-1", "1"]):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "d"), "--n", "1", "--size", "tiny", *bad])
    with pytest.raises(SystemExit):
        make_phantoms_main(["--anatomy", "head", "--out", str(tmp_path / "h"), "--n", "1", "--extra-tumours", "1", "1"])


def test_cli_first_id_numbers_a_held_out_set_with_the_seeds_anatomy(tmp_path):
    assert main(["--out", str(tmp_path / "a"), "--n", "1", "--size", "tiny", "--seed", "3"]) == 0
    assert main(["--out", str(tmp_path / "b"), "--n", "1", "--size", "tiny", "--seed", "3", "--first-id", "901"]) == 0
    assert [f.name for f in (tmp_path / "b").iterdir() if f.is_dir()] == ["2TP901"]
    assert np.array_equal(np.asarray(nib.load(tmp_path / "a" / "2TP001" / "ct.nii.gz").dataobj),
                          np.asarray(nib.load(tmp_path / "b" / "2TP901" / "ct.nii.gz").dataobj))
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--n", "1", "--size", "tiny", "--first-id", "0"])
