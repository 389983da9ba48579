"""Every supported dtype, 0-d and empty arrays, and strings survive save/restore exactly."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import trackpoint as tp

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
    ml_dtypes.float8_e5m2,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e4m3fnuz,
    ml_dtypes.float8_e4m3b11fnuz,
    ml_dtypes.float8_e5m2fnuz,
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
    if np.dtype(dtype).kind == "c":
        value = value + 1j * value
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
