"""The element types a checkpoint can hold, and the conversions variables use.

Supported: every fixed-size numpy boolean, integer, floating and complex type
that TensorFlow can store (so not ``longdouble``), ``ml_dtypes.bfloat16``, and
variable-length strings. Strings are numpy object arrays whose elements are
``bytes``; ``str`` is accepted on input and encoded as UTF-8, as TensorFlow's
``tf.string`` does. Anything else raises :class:`UnsupportedDTypeError`.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from trackpoint.errors import DTypeMismatchError, UnsupportedDTypeError

__all__ = ["as_dtype", "bfloat16", "convert_for_assign", "convert_initial_value", "is_string", "string"]

if TYPE_CHECKING:  # at run time served by __getattr__ below, importing ml_dtypes on first use
    #: ``ml_dtypes.bfloat16`` as a numpy dtype (TensorFlow's ``DT_BFLOAT16``).
    bfloat16: np.dtype[Any]
#: Variable-length strings: object arrays holding ``bytes`` (TensorFlow's ``DT_STRING``).
string: Final[np.dtype[Any]] = np.dtype(object)

# Largest item size TensorFlow has a type for, per kind (float64, complex128, int64).
_MAX_ITEMSIZE: Final = {"b": 1, "i": 8, "u": 8, "f": 8, "c": 16}


@functools.cache
def _bfloat16() -> np.dtype[Any]:
    # ml_dtypes is imported here, not at module level: importing it takes several times as long as
    # importing numpy, and most programs never use bfloat16.
    import ml_dtypes

    d: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return d


def __getattr__(name: str) -> object:
    if name == "bfloat16":
        return _bfloat16()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_bfloat16(d: np.dtype[Any]) -> bool:
    # Checking the kind first keeps ml_dtypes unimported for every numpy type (bfloat16's kind is "V").
    return d.kind == "V" and d == _bfloat16()


def _numpy_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        d: np.dtype[Any] = np.dtype(dtype)
    except TypeError:
        # Names such as "bfloat16" are known to numpy only once ml_dtypes has registered its types.
        if not isinstance(dtype, str) or "ml_dtypes" in sys.modules:
            raise
        _bfloat16()
        d = np.dtype(dtype)
    return d


def is_string(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is trackpoint's string dtype."""
    return dtype == string


def as_dtype(dtype: Any) -> np.dtype[Any]:
    """Normalize ``dtype`` to a supported, native-byte-order numpy dtype.

    Raises
    ------
    UnsupportedDTypeError
        No checkpoint format can store elements of this type.
    """
    if dtype is str or dtype is bytes:
        return string
    try:
        d = _numpy_dtype(dtype)
    except TypeError as exc:
        raise UnsupportedDTypeError(
            f"{dtype!r} is not a dtype; use a numpy dtype, trackpoint.bfloat16 or trackpoint.string"
        ) from exc
    if d == string or _is_bfloat16(d):
        return d
    if d.kind in ("U", "S"):
        return string
    limit = _MAX_ITEMSIZE.get(d.kind)
    if limit is None or d.itemsize > limit or d.fields is not None or d.subdtype is not None:
        raise UnsupportedDTypeError(
            f"dtype {d} cannot be stored in a checkpoint; supported are bool, (u)int8-64, float16/32/64, "
            "bfloat16, complex64/128 and strings (trackpoint.string)"
        )
    native: np.dtype[Any] = d.newbyteorder("=")
    return native


def _encode_strings(values: np.ndarray[Any, Any], where: str) -> np.ndarray[Any, Any]:
    """An owned object array of ``bytes`` from an array of str/bytes."""
    out = np.empty(values.shape, dtype=object)
    for idx, x in np.ndenumerate(values):
        if isinstance(x, str):
            out[idx] = x.encode("utf-8")
        elif isinstance(x, (bytes, bytearray, memoryview)):
            out[idx] = bytes(x)
        else:
            raise UnsupportedDTypeError(
                f"{where}: string tensors hold only str or bytes, found {type(x).__name__} at index {idx}"
            )
    return out


