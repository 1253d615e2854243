"""The model card: a JSON file written next to ``models/model.pt`` that says what the model was trained
on and how its inputs were scaled, so that inference can use exactly what training saw.

A card is written once per training output folder (atomically) and never silently changed: a resumed
run, or another DDP rank, finds the card already there and must agree with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.io.atomic import atomic_write

__all__ = ["VOLATILE_KEYS", "card_hash", "read_model_card", "write_model_card"]


def _canonical(card: Mapping[str, Any]) -> str:
    return json.dumps(card, indent=2, sort_keys=True, default=str)


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
                     volatile: tuple[str, ...] = VOLATILE_KEYS) -> dict[str, Any]:
    """Write ``card`` to ``path`` unless a card is there already; returns the card on disk.

    An existing card (resumed run, another DDP rank that wrote first) must equal ``card`` except in the
    ``volatile`` entries: otherwise ``ValueError`` names the first differing entry, because a model
    trained under two cards would be described by neither. The stored card is kept as it is.
    """
    path = Path(path)
    wanted = json.loads(_canonical(card))
    if not path.exists():
        try:
            atomic_write(path, lambda tmp: Path(tmp).write_text(_canonical(wanted) + "\n", encoding="utf-8"))
        except FileExistsError:  # another rank wrote it between our check and our write
            pass
    stored = read_model_card(path)
    if stored != wanted:
        differing = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k) and k not in volatile)
        if not differing:
            return stored
        key = differing[0]
        raise ValueError(f"{path}: the model card in this output folder has {key} = {stored.get(key)!r}, this run "
                         f"{wanted.get(key)!r} ({len(differing)} entries differ: {', '.join(differing)}); "
                         "use another output_dir or the stored settings")
    return stored
