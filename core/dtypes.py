"""The element types a checkpoint can hold, and the conversions variables use.

Supported: every fixed-size numpy boolean, integer, floating and complex type
that TensorFlow can store (so not ``longdouble``), the number types of
``ml_dtypes`` (bfloat16, the float8, float6 and float4 types, int4/2/1 and
uint4/2/1, complex32 and bcomplex32: see :data:`ML_DTYPE_NAMES`), and
variable-length strings. Strings are numpy object arrays whose elements are
``bytes``; ``str`` is accepted on input and encoded as UTF-8, as TensorFlow's
``tf.string`` does. Anything else raises :class:`UnsupportedDTypeError`.

Values are either arrays, which keep their dtype, or Python data (scalars and
nested lists), whose dtype is inferred as TensorFlow infers it. Arrays are
numpy's and those of other libraries: torch tensors, JAX arrays and any object
with a ``dtype`` and a ``shape`` that numpy can convert (``__array__``,
``__array_interface__`` or ``__dlpack__``). Neither torch nor JAX is imported
here: their arrays are recognised by the protocols they implement.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from trackpoint.errors import AssignmentError, DTypeMismatchError, UnsupportedDTypeError

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


#: The ml_dtypes types a checkpoint holds, by name, each with the kind of Python data it takes: "i" integers
#: (which must fit), "f" real numbers (rounded, as a cast rounds), "c" complex numbers. Names, not types:
#: ml_dtypes is imported only once one of its types is met, and an older ml_dtypes lacks the newer types
#: (numpy cannot name those then, so they are never met). Sub-byte types are held one element per byte, as
#: ml_dtypes holds them in memory. Whether a format stores each is the format's to say: a TensorBundle holds
#: only those TensorFlow has a DataType for, Zarr every one.
_ML_KINDS: Final[dict[str, str]] = {
    "bfloat16": "f",
    "float8_e5m2": "f",
    "float8_e4m3fn": "f",
    "float8_e4m3fnuz": "f",
    "float8_e4m3b11fnuz": "f",
    "float8_e5m2fnuz": "f",
    "float8_e3m4": "f",
    "float8_e4m3": "f",
    "float8_e5m3fnu": "f",
    "float8_e8m0fnu": "f",
    "float6_e2m3fn": "f",
    "float6_e3m2fn": "f",
    "float4_e2m1fn": "f",
    "int4": "i",
    "uint4": "i",
    "int2": "i",
    "uint2": "i",
    "int1": "i",
    "uint1": "i",
    "complex32": "c",
    "bcomplex32": "c",
}
#: Every ml_dtypes type name a checkpoint can hold (those the installed ml_dtypes lacks are never met).
ML_DTYPE_NAMES: Final = tuple(_ML_KINDS)

# bfloat16 and the five float8 types of TensorFlow's DataTypes 24-28 (_is_ml_float): the ml_dtypes types a
# torch tensor of the same name is converted from and to by reinterpreting its bits (_torch_to_numpy,
# _numpy_to_torch), and those trackpoint.to_torch offers to torch (which has no float8_e4m3b11fnuz: to_torch
# checks by name). The other ml_dtypes types stay numpy's there.
_ML_FLOATS: Final = frozenset(
    {"bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz"}
)
# The ml_dtypes types torch tensors are converted from and to by their bits: those above, and complex32 (two
# float16 parts, real first, in both). Not torch's float8_e8m0fnu, which a torch tensor is refused for yet,
# nor its float4_e2m1fn_x2 (two values to a byte, where ml_dtypes' float4_e2m1fn takes a byte each).
_TORCH_BITS: Final = _ML_FLOATS | {"complex32"}
# The numpy integer type of each width, to carry those bits across (the torch side has its own).
_NUMPY_INTS: Final[dict[int, np.dtype[Any]]] = {1: np.dtype(np.uint8), 2: np.dtype(np.int16), 4: np.dtype(np.int32)}


def is_ml_dtype(d: np.dtype[Any]) -> bool:
    """Whether ``d`` is one of ml_dtypes' types (bfloat16, the float8s, int4, ...), which numpy has no name for.

    By the type's module, not ``d.kind``: ml_dtypes gives float8_e5m2 kind "f" and the others "V".
    """
    return d.type.__module__.startswith("ml_dtypes")


def _is_ml_float(d: np.dtype[Any]) -> bool:
    # The module first: it rules out every numpy type cheaply, where d.name is computed in Python.
    return is_ml_dtype(d) and d.name in _ML_FLOATS


def _ml_kind(d: np.dtype[Any]) -> str | None:
    """The kind of Python data (``_ML_KINDS``) the ml_dtypes type ``d`` takes; ``None`` for any other dtype."""
    # The module first, as in _is_ml_float: as_dtype is hot.
    return _ML_KINDS.get(d.name) if is_ml_dtype(d) else None


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
    if d == string or _ml_kind(d) is not None:
        # Before the kind checks: ml_dtypes' complex32 is of kind "c" but no numpy complex type.
        return d
    if d.kind in ("U", "S"):
        return string
    limit = _MAX_ITEMSIZE.get(d.kind)
    if limit is None or d.itemsize > limit or d.fields is not None or d.subdtype is not None:
        raise UnsupportedDTypeError(
            f"dtype {d} cannot be stored in a checkpoint; supported are bool, (u)int8-64, float16/32/64, "
            f"complex64/128, strings (trackpoint.string) and the ml_dtypes types {', '.join(ML_DTYPE_NAMES)}"
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


def _python_kind(value: Any, where: str) -> tuple[np.ndarray[Any, Any], str]:
    """The value as an array plus the kind numpy infers for plain Python data."""
    try:
        arr = np.asarray(value)
    except ValueError as exc:
        # numpy's "inhomogeneous shape": TensorFlow raises ValueError too, with this message.
        raise AssignmentError(
            f"{where}: can't convert non-rectangular Python sequence to an array: {_describe(value)} "
            "(every row of a nested list must have the same length)"
        ) from exc
    kind = arr.dtype.kind
    if kind == "O":
        # Mixed str/bytes lists become object arrays; anything else is unsupported.
        if all(isinstance(x, (str, bytes)) for x in arr.flat):
            kind = "S"
    return arr, kind


# Python data: never arrays, even where a subclass grows array-like attributes.
_PYTHON_DATA: Final = (list, tuple, str, bytes, bytearray, memoryview, bool, int, float, complex)


def _is_foreign_array(value: Any) -> bool:
    """Whether ``value`` is another library's array (torch, JAX, pandas...) rather than Python data.

    Arrays are recognised by protocol, so that no framework is imported to check: an object numpy
    can convert (``__array__``, ``__array_interface__`` or ``__dlpack__``) that has a ``dtype`` and
    a ``shape``. Such values keep their dtype, as numpy arrays do.
    """
    if value is None or isinstance(value, _PYTHON_DATA):
        return False
    cls = type(value)
    convertible = hasattr(cls, "__array__") or hasattr(cls, "__dlpack__") or hasattr(value, "__array_interface__")
    return convertible and hasattr(value, "dtype") and hasattr(value, "shape")


def _is_torch_tensor(value: Any) -> bool:
    # By name, not isinstance: importing torch to check would cost seconds. Subclasses
    # (torch.nn.Parameter) count; a tensor can only exist once torch is imported.
    return "torch" in sys.modules and any(
        c.__name__ == "Tensor" and c.__module__ == "torch" for c in type(value).__mro__
    )


def _torch_to_numpy(tensor: Any) -> np.ndarray[Any, Any]:
    """The value of a torch tensor as a numpy array (shared with the tensor where torch allows)."""
    torch = sys.modules["torch"]
    # Tensor.numpy() refuses tensors that require grad, live on another device, or carry a lazy
    # conjugate or negation; each of these steps is a no-op for a plain CPU tensor.
    tensor = tensor.detach()
    if tensor.device.type == "meta":
        raise ValueError("the tensor is on the 'meta' device and holds no data; materialise it first")
    if tensor.device.type != "cpu":
        # A variable holds its value in host memory: the copy to the host is the one a save makes
        # anyway, and what np.asarray does for a JAX array on an accelerator.
        tensor = tensor.cpu()
    tensor = tensor.resolve_conj().resolve_neg()
    name = str(tensor.dtype).removeprefix("torch.")
    if name in _TORCH_BITS:
        # numpy has no bfloat16, float8 or complex32 and torch converts to none; torch's have the bit layouts
        # of ml_dtypes' types of the same name: reinterpret the bits.
        import ml_dtypes

        carrier = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[tensor.dtype.itemsize]
        bits: np.ndarray[Any, Any] = tensor.view(carrier).numpy()
        return bits.view(getattr(ml_dtypes, name))
    arr: np.ndarray[Any, Any] = tensor.numpy()
    return arr


def _numpy_to_torch(array: np.ndarray[Any, Any]) -> Any:
    """A CPU torch tensor sharing ``array``'s memory (bfloat16 and float8 go across as their bits)."""
    torch = sys.modules["torch"]
    # Not np.ascontiguousarray, which makes a 0-d array 1-d.
    source = array if array.flags.c_contiguous else array.copy(order="C")
    if source.dtype.name in _TORCH_BITS and is_ml_dtype(source.dtype):
        # torch reads no ml_dtypes array: hand over the bits as integers and view them as torch's type.
        bits = torch.from_numpy(source.view(_NUMPY_INTS[source.dtype.itemsize]))
        return bits.view(getattr(torch, source.dtype.name))
    return torch.from_numpy(source)


