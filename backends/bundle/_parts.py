"""Reading part of a stored piece: the contiguous byte runs that hold it, and putting what was read in place.

Of a piece (a stored slice, or a whole tensor) that a requested part only overlaps, the bundle reader
fetches the overlapping bytes alone (:meth:`BundleReader.read_slice
<trackpoint.backends.bundle._reader.BundleReader.read_slice>`): one byte range per run of contiguous
bytes when the runs are long and few, else the piece's overlapping rows whole.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

__all__ = ["byte_runs", "finish_part"]

#: Runs shorter than this are not read one by one: the overlapping rows are read whole instead.
_MIN_RUN: Final = 4096
#: Nor are more runs than this per piece.
_MAX_RUNS: Final = 4096


def byte_runs(
    shape: tuple[int, ...], local: tuple[slice, ...], itemsize: int
) -> tuple[np.ndarray[Any, Any], int] | None:
    """Byte offsets (in the piece) and length of the contiguous runs holding ``local`` of a C-order piece.

    ``None`` when the runs are too short or too many to read one by one.
    """
    rank = len(shape)
    # The first dimension from which on the part covers the piece whole (after a partial one).
    j = rank - 1
    while j > 0 and local[j].start == 0 and local[j].stop == shape[j]:
        j -= 1
    strides = [itemsize * math.prod(shape[d + 1 :]) for d in range(rank)]
    run_bytes = (local[j].stop - local[j].start) * strides[j] if rank else itemsize
    count = math.prod(sl.stop - sl.start for sl in local[:j])
    if count > 1 and (run_bytes < _MIN_RUN or count > _MAX_RUNS):
        return None
    offsets = np.zeros((), dtype=np.int64)
    for d in range(j):
        axis = np.arange(local[d].start, local[d].stop, dtype=np.int64) * strides[d]
        offsets = np.add.outer(offsets, axis)
    base = local[j].start * strides[j] if rank else 0
    return (offsets.reshape(-1) + base), int(run_bytes)


def finish_part(
    swap: bool, buf: np.ndarray[Any, Any], target: np.ndarray[Any, Any], index: tuple[slice, ...] | None
) -> None:
    """Bring a partly read piece into native byte order and into place."""
    if swap:
        buf.reshape(-1).view(f"u{buf.dtype.itemsize}").byteswap(inplace=True)
    if index is not None:
        target[...] = buf[index]
    elif buf is not target:
        target[...] = buf
