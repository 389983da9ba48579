"""Comparing two checkpoints: :func:`diff`.

Tensors are matched by checkpoint key and read one pair at a time (small ones in batches), so memory
stays bounded by the largest tensor, whatever the checkpoints' sizes and stores: the two values read,
which are compared a chunk of :data:`CHUNK_ELEMENTS` at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from trackpoint._batches import batched
from trackpoint.graph import OBJECT_ATTRIBUTES_NAME, escape_local_name
from trackpoint.manager import NOT_TENSORS, stored_metrics
from trackpoint.stateful import STATE_DICT_STRUCTURE, structure_changes
from trackpoint.storage import CheckpointOptions, CheckpointReader, TensorInfo

#: How the key of a saved state dict's structure ends.
STATE_DICT_SUFFIX = f"/{OBJECT_ATTRIBUTES_NAME}/{escape_local_name(STATE_DICT_STRUCTURE)}"

__all__ = ["DiffReport", "TensorDiff", "diff"]


@dataclass(frozen=True, slots=True)
class TensorDiff:
    """How one tensor stored in both checkpoints differs.

    Parameters
    ----------
    key
        The checkpoint key.
    dtype, shape
        ``(in a, in b)``.
    max_abs, max_rel
        Largest absolute difference ``|a - b|`` and relative difference ``|a - b| / |b|`` over the
        elements (``b != 0`` for the relative one), for numeric tensors of equal shape; ``None``
        otherwise (strings, a dtype or shape change). NaN equals NaN; a NaN against a number makes
        both NaN, and a change of an infinite value makes both infinite. Integers are compared
        exactly (not through float64, which cannot tell ``2**62`` from ``2**62 + 1``).
    details
        For the saved structure of a state dict (a torch module's or optimizer's ``.STATE_DICT``), the
        entries that differ, one line each (``['param_groups'][0]['lr']: 0.1 -> 0.2``); empty otherwise.
    """

    key: str
    dtype: tuple[str, str]
    shape: tuple[tuple[int, ...], tuple[int, ...]]
    max_abs: float | None
    max_rel: float | None
    details: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``"dtype"``, ``"shape"`` or ``"values"``: what changed (dtype first)."""
        if self.dtype[0] != self.dtype[1]:
            return "dtype"
        return "shape" if self.shape[0] != self.shape[1] else "values"


@dataclass(frozen=True, slots=True)
class DiffReport:
    """The differences between checkpoints ``a`` and ``b``.

    Parameters
    ----------
    a, b
        The checkpoints compared (a directory resolves to its latest checkpoint).
    added
        Keys only in ``b``.
    removed
        Keys only in ``a``.
    changed
        Tensors in both whose dtype, shape or values differ beyond the tolerances.
    same
        How many tensors are in both and equal within the tolerances.
    atol, rtol
        The tolerances: values are equal where ``|a - b| <= atol + rtol * |b|``.
    metrics
        ``(metrics of a, metrics of b)`` when the metrics stored with them by
        ``CheckpointManager.save(metrics=...)`` differ (one side's ``None``
        when it has none; a string when they are not valid JSON); ``None``
        when they are the same or neither has any. They describe a checkpoint
        rather than being its values: :attr:`equal` leaves them out, as it
        does the object graph.
    """

    a: str
    b: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[TensorDiff, ...]
    same: int
    atol: float
    rtol: float
    metrics: tuple[Any, Any] | None = None

    @property
    def equal(self) -> bool:
        """Whether the checkpoints hold the same tensors with the same values (within the tolerances).

        The metrics stored by ``CheckpointManager`` are not among the tensors: see :attr:`metrics`.
        """
        return not (self.added or self.removed or self.changed)


#: Elements compared at once. The comparison's temporaries (float64 or complex128 copies, masks) hold this
#: many, whatever the tensor's size: a tensor of 2 GiB was compared through several whole copies of it
#: (about 10 times its size at the peak, besides the two values read).
CHUNK_ELEMENTS: Final = 2**18


