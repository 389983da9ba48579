"""Slices of tensors: the geometry behind partitioned values and split large tensors.

A :class:`TensorSlice` names a hyper-rectangle of a larger ("full") tensor by
its offset and shape, as TensorFlow's ``SaveSliceInfo`` does. It is a plain
value shared by the trackables (a :class:`~trackpoint.Variable` holding one
slice), the storage contract (a :class:`~trackpoint.storage.WriteItem`
carrying one) and the readers (:meth:`~trackpoint.storage.CheckpointReader.read_slice`).
It imports nothing but numpy, so every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trackpoint.errors import IncompletePartitionError, TrackableError

__all__ = ["TensorSlice", "check_coverage", "split_rows"]


def _dims(value: Iterable[Any], what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(d) for d in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"TensorSlice: {what} must be a sequence of integers, got {value!r}") from exc
    return out


@dataclass(frozen=True, slots=True)
class TensorSlice:
    """The slice ``offset`` .. ``offset + shape`` of a tensor of shape ``full_shape``.

    Parameters
    ----------
    full_shape
        Shape of the whole tensor.
    offset
        Where the slice starts, per dimension.
    shape
        Extent of the slice, per dimension.

    Raises
    ------
    ValueError
        The three have different ranks, or the slice does not lie inside the
        full tensor.

    Examples
    --------
    >>> from trackpoint import TensorSlice
    >>> s = TensorSlice((4, 3), (2, 0), (2, 3))
    >>> s.spec
    '4 3 2,2:0,3'
    >>> TensorSlice.from_spec("4 3 2,2:0,3") == s
    True
    """

    full_shape: tuple[int, ...]
    offset: tuple[int, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        full = _dims(self.full_shape, "full_shape")
        offset = _dims(self.offset, "offset")
        shape = _dims(self.shape, "shape")
        if not len(full) == len(offset) == len(shape):
            raise ValueError(
                f"TensorSlice: full_shape {full}, offset {offset} and shape {shape} must have the same rank"
            )
        for d, (n, o, s) in enumerate(zip(full, offset, shape, strict=True)):
            if n < 0 or o < 0 or s < 0 or o + s > n:
                raise ValueError(
                    f"TensorSlice: dimension {d} of the slice (offset {o}, length {s}) lies outside the full "
                    f"shape {full}"
                )
        object.__setattr__(self, "full_shape", full)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "shape", shape)

    @classmethod
    def full(cls, shape: Sequence[int]) -> TensorSlice:
        """The slice that is the whole tensor of ``shape``."""
        dims = _dims(shape, "shape")
        return cls(dims, (0,) * len(dims), dims)

    @classmethod
    def from_spec(cls, spec: str) -> TensorSlice:
        """Parse TensorFlow's slice spec ``"d0 d1 off0,len0:off1,len1"``.

        A dimension may also be ``-``, TensorFlow's spelling of "the whole
        dimension".

        Raises
        ------
        ValueError
            ``spec`` is not in that format, or names a slice outside the shape.
        """
        text = spec.strip()
        try:
            shape_part, slice_part = text.rsplit(" ", 1)
            full = tuple(int(d) for d in shape_part.split())
        except ValueError:
            raise ValueError(
                f"TensorSlice.from_spec: {spec!r} is not a slice spec; expected the full shape and the slice, "
                "as in '4 3 0,2:0,3'"
            ) from None
        offset: list[int] = []
        length: list[int] = []
        parts = slice_part.split(":")
        if len(parts) != len(full):
            raise ValueError(
                f"TensorSlice.from_spec: {spec!r} gives {len(parts)} slice dimensions for a shape of rank {len(full)}"
            )
        for part, dim in zip(parts, full, strict=True):
            if part == "-":
                offset.append(0)
                length.append(dim)
                continue
            try:
                o, n = part.split(",")
                offset.append(int(o))
                length.append(int(n))
            except ValueError:
                raise ValueError(
                    f"TensorSlice.from_spec: {part!r} in {spec!r} is neither '-' nor 'offset,length'"
                ) from None
        return cls(full, tuple(offset), tuple(length))

    @property
    def spec(self) -> str:
        """TensorFlow's spec string (``SaveSliceInfo.spec``): full shape, then ``offset,length`` per dimension."""
        return (
            " ".join(str(d) for d in self.full_shape)
            + " "
            + ":".join(f"{o},{n}" for o, n in zip(self.offset, self.shape, strict=True))
        )

    @property
    def is_full(self) -> bool:
        """Whether the slice is the whole tensor."""
        return self.shape == self.full_shape

    @property
    def size(self) -> int:
        """Number of elements in the slice."""
        return math.prod(self.shape)

    @property
    def index(self) -> tuple[slice, ...]:
        """The slice as a numpy index into the full tensor."""
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.shape, strict=True))

    def intersect(self, other: TensorSlice) -> TensorSlice | None:
        """The part both slices cover, ``None`` if they share no element.

        Raises
        ------
        ValueError
            The slices are of tensors of different shapes.
        """
        if other.full_shape != self.full_shape:
            raise ValueError(
                f"TensorSlice.intersect: slices of shapes {self.full_shape} and {other.full_shape} cannot meet"
            )
        offset = []
        shape = []
        for a, n, b, m in zip(self.offset, self.shape, other.offset, other.shape, strict=True):
            start = max(a, b)
            stop = min(a + n, b + m)
            if stop <= start:
                return None
            offset.append(start)
            shape.append(stop - start)
        return TensorSlice(self.full_shape, tuple(offset), tuple(shape))

    def within(self, outer: TensorSlice) -> tuple[slice, ...]:
        """Where this slice lies inside the array holding ``outer`` (which must contain it), as a numpy index."""
        out = []
        for a, n, b, m in zip(self.offset, self.shape, outer.offset, outer.shape, strict=True):
            if a < b or a + n > b + m:
                raise ValueError(f"TensorSlice.within: {self.spec!r} does not lie inside {outer.spec!r}")
            out.append(slice(a - b, a - b + n))
        return tuple(out)


