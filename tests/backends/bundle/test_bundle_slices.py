"""Slices in the bundle: TensorFlow's slice entries written, merged at commit across shards, large tensors split."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from fixtures.tf import tfcases
from servers import make_s3_fs
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.bundle._codec import decode_entry, encode_sliced_entry
from trackpoint.backends.bundle._ordered_code import encode_slice_key
from trackpoint.backends.bundle._sstable import read_table
from trackpoint.backends.stores import LocalFiles
from trackpoint.backends.stores.s3 import S3Files, create_files
from trackpoint.storage import Capabilities, CheckpointOptions, ShardResult, ShardSpec, TensorSlice, WriteItem
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable

FULL = np.arange(96, dtype=np.float32).reshape(12, 8)


def rows(a: int, b: int, full: np.ndarray[Any, Any] = FULL) -> WriteItem:
    """The rows ``a:b`` of ``full`` as a slice item of key ``t``."""
    return WriteItem("t", full[a:b], TensorSlice(full.shape, (a, *[0] * (full.ndim - 1)), (b - a, *full.shape[1:])))


def index_entries(prefix: str) -> dict[bytes, bytes]:
    return dict(read_table(Path(prefix + ".index").read_bytes(), "test")[1:])


def save_by_shards(backend: BundleBackend, prefix: str, shards: list[list[WriteItem]]) -> None:
    """The save protocol as several processes run it: one shard per writer, one commit of every manifest."""
    save_id = uuid.uuid4().hex
    backend.begin(prefix, save_id)
    specs = [ShardSpec(i, len(shards), save_id) for i in range(len(shards))]
    # Written in reverse order, as writers finishing in any order would.
    results: list[ShardResult] = [
        backend.write_shard(prefix, s, g) for s, g in reversed(list(zip(specs, shards, strict=True)))
    ]
    try:
        backend.commit(prefix, sorted(results, key=lambda r: r.spec.shard_id))
    except BaseException:
        backend.abort(prefix, save_id)
        raise


def test_full_entries_are_byte_identical_to_tensorflows() -> None:
    """TensorFlow's merged index of the `sliced` fixture: its full entries re-encode to the same bytes."""
    table = dict(read_table(Path(tfcases.prefix("sliced") + ".index").read_bytes(), "fixture")[1:])
    full = {k: v for k, v in table.items() if decode_entry(v, "fixture").slices}
    assert len(full) == 2
    for value in full.values():
        e = decode_entry(value, "fixture")
        assert encode_sliced_entry(e.dtype, e.shape, e.slices, e.shard_id) == value


def test_slices_are_written_as_tensorflow_slice_entries(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [rows(0, 5), rows(5, 12), WriteItem("plain", np.ones(3))])
    entries = index_entries(prefix)
    full = decode_entry(entries[b"t"], "t")
    assert (full.shape, full.size, full.slices) == ((12, 8), 0, (((0, 5), (0, 8)), ((5, 7), (0, 8))))
    piece = decode_entry(entries[encode_slice_key(b"t", [(5, 7), (0, 8)])], "piece")
    assert (piece.shape, piece.size) == ((5 * 0 + 7, 8), 7 * 8 * 4)
    with backend.open_reader(prefix) as reader:
        assert reader.keys() == ["plain", "t"]
        np.testing.assert_array_equal(reader.read("t"), FULL)


def test_slices_from_several_shards_merge_deterministically(backend: BundleBackend, tmp_path: Path) -> None:
    cuts = [[rows(8, 12), rows(0, 2)], [rows(2, 5)], [rows(5, 8), WriteItem("other", np.zeros(2))]]
    save_by_shards(backend, str(tmp_path / "a"), cuts)
    save_by_shards(backend, str(tmp_path / "b"), [cuts[2], cuts[0], cuts[1]])
    a, b = index_entries(str(tmp_path / "a")), index_entries(str(tmp_path / "b"))
    # The same slices in another shard order: the same full entry (slices sorted by offset).
    starts = [s[0][0] for s in decode_entry(a[b"t"], "a").slices]
    assert starts == [0, 2, 5, 8] and decode_entry(b[b"t"], "b").slices == decode_entry(a[b"t"], "a").slices
    for p in ("a", "b"):
        with backend.open_reader(str(tmp_path / p)) as reader:
            np.testing.assert_array_equal(reader.read("t"), FULL)


