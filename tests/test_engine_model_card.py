"""Tests for pipeline.engine.model_card: write/read round trip, idempotent rewrites of the same card,
refusal (ValueError naming the differing entry, file untouched) of a different card, volatile entries,
the race with another rank writing first, and ``card_hash`` (12 hex digits, independent of key order, content-sensitive).
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

import pytest

from pipeline.engine import model_card
from pipeline.engine.model_card import VOLATILE_KEYS, card_hash, check_patch_size, read_model_card, write_model_card
from pipeline.errors import InputError

CARD = {
    "mode": "2.5d",
    "slab_size": 5,
    "patch_size": 64,
    "hu_window": [-1024.0, 3000.0],
    "normalisation": {"mr": "0 -> -1, p99.5 inside mask -> +1", "upper_percentile": 99.5},
    "target_spacing": None,
}


def test_write_then_read_round_trip(tmp_path):
    path = tmp_path / "models" / "model_card.json"
    returned = write_model_card(path, CARD)
    assert returned == CARD
    assert read_model_card(path) == CARD
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == CARD and list(on_disk) == sorted(CARD)  # canonical: sorted keys
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary files left


def test_values_are_stored_as_json(tmp_path):
    path = tmp_path / "card.json"
    stored = write_model_card(path, {"windows": {"image": (0.0, 4.5)}, "data": Path("/data/phantoms")})
    assert stored == {"windows": {"image": [0.0, 4.5]}, "data": "/data/phantoms"}  # tuple -> list, Path -> str
    assert read_model_card(path) == stored


def test_same_card_written_twice_is_fine(tmp_path):
    path = tmp_path / "card.json"
    write_model_card(path, CARD)
    before = path.read_bytes()
    reordered = dict(reversed(list(CARD.items())))
    reordered["hu_window"] = tuple(CARD["hu_window"])  # equal once stored as JSON
    assert write_model_card(path, reordered) == CARD
    assert path.read_bytes() == before


@pytest.mark.parametrize(("key", "value"), [("slab_size", 3), ("mode", "3d"), ("extra", 1)])
def test_a_differing_card_raises_and_leaves_the_file_alone(tmp_path, key, value):
    path = tmp_path / "card.json"
    write_model_card(path, CARD)
    before = path.read_bytes()
    other = {**CARD, key: value}
    with pytest.raises(ValueError, match=rf"has {key} = .*1 entries differ: {key}"):
        write_model_card(path, other)
    assert path.read_bytes() == before
    assert read_model_card(path) == CARD


def test_the_error_names_the_first_of_several_differing_keys(tmp_path):
    path = tmp_path / "card.json"
    write_model_card(path, CARD)
    other = {**CARD, "patch_size": 32, "mode": "2d", "slab_size": 3}
    with pytest.raises(ValueError) as info:
        write_model_card(path, other)
    message = str(info.value)
    assert message.startswith(f"{path}: the model card in this output folder has mode = '2.5d', this run '2d'")
    assert "3 entries differ: mode, patch_size, slab_size" in message


def test_a_key_stored_as_none_and_absent_from_the_new_card_does_not_crash(tmp_path):
    """Entries are compared with ``dict.get``, so absent and None count as equal: the stored card wins.
    (Before VOLATILE_KEYS this case raised IndexError from an empty list of differing keys.)"""
    path = tmp_path / "card.json"
    write_model_card(path, CARD)  # target_spacing: None
    before = path.read_bytes()
    without = {k: v for k, v in CARD.items() if k != "target_spacing"}
    assert write_model_card(path, without) == CARD
    assert path.read_bytes() == before


def test_volatile_entries_may_differ_and_the_stored_card_is_kept(tmp_path):
    assert "rtsynth_version" in VOLATILE_KEYS
    path = tmp_path / "card.json"
    write_model_card(path, {**CARD, "rtsynth_version": "0.1.0"})
    before = path.read_bytes()
    assert write_model_card(path, {**CARD, "rtsynth_version": "0.2.0"}) == {**CARD, "rtsynth_version": "0.1.0"}
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match=r"has slab_size = 5, this run 3 \(1 entries differ: slab_size\)"):
        write_model_card(path, {**CARD, "rtsynth_version": "0.2.0", "slab_size": 3})
    assert path.read_bytes() == before
    # the caller decides what is volatile
    assert write_model_card(path, {**CARD, "rtsynth_version": "0.2.0", "slab_size": 3},
                            volatile=("rtsynth_version", "slab_size"))["slab_size"] == 5
    with pytest.raises(ValueError, match="rtsynth_version"):
        write_model_card(path, {**CARD, "rtsynth_version": "0.2.0"}, volatile=())


def test_a_card_older_than_an_entry_resumes_with_the_entrys_older_default(tmp_path):
    path = tmp_path / "card.json"
    write_model_card(path, CARD)  # written before "upsample" existed
    before = path.read_bytes()
    older = {"upsample": "transpose"}
    assert write_model_card(path, {**CARD, "upsample": "transpose"}, older_defaults=older) == CARD
    assert path.read_bytes() == before  # the stored card (and its hash, the sCT provenance) is kept
    with pytest.raises(ValueError, match=r"has upsample = 'transpose', this run 'resize'"):
        write_model_card(path, {**CARD, "upsample": "resize"}, older_defaults=older)
    with pytest.raises(ValueError, match="upsample"):  # without the older default the entry is missing
        write_model_card(path, {**CARD, "upsample": "transpose"})
    assert path.read_bytes() == before


def test_another_rank_writing_first_is_accepted_when_equal(tmp_path, monkeypatch):
    path = tmp_path / "card.json"

    def other_rank_wins(target, write_fn, **kwargs):
        Path(target).write_text(json.dumps(CARD), encoding="utf-8")
        raise FileExistsError(target)

    monkeypatch.setattr(model_card, "atomic_write", other_rank_wins)
    assert write_model_card(path, CARD) == CARD
    with pytest.raises(ValueError, match="slab_size"):
        write_model_card(path, {**CARD, "slab_size": 7})


def test_read_model_card_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_model_card(tmp_path / "nothing.json")


def test_card_hash_is_short_stable_under_key_order_and_content_sensitive():
    h = card_hash(CARD)
    assert len(h) == 12 and set(h) <= set(string.hexdigits.lower())
    reordered = {k: CARD[k] for k in reversed(list(CARD))}
    reordered["normalisation"] = dict(reversed(list(CARD["normalisation"].items())))  # nested order too
    assert card_hash(reordered) == h
    assert card_hash({**CARD, "slab_size": 3}) != h
    assert card_hash({**CARD, "hu_window": [-1000.0, 3000.0]}) != h
    assert card_hash({k: v for k, v in CARD.items() if k != "target_spacing"}) != h
    # the hash of the card as stored: SHA-256 of the sorted, indented JSON
    expected = hashlib.sha256(json.dumps(CARD, indent=2, sort_keys=True).encode()).hexdigest()[:12]
    assert h == expected


def test_card_hash_matches_the_card_on_disk(tmp_path):
    path = tmp_path / "card.json"
    write_model_card(path, {**CARD, "hu_window": (-1024.0, 3000.0)})
    assert card_hash(read_model_card(path)) == card_hash(CARD)


def test_check_patch_size_accepts_multiples_and_names_the_next_one():
    check_patch_size(128, divisor=64)
    check_patch_size(64, divisor=64)
    with pytest.raises(InputError, match=r"patch_size 100 is not a multiple of 2 \*\* num_downs = 64 \(the U-Net halves "
                                         r"the window 6 times\): use e.g. --patch_size 128"):
        check_patch_size(100, divisor=64)