def _chunks(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> Iterator[tuple[np.ndarray[Any, Any], ...]]:
    """``(x_part, y_part)`` of at most :data:`CHUNK_ELEMENTS` elements each, in order, covering both (same shape)."""
    fx, fy = x.reshape(-1), y.reshape(-1)  # views of the C-contiguous values read
    for start in range(0, fx.size, CHUNK_ELEMENTS):
        yield fx[start : start + CHUNK_ELEMENTS], fy[start : start + CHUNK_ELEMENTS]


def _largest(values: list[float]) -> float:
    """The largest of per-chunk maxima, NaN if one is NaN (as ``np.max`` over the whole tensor gives)."""
    return float(np.max(np.array(values, dtype=np.float64)))


def _compare(key: str, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], atol: float, rtol: float) -> TensorDiff | None:
    dtype = (str(x.dtype), str(y.dtype)) if x.dtype.kind != "O" else ("string", "string")
    shape = (tuple(x.shape), tuple(y.shape))
    if x.dtype.kind == "O":
        if x.tolist() == y.tolist():
            return None
        if key.endswith(STATE_DICT_SUFFIX) and x.shape == ():
            # Its numbers compare within the tolerances, as tensors do; the other entries must be equal.
            changes = structure_changes(x[()], y[()], atol, rtol)
            if changes is not None:
                return TensorDiff(key, dtype, shape, None, None, tuple(changes)) if changes else None
        return TensorDiff(key, dtype, shape, None, None)
    equal_nan = x.dtype.kind in "fc" or x.dtype.kind == "V"
    if x.size == 0 or all(np.array_equal(cx, cy, equal_nan=equal_nan) for cx, cy in _chunks(x, y)):
        return None
    if x.dtype.kind in "iub":
        return _compare_integers(key, dtype, shape, x, y, atol, rtol)
    wide = np.complex128 if x.dtype.kind == "c" else np.float64
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # numpy's closeness, whose infinities are close only to themselves: |inf - x| <= rtol * |x| holds
        # for x = inf, and the plain formula would call a value that became infinite unchanged.
        if all(
            np.all(np.isclose(cx.astype(wide), cy.astype(wide), rtol=rtol, atol=atol, equal_nan=True))
            for cx, cy in _chunks(x, y)
        ):
            return None
        abs_max: list[float] = []
        rel_max: list[float] = []
        for cx, cy in _chunks(x, y):
            a, b = cx.astype(wide), cy.astype(wide)
            # Equal infinities and NaN pairs differ by nothing; +inf against -inf by inf; NaN against a number
            # by NaN.
            unchanged = (a == b) | (np.isnan(a) & np.isnan(b))
            delta = np.where(unchanged, 0.0, np.abs(a - b))
            scale = np.abs(b)
            # NaN if a NaN stands against a number somewhere: that difference has no size.
            abs_max.append(float(np.max(delta)))
            nonzero = scale != 0  # a NaN scale included: its element's difference has no size either
            if np.any(nonzero):
                d, sc = delta[nonzero], scale[nonzero]
                # Any change of an infinite value is infinitely large relative to nothing finite.
                rel = np.where(unchanged[nonzero], 0.0, np.where(np.isinf(sc) & (d > 0), np.inf, d / sc))
                rel_max.append(float(np.max(rel)))
    return TensorDiff(key, dtype, shape, _largest(abs_max), _largest(rel_max) if rel_max else None)


