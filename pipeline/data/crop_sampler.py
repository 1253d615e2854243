"""Training crops cut on the training device: every crop of an iteration in one batched draw.

Why not a ``DataLoader`` of per-sample MONAI transforms (what this replaced): on a GPU the crops, flips,
plane permutations and slabs were cut on the CPU, one small copy at a time, and with fewer subjects than
``batch_size`` the loader restarted (forking its workers) every iteration: an H200 was busy 0-3 % of the
time. Here the cached volumes of all subjects lie one after another in three flat tensors
(:class:`VolumeBank`: MR float32, CT int16 HU, mask uint8) on the training device, or in pinned host memory
when an explicit estimate says they do not fit; :class:`BodyCropSampler` then draws an iteration's crops
with a few index computations and one gather per image:

- subjects drawn with replacement, ``batch_size`` per iteration with ``samples_per_volume`` crops each, so
  an iteration always has ``batch_size * samples_per_volume`` crops, whatever the number of subjects;
- crop centres inside the body mask with probability ``pos_fraction``, else outside it: rejection sampling
  with ``probes`` random points per crop, inside the mask's bounding box or anywhere in the volume (no
  per-voxel index arrays, which would cost 8 bytes per voxel). When none of a crop's probes lands on the
  asked side (a region under ~10 % of the sampled box: 0.9 ** 32 = 3 %), its first probe is kept; with
  ``air_bone_fraction`` that share of the crops asks them for air or bone inside the mask (the MR's ambiguity);
- a plane per crop (the slab axis, :data:`transforms.plane.PLANE_AXES`) and a left-right flip along the
  patient's x axis, wherever the plane put it;
- windows shifted inside the volume in-plane (edge voxels replicated when the volume is smaller than the
  patch); along the 2.5D slab axis the edge slices are replicated, exactly as inference builds its slabs
  (:func:`transforms.slab.volume_to_slabs`), so the first and last ``k // 2`` slices are centres too;
- slab to channels, CT from int16 HU to [-1, 1] (:func:`transforms.intensity.hu_to_unit_range`), the
  mask as float: the batch the generator takes.

Random draws come from one ``torch.Generator`` on the storage device, seeded: the same seed gives the
same crops on the same kind of device, and :meth:`BodyCropSampler.state_dict` goes into the checkpoint so
that a resumed run continues the stream instead of repeating it.

On a GPU a draw costs ~1.7 ms of Python and kernel launches whatever its size (measured on an H200: a sixth
of a 32-crop L1 iteration, which is itself bound by the launches), so ``batches_per_draw`` iterations'
batches are cut in one draw and handed out one by one (the loaders use 8 on CUDA, 1 on the CPU, where the
gathers, not the launches, cost), and :meth:`BodyCropSampler.prefetch` lets the trainer start the next
draw while the GPU still runs the current iteration. Neither changes the stream of batches for a given
``batches_per_draw``; a checkpoint records the draw and how many of its batches were taken.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from transforms.intensity import hu_to_unit_range
from transforms.plane import PLANE_AXES, check_planes
from transforms.position import box_coordinates

logger = logging.getLogger(__name__)

__all__ = ["BodyCropSampler", "VolumeBank", "bank_bytes", "choose_storage"]

#: Bytes per voxel of the bank: MR float32 + CT int16 + mask uint8.
BYTES_PER_VOXEL = 4 + 2 + 1
#: Share of the device's free memory the bank may take; the rest is for the networks and their activations.
DEVICE_FRACTION = 0.5
#: Random points tried per crop centre.
PROBES = 32
AIR_BELOW_HU, BONE_FROM_HU = -200, 250  # ``air_bone_fraction``'s air and bone: the evaluation's regions (HU)


def bank_bytes(shapes: Sequence[Sequence[int]]) -> int:
    """Memory of a :class:`VolumeBank` holding volumes of these spatial ``shapes`` (X, Y, Z)."""
    return BYTES_PER_VOXEL * sum(math.prod(int(n) for n in shape) for shape in shapes)


def choose_storage(nbytes: int, device: torch.device, *, storage: str = "auto",
                   device_fraction: float = DEVICE_FRACTION) -> torch.device:
    """Where the bank lives: ``device`` itself (``storage="device"``, and on the CPU always), or host memory
    (``"host"``); ``"auto"`` picks the training device when ``nbytes`` fit in ``device_fraction`` of its free
    memory (``torch.cuda.mem_get_info``), else host memory."""
    if storage not in ("auto", "device", "host"):
        raise ValueError(f"crop storage must be 'auto', 'device' or 'host', got {storage!r}")
    device = torch.device(device)
    if device.type != "cuda" or storage == "device":
        return device
    if storage == "host":
        return torch.device("cpu")
    free, _total = torch.cuda.mem_get_info(device)
    return device if nbytes <= device_fraction * free else torch.device("cpu")


class VolumeBank:
    """The training volumes of all subjects, flattened one after another.

    Args:
        subjects: per subject ``mr`` ``(1, X, Y, Z)`` float32 (normalised to [-1, 1]), ``ct`` ``(1, X, Y, Z)``
            int16 HU, ``mask`` ``(1, X, Y, Z)`` uint8 and ``mask_box`` ``(3, 2)`` voxel bounds
            (:class:`transforms.crop.CompactVolumesd`, :class:`transforms.crop.MaskBoundingBoxd`).
        device: the training device; the bank is stored there or in host memory (:func:`choose_storage`);
            host storage for a CUDA device is pinned, so batches go over with asynchronous copies.
        free_inputs: remove each subject's images from its dict once they are copied, so that the host never
            holds the volumes twice (a SynthRAD-sized bank is ~13 GB; the storage's pages are only taken as
            they are written).

    Attributes: ``mr``, ``ct``, ``mask`` (flat), ``offsets`` ``(S,)``, ``shapes`` ``(S, 3)``, ``strides``
    ``(S, 3)`` and ``boxes`` ``(S, 3, 2)`` (int64, on the storage device), ``storage`` and ``device``.
    """

    def __init__(self, subjects: Sequence[dict[str, Any]], *, device: torch.device | str = "cpu",
                 storage: str = "auto", device_fraction: float = DEVICE_FRACTION, free_inputs: bool = False) -> None:
        if not subjects:
            raise ValueError("no training subjects: the bank needs at least one volume")
        self.device = torch.device(device)
        shapes = [tuple(int(n) for n in torch.as_tensor(s["mr"]).shape[1:]) for s in subjects]
        self.nbytes = bank_bytes(shapes)
        self.storage = choose_storage(self.nbytes, self.device, storage=storage, device_fraction=device_fraction)
        pin = self.storage.type == "cpu" and self.device.type == "cuda"
        voxels = [math.prod(shape) for shape in shapes]
        total = sum(voxels)
        empty = dict(device=self.storage, pin_memory=pin)
        self.mr = torch.empty(total, dtype=torch.float32, **empty)
        self.ct = torch.empty(total, dtype=torch.int16, **empty)
        self.mask = torch.empty(total, dtype=torch.uint8, **empty)
        boxes, start = [], 0
        for subject, count in zip(subjects, voxels):
            for name, flat in (("mr", self.mr), ("ct", self.ct), ("mask", self.mask)):
                volume = torch.as_tensor(subject[name]).as_subclass(torch.Tensor)
                flat[start:start + count].copy_(volume.reshape(-1).to(flat.dtype))
                if free_inputs:
                    del subject[name], volume
            boxes.append(torch.as_tensor(subject["mask_box"], dtype=torch.int64))
            start += count
        as_index = dict(dtype=torch.int64, device=self.storage)
        self.shapes = torch.tensor(shapes, **as_index)
        self.offsets = torch.tensor([0, *voxels[:-1]], **as_index).cumsum(0)
        self.strides = torch.stack([self.shapes[:, 1] * self.shapes[:, 2], self.shapes[:, 2],
                                    torch.ones_like(self.shapes[:, 0])], dim=1)
        self.boxes = torch.stack(boxes).to(self.storage)
        logger.info("training volumes of %d subject(s): %.2f GB on %s%s", len(shapes), self.nbytes / 1e9,
                    self.storage, " (pinned host memory: too little free on the training device)" if pin else "")

    def __len__(self) -> int:
        return int(self.shapes.shape[0])


class BodyCropSampler:
    """Endless training batches cut from a :class:`VolumeBank` (see the module docstring).

    Args:
        bank: the volumes.
        spatial_size: the crop in the plane's axes, ``(P, P, k)`` (2D: k = 1; 2.5D: k = the slab) or
            ``(P, P, P)`` (3D), as :func:`pipeline.data.loaders.patch_shape` gives it.
        replicate_axis: the crop axis whose windows replicate edge slices past the volume (2 for 2D/2.5D
            slabs; None in 3D: every window is shifted inside).
        planes: slab planes drawn per crop (2D/2.5D); ``("axial",)`` keeps the RAS axes as they are.
        batch_size, samples_per_volume: subjects drawn per iteration (with replacement) and crops per subject.
        pos_fraction: probability that a crop is centred inside the mask.
        flip_prob: probability of a left-right (RAS x) mirror per crop, every image alike.
        seed: of the generator on the storage device.
        batches_per_draw: iterations' batches cut in one draw (see the module docstring); the stream of crops
            depends on it.
        channels_slab: 2D/2.5D: the slab's slices become MR channels ``(N, k, P, P)`` and CT and mask keep
            the centre slice ``(N, 1, P, P)``; in 3D (False) every image is ``(N, 1, P, P, P)``.
        augment: applied to each batch's MR crops with the sampler's generator (2D/2.5D), e.g.
            :class:`pipeline.data.augment.MRIntensityAugmentation`; CT and mask stay as they are.
        spatial_prob, rotation_deg, scale_fraction: spatial augmentation (2D/2.5D): this share of the crops is
            rotated in-plane by up to ``rotation_deg`` and scaled by up to ``1 +- scale_fraction`` about its
            centre, every image alike (MR and CT bilinear, the mask by a weighted vote); the slab axis is
            untouched. 0 (default): crops are exact voxel windows.
        air_bone_fraction: probability that a crop is centred on air or bone inside the mask (:data:`AIR_BELOW_HU`,
            :data:`BONE_FROM_HU`); at 0 (default) nothing is drawn for it: the stream of a sampler without it.
        position_channels: 2D/2.5D: append each crop pixel's position in its subject's body box as three MR
            channels ``(|x|, y, z)`` after the slab's (:mod:`transforms.position`; rotated crops get the
            interpolated position), so the MR is ``(N, k + 3, P, P)``; not augmented.

    Each batch is ``{"mr", "ct", "mask"}`` float32 on the training device: MR as cached ([-1, 1]), CT in
    [-1, 1], mask 0/1.
    """

    def __init__(self, bank: VolumeBank, *, spatial_size: Sequence[int], replicate_axis: int | None = 2,
                 planes: Sequence[str] | str = ("axial",), batch_size: int = 2, samples_per_volume: int = 2,
                 pos_fraction: float = 0.9, flip_prob: float = 0.5, seed: int = 0, probes: int = PROBES,
                 channels_slab: bool = True, augment: Callable[..., torch.Tensor] | None = None,
                 spatial_prob: float = 0.0, rotation_deg: float = 10.0, scale_fraction: float = 0.1,
                 batches_per_draw: int = 1, position_channels: bool = False, air_bone_fraction: float = 0.0) -> None:
        for name, value in (("pos_fraction", pos_fraction), ("flip_prob", flip_prob), ("spatial_prob", spatial_prob),
                            ("air_bone_fraction", air_bone_fraction)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if int(batch_size) < 1 or int(samples_per_volume) < 1 or int(batches_per_draw) < 1:
            raise ValueError("batch_size, samples_per_volume and batches_per_draw must be >= 1, got "
                             f"{batch_size}, {samples_per_volume}, {batches_per_draw}")
        self.bank = bank
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.replicate_axis = replicate_axis
        self.planes = check_planes(planes)
        self.batch_size, self.samples_per_volume = int(batch_size), int(samples_per_volume)
        self.pos_fraction, self.flip_prob = float(pos_fraction), float(flip_prob)
        self.air_bone_fraction = float(air_bone_fraction)
        self.probes = int(probes)
        self.channels_slab = bool(channels_slab)
        for name, asked in (("MR augmentation", augment is not None), ("spatial augmentation", spatial_prob > 0),
                            ("position channels", bool(position_channels))):
            if asked and not self.channels_slab:
                raise ValueError(f"{name} works on 2D/2.5D crops; 3D mode takes none")
        self.augment = augment
        self.spatial_prob, self.rotation_deg = float(spatial_prob), float(rotation_deg)
        self.position_channels = bool(position_channels)
        self.scale_fraction = float(scale_fraction)
        self.generator = torch.Generator(device=bank.storage).manual_seed(int(seed))
        # crop axis -> dimension of the index: (N, k, P, P) for slabs, (N, P, P, P) in 3D
        self._layout = (2, 3, 1) if self.channels_slab else (1, 2, 3)
        # plane -> order of the RAS axes that puts its normal last, one row per allowed plane
        self._orders = torch.tensor([PLANE_AXES[p] for p in self.planes], dtype=torch.int64, device=bank.storage)
        self.batches_per_draw = int(batches_per_draw)
        self._queue: list[dict[str, torch.Tensor]] = []  # batches of the last draw not yet handed out
        self._draw_state: torch.Tensor | None = None  # the generator's state before that draw

    @property
    def crops_per_batch(self) -> int:
        return self.batch_size * self.samples_per_volume

    # --- checkpoint entry: the random stream continues after a resume -------------------------------------
    def state_dict(self) -> dict:
        """The generator's state before the current draw and how many of its batches were handed out: a
        resumed run cuts that draw again and continues after them."""
        if self._queue:
            return {"generator": self._draw_state, "taken": self.batches_per_draw - len(self._queue)}
        return {"generator": self.generator.get_state(), "taken": 0}

    def load_state_dict(self, state: Mapping) -> None:
        self.generator.set_state(torch.as_tensor(state["generator"]).cpu())
        self._queue = []
        taken = int(state.get("taken", 0))
        if taken:
            self._refill()
            del self._queue[:taken]

    # --- draws --------------------------------------------------------------------------------------------
    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.bank.storage)

    def _centres(self, subjects: torch.Tensor) -> torch.Tensor:
        """``(N, 3)`` RAS voxel centres: inside the mask with probability ``pos_fraction`` (drawn in its box),
        else outside (drawn anywhere), or on air or bone inside it with probability ``air_bone_fraction``; the
        first of ``probes`` random points on the asked side."""
        bank, n = self.bank, subjects.shape[0]
        inside = self._uniform(n) < self.pos_fraction
        # drawn only with the option, so that without it the stream is the one before the option existed
        air_bone = self._uniform(n) < self.air_bone_fraction if self.air_bone_fraction > 0 else None
        inside = inside if air_bone is None else inside | air_bone
        shape, box = bank.shapes[subjects], bank.boxes[subjects]
        low = torch.where(inside[:, None], box[..., 0], 0)
        high = torch.where(inside[:, None], box[..., 1], shape)
        points = low[:, None] + (self._uniform(n, self.probes, 3) * (high - low)[:, None]).long()
        points = torch.minimum(points, high[:, None] - 1)  # float rounding must not reach the upper bound
        linear = bank.offsets[subjects][:, None] + (points * bank.strides[subjects][:, None]).sum(-1)
        wanted = (bank.mask.take(linear) > 0) == inside[:, None]
        if air_bone is not None:
            hu = bank.ct.take(linear)
            wanted &= ~air_bone[:, None] | (hu < AIR_BELOW_HU) | (hu >= BONE_FROM_HU)
        first = wanted.to(torch.uint8).argmax(dim=1)  # the first probe on the asked side (0 if none is)
        return points[torch.arange(n, device=points.device), first]

    def _windows(self, batches: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
        """This draw's flat index base ``(N,)`` (the subject's offset) and, per crop axis, the window's first
        voxel ``(N,)``, its steps ``(N, size)`` (mirrored for a flipped crop), the axis length and stride."""
        bank = self.bank
        subjects = torch.randint(len(bank), (batches * self.batch_size,), generator=self.generator, device=bank.storage)
        subjects = subjects.repeat_interleave(self.samples_per_volume)
        n = subjects.shape[0]
        centres = self._centres(subjects)
        orders = self._orders[torch.randint(len(self.planes), (n,), generator=self.generator, device=bank.storage)]
        flips = self._uniform(n) < self.flip_prob
        shape, strides = bank.shapes[subjects], bank.strides[subjects]
        axes = []
        for axis, size in enumerate(self.spatial_size):
            ras = orders[:, axis]  # the RAS axis this crop axis runs along
            length = shape.gather(1, ras[:, None])[:, 0]
            start = centres.gather(1, ras[:, None])[:, 0] - size // 2
            if axis != self.replicate_axis:  # shift the window inside the volume where it fits
                start = torch.where(length >= size, torch.minimum(start.clamp(min=0), length - size), start)
            steps = torch.arange(size, device=bank.storage).expand(n, size)
            mirrored = flips & (ras == 0)  # the left-right flip mirrors the patient's x axis, wherever it went
            steps = torch.where(mirrored[:, None], size - 1 - steps, steps)
            axes.append((start, steps, length, strides.gather(1, ras[:, None])[:, 0]))
        return bank.offsets[subjects], axes

    def _view(self, values: torch.Tensor, axis: int) -> torch.Tensor:
        """``(N, size)`` values along crop ``axis`` shaped to broadcast into the index layout."""
        view = [values.shape[0], 1, 1, 1]
        view[self._layout[axis]] = values.shape[1]
        return values.view(view)

    def _index(self, batches: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flat bank indices of this draw's crops: ``(N, k, P, P)`` with the slab axis first (2D/2.5D: the
        network's channel layout, and rows of voxels along the in-plane axes, which reads memory in longer
        runs than slab-last for coronal and sagittal crops), or ``(N, P, P, P)`` in 3D; and None. With spatial
        augmentation, the four in-plane neighbours of each rotated and scaled position ``(4, N, k, P, P)`` and
        their bilinear weights ``(4, N, 1, P, P)``."""
        base, axes = self._windows(batches)
        n = base.shape[0]
        if self.spatial_prob == 0.0:
            index = base.view(n, 1, 1, 1)
            for axis, (start, steps, length, stride) in enumerate(axes):
                positions = torch.minimum((start[:, None] + steps).clamp(min=0), length[:, None] - 1)  # edges replicate
                index = index + self._view(positions * stride[:, None], axis)
            return index, None
        # in-plane rotation and scaling about the window's centre, the slab axis as it is
        chosen = self._uniform(n) < self.spatial_prob
        angle = torch.where(chosen, (self._uniform(n) * 2 - 1) * math.radians(self.rotation_deg), 0.0)
        log_scale = math.log1p(self.scale_fraction)
        scale = torch.where(chosen, torch.exp((self._uniform(n) * 2 - 1) * log_scale), 1.0)
        (start_a, steps_a, length_a, stride_a), (start_b, steps_b, length_b, stride_b), slab = axes
        size_a, size_b = self.spatial_size[:2]
        u = (steps_a - size_a // 2).to(torch.float32)[:, :, None]  # (N, P, 1)
        v = (steps_b - size_b // 2).to(torch.float32)[:, None, :]  # (N, 1, P)
        cos, sin = (scale * torch.cos(angle)).view(n, 1, 1), (scale * torch.sin(angle)).view(n, 1, 1)
        centre_a, centre_b = (start_a + size_a // 2).view(n, 1, 1), (start_b + size_b // 2).view(n, 1, 1)
        position_a = (centre_a + cos * u - sin * v).clamp(min=0).minimum((length_a - 1).view(n, 1, 1))
        position_b = (centre_b + sin * u + cos * v).clamp(min=0).minimum((length_b - 1).view(n, 1, 1))
        start_c, steps_c, length_c, stride_c = slab
        slices = torch.minimum((start_c[:, None] + steps_c).clamp(min=0), length_c[:, None] - 1)
        offset = base.view(n, 1, 1, 1) + self._view(slices * stride_c[:, None], 2)  # (N, k, 1, 1)
        low_a, low_b = position_a.floor(), position_b.floor()
        weight_a, weight_b = (position_a - low_a)[:, None], (position_b - low_b)[:, None]  # (N, 1, P, P)
        low_a, low_b = low_a.long(), low_b.long()
        high_a = torch.minimum(low_a + 1, (length_a - 1).view(n, 1, 1))
        high_b = torch.minimum(low_b + 1, (length_b - 1).view(n, 1, 1))

        def at(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return offset + (a * stride_a.view(n, 1, 1) + b * stride_b.view(n, 1, 1))[:, None]

        index = torch.stack([at(low_a, low_b), at(high_a, low_b), at(low_a, high_b), at(high_a, high_b)])
        weights = torch.stack([(1 - weight_a) * (1 - weight_b), weight_a * (1 - weight_b),
                               (1 - weight_a) * weight_b, weight_a * weight_b])
        return index, weights

    def _cut(self, batches: int) -> dict[str, torch.Tensor]:
        """The crops of ``batches`` iterations, one after another along the first axis."""
        bank = self.bank
        index, weights = self._index(batches)
        # take() on flat indices: 2-6x faster than advanced indexing on the CPU (a strided index most of all)
        if not self.channels_slab:  # 3D: (N, P, P, P)
            mr, ct, mask = (flat.take(index)[:, None] for flat in (bank.mr, bank.ct, bank.mask))
        elif weights is None:  # (N, k, P, P): slices as channels; CT and mask at the centre slice
            middle = index.shape[1] // 2
            centre = index[:, middle : middle + 1]
            mr, ct, mask = bank.mr.take(index), bank.ct.take(centre), bank.mask.take(centre)
        else:  # bilinear in-plane over the four neighbours; the mask stays 0/1 (a weighted vote)
            middle = index.shape[2] // 2
            centre = index[:, :, middle : middle + 1]
            mr = (bank.mr.take(index) * weights).sum(0)
            ct = (bank.ct.take(centre).to(torch.float32) * weights).sum(0)
            mask = (bank.mask.take(centre).to(torch.float32) * weights).sum(0) >= 0.5
        if self.augment is not None:
            mr = self.augment(mr, generator=self.generator)
        if self.position_channels:  # after the augmentation: a position is not an MR intensity
            mr = torch.cat([mr, self._position(centre, weights)], dim=1)
        batch = {"mr": mr, "ct": hu_to_unit_range(ct.to(torch.float32)), "mask": mask.to(torch.float32)}
        if bank.storage != bank.device:  # pinned host memory -> device, asynchronously
            batch = {key: value.pin_memory().to(bank.device, non_blocking=True) for key, value in batch.items()}
        return batch

    def _position(self, centre: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """``(N, 3, P, P)`` position channels (:func:`transforms.position.box_coordinates`) of the crops' centre
        slices, decoded from their flat indices ``(N, 1, P, P)`` (or the four neighbours ``(4, N, 1, P, P)``
        with their bilinear ``weights``)."""
        bank = self.bank
        crops = centre if weights is None else centre[0]
        subjects = torch.searchsorted(bank.offsets, crops.flatten(1)[:, :1].contiguous(), right=True)[:, 0] - 1  # (N,)
        view = (-1, 1, 1, 1)  # per crop, over (1, P, P)

        def voxels(index: torch.Tensor) -> torch.Tensor:  # (N, 1, P, P) flat -> (N, 3, P, P) RAS voxel indices
            local = index - bank.offsets[subjects].view(view)
            stride_x, stride_y = bank.strides[subjects, 0].view(view), bank.strides[subjects, 1].view(view)
            x, rest = local // stride_x, local % stride_x
            return torch.cat([x, rest // stride_y, rest % stride_y], dim=1).to(torch.float32)

        if weights is None:
            positions = voxels(centre)
        else:
            positions = sum(voxels(corner) * weight for corner, weight in zip(centre, weights))
        return box_coordinates(positions, bank.boxes[subjects])

    def _refill(self) -> None:
        self._draw_state = self.generator.get_state()
        crops, block = self.crops_per_batch, self._cut(self.batches_per_draw)
        self._queue = [{key: value[i * crops:(i + 1) * crops] for key, value in block.items()}
                       for i in range(self.batches_per_draw)]

    def draw(self) -> dict[str, torch.Tensor]:
        """One iteration's batch (see the class docstring for shapes), from the current draw or a new one."""
        if not self._queue:
            self._refill()
        return self._queue.pop(0)

    def prefetch(self) -> None:
        """Cut the next draw now if the current one is used up (module docstring); the batches stay the same."""
        if not self._queue:
            self._refill()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.draw()
