"""Training throughput on any device: the real loop, data included, against the bare networks.

    python -m scripts.benchmark_training [--device cpu|cuda] [--configs default gpu] [--recipe l1|gan]
                                         [--iterations 40] [--modes 2.5d 3d] [--flops] [--cpu-variants]
                                         [--variants eager channels_last compile both]

Per mode and configuration (``CONFIGS``: ``default`` = train.json's defaults, 4 subjects x 2 crops of 128^2
per iteration; ``gpu`` = the bundle docs' GPU recipe, 8 x 4 = 32 crops; ``large`` = 16 x 8 = 128 crops; 3-D: the
docs' 3D line), networks of
the bundle's settings (slab size, base channels, masked L1, learning rate and AMP read from train.json, except
that ``gpu`` and ``large`` keep the GPU recipe's 32 channels; three planes) in three loops:

- ``bare``: a plain PyTorch iteration on pre-built random batches of the training shapes, on the device (the
  floor);
- ``engine``: :class:`pipeline.engine.trainer.Pix2PixTrainer` on the same pre-built batches (MONAI's engine);
- ``real``: the same trainer on the sampler the bundle builds (:func:`pipeline.data.loaders.training_sampler`:
  the phantoms' volumes on the device, every crop of an iteration cut there) over head phantoms written to a
  temporary folder (``--phantoms`` subjects of ``--phantom-shape`` voxels).

``--recipe l1`` (the default recipe: masked L1 only, no discriminator step) or ``gan`` (the Pix2Pix
iteration). Every loop runs under train.json's mixed precision (bfloat16 autocast where the GPU or the CPU has it
natively, :func:`pipeline.engine.trainer.autocast_dtype`); on CUDA each iteration ends with a synchronisation, so
that times are the GPU's, and peak device memory is reported per loop.

The trainer runs in turns with a bare loop, one iteration each (:func:`in_turns`), so that both see the
same load on a shared machine. Reported: crops/s (bare from the turns with the real loop), real / bare and
engine / bare, the sampler's milliseconds per batch on its own, and peak device memory.

``--flops`` also counts the FLOPs of one training iteration (``torch.utils.flop_counter.FlopCounterMode``:
convolutions and matrix products, forward and backward, generator and discriminator; normalisation and
element-wise work are not counted) and divides by the bare loop's wall-clock time and by the CPU time of
one bare iteration on one thread (per core: unaffected by other processes): this CPU's achieved FLOP/s
on the same step. With an assumed sustained GPU throughput this gives a GPU time estimate (bundle docs).
``--cpu-variants`` instead times the default recipe's L1-only generator step on one thread in float32,
with channels-last tensors and under bfloat16 autocast, and how far bf16 moves the output (HU).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from networks import ConditionalPatchDiscriminator, Pix2PixGeneratorLoss, Pix2PixUNet
from networks.losses import discriminator_loss
from pipeline.data.loaders import input_channels, patch_shape, spatial_dims, training_sampler
from pipeline.data.manifest import find_subjects
from pipeline.data.phantoms.head import write_phantom_dataset
from pipeline.engine.trainer import Pix2PixTrainer, autocast_dtype, pix2pix_optimizer, torch_threads
from transforms.intensity import HU_MAX, HU_MIN
from transforms.plane import PLANES

#: (mode, configuration) -> the bundle's settings: 2.5D ``default`` = train.json's defaults, ``gpu`` = the bundle
#: docs' GPU recipe (which keeps 32 channels where train.json's CPU default has 24); 3D = the bundle docs' 3D line.
CONFIGS = {
    ("2.5d", "default"): {"patch_size": 128, "batch_size": 4, "samples_per_volume": 2, "num_downs": 6},
    ("2.5d", "gpu"): {"patch_size": 128, "batch_size": 8, "samples_per_volume": 4, "num_downs": 6, "base_channels": 32},
    ("2.5d", "large"): {"patch_size": 128, "batch_size": 16, "samples_per_volume": 8, "num_downs": 6, "base_channels": 32},
    ("3d", "default"): {"patch_size": 64, "batch_size": 1, "samples_per_volume": 2, "num_downs": 5},
    ("3d", "gpu"): {"patch_size": 64, "batch_size": 4, "samples_per_volume": 2, "num_downs": 5},
    ("3d", "large"): {"patch_size": 64, "batch_size": 8, "samples_per_volume": 4, "num_downs": 5},
}
#: The bundle's settings that shape the networks and the iteration, read from train.json rather than copied:
#: masked_l1 (the L1 terms count voxels inside the body only), amp (bfloat16 autocast where the GPU or the CPU
#: has it natively, else float32 on the CPU).
TRAIN_JSON = json.loads((Path(__file__).resolve().parents[1] / "bundles" / "mri_to_ct" / "configs" / "train.json")
                        .read_text(encoding="utf-8"))
SLAB_SIZE, BASE_CHANNELS, LEARNING_RATE, MASKED_L1, AMP = (
    TRAIN_JSON[key] for key in ("slab_size", "base_channels", "learning_rate", "masked_l1", "amp"))
#: train.json's speed options, each an option until a benchmark shows it gains
VARIANTS = {"eager": {}, "channels_last": {"channels_last": True}, "compile": {"compile": True},
            "both": {"channels_last": True, "compile": True}}


def crops_per_iteration(config: dict) -> int:
    """MONAI's collation flattens each subject's ``samples_per_volume`` crops into the batch."""
    return config["batch_size"] * config["samples_per_volume"]


def make_networks(mode: str, config: dict, device: torch.device | str = "cpu"):
    """Generator, discriminator and generator loss as train.json builds them (seeded: every loop starts alike)."""
    torch.manual_seed(0)
    dims, cin = spatial_dims(mode), input_channels(mode=mode, slab_size=SLAB_SIZE)
    width = config.get("base_channels", BASE_CHANNELS)
    g = Pix2PixUNet(spatial_dims=dims, in_channels=cin, num_downs=config["num_downs"], base_channels=width, dropout=0.0)
    d = ConditionalPatchDiscriminator(spatial_dims=dims, in_channels=cin + 1, base_channels=width)
    return g.to(device), d.to(device), Pix2PixGeneratorLoss(spatial_dims=dims)


def optimisers(g, d) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    return (pix2pix_optimizer(g.parameters(), lr=LEARNING_RATE), pix2pix_optimizer(d.parameters(), lr=LEARNING_RATE))


def prebuilt_batches(mode: str, config: dict, *, iterations: int, device: torch.device | str = "cpu") -> list[dict]:
    """``iterations`` batches of :func:`crops_per_iteration` random samples of the training shapes (MR
    ``(N, k, P, P)`` / CT and mask ``(N, 1, P, P)`` in 2.5D), already on ``device``. At most 8 distinct
    batches are made and repeated (a GPU run of hundreds of 32-crop batches would otherwise hold gigabytes)."""
    shape = patch_shape(mode=mode, patch_size=config["patch_size"], slab_size=SLAB_SIZE)
    spatial = shape if mode == "3d" else shape[:2]
    cin, batch = input_channels(mode=mode, slab_size=SLAB_SIZE), crops_per_iteration(config)
    gen = torch.Generator().manual_seed(0)
    distinct = [{"mr": (torch.rand(batch, cin, *spatial, generator=gen) * 2 - 1).to(device),
                 "ct": (torch.rand(batch, 1, *spatial, generator=gen) * 2 - 1).to(device),
                 "mask": (torch.rand(batch, 1, *spatial, generator=gen) > 0.2).float().to(device)}
                for _ in range(min(iterations, 8))]
    return [distinct[i % len(distinct)] for i in range(iterations)]


def real_sampler(mode: str, config: dict, *, root: Path, subjects: int, shape: tuple[int, int, int],
                 device: torch.device | str = "cpu"):
    """The bundle's training batches (train.json: ``training_sampler``, three planes) over ``subjects`` head
    phantoms of ``shape`` voxels written to ``root`` (or already there); the volumes are loaded onto ``device``."""
    if not any(root.glob("*/ct.nii.gz")):
        write_phantom_dataset(root, n=subjects, size=shape)
    records = find_subjects(root).to_dict("records")
    return training_sampler(records, mode=mode, patch_size=config["patch_size"], slab_size=SLAB_SIZE,
                            batch_size=config["batch_size"], samples_per_volume=config["samples_per_volume"],
                            planes=PLANES, device=device, progress=False)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step(g, d, g_loss, g_opt, d_opt, batch: dict, *, adversarial: bool = True,
              amp_dtype: torch.dtype | None = None, memory_format: torch.memory_format | None = None) -> None:
    """One iteration in plain PyTorch, the same work as ``Pix2PixTrainer._iteration``: the Pix2Pix
    iteration (``adversarial``) or the default recipe's L1 generator step (``g``, ``d`` may be compiled)."""
    mr, ct, mask = batch["mr"], batch["ct"], batch["mask"] if MASKED_L1 else None
    if memory_format is not None:
        mr, ct = mr.contiguous(memory_format=memory_format), ct.contiguous(memory_format=memory_format)
        mask = mask.contiguous(memory_format=memory_format) if mask is not None else None
    autocast = torch.autocast(mr.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with autocast:
        fake = g(mr)
    if adversarial:
        d_opt.zero_grad(set_to_none=True)
        with autocast:
            logits = d(torch.cat([mr, mr]), torch.cat([ct, fake.detach()]))[-1]
            loss = discriminator_loss(*logits.chunk(2))
        loss.backward()
        d_opt.step()
    g_opt.zero_grad(set_to_none=True)
    with autocast:
        loss = g_loss(fake=fake, real=ct, fake_features=d(mr, fake) if adversarial else None, mask=mask)["total"]
    loss.backward()
    g_opt.step()


def in_turns(mode: str, config: dict, loader, prebuilt: list[dict], iterations: int, *,
             device: torch.device, adversarial: bool, channels_last: bool = False,
             compile: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Seconds of each iteration of :class:`Pix2PixTrainer` (as train.json sets it up) on ``loader`` and of
    :func:`bare_step` on ``prebuilt``, run in turns: one trainer iteration, then one bare iteration, each
    with its own networks. Both loops see the same load, so their ratio holds on a shared machine where
    whole-run times varied by 2x. A trainer iteration counts from the end of the previous bare one: its
    batch fetch and the engine's events are in it. Also returns the peak device memory (GB) of the run.
    ``channels_last`` and ``compile`` (train.json's options) apply to both loops."""
    g, d, g_loss = make_networks(mode, config, device)
    g_opt, d_opt = optimisers(g, d)
    trainer = Pix2PixTrainer(device=device, max_epochs=1, epoch_length=iterations, train_data_loader=loader,
                             generator=g, discriminator=d, g_optimizer=g_opt, d_optimizer=d_opt, g_loss=g_loss,
                             masked_l1=MASKED_L1, amp=AMP, channels_last=channels_last, compile=compile)
    trainer.adversarial_on = adversarial  # as TrainingProgress sets it for the recipe
    bare_g, bare_d, bare_loss = make_networks(mode, config, device)
    bare_g.train(), bare_d.train()
    bare_optimisers, bare_batches = optimisers(bare_g, bare_d), iter(prebuilt)
    memory_format = None
    if channels_last:
        memory_format = torch.channels_last_3d if mode == "3d" else torch.channels_last
        bare_g.to(memory_format=memory_format), bare_d.to(memory_format=memory_format)
    bare_g_forward, bare_d_forward = (torch.compile(bare_g), torch.compile(bare_d)) if compile else (bare_g, bare_d)
    times: dict[str, list[float]] = {"trainer": [], "bare": []}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    last = [time.perf_counter()]

    def bare_turn(_) -> None:
        synchronize(device)
        now = time.perf_counter()
        times["trainer"].append(now - last[0])
        bare_step(bare_g_forward, bare_d_forward, bare_loss, *bare_optimisers, next(bare_batches),
                  adversarial=adversarial, amp_dtype=trainer.amp_dtype, memory_format=memory_format)
        synchronize(device)
        last[0] = time.perf_counter()
        times["bare"].append(last[0] - now)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, bare_turn)
    trainer.run()
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return np.array(times["trainer"]), np.array(times["bare"]), peak


def sampler_seconds(sampler, iterations: int, *, device: torch.device) -> float:
    """Seconds per batch of the training sampler alone (on the CPU: one thread, as the trainer fetches batches,
    :class:`pipeline.engine.trainer.SingleThreadedFetch`)."""
    with torch_threads(1) if device.type == "cpu" else contextlib.nullcontext():
        sampler.draw()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(iterations):
            sampler.draw()
        synchronize(device)
        return (time.perf_counter() - start) / iterations


class OpCounter(TorchDispatchMode):
    """Counts the aten operators run inside it (views included) while not ``paused``: on a GPU each non-view
    one is a kernel launch, and eager PyTorch spends ~10-20 us of CPU time dispatching each, however small."""

    def __init__(self) -> None:
        super().__init__()
        self.count, self.paused = 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not self.paused
        return func(*args, **(kwargs or {}))


def iteration_flops(mode: str, config: dict, *, adversarial: bool = True) -> dict[str, int]:
    """FLOPs of one training iteration (convolutions and matrix products): ``total``, ``forward``,
    ``backward``, and the forward passes per network (``generator_forward``; ``discriminator_forward``
    over 3 x the batch: real and fake pairs for D's step, the fake pairs again for G's adversarial term).
    Backward FLOPs are not split per network: one backward pass runs through D into G. ``operators``: aten
    operators outside the optimiser steps (:class:`OpCounter`; on CUDA, Adam updates all parameters in a
    few multi-tensor kernels, on the CPU parameter by parameter, so its count here would mislead)."""
    g, d, g_loss = make_networks(mode, config)
    batch = prebuilt_batches(mode, config, iterations=1)[0]
    g_opt, d_opt = optimisers(g, d)
    flops, ops = FlopCounterMode(display=False), OpCounter()
    for optimiser in (g_opt, d_opt):
        optimiser.register_step_pre_hook(lambda *_: setattr(ops, "paused", True))
        optimiser.register_step_post_hook(lambda *_: setattr(ops, "paused", False))
    with flops, ops:
        bare_step(g, d, g_loss, g_opt, d_opt, batch, adversarial=adversarial)
    counts = {module: {str(op): n for op, n in by_op.items()} for module, by_op in flops.get_flop_counts().items()}
    forward = "aten.convolution"  # the networks are convolutions only
    return {"total": flops.get_total_flops(), "forward": counts["Global"].get(forward, 0),
            "backward": flops.get_total_flops() - counts["Global"].get(forward, 0),
            "generator_forward": counts.get(type(g).__name__, {}).get(forward, 0),
            "discriminator_forward": counts.get(type(d).__name__, {}).get(forward, 0), "operators": ops.count}


def cpu_seconds_per_iteration(mode: str, config: dict, *, iterations: int = 5, adversarial: bool = True) -> float:
    """Fewest CPU seconds of one bare iteration on one thread (after a warm-up one): what a core does per
    iteration however busy the machine is, unlike wall-clock time."""
    g, d, g_loss = make_networks(mode, config)
    g_opt, d_opt = optimisers(g, d)
    seconds = []
    with torch_threads(1):
        for batch in prebuilt_batches(mode, config, iterations=iterations + 1):
            start = time.thread_time()
            bare_step(g, d, g_loss, g_opt, d_opt, batch, adversarial=adversarial)
            seconds.append(time.thread_time() - start)
    return min(seconds[1:])


def generator_step_variants(mode: str, config: dict, *, iterations: int = 3) -> dict[str, float]:
    """CPU seconds (one thread, fewest of ``iterations`` after a warm-up) of the default recipe's step
    (generator forward, L1, backward, Adam) in float32, with channels-last tensors, and under
    bfloat16 autocast; plus ``bf16_mean_abs_diff_hu``: how far bf16 moves the generator's output from
    float32 (same weights and input, HU). Candidates for CPU speed that the issue asked to measure."""
    batch = prebuilt_batches(mode, config, iterations=1)[0]
    results = {}
    for name in ("float32", "channels_last", "bfloat16"):
        g = make_networks(mode, config)[0]
        optimizer = pix2pix_optimizer(g.parameters(), lr=LEARNING_RATE)
        mr, ct = batch["mr"], batch["ct"]
        if name == "channels_last":
            g, mr = g.to(memory_format=torch.channels_last), mr.contiguous(memory_format=torch.channels_last)
        seconds = []
        with torch_threads(1):
            for _ in range(iterations + 1):
                start = time.thread_time()
                with torch.autocast("cpu", dtype=torch.bfloat16) if name == "bfloat16" else contextlib.nullcontext():
                    fake = g(mr)
                loss = (fake.float() - ct).abs().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seconds.append(time.thread_time() - start)
        results[name] = min(seconds[1:])
    g = make_networks(mode, config)[0].eval()
    with torch.no_grad():
        reference = g(batch["mr"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = g(batch["mr"]).float()
    results["bf16_mean_abs_diff_hu"] = float((low - reference).abs().mean()) * (HU_MAX - HU_MIN) / 2
    return results


def benchmark_mode(mode: str, config: dict, *, iterations: int, warmup: int, root: Path, subjects: int,
                   shape: tuple[int, int, int], device: torch.device, adversarial: bool,
                   channels_last: bool = False, compile: bool = False) -> dict[str, float]:
    """Mean seconds per iteration (after ``warmup`` iterations) of the trainer on the real sampler (``real``)
    and on pre-built batches (``engine``), each with the bare loop it ran in turns with (``bare_real``,
    ``bare_engine``: :func:`in_turns`), their peak device memory (``memory_real``, ``memory_engine``, GB), and
    the sampler's seconds per batch on its own (``sampler``)."""
    prebuilt = prebuilt_batches(mode, config, iterations=iterations + warmup, device=device)
    sampler = real_sampler(mode, config, root=root, subjects=subjects, shape=shape, device=device)
    seconds = {}
    for name, trainer_loader in (("real", sampler), ("engine", prebuilt)):
        trainer, bare, peak = in_turns(mode, config, trainer_loader, prebuilt, iterations + warmup, device=device,
                                       adversarial=adversarial, channels_last=channels_last, compile=compile)
        seconds |= {name: trainer[warmup:].mean(), f"bare_{name}": bare[warmup:].mean(), f"memory_{name}": peak}
    return seconds | {"sampler": sampler_seconds(sampler, iterations, device=device)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--configs", nargs="+", default=["default"], choices=["default", "gpu", "large"],
                        help="default: train.json (4 x 2 crops); gpu: the bundle docs' GPU recipe (8 x 4 crops); "
                             "large: 16 x 8 crops")
    parser.add_argument("--variants", nargs="+", default=["eager"], choices=sorted(VARIANTS),
                        help="train.json's channels_last / compile options, applied to both loops")
    parser.add_argument("--recipe", default="l1", choices=["l1", "gan"],
                        help="l1: the default recipe (masked L1, no discriminator step); gan: the Pix2Pix iteration")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--modes", nargs="+", default=["2.5d"], choices=["2.5d", "3d"],
                        help="3d (64^3 crops) takes ~4 s per iteration on 2 cores")
    parser.add_argument("--warmup", type=int, default=3, help="first iterations left out of the means")
    parser.add_argument("--phantoms", type=int, default=4, help="head phantoms for the real sampler")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keeps the phantoms for the next run (default: a temporary folder)")
    parser.add_argument("--phantom-shape", type=int, nargs=3, default=[128, 128, 96], metavar=("X", "Y", "Z"))
    parser.add_argument("--flops", action="store_true", help="FLOPs per iteration and this CPU's FLOP/s")
    parser.add_argument("--cpu-variants", action="store_true",
                        help="only time the L1 generator step in float32 / channels-last / bf16 autocast (one thread)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.cpu_variants:
        for mode in args.modes:
            result = generator_step_variants(mode, CONFIGS[mode, "default"])
            print(f"{mode}: CPU s per L1 generator step, one thread: float32 {result['float32']:.3f}, channels-last "
                  f"{result['channels_last']:.3f} ({result['float32'] / result['channels_last']:.2f}x), bf16 autocast "
                  f"{result['bfloat16']:.3f} ({result['float32'] / result['bfloat16']:.2f}x); bf16 output differs from "
                  f"float32 by {result['bf16_mean_abs_diff_hu']:.1f} HU on average")
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    precision = autocast_dtype(device, amp=AMP)
    print(f"torch {torch.__version__}, device {device} ({name}), {precision or 'float32'}, recipe {args.recipe}; "
          f"real sampler: {args.phantoms} phantoms of {'x'.join(map(str, args.phantom_shape))} voxels, three planes")
    print(f"{'mode':5} {'config':8} {'variant':13} {'patch':>5} {'crops':>5} {'bare':>8} {'engine':>8} {'real':>8} "
          f"{'engine/bare':>11} {'real/bare':>9} {'sampler':>8} {'memory':>7}   "
          "(crops/s; sampler: ms per batch; memory: peak GB, real loop)")
    phantoms = f"{args.phantoms}x{'x'.join(map(str, args.phantom_shape))}"
    with contextlib.nullcontext(args.work_dir) if args.work_dir else tempfile.TemporaryDirectory(
            prefix="benchmark_training_") as tmp:
        for mode, config_name, variant in itertools.product(args.modes, args.configs, args.variants):
            config, crops = CONFIGS[mode, config_name], crops_per_iteration(CONFIGS[mode, config_name])
            seconds = benchmark_mode(mode, config, iterations=args.iterations, warmup=args.warmup,
                                     root=Path(tmp) / f"{mode}-{phantoms}", subjects=args.phantoms,
                                     shape=tuple(args.phantom_shape), device=device,
                                     adversarial=args.recipe == "gan", **VARIANTS[variant])
            rate = {key: crops / seconds[key] for key in ("real", "engine", "bare_real", "bare_engine")}
            print(f"{mode:5} {config_name:8} {variant:13} {config['patch_size']:>5} {crops:>5} "
                  f"{rate['bare_real']:>8.1f} "
                  f"{rate['engine']:>8.1f} {rate['real']:>8.1f} {rate['engine'] / rate['bare_engine']:>11.3f} "
                  f"{rate['real'] / rate['bare_real']:>9.3f} {seconds['sampler'] * 1e3:>8.2f} "
                  f"{seconds['memory_real']:>7.2f}")
            if args.flops:
                gan = args.recipe == "gan"
                flops = iteration_flops(mode, config, adversarial=gan)
                giga = {k: n / 1e9 for k, n in flops.items()}
                core = cpu_seconds_per_iteration(mode, config, adversarial=gan)
                print(f"      GFLOP per iteration {giga['total']:.2f} (forward {giga['forward']:.2f}: generator "
                      f"{giga['generator_forward']:.2f}, discriminator {giga['discriminator_forward']:.2f}; "
                      f"backward {giga['backward']:.2f}); {flops['operators']} aten operators per iteration "
                      "outside the optimiser steps")
                print(f"      achieved: {giga['total'] / seconds['bare_real']:.1f} GFLOP/s in the bare loop above "
                      f"({seconds['bare_real']:.3f} s per iteration, wall clock); {giga['total'] / core:.1f} "
                      f"GFLOP/s per core ({core:.3f} CPU s per iteration on one thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
