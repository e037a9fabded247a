"""Crash-safe file writes: a reader sees the old file or the new one, never a part."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a rename inside it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`, flush it, then rename it over `path`.

    If the body raises (or the process dies) `path` is untouched; the temporary
    file is removed on exceptions and carries a `.tmp` suffix otherwise, so
    leftovers of killed writers are recognisable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_torch_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load` of a checkpoint or weights file.

    weights_only=False: Lightning checkpoints pickle their hyper-parameters and the released LESPS weights were
    saved with full pickle; only load files you trust (your runs, the authors' releases).
    """
    return torch.load(path, map_location=map_location, weights_only=False)