@pytest.mark.parametrize(
    ("shards", "match"),
    [
        ([[rows(0, 6)], [rows(5, 12)]], r"the slices '12 8 0,6:0,8' and '12 8 5,7:0,8' of 't' overlap"),
        ([[rows(0, 6)], [rows(0, 6)]], r"slice \[\(0, 6\), \(0, 8\)\] of tensor 't' was saved by more than one shard"),
        ([[rows(0, 6)], [rows(7, 12)]], r"slices saved for 't' cover 88 of its 96 elements"),
        ([[rows(0, 6)], [WriteItem("t", FULL)]], r"tensor 't' was saved both whole and as slices"),
        (
            [[rows(0, 6)], [WriteItem("t", FULL[6:].astype(np.float64), TensorSlice((12, 8), (6, 0), (6, 8)))]],
            r"the slices of tensor 't' disagree",
        ),
    ],
)
def test_commit_refuses_bad_coverage(backend: BundleBackend, prefix: str, shards: Any, match: str) -> None:
    with pytest.raises(tp.TrackableError, match=match):
        save_by_shards(backend, prefix, shards)
    assert not backend.exists(prefix)
    assert not [n for n in os.listdir(os.path.dirname(prefix)) if not n.startswith(".")]


def test_a_single_shard_must_hold_every_slice(backend: BundleBackend, prefix: str) -> None:
    with pytest.raises(tp.TrackableError, match=r"bundle: the slices saved for 't' cover 40 of its 96"):
        backend.save(prefix, [rows(0, 5)])
    assert not backend.exists(prefix)


def test_empty_and_whole_slices(backend: BundleBackend, prefix: str) -> None:
    empty = WriteItem("t", FULL[:0], TensorSlice((12, 8), (12, 0), (0, 8)))
    whole = WriteItem("w", FULL, TensorSlice.full(FULL.shape))
    backend.save(prefix, [empty, rows(0, 12), whole])
    entries = index_entries(prefix)
    assert not decode_entry(entries[b"w"], "w").slices  # a whole slice is a plain entry, as in TensorFlow
    with backend.open_reader(prefix) as reader:
        np.testing.assert_array_equal(reader.read("w"), FULL)


# ------------------------------------------------------------------ large tensors
def data_files(prefix: str) -> list[str]:
    d, base = os.path.split(prefix)
    return sorted(n for n in os.listdir(d) if n.startswith(base + ".data-"))


def test_large_tensors_are_split_across_data_files(backend: BundleBackend, prefix: str) -> None:
    big = np.arange(64 * 32, dtype=np.float64).reshape(64, 32)  # 16 KiB, 256-byte rows
    items = [WriteItem("big", big), WriteItem("small", np.ones(4, np.int32)), WriteItem("s", np.array(b"x", object))]
    backend.save(prefix, items, CheckpointOptions(max_shard_bytes=4096, num_writers=2))
    files = data_files(prefix)
    assert len(files) >= 4
    assert all(os.path.getsize(os.path.join(os.path.dirname(prefix), f)) <= 4096 for f in files)
    entry = decode_entry(index_entries(prefix)[b"big"], "big")
    assert len(entry.slices) == 4 and {s[0][1] for s in entry.slices} == {16}
    with backend.open_reader(prefix) as reader:
        np.testing.assert_array_equal(reader.read("big"), big)
        np.testing.assert_array_equal(reader.read_many([("big", None)])[0], big)


def test_split_without_a_bound_writes_whole_tensors(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("big", FULL)])
    assert not decode_entry(index_entries(prefix)[b"big"], "big").slices


def test_split_on_s3(s3_bucket: str, s3_storage_options: dict[str, Any]) -> None:
    big = np.random.default_rng(0).standard_normal((40, 100)).astype(np.float32)  # 400-byte rows
    root = tp.AutoTrackable()
    root.big = tp.Variable(big)
    opts = CheckpointOptions(storage_options=s3_storage_options, max_shard_bytes=4000)
    path = tp.Checkpoint(model=root).write(f"{s3_bucket}/split/ckpt", opts)
    names = [
        n.rsplit("/", 1)[-1] for n in make_s3_fs(s3_storage_options).ls(f"{s3_bucket}/split".removeprefix("s3://"))
    ]
    assert len([n for n in names if ".data-" in n]) >= 4
    with tp.load_checkpoint(path, opts) as reader:
        np.testing.assert_array_equal(reader.get_tensor("model/big/.ATTRIBUTES/VARIABLE_VALUE"), big)
    target = tp.AutoTrackable()
    target.big = tp.Variable(np.zeros_like(big))
    tp.Checkpoint(model=target).read(path, opts).assert_consumed()
    np.testing.assert_array_equal(target.big.numpy(), big)


