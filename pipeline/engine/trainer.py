"""Conditional Pix2Pix on MONAI's engine.

MONAI's ``GanTrainer`` feeds the generator random latents and ``AdversarialTrainer`` shows the
discriminator only the fake, so neither is conditional Pix2Pix. ``Pix2PixTrainer`` keeps MONAI's
``Trainer`` (and so its handlers, metrics, events) and replaces one iteration:

1. fake = G(mr)
2. D step on D(mr, ct) as real vs D(mr, fake.detach()) as fake (loss halved)
3. G step on adversarial(D(mr, fake)) + lambda * L1(fake, ct) (+ optional extras)

``engine.state.output`` is a flat dict of floats (losses and learning rates), ready for
``StatsHandler`` / ``TensorBoardStatsHandler`` with ``output_transform=lambda x: x``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from collections.abc import Sequence

import torch
from ignite.engine import Events
from monai.engines import Trainer
from monai.engines.utils import default_prepare_batch
from torch.utils.data import DataLoader

from networks.losses import Pix2PixGeneratorLoss, discriminator_loss
from pipeline.errors import InputError, as_flag

logger = logging.getLogger(__name__)

#: the start of torch's warning for a scheduler stepped before its optimizer (see Pix2PixTrainer)
UNSTEPPED_SCHEDULER_WARNING = "Detected call of `lr_scheduler.step()` before `optimizer.step()`"


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """MetaTensor -> Tensor: metadata is not needed inside network code and slows autograd."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` intra-op CPU threads, then restore the previous count."""
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != previous:
            torch.set_num_threads(previous)


class SingleThreadedFetch:
    """Assemble each batch with one intra-op thread; the iteration keeps the process's threads.

    With ``num_workers`` 0 (the bundle's default) batches are built in the training process: crops,
    flips, slabs, collation, each a small copy whose parallel region waits for every thread. Measured on
    the shared 2-core machine (2.5D, 4 crops of 128^2 per batch): 7.4-10 ms per batch single-threaded,
    11-14 ms with 2 threads, and up to 300 ms whenever another process held the second core.

    Attached to the engine: one thread from ``GET_BATCH_STARTED``; back at ``GET_BATCH_COMPLETED`` (and,
    should a fetch end an epoch without a batch, at the epoch's or the run's end).
    """

    def __init__(self) -> None:
        self._threads: contextlib.ExitStack | None = None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self.start)
        for event in (Events.GET_BATCH_COMPLETED, Events.EPOCH_COMPLETED, Events.TERMINATE, Events.COMPLETED):
            engine.add_event_handler(event, self.restore)

    def start(self, _engine=None) -> None:
        if self._threads is None:  # a restarted data iterator fetches again before any batch completed
            self._threads = contextlib.ExitStack()
            self._threads.enter_context(torch_threads(1))

    def restore(self, _engine=None) -> None:
        if self._threads is not None:
            self._threads.close()
            self._threads = None


def unwrap_ddp(module):
    """The network inside a ``DistributedDataParallel`` wrapper (anything else is returned as is):
    checkpoints hold unwrapped weights and validation must not issue DDP collectives."""
    return module.module if isinstance(module, torch.nn.Module) and hasattr(module, "module") else module


