"""Many subjects through one :class:`pipeline.sct.inference.SCTPredictor`: which subjects a source holds
(:func:`resolve_inputs`), and the batch itself (:func:`predict_records`).

On a GPU the network's part of a subject is a fraction of its time (H200, 160 x 192 x 112, three planes, measured
2026-12-04: read 0.13 s, body mask and normalisation 0.48 s, network and blending 0.14 s, inversion 0.05 s,
writing 0.10 s). Run one after the other, the GPU waits for the CPU most of the time, so with ``read_ahead``
the next subjects are read and preprocessed in threads (NIfTI decompression, SimpleITK and scipy release the
GIL) while the network works on the current one, and a writer thread restores and writes the last one. Each
subject's outputs are the same bytes either way (the same functions on the same inputs; tested); only the
order of the work changes. On the CPU the network is nearly all of the time and competes with those threads
for the cores, so there the default stays one subject after the other.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from pipeline.data.manifest import find_subjects, load_split, read_manifest
from pipeline.errors import InputError
from pipeline.io.dicom_series import is_dicom_folder
from pipeline.io.geometry import VOLUME_SUFFIXES
from pipeline.sct.outputs import output_paths
from pipeline.sct.tta import std_path_for

logger = logging.getLogger(__name__)

#: Subjects read and preprocessed ahead of the one in the network, per device type (0: one after the other).
READ_AHEAD = {"cpu": 0, "cuda": 3}


def predict_records(predictor, records: Iterable[dict], *, output_dir: str | Path, overwrite: bool = False,
                    skip_existing: bool = False, output_format: str = "nifti",
                    read_ahead: int | None = None) -> tuple[list[Path], list[str]]:
    """Predict each record (:func:`resolve_inputs`) into ``output_dir/<subject_id>/``; returns the written paths (in
    the records' order, skipped subjects' included) and one line per failed subject. A subject's failure,
    wherever it happens (reading, network, writing), is logged and costs no other subject; an unexpected one
    (not bad input, not a refused overwrite) keeps its traceback in the log.

    ``read_ahead`` (default :data:`READ_AHEAD` for the predictor's device): how many subjects are read and
    preprocessed in threads ahead of the one in the network, while one writer thread restores and writes the
    previous one (at most one more is kept waiting for it, so memory stays bounded). 0: one after the other."""
    read_ahead = READ_AHEAD.get(predictor.device.type, 0) if read_ahead is None else int(read_ahead)
    if read_ahead < 0:
        raise ValueError(f"read_ahead must be 0 or more, got {read_ahead}")
    records = list(records)
    results: list[Path | None] = [None] * len(records)
    failures: list[str] = []
    jobs = []  # (index, record, output path) of the subjects to predict
    for index, record in enumerate(records):
        out = Path(output_dir) / record["subject_id"] / "sct.nii.gz"
        targets = output_paths(out, output_format=output_format)
        expected = [*targets.values(), *([std_path_for(out)] if predictor.ensemble else [])]  # the std map too
        if skip_existing and all(path.exists() for path in expected):
            logger.info("%s: %s exists; skipped (skip_existing)", record["subject_id"], out.parent)
            results[index] = next(iter(targets.values()))
        else:
            jobs.append((index, record, out))

    def prepare(job, stack: contextlib.ExitStack) -> dict:
        _, record, out = job
        return predictor.prepare(record["mr"], out, stack=stack, mask_path=record.get("mask"),
                                 subject_id=record["subject_id"], overwrite=overwrite, output_format=output_format,
                                 mr_series_uid=record.get("mr_series_uid"))

    def finish(data: dict, stack: contextlib.ExitStack) -> Path:
        with stack:  # a converted DICOM series lives until its sCT is written
            return predictor.finish(data)

    bar = tqdm(total=len(jobs), desc="sCT", unit="subject", disable=not predictor.progress)

    def settle(job, outcome: Future | Exception | Path) -> None:
        """Record one subject's outcome (a finished write, or the error that stopped it)."""
        index, record, _ = job
        subject_id = record["subject_id"]
        try:
            if isinstance(outcome, Exception):
                raise outcome
            results[index] = outcome.result() if isinstance(outcome, Future) else outcome
            logger.info("%s: wrote %s", subject_id, results[index])
        except Exception as error:  # one subject's failure must not cost the others
            if not isinstance(error, (InputError, FileExistsError)):  # unexpected: keep the traceback in the log
                logger.exception("%s: unexpected error", subject_id)
            message = " ".join(str(error).split()) or type(error).__name__
            failures.append(message if message.startswith(subject_id) else f"{subject_id}: {message}")
            logger.error("%s", failures[-1])
        bar.update()

    if read_ahead == 0:
        for job in jobs:
            stack = contextlib.ExitStack()
            try:
                outcome = finish(predictor.infer(prepare(job, stack)), stack)
            except Exception as error:  # noqa: BLE001 - settled below (logged there), as on the pipelined path
                stack.close()
                outcome = error
            settle(job, outcome)
    else:
        with ThreadPoolExecutor(read_ahead, thread_name_prefix="sct-read") as readers, \
                ThreadPoolExecutor(1, thread_name_prefix="sct-write") as writer:
            pending, writes, queue = iter(jobs), deque(), deque()

            def read_next() -> None:
                job = next(pending, None)
                if job is not None:
                    stack = contextlib.ExitStack()
                    queue.append((job, stack, readers.submit(prepare, job, stack)))

            for _ in range(read_ahead):
                read_next()
            while queue:
                job, stack, prepared = queue.popleft()
                read_next()
                try:
                    data = predictor.infer(prepared.result())  # the network in this thread: one CUDA stream, in order
                except Exception as error:  # noqa: BLE001 - reading or the network failed: settled (logged) now
                    stack.close()
                    settle(job, error)
                    continue
                writes.append((job, writer.submit(finish, data, stack)))
                while len(writes) > 1:  # at most one write waits behind the running one (bounded memory)
                    settle(*writes.popleft())
            while writes:
                settle(*writes.popleft())
    bar.close()
    return [path for path in results if path is not None], failures


def subject_id_from_path(path: str | Path) -> str:
    """SynthRAD layout ``<ID>/mr.nii.gz`` -> ID; a flat file ``<ID>.nii.gz`` -> ID."""
    path = Path(path)
    stem = path.name.split(".")[0]
    return path.parent.name if stem.lower() in ("mr", "mri", "t1") else stem


def resolve_inputs(source: str | Path, *, split: str | None = None) -> list[dict]:
    """Records ``{"subject_id", "mr"[, "mask"][, "mr_series_uid"]}`` (paths as str) for every subject of ``source``:

    - an MR file (ID from :func:`subject_id_from_path`), or a DICOM folder (one subject; its MR series);
    - a manifest CSV (all rows, or one ``split``); ``mr`` may be a DICOM folder, an optional
      ``mr_series_uid`` column names the series when that folder holds several;
    - a folder of MR files (``<ID>.nii.gz``, ...): used when volumes lie directly in the folder;
    - otherwise a SynthRAD-style folder ``<ID>/mr.*`` with optional ``mask.*`` (or the MR as DICOM files in
      ``<ID>/mr/`` or ``<ID>/``), scanned with :func:`pipeline.data.manifest.find_subjects`; subject
      folders without an MR are skipped with a warning.
    """
    source = Path(source)
    keys = ("subject_id", "mr", "mask", "mr_series_uid")
    if source.suffix == ".csv":
        rows = read_manifest(source).to_dict("records")
        if split:
            chosen = {record["subject_id"] for record in load_split(source, split)}  # load_split's checks and errors
            rows = [row for row in rows if row["subject_id"] in chosen]
        return [{k: v for k, v in row.items() if k in keys and isinstance(v, str)} for row in rows]
    if source.is_file() or is_dicom_folder(source):
        return [{"subject_id": subject_id_from_path(source), "mr": str(source)}]
    if not source.is_dir():
        raise InputError(f"input {source} does not exist")
    flat = sorted(f for f in source.iterdir() if f.is_file() and f.name.lower().endswith(VOLUME_SUFFIXES))
    if flat:
        return [{"subject_id": subject_id_from_path(f), "mr": str(f)} for f in flat]
    dicom = {folder.name: mr for folder in sorted(p for p in source.iterdir() if p.is_dir())
             for mr in (folder, folder / "mr") if is_dicom_folder(mr)}  # <ID>/mr/ wins over <ID>/
    try:
        rows = find_subjects(source).to_dict("records")
    except InputError:
        if not dicom:
            raise
        rows = []
    records = {subject_id: {"subject_id": subject_id, "mr": str(mr.absolute())} for subject_id, mr in dicom.items()}
    for row in rows:
        subject_id = row["subject_id"]
        if row["mr"] is not None and subject_id in records:
            raise InputError(f"{subject_id}: two MRs, {Path(row['mr']).name} and the DICOM files in "
                             f"{records[subject_id]['mr']}; keep one")
        if row["mr"] is None and subject_id not in records:
            logger.warning("%s: no mr file in %s; skipped", subject_id, source / subject_id)
            continue
        record = records.setdefault(subject_id, {"subject_id": subject_id, "mr": row["mr"]})
        if row["mask"]:
            record["mask"] = row["mask"]
    records = [records[subject_id] for subject_id in sorted(records)]
    if not records:
        raise InputError(f"no MR volumes found in {source} (expected <ID>/mr.nii.gz or *.nii.gz files)")
    return records