# ------------------------------------------------------------------ reading parts
class CountingFiles(LocalFiles):
    """Local files counting the bytes read from data files (what a restore fetches from the store)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_bytes = 0

    def _count(self, path: str, n: int) -> None:
        if ".data-" in path:
            self.data_bytes += n

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        self._count(path, out.nbytes)
        super().read_into(path, offset, out)

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        self._count(path, sum(out.nbytes for _, out in ranges))
        super().read_ranges(path, ranges)


def random_parts(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> list[TensorSlice]:
    out = []
    for _ in range(n):
        offset = tuple(int(rng.integers(0, d)) for d in shape)
        out.append(
            TensorSlice(
                shape, offset, tuple(int(rng.integers(1, d - o + 1)) for d, o in zip(shape, offset, strict=True))
            )
        )
    return out


@pytest.mark.parametrize("ranged", [True, False])
def test_read_slice_of_any_part_matches_numpy(tmp_path: Path, ranged: bool) -> None:
    caps = None if ranged else Capabilities(atomic_rename=True, ranged_reads=False)
    backend = BundleBackend(LocalFiles(capabilities=caps))
    full = np.random.default_rng(0).standard_normal((9, 6, 1100)).astype(np.float32)  # 4400-byte runs
    s = full.shape
    items = [
        WriteItem("x", full[:4], TensorSlice(s, (0, 0, 0), (4, 6, 1100))),
        WriteItem("x", full[4:, :2], TensorSlice(s, (4, 0, 0), (5, 2, 1100))),
        WriteItem("x", full[4:, 2:], TensorSlice(s, (4, 2, 0), (5, 4, 1100))),
        WriteItem("whole", full),
        WriteItem("text", np.array([[b"a", b"bb"], [b"ccc", b""]], object), TensorSlice((3, 2), (0, 0), (2, 2))),
        WriteItem("text", np.array([[b"d", b"e"]], object), TensorSlice((3, 2), (2, 0), (1, 2))),
    ]
    backend.save(str(tmp_path / "c"), items)
    rng = np.random.default_rng(1)
    with backend.open_reader(str(tmp_path / "c")) as reader:
        for key in ("x", "whole"):
            for part in random_parts(rng, s, 150):
                np.testing.assert_array_equal(reader.read_slice(key, part.offset, part.shape), full[part.index])
        out = np.empty((3, 6, 1100), np.float32)
        assert reader.read_slice("x", (3, 0, 0), (3, 6, 1100), out) is out
        np.testing.assert_array_equal(out, full[3:6])
        assert reader.read_slice("text", (1, 1), (2, 1)).tolist() == [[b""], [b"e"]]
        with pytest.raises(ValueError, match="outside the full shape"):
            reader.read_slice("x", (8, 0, 0), (2, 6, 1100))
        with pytest.raises(tp.ShapeMismatchError, match=r"into an array of shape \(2, 6, 1100\)"):
            reader.read_slice("x", (3, 0, 0), (3, 6, 1100), np.empty((2, 6, 1100), np.float32))


def test_read_slice_of_tensorflows_sliced_fixture() -> None:
    """TensorFlow's own split (it also cuts the second dimension) read back in parts."""
    expected = tfcases.checkpoints("sliced")[0]
    backend = BundleBackend(LocalFiles())
    rng = np.random.default_rng(2)
    with backend.open_reader(tfcases.prefix("sliced")) as reader:
        for key in ("model/w/.ATTRIBUTES/VARIABLE_VALUE", "model/b/.ATTRIBUTES/VARIABLE_VALUE"):
            full = expected.tensor(key)
            for part in random_parts(rng, full.shape, 40):
                np.testing.assert_array_equal(reader.read_slice(key, part.offset, part.shape), full[part.index])


def test_damaged_whole_piece_is_caught_by_its_checksum(tmp_path: Path) -> None:
    backend = BundleBackend(LocalFiles())
    prefix = str(tmp_path / "c")
    backend.save(prefix, [rows(0, 6), rows(6, 12)])
    data = next(tmp_path.glob("c.data-*"))
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    with backend.open_reader(prefix) as reader, pytest.raises(tp.DataLossError, match="CRC-32C mismatch"):
        reader.read_slice("t", (0, 0), (12, 8))


