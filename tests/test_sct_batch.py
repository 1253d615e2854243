"""Many subjects through one predictor (:mod:`pipeline.sct.batch`): reading ahead and writing behind the network
change when the work is done, not what is written; each subject's failure stays its own, in every stage."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
import torch

from networks import Pix2PixUNet
from pipeline.data.phantoms.head import write_phantom_dataset
from pipeline.errors import InputError
from pipeline.sct.batch import READ_AHEAD, predict_records
from pipeline.sct.inference import SCTPredictor


def _predictor() -> SCTPredictor:
    torch.manual_seed(0)
    generator = Pix2PixUNet(spatial_dims=2, in_channels=5, out_channels=1, num_downs=5, base_channels=4)
    return SCTPredictor(generator, mode="2.5d", patch_size=32, overlap=0.25, device="cpu", progress=False,
                        planes=("axial", "coronal"))  # an ensemble: the std map is written behind the network too


def test_pipelined_outputs_are_the_same_bytes_as_one_after_the_other(tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path / "data", n=3, size="tiny")
    sequential = _predictor().predict_inputs(tmp_path / "data", output_dir=tmp_path / "seq", read_ahead=0)
    pipelined = _predictor().predict_inputs(tmp_path / "data", output_dir=tmp_path / "pipe", read_ahead=2)
    assert [p.relative_to(tmp_path / "pipe") for p in pipelined] == [p.relative_to(tmp_path / "seq") for p in sequential]
    assert len(sequential) == 3
    for a, b in zip(sequential, pipelined, strict=True):
        for name in ("sct.nii.gz", "sct_std.nii.gz"):
            assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), (a.parent.name, name)


class _Recorder:
    """A predictor stand-in that records which stage ran when, in which thread; ``fail`` maps a subject to the
    stage where it raises."""

    device = torch.device("cuda")  # the device type only picks the default read-ahead
    ensemble = False
    progress = False

    def __init__(self, fail: dict[str, str] | None = None, *, wait_for_next_read: bool = False) -> None:
        self.fail = fail or {}
        self.events: list[tuple[str, str]] = []
        self.threads: dict[str, set[str]] = {"prepare": set(), "infer": set(), "finish": set()}
        self.prepared: dict[str, threading.Event] = {}
        self.wait_for_next_read = wait_for_next_read
        self.lock = threading.Lock()

    def _note(self, stage: str, subject: str) -> None:
        with self.lock:
            self.events.append((stage, subject))
            self.threads[stage].add(threading.current_thread().name)
        if self.fail.get(subject) == stage:
            raise InputError(f"{subject}: mr.nii.gz: broken in {stage}")

    def prepare(self, mr, out, *, stack: contextlib.ExitStack, subject_id: str, **_) -> dict:
        self.prepared.setdefault(subject_id, threading.Event()).set()
        self._note("prepare", subject_id)
        return {"subject_id": subject_id, "out": out}

    def infer(self, data: dict) -> dict:
        self._note("infer", data["subject_id"])
        if self.wait_for_next_read:  # the next subject is read while this one is in the network
            following = f"S{int(data['subject_id'][1:]) + 1}"
            if following in {f"S{i}" for i in range(4)}:
                assert self.prepared.setdefault(following, threading.Event()).wait(timeout=10), following
        return data

    def finish(self, data: dict) -> Path:
        self._note("finish", data["subject_id"])
        return data["out"]


def _records(n: int = 4) -> list[dict]:
    return [{"subject_id": f"S{i}", "mr": f"S{i}.nii.gz"} for i in range(n)]


def test_the_next_subject_is_read_while_the_network_works_and_written_behind_it(tmp_path: Path) -> None:
    recorder = _Recorder(wait_for_next_read=True)
    written, failures = predict_records(recorder, _records(), output_dir=tmp_path)  # the CUDA default
    assert READ_AHEAD["cuda"] > 0 and READ_AHEAD["cpu"] == 0
    assert failures == [] and [p.parent.name for p in written] == ["S0", "S1", "S2", "S3"]
    main = threading.current_thread().name
    assert recorder.threads["infer"] == {main}  # the network stays in the calling thread (one CUDA stream)
    assert main not in recorder.threads["prepare"] and main not in recorder.threads["finish"]
    assert [s for stage, s in recorder.events if stage == "infer"] == ["S0", "S1", "S2", "S3"]  # in order


@pytest.mark.parametrize("read_ahead", [0, 2])
@pytest.mark.parametrize("stage", ["prepare", "infer", "finish"])
def test_a_failure_in_any_stage_costs_only_its_subject(tmp_path: Path, stage: str, read_ahead: int) -> None:
    recorder = _Recorder({"S1": stage})
    written, failures = predict_records(recorder, _records(), output_dir=tmp_path, read_ahead=read_ahead)
    assert [p.parent.name for p in written] == ["S0", "S2", "S3"]
    assert failures == [f"S1: mr.nii.gz: broken in {stage}"]


def test_an_unexpected_error_is_one_line_with_the_traceback_in_the_log(tmp_path: Path, caplog) -> None:
    class Crashing(_Recorder):
        def infer(self, data: dict) -> dict:
            if data["subject_id"] == "S2":
                raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")
            return data

    written, failures = predict_records(Crashing(), _records(), output_dir=tmp_path, read_ahead=1)
    assert failures == ["S2: CUDA error: an illegal memory access was encountered"] and len(written) == 3
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_a_negative_read_ahead_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="read_ahead"):
        predict_records(_Recorder(), _records(), output_dir=tmp_path, read_ahead=-1)
