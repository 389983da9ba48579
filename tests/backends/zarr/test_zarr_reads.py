"""Restore reads only what it needs, into ``out`` where it can, and detects corruption."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trackpoint.backends.stores import LocalFiles
from trackpoint.backends.zarr import ZarrBackend, encode_key
from trackpoint.errors import CheckpointKeyError, DataLossError, DTypeMismatchError, ShapeMismatchError, StorageError
from trackpoint.storage import CheckpointOptions, CheckpointReader, WriteItem

_OWN = CheckpointOptions(backend_options={"pack_bytes": 0, "chunk_bytes": 64 * 1024})
#: Tensors of 80 KiB in arrays of their own (two chunks each); tensors under 1 KiB packed.
_OWN_SMALL_PACKED = CheckpointOptions(backend_options={"pack_bytes": 1024, "chunk_bytes": 64 * 1024})


def _save(where: Any) -> dict[str, np.ndarray[Any, Any]]:
    tensors = {
        "keep": np.arange(60_000, dtype=np.float64).reshape(300, 200),
        "victim": np.arange(50_000, dtype=np.int32),
    }
    where.backend.save(where.prefix(), [WriteItem(k, v) for k, v in tensors.items()], _OWN)
    return tensors


def _data_dir(where: Any) -> str:
    group = where.raw_path(where.prefix()) + ".zarr"
    subs = [p for p in where.raw.ls(group, detail=False) if p.rstrip("/").rsplit("/", 1)[-1].startswith("v-")]
    return subs[0].rstrip("/") if subs else group


def _chunks(where: Any, name: str) -> list[str]:
    return sorted(p for p in where.raw.find(f"{_data_dir(where)}/{name}") if "/c." in p)


def test_reading_one_tensor_ignores_a_destroyed_neighbour(where: Any) -> None:
    tensors = _save(where)
    # Remove the other array's metadata and overwrite its chunks with garbage.
    victim = f"{_data_dir(where)}/{encode_key('victim')}"
    for path in _chunks(where, "victim"):
        where.raw.pipe_file(path, b"garbage")
    where.raw.rm_file(f"{victim}/zarr.json")
    with where.backend.open_reader(where.prefix()) as reader:
        np.testing.assert_array_equal(reader.read("keep"), tensors["keep"])
        with pytest.raises(DataLossError, match="zarr: tensor 'victim' of checkpoint .* is corrupted"):
            reader.read("victim")


def test_a_flipped_bit_is_a_data_loss_error(where: Any) -> None:
    _save(where)
    path = _chunks(where, "keep")[1]
    data = bytearray(where.raw.cat_file(path))
    data[len(data) // 2] ^= 0x10
    where.raw.pipe_file(path, bytes(data))
    with where.backend.open_reader(where.prefix()) as reader:
        with pytest.raises(DataLossError, match="'keep'.*corrupted or incomplete"):
            reader.read("keep")


def test_a_corrupted_packed_shard_is_detected(local: Any) -> None:
    local.backend.save(local.prefix(), [WriteItem("small", np.arange(10))])
    (path,) = _chunks(local, "_packed-00000")
    data = bytearray(local.raw.cat_file(path))
    data[0] ^= 0xFF
    local.raw.pipe_file(path, bytes(data))
    with local.backend.open_reader(local.prefix()) as reader, pytest.raises(DataLossError, match="'small'"):
        reader.read("small")


def test_read_into_out_fills_it_in_place(local: Any) -> None:
    tensors = _save(local)
    out = np.full((300, 200), -1.0)
    with local.backend.open_reader(local.prefix()) as reader:
        assert reader.read("keep", out=out) is out
    np.testing.assert_array_equal(out, tensors["keep"])


def test_read_into_a_non_contiguous_out(local: Any) -> None:
    tensors = _save(local)
    base = np.zeros((300, 400))
    out = base[:, ::2]
    with local.backend.open_reader(local.prefix()) as reader:
        assert reader.read("keep", out=out) is out
    np.testing.assert_array_equal(out, tensors["keep"])


def test_packed_reads_fill_out_too(local: Any) -> None:
    local.backend.save(local.prefix(), [WriteItem("s", np.arange(12, dtype=np.int16).reshape(3, 4))])
    out = np.zeros((3, 4), np.int16)
    with local.backend.open_reader(local.prefix()) as reader:
        (got,) = reader.read_many([("s", out)])
    assert got is out
    np.testing.assert_array_equal(out, np.arange(12).reshape(3, 4))


def test_out_of_the_wrong_dtype_or_shape_is_refused(local: Any) -> None:
    _save(local)
    with local.backend.open_reader(local.prefix()) as reader:
        with pytest.raises(DTypeMismatchError, match="cannot read 'keep' \\(float64\\) into an array of dtype float32"):
            reader.read("keep", out=np.zeros((300, 200), np.float32))
        with pytest.raises(ShapeMismatchError, match="cannot read 'keep' \\(300, 200\\) into an array of shape"):
            reader.read("keep", out=np.zeros((200, 300)))


def test_missing_key_and_closed_reader(local: Any) -> None:
    _save(local)
    reader = local.backend.open_reader(local.prefix())
    with pytest.raises(CheckpointKeyError, match="has no tensor 'nope'"):
        reader.read("nope")
    assert reader.has("keep") and not reader.has("nope")
    reader.close()
    with pytest.raises(StorageError, match="reader of .* is closed"):
        reader.read("keep")


def test_read_many_mixes_packed_and_own_arrays_in_request_order(local: Any) -> None:
    items = [WriteItem(f"p{i}", np.full(3, i)) for i in range(50)] + [WriteItem("big", np.arange(100_000))]
    local.backend.save(local.prefix(), items)
    order = ["big", "p49", "p0", "p7", "big"]
    with local.backend.open_reader(local.prefix()) as reader:
        got = reader.read_many([(k, None) for k in order])
    expected = {it.key: it.array for it in items}
    assert len(got) == len(order)
    for k, v in zip(order, got, strict=True):
        np.testing.assert_array_equal(v, expected[k])


def test_reader_survives_a_newer_save_at_another_prefix(local: Any) -> None:
    tensors = _save(local)
    reader = local.backend.open_reader(local.prefix())
    local.backend.save(local.prefix("other"), [WriteItem("keep", np.zeros(3))])
    np.testing.assert_array_equal(reader.read("keep"), tensors["keep"])
    reader.close()


class _RecordingFiles(LocalFiles):
    """Local files recording which thread reads each chunk object, slowly enough for reads to overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        if "/c." not in path:
            return super().read_ranges(path, ranges)
        with self.lock:
            self.threads.add(threading.current_thread().name)
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.01)
            super().read_ranges(path, ranges)
        finally:
            with self.lock:
                self.now -= 1