def _compare_integers(
    key: str,
    dtype: tuple[str, str],
    shape: tuple[tuple[int, ...], tuple[int, ...]],
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    atol: float,
    rtol: float,
) -> TensorDiff | None:
    """Integers (and booleans) differ by exact amounts: in float64, 2**62 + 1 equals 2**62.

    Compared a chunk at a time (:data:`CHUNK_ELEMENTS`), first whether every difference is within the
    tolerances, then for the largest ones.
    """

    def distances(cx: np.ndarray[Any, Any], cy: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
        if cx.dtype.kind == "b":
            cx, cy = cx.astype(np.uint8), cy.astype(np.uint8)
        # The larger minus the smaller, in uint64: a signed value's two's complement wraps modulo 2**64, and the
        # distance between two 64-bit integers is below 2**64, so the modular difference is the exact distance.
        delta = np.maximum(cx, cy).astype(np.uint64) - np.minimum(cx, cy).astype(np.uint64)
        # |b| exactly, in uint64 too (|-2**63| does not fit an int64).
        scale = np.where(cy < 0, np.uint64(0) - cy.astype(np.uint64), cy.astype(np.uint64))
        return delta, scale

    if atol or rtol:
        # The tolerance is a float: distances are compared as floats (exact below 2**53).
        within = True
        for cx, cy in _chunks(x, y):
            delta, scale = distances(cx, cy)
            if not np.all(delta.astype(np.float64) <= atol + rtol * scale.astype(np.float64)):
                within = False
                break
        if within:
            return None
    abs_max: list[float] = []
    rel_max: list[float] = []
    for cx, cy in _chunks(x, y):
        delta, scale = distances(cx, cy)
        abs_max.append(float(delta.max()))
        nonzero = scale > 0
        if np.any(nonzero):
            rel_max.append(float(np.max(delta[nonzero] / scale[nonzero])))
    return TensorDiff(key, dtype, shape, max(abs_max), max(rel_max) if rel_max else None)


def diff(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
    a_options: CheckpointOptions | None = None,
    b_options: CheckpointOptions | None = None,
) -> DiffReport:
    """Compare the tensors of checkpoints ``a`` and ``b``, on any backends.

    Parameters
    ----------
    a, b
        Checkpoint prefixes or directories (their latest checkpoints), or ``.safetensors`` / ``.npz``
        files (read as :func:`trackpoint.convert` imports them).
    atol, rtol
        Tolerances for numeric values, as in :func:`numpy.isclose` (``|a - b| <= atol + rtol * |b|``);
        the defaults ask for exact equality. Strings must be equal.
    a_options, b_options
        Select and configure each side's backend.

    Returns
    -------
    DiffReport
        Added, removed and changed keys; :attr:`DiffReport.equal` is true when there are none.

    Raises
    ------
    CheckpointNotFoundError
        Either side has no checkpoint.
    DataLossError
        A tensor fails its checksum while read.

    Notes
    -----
    The object graph itself is not compared: two checkpoints holding the same tensors under the same
    keys restore the same values. Nor are the metrics a ``CheckpointManager`` stores with a checkpoint
    (the key ``_TRACKPOINT_METRICS``) compared as a tensor: the same weights saved with other metrics
    are equal, and :attr:`DiffReport.metrics` gives both sides' metrics when they differ.
    """
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must not be negative, got atol={atol}, rtol={rtol}")
    from trackpoint.interchange._convert import open_source

    a_prefix, _, ra = open_source(os.fspath(a), a_options)
    with ra:
        b_prefix, _, rb = open_source(os.fspath(b), b_options)
        with rb:
            ka = {k for k in ra.keys() if k not in NOT_TENSORS}
            kb = {k for k in rb.keys() if k not in NOT_TENSORS}
            metrics = _metrics(ra), _metrics(rb)
            changed: list[TensorDiff] = []
            same = 0
            comparable: list[tuple[str, int]] = []
            for key in sorted(ka & kb):
                ia, ib = ra.info(key), rb.info(key)
                if ia.dtype != ib.dtype or ia.shape != ib.shape:
                    # A dtype or shape change needs no values.
                    changed.append(TensorDiff(key, (_dtype(ia), _dtype(ib)), (ia.shape, ib.shape), None, None))
                else:
                    comparable.append((key, ia.nbytes))
            for batch in batched(comparable, lambda entry: entry[1]):
                # Both sides read with one read_many per batch.
                keys = [key for key, _ in batch]
                values_a = ra.read_many([(key, None) for key in keys])
                values_b = rb.read_many([(key, None) for key in keys])
                for key, value_a, value_b in zip(keys, values_a, values_b, strict=True):
                    found = _compare(key, value_a, value_b, atol, rtol)
                    if found is None:
                        same += 1
                    else:
                        changed.append(found)
            changed.sort(key=lambda d: d.key)
    return DiffReport(
        a_prefix,
        b_prefix,
        tuple(sorted(kb - ka)),
        tuple(sorted(ka - kb)),
        tuple(changed),
        same,
        float(atol),
        float(rtol),
        None if metrics[0] == metrics[1] else (_decoded(metrics[0]), _decoded(metrics[1])),
    )


def _metrics(reader: CheckpointReader) -> str | None:
    """The JSON text of the metrics stored in the checkpoint, ``None`` without.

    Compared as text: the manager writes them with sorted keys, so the same metrics give the same text
    (and a NaN among them equals itself).
    """
    try:
        value = stored_metrics(reader)
    except ValueError as exc:
        return f"<{exc}>"
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decoded(text: str | None) -> Any:
    """The metrics as JSON values; the text itself when it is no JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _dtype(info: TensorInfo) -> str:
    return "string" if info.dtype.kind == "O" else str(info.dtype)
