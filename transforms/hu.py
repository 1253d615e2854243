"""The CT window's constants in HU, apart from the transforms that use them: the phantom generators need the
numbers, not MONAI and torch, whose import costs each phantom worker process seconds."""

from __future__ import annotations

__all__ = ["HU_AIR", "HU_MAX", "HU_MIN"]

#: Lower end of the HU window mapped to [-1, 1] (the SynthRAD2023 evaluation window) and its upper end.
HU_MIN = -1024.0
HU_MAX = 3000.0
#: Air.
HU_AIR = -1000.0
