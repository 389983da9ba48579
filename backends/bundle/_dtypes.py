"""numpy dtypes <-> TensorFlow ``DataType`` numbers (spec section 3.3)."""

from __future__ import annotations

import functools
from typing import Any, Final

import numpy as np

from trackpoint import dtypes
from trackpoint.errors import InvalidCheckpointError, UnsupportedDTypeError

__all__ = ["DT_STRING", "READABLE", "dtype_from_tf", "tf_from_dtype"]

DT_STRING: Final = 7

# Numbers TensorFlow assigns; quantized types (11-13, 15, 16) are read as
# their plain integer storage but never chosen when writing.
_FROM_TF: Final[dict[int, np.dtype[Any]]] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    8: np.dtype("<c8"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    11: np.dtype("i1"),
    12: np.dtype("u1"),
    13: np.dtype("<i4"),
    15: np.dtype("<i2"),
    16: np.dtype("<u2"),
    17: np.dtype("<u2"),
    18: np.dtype("<c16"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}

_TO_TF: Final[dict[np.dtype[Any], int]] = {dt: num for num, dt in _FROM_TF.items() if num not in (11, 12, 13, 15, 16)}

# The types numpy lacks, by their ml_dtypes names.
_ML_DTYPES: Final = {
    14: "bfloat16",
    24: "float8_e5m2",
    25: "float8_e4m3fn",
    26: "float8_e4m3fnuz",
    27: "float8_e4m3b11fnuz",
    28: "float8_e5m2fnuz",
}

#: Every DataType number :func:`dtype_from_tf` maps to a dtype.
READABLE: Final = frozenset({DT_STRING, *_FROM_TF, *_ML_DTYPES})


@functools.cache
def _ml_tables() -> tuple[dict[int, np.dtype[Any]], dict[np.dtype[Any], int]]:
    # Imported on first need: ml_dtypes takes several times as long to import as numpy, and a
    # dtype of its types can only reach tf_from_dtype once the caller has imported it anyway.
    import ml_dtypes

    from_tf = {num: np.dtype(getattr(ml_dtypes, name)) for num, name in _ML_DTYPES.items()}
    return from_tf, {dt: num for num, dt in from_tf.items()}


def tf_from_dtype(dtype: np.dtype[Any], key: str) -> int:
    """The DataType number for ``dtype`` (any byte order); object dtype means DT_STRING."""
    if dtype.kind == "O":
        return DT_STRING
    num = _TO_TF.get(dtype)
    if num is None:
        num = _TO_TF.get(dtype.newbyteorder("<"))
    if num is None and dtypes.is_ml_dtype(dtype):
        num = _ml_tables()[1].get(dtype)
    if num is None:
        raise UnsupportedDTypeError(
            f"bundle: tensor {key!r} has dtype {dtype}, which has no TensorFlow DataType; "
            "convert it to a numeric, bool, bfloat16/float8 (ml_dtypes) or bytes dtype"
        )
    return num


def dtype_from_tf(num: int, big_endian: bool, where: str) -> tuple[np.dtype[Any], bool]:
    """The numpy dtype of stored DataType ``num`` and whether bytes must be swapped after reading.

    Big-endian bundles map to ``>`` dtypes where numpy has them; the ml_dtypes
    types (bfloat16) have no big-endian form, so those are read as the native
    type and byte-swapped in place. DT_STRING maps to ``object``.
    """
    if num == DT_STRING:
        return np.dtype(object), False
    dt = _ml_tables()[0].get(num) if num in _ML_DTYPES else _FROM_TF.get(num)
    if dt is None:
        raise InvalidCheckpointError(
            f"{where}: DataType {num} cannot be read by trackpoint (resource, variant, sub-byte "
            "and reference types are unsupported)"
        )
    if not big_endian or dt.itemsize == 1:
        return dt, False
    if dt.kind in "biufc":
        return dt.newbyteorder(">"), False
    return dt, True
