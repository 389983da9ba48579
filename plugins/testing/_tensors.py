"""Round trips: every dtype and shape, many small tensors, one huge tensor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from trackpoint.plugins.testing._base import DTYPES, Array, BackendTestBase, assert_same, sample
from trackpoint.storage import StorageBackend

__all__ = ["HugeTensors", "ManyTensors", "RoundTrip"]

#: 0-d, empty (in several positions) and 1-d to 4-d.
SHAPES: tuple[tuple[int, ...], ...] = ((), (0,), (3, 0, 2), (7,), (2, 3), (2, 3, 4), (1, 2, 3, 2))


def _strings() -> dict[str, Array]:
    def arr(values: list[object], shape: tuple[int, ...]) -> Array:
        a = np.empty(len(values), dtype=object)
        a[:] = values
        return a.reshape(shape)

    return {
        "scalar": arr([b"hello"], ()),
        "empty_tensor": arr([], (0, 2)),
        "empty_strings": arr([b"", b"", b""], (3,)),
        # Non-ASCII UTF-8, raw non-UTF-8 bytes, NUL bytes and a long element.
        "mixed": arr([b"caf\xc3\xa9", "\u65e5\u672c", b"\xff\xfe\x00", b"\x00" * 3, b"x" * 70_000, b""], (2, 3)),
    }


class RoundTrip(BackendTestBase):
    """Whatever is saved comes back bit for bit, with its dtype and shape."""

    @pytest.mark.parametrize("dtype", DTYPES, ids=[d.name for d in DTYPES])
    def test_every_shape_of_dtype(self, backend: StorageBackend, base_url: str, dtype: np.dtype[Any]) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        tensors = {f"t{'x'.join(map(str, s)) or 'scalar'}": sample(dtype, s, seed=i) for i, s in enumerate(SHAPES)}
        self.save(backend, prefix, tensors)
        self.assert_contents(backend, prefix, tensors)
        with backend.open_reader(prefix) as reader:
            for key, want in tensors.items():
                info = reader.info(key)
                assert (info.dtype, info.shape) == (want.dtype, want.shape)
                out = np.empty(want.shape, dtype=want.dtype)
                assert reader.read(key, out=out) is out, "read(out=...) must return out"
                assert_same(out, want, key)

    def test_special_float_values(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 6e4]
        tensors = {d.name: np.array(special).astype(d) for d in DTYPES if d.kind == "f"}
        self.save(backend, prefix, tensors)
        self.assert_contents(backend, prefix, tensors)

    def test_strings(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        tensors = _strings()
        self.save(backend, prefix, tensors)
        self.assert_contents(backend, prefix, tensors)
        with backend.open_reader(prefix) as reader:
            assert reader.info("mixed").dtype == np.dtype(object)
            assert reader.info("mixed").shape == (2, 3)

    def test_non_contiguous_inputs(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        base = np.arange(4 * 6 * 5, dtype=np.float64).reshape(4, 6, 5)
        tensors = {
            "strided": base[::2, 1::3, ::-1],
            "transposed": base.transpose(2, 0, 1),
            "fortran": np.asfortranarray(base),
            "big_endian": base.astype(">i4")[:, ::2],
        }
        self.save(backend, prefix, tensors)
        with backend.open_reader(prefix) as reader:
            for key, want in tensors.items():
                got = reader.read(key)
                assert got.shape == want.shape
                np.testing.assert_array_equal(got, want, err_msg=key)
                assert got.dtype == want.dtype.newbyteorder("="), key

    def test_keys_info_and_has(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        tensors = {
            "z": np.zeros(2, np.int32),
            "a/b/.ATTRIBUTES/VARIABLE_VALUE": np.ones((2, 2), np.float32),
            "_CHECKPOINTABLE_OBJECT_GRAPH": np.array(b"\x08\x01", dtype=object),
            "A": np.array(1.5),
        }
        self.save(backend, prefix, tensors)
        with backend.open_reader(prefix) as reader:
            assert list(reader.keys()) == sorted(tensors), f"keys() returned {list(reader.keys())}"
            assert list(reader) == sorted(tensors), "iterating a reader must give its keys, sorted"
            assert reader.has("z") and not reader.has("missing")
            assert reader.info("a/b/.ATTRIBUTES/VARIABLE_VALUE").shape == (2, 2)
            got = reader.read_many([("z", None), ("A", np.empty((), np.float64))])
            assert_same(got[0], tensors["z"])
            assert_same(got[1], tensors["A"])


class ManyTensors(BackendTestBase):
    """Thousands of small tensors in one checkpoint."""

    def test_many_small_tensors(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        rng = np.random.default_rng(7)
        tensors = {
            f"model/layer_{i:05d}/.ATTRIBUTES/VARIABLE_VALUE": rng.standard_normal(int(rng.integers(0, 9))).astype(
                np.float32
            )
            for i in range(self.many_tensors_count)
        }
        self.save(backend, prefix, tensors)
        with backend.open_reader(prefix) as reader:
            got_keys = list(reader.keys())
            assert got_keys == sorted(tensors), (
                f"keys() returned {len(got_keys)} keys for {len(tensors)} tensors; first difference: "
                f"{next(((g, w) for g, w in zip(got_keys, sorted(tensors), strict=False) if g != w), None)}"
            )
            keys = list(tensors)
            for key, got in zip(keys, reader.read_many([(k, None) for k in keys]), strict=True):
                assert_same(got, tensors[key], key)

    def test_many_small_tensors_in_many_shards(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        tensors = {f"v{i}": np.full(3, i, dtype=np.int64) for i in range(min(500, self.many_tensors_count))}
        self.save(backend, prefix, tensors, max_shard_bytes=24 * 20, num_writers=4)
        self.assert_contents(backend, prefix, tensors)


class HugeTensors(BackendTestBase):
    """A tensor larger than typical buffer and part sizes (``huge_tensor_bytes``)."""

    def _huge(self) -> Array:
        return np.frombuffer(np.random.default_rng(3).bytes(self.huge_tensor_bytes), dtype=np.uint8)

    def test_huge_tensor(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        huge = self._huge()
        tensors = {"before": np.arange(5, dtype=np.int16), "huge": huge, "after": np.array([b"end"], dtype=object)}
        self.save(backend, prefix, tensors)
        with backend.open_reader(prefix) as reader:
            out = np.empty_like(huge)
            assert reader.read("huge", out=out) is out
            assert out.tobytes() == huge.tobytes(), "the huge tensor reads back different bytes"
            assert_same(reader.read("before"), tensors["before"])
            assert_same(reader.read("after"), tensors["after"])

    def test_huge_tensor_beyond_shard_limit_gets_own_shard(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        huge = self._huge()[: self.huge_tensor_bytes // 4 * 4].view(np.float32)
        tensors = {"a": np.ones(10, np.float32), "huge": huge, "b": np.zeros(10, np.float32)}
        self.save(backend, prefix, tensors, max_shard_bytes=1 << 16, num_writers=2)
        self.assert_contents(backend, prefix, tensors)
