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

from pipeline.data.checks import check_mask_array, check_volume_array
from pipeline.data.loaders import check_mode, planes_for_mode, preprocessing
from pipeline.engine.distributed import gather_lists, rank, rank_shard
from pipeline.engine.handlers import load_generator_state
from pipeline.engine.trainer import torch_threads as _torch_threads
from pipeline.errors import InputError, as_flag
from pipeline.io.dicom_series import volume_file
from pipeline.io.geometry import check_orientation, check_same_grid, read_geometry
from pipeline.io.volumes import read_volume, write_like_reference
from pipeline.sct.batch import predict_records, resolve_inputs, subject_id_from_path
from pipeline.sct.model_card import rtsynth_version
from pipeline.sct.outputs import refuse_existing_outputs, write_sct_outputs
from pipeline.sct.tta import mean_and_std_hu, member_count, members_hu, std_path_for
from transforms.intensity import HU_AIR, unit_range_to_hu
from transforms.mask import BodyMaskd
from transforms.position import with_position_channels
from transforms.slab import slabs_to_volume, volume_to_slabs
from transforms.spatial import invert_to_input_grid

logger = logging.getLogger(__name__)

MR_AIR_UNIT = -1.0  # normalised MR value of zero signal: the pad value outside the volume
#: Windows per network call and 2.5D slices per chunk by default: small on the CPU (memory, no speed lost); on a
#: GPU wide calls and the whole volume in one chunk (slabs of 160 x 192 x 112 at k = 5: ~70 MB) keep it busy.
WINDOW_BATCH = {"cpu": 16, "cuda": 128}
CPU_SLICES_PER_CHUNK = 32


def _autocast(device: torch.device, *, amp: bool):
    """fp16 autocast only when asked for and on CUDA: half precision rounds the network output to ~1e-3
    of the unit range (~2 HU), so the default keeps full precision."""
    return torch.autocast("cuda") if amp and device.type == "cuda" else contextlib.nullcontext()


