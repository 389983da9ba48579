"""Every supported dtype, 0-d and empty arrays, and strings survive save/restore exactly."""

from __future__ import annotations

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
    raw = rng.integers(0, 2 if dtype is np.bool_ else 100, size=shape)
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
