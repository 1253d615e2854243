"""Tests for pipeline.data.manifest and scripts.make_manifest (tiny NIfTI files written on the fly)."""

from __future__ import annotations

import os
import zlib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.data.manifest import (
    assign_splits,
    find_subjects,
    load_split,
    parse_subject_id,
    read_manifest,
    subject_splits,
    validate_manifest,
    write_manifest,
)
from pipeline.errors import InputError
from scripts.make_manifest import main as make_manifest_main

SHAPE = (8, 8, 6)
AFFINE = np.diag([-1.0, -1.0, 2.0, 1.0])


def write_subject(root, subject_id, *, roles=("mr", "ct", "mask"), shape=SHAPE, affine=AFFINE, suffix=".nii.gz"):
    folder = root / subject_id
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(subject_id.encode()))  # distinct files per subject: identical ones are a leak
    for role in roles:
        data = (rng.integers(0, 2, shape) if role == "mask" else rng.normal(size=shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, affine), folder / f"{role}{suffix}")
    return folder


def make_dataset(root, ids):
    for subject_id in ids:
        write_subject(root, subject_id)
    return root


def ids(centre, n, region="B"):
    return [f"1{region}{centre}{i:03d}" for i in range(1, n + 1)]


def frame(subject_ids):
    return pd.DataFrame([{"subject_id": s, **parse_subject_id(s)} for s in subject_ids])


def test_parse_subject_id():
    assert parse_subject_id("1BA001") == {"centre": "A", "region": "B"}
    assert parse_subject_id("1HNC012") == {"centre": "C", "region": "HN"}  # SynthRAD2025 style
    assert parse_subject_id("patient7") == {"centre": None, "region": None}


def test_find_subjects_scans_layout_and_skips_other_folders(tmp_path):
    root = make_dataset(tmp_path / "Task1" / "brain", ["1BA002", "1BA001"])
    write_subject(root, "1BC001", roles=("mr",), suffix=".nii")  # inference-only subject
    (root / "overview").mkdir()  # the real dataset has one; it holds no volumes
    (root / "overview" / "1BA001_train.png").write_bytes(b"png")
    df = find_subjects(root)
    assert df["subject_id"].tolist() == ["1BA001", "1BA002", "1BC001"]
    assert df["centre"].tolist() == ["A", "A", "C"] and set(df["region"]) == {"B"}
    row = df.set_index("subject_id").loc["1BC001"]
    assert row["mr"] == str(root.absolute() / "1BC001" / "mr.nii") and row["ct"] is None and row["mask"] is None

    write_subject(root, "1BA002", roles=("mr",), suffix=".nii")  # now mr.nii.gz and mr.nii
    with pytest.raises(InputError, match=r"^1BA002: 2 mr files \(mr\.nii\.gz, mr\.nii\)"):
        find_subjects(root)
    with pytest.raises(InputError, match="does not exist"):
        find_subjects(tmp_path / "nowhere")


def test_splits_are_deterministic_disjoint_and_stratified():
    df = frame(ids("A", 12) + ids("B", 6) + ids("C", 4))
    a = assign_splits(df, val_fraction=0.2, test_fraction=0.2, seed=3)
    b = assign_splits(df.iloc[::-1], val_fraction=0.2, test_fraction=0.2, seed=3)  # row order irrelevant
    c = assign_splits(df, val_fraction=0.2, test_fraction=0.2, seed=4)
    split_a = dict(zip(a.subject_id, a.split))
    assert split_a == dict(zip(b.subject_id, b.split))
    assert split_a != dict(zip(c.subject_id, c.split))
    assert len(split_a) == len(df) and set(split_a.values()) == {"train", "val", "test"}
    counts = a.split.value_counts()
    assert (counts["val"], counts["test"]) == (4, 4)  # round(0.2 * 22)
    # "auto" stratifies by centre: every centre is in every split
    assert all(set(group.split) == {"train", "val", "test"} for _, group in a.groupby("centre"))
    # the largest centre gets the largest share
    assert (a[a.centre == "A"].split != "train").sum() > (a[a.centre == "C"].split != "train").sum()


