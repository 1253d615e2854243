"""MR intensity augmentation of a training batch, on the training device, every crop at once.

What it teaches: an MR's intensities depend on the scanner, the sequence and the coil as much as on the tissue,
while the CT does not. Each crop's MR is changed as another scanner or sequence could have changed it; its CT
and mask stay as they are, so the network learns to read anatomy and contrast ratios rather than one
simulator's numbers. Per crop, each with its probability (:class:`MRIntensityAugmentation`), in this order:

1. contrast: a random gamma ``s ** g`` and a random monotone histogram remap (piecewise linear, the ends
   fixed: zero signal stays zero, the top of the normalised range stays the top);
2. bias field: a smooth multiplicative field (the exponential of a random quadratic over the crop);
3. blur: an in-plane Gaussian of random width (the scanner's point spread);
4. Gibbs ringing: k-space truncated in-plane at a random fraction of the highest frequency;
5. Rician noise: the magnitude of signal plus complex Gaussian noise of random level (air gets a noise floor,
   as in a real magnitude image).

Intensities are handled as signal ``s = (mr + 1) / 2`` (0 = no signal, 1 = the subject's 99.5th percentile
inside the body, :func:`transforms.intensity.normalize_mr`) and clipped back to [0, 1], the range inference
sees. The 2.5D slab's slices (channels) share a crop's draws: they are one acquisition.

Why not MONAI's ``RandBiasField`` / ``RandAdjustContrast`` / ``RandGibbsNoise`` / ``RandRicianNoise`` /
``RandHistogramShift``: they work one image at a time with a numpy random state (the bias field is even built
in numpy on the CPU), which would take the batch off the device and out of the sampler's seeded stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["MRIntensityAugmentation", "augmentation_for"]


@dataclass(frozen=True)
class MRIntensityAugmentation:
    """Probabilities and ranges of each change (see the module docstring); ``p_*`` = 0 switches one off."""

    p_gamma: float = 0.5
    gamma_range: tuple[float, float] = (0.7, 1.4)  # log-uniform
    p_histogram: float = 0.3
    histogram_jitter: float = 0.06  # knots moved by up to this much of the signal range
    p_bias: float = 0.5
    bias_strength: float = 0.3  # coefficient bound of the quadratic in the exponent (x, y in [-1, 1])
    p_blur: float = 0.3
    blur_sigma_px: tuple[float, float] = (0.3, 1.2)
    p_gibbs: float = 0.2
    gibbs_cutoff: tuple[float, float] = (0.5, 0.9)  # kept fraction of the highest in-plane frequency
    p_noise: float = 0.5
    noise_sigma: tuple[float, float] = (0.005, 0.04)  # of the normalised signal range

    def __call__(self, mr: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """``mr`` ``(N, C, H, W)`` in [-1, 1] (C: a 2.5D slab) -> the same shape, augmented, in [-1, 1]."""
        if mr.ndim != 4:
            raise ValueError(f"MR intensity augmentation takes 2-D/2.5D crops (N, C, H, W), got {tuple(mr.shape)}")
        n, device = mr.shape[0], mr.device

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=device)

        def between(bounds: tuple[float, float]) -> torch.Tensor:
            return (bounds[0] + uniform(n) * (bounds[1] - bounds[0])).view(n, 1, 1, 1)

        # every crop's draws first: which changes it gets, and their parameters
        chosen = {name: uniform(n) < getattr(self, f"p_{name}") for name in _CHANGES}
        low, high = math.log(self.gamma_range[0]), math.log(self.gamma_range[1])
        gamma = torch.exp(low + uniform(n) * (high - low)).view(n, 1, 1, 1)
        knots = _histogram_knots(n, self.histogram_jitter, uniform, device)
        bias = (uniform(n, 5) * 2 - 1) * self.bias_strength
        blur, cutoff, sigma = between(self.blur_sigma_px), between(self.gibbs_cutoff), between(self.noise_sigma)

        def noisy(x: torch.Tensor, i) -> torch.Tensor:
            real, imaginary = (torch.randn(x.shape, generator=generator, device=device) for _ in range(2))
            return torch.sqrt((x + sigma[i] * real) ** 2 + (sigma[i] * imaginary) ** 2)

        changes = {
            "gamma": lambda x, i: torch.exp(torch.log(x.clamp_min(1e-6)) * gamma[i]),
            "histogram": lambda x, i: _histogram_remap(x, knots[i]),
            "bias": lambda x, i: x * _bias_field(bias[i], *x.shape[-2:]),
            "blur": lambda x, i: _gaussian_blur(x, blur[i]),
            "gibbs": lambda x, i: _truncate_k_space(x, cutoff[i]),
            "noise": noisy,
        }
        signal = ((mr + 1.0) * 0.5).clamp(0.0, 1.0)
        for name in _CHANGES:
            signal = _apply_to_chosen(changes[name], signal, chosen[name])
        return signal.clamp(0.0, 1.0) * 2.0 - 1.0


#: The changes in the order they are applied.
_CHANGES = ("gamma", "histogram", "bias", "blur", "gibbs", "noise")


def _apply_to_chosen(change, signal: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``change(crops, which)`` on the chosen crops only. On a GPU every crop is computed and the result picked
    with ``torch.where`` (selecting rows would wait for the device); on the CPU only the chosen ones (a change
    costs 3-6 ms per 4 crops of 5 x 128 x 128 there)."""
    if signal.device.type != "cpu":
        return torch.where(chosen.view(-1, 1, 1, 1), change(signal, slice(None)), signal)
    which = chosen.nonzero().flatten()
    if which.numel() == 0:
        return signal
    out = signal.clone()
    out[which] = change(signal[which], which)
    return out


