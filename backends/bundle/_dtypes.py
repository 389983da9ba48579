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

# The types numpy lacks, by their ml_dtypes names. TensorFlow holds int4/uint4/int2/uint2 and float4_e2m1fn
# one element per byte in memory, as ml_dtypes does, and its bundle writer stores that memory as it is: one
# byte per element, the value in the low bits (int4 -1 is 0x0f). The other ml_dtypes types (float8_e3m4,
# float8_e4m3, float8_e5m3fnu, float8_e8m0fnu, the float6 types, int1/uint1, complex32, bcomplex32) have no
# DataType in TensorFlow 2.21, so a bundle cannot hold them.
_ML_DTYPES: Final = {
    14: "bfloat16",
    24: "float8_e5m2",
    25: "float8_e4m3fn",
    26: "float8_e4m3fnuz",
    27: "float8_e4m3b11fnuz",
    28: "float8_e5m2fnuz",
    29: "int4",
    30: "uint4",
    31: "int2",
    32: "uint2",
    33: "float4_e2m1fn",
}

#: Every DataType number :func:`dtype_from_tf` maps to a dtype.
READABLE: Final = frozenset({DT_STRING, *_FROM_TF, *_ML_DTYPES})


@functools.cache
def _ml_tables() -> tuple[dict[int, np.dtype[Any]], dict[np.dtype[Any], int]]:
    # Imported on first need: ml_dtypes takes several times as long to import as numpy, and a
    # dtype of its types can only reach tf_from_dtype once the caller has imported it anyway.
    import ml_dtypes

    # Only the types the installed ml_dtypes has (float4_e2m1fn is newer than the oldest ml_dtypes allowed).
    from_tf = {num: np.dtype(getattr(ml_dtypes, name)) for num, name in _ML_DTYPES.items() if hasattr(ml_dtypes, name)}
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
        if dtypes.is_ml_dtype(dtype):
            raise UnsupportedDTypeError(
                f"bundle: tensor {key!r} has dtype {dtype}, which TensorFlow has no DataType for, so a TensorBundle "
                "cannot hold it; save the checkpoint in the Zarr format, which holds every ml_dtypes type "
                "(CheckpointOptions(backend='zarr') or a zarr:// path), or convert the tensor to one of the "
                f"ml_dtypes types a bundle holds ({', '.join(_ML_DTYPES.values())})"
            )
        raise UnsupportedDTypeError(
            f"bundle: tensor {key!r} has dtype {dtype}, which has no TensorFlow DataType; "
            "convert it to a numeric, bool, bytes or ml_dtypes dtype"
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
    if dt is None and num in _ML_DTYPES:
        import ml_dtypes

        raise InvalidCheckpointError(
            f"{where}: DataType {num} is ml_dtypes.{_ML_DTYPES[num]}, which the installed ml_dtypes "
            f"{ml_dtypes.__version__} lacks; upgrade ml_dtypes to read it"
        )
    if dt is None:
        raise InvalidCheckpointError(
            f"{where}: DataType {num} cannot be read by trackpoint (resource, variant and reference types, "
            "and DataTypes newer than TensorFlow 2.21's, are unsupported)"
        )
    if not big_endian or dt.itemsize == 1:
        return dt, False
    if dt.kind in "biufc":
        return dt.newbyteorder(">"), False
    return dt, True
