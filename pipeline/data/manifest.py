"""Dataset manifests: find subjects, split them, validate their files, read and write CSV manifests.

A manifest is a CSV with one row per subject (see ``data_manifests/README.md``)::

    subject_id,mr,ct,mask,split,centre,region
    1BA001,../data/Task1/brain/1BA001/mr.nii.gz,../data/Task1/brain/1BA001/ct.nii.gz,...,train,A,B

Paths are stored relative to the manifest's own folder (so a data folder and its manifests can move
together) and :func:`read_manifest` returns them absolute. ``ct`` and ``mask`` may be empty (inference-only
sets; a missing mask is made from the MR downstream). Splits are by subject: a subject is listed once.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipeline.data.checks import path_given, validate_subject
from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write
from pipeline.io.geometry import VOLUME_SUFFIXES

__all__ = [
    "FILE_COLUMNS",
    "MANIFEST_COLUMNS",
    "SPLITS",
    "assign_splits",
    "subject_splits",
    "find_subjects",
    "format_problems",
    "load_split",
    "parse_subject_id",
    "read_manifest",
    "summarize",
    "validate_manifest",
    "write_manifest",
]

FILE_COLUMNS = ("mr", "ct", "mask")
MANIFEST_COLUMNS = ("subject_id", *FILE_COLUMNS, "split", "centre", "region")
SPLITS = ("train", "val", "test")

# SynthRAD IDs: task digit, region letters, centre letter, number. 2023: 1BA001 (task 1, brain, centre A);
# 2025 uses two-letter regions, e.g. 1HNA001 (head & neck, centre A).
_SYNTHRAD_ID = re.compile(r"^(?P<task>\d)(?P<region>[A-Z]+)(?P<centre>[A-Z])(?P<number>\d+)$")


def parse_subject_id(subject_id: str) -> dict[str, str | None]:
    """``"1BA001"`` -> ``{"centre": "A", "region": "B"}``; None for both when the ID is not SynthRAD-style."""
    match = _SYNTHRAD_ID.match(subject_id)
    if match is None:
        return {"centre": None, "region": None}
    return {"centre": match["centre"], "region": match["region"]}


def _find_role_file(folder: Path, role: str, subject_id: str) -> str | None:
    found = [folder / f"{role}{suffix}" for suffix in VOLUME_SUFFIXES if (folder / f"{role}{suffix}").is_file()]
    if len(found) > 1:
        raise InputError(f"{subject_id}: {len(found)} {role} files ({', '.join(p.name for p in found)}); keep one")
    return str(found[0].absolute()) if found else None


def find_subjects(root: str | os.PathLike) -> pd.DataFrame:
    """Scan a SynthRAD2023-style folder ``ROOT/<ID>/{mr,ct,mask}.{nii.gz,nii,mha,mhd,nrrd}``.

    ``ROOT`` may be e.g. ``Task1/brain`` of the real dataset; folders holding none of the three files
    (such as its ``overview``) are skipped. A subject folder without an MR is kept (``mr`` None) so that
    validation reports it.

    Returns:
        One row per subject, sorted by ``subject_id``, columns ``subject_id, mr, ct, mask`` (absolute
        paths or None), ``centre`` and ``region`` (from SynthRAD IDs, else None).

    Raises:
        InputError: ``ROOT`` does not exist, holds no subject, or a subject has two files of one role.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder {root} does not exist")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        subject_id = folder.name
        files = {role: _find_role_file(folder, role, subject_id) for role in FILE_COLUMNS}
        if any(files.values()):
            rows.append({"subject_id": subject_id, **files, **parse_subject_id(subject_id)})
    if not rows:
        raise InputError(f"no subjects in {root} (expected {root}/<ID>/mr.nii.gz, optionally ct.* and mask.*)")
    return pd.DataFrame(rows, columns=["subject_id", *FILE_COLUMNS, "centre", "region"], dtype=object)


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Subjects for (val, test): rounded fractions of ``n``; at least 1 each (when asked for) once
    ``n >= 3``, and always at least one training subject."""
    def count(fraction: float) -> int:
        k = math.floor(fraction * n + 0.5)
        return max(k, 1) if fraction > 0 and n >= 3 else k

    n_val, n_test = count(val_fraction), count(test_fraction)
    while n_val + n_test > n - 1 and (n_val or n_test):  # keep a training subject
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _allocate(total: int, sizes: dict[Any, int], taken: dict[Any, int], *, keep: int) -> dict[Any, int]:
    """Spread ``total`` picks over strata: first one for each stratum (largest first) so every stratum is
    represented when the budget allows, then proportionally to stratum size (largest deficit first).
    A stratum keeps ``keep`` subjects for training when possible; only if the budget cannot be met
    otherwise is that reserve used."""
    n = sum(sizes.values())
    alloc = dict.fromkeys(sizes, 0)
    for reserve in (keep, 0):
        while sum(alloc.values()) < total:
            free = [s for s in sizes if sizes[s] - taken[s] - alloc[s] > reserve]
            if not free:
                break
            # sort key: unrepresented strata first, then the largest shortfall from the proportional share
            best = min(free, key=lambda s: (alloc[s] > 0, -(total * sizes[s] / n - alloc[s])))
            alloc[best] += 1
    return alloc


def assign_splits(
    df: pd.DataFrame,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify: str | None = "auto",
) -> pd.DataFrame:
    """Copy of ``df`` with a ``split`` column (``train``/``val``/``test``), one split per subject.

    Deterministic for a given ``seed`` and set of subject IDs (row order does not matter). Counts are
    the rounded fractions of N, with at least one val and one test subject when N >= 3 (and the
    fraction is > 0). With ``stratify`` a column name, every value of that column (e.g. each centre)
    gets a place in val and test where the counts allow, and otherwise its proportional share.
    ``"auto"`` stratifies by ``centre`` when there is more than one centre; None does not stratify.
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    _check_unique(df, where="the subject table")
    if stratify == "auto":
        centres = df["centre"].dropna().unique() if "centre" in df else []
        stratify = "centre" if len(centres) > 1 else None
    if stratify is not None and stratify not in df:
        raise ValueError(f"cannot stratify by {stratify!r}: no such column (columns: {', '.join(df.columns)})")

    out = df.copy()
    ids = sorted(out["subject_id"].astype(str))
    strata_of = (dict(zip(out["subject_id"].astype(str), out[stratify].astype(object).where(out[stratify].notna(), "")))
                 if stratify else dict.fromkeys(ids, ""))
    rng = np.random.default_rng(seed)
    members: dict[str, list[str]] = {}
    for subject_id in ids:
        members.setdefault(str(strata_of[subject_id]), []).append(subject_id)
    for stratum in sorted(members):  # shuffle in a fixed stratum order: same seed, same result
        order = rng.permutation(len(members[stratum]))
        members[stratum] = [members[stratum][i] for i in order]

    n_val, n_test = _split_counts(len(ids), val_fraction, test_fraction)
    # strata in a seeded order: it breaks ties between equal-sized strata without favouring early names
    sizes = {s: len(members[s]) for s in rng.permutation(sorted(members)).tolist()}
    test = _allocate(n_test, sizes, dict.fromkeys(sizes, 0), keep=2 if n_val else 1)
    val = _allocate(n_val, sizes, test, keep=1)
    split_of = {}
    for stratum, subjects in members.items():
        for i, subject_id in enumerate(subjects):
            split_of[subject_id] = ("test" if i < test[stratum]
                                    else "val" if i < test[stratum] + val[stratum] else "train")
    out["split"] = out["subject_id"].astype(str).map(split_of)
    return out