def test_read_many_reads_tensors_with_own_arrays_concurrently(tmp_path: Path) -> None:
    items = [WriteItem(f"t{i}", np.arange(i * 1000, i * 1000 + 20_000, dtype=np.float32)) for i in range(8)]
    items.append(WriteItem("small", np.arange(5, dtype=np.int64)))
    files = _RecordingFiles()
    backend = ZarrBackend(files)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, items, _OWN_SMALL_PACKED)
    files.threads.clear()
    files.most = 0
    outs = [np.zeros_like(it.array) for it in items]
    with backend.open_reader(prefix) as reader:
        got = reader.read_many([(it.key, out) for it, out in zip(items, outs, strict=True)])
    for it, out, value in zip(items, outs, got, strict=True):
        assert value is out
        np.testing.assert_array_equal(out, it.array)
    assert files.most > 1
    assert len({name for name in files.threads if name.startswith("trackpoint-zarr-read")}) > 1


def _saved(
    files: LocalFiles, items: list[WriteItem], tmp_path: Path
) -> tuple[ZarrBackend, str, list[np.ndarray[Any, Any]]]:
    """``items`` saved through ``files`` (small ones packed, 64 KiB chunks): the backend, the prefix, zeroed outs."""
    backend = ZarrBackend(files)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, items, _OWN_SMALL_PACKED)
    return backend, prefix, [np.zeros_like(it.array) for it in items]


def _read_back(reader: CheckpointReader, items: list[WriteItem], outs: list[np.ndarray[Any, Any]]) -> None:
    """Read every item into its out with one ``read_many`` and check the values."""
    reader.read_many([(it.key, out) for it, out in zip(items, outs, strict=True)])
    for it, out in zip(items, outs, strict=True):
        np.testing.assert_array_equal(out, it.array)


class _CountingSizes(LocalFiles):
    """Records the chunk paths asked through ``size`` and through ``sizes``."""

    def __init__(self) -> None:
        super().__init__()
        self.one: list[str] = []
        self.together: list[list[str]] = []

    def size(self, path: str) -> int | None:
        if "/c." in path:
            self.one.append(path)
        return super().size(path)

    def sizes(self, paths: Sequence[str]) -> list[int | None]:
        self.together.append([p for p in paths if "/c." in p])
        return [super(_CountingSizes, self).size(p) for p in paths]


