"""Data for 2-D paired translation (SE -> DE X-ray, or any 2-D image -> one or more target images).

Records come from a pair manifest CSV, a DRR dataset folder (its ``manifest.csv``) or a folder with one
sub-folder per key (:mod:`pipeline.io.images2d`). Each record holds paths under ``image_key`` (the
condition, default ``se``) and ``target_keys`` (default ``de_soft``, ``de_bone``).

Intensity normalisation (:class:`IntensityWindow`): a fixed linear map ``[lo, hi] -> [-1, 1]``, one for the
input and one shared by all targets, fitted once on the *training* images (robust percentiles plus a
margin, :func:`fit_window`) and stored next to the model (``models/xray_model.json``) so inference maps
the network's tanh output back to exactly the units of the training targets. Why fixed rather than per
image: ``-ln(I/I0)`` is already a calibrated physical quantity (0 = air, path length x attenuation
otherwise); a per-image normalisation would discard the absolute scale the DE images must keep. Why one
window for all targets: DE soft and DE bone are parts of the same high-kVp log signal
(``soft + bone ~ SE``), so one scale keeps their ratio. The margin keeps the largest training values away
from tanh's asymptote.

Splits: records without a ``split`` column (a folder of pairs) are split by subject with the one split
function of :mod:`pipeline.data.manifest` (:func:`select_split`); training records its settings in the
model card, and inference and evaluation take them from there (:func:`split_settings`), so ``--split
test`` names the same subjects in all three.

Shapes seen by the networks: condition ``(B, 1, H, W)``, target ``(B, len(target_keys), H, W)``
(targets concatenated as channels, MONAI ``ConcatItemsd``, under :data:`TARGET_KEY`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    DivisiblePadd,
    EnsureTyped,
    MapTransform,
    RandFlipd,
    RandSpatialCropd,
    SelectItemsd,
    SpatialPadd,
)

from pipeline.data.manifest import SPLITS, subject_splits
from pipeline.engine.model_card import check_patch_size, read_model_card
from pipeline.errors import InputError
from pipeline.io.images2d import (
    LoadPairedImaged,
    check_pair_headers,
    find_paired_images,
    load_image_2d,
    read_paired_manifest,
    scale_for,
)
from pipeline.xray.drr_dataset import MANIFEST_NAME
from transforms.intensity import unit_to_window, window_to_unit

#: Key of the concatenated target channels in a sample dict.
TARGET_KEY = "target"
DEFAULT_IMAGE_KEY = "se"
DEFAULT_TARGET_KEYS: tuple[str, ...] = ("de_soft", "de_bone")
MODEL_CARD_NAME = "xray_model.json"
#: Network settings added to the card after the first cards were written: what those older models were
#: trained with (:mod:`pipeline.xray.model_card`).
OLDER_NETWORK_DEFAULTS = {"soft_output": "direct"}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntensityWindow:
    """Linear, invertible map of physical values ``[lo, hi]`` (e.g. log attenuation) to ``[-1, 1]``."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.hi > self.lo):
            raise ValueError(f"intensity window needs finite lo < hi, got [{self.lo}, {self.hi}]")

    def to_unit(self, x):
        """Physical -> network units (not clipped: values outside ``[lo, hi]`` leave [-1, 1])."""
        return window_to_unit(x, self.lo, self.hi)

    def from_unit(self, u):
        """Network units -> physical (exact inverse of :meth:`to_unit`)."""
        return unit_to_window(u, self.lo, self.hi)

    def as_list(self) -> list[float]:
        return [float(self.lo), float(self.hi)]


def _round_out(value: float, *, up: bool, digits: int = 3) -> float:
    """Round to ``digits`` significant digits away from the data (so the window still covers it)."""
    if value == 0:
        return 0.0
    scale = 10.0 ** (np.floor(np.log10(abs(value))) - digits + 1)
    return float(np.round((np.ceil if up else np.floor)(value / scale) * scale, 12))