@torch.no_grad()
def predict_unit_volume(
    generator: torch.nn.Module,
    mr: torch.Tensor,
    *,
    mode: str,
    patch_size: int,
    slab_size: int = 5,
    overlap: float = 0.5,
    sw_batch_size: int | None = None,
    slices_per_batch: int | None = None,
    device: torch.device | str | None = None,
    amp: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Normalised MR ``(1, X, Y, Z)`` in [-1, 1] -> sCT ``(1, X, Y, Z)`` in [-1, 1], float32, on ``device``
    when that is a GPU (windows gathered, Gaussian-blended and accumulated there; the caller copies the
    result back once per volume), else on the CPU. Channels after the MR's, ``(1 + C, X, Y, Z)`` (the position
    channels of :func:`transforms.position.with_position_channels`), reach the network beside it: after a
    2D/2.5D slab's slices, taken at the slab's centre slice; in 3D as they are.

    Windows are ``patch_size`` wide in-plane (and along Z in 3D); volumes smaller than a window are
    padded with MR air (-1) and cropped back, so any size works. ``sw_batch_size`` (windows per network
    call) and ``slices_per_batch`` (2.5D slices per chunk) default to :data:`WINDOW_BATCH` and, on the CPU,
    :data:`CPU_SLICES_PER_CHUNK` (on a GPU: the whole volume). ``amp`` runs the network in fp16 on CUDA
    (faster, ~2 HU rounding); off by default.
    """
    check_mode(mode)
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    on_gpu = device.type == "cuda"
    generator.eval()
    volume = torch.as_tensor(mr, dtype=torch.float32).as_subclass(torch.Tensor)
    if volume.ndim != 4:
        raise ValueError(f"expected an MR of shape (1, X, Y, Z) (or (1 + C, X, Y, Z)), got {tuple(volume.shape)}")
    sw_batch_size = sw_batch_size or WINDOW_BATCH["cuda" if on_gpu else "cpu"]
    slices_per_batch = slices_per_batch or (volume.shape[-1] if on_gpu else CPU_SLICES_PER_CHUNK)
    output_device = device if on_gpu else torch.device("cpu")
    volume = volume.to(output_device)  # one copy to the GPU per volume

    # On CPU the network keeps the caller's threads, but the window bookkeeping around it (gathering,
    # Gaussian weighting, accumulation: small copies, each a parallel region that waits for every
    # thread) runs single-threaded. Measured on 2 shared cores: 3D 49 windows of 64^3 1.24 -> 0.03 s,
    # 2.5D 784 windows 0.50 -> 0.06 s, network time unchanged.
    network_threads = torch.get_num_threads()

    def predictor(x: torch.Tensor) -> torch.Tensor:
        with _torch_threads(network_threads):
            return generator(x)

    def window(**extra):
        return dict(
            sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap, mode="gaussian",
            padding_mode="constant", cval=MR_AIR_UNIT, sw_device=device, device=output_device, **extra,
        )

    bookkeeping_threads = contextlib.nullcontext() if on_gpu else _torch_threads(1)
    if mode == "3d":
        with _autocast(device, amp=amp), bookkeeping_threads:
            out = sliding_window_inference(volume[None], (patch_size,) * 3, progress=progress, **window())
        return out[0].float()

    k = slab_size if mode == "2.5d" else 1
    half, size_z = k // 2, volume.shape[-1]
    predicted = []
    starts = range(0, size_z, slices_per_batch)
    with bookkeeping_threads:
        for start in tqdm(starts, desc="slices", unit="batch", disable=not progress, leave=False):
            stop = min(start + slices_per_batch, size_z)
            # Slabs of this chunk only (a whole-volume slab stack would hold k copies of the volume); a
            # halo of k // 2 slices gives the chunk's end slices their true neighbours.
            low, high = max(start - half, 0), min(stop + half, size_z)
            slabs = volume_to_slabs(volume[:1, ..., low:high], slab_size=k)[start - low : stop - low]  # (n, k, X, Y)
            if volume.shape[0] > 1:  # the other channels at the centre slices: (n, k + C, X, Y)
                slabs = torch.cat([slabs, volume[1:, ..., start:stop].permute(3, 0, 1, 2)], dim=1)
            with _autocast(device, amp=amp):
                chunk = sliding_window_inference(slabs, (patch_size, patch_size), **window())
            predicted.append(chunk.float())
        return slabs_to_volume(torch.cat(predicted))  # (1, X, Y, Z)


class SCTPredictor:
    """MR file -> sCT NIfTI (int16 HU) on exactly the MR's grid (shape, affine, qform/sform).

    Steps (each a method, so they can be run and timed one by one): :meth:`load` (header checks, read,
    RAS, optional resampling, voxel checks), :meth:`preprocess` (body mask, normalisation, as in
    training), :meth:`infer` (windowed inference, HU), :meth:`restore` (invert orientation/resampling
    with MONAI's ``Invertd``, -1000 HU outside the body mask), then an atomic int16 write that copies
    the MR header (:meth:`predict_file`). ``planes`` (multi-plane 2.5D, from the model card) and ``tta``
    (flip test-time augmentation, off by default: twice the inference time) make an ensemble
    (:mod:`pipeline.sct.tta`): the sCT is the members' mean and ``sct_std.nii.gz`` (their HU standard
    deviation, 0 outside the body) is written beside it. ``position_channels`` (from the model card): the
    network also reads each voxel's position in the body mask's box (:mod:`transforms.position`).
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        *,
        mode: str = "2.5d",
        patch_size: int = 64,
        slab_size: int = 5,
        overlap: float = 0.5,
        sw_batch_size: int | None = None,
        target_spacing: Sequence[float] | None = None,
        device: torch.device | str | None = None,
        amp: bool = False,
        model_id: str | None = None,
        progress: bool = True,
        tta: bool = False,
        planes: Sequence[str] | str = ("axial",),
        position_channels: bool = False,
    ) -> None:
        self.mode = check_mode(mode)
        self.position_channels = as_flag(position_channels, name="position_channels")
        self.planes = planes_for_mode(self.mode, planes)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator = generator.to(self.device).eval()
        amp, tta = as_flag(amp, name="amp"), as_flag(tta, name="tta")
        self.window = dict(patch_size=patch_size, slab_size=slab_size, overlap=overlap, sw_batch_size=sw_batch_size,
                           amp=amp)
        self.model_id = model_id  # the model card's hash: written into every sCT's header
        self.target_spacing = target_spacing
        self.progress = progress
        self.tta = tta
        self.ensemble = member_count(planes=self.planes, flip=tta) > 1  # then an uncertainty map is written
        self.transform = Compose(preprocessing(target_spacing=target_spacing, with_ct=False))
        # The chain runs in two parts so that the raw voxels are checked (NaN, blank) before the body
        # mask and normalisation compute on them; the same instances run, so Invertd still matches them.
        self._load_steps = next(i for i, t in enumerate(self.transform.transforms) if isinstance(t, BodyMaskd))
        keys, nearest = (["pred", "body", "std"], [False, True, False]) if self.ensemble else (["pred", "body"], [False, True])
        self.invert = invert_to_input_grid(pred_key=keys, orig_key="mr", preprocessing=self.transform, nearest_interp=nearest)

    def load_weights(self, checkpoint_path: str | Path) -> "SCTPredictor":
        """Load generator weights from a bundle checkpoint (``model.pt``: a bare state dict) or a
        training checkpoint (a dict with a ``"generator"`` state dict), with ``weights_only=True``."""
        self.generator.load_state_dict(load_generator_state(checkpoint_path))
        return self

    def load(self, mr_path: str | Path, *, mask_path: str | Path | None = None, subject_id: str = "") -> dict:
        """Header checks, then MR (and mask) as ``(1, X, Y, Z)`` MetaTensors on the network grid (RAS,
        resampled when ``target_spacing``), raw MR values. Raises :class:`InputError` naming the subject
        and file for a missing/unreadable/non-3-D file, a mask off the MR grid, an MR with NaN/Inf or
        constant, an empty mask."""
        subject_id = subject_id or subject_id_from_path(mr_path)
        check_input_files(mr_path, mask_path, subject_id=subject_id)
        record = {"mr": str(mr_path), **({"mask": str(mask_path)} if mask_path else {})}
        data = self.transform(record, end=self._load_steps)
        check_volume_array(data["mr"][0], subject_id=subject_id, role="mr", source=mr_path)
        if mask_path:
            check_mask_array(data["mask"][0], subject_id=subject_id, source=mask_path)
        data["subject_id"] = subject_id
        data["mask_path"] = str(mask_path) if mask_path else None
        return data

    def preprocess(self, data: dict) -> dict:
        """Body mask (from the MR when none was given) and MR normalisation to [-1, 1], as in training."""
        try:
            return self.transform(data, start=self._load_steps)
        except RuntimeError as error:  # MONAI wraps a transform's ValueError (e.g. no positive MR signal)
            if not isinstance(error.__cause__, ValueError):
                raise
            name = Path(str(data["mr"].meta.get("filename_or_obj", "mr"))).name
            raise InputError(f"{data.get('subject_id', '')}: {name}: {error.__cause__}") from error

    def infer(self, data: dict) -> dict:
        """Adds ``"pred"`` (sCT in HU, float32) and ``"body"`` (0/1), both ``(1, X, Y, Z)`` on the network grid."""
        def predict(mr: torch.Tensor) -> torch.Tensor:
            return predict_unit_volume(self.generator, mr, mode=self.mode, device=self.device, progress=self.progress, **self.window)

        # on a GPU the MR goes over once, every member and their mean and spread stay there, one copy comes back
        mr = data["mr"].as_tensor().to(self.device if self.device.type == "cuda" else "cpu")
        if self.position_channels:  # the body box of the mask on the network grid, as in training
            mr = with_position_channels(mr, data["mask"])
        if self.ensemble:
            members = members_hu(predict, mr, planes=self.planes, flip=self.tta)
            mean, std = mean_and_std_hu(members)
            data["pred"] = MetaTensor(mean.cpu(), meta=dict(data["mr"].meta))
            data["std"] = MetaTensor(std.cpu(), meta=dict(data["mr"].meta))
        else:
            data["pred"] = MetaTensor(unit_range_to_hu(predict(mr)).cpu(), meta=dict(data["mr"].meta))
        data["body"] = MetaTensor((data["mask"] > 0).float().as_tensor(), meta=dict(data["mr"].meta))
        return data

    def restore(self, data: dict) -> np.ndarray:
        """``"pred"`` put back on the MR file's grid (its voxel order and shape), -1000 HU outside the body:
        the mask file as given (on the MR grid, checked in :meth:`load`), else the derived mask inverted."""
        restored = self.invert(data)
        hu = restored["pred"][0].cpu().numpy().astype(np.float32)
        if data.get("mask_path"):  # exact; a mask taken through a resampled grid and back moves its edge
            body = read_volume(data["mask_path"])[0] > 0
        else:
            body = restored["body"][0].cpu().numpy() > 0.5
        hu[~body] = HU_AIR
        if "std" in restored:  # an ensemble: the members' spread, on the same grid, none outside the body
            data["std_hu"] = np.where(body, np.clip(restored["std"][0].cpu().numpy(), 0.0, None), 0.0).astype(np.float32)
        return hu

    def predict_array(self, mr_path: str | Path, *, mask_path: str | Path | None = None, subject_id: str = "") -> np.ndarray:
        """sCT in HU (float32), in the MR file's own voxel order and shape."""
        data = self.load(mr_path, mask_path=mask_path, subject_id=subject_id)
        return self.restore(self.infer(self.preprocess(data)))

    def prepare(
        self, mr_path: str | Path, out_path: str | Path, *, stack: contextlib.ExitStack, mask_path: str | Path | None = None,
        subject_id: str = "", overwrite: bool = False, output_format: str = "nifti", mr_series_uid: str | None = None,
    ) -> dict:
        """Everything before the network for one subject: the outputs checked (refused before minutes of
        inference), the MR file (a DICOM folder's series converted once by
        :func:`pipeline.io.dicom_series.volume_file`, kept until ``stack`` closes), :meth:`load`, :meth:`preprocess`.
        The returned dict carries what :meth:`finish` needs to write the outputs."""
        out_path, overwrite = Path(out_path), as_flag(overwrite, name="overwrite")
        refuse_existing_outputs(out_path, output_format=output_format, overwrite=overwrite)  # before minutes of inference
        subject_id = subject_id or subject_id_from_path(mr_path)
        std_path = std_path_for(out_path)
        if self.ensemble and std_path.exists() and not overwrite:
            raise FileExistsError(f"{subject_id}: {std_path} exists; pass overwrite to replace it")
        mr_file = stack.enter_context(volume_file(mr_path, series_uid=mr_series_uid, subject_id=subject_id))
        data = self.preprocess(self.load(mr_file, mask_path=mask_path, subject_id=subject_id))
        data["outputs"] = {"mr_file": mr_file, "out_path": out_path, "output_format": output_format, "overwrite": overwrite,
                           "mr_dicom_dir": Path(mr_path) if Path(mr_path).is_dir() else None,
                           "mr_series_uid": mr_series_uid}
        return data

    def finish(self, data: dict) -> Path:
        """:meth:`restore` a prepared (:meth:`prepare`) and inferred (:meth:`infer`) subject and write its sCT as
        :func:`pipeline.sct.outputs.write_sct_outputs` does (and an ensemble's ``sct_std.nii.gz``); returns the NIfTI
        path, or the DICOM folder alone."""
        hu = self.restore(data)  # an ensemble also adds data["std_hu"]
        out = data["outputs"]
        written = write_sct_outputs(hu, mr_file=out["mr_file"], out_path=out["out_path"], output_format=out["output_format"],
                                    mr_dicom_dir=out["mr_dicom_dir"], mr_series_uid=out["mr_series_uid"],
                                    model_id=self.model_id, description=self.provenance, overwrite=out["overwrite"])
        if "std_hu" in data:
            # float32: a rounded std would tie most voxels and blur its ranking of the error
            write_like_reference(data["std_hu"], reference_path=out["mr_file"], out_path=std_path_for(out["out_path"]),
                                 dtype=np.float32, overwrite=out["overwrite"], description=self.provenance)
        return written[0]

    def predict_file(
        self, mr_path: str | Path, out_path: str | Path, *, mask_path: str | Path | None = None,
        subject_id: str = "", overwrite: bool = False, output_format: str = "nifti", mr_series_uid: str | None = None,
    ) -> Path:
        """sCT of ``mr_path`` (a volume file, or a DICOM folder: its MR series, or ``mr_series_uid``) written as
        ``output_format``: :meth:`prepare`, :meth:`infer`, :meth:`finish`; returns the NIfTI path, or the DICOM
        folder alone."""
        with contextlib.ExitStack() as stack:
            return self.finish(self.infer(self.prepare(
                mr_path, out_path, stack=stack, mask_path=mask_path, subject_id=subject_id, overwrite=overwrite,
                output_format=output_format, mr_series_uid=mr_series_uid)))

    @property
    def provenance(self) -> str:
        """``"rtsynth <version> sCT model <card hash>"``: the NIfTI ``descrip`` of every sCT written."""
        return f"rtsynth {rtsynth_version()} sCT model {self.model_id or 'without model card'}"

    def predict_inputs(self, source: str | Path, *, output_dir: str | Path, split: str | None = None,
                       overwrite: bool = False, skip_existing: bool = False, output_format: str = "nifti",
                       read_ahead: int | None = None) -> list[Path]:
        """Predict every subject of ``source`` (an MR file, a folder, a DICOM folder or a manifest CSV) into
        ``output_dir/<subject_id>/sct.nii.gz`` and/or ``sct_dicom/`` (``output_format``).

        A bad subject never costs the good ones: each subject's failure is logged as one line and the
        batch carries on; at the end an :class:`InputError` lists every failure (the command exits
        non-zero) after all other sCTs are written. ``skip_existing`` leaves subjects whose outputs are
        already there (finishing a run that was interrupted); otherwise an existing output is refused
        unless ``overwrite``.

        ``read_ahead`` subjects are read and preprocessed in threads while the network works on the current one,
        and the last one is written meanwhile (:mod:`pipeline.sct.batch`); default
        :data:`pipeline.sct.batch.READ_AHEAD` for the device (none on the CPU: one subject after the other).

        Under ``torchrun`` (``multi_gpu_inference.json``) each rank predicts its own subjects
        (:func:`pipeline.engine.distributed.rank_shard`: each exactly once), and rank 0 raises the error
        listing the failures of all ranks once every rank has finished.
        """
        overwrite, skip_existing = as_flag(overwrite, name="overwrite"), as_flag(skip_existing, name="skip_existing")
        if overwrite and skip_existing:
            raise ValueError("overwrite and skip_existing exclude each other")
        records = resolve_inputs(source, split=split)
        written, failures = predict_records(self, rank_shard(records, equal_sizes=False), output_dir=output_dir,
                                            overwrite=overwrite, skip_existing=skip_existing,
                                            output_format=output_format, read_ahead=read_ahead)
        failures = gather_lists(failures)  # under torchrun: every rank's, so that rank 0 reports them all
        if failures and rank() == 0:
            raise InputError(f"{len(failures)} of {len(records)} subject(s) failed, the other sCTs were written: "
                             + " | ".join(failures))
        return written


def check_input_files(mr_path: str | Path, mask_path: str | Path | None, *, subject_id: str) -> None:
    """Header-level checks before any voxel is read: present, readable, 3-D, mask on the MR grid."""
    mr_geometry = read_geometry(mr_path, subject_id=subject_id)
    check_orientation(mr_geometry, subject_id=subject_id)
    if mr_geometry.ndim != 3:
        raise InputError(f"{subject_id}: {Path(mr_path).name} is {mr_geometry.ndim}-D {tuple(mr_geometry.shape)}; expected a 3-D volume")
    if mask_path:
        check_same_grid(mr_geometry, read_geometry(mask_path, subject_id=subject_id), subject_id=subject_id, names=("mr", "mask"))