class Pix2PixTrainer(Trainer):
    """One conditional GAN iteration per batch of ``{image_key, target_key, mask_key}`` (default
    ``mr``, ``ct``, ``mask``; images in [-1, 1], mask 0/1). The names ``mr``/``ct`` below stand for the
    condition and the target of any paired translation (the X-ray bundle uses SE -> DE).

    Args:
        generator, discriminator: the networks (optionally DDP-wrapped).
        g_optimizer, d_optimizer: their optimizers.
        g_loss: :class:`networks.losses.Pix2PixGeneratorLoss` (lambda = 100 by default).
        adversarial_mode: "vanilla", "lsgan" or "hinge" for the discriminator loss.
        masked_l1: average L1 terms inside the body mask only.
        amp: mixed precision (:func:`autocast_dtype`): bfloat16 autocast where the GPU supports it (no loss
            scaling needed), else float16 with a ``GradScaler``; on a CPU bfloat16 autocast where it is native
            (AMX or AVX512-BF16), else float32.
        channels_last: networks and batches in channels-last memory format (an option for GPUs, whose
            convolutions may be faster so; measured 1.00x on this project's CPU).
        compile: run the networks through ``torch.compile`` (an option: compilation costs minutes up front).
            Checkpoints keep the plain modules' weights.
        prefetch_batches: once an iteration's kernels are queued, let a data source with a ``prefetch()``
            method (:class:`pipeline.data.crop_sampler.BodyCropSampler`) draw the next batch, so that its
            Python and kernel launches overlap the GPU's work. None (default): on CUDA only; the batches are
            the same either way.
    """

    def __init__(
        self,
        *,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: DataLoader,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        g_loss: Pix2PixGeneratorLoss | None = None,
        adversarial_mode: str = "vanilla",
        masked_l1: bool = False,
        image_key: str = "mr",
        target_key: str = "ct",
        mask_key: str = "mask",
        epoch_length: int | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        prefetch_batches: bool | None = None,
        non_blocking: bool = False,
    ) -> None:
        device = torch.device(device)
        if epoch_length is None and not hasattr(train_data_loader, "__len__"):
            # an endless source (the sCT crop sampler) would make one epoch that never ends: no checkpoint,
            # no validation
            raise InputError("--epoch_length is needed: training batches are drawn endlessly (e.g. 100)")
        amp = as_flag(amp, name="amp")
        amp_dtype = autocast_dtype(device, amp=amp)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=default_prepare_batch,
            handlers=train_handlers,
            amp=amp_dtype is not None and device.type == "cuda",  # MONAI's flag makes a CUDA GradScaler
            decollate=False,
        )
        self.amp_dtype = amp_dtype
        precision = f"{amp_dtype} autocast".removeprefix("torch.") if amp_dtype else "float32"
        if amp and not amp_dtype:
            precision += " (amp asked for; this CPU has no native bfloat16)"
        logger.info("training precision on %s: %s", device.type, precision)
        # D's learning-rate schedule runs every epoch, but D is not stepped in the L1 phase (all of training by
        # default), and an fp16 scaler skips a step on overflow: torch's "scheduler before optimizer" warning is
        # then noise in every user's log, not a bug in the order of calls
        warnings.filterwarnings("ignore", message=re.escape(UNSTEPPED_SCHEDULER_WARNING), category=UserWarning)
        self.prefetch_batches = device.type == "cuda" if prefetch_batches is None else bool(prefetch_batches)
        self.memory_format = None
        if as_flag(channels_last, name="channels_last"):
            self.memory_format = torch.channels_last  # 2-D networks; a 3-D batch switches to channels_last_3d
        self.generator = generator
        self.discriminator = discriminator
        # what the iteration calls; checkpoints and validation keep using the plain modules
        compiled = as_flag(compile, name="compile")
        self.generator_forward = torch.compile(generator) if compiled else generator
        self.discriminator_forward = torch.compile(discriminator) if compiled else discriminator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.g_loss = g_loss if g_loss is not None else Pix2PixGeneratorLoss(adversarial_mode=adversarial_mode)
        self.adversarial_mode = adversarial_mode
        self.masked_l1 = as_flag(masked_l1, name="masked_l1")
        self.adversarial_on = True  # False during an L1 warm-up (set by pipeline.engine.budget.TrainingProgress)
        self.keys = (image_key, target_key, mask_key)
        SingleThreadedFetch().attach(self)
        # one scaler per optimiser so an overflow in D does not skip G's step; bfloat16 has float32's range
        # and needs none
        scaling = amp_dtype == torch.float16
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=scaling)
        self.d_scaler = torch.amp.GradScaler("cuda", enabled=scaling)

    def _autocast(self):
        if not self.amp_dtype:
            return contextlib.nullcontext()
        return torch.autocast(self.state.device.type, dtype=self.amp_dtype)

    def _to_memory_format(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Channels-last batches (and, on the first call, networks) when asked for; unchanged otherwise."""
        if self.memory_format is None:
            return list(tensors)
        if tensors[0].ndim == 5:
            self.memory_format = torch.channels_last_3d
        if not getattr(self, "_networks_formatted", False):
            self.generator.to(memory_format=self.memory_format)
            self.discriminator.to(memory_format=self.memory_format)
            self._networks_formatted = True
        return [t.contiguous(memory_format=self.memory_format) for t in tensors]

    def _discriminator_step(self, mr: torch.Tensor, ct: torch.Tensor, fake: torch.Tensor) -> dict:
        """One D step on real pairs vs generated pairs (G frozen via detach); returns the loss parts."""
        self.d_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            # one forward over real and fake pairs: a single DDP forward per backward, and instance
            # norm works per sample so stacking changes nothing
            logits = self.discriminator_forward(torch.cat([mr, mr]), torch.cat([ct, fake.detach()]))[-1]
            real_logits, fake_logits = logits.chunk(2)
            d_parts = discriminator_loss(real_logits, fake_logits, mode=self.adversarial_mode, reduction_parts=True)
        self.d_scaler.scale(d_parts["total"]).backward()
        self.d_scaler.step(self.d_optimizer)
        self.d_scaler.update()
        return d_parts

    def _iteration(self, engine: Pix2PixTrainer, batchdata: dict) -> dict[str, float]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        to = dict(device=engine.state.device, non_blocking=engine.non_blocking)
        image_key, target_key, mask_key = engine.keys
        mr, ct = plain_tensor(batchdata[image_key]).to(**to), plain_tensor(batchdata[target_key]).to(**to)
        mask = plain_tensor(batchdata[mask_key]).to(**to) if engine.masked_l1 and mask_key in batchdata else None
        mr, ct = engine._to_memory_format(mr, ct)
        engine.generator.train()
        engine.discriminator.train()
        g, d = engine.generator_forward, engine.discriminator_forward

        with engine._autocast():
            fake = g(mr)

        # L1 warm-up (pipeline.engine.budget.TrainingProgress sets adversarial_on): no D step and no
        # adversarial term, so the generator first learns the mapping without the GAN's noise
        adversarial = engine.adversarial_on
        d_parts = engine._discriminator_step(mr, ct, fake) if adversarial else None

        # generator: fool D (D's parameters get gradients but are not stepped here)
        engine.g_optimizer.zero_grad(set_to_none=True)
        with engine._autocast():
            fake_features = d(mr, fake) if adversarial else None
            real_features = None
            if adversarial and engine.g_loss.feature_matching_weight > 0:
                with torch.no_grad():
                    real_features = [f.detach() for f in d(mr, ct)]
            terms = engine.g_loss(fake=fake, real=ct, fake_features=fake_features, real_features=real_features, mask=mask)
        engine.g_scaler.scale(terms["total"]).backward()
        engine.g_scaler.step(engine.g_optimizer)
        engine.g_scaler.update()

        if engine.prefetch_batches:  # the next batch's kernels are queued while the GPU runs this iteration's
            prefetch = getattr(engine.state.dataloader, "prefetch", None)
            if prefetch is not None:
                prefetch()
        output = {f"G_{name}": float(value.detach()) for name, value in terms.items()}
        if d_parts is not None:
            output.update({"D_real": float(d_parts["real"].detach()), "D_fake": float(d_parts["fake"].detach())})
        output["lr_G"] = engine.g_optimizer.param_groups[0]["lr"]
        output["lr_D"] = engine.d_optimizer.param_groups[0]["lr"]
        return output


def cpu_has_native_bf16() -> bool:
    """True on a CPU whose vector or matrix units compute bfloat16 (Intel AMX or AVX512-BF16): there oneDNN's
    bf16 convolutions are faster than float32's; elsewhere bf16 is emulated and slower, so it is not used."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence looked up with a default
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(device: torch.device | str, *, amp: bool) -> torch.dtype | None:
    """The mixed-precision type of a training run: None (float32) without ``amp``; on CUDA bfloat16 where the GPU
    supports it (Ampere and later: float32's exponent range, so no loss scaling), float16 otherwise; on a CPU
    bfloat16 where it is native (:func:`cpu_has_native_bf16`), float32 otherwise. Weights, optimiser states and
    losses stay float32 either way (autocast)."""
    kind = torch.device(device).type
    if not amp:
        return None
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if kind == "cpu" and cpu_has_native_bf16() else None


def constant_then_linear_decay(optimizer: torch.optim.Optimizer, *, constant_epochs: int, decay_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Pix2Pix schedule (stepped once per epoch): lr constant for ``constant_epochs``, then linearly
    to zero over ``decay_epochs``."""

    def factor(epoch: int) -> float:
        if epoch < constant_epochs:
            return 1.0
        return max(0.0, 1.0 - (epoch - constant_epochs + 1) / float(decay_epochs + 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)


def fusable(parameters: Sequence) -> bool:
    """True if torch's fused Adam kernel can update ``parameters``: floating-point tensors on the CPU or CUDA.
    Why fused: one kernel over all tensors instead of a dozen element-wise passes per step; on this project's CPU
    the X-ray generator's Adam step took 31 ms against 98 ms (the same update up to rounding)."""
    return bool(parameters) and all(isinstance(p, torch.Tensor) and p.is_floating_point()
                                    and p.device.type in ("cpu", "cuda") for p in parameters)


def pix2pix_adam(parameters, *, lr: float = 2e-4, beta1: float = 0.5) -> torch.optim.Adam:
    """Adam with the Pix2Pix defaults (lr 2e-4, betas (0.5, 0.999)), fused where it can be (:func:`fusable`)."""
    params = list(parameters)
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), fused=fusable(params) or None)


def pix2pix_optimizer(parameters, *, name: str = "adam", lr: float = 2e-4, beta1: float = 0.5,
                      weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """``adam``: :func:`pix2pix_adam` (no weight decay, as in Pix2Pix); ``adamw``: AdamW with the same betas
    and decoupled ``weight_decay`` (a recipe ingredient, often paired with a cosine schedule), fused likewise."""
    if name == "adam":
        return pix2pix_adam(parameters, lr=lr, beta1=beta1)
    if name == "adamw":
        params = list(parameters)
        return torch.optim.AdamW(params, lr=lr, betas=(beta1, 0.999), weight_decay=weight_decay,
                                 fused=fusable(params) or None)
    raise ValueError(f"optimizer must be 'adam' or 'adamw', got {name!r}")


def epochs_for_iterations(*, iterations: int, epoch_length: int) -> int:
    return max(1, math.ceil(iterations / max(1, epoch_length)))