def fit_window(images: Sequence[np.ndarray], *, percentiles: tuple[float, float] = (0.01, 99.99),
               margin: float = 0.1) -> IntensityWindow:
    """Window from the pooled pixels of ``images``: percentiles ``(p_lo, p_hi)`` widened by ``margin`` x
    their span on each side, the lower end at most 0 (air in a log image, black in a PNG), both ends
    rounded outwards to 3 significant digits. Raises ``ValueError`` for constant data."""
    pixels = np.concatenate([np.asarray(i, dtype=np.float64).ravel() for i in images])
    p_lo, p_hi = np.percentile(pixels, percentiles)
    span = p_hi - min(p_lo, 0.0)
    if not span > 0:
        raise ValueError(f"cannot fit an intensity window: the images are constant ({p_lo})")
    lo = min(0.0, p_lo - margin * span)
    return IntensityWindow(_round_out(lo, up=False), _round_out(p_hi + margin * span, up=True))


#: ``--split`` values that select every record (``null``: what the bundle CLI hands over for ``--split null``).
ALL_SPLITS = ("all", "null", "none", "")
#: How a folder or manifest without a ``split`` column is split by subject, unless configured otherwise.
DEFAULT_SPLIT_SETTINGS = {"val_fraction": 0.1, "test_fraction": 0.1, "seed": 0}


