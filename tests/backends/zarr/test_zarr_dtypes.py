"""Every dtype the core supports round-trips bit-exactly, packed or not, compressed or not."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from trackpoint.errors import ShapeMismatchError, UnsupportedDTypeError
from trackpoint.storage import WriteItem

_NUMERIC = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
]  # fmt: skip


_ML = ["bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz"]


def _sample(dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(7)
    n = int(np.prod(shape))
    if dtype == np.bool_:
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True).reshape(shape)
    # Random bit patterns: NaN payloads, -0.0 and infinities must survive too.
    raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _strings(shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    out = np.empty(shape, dtype=object)
    for i, idx in enumerate(np.ndindex(*shape)):
        out[idx] = bytes([i % 256]) * (i % 5) + b"\x00\xff"[: i % 3]
    return out


def _same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "O":
        return all(x == y and type(x) is bytes for x, y in zip(a.flat, b.flat, strict=True))
    return a.tobytes() == b.tobytes()


@pytest.mark.parametrize("compressor", ["zstd", "none"])
@pytest.mark.parametrize("pack_bytes", [0, 1 << 20], ids=["own-arrays", "packed"])
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (7, 3)], ids=str)
def test_every_dtype_round_trips(local: Any, compressor: str, pack_bytes: int, shape: tuple[int, ...]) -> None:
    items = [WriteItem(name, _sample(np.dtype(name), shape)) for name in _NUMERIC]
    # Every ml_dtypes type: float8_e5m2 is of kind "f", the others of kind "V".
    items.extend(WriteItem(name, _sample(np.dtype(getattr(ml_dtypes, name)), shape)) for name in _ML)
    items.append(WriteItem("strings", _strings(shape)))
    prefix = local.prefix()
    opts = local.options.__class__(backend="zarr", backend_options={"compressor": compressor, "pack_bytes": pack_bytes})
    local.backend.save(prefix, items, opts)
    with local.backend.open_reader(prefix) as reader:
        assert reader.keys() == sorted(it.key for it in items)
        for it in items:
            got = reader.read(it.key)
            assert _same(got, it.array), it.key
            info = reader.info(it.key)
            assert (info.dtype, info.shape) == (it.array.dtype, it.array.shape)


@pytest.mark.parametrize("compressor", ["zstd", "none"])
def test_read_many_of_packed_tensors_of_every_dtype_into_any_destination(local: Any, compressor: str) -> None:
    shape = (7, 3)
    items = [WriteItem(name, _sample(np.dtype(name), shape)) for name in _NUMERIC]
    items.append(WriteItem("bfloat16", _sample(np.dtype(ml_dtypes.bfloat16), shape)))
    items.append(WriteItem("float8", _sample(np.dtype(ml_dtypes.float8_e4m3fn), shape)))
    prefix = local.prefix()
    opts = local.options.__class__(backend="zarr", backend_options={"compressor": compressor, "pack_bytes": 1 << 20})
    local.backend.save(prefix, items, opts)
    # C-contiguous destinations (copied into as raw bytes, except ml_dtypes types), Fortran-ordered ones (a
    # converting copy), and none (new arrays).
    outs: list[np.ndarray[Any, Any] | None] = [
        [np.zeros_like(it.array), np.asfortranarray(np.zeros_like(it.array)), None][k % 3] for k, it in enumerate(items)
    ]
    with local.backend.open_reader(prefix) as reader:
        got = reader.read_many([(it.key, out) for it, out in zip(items, outs, strict=True)])
        for it, out, value in zip(items, outs, got, strict=True):
            if out is not None:
                assert value is out, it.key
            assert _same(np.ascontiguousarray(value), it.array), it.key
        frozen = np.zeros_like(items[0].array)
        frozen.flags.writeable = False
        with pytest.raises(ShapeMismatchError, match="must be writeable"):
            reader.read_many([(items[1].key, np.zeros_like(items[1].array)), (items[0].key, frozen)])


def test_dtypes_on_object_stores(where: Any) -> None:
    items = [WriteItem(n, _sample(np.dtype(n), (4, 3))) for n in ("float32", "int64", "complex128", "bool")]
    items += [
        WriteItem("bf16", _sample(np.dtype(ml_dtypes.bfloat16), (300, 300))),  # own array
        WriteItem("scalar", np.array(-0.0)),
        WriteItem("strings", _strings((3, 2))),
        WriteItem("string0d", np.array(b"\x00text", dtype=object)),
    ]
    where.backend.save(where.prefix(), items)
    with where.backend.open_reader(where.prefix()) as reader:
        for it in items:
            assert _same(reader.read(it.key), it.array), it.key


def test_str_elements_are_stored_as_utf8_bytes(local: Any) -> None:
    local.backend.save(local.prefix(), [WriteItem("s", np.array(["héllo", "x"], dtype=object))])
    with local.backend.open_reader(local.prefix()) as reader:
        assert list(reader.read("s")) == ["héllo".encode(), b"x"]


def test_big_endian_input_is_read_back_native(local: Any) -> None:
    a = np.arange(6, dtype=">i4")
    local.backend.save(local.prefix(), [WriteItem("be", a)])
    with local.backend.open_reader(local.prefix()) as reader:
        got = reader.read("be")
    assert got.dtype == np.dtype("=i4")
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize(
    "array",
    [np.array([1, 2], dtype="datetime64[s]"), np.array([{"a": 1}], dtype=object), np.zeros(2, "U3").astype("V3")],
    ids=["datetime", "dict-object", "void"],
)
def test_unsupported_dtypes_are_refused(local: Any, array: np.ndarray[Any, Any]) -> None:
    with pytest.raises(UnsupportedDTypeError, match="zarr: .*tensor 'x'"):
        local.backend.save(local.prefix(), [WriteItem("x", array)])
    assert not local.backend.exists(local.prefix())
