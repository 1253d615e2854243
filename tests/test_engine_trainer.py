"""The mri_to_ct training bundle, run as users run it (MONAI bundle CLI) on tiny phantoms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import pytest
import torch
from ignite.engine import Events
from monai.handlers import LrScheduleHandler

from bundle_runner import REPO, bundle_error_line, read_events, tiny_phantom_manifest
from bundle_runner import run_bundle as run_bundle_config
from pipeline.engine.handlers import load_generator_state
from pipeline.engine.model_card import card_hash
from pipeline.engine.trainer import (
    Pix2PixTrainer,
    autocast_dtype,
    constant_then_linear_decay,
    cpu_has_native_bf16,
    pix2pix_adam,
)
from pipeline.sct.model_card import rtsynth_version

CONFIGS = REPO / "bundles" / "mri_to_ct" / "configs"
# the adversarial term on from the start (the default recipe trains L1 only): these runs exercise the whole GAN
TINY = ["--patch_size", "32", "--num_downs", "5", "--base_channels", "8", "--batch_size", "2",
        "--samples_per_volume", "2", "--val_interval", "1", "--amp", "false", "--adversarial_start_fraction", "0"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return tiny_phantom_manifest(tmp_path_factory.mktemp("phantoms"), seed=3)


def run_bundle(*args: str, launcher: list[str] | None = None, config: str | None = None) -> str:
    return run_bundle_config(config or str(CONFIGS / "train.json"), *args, launcher=launcher)


def test_train_logs_checkpoints_and_resumes(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    ema = ["--ema_decay", "0.5"]  # the weight average is validated, saved and resumed with the rest
    run_bundle("--manifest", str(manifest), "--output_dir", str(out), "--epochs", "2", "--epoch_length", "2", *TINY, *ema)

    scalars, images = read_events(out / "tensorboard")
    for tag in ("G_l1", "G_adversarial", "G_total", "D_real", "D_fake", "lr_G", "lr_D", "val_mae_hu"):
        assert any(t.endswith(tag) for t in scalars), (tag, scalars)
    assert "validation/MR|sCT|CT|error" in images

    checkpoint = torch.load(out / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert {"generator", "discriminator", "g_optimizer", "d_optimizer", "trainer"} <= set(checkpoint)
    assert checkpoint["trainer"]["iteration"] == 4  # 2 epochs x 2 iterations
    best = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(best) == set(checkpoint["generator"])
    assert checkpoint["ema"]["updates"] == 4  # one update per iteration
    averaged = load_generator_state(out / "checkpoints" / "latest.pt")  # the average, not the last weights
    assert set(averaged) == set(checkpoint["generator"])
    assert all(torch.equal(averaged[k], checkpoint["ema"]["module"][k]) for k in averaged)
    assert any(not torch.equal(averaged[k], checkpoint["generator"][k]) for k in averaged)

    log = run_bundle("--manifest", str(manifest), "--output_dir", str(out), "--epochs", "3", "--epoch_length", "2",
                     *TINY, *ema)
    assert "resuming from" in log
    resumed = torch.load(out / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert resumed["trainer"]["iteration"] == 6  # continued from 4, not restarted
    assert resumed["ema"]["updates"] == 6  # the same average continued


def test_inference_bundle_obeys_the_model_card(manifest: Path, tmp_path: Path) -> None:
    """Training writes the card; inference with no settings takes them from it and names the model in every
    sCT header; a patch size that differs from the card is refused before anything is written."""
    out = tmp_path / "run"
    run_bundle("--manifest", str(manifest), "--output_dir", str(out), "--epochs", "1", "--epoch_length", "1", *TINY)
    card = json.loads((out / "models" / "model_card.json").read_text())
    assert (card["patch_size"], card["num_downs"], card["base_channels"], card["mode"]) == (32, 5, 8, "2.5d")
    assert card["planes"] == ["axial", "coronal", "sagittal"]  # the default recipe: multi-plane
    assert card["upsample"] == "transpose"

    infer = ["--input", str(manifest), "--split", "test", "--output_dir", str(out)]
    run_bundle_config(str(CONFIGS / "inference.json"), *infer)
    (sct,) = (out / "predictions").glob("*/sct.nii.gz")
    assert (sct.parent / "sct_std.nii.gz").is_file()  # three planes: their spread is written beside the sCT
    descrip = nib.load(sct).header["descrip"].item().decode()
    assert descrip == f"rtsynth {rtsynth_version()} sCT model {card_hash(card)}"

    last = bundle_error_line(str(CONFIGS / "inference.json"), *infer, "--patch_size", "64", "--prediction_dir",
                             str(tmp_path / "other"))
    assert last.startswith("error: patch_size = 64 was asked for, but the model was trained with patch_size = 32")
    assert not (tmp_path / "other").exists()


def test_a_run_shorter_than_val_interval_writes_a_model_and_inference_without_one_is_one_line(
        manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_bundle("--manifest", str(manifest), "--output_dir", str(out), "--epochs", "1", "--epoch_length", "1",
               "--val_interval", "5", *TINY)
    assert (out / "models" / "model.pt").is_file()  # validated at the end although no interval came due

    last = bundle_error_line(str(CONFIGS / "inference.json"), "--input", str(manifest), "--split", "test",
                             "--output_dir", str(tmp_path / "untrained"))
    assert last.startswith(f"error: {tmp_path / 'untrained' / 'models' / 'model.pt'}: no trained model there")
    assert not (tmp_path / "untrained" / "predictions").exists()


def test_a_patch_size_the_u_net_cannot_halve_is_one_line_before_training(manifest: Path, tmp_path: Path) -> None:
    last = bundle_error_line(str(CONFIGS / "train.json"), "--manifest", str(manifest), "--output_dir",
                             str(tmp_path / "run"), *TINY, "--patch_size", "40")  # num_downs 5: 32 | 64
    assert last == ("error: patch_size 40 is not a multiple of 2 ** num_downs = 32 (the U-Net halves the window 5 "
                    "times): use e.g. --patch_size 64, or fewer --num_downs")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_3d_mode_trains_and_infers_with_resize_convolutions(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run3d"
    run_bundle("--manifest", str(manifest), "--output_dir", str(out), "--epochs", "1", "--epoch_length", "1",
               *TINY, "--mode", "3d", "--patch_size", "24", "--num_downs", "3", "--upsample", "resize")
    state = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(v.ndim == 5 for v in state.values())  # 3-D convolutions
    assert any(v.ndim == 5 and v.shape[-1] == 3 for v in state.values())  # 3x3x3: resize-convolution kernels
    # no slab axis in 3D: the default planes do not apply, the card says so
    card = json.loads((out / "models" / "model_card.json").read_text())
    assert card["planes"] == ["axial"] and card["upsample"] == "resize"
    # inference builds the resize-convolution network from the card (a transposed one would not load)
    run_bundle_config(str(CONFIGS / "inference.json"), "--input", str(manifest), "--split", "test",
                      "--output_dir", str(out))
    assert len(list((out / "predictions").glob("*/sct.nii.gz"))) >= 1


def test_position_channels_train_into_the_card_and_inference_builds_its_network_from_it(manifest: Path,
                                                                                       tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_bundle("--manifest", str(manifest), "--output_dir", str(out), "--epochs", "1", "--epoch_length", "1",
               *TINY, "--position_channels", "true")
    card = json.loads((out / "models" / "model_card.json").read_text())
    assert card["position_channels"] is True
    state = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    first = next(v for v in state.values() if v.ndim == 4)
    assert first.shape[1] == 5 + 3  # the slab's five MR slices and the three position channels
    # inference takes the setting from the card (a 5-channel network would not load these weights)
    run_bundle_config(str(CONFIGS / "inference.json"), "--input", str(manifest), "--split", "test",
                      "--output_dir", str(out))
    assert len(list((out / "predictions").glob("*/sct.nii.gz"))) >= 1
    last = bundle_error_line(str(CONFIGS / "train.json"), "--manifest", str(manifest), "--output_dir",
                             str(tmp_path / "run3d"), *TINY, "--mode", "3d", "--position_channels", "true")
    assert last == "error: --position_channels true: position channels follow 2D/2.5D slabs; 3D mode takes none"


@pytest.mark.distributed
@pytest.mark.parametrize(("ema_decay", "amp"), [("0", "false"), ("0.9", "true")])
def test_torchrun_two_processes_gloo(manifest: Path, tmp_path: Path, ema_decay: str, amp: str) -> None:
    # the default weights, and a weight average of the DDP-wrapped generator trained with amp (bf16 autocast where
    # this CPU has it natively: DDP's all-reduce then sums float32 gradients of a bf16 forward)
    out = tmp_path / "ddp"
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # a 3-second budget: rank 0's clock ends the run for both ranks (they would hang in DDP otherwise)
    log = run_bundle("--manifest", str(manifest), "--output_dir", str(out), "--epochs", "1000", "--epoch_length", "2",
                     "--max_minutes", "0.05", "--ema_decay", ema_decay, *TINY, "--amp", amp, launcher=torchrun,
                     config=configs)
    assert "val_mae_hu" in log and "time budget of 0.1 min spent" in log
    native = amp == "true" and cpu_has_native_bf16()
    assert f"training precision on cpu: {'bfloat16 autocast' if native else 'float32'}" in log
    checkpoint = torch.load(out / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in checkpoint["generator"])  # saved unwrapped, loadable anywhere
    assert set(load_generator_state(out / "checkpoints" / "latest.pt")) == set(checkpoint["generator"])
    assert checkpoint["trainer"]["iteration"] >= 2 and checkpoint["progress"]["elapsed_seconds"] >= 3.0
    assert (out / "models" / "model.pt").is_file()  # the final validation, reduced over the ranks, saved it


class _Constant(torch.nn.Module):
    """A one-parameter network, enough to see that an iteration steps both optimisers."""

    def __init__(self, out_channels: int = 1) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x[:, :1] * 0 + self.bias)


class _TinyD(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, condition: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(torch.cat([condition, target], 1))]


def _one_batch_trainer(**options):
    """A trainer over one batch (MR random, CT constant 0.5), its networks and D's weights before training."""
    g, d = _Constant(), _TinyD()
    batch = {"mr": torch.rand(2, 1, 8, 8), "ct": torch.full((2, 1, 8, 8), 0.5), "mask": torch.ones(2, 1, 8, 8)}
    d_before = d.conv.weight.detach().clone()
    trainer = Pix2PixTrainer(device="cpu", max_epochs=1, train_data_loader=[batch], generator=g, discriminator=d,
                             g_optimizer=pix2pix_adam(g.parameters()), d_optimizer=pix2pix_adam(d.parameters()),
                             **options)
    return trainer, g, d, d_before


