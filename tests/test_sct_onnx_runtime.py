"""pipeline.sct.onnx_runtime: ONNX export of the generator, onnxruntime inference within 1 HU of PyTorch,
and the refusals of use_runtime (missing file, stale checkpoint, other window)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from networks import Pix2PixUNet
from pipeline.data.phantoms.head import write_phantom_dataset
from pipeline.sct.inference import SCTPredictor
from pipeline.sct.onnx_runtime import CHECKPOINT_HASH_KEY, OnnxGenerator, export_onnx, file_sha256, use_runtime

pytest.importorskip("onnxruntime")

PATCH = 32


def tiny_generator(upsample: str = "transpose") -> Pix2PixUNet:
    torch.manual_seed(0)
    generator = Pix2PixUNet(spatial_dims=2, in_channels=5, num_downs=3, base_channels=4, upsample=upsample)
    with torch.no_grad():  # away from the initialisation, so a wrong weight would show
        for parameter in generator.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return generator.eval()


def predictor(generator: torch.nn.Module, *, slab_size: int = 5) -> SCTPredictor:
    return SCTPredictor(generator, mode="2.5d", patch_size=PATCH, slab_size=slab_size, overlap=0.25, device="cpu",
                        progress=False)


@pytest.fixture(scope="module", params=["transpose", "resize"])
def exported(request, tmp_path_factory):
    """Exported generators with either decoder (the resize-convolution runs as a transposed convolution with a
    folded kernel, one ONNX operator)."""
    folder = tmp_path_factory.mktemp("onnx")
    generator = tiny_generator(request.param)
    torch.save(generator.state_dict(), folder / "model.pt")
    export_onnx(generator, folder / "model.onnx", in_channels=5, spatial_dims=2, patch_size=PATCH,
                       checkpoint_path=folder / "model.pt")
    return generator, folder


def test_onnx_generator_matches_pytorch_on_windows(exported) -> None:
    generator, folder = exported
    onnx_generator = OnnxGenerator(folder / "model.onnx")
    assert onnx_generator.window_shape == (5, PATCH, PATCH)
    assert onnx_generator.metadata[CHECKPOINT_HASH_KEY] == file_sha256(folder / "model.pt")
    x = torch.rand(3, 5, PATCH, PATCH, generator=torch.Generator().manual_seed(1)) * 2 - 1  # another batch size
    with torch.no_grad():
        torch.testing.assert_close(onnx_generator(x), generator(x), atol=1e-4, rtol=0)


def test_phantom_sct_through_onnx_is_within_1_hu_of_pytorch(exported, tmp_path: Path) -> None:
    generator, folder = exported
    write_phantom_dataset(tmp_path / "data", n=1, size="tiny")
    (torch_sct,) = predictor(generator).predict_inputs(tmp_path / "data", output_dir=tmp_path / "torch")
    onnx_predictor = use_runtime(predictor(tiny_generator()), "onnx", onnx_path=folder / "model.onnx",
                                 ckpt_path=folder / "model.pt")
    assert isinstance(onnx_predictor.generator, OnnxGenerator)
    (onnx_sct,) = onnx_predictor.predict_inputs(tmp_path / "data", output_dir=tmp_path / "onnx")
    a, b = (np.asarray(nib.load(p).dataobj).astype(int) for p in (torch_sct, onnx_sct))
    assert np.abs(a - b).max() <= 1 and a.std() > 0
    np.testing.assert_array_equal(nib.load(onnx_sct).affine, nib.load(torch_sct).affine)


def test_use_runtime_refusals(exported, tmp_path: Path) -> None:
    generator, folder = exported
    assert use_runtime(predictor(generator), "torch").generator is generator
    with pytest.raises(ValueError, match="runtime must be one of"):
        use_runtime(predictor(generator), "tensorrt")
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        use_runtime(predictor(generator), "onnx", onnx_path=tmp_path / "absent.onnx")
    retrained = tiny_generator()
    torch.save({k: v + 1 for k, v in retrained.state_dict().items()}, tmp_path / "retrained.pt")
    with pytest.raises(ValueError, match="not exported from"):
        use_runtime(predictor(generator), "onnx", onnx_path=folder / "model.onnx", ckpt_path=tmp_path / "retrained.pt")
    with pytest.raises(ValueError, match="takes windows"):
        use_runtime(predictor(generator, slab_size=3), "onnx", onnx_path=folder / "model.onnx")
    with pytest.raises(FileExistsError):
        export_onnx(generator, folder / "model.onnx", in_channels=5, spatial_dims=2, patch_size=PATCH)