def subject_splits(subject_ids: Sequence[str], *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                   seed: int = 0) -> dict[str, str]:
    """:func:`assign_splits` for a bare list of IDs (duplicates allowed, no strata): ``{ID: split}``."""
    table = assign_splits(pd.DataFrame({"subject_id": sorted({str(s) for s in subject_ids})}),
                          val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, stratify=None)
    return dict(zip(table["subject_id"], table["split"]))


def _check_unique(df: pd.DataFrame, *, where: str) -> None:
    """Raise :class:`InputError` when a subject ID is empty or listed more than once."""
    ids = df["subject_id"]
    if ids.isna().any() or (ids.astype(str).str.strip() == "").any():
        rows = [str(i + 2) for i in np.flatnonzero(ids.isna() | (ids.astype(str).str.strip() == ""))]
        raise InputError(f"{where}: empty subject_id on line(s) {', '.join(rows)}")
    counts = ids.astype(str).value_counts()
    duplicated = counts[counts > 1]
    if len(duplicated):
        parts = []
        for subject_id, n in duplicated.items():
            splits = df.loc[ids.astype(str) == subject_id, "split"].tolist() if "split" in df else []
            detail = f" (splits: {', '.join(str(s) for s in splits)})" if splits else ""
            parts.append(f"{subject_id}: listed {n} times in {where}{detail}")
        raise InputError("; ".join(parts) + "; each subject must appear once (splits are by subject)")