def test_mixed_precision_is_bfloat16_where_the_hardware_has_it(monkeypatch) -> None:
    import pipeline.engine.trainer as trainer_module

    assert autocast_dtype("cuda", amp=False) is None and autocast_dtype("cpu", amp=False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("cuda:0", amp=True) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype("cuda", amp=True) == torch.float16
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("cpu", amp=True) is None  # emulated bf16 is slower than float32
    trainer = _one_batch_trainer(amp=True)[0]
    assert trainer.amp_dtype is None and not trainer.g_scaler.is_enabled() and not trainer.amp
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype("cpu", amp=True) == torch.bfloat16


def test_cpu_bfloat16_autocast_trains_float32_weights_close_to_float32(monkeypatch) -> None:
    """bf16 autocast on the CPU (native or not, the arithmetic is the same): the forward runs in bf16, the
    weights, their gradients and the loss stay float32, no CUDA loss scaler, and one step lands near float32's."""
    import pipeline.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    def trainer_with_conv_generator(amp: bool) -> tuple[Pix2PixTrainer, torch.nn.Module]:
        torch.manual_seed(0)
        g = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Tanh())
        trainer = _one_batch_trainer(amp=amp)[0]
        trainer.generator = trainer.generator_forward = g
        trainer.g_optimizer = pix2pix_adam(g.parameters())
        return trainer, g

    plain, g_plain = trainer_with_conv_generator(False)
    mixed, g_mixed = trainer_with_conv_generator(True)
    assert mixed.amp_dtype == torch.bfloat16 and not mixed.g_scaler.is_enabled() and not mixed.amp
    dtypes = []
    handle = g_mixed.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    for trainer in (plain, mixed):
        trainer.run()
    handle.remove()
    assert dtypes == [torch.bfloat16]
    for p_plain, p_mixed in zip(g_plain.parameters(), g_mixed.parameters(), strict=True):
        assert p_mixed.dtype == torch.float32 and p_mixed.grad.dtype == torch.float32
        # Adam's first step moves each weight by lr * sign(gradient): bf16 gradients of the same signs land on
        # float32's weights (exactly or within a step where a tiny gradient's sign flips)
        torch.testing.assert_close(p_mixed, p_plain, rtol=0.0, atol=4e-4)


