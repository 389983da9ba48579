"""``read_many`` and the parsed index: many tensors located and checked together, one compact row per entry."""

from __future__ import annotations

import gc
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.bundle._codec import encode_entry, encode_header
from trackpoint.backends.bundle._crc import crc32c, mask
from trackpoint.backends.bundle._sstable import build_table
from trackpoint.backends.bundle.proto import tensor_bundle_pb2
from trackpoint.backends.stores import FileSource, LocalFiles
from trackpoint.errors import CheckpointKeyError, DataLossError
from trackpoint.storage import CheckpointOptions, TensorSlice, WriteItem

pb: Any = tensor_bundle_pb2


class _SmallReads(LocalFiles):
    """Local files read in calls of 64 bytes, so that one ``read_many`` makes many calls."""

    read_chunk_bytes = 64

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        self.calls += 1
        super().read_ranges(path, ranges)


def _items() -> list[WriteItem]:
    rng = np.random.default_rng(3)
    items = [
        WriteItem(f"v{i:03d}", rng.random(int(rng.integers(0, 40))).astype(dtype))
        for i, dtype in enumerate([np.float32, np.int64, np.bool_, ml_dtypes.bfloat16, np.complex64, np.uint8] * 20)
    ]
    items += [
        WriteItem("scalar", np.array(2.5)),
        WriteItem("empty", np.zeros((0, 3), np.float32)),
        WriteItem("big", np.arange(100, dtype=np.float64)),  # larger than a read call: read in pieces
        WriteItem("strings", np.array([b"a", b"", b"xyz"], dtype=object)),
    ]
    part = np.arange(24, dtype=np.float32).reshape(6, 4)
    items += [WriteItem("part", part[a:b], TensorSlice((6, 4), (a, 0), (b - a, 4))) for a, b in ((0, 2), (2, 6))]
    return items


def test_many_tensors_of_every_kind_in_two_files_arrive_in_request_order(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    BundleBackend(LocalFiles()).save(prefix, _items(), CheckpointOptions(num_writers=2))
    assert len(list(tmp_path.glob("ckpt.data-*"))) == 2
    files = _SmallReads()
    with BundleBackend(files).open_reader(prefix) as reader:
        keys = reader.keys()
        expected = {k: reader.read(k) for k in keys}
        # Shuffled, a key asked for twice, half of them into arrays of the caller's.
        order = [*random.Random(5).sample(keys, len(keys)), keys[0]]
        requests = [
            (k, None if i % 2 or expected[k].dtype.kind == "O" else np.zeros_like(expected[k]))
            for i, k in enumerate(order)
        ]
        files.calls = 0
        got = reader.read_many(requests)
    assert files.calls > 20  # in many small calls, each checked as it returns
    for (key, out), value in zip(requests, got, strict=True):
        assert out is None or value is out
        assert value.dtype == expected[key].dtype and value.shape == expected[key].shape
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


class _CountedOpens(LocalFiles):
    """Local files read in calls of 64 bytes, counting the sources opened per file."""

    read_chunk_bytes = 64

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    def open_source(self, path: str) -> FileSource:
        self.opened.append(Path(path).name)
        return super().open_source(path)


def test_each_data_file_is_opened_once_however_many_calls_read_it(tmp_path: Path) -> None:
    # Linux keeps readahead per open file: opening the file again for every call restarted it each time.
    prefix = str(tmp_path / "ckpt")
    items = [WriteItem(f"v{i:02d}", np.arange(i * 7, dtype=np.float32)) for i in range(40)]  # 0 to 1092 bytes
    BundleBackend(LocalFiles()).save(prefix, items, CheckpointOptions(num_writers=2))
    files = _CountedOpens()
    with BundleBackend(files).open_reader(prefix) as reader:
        keys = reader.keys()
        expected = [reader.read(k) for k in keys]
        files.opened.clear()
        got = reader.read_many([(k, None) for k in keys])
    assert sorted(files.opened) == sorted(p.name for p in tmp_path.glob("ckpt.data-*"))
    for key, value, want in zip(keys, got, expected, strict=True):
        np.testing.assert_array_equal(value, want, err_msg=key)


def _write(prefix: str, entries: list[tuple[bytes, bytes]], data: bytes, header: bytes | None = None) -> None:
    Path(prefix + ".index").write_bytes(build_table([(b"", header or encode_header(1)), *sorted(entries)]))
    Path(prefix + ".data-00000-of-00001").write_bytes(data)


def test_big_endian_values_are_swapped_into_the_callers_arrays(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    values = np.array([1.5, -2.0, 3.25], dtype=">f4")
    bf = np.array([1.0, -2.5], dtype=ml_dtypes.bfloat16)
    bf_be = bf.view(np.uint16).byteswap().tobytes()
    header = pb.BundleHeaderProto(num_shards=1, endianness=1, version=pb.VersionDef(producer=1)).SerializeToString()
    entries = [
        (b"f", encode_entry(1, (3,), 0, 0, 12, mask(crc32c(values.tobytes())))),
        (b"bf", encode_entry(14, (2,), 0, 12, 4, mask(crc32c(bf_be)))),
    ]
    _write(prefix, entries, values.tobytes() + bf_be, header)
    out = np.zeros(2, ml_dtypes.bfloat16)
    with BundleBackend(LocalFiles()).open_reader(prefix) as reader:
        f, got = reader.read_many([("f", None), ("bf", out)])
    assert got is out
    np.testing.assert_array_equal(out.astype(np.float32), [1.0, -2.5])
    np.testing.assert_array_equal(f.astype(np.float32), [1.5, -2.0, 3.25])


def test_an_entry_reaching_past_2_to_the_63_is_beyond_the_file(tmp_path: Path) -> None:
    # offset + size overflows a 64-bit integer: the range check must not wrap around and let it through.
    prefix = str(tmp_path / "ckpt")
    _write(prefix, [(b"x", encode_entry(2, (), 0, 2**63 - 4, 8, 0))], bytes(8))
    with BundleBackend(LocalFiles()).open_reader(prefix) as reader:
        with pytest.raises(DataLossError, match=r"tensor 'x' at offset 9223372036854775804 \(\+8 bytes\) lies beyond"):
            reader.read_many([("x", None)])


def test_a_checkpoint_without_tensors_names_the_missing_key(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    BundleBackend(LocalFiles()).save(prefix, [])
    with BundleBackend(LocalFiles()).open_reader(prefix) as reader:
        assert reader.read_many([]) == []
        with pytest.raises(CheckpointKeyError, match="has no tensor 'w'"):
            reader.read_many([("w", None)])


def test_an_open_index_holds_no_objects_per_entry_for_the_collector(tmp_path: Path) -> None:
    # An index of 10^5 entries as 10^5 objects made every collection of the cyclic collector scan them all;
    # its entries are rows of arrays, and keys map to row numbers (neither is tracked by the collector).
    prefix = str(tmp_path / "ckpt")
    count = 5000
    BundleBackend(LocalFiles()).save(prefix, [WriteItem(f"t{i}", np.full(i % 3, i, np.float32)) for i in range(count)])
    gc.collect()
    before = len(gc.get_objects())
    reader = BundleBackend(LocalFiles()).open_reader(prefix)
    held = len(gc.get_objects()) - before
    assert held < 100, f"an open reader of {count} entries holds {held} tracked objects"
    got = reader.read_many([(f"t{i}", None) for i in range(count)])
    assert [float(a.sum()) for a in got[:4]] == [0.0, 1.0, 4.0, 0.0]
    reader.close()