def _check_splits(df: pd.DataFrame, *, where: str) -> None:
    if "split" not in df:
        return
    bad = df[~df["split"].isin(SPLITS)]
    if len(bad):
        first = bad.iloc[0]
        raise InputError(f"{first['subject_id']}: split {first['split']!r} in {where} is not one of "
                         f"{', '.join(SPLITS)} ({len(bad)} such row(s))")


def validate_manifest(df: pd.DataFrame, *, read_data: bool = False, progress: bool = True) -> dict[str, list[str]]:
    """Problems per subject (only subjects with problems; an empty dict means all is well).

    Reads every file's header (fast; ``read_data=True`` loads voxels too, and checks that CTs are in
    HU): missing or unreadable files, non-3-D images, unknown or ambiguous orientation, CT/mask off the
    MR grid. A subject without a CT is reported when it is in the train or val split, or when others
    have one. The same file (by content hash) under two subjects in different splits is leakage.
    """
    problems: dict[str, list[str]] = {}
    records = df.to_dict("records")
    with_ct = sum(1 for r in records if path_given(r.get("ct")))
    for record in tqdm(records, desc="checking subjects", unit="subject", disable=not progress):
        subject_id = str(record["subject_id"])
        found = validate_subject(record, read_data=read_data)
        if not path_given(record.get("ct")):
            if record.get("split") in ("train", "val"):
                found.append(f"{subject_id}: no ct file, but the subject is in the {record['split']} split "
                             "(training and validation need its CT)")
            elif 0 < with_ct < len(records):
                found.append(f"{subject_id}: no ct file, but {with_ct} of {len(records)} subjects have one")
        if found:
            problems.setdefault(subject_id, []).extend(found)
    for subject_id, message in _leaks_across_splits(records, progress=progress):
        problems.setdefault(subject_id, []).append(message)
    return problems


def _file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _leaks_across_splits(records: Sequence[Mapping[str, Any]], *, progress: bool) -> list[tuple[str, str]]:
    """``(subject, message)`` for every file whose exact content is listed under subjects in different
    splits: the same image in training and in validation/test would inflate every metric."""
    if not any("split" in r for r in records):
        return []
    owners: dict[str, list[tuple[str, str, str]]] = {}
    files = [(str(r["subject_id"]), str(r.get("split")), role, str(r[role])) for r in records
             for role in FILE_COLUMNS if path_given(r.get(role)) and Path(str(r[role])).is_file()]
    for subject_id, split, role, path in tqdm(files, desc="hashing files", unit="file", disable=not progress):
        owners.setdefault(_file_hash(path), []).append((subject_id, split, f"{role} {Path(path).name}"))
    found = []
    for users in owners.values():
        if len({split for _, split, _ in users}) > 1:
            listing = ", ".join(f"{sid} ({split}, {what})" for sid, split, what in users)
            for subject_id, _, _ in users:
                found.append((subject_id, f"{subject_id}: identical file listed under subjects in different splits: "
                                          f"{listing}; a subject's images must stay in one split"))
    return found


def _relative_to(path: Any, folder: Path) -> str:
    if not path_given(path):
        return ""
    try:
        return Path(os.path.relpath(os.path.abspath(path), folder)).as_posix()
    except ValueError:  # e.g. another drive on Windows: no relative path exists
        return Path(os.path.abspath(path)).as_posix()