def select_split(records: Sequence[Mapping[str, Any]], split: str | None, *, source: str | os.PathLike,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> list[dict[str, Any]]:
    """The records of ``split`` (None or one of :data:`ALL_SPLITS`: all of them).

    Records without a ``split`` value are split by subject with the one split function,
    :func:`pipeline.data.manifest.subject_splits` (seeded, no subject in two splits): training, inference
    and evaluation given the same folder and settings select the same subjects. Raises :class:`InputError`
    when the split selects nothing.
    """
    records = [dict(r) for r in records]
    if split is None or str(split).strip().lower() in ALL_SPLITS:
        return records
    if not all(r.get("split") for r in records):
        splits = subject_splits([r["subject_id"] for r in records], val_fraction=val_fraction,
                                test_fraction=test_fraction, seed=seed)
        records = [{**r, "split": splits[r["subject_id"]]} for r in records]
        counts = {name: len({r["subject_id"] for r in records if r["split"] == name}) for name in SPLITS}
        logger.info("%s: %s subjects split by name (val_fraction %s, test_fraction %s, seed %s); using %r",
                    source, " / ".join(f"{n} {name}" for name, n in counts.items()), val_fraction, test_fraction,
                    seed, split)
    chosen = [r for r in records if r["split"] == split]
    if not chosen:
        found = sorted({r["split"] for r in records})
        raise InputError(f"{source}: no images in split {split!r} (splits: {', '.join(found)}; "
                         f"--split all for every image)")
    return chosen


def load_records(source: str | os.PathLike, *, keys: Sequence[str], split: str | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 check_files: bool = True) -> list[dict[str, Any]]:
    """Pair records (``subject_id``, ``image_id``, one path per key) of one ``split`` (:func:`select_split`).

    ``source``: a manifest CSV; a folder holding ``manifest.csv`` (a DRR dataset); or a folder with one
    sub-folder per key (files matched by name). ``check_files`` reads every image's header first
    (:func:`pipeline.io.images2d.check_pair_headers`): a bad file is refused before anything starts.
    Problems are :class:`InputError`.
    """
    source = Path(source)
    if source.is_dir() and (source / MANIFEST_NAME).is_file():
        source = source / MANIFEST_NAME
    if source.is_file():
        records = read_paired_manifest(source, keys=keys, check_files=check_files)
    elif source.is_dir():
        records = find_paired_images(source, keys=keys)
    else:
        raise InputError(f"{source}: neither a manifest CSV nor a folder")
    records = select_split(records, split, source=source, val_fraction=val_fraction, test_fraction=test_fraction,
                           seed=seed)
    if check_files:
        check_pair_headers(records, keys=keys)
    return records


def split_settings(card: Mapping[str, Any] | None, **given: float | int | None) -> dict[str, Any]:
    """The split settings (``val_fraction``, ``test_fraction``, ``seed``) inference and evaluation use.

    With a card that recorded them (training since bundle 0.4.0): the card's; a given value (not None)
    that differs is refused (:class:`InputError` naming both values), since the folder would be split
    into other subjects than in training and training images would be scored as held out. Without one
    (no card, or an older card): the given values, else :data:`DEFAULT_SPLIT_SETTINGS`.
    """
    unknown = set(given) - set(DEFAULT_SPLIT_SETTINGS)
    if unknown:
        raise TypeError(f"unknown split setting(s) {sorted(unknown)}")
    recorded = (card or {}).get("split")
    if not recorded:
        return {**DEFAULT_SPLIT_SETTINGS, **{k: v for k, v in given.items() if v is not None}}
    for name, value in given.items():
        if value is not None and float(value) != float(recorded[name]):
            raise InputError(f"--{name} {value}: the model was trained with {name} {recorded[name]} (model card); "
                             f"the same folder would be split into other subjects. Leave --{name} out")
    return {**DEFAULT_SPLIT_SETTINGS, **recorded}


def training_records(source: str | os.PathLike, *, image_key: str, target_keys: Sequence[str], split: str,
                     noiseless_targets: bool = False, **split_options: Any) -> list[dict[str, Any]]:
    """:func:`load_records` for training and validation. With ``noiseless_targets`` each target is read from
    its noiseless reference (``<key>_noiseless``, written by the DRR builder with realism: the same chain
    without quantum noise), i.e. the network learns the *expected* DE image; the records keep the target
    names, so nothing downstream changes. Evaluation still scores against the noisy DE images (PSNR, SSIM,
    CNR) and fits the bone leak on the noiseless ones. A missing reference (DRRs rendered without realism
    have none) is an :class:`pipeline.errors.InputError` naming the image (:func:`load_records`)."""
    columns = {key: f"{key}_noiseless" if noiseless_targets else key for key in target_keys}
    records = load_records(source, keys=[image_key, *columns.values()], split=split, **split_options)
    return [{**{k: v for k, v in record.items() if k not in columns.values()},
             **{key: record[column] for key, column in columns.items()}} for record in records]


def fit_windows(records: Sequence[Mapping[str, Any]], *, image_key: str, target_keys: Sequence[str],
                png_scale: float | Mapping[str, float] | None = None, max_images: int = 200,
                ) -> dict[str, IntensityWindow]:
    """``{"image": window, "target": window}`` from (at most ``max_images``, evenly spaced) records."""
    step = max(1, len(records) // max_images)
    chosen = list(records)[::step]

    def load(record: Mapping[str, Any], key: str) -> np.ndarray:
        return load_image_2d(record[key], png_scale=scale_for(png_scale, key), subject_id=record.get("subject_id"))

    images = [load(r, image_key) for r in chosen]
    targets = [load(r, k) for r in chosen for k in target_keys]
    return {"image": fit_window(images), "target": fit_window(targets)}


def read_windows(card: Mapping[str, Any]) -> dict[str, IntensityWindow]:
    """The ``windows`` entry of a model card as :class:`IntensityWindow` objects."""
    return {name: IntensityWindow(*bounds) for name, bounds in card["windows"].items()}


def training_card(records: Sequence[Mapping[str, Any]], *, card_path: str | os.PathLike, image_key: str,
                  target_keys: Sequence[str], windows: Mapping[str, Sequence[float]] | None = None,
                  png_scale: float | Mapping[str, float] | None = None,
                  split: Mapping[str, float] | None = None, network: Mapping[str, Any] | None = None,
                  noiseless_targets: bool = False) -> dict[str, Any]:
    """The model card for this training run, computed without writing anything (configs resolve it;
    :func:`pipeline.engine.model_card.write_model_card` stores it when training starts).

    A card already at ``card_path`` (a resumed run) is reused, so the scale never changes mid-training;
    it must name the same keys. ``windows`` (``{"image": [lo, hi], "target": [lo, hi]}``) fixes the
    windows instead of fitting them on ``records``; it must agree with an existing card. ``split``
    (``val_fraction``, ``test_fraction``, ``seed``) is recorded so that inference and evaluation split a
    folder into the same subjects (:func:`split_settings`); a resumed run must use the same. ``network``: the
    generator's settings (:func:`pipeline.xray.model_card.network_card`), stored for inference; they must
    agree with an existing card that has them. ``noiseless_targets`` is recorded (:func:`training_records`).
    """
    card_path = Path(card_path)
    fixed = None if windows is None else {k: IntensityWindow(*v) for k, v in windows.items()}
    split = None if split is None else {"val_fraction": float(split["val_fraction"]),
                                        "test_fraction": float(split["test_fraction"]), "seed": int(split["seed"])}
    if card_path.exists():
        card = read_model_card(card_path)
        if split is not None:
            split_settings(card, **split)
        if card["image_key"] != image_key or list(card["target_keys"]) != list(target_keys):
            raise InputError(f"{card_path}: model card is for {card['image_key']} -> {card['target_keys']}, not "
                             f"{image_key} -> {list(target_keys)}; use another output_dir")
        if fixed is not None and fixed != read_windows(card):
            raise InputError(f"{card_path}: stored windows {card['windows']} differ from the configured "
                             f"{ {k: w.as_list() for k, w in fixed.items()} }")
        stored = card.get("network")
        stored = None if stored is None else {**OLDER_NETWORK_DEFAULTS, **stored}
        if network is not None and stored is not None and stored != dict(network):
            key = next(k for k in sorted(set(stored) | set(network)) if stored.get(k) != network.get(k))
            raise InputError(f"{card_path}: the model in this output folder was trained with {key} = "
                             f"{stored.get(key)!r}, this run asks for {network.get(key)!r}; use another output_dir")
        return card
    fitted = fixed or fit_windows(records, image_key=image_key, target_keys=target_keys, png_scale=png_scale)
    return {"image_key": image_key, "target_keys": list(target_keys),
            "windows": {k: w.as_list() for k, w in fitted.items()},
            "normalisation": "unit = 2 * (value - lo) / (hi - lo) - 1; value = (unit + 1) / 2 * (hi - lo) + lo",
            "fitted_on": None if fixed else f"{len(records)} training pairs (0.01/99.99 percentiles + 10 % margin)",
            **({"split": split} if split is not None else {}),
            **({"network": dict(network)} if network is not None else {}),
            **({"targets": "noiseless references (<key>_noiseless): the expected DE images"}
               if noiseless_targets else {})}


class ScaleToUnitd(MapTransform):
    """Map ``keys`` from physical values to network units with one :class:`IntensityWindow`."""

    def __init__(self, keys: KeysCollection, *, window: IntensityWindow, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = window

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window.to_unit(d[key])
        return d


def _check_keys(image_key: str, target_keys: Sequence[str]) -> list[str]:
    target_keys = list(target_keys)
    if not target_keys:
        raise ValueError("target_keys must name at least one target image")
    if TARGET_KEY in (image_key, *target_keys) or image_key in target_keys or len(set(target_keys)) != len(target_keys):
        raise ValueError(f"image_key {image_key!r} and target_keys {target_keys} must be distinct and not {TARGET_KEY!r}")
    return target_keys


class BodyMask2Dd(MapTransform):
    """Adds ``mask_key``: :func:`body_mask_2d` of ``image_key`` (physical units, ``(1, H, W)``) repeated to
    ``channels`` channels, so it has the shape of the concatenated targets (for a masked L1)."""

    def __init__(self, image_key: str, *, mask_key: str = "mask", channels: int = 1, fraction: float = 0.05) -> None:
        super().__init__([image_key])
        self.image_key, self.mask_key, self.channels, self.fraction = image_key, mask_key, int(channels), fraction

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key]).as_subclass(torch.Tensor)
        d[self.mask_key] = body_mask_2d(image, fraction=self.fraction).float().expand(self.channels, *image.shape[1:])
        return d


def training_transforms(*, image_key: str, target_keys: Sequence[str], windows: Mapping[str, IntensityWindow],
                        patch_size: int | None = None, divisor: int = 1, flip_lr: bool = True,
                        png_scale: float | Mapping[str, float] | None = None, body_mask: bool = False) -> Compose:
    """Load, scale to [-1, 1], concatenate targets under :data:`TARGET_KEY`, then (random part) crop
    ``patch_size`` x ``patch_size`` (None: whole images, padded (edge) to a multiple of ``divisor``, the
    generator's ``2 ** num_downs``; a ``patch_size`` that is no multiple of it raises :class:`InputError`)
    and mirror left-right (image columns) with p = 0.5 when ``flip_lr``.

    A left-right flip of a projection is another plausible projection (the patient mirrored); up-down
    flips or rotations would put the anatomy upside down, so they are not offered. ``body_mask`` adds a
    ``mask`` (:class:`BodyMask2Dd`, cropped and flipped with the images) for a masked L1.
    """
    target_keys = _check_keys(image_key, target_keys)
    keys = [image_key, TARGET_KEY] + (["mask"] if body_mask else [])
    chain: list = [
        LoadPairedImaged([image_key, *target_keys], png_scale=png_scale),
        *([BodyMask2Dd(image_key, channels=len(target_keys))] if body_mask else []),
        ScaleToUnitd(image_key, window=windows["image"]),
        ScaleToUnitd(target_keys, window=windows["target"]),
        ConcatItemsd(target_keys, name=TARGET_KEY, dim=0),
        DeleteItemsd(target_keys),
        EnsureTyped(keys, dtype=torch.float32, track_meta=False),
        # only what the trainer reads: manifests mixing CTs with and without tumour labels give records
        # with different extra keys (empty cells are dropped), which the batch collation refuses
        SelectItemsd(keys),
    ]
    if patch_size:
        check_patch_size(patch_size, divisor=divisor)
        chain += [SpatialPadd(keys, spatial_size=(patch_size, patch_size), mode="edge"),
                  RandSpatialCropd(keys, roi_size=(patch_size, patch_size), random_size=False)]
    else:
        chain.append(DivisiblePadd(keys, k=divisor, mode="edge"))
    if flip_lr:
        chain.append(RandFlipd(keys, prob=0.5, spatial_axis=1))  # axis 1 of (H, W) = columns = left-right
    return Compose(chain)


def validation_transforms(*, image_key: str, target_keys: Sequence[str], windows: Mapping[str, IntensityWindow],
                          png_scale: float | Mapping[str, float] | None = None) -> Compose:
    """Whole images: the condition in network units, targets kept in physical units (the validation
    metric is MAE in the images' own units), concatenated under :data:`TARGET_KEY`."""
    target_keys = _check_keys(image_key, target_keys)
    return Compose([
        LoadPairedImaged([image_key, *target_keys], png_scale=png_scale),
        ScaleToUnitd(image_key, window=windows["image"]),
        ConcatItemsd(target_keys, name=TARGET_KEY, dim=0),
        DeleteItemsd(target_keys),
        EnsureTyped([image_key, TARGET_KEY], dtype=torch.float32, track_meta=False),
        SelectItemsd([image_key, TARGET_KEY]),  # as in training: extra keys may differ between records
    ])


def body_mask_2d(image: np.ndarray | torch.Tensor, *, fraction: float = 0.05) -> np.ndarray | torch.Tensor:
    """Pixels of the condition image above ``fraction`` x its 99th percentile (physical units).

    For log images ``-ln(I/I0)`` this is "the ray crossed the body" (air is 0); for MR/CT pairs it is a
    crude foreground. Falls back to all pixels when that leaves nothing.
    """
    if isinstance(image, torch.Tensor):
        mask = image > fraction * torch.quantile(image.float().flatten(), 0.99)
        return mask if bool(mask.any()) else torch.ones_like(mask)
    image = np.asarray(image)
    mask = image > fraction * np.percentile(image, 99)
    return mask if mask.any() else np.ones_like(mask)


__all__: Sequence[str] = [
    "TARGET_KEY", "DEFAULT_IMAGE_KEY", "DEFAULT_TARGET_KEYS", "MODEL_CARD_NAME", "ALL_SPLITS", "DEFAULT_SPLIT_SETTINGS",
    "IntensityWindow", "fit_window", "fit_windows", "select_split", "load_records", "training_records", "split_settings",
    "read_windows", "training_card", "ScaleToUnitd",
    "training_transforms", "validation_transforms", "body_mask_2d", "BodyMask2Dd",
]
