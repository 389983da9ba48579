"""What the reader verifies: checksums, truncation, implausible indexes, foreign files, endianness, slices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.bundle._codec import encode_entry, encode_header
from trackpoint.backends.bundle._crc import crc32c, mask
from trackpoint.backends.bundle._ordered_code import encode_slice_key
from trackpoint.backends.bundle._sstable import build_table
from trackpoint.backends.bundle.proto import tensor_bundle_pb2
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import (
    CheckpointKeyError,
    CheckpointNotFoundError,
    DataLossError,
    DTypeMismatchError,
    InvalidCheckpointError,
    ShapeMismatchError,
    StorageError,
)
from trackpoint.storage import CheckpointOptions, WriteItem

pb: Any = tensor_bundle_pb2


def _write_bundle(prefix: str, entries: list[tuple[bytes, bytes]], data: bytes, header: bytes | None = None) -> None:
    table = build_table([(b"", header or encode_header(1)), *sorted(entries)])
    Path(prefix + ".index").write_bytes(table)
    Path(prefix + ".data-00000-of-00001").write_bytes(data)


def test_corrupted_data_names_file_key_and_offset(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("a", np.arange(10.0)), WriteItem("b", np.arange(5.0))])
    path = Path(prefix + ".data-00000-of-00001")
    raw = bytearray(path.read_bytes())
    raw[85] ^= 0x40
    path.write_bytes(bytes(raw))
    with backend.open_reader(prefix) as r:
        np.testing.assert_array_equal(r.read("a"), np.arange(10.0))
        with pytest.raises(
            DataLossError, match=r"CRC-32C mismatch for tensor 'b' in .*data-00000-of-00001.* at offset 80"
        ):
            r.read("b")
        with pytest.raises(DataLossError, match="'b'"):
            r.read_many([("a", None), ("b", None)])


def test_truncated_data_file(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("a", np.arange(10.0)), WriteItem("b", np.arange(5.0))])
    path = Path(prefix + ".data-00000-of-00001")
    path.write_bytes(path.read_bytes()[:100])
    with backend.open_reader(prefix) as r:
        with pytest.raises(DataLossError, match="'b' at offset 80 .*beyond the end.*truncated"):
            r.read("b")
        path.unlink()
        with pytest.raises(DataLossError, match="data file .* is missing"):
            r.read("a")


def test_absurd_size_is_refused_before_allocating(prefix: str, backend: BundleBackend) -> None:
    # Claims a 2**40-element tensor (4 TiB) in an 8-byte file.
    entry = encode_entry(1, (2**40,), 0, 0, 4 * 2**40, 0)
    _write_bundle(prefix, [(b"huge", entry)], bytes(8))
    with backend.open_reader(prefix) as r:
        assert r.info("huge").shape == (2**40,)
        with pytest.raises(DataLossError, match="beyond the end"):
            r.read("huge")


def test_size_inconsistent_with_shape(prefix: str, backend: BundleBackend) -> None:
    _write_bundle(prefix, [(b"x", encode_entry(1, (3,), 0, 0, 16, 0))], bytes(16))
    with pytest.raises(DataLossError, match=r"shape \(3,\) of float32 needs 12 bytes but the entry records 16"):
        backend.open_reader(prefix)


def test_shard_id_out_of_range(prefix: str, backend: BundleBackend) -> None:
    _write_bundle(prefix, [(b"x", encode_entry(1, (1,), 5, 0, 4, 0))], bytes(4))
    with pytest.raises(DataLossError, match="shard_id 5 is not below num_shards 1"):
        backend.open_reader(prefix)


def test_huge_num_shards(prefix: str, backend: BundleBackend) -> None:
    header = pb.BundleHeaderProto(num_shards=2**30, version=pb.VersionDef(producer=1)).SerializeToString()
    _write_bundle(prefix, [(b"x", encode_entry(1, (1,), 0, 0, 4, 0))], bytes(4), header)
    with pytest.raises(DataLossError, match="implausible"):
        backend.open_reader(prefix)


def test_foreign_index_file(tmp_path: Path, backend: BundleBackend) -> None:
    prefix = str(tmp_path / "notes")
    Path(prefix + ".index").write_text("just some text, not a checkpoint\n" * 3)
    with pytest.raises(InvalidCheckpointError, match=r"notes\.index is not a TensorFlow bundle index"):
        backend.open_reader(prefix)


def test_an_index_cut_shorter_than_a_footer_is_data_loss(prefix: str, backend: BundleBackend) -> None:
    """An empty or cut-short index is damage (DataLossError, which a fallback to an older checkpoint catches)."""
    backend.save(prefix, [WriteItem("a", np.arange(10.0))])
    index = Path(prefix + ".index")
    for size in (20, 0):  # cut short, then emptied
        index.write_bytes(index.read_bytes()[:size] if size else b"")
        with pytest.raises(DataLossError, match=rf"\.index is truncated: {size} bytes, shorter than the 48-byte"):
            backend.open_reader(prefix)


def test_missing_header(prefix: str, backend: BundleBackend) -> None:
    Path(prefix + ".index").write_bytes(build_table([(b"a", encode_entry(1, (1,), 0, 0, 4, 0))]))
    with pytest.raises(DataLossError, match="header entry is missing"):
        backend.open_reader(prefix)


def test_missing_checkpoint(tmp_path: Path, backend: BundleBackend) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint is committed at .*nothing.*nothing\.index"):
        backend.open_reader(str(tmp_path / "nothing"))


def test_big_endian_bundle(prefix: str, backend: BundleBackend) -> None:
    values = np.array([1.5, -2.0, 3.25], dtype=">f4")
    bf = np.array([1.0, -2.5], dtype=ml_dtypes.bfloat16)
    bf_be = bf.view(np.uint16).byteswap().tobytes()
    header = pb.BundleHeaderProto(num_shards=1, endianness=1, version=pb.VersionDef(producer=1)).SerializeToString()
    data = values.tobytes() + bf_be
    entries = [
        (b"f", encode_entry(1, (3,), 0, 0, 12, mask(crc32c(values.tobytes())))),
        (b"bf", encode_entry(14, (2,), 0, 12, 4, mask(crc32c(bf_be)))),
    ]
    _write_bundle(prefix, entries, data, header)
    with backend.open_reader(prefix) as r:
        assert r.info("f").dtype == np.dtype(">f4")
        got = r.read("f")
        assert got.dtype == np.dtype(">f4")
        np.testing.assert_array_equal(got.astype(np.float32), [1.5, -2.0, 3.25])
        np.testing.assert_array_equal(r.read("bf").astype(np.float32), [1.0, -2.5])


def _sliced_bundle(prefix: str) -> np.ndarray[Any, Any]:
    full = np.arange(12, dtype=np.float32).reshape(4, 3)
    top, bottom = full[:2].tobytes(), full[2:].tobytes()
    meta = pb.BundleEntryProto(dtype=1)
    meta.shape.dim.add(size=4)
    meta.shape.dim.add(size=3)
    for start in (0, 2):
        s = meta.slices.add()
        e = s.extent.add()
        e.start = start
        e.length = 2
        s.extent.add()
    entries = [
        (b"w", meta.SerializeToString()),
        (encode_slice_key(b"w", [(0, 2), (0, -1)]), encode_entry(1, (2, 3), 0, 0, 24, mask(crc32c(top)))),
        (encode_slice_key(b"w", [(2, 2), (0, -1)]), encode_entry(1, (2, 3), 0, 24, 24, mask(crc32c(bottom)))),
        (b"z", encode_entry(1, (1,), 0, 48, 4, mask(crc32c(bytes(4))))),
    ]
    _write_bundle(prefix, entries, top + bottom + bytes(4))
    return full


def test_sliced_tensors_are_assembled_and_slice_keys_hidden(prefix: str, backend: BundleBackend) -> None:
    full = _sliced_bundle(prefix)
    # The spec's bytes of the full entry.
    assert (
        Path(prefix + ".index")
        .read_bytes()
        .find(bytes.fromhex("08011208120208041202080 33a060a0210020a003a080a04080210020a00".replace(" ", "")))
        > 0
    )
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["w", "z"]
        assert r.info("w").shape == (4, 3)
        np.testing.assert_array_equal(r.read("w"), full)
        out = np.empty((4, 3), np.float32)
        assert r.read("w", out=out) is out
        got = r.read_many([("w", None), ("z", None)])
        np.testing.assert_array_equal(got[0], full)


def test_missing_slice_is_data_loss(prefix: str, backend: BundleBackend) -> None:
    _sliced_bundle(prefix)
    table = Path(prefix + ".index").read_bytes()
    # Rebuild without the second slice entry.
    from trackpoint.backends.bundle._sstable import read_table

    kept = [e for e in read_table(table, "t") if e[0] != encode_slice_key(b"w", [(2, 2), (0, -1)])]
    Path(prefix + ".index").write_bytes(build_table(kept))
    with backend.open_reader(prefix) as r:
        with pytest.raises(DataLossError, match=r"slice \(\(2, 2\), \(0, -1\)\) of 'w' has no entry"):
            r.read("w")


def test_unreadable_dtype_is_listed_but_fails_clearly(prefix: str, backend: BundleBackend) -> None:
    _write_bundle(prefix, [(b"res", encode_entry(20, (), 0, 0, 0, 0))], b"")
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["res"]
        with pytest.raises(InvalidCheckpointError, match="DataType 20 cannot be read"):
            r.read("res")


def test_reader_after_close(prefix: str, backend: BundleBackend) -> None:
    backend.save(prefix, [WriteItem("a", np.zeros(2))])
    r = backend.open_reader(prefix)
    r.close()
    with pytest.raises(Exception, match="closed"):
        r.read("a")
    for call in (lambda: r.info("a"), lambda: r.read_many([("a", None)])):
        with pytest.raises(StorageError, match=r"reader of .* is closed"):
            call()


def test_huge_string_shape_is_refused(prefix: str, backend: BundleBackend) -> None:
    _write_bundle(prefix, [(b"s", encode_entry(7, (2**40,), 0, 0, 8, 0))], bytes(8))
    with pytest.raises(DataLossError, match="8 bytes cannot hold 1099511627776 strings"):
        backend.open_reader(prefix)


def test_slices_must_cover_the_tensor_before_allocation(prefix: str, backend: BundleBackend) -> None:
    meta = pb.BundleEntryProto(dtype=1)
    meta.shape.dim.add(size=2**40)
    s = meta.slices.add()
    e = s.extent.add()
    e.start = 0
    e.length = 1
    piece = encode_entry(1, (1,), 0, 0, 4, mask(crc32c(bytes(4))))
    _write_bundle(prefix, [(b"w", meta.SerializeToString()), (encode_slice_key(b"w", [(0, 1)]), piece)], bytes(4))
    with backend.open_reader(prefix) as r:
        with pytest.raises(DataLossError, match="hold 1 of its 1099511627776 elements"):
            r.read("w")


def test_read_many_reports_the_first_bad_request_and_missing_data(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("a", np.arange(10.0)), WriteItem("b", np.arange(5.0))])
    with backend.open_reader(prefix) as r:
        with pytest.raises(CheckpointKeyError, match="has no tensor 'nope'"):
            r.read_many([("a", None), ("nope", None), ("b", np.zeros(3))])
        with pytest.raises(ShapeMismatchError, match=r"cannot read 'b' of shape \(5,\) into an array of shape \(3,\)"):
            r.read_many([("b", np.zeros(3)), ("nope", None)])
        with pytest.raises(ShapeMismatchError, match="C-contiguous and writeable"):
            r.read_many([("a", np.zeros((10, 2))[:, 0])])
        with pytest.raises(DTypeMismatchError, match="into an array of dtype float32"):
            r.read_many([("a", np.zeros(10, np.float32))])
    Path(prefix + ".data-00000-of-00001").unlink()
    with backend.open_reader(prefix) as r, pytest.raises(DataLossError, match=r"is missing \(needed by 'a'\)"):
        r.read_many([("a", None)])


def test_entries_of_one_dtype_and_shape_share_their_info(backend: BundleBackend, prefix: str) -> None:
    # An index of 10^5 variables holds few dtype/shape pairs: each is described once.
    backend.save(prefix, [WriteItem(k, np.zeros(3, np.float32)) for k in "abc"] + [WriteItem("d", np.zeros(4))])
    with backend.open_reader(prefix) as r:
        assert r.info("a") is r.info("b") is r.info("c")
        assert r.info("d").shape == (4,) and r.info("d").dtype == np.float64


class _CountingFiles(LocalFiles):
    """Local files read in 4 KiB calls, recording every range of a data file asked for."""

    read_chunk_bytes = 4096

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int]] = []

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        if ".data-" in path:
            self.reads.extend((offset, len(out)) for offset, out in ranges)
        super().read_ranges(path, ranges)


_ONE_SHARD = CheckpointOptions(num_writers=1)


def _mixed_items() -> list[WriteItem]:
    # Tensors smaller than a read call, one of exactly its size, and larger ones spanning several.
    sizes = [10, 300, 1024, 5000, 3, 2500, 1]
    return [WriteItem(f"t{i}", np.arange(n, dtype=np.float32) + i) for i, n in enumerate(sizes)]


def test_local_reads_come_in_chunks_and_land_whole(prefix: str) -> None:
    items = _mixed_items()
    BundleBackend(LocalFiles()).save(prefix, items, _ONE_SHARD)
    files = _CountingFiles()
    with BundleBackend(files).open_reader(prefix) as r:
        got = r.read_many([(it.key, np.zeros_like(it.array)) for it in items])
    for it, value in zip(items, got, strict=True):
        np.testing.assert_array_equal(value, it.array)
    data_reads = [n for _, n in files.reads]
    # Tensors that fit a 4 KiB call are grouped into such calls; larger ones come alone, in calls of four
    # times it: t5 (10,000 bytes) in one, t3 (20,000 bytes) in 16 KiB and the rest.
    assert sorted(n for n in data_reads if n > 4096) == [10000, 16384]
    assert sum(data_reads) == sum(it.nbytes for it in items)


def test_a_corrupted_tensor_fails_before_the_rest_of_the_file_is_read(prefix: str) -> None:
    items = _mixed_items()
    BundleBackend(LocalFiles()).save(prefix, items, _ONE_SHARD)
    path = Path(prefix + ".data-00000-of-00001")
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0x01  # in t0, the first tensor of the file
    path.write_bytes(bytes(raw))
    files = _CountingFiles()
    with BundleBackend(files).open_reader(prefix) as r:
        with pytest.raises(DataLossError, match=r"CRC-32C mismatch for tensor 't0'"):
            r.read_many([(it.key, None) for it in items])
    # Checked as soon as its first read call returned: the file's last bytes were never requested.
    assert max(offset + n for offset, n in files.reads) <= 4096


def test_a_corrupted_piece_of_a_large_tensor_is_caught(prefix: str) -> None:
    big = WriteItem("big", np.arange(5000, dtype=np.float32))
    BundleBackend(LocalFiles()).save(prefix, [big], _ONE_SHARD)
    path = Path(prefix + ".data-00000-of-00001")
    raw = bytearray(path.read_bytes())
    raw[3 * 4096 + 7] ^= 0x10  # in the fourth of its five read calls
    path.write_bytes(bytes(raw))
    with BundleBackend(_CountingFiles()).open_reader(prefix) as r:
        with pytest.raises(DataLossError, match=r"CRC-32C mismatch for tensor 'big' .* at offset 0 \(20000 bytes\)"):
            r.read_many([("big", None)])