def write_manifest(df: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``df`` as a manifest CSV at ``path`` atomically; paths are stored relative to its folder.

    Columns: ``subject_id, mr, ct, mask, split, centre, region`` (those present) then any others.
    Raises ``FileExistsError`` if ``path`` exists and not ``overwrite``; :class:`InputError` for duplicate
    subjects or unknown split names.
    """
    path = Path(path)
    if "subject_id" not in df or "mr" not in df:
        raise ValueError("a manifest needs at least the columns subject_id and mr")
    _check_unique(df, where=path.name)
    _check_splits(df, where=path.name)
    folder = path.absolute().parent
    out = df.copy().astype(object)
    for column in FILE_COLUMNS:
        if column in out:
            out[column] = [_relative_to(p, folder) for p in out[column]]
    columns = [c for c in MANIFEST_COLUMNS if c in out] + [c for c in out.columns if c not in MANIFEST_COLUMNS]
    return atomic_write(path, lambda tmp: out[columns].to_csv(tmp, index=False), overwrite=overwrite)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest; file paths come back absolute (resolved against the manifest's folder), empty
    cells as None.

    Raises:
        InputError: missing file or columns, empty or duplicate subject IDs (also one subject in two
            splits), unknown split names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False).astype(object)
    df = df.apply(lambda column: column.str.strip())
    missing = [c for c in ("subject_id", "mr") if c not in df]
    if missing:
        raise InputError(f"manifest {path} lacks column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")
    df = df.mask(df == "", None)
    _check_unique(df, where=path.name)
    _check_splits(df, where=path.name)
    folder = path.absolute().parent
    for column in FILE_COLUMNS:
        if column in df:
            # object dtype keeps None for empty cells (a pandas string column would turn them into NaN)
            df[column] = pd.Series([os.path.normpath(folder / p) if p is not None else None for p in df[column]],
                                   index=df.index, dtype=object)
    return df


def load_split(manifest_path: str | os.PathLike, split: str, *, allow_empty: bool = False) -> list[dict[str, str]]:
    """Records of one split for MONAI datasets: ``{"subject_id", "mr"[, "ct"][, "mask"]}`` with absolute
    paths; a key is absent when the manifest has no such file for that subject.

    Raises:
        ValueError: ``split`` unknown.
        InputError: the manifest has no ``split`` column, or the split is empty (unless ``allow_empty``:
            then ``[]``, e.g. training without a validation split).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    df = read_manifest(manifest_path)
    if "split" not in df:
        raise InputError(f"manifest {manifest_path} has no split column")
    rows = df[df["split"] == split]
    if rows.empty:
        if allow_empty:
            return []
        present = ", ".join(f"{s} {n}" for s, n in df["split"].value_counts().items())
        raise InputError(f"manifest {manifest_path} has no subjects in split {split!r} (has: {present})")
    if split in ("train", "val") and "ct" in rows:
        missing = [str(r["subject_id"]) for r in rows.to_dict("records") if not path_given(r.get("ct"))]
        if missing:
            raise InputError(f"{missing[0]}: no ct file in {manifest_path}, but the subject is in the {split} split "
                             f"(training and validation need its CT; {len(missing)} such subject(s))")
    return [{key: row[key] for key in ("subject_id", *FILE_COLUMNS) if key in row and path_given(row[key])}
            for row in rows.to_dict("records")]


def summarize(df: pd.DataFrame) -> str:
    """One line: subjects per split and per centre, e.g. ``"12 subjects: train 8, val 2, test 2; centre A 6, B 6"``."""
    parts = [f"{len(df)} subjects"]
    if "split" in df:
        counts = df["split"].value_counts()
        parts[0] += ": " + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLITS)
    if "centre" in df and df["centre"].notna().any():
        counts = df["centre"].value_counts().sort_index()
        parts.append("centre " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    return "; ".join(parts)


def format_problems(problems: Mapping[str, Sequence[str]]) -> str:
    """Problems as lines, subject by subject (each message already starts with the subject ID)."""
    return "\n".join(message for subject_id in sorted(problems) for message in problems[subject_id])