def test_channels_last_trains_the_same_and_compile_keeps_the_plain_modules() -> None:
    torch.manual_seed(0)
    plain, g_plain, d_plain, _ = _one_batch_trainer()
    torch.manual_seed(0)
    formatted, g_last, d_last, _ = _one_batch_trainer(channels_last=True)
    for trainer in (plain, formatted):
        trainer.run()
    assert d_last.conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(d_last.conv.weight, d_plain.conv.weight)
    torch.testing.assert_close(g_last.bias, g_plain.bias)
    compiled, g, d, _ = _one_batch_trainer(compile=True)  # not run here: compiling takes minutes on a CPU
    assert compiled.generator is g and compiled.generator_forward is not g
    assert set(compiled.generator_forward.state_dict()) != set(g.state_dict())  # why checkpoints keep g itself


def test_iteration_updates_generator_and_discriminator() -> None:
    trainer, g, d, d_before = _one_batch_trainer()
    trainer.run()
    out = trainer.state.output
    assert {"G_total", "G_l1", "G_adversarial", "D_real", "D_fake", "lr_G", "lr_D"} <= set(out)
    assert g.bias.item() > 0  # L1 pulls the constant towards the target 0.5
    assert not torch.equal(d.conv.weight, d_before)
    assert out["G_total"] == pytest.approx(out["G_adversarial"] + 100 * out["G_l1"], rel=1e-5)