def test_read_many_asks_the_sizes_of_all_chunk_objects_together(tmp_path: Path) -> None:
    # Three arrays of 80 KB in 64 KiB chunks: two chunk objects each.
    items = [WriteItem(f"t{i}", np.arange(20_000, dtype=np.float32) + i) for i in range(3)]
    files = _CountingSizes()
    backend, prefix, outs = _saved(files, items, tmp_path)
    files.together.clear()  # the save's own (its commit checks its shard markers): only the reads count
    with backend.open_reader(prefix) as reader:  # one tensor alone: its two chunks together
        np.testing.assert_array_equal(reader.read("t2"), items[2].array)
        assert [len(paths) for paths in files.together] == [2] and files.one == []
    files.together.clear()
    with backend.open_reader(prefix) as reader:
        _read_back(reader, items, outs)
        assert [len(paths) for paths in files.together] == [6] and files.one == []
        # Known from then on: reading them again asks nothing.
        reader.read_many([(it.key, out) for it, out in zip(items, outs, strict=True)])
        assert len(files.together) == 1 and files.one == []
    # A chunk of the wrong size is still refused, named.
    (chunk,) = [p for p in files.together[0] if "/t1/" in p and p.endswith("c.1")]
    Path(chunk).write_bytes(Path(chunk).read_bytes() + b"x")
    with backend.open_reader(prefix) as reader, pytest.raises(DataLossError, match=r"chunk .*c\.1' holds"):
        reader.read_many([(it.key, out) for it, out in zip(items, outs, strict=True)])


class _OwnWaitsForPacked(LocalFiles):
    """Chunk reads of arrays of their own wait (up to 2 s) until a packed shard object has been read."""

    def __init__(self) -> None:
        super().__init__()
        self.packed_read = threading.Event()
        self.waited_out = 0

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        if "/_packed-" in path:
            super().read_ranges(path, ranges)
            self.packed_read.set()
            return
        if "/c." in path and not self.packed_read.wait(2.0):
            self.waited_out += 1
        super().read_ranges(path, ranges)


def test_packed_tensors_are_read_while_arrays_of_their_own_are(tmp_path: Path) -> None:
    items = [WriteItem(f"t{i}", np.arange(20_000, dtype=np.float32) + i) for i in range(4)]
    items += [WriteItem(f"s{i}", np.full(10, i, np.int32)) for i in range(30)]
    files = _OwnWaitsForPacked()
    backend, prefix, outs = _saved(files, items, tmp_path)
    with backend.open_reader(prefix) as reader:
        _read_back(reader, items, outs)
    # Read only after every own array had finished, the packed tensors would have kept these waiting.
    assert files.waited_out == 0


def test_a_failed_concurrent_read_names_its_tensor(tmp_path: Path) -> None:
    items = [WriteItem(f"t{i}", np.arange(20_000, dtype=np.float32) + i) for i in range(6)]
    backend = ZarrBackend(LocalFiles())
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, items, _OWN_SMALL_PACKED)
    chunk = next(p for p in sorted(tmp_path.rglob("*")) if p.is_file() and "/t3/c." in p.as_posix())
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0x01
    chunk.write_bytes(bytes(data))
    with backend.open_reader(prefix) as reader:
        with pytest.raises(DataLossError, match="zarr: tensor 't3' of checkpoint .* is corrupted"):
            reader.read_many([(it.key, np.zeros_like(it.array)) for it in items])


# Packed arrays cut small: shard objects of 4 KiB holding inner chunks of 1 KiB.
_SMALL_PACKED = {"pack_bytes": 1024, "chunk_bytes": 4096, "packed_chunk_bytes": 1024}


