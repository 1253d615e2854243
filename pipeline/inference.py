"""Full-volume sCT inference: windows of the training size, blended, put back on the input MR grid.

Inference must see what training saw (see docs/architecture.md): the generator uses instance norm,
whose statistics depend on the field of view, so the volume is always processed in windows of the
training patch size, never as one whole slice or volume.

- 3D: MONAI's ``sliding_window_inference`` with Gaussian blending.
- 2D / 2.5D: every axial slice gets its k-slice slab as channels (``volume_to_slabs``); the slices are
  batched through a 2-D sliding window with Gaussian blending in-plane. MONAI's ``SliceInferer`` does
  not feed neighbouring slices as channels, hence this wrapper.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose
from tqdm.auto import tqdm

from pipeline.data import check_mode, preprocessing
from pipeline.validation import InputError, check_mask_array, check_volume_array, read_geometry
from pipeline.writers import write_like_reference
from transforms.intensity import HU_AIR, unit_range_to_hu
from transforms.slab import slabs_to_volume, volume_to_slabs
from transforms.spatial import invert_to_input_grid

logger = logging.getLogger(__name__)

MR_AIR_UNIT = -1.0  # normalised MR value of zero signal: the pad value outside the volume


def _autocast(device: torch.device):
    return torch.autocast("cuda") if device.type == "cuda" else contextlib.nullcontext()


@torch.no_grad()
def predict_unit_volume(
    generator: torch.nn.Module,
    mr: torch.Tensor,
    *,
    mode: str,
    patch_size: int,
    slab_size: int = 5,
    overlap: float = 0.5,
    sw_batch_size: int = 16,
    slices_per_batch: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Normalised MR ``(1, X, Y, Z)`` in [-1, 1] -> sCT ``(1, X, Y, Z)`` in [-1, 1] (CPU float32).

    Windows are ``patch_size`` wide in-plane (and along Z in 3D); volumes smaller than a window are
    padded with MR air (-1) and cropped back, so any size works.
    """
    check_mode(mode)
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    generator.eval()
    volume = torch.as_tensor(mr, dtype=torch.float32).as_subclass(torch.Tensor)
    if volume.ndim != 4 or volume.shape[0] != 1:
        raise ValueError(f"expected an MR of shape (1, X, Y, Z), got {tuple(volume.shape)}")

    def window(**extra):
        return dict(
            sw_batch_size=sw_batch_size, predictor=generator, overlap=overlap, mode="gaussian",
            padding_mode="constant", cval=MR_AIR_UNIT, sw_device=device, device="cpu", **extra,
        )

    if mode == "3d":
        with _autocast(device):
            out = sliding_window_inference(volume[None], (patch_size,) * 3, progress=progress, **window())
        return out[0].float()

    k = slab_size if mode == "2.5d" else 1
    slabs = volume_to_slabs(volume, slab_size=k)  # (Z, k, X, Y)
    predicted = []
    starts = range(0, slabs.shape[0], slices_per_batch)
    for start in tqdm(starts, desc="slices", unit="batch", disable=not progress, leave=False):
        with _autocast(device):
            chunk = sliding_window_inference(
                slabs[start : start + slices_per_batch], (patch_size, patch_size), **window()
            )
        predicted.append(chunk.float())
    return slabs_to_volume(torch.cat(predicted))  # (1, X, Y, Z)