def split_rows(shape: Sequence[int], row_bytes: int, max_bytes: int) -> list[TensorSlice]:
    """Cut a tensor of ``shape`` along its first dimension into slices of at most ``max_bytes``.

    ``row_bytes`` is the size of one index of the first dimension. A row
    larger than ``max_bytes`` gets a slice of its own (the bound cannot be
    kept). Slices come in order; a tensor that fits, a scalar or a tensor
    with one row gives the single full slice.
    """
    full = TensorSlice.full(shape)
    if not full.shape or full.shape[0] <= 1 or row_bytes <= 0 or full.shape[0] * row_bytes <= max_bytes:
        return [full]
    rows = max(1, max_bytes // row_bytes)
    rest = full.shape[1:]
    zeros = (0,) * len(rest)
    return [
        TensorSlice(full.shape, (start, *zeros), (min(rows, full.shape[0] - start), *rest))
        for start in range(0, full.shape[0], rows)
    ]


def check_coverage(key: str, full_shape: tuple[int, ...], slices: Sequence[TensorSlice], where: str) -> None:
    """Check that ``slices`` tile a tensor of ``full_shape`` exactly: no overlap, no gap.

    Run by commits that merge the slices several writers (threads or
    processes) saved for ``key``.

    Raises
    ------
    TrackableError
        The slices disagree on the full shape, or two of them overlap; the
        message names the slices.
    IncompletePartitionError
        (a :class:`TrackableError`) The slices leave elements of the tensor
        uncovered.
    """
    if any(s.full_shape != full_shape for s in slices):
        shapes = sorted({s.full_shape for s in slices})
        raise TrackableError(f"{where}: the slices saved for {key!r} disagree on the full shape: {shapes}")
    # Sorted by offset, a slice can only overlap later slices that start (in
    # dimension 0) before it ends: the sweep stays near-linear for row splits.
    ordered = sorted((s for s in slices if s.size), key=lambda s: s.offset)
    for i, a in enumerate(ordered):
        end0 = a.offset[0] + a.shape[0] if a.shape else 0
        for b in ordered[i + 1 :]:
            if a.shape and b.offset[0] >= end0:
                break
            if a.intersect(b) is not None:
                raise TrackableError(
                    f"{where}: the slices {a.spec!r} and {b.spec!r} of {key!r} overlap; each element of a "
                    "partitioned value must be saved by exactly one writer"
                )
    covered = sum(s.size for s in ordered)
    total = math.prod(full_shape)
    if covered != total:
        raise IncompletePartitionError(
            f"{where}: the slices saved for {key!r} cover {covered} of its {total} elements (shape {full_shape}); "
            "every part of a partitioned value must be saved by some writer"
        )


def assemble(key: str, pieces: Sequence[tuple[TensorSlice, np.ndarray[Any, Any]]], where: str) -> np.ndarray[Any, Any]:
    """The full tensor built from ``pieces`` (which must tile it exactly)."""
    full_shape = pieces[0][0].full_shape
    check_coverage(key, full_shape, [s for s, _ in pieces], where)
    dtypes = {a.dtype for _, a in pieces}
    if len(dtypes) != 1:
        raise TrackableError(f"{where}: the slices saved for {key!r} have different dtypes: {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    out = np.empty(full_shape, dtype=dtype)
    for s, a in pieces:
        out[s.index] = a
    return out