def _as_array(value: Any, where: str) -> np.ndarray[Any, Any] | None:
    """``value`` as a numpy array if it is an array (numpy's or another library's), else ``None``.

    Raises
    ------
    UnsupportedDTypeError
        ``value`` is another library's array that cannot be converted (an element type numpy
        and ml_dtypes lack, such as torch's ``float8_e8m0fnu``, or a value that holds no data).
    """
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    if not _is_foreign_array(value):
        return None
    try:
        if _is_torch_tensor(value):
            return _torch_to_numpy(value)
        if not hasattr(type(value), "__array__") and not hasattr(value, "__array_interface__"):
            dlpacked: np.ndarray[Any, Any] = np.from_dlpack(value)
            return dlpacked
        return np.asarray(value)
    except Exception as exc:  # each library fails its own way (TypeError, RuntimeError, NotImplementedError...)
        raise UnsupportedDTypeError(
            f"{where}: cannot convert {type(value).__module__}.{type(value).__qualname__} of dtype "
            f"{value.dtype} to a numpy array ({exc}); convert it to a numpy array of a supported dtype first"
        ) from exc


# Which inferred kinds of Python data may be converted into which target kind (an ml_dtypes type's is
# its _ML_KINDS entry).
_ACCEPTS: Final = {
    "b": "b",
    "i": "iu",
    "u": "iu",
    "f": "iuf",
    "c": "iufc",
    "O": "USO",
}


