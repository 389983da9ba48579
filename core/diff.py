"""Comparing two checkpoints: :func:`diff`.

Tensors are matched by checkpoint key and read one pair at a time, so memory stays bounded by the
largest tensor, whatever the checkpoints' sizes and stores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, TensorInfo

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
        otherwise (strings, a dtype or shape change). NaN equals NaN.
    """

    key: str
    dtype: tuple[str, str]
    shape: tuple[tuple[int, ...], tuple[int, ...]]
    max_abs: float | None
    max_rel: float | None

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
    """

    a: str
    b: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[TensorDiff, ...]
    same: int
    atol: float
    rtol: float

    @property
    def equal(self) -> bool:
        """Whether the checkpoints hold the same tensors with the same values (within the tolerances)."""
        return not (self.added or self.removed or self.changed)


def _compare(key: str, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], atol: float, rtol: float) -> TensorDiff | None:
    dtype = (str(x.dtype), str(y.dtype)) if x.dtype.kind != "O" else ("string", "string")
    shape = (tuple(x.shape), tuple(y.shape))
    if x.dtype.kind == "O":
        return None if x.tolist() == y.tolist() else TensorDiff(key, dtype, shape, None, None)
    if x.size == 0 or np.array_equal(x, y, equal_nan=x.dtype.kind in "fc" or x.dtype.kind == "V"):
        return None
    wide = np.complex128 if x.dtype.kind == "c" else np.float64
    a, b = x.astype(wide), y.astype(wide)
    both_nan = np.isnan(a) & np.isnan(b)
    delta = np.where(both_nan, 0.0, np.abs(a - b))
    scale = np.abs(b)
    if np.all((delta <= atol + rtol * scale) | both_nan):
        return None
    max_abs = float(np.nanmax(delta)) if not np.all(np.isnan(delta)) else float("nan")
    nonzero = scale > 0
    max_rel = float(np.nanmax(delta[nonzero] / scale[nonzero])) if np.any(nonzero) else None
    return TensorDiff(key, dtype, shape, max_abs, max_rel)


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
    keys restore the same values.
    """
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must not be negative, got atol={atol}, rtol={rtol}")
    from trackpoint.interchange._convert import open_source

    a_prefix, _, ra = open_source(os.fspath(a), a_options)
    with ra:
        b_prefix, _, rb = open_source(os.fspath(b), b_options)
        with rb:
            ka = {k for k in ra.keys() if k != OBJECT_GRAPH_KEY}
            kb = {k for k in rb.keys() if k != OBJECT_GRAPH_KEY}
            changed: list[TensorDiff] = []
            same = 0
            for key in sorted(ka & kb):
                ia, ib = ra.info(key), rb.info(key)
                if ia.dtype != ib.dtype or ia.shape != ib.shape:
                    # A dtype or shape change needs no values.
                    changed.append(TensorDiff(key, (_dtype(ia), _dtype(ib)), (ia.shape, ib.shape), None, None))
                    continue
                found = _compare(key, ra.read(key), rb.read(key), atol, rtol)
                if found is None:
                    same += 1
                else:
                    changed.append(found)
    return DiffReport(
        a_prefix,
        b_prefix,
        tuple(sorted(kb - ka)),
        tuple(sorted(ka - kb)),
        tuple(changed),
        same,
        float(atol),
        float(rtol),
    )


def _dtype(info: TensorInfo) -> str:
    return "string" if info.dtype.kind == "O" else str(info.dtype)
