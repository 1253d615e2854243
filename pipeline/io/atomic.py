"""Atomic file writing: a crash never leaves a truncated file under the final name, and an existing
file is only replaced when asked (``overwrite=True``).

Every write goes to a temporary file in the destination folder (same file system, same suffix so
libraries pick the format from it) and is moved into place with ``os.replace``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import as_flag

__all__ = ["atomic_path", "atomic_write", "full_suffix", "refuse_existing"]

_DOUBLE_SUFFIXES = (".nii.gz", ".tar.gz")


def full_suffix(path: str | os.PathLike) -> str:
    """``sct.nii.gz`` -> ``.nii.gz``; ``CT_0001.dcm`` -> ``.dcm`` (libraries choose the format from it)."""
    path = Path(path)
    name = path.name.lower()
    for suffix in _DOUBLE_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def refuse_existing(path: Path) -> None:
    raise FileExistsError(f"{path} exists; pass overwrite=True / --overwrite to replace it")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); on success move it onto ``path``.

    Raises ``FileExistsError`` before anything is written if ``path`` exists and not ``overwrite``.
    If the body raises, the temporary file is removed and ``path`` is left untouched.
    """
    path, overwrite = Path(path), as_flag(overwrite, name="overwrite")
    if path.exists() and not overwrite:
        refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared (planning systems, colleagues)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"writing {path} produced no data")
        if path.exists() and not overwrite:  # appeared while we were writing: still never clobber it
            refuse_existing(path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object], *, overwrite: bool = False) -> Path:
    """Call ``write_fn(tmp_path)`` then atomically move the result to ``path``; returns ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        write_fn(tmp)
    return Path(path)