def _convert_python(value: Any, dtype: np.dtype[Any], where: str) -> np.ndarray[Any, Any]:
    arr, kind = _python_kind(value, where)
    target = _ml_kind(dtype) or dtype.kind
    if kind not in _ACCEPTS[target]:
        raise DTypeMismatchError(f"{where}: cannot convert {_describe(value)} to dtype {_name(dtype)}")
    if dtype == string:
        return _encode_strings(arr, where)
    if target in "iu":
        # Integers must fit exactly: numpy and ml_dtypes would wrap them (int4 holds -8..7) or raise OverflowError.
        info = _iinfo(dtype)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise DTypeMismatchError(f"{where}: {_describe(value)} does not fit in dtype {_name(dtype)}")
    return np.array(arr, dtype=dtype, order="C", copy=True)


def _iinfo(dtype: np.dtype[Any]) -> Any:
    """The integer limits of ``dtype``: numpy's, or ml_dtypes' for its sub-byte integers (numpy has none)."""
    if is_ml_dtype(dtype):
        import ml_dtypes  # loaded already: the dtype is one of its types

        return ml_dtypes.iinfo(dtype)  # type: ignore[no-untyped-call]  # ml_dtypes leaves its __init__ untyped
    return np.iinfo(dtype)


def _finfo(dtype: np.dtype[Any]) -> Any:
    """The float limits of ``dtype``: numpy's, or ml_dtypes' for its floats (bfloat16, the float8 types, ...)."""
    if is_ml_dtype(dtype):
        import ml_dtypes  # loaded already: the dtype is one of its types

        return ml_dtypes.finfo(dtype)  # type: ignore[no-untyped-call]  # ml_dtypes leaves its __init__ untyped
    return np.finfo(dtype)