def test_l1_warm_up_trains_the_generator_only() -> None:
    trainer, g, d, d_before = _one_batch_trainer()
    trainer.adversarial_on = False  # what TrainingProgress sets before adversarial_start_fraction
    trainer.run()
    out = trainer.state.output
    assert "G_adversarial" not in out and "D_real" not in out
    assert torch.equal(d.conv.weight, d_before) and d.conv.weight.grad is None  # D neither stepped nor run
    assert g.bias.item() > 0
    assert out["G_total"] == pytest.approx(100 * out["G_l1"], rel=1e-6)


class _Prefetching:
    """An endless batch source with a ``prefetch()`` like the crop sampler's; records the order of calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.pending = False

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        self.calls.append("next" if not self.pending else "next (prefetched)")
        self.pending = False
        return {"mr": torch.rand(2, 1, 8, 8), "ct": torch.full((2, 1, 8, 8), 0.5), "mask": torch.ones(2, 1, 8, 8)}

    def prefetch(self) -> None:
        self.calls.append("prefetch")
        self.pending = True


@pytest.mark.parametrize("prefetch_batches", [None, True])  # None: CUDA only, so not on this CPU
def test_the_next_batch_is_prefetched_inside_the_iteration_when_asked(prefetch_batches) -> None:
    source, g, d = _Prefetching(), _Constant(), _TinyD()
    trainer = Pix2PixTrainer(device="cpu", max_epochs=1, epoch_length=3, train_data_loader=source, generator=g,
                             discriminator=d, g_optimizer=pix2pix_adam(g.parameters()),
                             d_optimizer=pix2pix_adam(d.parameters()), prefetch_batches=prefetch_batches)
    trainer.run()
    if prefetch_batches:
        assert source.calls == ["next", "prefetch", "next (prefetched)", "prefetch", "next (prefetched)", "prefetch"]
    else:
        assert source.calls == ["next"] * 3


class _ThreadsSeen(torch.utils.data.Dataset):
    """Three samples; records the intra-op thread count each was fetched with."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> dict:
        self.threads.append(torch.get_num_threads())
        return {"mr": torch.rand(1, 8, 8), "ct": torch.full((1, 8, 8), 0.5), "mask": torch.ones(1, 8, 8)}