class SCTPredictor:
    """MR file -> sCT NIfTI (int16 HU) on exactly the MR's grid (shape, affine, qform/sform).

    Steps: validate the input, preprocess as in training (RAS, optional resampling, body mask,
    normalisation), windowed inference, HU, invert orientation/resampling with MONAI's ``Invertd``,
    -1000 HU outside the body mask, atomic int16 write that copies the MR header.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        *,
        mode: str = "2.5d",
        patch_size: int = 64,
        slab_size: int = 5,
        overlap: float = 0.5,
        sw_batch_size: int = 16,
        target_spacing: Sequence[float] | None = None,
        device: torch.device | str | None = None,
        progress: bool = True,
    ) -> None:
        self.mode = check_mode(mode)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator = generator.to(self.device).eval()
        self.window = dict(patch_size=patch_size, slab_size=slab_size, overlap=overlap, sw_batch_size=sw_batch_size)
        self.target_spacing = target_spacing
        self.progress = progress
        self.transform = Compose(preprocessing(target_spacing=target_spacing, with_ct=False))
        self.invert = invert_to_input_grid(
            pred_key=["pred", "body"], orig_key="mr", preprocessing=self.transform, nearest_interp=[False, True]
        )

    def load_weights(self, checkpoint_path: str | Path) -> "SCTPredictor":
        """Load generator weights from a bundle checkpoint (``model.pt`` or a training checkpoint)."""
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if "generator" in state:
            state = state["generator"]
        self.generator.load_state_dict(state)
        return self

    def predict_array(self, mr_path: str | Path, *, mask_path: str | Path | None = None, subject_id: str = "") -> np.ndarray:
        """sCT in HU (float32), in the MR file's own voxel order and shape."""
        subject_id = subject_id or subject_id_from_path(mr_path)
        check_input_files(mr_path, mask_path, subject_id=subject_id)
        data = self.transform({"mr": str(mr_path), **({"mask": str(mask_path)} if mask_path else {})})
        check_volume_array(data["mr"][0].numpy(), subject_id=subject_id, role="mr")
        if mask_path:
            check_mask_array(data["mask"][0].numpy(), subject_id=subject_id)
        unit = predict_unit_volume(self.generator, data["mr"], mode=self.mode, device=self.device, progress=self.progress, **self.window)
        data["pred"] = MetaTensor(unit_range_to_hu(unit), meta=dict(data["mr"].meta))
        data["body"] = MetaTensor((data["mask"] > 0).float().as_tensor(), meta=dict(data["mr"].meta))
        restored = self.invert(data)
        hu = restored["pred"][0].cpu().numpy().astype(np.float32)
        body = restored["body"][0].cpu().numpy() > 0.5
        hu[~body] = HU_AIR
        return hu

    def predict_file(
        self, mr_path: str | Path, out_path: str | Path, *, mask_path: str | Path | None = None,
        subject_id: str = "", overwrite: bool = False,
    ) -> Path:
        out_path = Path(out_path)
        if out_path.exists() and not overwrite:  # fail before spending minutes on inference
            raise FileExistsError(f"{out_path} exists; pass overwrite=True (--overwrite true) to replace it")
        hu = self.predict_array(mr_path, mask_path=mask_path, subject_id=subject_id)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        return write_like_reference(hu, reference_path=mr_path, out_path=out_path, dtype=np.int16, overwrite=overwrite)

    def predict_inputs(self, source: str | Path, *, output_dir: str | Path, split: str | None = None, overwrite: bool = False) -> list[Path]:
        """Predict every subject of ``source`` (an MR file, a folder, or a manifest CSV) into
        ``output_dir/<subject_id>/sct.nii.gz``."""
        records = resolve_inputs(source, split=split)
        written = []
        for record in tqdm(records, desc="sCT", unit="subject", disable=not self.progress):
            out = Path(output_dir) / record["subject_id"] / "sct.nii.gz"
            written.append(self.predict_file(record["mr"], out, mask_path=record.get("mask"), subject_id=record["subject_id"], overwrite=overwrite))
            logger.info("%s: wrote %s", record["subject_id"], out)
        return written


def subject_id_from_path(path: str | Path) -> str:
    """SynthRAD layout ``<ID>/mr.nii.gz`` -> ID; a flat file ``<ID>.nii.gz`` -> ID."""
    path = Path(path)
    stem = path.name.split(".")[0]
    return path.parent.name if stem.lower() in ("mr", "mri", "t1") else stem


def check_input_files(mr_path: str | Path, mask_path: str | Path | None, *, subject_id: str) -> None:
    """Header-level checks before any voxel is read: present, readable, 3-D, mask on the MR grid."""
    from pipeline.validation import check_same_grid

    mr_geometry = read_geometry(mr_path, subject_id=subject_id)
    if mr_geometry.ndim != 3:
        raise InputError(f"{subject_id}: {Path(mr_path).name} is {mr_geometry.ndim}-D {tuple(mr_geometry.shape)}; expected a 3-D volume")
    if mask_path:
        check_same_grid(mr_geometry, read_geometry(mask_path, subject_id=subject_id), subject_id=subject_id, names=("mr", "mask"))


MR_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


def resolve_inputs(source: str | Path, *, split: str | None = None) -> list[dict]:
    """An MR file, a SynthRAD-style folder (``<ID>/mr.*``, optional ``mask.*``), a flat folder of MR
    files, or a manifest CSV -> records with subject_id, mr and (when present) mask."""
    from pipeline.manifest import load_split, read_manifest

    source = Path(source)
    if source.suffix == ".csv":
        if split:
            return load_split(source, split)
        return [{k: v for k, v in row.items() if k in ("subject_id", "mr", "mask") and isinstance(v, str)} for row in read_manifest(source).to_dict("records")]
    if source.is_file():
        return [{"subject_id": subject_id_from_path(source), "mr": str(source)}]
    if not source.is_dir():
        raise InputError(f"input {source} does not exist")
    records = []
    for sub in sorted(p for p in source.iterdir() if p.is_dir()):
        mr = next((sub / f"mr{s}" for s in MR_SUFFIXES if (sub / f"mr{s}").exists()), None)
        if mr is not None:
            mask = next((sub / f"mask{s}" for s in MR_SUFFIXES if (sub / f"mask{s}").exists()), None)
            records.append({"subject_id": sub.name, "mr": str(mr), **({"mask": str(mask)} if mask else {})})
    if not records:
        records = [{"subject_id": subject_id_from_path(f), "mr": str(f)} for f in sorted(source.iterdir()) if f.name.endswith(MR_SUFFIXES)]
    if not records:
        raise InputError(f"no MR volumes found in {source} (expected <ID>/mr.nii.gz or *.nii.gz files)")
    return records