@pytest.mark.parametrize(
    "options",
    [{}, {"checksum": False}, {"compressor": "zstd"}],
    ids=["plain", "no-checksum", "zstd"],
)
def test_read_many_of_packed_tensors_across_runs_shards_and_inner_chunks(
    local: Any, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    from trackpoint.backends.zarr import _reader

    # Runs of at most 1,500 bytes: every run starts and ends inside inner chunks, some span shards.
    monkeypatch.setattr(_reader, "_MAX_RUN", 1500)
    rng = np.random.default_rng(3)
    dtypes = [np.float32, np.int64, np.uint8, np.float16]
    items = [
        WriteItem(f"t{i:03d}", rng.integers(0, 100, size=int(rng.integers(1, 90))).astype(dtypes[i % 4]))
        for i in range(120)
    ]
    local.backend.save(local.prefix(), items, CheckpointOptions(backend_options={**_SMALL_PACKED, **options}))
    order = list(rng.permutation(len(items)))
    outs = {i: np.full_like(items[i].array, 7) for i in order[::2]}
    with local.backend.open_reader(local.prefix()) as reader:
        got = reader.read_many([(items[i].key, outs.get(i)) for i in order])
    for i, value in zip(order, got, strict=True):
        if i in outs:
            assert value is outs[i]
        assert value.dtype == items[i].array.dtype
        np.testing.assert_array_equal(value, items[i].array, err_msg=items[i].key)


def _packed_shard(local: Any) -> str:
    """The first shard object of the first packed array: four inner chunks of 1 KiB, all present."""
    return _chunks(local, "_packed-00000")[0]


def test_a_flipped_bit_in_a_packed_inner_chunk_fails_read_many(local: Any) -> None:
    items = [WriteItem(f"t{i:03d}", np.arange(50, dtype=np.int32) + i) for i in range(60)]
    local.backend.save(local.prefix(), items, CheckpointOptions(backend_options=_SMALL_PACKED))
    path = _packed_shard(local)
    data = bytearray(local.raw.cat_file(path))
    data[1500] ^= 0x04  # inside the second inner chunk
    local.raw.pipe_file(path, bytes(data))
    with local.backend.open_reader(local.prefix()) as reader:
        with pytest.raises(DataLossError, match=r"inner chunk 1 of .* fails its CRC32C checksum"):
            reader.read_many([(it.key, np.zeros_like(it.array)) for it in items])


def test_a_shard_index_giving_an_inner_chunk_the_wrong_size_is_refused(local: Any) -> None:
    from trackpoint._crc32c import crc32c

    items = [WriteItem(f"t{i:03d}", np.arange(50, dtype=np.int32) + i) for i in range(60)]
    local.backend.save(local.prefix(), items, CheckpointOptions(backend_options=_SMALL_PACKED))
    path = _packed_shard(local)
    data = bytearray(local.raw.cat_file(path))
    # The index (offset, length per inner chunk, little-endian uint64; 4 inner chunks) and its CRC32C end the object.
    start = len(data) - (4 * 16 + 4)
    index = np.frombuffer(bytes(data[start:-4]), "<u8").copy().reshape(4, 2)
    index[2, 1] -= 1
    data[start:-4] = index.tobytes()
    data[-4:] = crc32c(index.tobytes()).to_bytes(4, "little")
    local.raw.pipe_file(path, bytes(data))
    with local.backend.open_reader(local.prefix()) as reader:
        with pytest.raises(DataLossError, match=r"inner chunk 2 of .* holds 1027 bytes, expected 1028"):
            reader.read_many([(it.key, None) for it in items])


def test_a_reader_open_across_an_overwrite_never_returns_the_new_checkpoints_bytes(tmp_path: Path) -> None:
    """An overwrite swaps a new group in at the path; the old reader's metadata must not decode its chunks.

    Their checksums match the new chunks, so without the check the float32 9.0s of the new checkpoint came
    back as float64 values of the old tensor's shape, and two reads could mix the two checkpoints.
    """
    import trackpoint as tp

    prefix = f"zarr://{tmp_path}/ckpt"
    tp.Checkpoint(w=tp.Variable(np.full((256, 64), 7.0)), b=tp.Variable(np.zeros(3))).write(prefix)
    reader = tp.load_checkpoint(prefix)
    assert reader.get_tensor("b/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [0.0, 0.0, 0.0]
    tp.Checkpoint(w=tp.Variable(np.full((512, 64), 9.0, np.float32)), b=tp.Variable(np.ones(3))).write(prefix)
    for key in ("w/.ATTRIBUTES/VARIABLE_VALUE", "b/.ATTRIBUTES/VARIABLE_VALUE"):
        with pytest.raises(
            DataLossError, match="was replaced while this reader had it open.*open the checkpoint again"
        ):
            reader.get_tensor(key)
    assert tp.load_checkpoint(prefix).get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE")[0, 0] == 9.0


def test_a_root_cut_short_is_data_loss_and_a_foreign_one_is_not_a_checkpoint(tmp_path: Path) -> None:
    from trackpoint.errors import InvalidCheckpointError

    backend = ZarrBackend(LocalFiles())
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, [WriteItem("t", np.arange(4.0))])
    root = tmp_path / "ckpt.zarr" / "zarr.json"
    raw = root.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 1, raw.index(b"trackpoint-zarr") + len("trackpoint-zarr") + 1):
        root.write_bytes(raw[:cut])
        with pytest.raises(DataLossError, match=r"root zarr.json of .* is truncated or damaged .* not valid JSON"):
            backend.open_reader(prefix)
    root.write_bytes(b"hello, not json")
    with pytest.raises(InvalidCheckpointError, match="its zarr.json is not valid JSON"):
        backend.open_reader(prefix)