@pytest.mark.parametrize("epoch_length", [None, 5])  # 5 > 3 batches: the data iterator restarts mid-epoch
def test_batches_are_fetched_single_threaded_and_the_iteration_keeps_the_threads(epoch_length) -> None:
    dataset, during_iterations = _ThreadsSeen(), []
    g, d = _Constant(), _TinyD()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        trainer = Pix2PixTrainer(device="cpu", max_epochs=2, epoch_length=epoch_length,
                                 train_data_loader=torch.utils.data.DataLoader(dataset, batch_size=1), generator=g,
                                 discriminator=d, g_optimizer=pix2pix_adam(g.parameters()),
                                 d_optimizer=pix2pix_adam(d.parameters()))
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: during_iterations.append(torch.get_num_threads()))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: during_iterations.append(torch.get_num_threads()))
        trainer.run()
        assert dataset.threads == [1] * len(dataset.threads) and len(dataset.threads) == 2 * (epoch_length or 3)
        assert set(during_iterations) == {2} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_constant_then_linear_decay() -> None:
    optimizer = pix2pix_adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = constant_then_linear_decay(optimizer, constant_epochs=2, decay_epochs=3)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.25, 0.0])


@pytest.mark.parametrize("masked", [False, True, "false", "true"])  # the command line gives strings
def test_masked_l1_is_a_bundle_option(manifest: Path, tmp_path: Path, masked) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"manifest": str(manifest), "output_dir": str(tmp_path), "masked_l1": masked, "num_downs": 3,
                   "base_channels": 4, "patch_size": 16})
    assert parser.get_parsed_content("train#trainer").masked_l1 is (masked in (True, "true"))


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_at_most_one_checkpoint_interval(manifest: Path, tmp_path: Path) -> None:
    """Kill -9 a training run between checkpoints, resume it: it continues from the last checkpoint (at
    most one epoch of work lost), with the optimisers' and schedules' state and the best metric restored,
    and models/model.pt is only replaced by a validation that really beats the stored best."""
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json"),
           "--manifest", str(manifest), "--output_dir", str(out), "--epochs", "200", "--epoch_length", "2", *TINY]
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    latest = out / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if latest.exists() and torch.load(latest, weights_only=True)["trainer"]["iteration"] >= 6:
                break
            assert process.poll() is None, "training ended before it could be killed"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed = torch.load(latest, weights_only=True)  # atomic writes: never a torn file
    epoch = killed["trainer"]["iteration"] // 2  # checkpoints are written at epoch ends: whole epochs
    assert killed["trainer"]["iteration"] == 2 * epoch
    best_before = killed["best"]["best_metric"]
    assert best_before > 0 and 1 <= killed["best"]["best_metric_epoch"] <= epoch
    model_before = (out / "models" / "model.pt").read_bytes()

    run_bundle("--manifest", str(manifest), "--output_dir", str(out), "--epochs", str(epoch + 2), "--epoch_length", "2",
               *TINY)
    resumed = torch.load(latest, weights_only=True)
    assert resumed["trainer"]["iteration"] == 2 * (epoch + 2)  # continued from the checkpoint, not restarted
    steps = {int(s["step"]) for s in resumed["g_optimizer"]["state"].values()}
    assert steps == {2 * (epoch + 2)}  # Adam moments carried over: one step per iteration since the start
    assert resumed["g_scheduler"]["last_epoch"] == epoch + 2
    assert resumed["best"]["best_metric"] <= best_before  # the best never gets worse (lower MAE is better)
    if resumed["best"]["best_metric_epoch"] <= epoch:  # no resumed validation beat it: model.pt untouched
        assert (out / "models" / "model.pt").read_bytes() == model_before
    else:
        assert (out / "models" / "model.pt").read_bytes() != model_before


