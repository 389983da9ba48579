"""Saving and reading tensors of every supported dtype and shape."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.errors import CheckpointKeyError, DTypeMismatchError, ShapeMismatchError, UnsupportedDTypeError
from trackpoint.storage import CheckpointOptions, WriteItem

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.complex64,
    np.complex128,
    np.bool_,
    ml_dtypes.bfloat16,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
]


def _sample(dtype: Any, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) * 10).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0, 2), (4, 5, 6)])
def test_round_trip(backend: BundleBackend, prefix: str, dtype: Any, shape: tuple[int, ...]) -> None:
    value = _sample(dtype, shape)
    backend.save(prefix, [WriteItem("t", value)])
    with backend.open_reader(prefix) as r:
        info = r.info("t")
        assert info.dtype == np.dtype(dtype) and info.shape == shape
        got = r.read("t")
        assert got.dtype == np.dtype(dtype) and got.shape == shape
        np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), value.reshape(-1).view(np.uint8))


def test_bfloat16_bytes_are_the_top_half_of_float32(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("b", np.array([1.0, -2.5], dtype=ml_dtypes.bfloat16))])
    assert open(prefix + ".data-00000-of-00001", "rb").read() == bytes.fromhex("803f20c0")


def test_strings_and_unicode(backend: BundleBackend, prefix: str) -> None:
    value = np.array([[b"", b"a" * 300], ["ünï", b"\x00\xff"]], dtype=object)
    backend.save(prefix, [WriteItem("s", value), WriteItem("empty", np.empty((0, 3), dtype=object))])
    with backend.open_reader(prefix) as r:
        got = r.read("s")
        assert got.dtype == object and got.tolist() == [[b"", b"a" * 300], ["ünï".encode(), b"\x00\xff"]]
        assert r.read("empty").shape == (0, 3)


def test_non_contiguous_and_big_endian_inputs(backend: BundleBackend, prefix: str) -> None:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    backend.save(prefix, [WriteItem("t", base.T), WriteItem("be", base.astype(">i4"))])
    with backend.open_reader(prefix) as r:
        np.testing.assert_array_equal(r.read("t"), base.T)
        be = r.read("be")
        assert be.dtype == np.dtype("<i4")
        np.testing.assert_array_equal(be, base.astype(np.int32))


def test_read_into_out_and_read_many(backend: BundleBackend, prefix: str) -> None:
    tensors = {f"w{i:03d}": np.full((i + 1, 3), i, dtype=np.float32) for i in range(50)}
    tensors["s"] = np.array([b"x"], dtype=object)
    backend.save(prefix, [WriteItem(k, v) for k, v in tensors.items()], CheckpointOptions(max_shard_bytes=600))
    with backend.open_reader(prefix) as r:
        out = np.empty((4, 3), np.float32)
        assert r.read("w003", out=out) is out
        np.testing.assert_array_equal(out, tensors["w003"])
        keys = sorted(tensors)
        outs = [None if k == "s" or i % 2 else np.empty_like(tensors[k]) for i, k in enumerate(keys)]
        got = r.read_many(list(zip(keys, outs, strict=True)))
        for k, o, g in zip(keys, outs, got, strict=True):
            if o is not None:
                assert g is o
            np.testing.assert_array_equal(g, tensors[k])
    assert len([n for n in backend.files.listdir(backend.dirname(prefix)) if ".data-" in n]) > 1


def test_out_must_match(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("t", np.zeros((2, 3), np.float32))])
    with backend.open_reader(prefix) as r:
        with pytest.raises(DTypeMismatchError, match="'t'.*float64"):
            r.read("t", out=np.empty((2, 3), np.float64))
        with pytest.raises(ShapeMismatchError, match=r"'t' of shape \(2, 3\)"):
            r.read("t", out=np.empty((3, 2), np.float32))
        with pytest.raises(ShapeMismatchError, match="C-contiguous"):
            r.read("t", out=np.empty((3, 2), np.float32).T)
        with pytest.raises(CheckpointKeyError, match="has no tensor 'nope'"):
            r.read("nope")
        assert not r.has("nope") and r.has("t")


def test_unsupported_dtypes_are_refused(backend: BundleBackend, prefix: str) -> None:
    with pytest.raises(UnsupportedDTypeError, match="'rec'.*no TensorFlow DataType"):
        backend.save(prefix, [WriteItem("rec", np.zeros(2, dtype=[("a", "i4")]))])
    assert not backend.exists(prefix)


def test_keys_never_become_paths(backend: BundleBackend, tmp_path: Any) -> None:
    inner = tmp_path / "a" / "b"
    prefix = str(inner / "ckpt")
    keys = ["../../etc/passwd", "/abs/path", "..", "x/../../y", "c:\\windows"]
    backend.save(prefix, [WriteItem(k, np.arange(3)) for k in keys])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    names = sorted(p.name for p in inner.iterdir())
    assert names[-1] == "ckpt.index" and all(n.startswith("ckpt.data-") for n in names[:-1])
    with backend.open_reader(prefix) as r:
        assert r.keys() == sorted(keys)


def test_each_tensor_is_reported_only_once_the_sink_has_its_bytes(tmp_path: Any) -> None:
    # Small tensors reach the sink as views of their arrays (a vectored write, no copy): a report says
    # the array is no longer read, which lets an async save hand it back, so it must follow the write.
    from trackpoint.backends.bundle._writer import write_data
    from trackpoint.backends.stores import FileSink, LocalFiles
    from trackpoint.storage import _SHARD_PROGRESS

    handed = [0]

    class Counting(FileSink):
        def __init__(self, inner: FileSink) -> None:
            self.inner = inner

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.inner.write(data)
            handed[0] += memoryview(data).nbytes

        def write_many(self, buffers: Any) -> None:
            self.inner.write_many(buffers)
            handed[0] += sum(memoryview(b).nbytes for b in buffers)

        def close(self) -> None:
            self.inner.close()

        def abort(self) -> None:
            self.inner.abort()

    class CountingFiles(LocalFiles):
        def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
            return Counting(super().open_sink(path, create_only=create_only))

    rng = np.random.default_rng(3)
    sizes = [10, 3000, 70_000, 5, 200_000, *[2000] * 300, 9]  # small, large, and a batch's worth of small
    items = [WriteItem(f"t{i}", rng.standard_normal(n).astype(np.float32)) for i, n in enumerate(sizes)]
    items.insert(2, WriteItem("s", np.array([b"ab", b"cde"], dtype=object)))
    handed_at_report: dict[str, int] = {}

    def report(nbytes: int, item: WriteItem) -> None:
        handed_at_report[item.key] = handed[0]

    token = _SHARD_PROGRESS.set(report)
    try:
        rows = write_data(CountingFiles(), str(tmp_path / "data"), items, create_only=False)
    finally:
        _SHARD_PROGRESS.reset(token)
    assert list(handed_at_report) == [it.key for it in items]  # every tensor, in write order
    data = (tmp_path / "data").read_bytes()
    arrays = {it.key: it.array for it in items}
    for row in rows:
        key = row.key.decode()
        assert handed_at_report[key] >= row.offset + row.size, f"{key} was reported before its bytes were written"
        if key != "s":
            assert data[row.offset : row.offset + row.size] == arrays[key].tobytes()