def test_stratify_none_and_unknown_column():
    df = frame(ids("A", 10) + ids("B", 2))
    plain = assign_splits(df, val_fraction=0.1, test_fraction=0.1, seed=0, stratify=None)
    assert set(plain.split) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="no such column"):
        assign_splits(df, stratify="scanner")
    with pytest.raises(ValueError, match="< 1"):
        assign_splits(df, val_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_small_n_gets_val_and_test_from_three_subjects(n):
    df = assign_splits(frame(ids("A", n)), val_fraction=0.1, test_fraction=0.1, seed=0)
    counts = df.split.value_counts()
    assert counts.get("train", 0) >= 1
    if n >= 3:
        assert counts.get("val", 0) == 1 and counts.get("test", 0) == 1
    else:
        assert counts.get("train", 0) == n


def test_many_centres_of_one_subject_still_give_val_and_test():
    df = assign_splits(frame(["1BA001", "1BB001", "1BC001"]), val_fraction=0.1, test_fraction=0.1, seed=0)
    assert sorted(df.split) == ["test", "train", "val"]


def test_manifest_paths_are_relative_on_disk_and_absolute_when_read(tmp_path):
    root = make_dataset(tmp_path / "project" / "data" / "brain", ids("A", 4))
    df = assign_splits(find_subjects(root), val_fraction=0.25, test_fraction=0.25, seed=0)
    write_manifest(df, tmp_path / "project" / "manifests" / "brain.csv")
    on_disk = pd.read_csv(tmp_path / "project" / "manifests" / "brain.csv", dtype=str)
    assert list(on_disk.columns) == ["subject_id", "mr", "ct", "mask", "split", "centre", "region"]
    assert on_disk.loc[0, "mr"] == "../data/brain/1BA001/mr.nii.gz"

    # moving data and manifests together keeps the manifest valid
    os.rename(tmp_path / "project", tmp_path / "moved")
    manifest = tmp_path / "moved" / "manifests" / "brain.csv"
    back = read_manifest(manifest)
    assert back.loc[0, "mr"] == str(tmp_path.absolute() / "moved" / "data" / "brain" / "1BA001" / "mr.nii.gz")
    assert os.path.isabs(back.loc[0, "ct"]) and os.path.isfile(back.loc[0, "ct"])
    assert validate_manifest(back, progress=False) == {}

    records = load_split(manifest, "val")
    assert len(records) == 1 and set(records[0]) == {"subject_id", "mr", "ct", "mask"}
    assert all(os.path.isfile(records[0][k]) for k in ("mr", "ct", "mask"))
    with pytest.raises(FileExistsError):
        write_manifest(df, manifest)
    write_manifest(df, manifest, overwrite=True)


def test_load_split_omits_absent_files(tmp_path):
    root = tmp_path / "data"
    write_subject(root, "1BA001", roles=("mr",))
    write_subject(root, "1BA002", roles=("mr", "mask"))
    df = find_subjects(root).assign(split="test")
    manifest = write_manifest(df, tmp_path / "m.csv")
    assert ",,," not in manifest.read_text().splitlines()[0]
    records = {r["subject_id"]: r for r in load_split(manifest, "test")}
    assert set(records["1BA001"]) == {"subject_id", "mr"}
    assert set(records["1BA002"]) == {"subject_id", "mr", "mask"}
    assert read_manifest(manifest).set_index("subject_id").loc["1BA001", "ct"] is None
    with pytest.raises(ValueError, match="no subjects in split 'train'"):
        load_split(manifest, "train")


def test_read_manifest_rejects_duplicate_subjects(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject_id,mr,split\n1BA001,a/mr.nii.gz,train\n1BA002,b/mr.nii.gz,val\n"
                        "1BA001,a/mr.nii.gz,test\n")
    with pytest.raises(InputError, match=r"^1BA001: listed 2 times in m\.csv \(splits: train, test\)"):
        read_manifest(manifest)
    manifest.write_text("subject_id,mr,split\n1BA001,a/mr.nii.gz,train\n1BA001,a/mr.nii.gz,train\n")
    with pytest.raises(InputError, match=r"^1BA001: listed 2 times"):
        read_manifest(manifest)
    manifest.write_text("subject_id,mr,split\n1BA001,a/mr.nii.gz,training\n")
    with pytest.raises(InputError, match=r"^1BA001: split 'training'"):
        read_manifest(manifest)
    df = pd.DataFrame({"subject_id": ["1BA001", "1BA001"], "mr": ["x", "y"], "split": ["train", "val"]})
    with pytest.raises(InputError, match="listed 2 times"):
        write_manifest(df, tmp_path / "dup.csv")
    assert not (tmp_path / "dup.csv").exists()


def test_validate_manifest_reports_missing_corrupt_and_mismatched_subjects(tmp_path):
    root = make_dataset(tmp_path / "data", ids("A", 6))
    (root / "1BA002" / "ct.nii.gz").unlink()  # missing CT while others have one
    (root / "1BA003" / "mask.nii.gz").write_bytes(np.random.default_rng(0).bytes(500))  # garbage
    write_subject(root, "1BA004", roles=("ct",), shape=(8, 8, 7))  # different shape
    write_subject(root, "1BA005", roles=("mask",), affine=np.diag([1.0, -1.0, 2.0, 1.0]))  # flipped x
    df = find_subjects(root)
    os.remove(df.loc[df.subject_id == "1BA006", "mr"].item())  # listed, then deleted
    problems = validate_manifest(df, progress=False)
    assert set(problems) == {"1BA002", "1BA003", "1BA004", "1BA005", "1BA006"}
    assert "no ct file" in problems["1BA002"][0]
    assert problems["1BA003"][0].startswith("1BA003: mask.nii.gz unreadable")
    assert "shape (8, 8, 6) vs (8, 8, 7)" in problems["1BA004"][0]
    assert "orientation LPS vs RPS" in problems["1BA005"][0]
    assert problems["1BA006"][0].startswith("1BA006: mr.nii.gz missing")


def test_cli_writes_manifest_and_fails_naming_the_subject(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", ids("A", 4) + ids("B", 4))
    out = tmp_path / "manifests" / "brain.csv"
    assert make_manifest_main(["--root", str(root), "--out", str(out), "--no-progress"]) == 0
    df = read_manifest(out)
    assert len(df) == 8 and set(df.split) == {"train", "val", "test"}
    assert all(set(g.split) >= {"train"} for _, g in df.groupby("centre"))
    assert make_manifest_main(["--check-only", str(out), "--no-progress"]) == 0
    assert make_manifest_main(["--root", str(root), "--out", str(out), "--no-progress"]) == 1  # exists
    assert "exists" in capsys.readouterr().err

    write_subject(root, "1BB003", roles=("ct",), affine=np.diag([-1.0, -1.0, 2.5, 1.0]))
    bad_out = tmp_path / "manifests" / "bad.csv"
    assert make_manifest_main(["--root", str(root), "--out", str(bad_out), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "1BB003: mr (mr.nii.gz) and ct (ct.nii.gz) are not on the same grid" in err
    assert not bad_out.exists()
    assert make_manifest_main(["--check-only", str(out), "--no-progress"]) == 1  # the old manifest now fails
    assert "1BB003" in capsys.readouterr().err
    assert make_manifest_main(["--root", str(root), "--out", str(bad_out), "--allow-problems", "--no-progress"]) == 1
    assert len(read_manifest(bad_out)) == 8


def test_subject_splits_by_subject_is_deterministic():
    ids = [f"S{i:02d}" for i in range(10)]
    splits = subject_splits(ids + ids[:3], seed=1)
    assert set(splits) == set(ids)
    assert sorted(splits.values()).count("train") == 8 and list(splits.values()).count("test") == 1
    assert subject_splits(ids, seed=1) == splits
    assert set(subject_splits(["only"]).values()) == {"train"}



def _volume(path, data, affine=np.diag([2.0, 2.0, 2.5, 1.0])):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    nib.save(img, path)
    return str(path)


def test_train_subject_without_ct_and_files_shared_across_splits_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for index, split in enumerate(["train", "train", "val", "test"]):
        sid = f"1BA00{index + 1}"
        rows.append({"subject_id": sid, "split": split,
                     "mr": _volume(tmp_path / sid / "mr.nii.gz", rng.uniform(0, 100, (6, 6, 4)).astype(np.float32)),
                     "ct": _volume(tmp_path / sid / "ct.nii.gz", rng.uniform(-1000, 1000, (6, 6, 4)).astype(np.float32))})
    rows[1]["ct"] = None  # a training subject without CT
    rows[3]["mr"] = rows[0]["mr"]  # the test subject is a training subject's MR under another ID
    rows[3]["ct"] = rows[0]["ct"]
    problems = validate_manifest(pd.DataFrame(rows), progress=False)
    assert any("no ct file, but the subject is in the train split" in p for p in problems["1BA002"])
    leak = [p for p in problems["1BA004"] if "identical file listed under subjects in different splits" in p]
    assert leak and "1BA001 (train" in leak[0] and "1BA004 (test" in leak[0]
    assert any("different splits" in p for p in problems["1BA001"])
    assert "1BA003" not in problems
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    with pytest.raises(InputError, match="1BA002: no ct file .* train split"):
        load_split(manifest, "train")
