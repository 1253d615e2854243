"""Datasets and transform chains for training and validation, per mode (2d / 2.5d / 3d).

Axial slices are the last spatial axis after orientation to RAS. Shapes seen by the networks:

=====  ==========================  ==========================  =================
mode   MR input                    CT target / mask            generator dims
=====  ==========================  ==========================  =================
2d     (B, 1, P, P)                (B, 1, P, P)                spatial_dims=2
2.5d   (B, k, P, P)                (B, 1, P, P) (centre slice) spatial_dims=2
3d     (B, 1, P, P, P)             (B, 1, P, P, P)             spatial_dims=3
=====  ==========================  ==========================  =================

MR is normalised per subject to [-1, 1]; CT is windowed from HU to [-1, 1] for training and kept in HU
for validation (the metric is HU MAE).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from monai.data import CacheDataset, DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped, MapTransform

from pipeline.data.augment import augmentation_for
from pipeline.data.checks import check_ct_hu
from pipeline.data.crop_sampler import BodyCropSampler, VolumeBank
from pipeline.errors import as_flag
from pipeline.io.geometry import check_same_grid, read_geometry
from pipeline.io.volumes import GRID_ATOL_MM
from transforms.crop import CompactVolumesd, MaskBoundingBoxd
from transforms.intensity import NormalizeMRd
from transforms.mask import BodyMaskd
from transforms.plane import check_planes
from transforms.position import POSITION_CHANNELS
from transforms.spatial import load_oriented

logger = logging.getLogger(__name__)

MODES = ("2d", "2.5d", "3d")
#: Iterations' batches the crop sampler cuts in one draw, per device type: on a GPU a draw's cost is its
#: ~1.7 ms of launches whatever its size (H200), on the CPU it is the gathers (pipeline.data.crop_sampler).
BATCHES_PER_DRAW = {"cuda": 8, "cpu": 1}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def input_channels(*, mode: str, slab_size: int, position_channels: bool = False) -> int:
    """Number of input channels the generator takes: k MR slices in 2.5D, one otherwise; plus
    :data:`~transforms.position.POSITION_CHANNELS` with ``position_channels`` (2D/2.5D)."""
    mr_channels = slab_size if check_mode(mode) == "2.5d" else 1
    return mr_channels + (POSITION_CHANNELS if as_flag(position_channels, name="position_channels") else 0)


def spatial_dims(mode: str) -> int:
    return 3 if check_mode(mode) == "3d" else 2


def planes_for_mode(mode: str, planes: Sequence[str] | str) -> tuple[str, ...]:
    """The slab planes a mode uses (:mod:`transforms.plane`): the given ones in 2D/2.5D; in 3D there is
    no slab axis to choose, the network sees the volume as it is (``("axial",)``), whatever was given."""
    return ("axial",) if check_mode(mode) == "3d" else check_planes(planes)


def patch_shape(*, mode: str, patch_size: int, slab_size: int) -> tuple[int, int, int]:
    """The 3-D crop taken from a volume: (P, P, k) for 2D/2.5D (k = 1 for 2D), (P, P, P) for 3D."""
    if check_mode(mode) == "3d":
        return (patch_size, patch_size, patch_size)
    return (patch_size, patch_size, slab_size if mode == "2.5d" else 1)


class CheckPaird(MapTransform):
    """Refuse, naming the subject and file, a training/validation pair that would teach the wrong thing:
    CT or mask not on the MR's grid (headers: shape, spacing, orientation, origin; a mirrored CT would
    otherwise be reoriented to RAS and silently paired with the MR), or a CT not in HU
    (:func:`pipeline.data.checks.check_ct_hu`, e.g. stored without the -1024 offset). Runs once per
    subject, before caching."""

    def __init__(self, mr_key: str = "mr", other_keys: Sequence[str] = ("ct", "mask")) -> None:
        super().__init__([mr_key, *other_keys], allow_missing_keys=True)
        self.mr_key, self.other_keys = mr_key, tuple(other_keys)

    def __call__(self, data):
        d = dict(data)
        subject_id = d.get("subject_id")

        def source(key: str):
            return d[key].meta.get("filename_or_obj") if hasattr(d[key], "meta") else None

        if self.mr_key in d and source(self.mr_key):
            mr = read_geometry(source(self.mr_key), subject_id=subject_id)
            for key in (k for k in self.other_keys if k in d and source(k)):
                check_same_grid(mr, read_geometry(source(key), subject_id=subject_id), subject_id=subject_id,
                                names=(self.mr_key, key), atol_mm=GRID_ATOL_MM)
        if "ct" in d:
            check_ct_hu(d["ct"], subject_id=subject_id, source=source("ct"))
        return d


def preprocessing(*, target_spacing: Sequence[float] | None = None, with_ct: bool = True) -> list:
    """Deterministic part shared by training, validation and inference: load, RAS, resample, (with a
    CT: the pair checked, :class:`CheckPaird`), body mask (from the MR when the subject has none), MR
    normalisation inside the mask."""
    keys = ["mr", "ct", "mask"] if with_ct else ["mr", "mask"]
    return [
        *load_oriented(keys, target_spacing=target_spacing),
        *([CheckPaird("mr", ("ct", "mask"))] if with_ct else []),
        BodyMaskd("mr", mask_key="mask"),
        NormalizeMRd("mr", mask_key="mask"),
        EnsureTyped(keys=keys, dtype="float32", track_meta=True),
    ]


def training_cache_transforms(*, target_spacing: Sequence[float] | None = None) -> Compose:
    """What is computed once per training subject and kept: :func:`preprocessing`, then the compact form
    (MR float32, CT int16 HU, mask uint8, :class:`transforms.crop.CompactVolumesd`) and the mask's bounding
    box (``mask_box``), the input of :class:`pipeline.data.crop_sampler.VolumeBank`."""
    return Compose([*preprocessing(target_spacing=target_spacing), CompactVolumesd(ct_key="ct", mask_key="mask"),
                    MaskBoundingBoxd("mask")])


def training_sampler(
    records: list[dict],
    *,
    mode: str,
    patch_size: int,
    slab_size: int = 5,
    batch_size: int = 2,
    samples_per_volume: int = 2,
    target_spacing: Sequence[float] | None = None,
    planes: Sequence[str] | str = ("axial",),
    foreground_fraction: float = 0.9,
    flip_lr: bool = True,
    device: torch.device | str = "cpu",
    storage: str = "auto",
    seed: int = 0,
    mr_augmentation: str | None = None,
    spatial_augmentation: bool = False,
    position_channels: bool = False,
    air_bone_fraction: float = 0.0,
    progress: bool = True,
) -> BodyCropSampler:
    """Endless training batches of ``batch_size * samples_per_volume`` crops cut on ``device``
    (:mod:`pipeline.data.crop_sampler`): every subject of ``records`` is preprocessed once
    (:func:`training_cache_transforms`, in threads, MONAI ``CacheDataset``) into a
    :class:`~pipeline.data.crop_sampler.VolumeBank` on the device (or pinned host memory, ``storage``).

    Crops are centred inside the body with probability ``foreground_fraction``, mirrored left-right with
    probability 0.5 (``flip_lr``; the head's mirror symmetry: axis X of the RAS grid, wherever the plane puts
    it), along a slab plane drawn per crop from ``planes`` (2D/2.5D; ignored in 3D). In 2.5D every slice is
    a training centre: slabs past the first and last slice replicate the edge slice, as at inference.
    ``mr_augmentation`` (``"intensity"``, 2D/2.5D): the MR crops are changed as another scanner or sequence
    could have changed them (:mod:`pipeline.data.augment`), on the device, from the sampler's seeded stream.
    ``spatial_augmentation`` (2D/2.5D): half of the crops rotated in-plane by up to 10 degrees and scaled by
    up to 10 %, every image alike (:class:`~pipeline.data.crop_sampler.BodyCropSampler`).
    ``position_channels`` (2D/2.5D): each pixel's position in the body box follows the MR slab as three more
    channels (:mod:`transforms.position`). ``air_bone_fraction``: that share of the crops is centred on air or
    bone inside the body (CT < -200 or >= 250 HU), where the air-bone ambiguity of MR puts the error.
    Batches: MR ``(N, k, P, P)`` ([-1, 1]; ``(N, k + 3, P, P)`` with position channels), CT ``(N, 1, P, P)``
    in [-1, 1], mask ``(N, 1, P, P)``; in 3D ``(N, 1, P, P, P)`` each.
    On CUDA :data:`BATCHES_PER_DRAW` iterations' crops are cut at once. 3D mode trains without augmentation (a
    warning says so when the options ask for it, as train.json's defaults do).
    """
    augment = augmentation_for(mr_augmentation)
    spatial = as_flag(spatial_augmentation, name="spatial_augmentation")
    if mode == "3d" and (augment is not None or spatial):
        logger.warning("mr_augmentation / spatial_augmentation work on 2D/2.5D crops: 3D mode trains without them")
        augment, spatial = None, False
    records = drop_missing(records)
    if not records:
        raise ValueError("no training subjects (the manifest's train split is empty)")
    # preprocessed in threads; the bank then takes each subject's volumes over and the cache lets them go
    dataset = CacheDataset(records, training_cache_transforms(target_spacing=target_spacing), cache_rate=1.0,
                           num_workers=None, progress=progress, copy_cache=False)
    subjects = [dict(dataset[i]) for i in range(len(dataset))]
    del dataset
    bank = VolumeBank(subjects, device=device, storage=storage, free_inputs=True)
    return BodyCropSampler(
        bank, spatial_size=patch_shape(mode=mode, patch_size=patch_size, slab_size=slab_size),
        replicate_axis=None if mode == "3d" else 2, planes=planes_for_mode(mode, planes), batch_size=batch_size,
        samples_per_volume=samples_per_volume, pos_fraction=foreground_fraction, flip_prob=0.5 if flip_lr else 0.0,
        seed=seed, channels_slab=mode != "3d", augment=augment, spatial_prob=0.5 if spatial else 0.0,
        batches_per_draw=BATCHES_PER_DRAW["cuda" if bank.device.type == "cuda" else "cpu"],
        position_channels=as_flag(position_channels, name="position_channels"),
        air_bone_fraction=float(air_bone_fraction))


def validation_transforms(*, target_spacing: Sequence[float] | None = None) -> Compose:
    """Whole volumes on the network grid: MR in [-1, 1], CT in HU, mask 0/1, each (1, X, Y, Z)."""
    return Compose(preprocessing(target_spacing=target_spacing))


def drop_missing(records: list[dict]) -> list[dict]:
    """Remove keys whose value is None or empty (e.g. a subject without a mask), so loaders skip them."""
    return [{k: v for k, v in r.items() if v is not None and v == v and v != ""} for r in records]


def make_loader(
    records: list[dict],
    transform: Compose,
    *,
    batch_size: int,
    shuffle: bool,
    cache: bool = True,
    num_workers: int = 0,
    sampler=None,
) -> DataLoader:
    """CacheDataset keeps the deterministic preprocessing in memory, so only the random part runs per epoch
    (validation volumes; the X-ray task's 2-D pairs; sCT training crops come from :func:`training_sampler`).
    Workers, when asked for, persist across epochs: without that, a loader shorter than an epoch forked them
    all again each time it ran out (every iteration when there are fewer samples than ``batch_size``)."""
    records = drop_missing(records)
    if cache:
        # copy_cache=False: the random part (crop, then flip of the crop) never modifies the cached
        # volume in place, and deep-copying whole volumes per sample dominated the data time
        dataset = CacheDataset(records, transform, cache_rate=1.0, num_workers=None, progress=False, copy_cache=False)
    else:
        dataset = Dataset(records, transform)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
