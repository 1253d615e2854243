"""ONNX export of the trained sCT generator and inference with onnxruntime (``runtime="onnx"``).

The exported graph is the generator alone, for one window batch ``(B, C, P, P[, P])`` (batch dynamic,
window fixed at the training patch size: inference always feeds windows of that size). Everything
around it (loading, RAS, normalisation, windows, blending, inversion, writing) is the PyTorch
pipeline's, unchanged: :class:`OnnxGenerator` is a ``torch.nn.Module`` that runs the ONNX session in its
``forward``, so :func:`pipeline.sct.inference.predict_unit_volume` does not know the difference.

A stale ONNX file next to a retrained checkpoint would silently give the old model's sCT, so the export
records the checkpoint's SHA-256 in the model's metadata and :func:`use_runtime` refuses a mismatch.
Export uses PyTorch's TorchScript-based exporter (``dynamo=False``): the new exporter needs the
``onnxscript`` package, and this graph (convolutions, instance norm, tanh) needs nothing newer.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.io.atomic import atomic_path

__all__ = ["CHECKPOINT_HASH_KEY", "RUNTIMES", "OnnxGenerator", "export_onnx", "file_sha256", "use_runtime"]

RUNTIMES = ("torch", "onnx")
CHECKPOINT_HASH_KEY = "rtsynth.checkpoint_sha256"
OPSET = 17


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def export_onnx(
    generator: torch.nn.Module,
    path: str | os.PathLike,
    *,
    in_channels: int,
    spatial_dims: int,
    patch_size: int,
    checkpoint_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Export ``generator`` (eval mode: dropout off) to ONNX at ``path``, atomically; the input ``"mr"`` is
    ``(batch, in_channels, patch_size x spatial_dims)``, the output ``"sct"`` in [-1, 1]. The SHA-256 of
    ``checkpoint_path`` (the weights ``generator`` holds) is stored under :data:`CHECKPOINT_HASH_KEY`."""
    import onnx  # optional dependency (extra "onnx"), only needed here

    generator = generator.eval().cpu()
    example = torch.zeros(2, in_channels, *([patch_size] * spatial_dims))
    with atomic_path(path, overwrite=overwrite) as tmp:
        with warnings.catch_warnings():  # the legacy exporter announces its own deprecation
            warnings.simplefilter("ignore")
            torch.onnx.export(generator, (example,), str(tmp), dynamo=False, input_names=["mr"], output_names=["sct"],
                              dynamic_axes={"mr": {0: "batch"}, "sct": {0: "batch"}}, opset_version=OPSET)
        model = onnx.load(str(tmp))
        if checkpoint_path is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = CHECKPOINT_HASH_KEY, file_sha256(checkpoint_path)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return Path(path)


class OnnxGenerator(torch.nn.Module):
    """An ONNX generator behind the ``torch.nn.Module`` interface (CPU, float32 in and out)."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime  # optional dependency (extra "onnx")

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # the same CPU budget as PyTorch
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (self.input,) = self.session.get_inputs()
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def window_shape(self) -> tuple:
        """``(channels, *window)`` the graph takes (the batch axis is dynamic)."""
        return tuple(self.input.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input.name: array})[0])


def use_runtime(predictor, runtime: str, *, onnx_path: str | os.PathLike | None = None,
                ckpt_path: str | os.PathLike | None = None):
    """Return ``predictor`` running its generator on ``runtime``: ``"torch"`` (unchanged) or ``"onnx"``
    (``onnx_path`` through onnxruntime on the CPU). For ONNX, the file must exist, take the predictor's
    window, and, when ``ckpt_path`` is given, come from that checkpoint (SHA-256 in its metadata)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return predictor
    if onnx_path is None or not Path(onnx_path).is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} missing; export it from the checkpoint first: python -m "
                                "monai.bundle run export_onnx --config_file bundles/mri_to_ct/configs/inference.json")
    if predictor.device.type != "cpu":
        raise ValueError(f"the ONNX runtime runs on the CPU; the predictor is on {predictor.device}")
    generator = OnnxGenerator(onnx_path)
    if ckpt_path is not None:
        recorded, actual = generator.metadata.get(CHECKPOINT_HASH_KEY), file_sha256(ckpt_path)
        if recorded != actual:
            raise ValueError(f"{onnx_path} was not exported from {ckpt_path} (checkpoint SHA-256 {actual[:12]}..., "
                             f"recorded {str(recorded)[:12]}...); export it again")
    channels = predictor.window["slab_size"] if predictor.mode == "2.5d" else 1
    expected = (channels, *([predictor.window["patch_size"]] * (3 if predictor.mode == "3d" else 2)))
    if generator.window_shape != expected:
        raise ValueError(f"{onnx_path} takes windows {generator.window_shape}; the predictor feeds {expected} "
                         "(mode, slab_size, patch_size must match the export)")
    predictor.generator = generator
    return predictor