def cuts(n: int, length: int) -> list[tuple[int, int]]:
    """``n`` uneven row ranges covering ``0..length``."""
    bounds = [round(length * i / n + (i % 2) * 3) if 0 < i < n else length * i // n for i in range(n + 1)]
    return list(itertools.pairwise(bounds))


TABLE = np.random.default_rng(3).standard_normal((1000, 256)).astype(np.float32)  # 1 KiB rows


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_n_to_m_repartition_reads_only_each_parts_bytes(tmp_path: Path, n: int) -> None:
    """Written by N writers (one shard each), restored by M readers with another partitioning."""
    files = CountingFiles()
    backend = BundleBackend(files)
    prefix = str(tmp_path / "c")
    save_by_shards(backend, prefix, [[rows(a, b, TABLE)] for a, b in cuts(n, len(TABLE))])
    for m in (1, 2, 3, 4):
        for a, b in cuts(m, len(TABLE)) if m != n else list(reversed(cuts(m, len(TABLE)))):
            with backend.open_reader(prefix) as reader:
                files.data_bytes = 0
                got = reader.read_slice("t", (a, 0), (b - a, 256))
            np.testing.assert_array_equal(got, TABLE[a:b])
            assert files.data_bytes <= 1.1 * got.nbytes, (n, m, a, b, files.data_bytes, got.nbytes)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_n_to_m_restore_of_sliced_variables(tmp_path: Path, n: int) -> None:
    """The same through checkpoints: N slices saved under one object path, M sliced Variables restored."""
    root = tp.AutoTrackable()
    root.v = Partitioned(TABLE, cuts(n, len(TABLE)))
    path = tp.Checkpoint(model=root).write(str(tmp_path / "ckpt"), CheckpointOptions(num_writers=n))
    for m in (1, 2, 3, 4):
        for a, b in cuts(m, len(TABLE)):
            rank = tp.AutoTrackable()
            rank.v = tp.Variable(
                np.zeros((b - a, 256), np.float32),
                save_slice_info=tp.SaveSliceInfo("v", TABLE.shape, (a, 0), (b - a, 256)),
            )
            tp.Checkpoint(model=rank).read(path).assert_consumed()
            np.testing.assert_array_equal(rank.v.numpy(), TABLE[a:b])


class Partitioned(Trackable):
    """One object holding a tensor as row slices under one attribute ({spec: array}, TensorFlow's form)."""

    def __init__(self, full: np.ndarray[Any, Any], bounds: list[tuple[int, int]]) -> None:
        self.parts = {TensorSlice(full.shape, (a, 0), (b - a, full.shape[1])).spec: full[a:b].copy() for a, b in bounds}

    def _serialize_to_tensors(self) -> dict[str, Any]:
        return {VARIABLE_VALUE_KEY: dict(self.parts)}


def test_s3_sliced_restore_reads_only_its_bytes(s3_bucket: str, s3_storage_options: dict[str, Any]) -> None:
    """On S3 the bytes fetched by GET requests are counted at the store's client call."""

    class CountingS3(S3Files):
        data_bytes = 0

        async def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
            if ".data-" in key:
                CountingS3.data_bytes += out.nbytes
            await super().object_get_range(bucket, key, start, out)

    made = create_files(CheckpointOptions(storage_options=s3_storage_options))
    backend = BundleBackend(CountingS3(made.fs, made.transfer))
    prefix = f"{s3_bucket}/parts/ckpt"
    save_by_shards(backend, prefix, [[rows(a, b, TABLE)] for a, b in cuts(4, len(TABLE))])
    for a, b in cuts(3, len(TABLE)):
        CountingS3.data_bytes = 0
        with backend.open_reader(prefix) as reader:
            got = reader.read_slice("t", (a, 0), (b - a, 256))
        np.testing.assert_array_equal(got, TABLE[a:b])
        assert 0 < CountingS3.data_bytes <= 1.1 * got.nbytes
    backend.close()


@pytest.mark.parametrize("checkpoint", ["model.ckpt-1", "model.ckpt-3"])
@pytest.mark.parametrize("m", [1, 3, 6])
def test_tensorflow_partitioned_variable_restores_into_another_partitioning(checkpoint: str, m: int) -> None:
    """TensorFlow 1's partitioned `embedding` (2 slices, by a plain and a sharded Saver) read by M sliced Variables."""
    case = "tf1_saver"
    expected = next(c for c in tfcases.checkpoints(case) if c.prefix.endswith(checkpoint))
    embedding = expected.tensor("embedding")
    assert embedding.shape == (6, 3)
    for a, b in itertools.pairwise([6 * i // m for i in range(m + 1)]):
        model = tp.AutoTrackable()
        model.part = tp.Variable(
            np.zeros((b - a, 3), np.float32),
            name=f"embedding/part_{a}",
            save_slice_info=tp.SaveSliceInfo("embedding", [6, 3], [a, 0], [b - a, 3]),
        )
        tp.Checkpoint(model=model).read(expected.prefix).assert_consumed()
        np.testing.assert_array_equal(model.part.numpy(), embedding[a:b])
        with tp.load_checkpoint(expected.prefix) as reader:
            np.testing.assert_array_equal(reader.get_slice("embedding", (a, 1), (b - a, 2)), embedding[a:b, 1:])
