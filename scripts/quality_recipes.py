"""The recipes that :mod:`scripts.benchmark_quality` races: named sets of ``train.json`` overrides."""

from __future__ import annotations

#: The bundle default before the 2026-12-02 benchmark (patch 64 x 8 crops, Pix2Pix lr and dropout, plain L1):
#: the recipes below are written against it, so they mean the same whatever ``train.json`` ships now.
PREVIOUS_DEFAULT: dict[str, object] = {"patch_size": 64, "samples_per_volume": 8, "learning_rate": 2e-4, "dropout": 0.5,
                                       "masked_l1": False, "adversarial_start_fraction": 0.0}
WARMUP_MASKED = {"adversarial_start_fraction": 0.3, "masked_l1": True}
FOV128 = {"patch_size": 128, "samples_per_volume": 2}
CPU_LR = {"learning_rate": 5e-4, "dropout": 0.0}

#: Recipe name -> ``train.json`` overrides. Each adds one ingredient to the one before, so neighbours
#: in the table are an ablation. "default" is the bundle as shipped (since 2026-12-02 the same as
#: "cpu_lr_warmup_masked_fov128").
RECIPES: dict[str, dict[str, object]] = {
    "default": {},
    "previous_default": dict(PREVIOUS_DEFAULT),
    "warmup": {**PREVIOUS_DEFAULT, "adversarial_start_fraction": 0.3},
    "warmup_masked": {**PREVIOUS_DEFAULT, **WARMUP_MASKED},
    "warmup_masked_fov128": {**PREVIOUS_DEFAULT, **WARMUP_MASKED, **FOV128},
    "cpu_lr": {**PREVIOUS_DEFAULT, **CPU_LR},
    "cpu_lr_warmup_masked": {**PREVIOUS_DEFAULT, **CPU_LR, **WARMUP_MASKED},
    "cpu_lr_warmup_masked_fov128": {**PREVIOUS_DEFAULT, **CPU_LR, **WARMUP_MASKED, **FOV128},
    "fov128": {**PREVIOUS_DEFAULT, **FOV128},
    "cosine": {"budget_schedule": "cosine"},
    "adamw_cosine": {"optimizer": "adamw", "budget_schedule": "cosine"},
    # against the shipped default (2026-12-02): does the adversarial term earn its compute? a whole 1 mm slice?
    "l1_only": {"adversarial_start_fraction": 1.0},
    "fov256": {"patch_size": 256, "samples_per_volume": 1},  # a whole 1 mm head slice (edges replicated)
    "planes3": {"planes": "all"},  # multi-plane 2.5D: one network on axial, coronal and sagittal slabs, fused
    "l1_planes3": {"adversarial_start_fraction": 1.0, "planes": "all"},
    # capacity and context against the shipped default (issue 19): wider, deeper, more slices per slab
    "width48": {"base_channels": 48},
    "width64": {"base_channels": 64},
    "depth7": {"num_downs": 7},
    "slab7": {"slab_size": 7},
    "slab9": {"slab_size": 9},
    # augmentation on the training device (issue 19): the MR as other scanners could show it; small rotations.
    # Both are on in the default since 0.4.0 (the race of 2026-12-04 was "no_aug" against "both_aug")
    "no_aug": {"mr_augmentation": "none", "spatial_augmentation": False},
    "intensity_aug": {"mr_augmentation": "intensity", "spatial_augmentation": False},
    "spatial_aug": {"mr_augmentation": "none", "spatial_augmentation": True},
    "both_aug": {"mr_augmentation": "intensity", "spatial_augmentation": True},
    # per CPU-minute: narrower networks buy iterations (24 the default since 0.4.3, chosen by two runs against 32)
    "width32": {"base_channels": 32},
    "width24": {"base_channels": 24},
    "width16": {"base_channels": 16},
    # what the narrower network's speed buys instead of iterations: whole slices, more crops per step
    "width16_fov256": {"base_channels": 16, "patch_size": 256, "samples_per_volume": 1},
    # a share of the crops centred on air or bone, where the held-out error lies (issue 19)
    "air_bone": {"air_bone_fraction": 0.5},
    "batch8": {"batch_size": 4},  # 4 x 2 crops: the default since 0.4.4 (two runs against 0.4.3's 2 x 2)
    "batch4": {"batch_size": 2},  # 0.4.3's default
    "width16_batch8": {"base_channels": 16, "batch_size": 4},
    "batch16": {"batch_size": 8},
    "batch8_lr2e3": {"batch_size": 4, "learning_rate": 2e-3},
    # the learning rate around the default (1e-3 since 0.4.2, chosen by three pairs against 5e-4)
    "lr5e4": {"learning_rate": 5e-4},
    "lr1e3": {"learning_rate": 1e-3},
    "lr2e3": {"learning_rate": 2e-3},
    # the decoder's up-sampling without the transposed convolutions' checkerboard (same cost since the folded
    # resize-convolution of networks/generators.py)
    "resize": {"upsample": "resize"},
    # the validated and saved model as an average of the weights (issue 19: the train/held-out gap)
    "ema": {"ema_decay": 0.999},
    "detail": {"detail_weight": 100.0},  # the L1 of the high-pass error (sigma 4 px = 4 mm at 1 mm) beside the L1
    # coarse 3D context (issue 19): each pixel's position in the body box as three more input channels
    "position": {"position_channels": True},
    # float32 throughout: on a CPU with native bf16 (AMX, AVX512-BF16) the default's amp trains in bf16 autocast
    "fp32": {"amp": False},
}
DEFAULT_RECIPES = ("default",)
#: Shared by every recipe: the bundle's own validation schedule (every tenth of the budget, at most 10 % of the
#: time: a whole-volume, three-plane validation at 1 mm takes about a minute on one thread).
COMMON = {"epoch_length": 100}
