"""Whole-directory helpers over a :class:`FileLayer`: a Zarr checkpoint is a directory tree."""

from __future__ import annotations

import contextlib
import time

from trackpoint.backends.stores import FileLayer
from trackpoint.errors import CheckpointError


def strip(path: str) -> str:
    """``path`` without its URL scheme (stores return paths of either spelling)."""
    return path.split("://", 1)[1] if "://" in path else path


def newest_mtime(files: FileLayer, directory: str) -> float | None:
    """Newest modification time of anything below ``directory``; ``None`` if it holds nothing.

    A file whose time the store cannot tell counts as modified now, so that
    cleanup keeps what it cannot date.
    """
    newest: float | None = files.modified(directory)
    for path in files.find(directory):
        with contextlib.suppress(CheckpointError):
            m = files.modified(path)
            m = time.time() if m is None else m
            newest = m if newest is None else max(newest, m)
    return newest