def test_pix2pix_optimizer_adam_and_adamw() -> None:
    from pipeline.engine.trainer import pix2pix_optimizer

    params = [torch.nn.Parameter(torch.ones(3))]
    adam = pix2pix_optimizer(params, lr=1e-3)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["betas"] == (0.5, 0.999)
    assert adam.param_groups[0]["weight_decay"] == 0
    adamw = pix2pix_optimizer(params, name="adamw", lr=1e-3, weight_decay=0.05)
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="adamw"):
        pix2pix_optimizer(params, name="sgd")


def test_adam_is_fused_on_the_cpu_and_steps_as_the_reference_adam_does() -> None:
    from pipeline.engine.trainer import fusable, pix2pix_optimizer

    torch.manual_seed(0)
    start = torch.randn(64)
    grads = [torch.randn(64) for _ in range(5)]
    weights = {}
    for fused in (True, False):
        param = torch.nn.Parameter(start.clone())
        if fused:
            optimizer = pix2pix_optimizer(iter([param]), lr=1e-2)  # an iterator, as module.parameters() is
            assert optimizer.defaults["fused"] is True
        else:
            optimizer = torch.optim.Adam([param], lr=1e-2, betas=(0.5, 0.999))  # torch's reference loop
        for grad in grads:
            param.grad = grad.clone()
            optimizer.step()
        weights[fused] = param.detach()
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)
    assert not torch.equal(weights[True], start)
    assert not fusable([]) and not fusable([torch.zeros(2, dtype=torch.int64)])
    assert pix2pix_optimizer([torch.nn.Parameter(torch.ones(2))], name="adamw").defaults["fused"] is True


def test_an_endless_batch_source_needs_an_epoch_length() -> None:
    from pipeline.errors import InputError

    def endless():
        while True:
            yield {"mr": torch.rand(1, 1, 8, 8), "ct": torch.zeros(1, 1, 8, 8), "mask": torch.ones(1, 1, 8, 8)}

    g, d = _Constant(), _TinyD()
    options = dict(device="cpu", max_epochs=1, generator=g, discriminator=d, g_optimizer=pix2pix_adam(g.parameters()),
                   d_optimizer=pix2pix_adam(d.parameters()))
    with pytest.raises(InputError, match="epoch_length"):
        Pix2PixTrainer(train_data_loader=endless(), **options)
    trainer = Pix2PixTrainer(train_data_loader=endless(), epoch_length=3, **options)
    trainer.run()
    assert trainer.state.iteration == 3


def test_an_unstepped_discriminator_schedule_does_not_warn_in_the_users_log() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _one_batch_trainer()[0]
        trainer.adversarial_on = False  # the default recipe: D is never stepped
        LrScheduleHandler(constant_then_linear_decay(trainer.d_optimizer, constant_epochs=1, decay_epochs=1),
                          print_lr=False).attach(trainer)
        trainer.run()
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert trainer.d_optimizer.param_groups[0]["lr"] < 1e-3  # the schedule still ran