def _name(dtype: np.dtype[Any]) -> str:
    return "string" if dtype == string else str(dtype)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_typed(value: Any) -> str:
    """A short repr of ``value`` and its type's name, for messages that refuse it."""
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"


def convert_initial_value(value: Any, dtype: np.dtype[Any] | None, where: str) -> np.ndarray[Any, Any]:
    """An owned, C-contiguous array for a new variable.

    Without ``dtype`` the type is inferred the way TensorFlow does (Python
    floats become float32, Python ints int32 or int64 when too large, arrays
    keep theirs). With ``dtype``, arrays are converted when the conversion is
    lossless and Python data whenever its kind fits. Arrays of other libraries
    (torch tensors, JAX arrays, anything with ``__array__``, a ``dtype`` and a
    ``shape``) are arrays: a torch tensor is detached and copied to the host
    first, and torch's bfloat16 becomes :data:`bfloat16`.

    Raises
    ------
    UnsupportedDTypeError
        The value's type cannot be stored, or another library's array cannot
        be converted to numpy.
    DTypeMismatchError
        ``dtype`` is given and converting to it would change values or kinds.
    AssignmentError
        Nested Python lists are not rectangular.
    """
    if dtype is not None:
        dtype = as_dtype(dtype)
    arr = _as_array(value, where)
    if arr is not None:
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
        # NaN compares equal to itself only for floating types (numpy's, and ml_dtypes' real and complex ones).
        if not np.array_equal(back, arr, equal_nan=(_ml_kind(src) or src.kind) in "fc"):
            raise DTypeMismatchError(f"{where}: converting dtype {src} to {_name(dtype)} would change values")
        return converted
    if dtype is not None:
        return _convert_python(value, dtype, where)
    arr, kind = _python_kind(value, where)
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

    Arrays (numpy's, numpy scalars, and those of other libraries as
    :func:`convert_initial_value` takes them) must already have ``dtype``, as
    TensorFlow refuses a tensor of another type; Python data is converted when
    its kind fits (a float into an integer variable is refused).

    Raises
    ------
    DTypeMismatchError
        An array of another dtype, or Python data that does not fit.
    UnsupportedDTypeError
        Another library's array that cannot be converted to numpy.
    AssignmentError
        Nested Python lists that are not rectangular.
    """
    arr = _as_array(value, where)
    if arr is not None:
        if dtype == string:
            if arr.dtype.kind in ("U", "S", "O"):
                return _encode_strings(arr, where)
        elif arr.dtype.kind not in ("U", "S", "O") and arr.dtype.newbyteorder("=") == dtype:
            return arr
        convert = "value" if isinstance(value, (np.ndarray, np.generic)) else "np.asarray(value)"
        raise DTypeMismatchError(
            f"{where}: expected an array of dtype {_name(dtype)}, got {arr.dtype}; convert it explicitly "
            f"(e.g. {convert}.astype({_name(dtype)!r}))"
        )
    return _convert_python(value, dtype, where)