def _histogram_knots(n: int, jitter: float, uniform, device) -> torch.Tensor:
    """``(N, 7)`` values at 0, 1/6, ... 1 of a random monotone map of [0, 1] onto itself (0 and 1 fixed)."""
    grid = torch.linspace(0.0, 1.0, 7, device=device)
    moved = (grid[1:-1] + (uniform(n, 5) * 2 - 1) * jitter).clamp(0.0, 1.0).sort(dim=1).values
    return torch.cat([grid.new_zeros(n, 1), moved, grid.new_ones(n, 1)], dim=1)


def _histogram_remap(signal: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear map of ``signal`` ``(N, C, H, W)`` through each crop's ``knots`` ``(N, K + 1)``."""
    n, segments = signal.shape[0], knots.shape[1] - 1
    position = signal * segments
    segment = position.floor().clamp(0, segments - 1).long()
    fraction = position - segment
    flat = segment.reshape(n, -1)
    start, stop = knots.gather(1, flat).view_as(signal), knots.gather(1, flat + 1).view_as(signal)
    return start + fraction * (stop - start)


def _bias_field(coefficients: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, 1, H, W)``: exp of the quadratic ``coefficients`` ``(N, 5)`` (x, y, xy, x^2, y^2) over the crop,
    x and y in [-1, 1], with mean exponent 0 (a change of contrast, not of scale)."""
    n, device = coefficients.shape[0], coefficients.device
    y = torch.linspace(-1.0, 1.0, height, device=device).view(1, height, 1)
    x = torch.linspace(-1.0, 1.0, width, device=device).view(1, 1, width)
    terms = torch.stack(torch.broadcast_tensors(x, y, x * y, x * x, y * y), dim=1)  # (1, 5, H, W)
    exponent = (coefficients.view(n, 5, 1, 1) * terms).sum(1, keepdim=True)
    return torch.exp(exponent - exponent.mean(dim=(2, 3), keepdim=True))


def _gaussian_blur(signal: torch.Tensor, sigma: torch.Tensor, *, radius: int = 3) -> torch.Tensor:
    """Separable in-plane Gaussian blur, one width per crop (``sigma`` ``(N, 1, 1, 1)`` pixels)."""
    n, channels, height, width = signal.shape
    offsets = torch.arange(-radius, radius + 1, device=signal.device, dtype=signal.dtype)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(n, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, dim=0)  # (N * C, K)
    planes = torch.nn.functional.pad(signal.reshape(1, n * channels, height, width), [radius] * 4, mode="replicate")
    planes = torch.nn.functional.conv2d(planes, kernel.view(n * channels, 1, 1, -1), groups=n * channels)
    planes = torch.nn.functional.conv2d(planes, kernel.view(n * channels, 1, -1, 1), groups=n * channels)
    return planes.view(n, channels, height, width)


def _truncate_k_space(signal: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """Gibbs ringing: in-plane frequencies above ``cutoff`` (``(N, 1, 1, 1)``, fraction of the highest) removed."""
    height, width = signal.shape[-2:]
    fy = torch.fft.fftfreq(height, device=signal.device).abs().view(1, 1, height, 1) * 2
    fx = torch.fft.rfftfreq(width, device=signal.device).view(1, 1, 1, -1) * 2
    keep = (fy <= cutoff) & (fx <= cutoff)
    return torch.fft.irfft2(torch.fft.rfft2(signal) * keep, s=(height, width))


def augmentation_for(name: str | None) -> MRIntensityAugmentation | None:
    """The bundle option ``mr_augmentation``: ``"none"`` (or None) or ``"intensity"`` (the defaults above)."""
    if name in (None, "none", "None", "null"):
        return None
    if name == "intensity":
        return MRIntensityAugmentation()
    raise ValueError(f"mr_augmentation must be 'none' or 'intensity', got {name!r}")
