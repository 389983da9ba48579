"""Every supported dtype, 0-d and empty arrays, and strings survive save/restore exactly."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import trackpoint as tp
from trackpoint.dtypes import ML_DTYPE_NAMES

NUMERIC = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
    tp.bfloat16,
    # Every other ml_dtypes type (float8, float6, float4, int4/2/1, uint4/2/1, complex32, bcomplex32): the
    # memory store holds every dtype the core does.
    *(getattr(ml_dtypes, name) for name in ML_DTYPE_NAMES if name != "bfloat16" and hasattr(ml_dtypes, name)),
]


def _round_trip(value: np.ndarray) -> tp.Variable:
    path = tp.Checkpoint(v=tp.Variable(value)).write("memory://dt/ckpt")
    target = tp.Variable(np.zeros_like(value) if value.dtype != object else np.full(value.shape, b"", dtype=object))
    tp.Checkpoint(v=target).read(path).assert_consumed()
    return target


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (2, 3)], ids=["scalar", "empty", "matrix"])
def test_numeric_round_trip(dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 2 if dtype is np.bool_ else 16, size=shape)
    value = np.asarray(raw).astype(dtype)
    if np.dtype(dtype).kind == "c" or "complex" in np.dtype(dtype).name:
        value = (raw + 1j * raw).astype(dtype)
    restored = _round_trip(value)
    assert restored.dtype == np.dtype(dtype)
    assert restored.shape == shape
    assert restored.numpy().tobytes() == value.tobytes()


@pytest.mark.parametrize(
    "strings",
    [
        np.array(b"", dtype=object),
        np.array("héllo wörld ✓", dtype=object),
        np.array([b"\x00\xff", "日本", ""], dtype=object),
        np.empty((0, 2), dtype=object),
    ],
    ids=["empty-scalar", "non-ascii", "mixed", "empty-array"],
)
def test_string_round_trip(strings: np.ndarray) -> None:
    restored = _round_trip(strings)
    expected = [s.encode() if isinstance(s, str) else s for s in strings.reshape(-1)]
    assert restored.dtype == tp.string and restored.shape == strings.shape
    assert list(restored.numpy().reshape(-1)) == expected
    assert all(type(x) is bytes for x in restored.numpy().reshape(-1))


def test_restore_into_existing_buffer_keeps_identity() -> None:
    source = np.arange(1000, dtype=np.float64)
    path = tp.Checkpoint(v=tp.Variable(source)).write("memory://dt/big")
    target = tp.Variable(np.zeros(1000))
    view = target.value
    tp.Checkpoint(v=target).read(path)
    np.testing.assert_array_equal(view, source)  # the same buffer was filled in place


@pytest.mark.parametrize("backend", ["bundle", "zarr"])
def test_float8_values_in_a_dict_round_trip_through_each_format(tmp_path: object, backend: str) -> None:
    # A plain dict of arrays is tracked by value: the dtype check is the core's, not the format's.
    names = ["float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz"]
    values = {n: np.array([1.5, -2.0, 0.25], getattr(ml_dtypes, n)) for n in names}
    path = tp.Checkpoint(x=dict(values)).write(f"{tmp_path}/ckpt", options=tp.CheckpointOptions(backend=backend))
    back = {n: np.zeros(3, v.dtype) for n, v in values.items()}
    tp.Checkpoint(x=back).read(path).assert_consumed()
    assert {n: (v.dtype, v.tobytes()) for n, v in back.items()} == {
        n: (v.dtype, v.tobytes()) for n, v in values.items()
    }


@pytest.mark.parametrize(
    ("name", "data", "want"),
    [("int4", [-8, 7], [-8, 7]), ("uint2", [[0, 3]], [[0, 3]]), ("int1", -1, -1)],
    ids=["int4", "uint2", "int1"],
)
def test_python_integers_become_sub_byte_integers_that_hold_them(name: str, data: object, want: object) -> None:
    v = tp.Variable(data, dtype=name)
    assert v.dtype == np.dtype(getattr(ml_dtypes, name))
    assert v.numpy().astype(int).tolist() == want
    v.assign(np.zeros(v.shape, v.dtype))
    v.assign(data)
    assert v.numpy().astype(int).tolist() == want


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("int4", [8], r"\[8\] does not fit in dtype int4"),
        ("uint4", [-1], r"\[-1\] does not fit in dtype uint4"),
        ("int2", [0.5], r"cannot convert \[0.5\] to dtype int2"),
        ("int4", [True], r"cannot convert \[True\] to dtype int4"),
        ("float8_e8m0fnu", [1j], r"cannot convert \[1j\] to dtype float8_e8m0fnu"),
    ],
)
def test_python_data_a_sub_byte_or_ml_type_cannot_hold_is_refused(name: str, data: object, message: str) -> None:
    # ml_dtypes would wrap 8 into int4 as -8, and truncate 0.5 to 0.
    with pytest.raises(tp.DTypeMismatchError, match=message):
        tp.Variable(data, dtype=name)
    v = tp.Variable(np.zeros(1, getattr(ml_dtypes, name)))
    with pytest.raises(tp.DTypeMismatchError, match=message):
        v.assign(data)
    assert v.numpy().tobytes() == b"\x00"


def test_python_numbers_round_into_ml_floats_and_complex32() -> None:
    assert tp.Variable([1.5, -6.0], dtype="float4_e2m1fn").numpy().astype(float).tolist() == [1.5, -6.0]
    c = tp.Variable([1 + 2j, -0.5j], dtype=ml_dtypes.bcomplex32)
    assert c.numpy().astype(np.complex64).tolist() == [1 + 2j, -0.5j]
    assert tp.Variable(2, dtype="complex32").numpy().astype(np.complex64) == 2


def test_arrays_convert_to_and_from_sub_byte_types_only_without_loss() -> None:
    small = tp.Variable(np.array([-8, 7], np.int8), dtype="int4")
    assert small.dtype == ml_dtypes.int4 and small.numpy().astype(int).tolist() == [-8, 7]
    wide = tp.Variable(np.array([-8, 7], ml_dtypes.int4), dtype=np.int16)
    assert wide.dtype == np.int16 and wide.numpy().tolist() == [-8, 7]
    with pytest.raises(tp.DTypeMismatchError, match="converting dtype int8 to int4 would change values"):
        tp.Variable(np.array([8], np.int8), dtype="int4")
    with pytest.raises(tp.DTypeMismatchError, match="expected an array of dtype int4, got int8"):
        small.assign(np.array([1, 2], np.int8))


def test_every_ml_dtype_is_accepted_by_name_and_a_foreign_dtype_still_refused() -> None:
    from trackpoint.dtypes import as_dtype

    for name in ML_DTYPE_NAMES:
        if hasattr(ml_dtypes, name):
            assert as_dtype(name) == np.dtype(getattr(ml_dtypes, name)), name
    with pytest.raises(tp.UnsupportedDTypeError, match=r"dtype datetime64\[s\] cannot be stored.*int4, uint4"):
        as_dtype("datetime64[s]")