def _python_kind(value: Any) -> tuple[np.ndarray[Any, Any], str]:
    """The value as an array plus the kind numpy infers for plain Python data."""
    arr = np.asarray(value)
    kind = arr.dtype.kind
    if kind == "O":
        # Mixed str/bytes lists become object arrays; anything else is unsupported.
        if all(isinstance(x, (str, bytes)) for x in arr.flat):
            kind = "S"
    return arr, kind


# Which inferred kinds of Python data may be converted into which target kind.
_ACCEPTS: Final = {
    "b": "b",
    "i": "iu",
    "u": "iu",
    "f": "iuf",
    "c": "iufc",
    "V": "iuf",  # bfloat16
    "O": "USO",
}


def _convert_python(value: Any, dtype: np.dtype[Any], where: str) -> np.ndarray[Any, Any]:
    arr, kind = _python_kind(value)
    if kind not in _ACCEPTS[dtype.kind]:
        raise DTypeMismatchError(f"{where}: cannot convert {_describe(value)} to dtype {_name(dtype)}")
    if dtype == string:
        return _encode_strings(arr, where)
    if dtype.kind in "iu":
        # Integers must fit exactly; numpy would otherwise wrap or raise OverflowError.
        info = np.iinfo(dtype)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise DTypeMismatchError(f"{where}: {_describe(value)} does not fit in dtype {_name(dtype)}")
    return np.array(arr, dtype=dtype, order="C", copy=True)


def _name(dtype: np.dtype[Any]) -> str:
    return "string" if dtype == string else str(dtype)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def convert_initial_value(value: Any, dtype: np.dtype[Any] | None, where: str) -> np.ndarray[Any, Any]:
    """An owned, C-contiguous array for a new variable.

    Without ``dtype`` the type is inferred the way TensorFlow does (Python
    floats become float32, Python ints int32 or int64 when too large, arrays
    keep theirs). With ``dtype``, arrays are converted when the conversion is
    lossless and Python data whenever its kind fits.
    """
    if dtype is not None:
        dtype = as_dtype(dtype)
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.dtype.kind in ("U", "S") or (arr.dtype == string and dtype in (None, string)):
            return _encode_strings(arr, where)
        src = as_dtype(arr.dtype)
        if dtype is None or dtype == src:
            return np.array(arr, dtype=src, order="C", copy=True)
        if dtype == string:
            raise DTypeMismatchError(f"{where}: cannot convert an array of dtype {src} to strings")
        converted = np.array(arr, dtype=dtype, order="C", copy=True)
        with np.errstate(invalid="ignore", over="ignore"):
            back = converted.astype(src)
        if not np.array_equal(back, arr, equal_nan=src.kind in "fcV"):
            raise DTypeMismatchError(f"{where}: converting dtype {src} to {_name(dtype)} would change values")
        return converted
    if dtype is not None:
        return _convert_python(value, dtype, where)
    arr, kind = _python_kind(value)
    if kind in ("U", "S"):
        return _encode_strings(arr, where)
    if kind == "f":
        return np.array(arr, dtype=np.float32, order="C")
    if kind == "i":
        big = arr.size and (int(arr.min()) < -(2**31) or int(arr.max()) >= 2**31)
        return np.array(arr, dtype=np.int64 if big else np.int32, order="C")
    if kind in ("b", "c", "u"):
        return np.array(arr, dtype=as_dtype(arr.dtype), order="C", copy=True)
    raise UnsupportedDTypeError(f"{where}: {_describe(value)} is not numeric, boolean or string data")


def convert_for_assign(value: Any, dtype: np.dtype[Any], where: str) -> np.ndarray[Any, Any]:
    """``value`` as an array of exactly ``dtype``, for assigning to a variable.

    Arrays (and numpy scalars) must already have ``dtype``, as TensorFlow
    refuses a tensor of another type; Python data is converted when its kind
    fits (a float into an integer variable is refused).
    """
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if dtype == string:
            if arr.dtype.kind in ("U", "S", "O"):
                return _encode_strings(arr, where)
        elif arr.dtype.kind not in ("U", "S", "O") and arr.dtype.newbyteorder("=") == dtype:
            return arr
        raise DTypeMismatchError(
            f"{where}: expected an array of dtype {_name(dtype)}, got {arr.dtype}; convert it explicitly "
            f"(e.g. value.astype({_name(dtype)!r}))"
        )
    return _convert_python(value, dtype, where)
