"""The model card: a JSON file written next to ``models/model.pt`` that says what the model was trained
on and how its inputs were scaled, so that inference can use exactly what training saw.

A card is written once per training output folder (atomically) and never silently changed: a resumed
run, or another DDP rank, finds the card already there and must agree with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, as_flag
from pipeline.io.atomic import atomic_write

__all__ = ["VOLATILE_KEYS", "card_hash", "check_patch_size", "read_model_card", "write_model_card", "check_settings",
           "find_card"]


def _canonical(card: Mapping[str, Any]) -> str:
    return json.dumps(card, indent=2, sort_keys=True, default=str)


def check_patch_size(patch_size: int, *, divisor: int) -> None:
    """Raise :class:`InputError` (one line, before any training) when ``patch_size`` is not a multiple of
    ``divisor`` = ``2 ** num_downs``: the U-Net halves its input ``num_downs`` times and would fail on the
    first batch with a page of shape errors. Shared by both tasks' training."""
    if int(patch_size) % int(divisor):
        larger = -(-int(patch_size) // int(divisor)) * int(divisor)
        num_downs = int(divisor).bit_length() - 1
        raise InputError(f"patch_size {patch_size} is not a multiple of 2 ** num_downs = {divisor} (the U-Net halves "
                         f"the window {num_downs} times): use e.g. --patch_size {larger}, or fewer --num_downs")


def card_hash(card: Mapping[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of the card's canonical JSON: a short model identity for
    provenance fields (NIfTI ``descrip``, DICOM ``SoftwareVersions``)."""
    return hashlib.sha256(_canonical(card).encode()).hexdigest()[:12]


def read_model_card(path: str | os.PathLike) -> dict[str, Any]:
    """The card at ``path`` as a dict (``FileNotFoundError`` when absent)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


#: Entries that may change when a run is resumed (a newer rtsynth resuming an older run's training).
VOLATILE_KEYS = ("rtsynth_version",)


def write_model_card(path: str | os.PathLike, card: Mapping[str, Any], *,
                     volatile: tuple[str, ...] = VOLATILE_KEYS,
                     older_defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``card`` to ``path`` unless a card is there already; returns the card on disk.

    An existing card (resumed run, another DDP rank that wrote first) must equal ``card`` except in the
    ``volatile`` entries: otherwise ``ValueError`` names the first differing entry, because a model
    trained under two cards would be described by neither. ``older_defaults`` fills the entries a card
    written before they existed lacks (what those runs used), so such a run resumes when its settings
    match. The stored card is kept as it is.
    """
    path = Path(path)
    wanted = json.loads(_canonical(card))
    if not path.exists():
        try:
            atomic_write(path, lambda tmp: Path(tmp).write_text(_canonical(wanted) + "\n", encoding="utf-8"))
        except FileExistsError:  # another rank wrote it between our check and our write
            pass
    stored = read_model_card(path)
    compared = {**json.loads(_canonical(dict(older_defaults or {}))), **stored}
    if compared != wanted:
        differing = sorted(k for k in set(compared) | set(wanted)
                           if compared.get(k) != wanted.get(k) and k not in volatile)
        if not differing:
            return stored
        key = differing[0]
        raise ValueError(f"{path}: the model card in this output folder has {key} = {compared.get(key)!r}, this run "
                         f"{wanted.get(key)!r} ({len(differing)} entries differ: {', '.join(differing)}); "
                         "use another output_dir or the stored settings")
    return stored


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def check_settings(card: Mapping[str, Any], given: Mapping[str, Any], *, path: str | os.PathLike,
                   normalise: Callable[[str, Any], Any] | None = None) -> dict[str, Any]:
    """``given`` inference settings (None = not given, dropped) checked against the ``card``'s values.

    A value the card holds as a bool is read as a flag (the command line hands "false" over as a string),
    then ``normalise(key, value)`` if given; a value that still differs raises :class:`InputError` in one
    line naming the setting, both values and the card. Returns the given values, normalised."""
    out = {}
    for key, value in given.items():
        if value is None:
            continue
        if isinstance(card[key], bool):
            value = as_flag(value, name=key)
        if normalise is not None:
            value = normalise(key, value)
        if not _same(value, card[key]):
            raise InputError(f"{key} = {value!r} was asked for, but the model was trained with {key} = "
                             f"{card[key]!r} ({path}); leave {key} unset to use the model card's value")
        out[key] = value
    return out


def find_card(checkpoint: str | os.PathLike, name: str) -> Path | None:
    """The card ``name`` for ``checkpoint``: beside it (``models/model.pt``) or, for a training checkpoint
    in ``checkpoints/``, in the run's ``models/`` folder. None when there is none."""
    checkpoint = Path(checkpoint)
    for candidate in (checkpoint.parent / name, checkpoint.parent.parent / "models" / name):
        if candidate.is_file():
            return candidate
    return None
