"""Slices on Zarr: each writer stores its slices as arrays of their own, the commit lists them under the key."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.stores import LocalFiles
from trackpoint.backends.zarr import ZarrBackend
from trackpoint.backends.zarr._options import ZarrOptions
from trackpoint.storage import ShardResult, ShardSpec, StorageBackend, TensorSlice, WriteItem
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable

TABLE = np.random.default_rng(5).standard_normal((1000, 256)).astype(np.float32)  # 1 KiB rows


def rows(a: int, b: int, full: np.ndarray[Any, Any] = TABLE, key: str = "t") -> WriteItem:
    return WriteItem(key, full[a:b], TensorSlice(full.shape, (a, *[0] * (full.ndim - 1)), (b - a, *full.shape[1:])))


def cuts(n: int, length: int) -> list[tuple[int, int]]:
    """``n`` uneven row ranges covering ``0..length``."""
    bounds = [round(length * i / n + (i % 2) * 3) if 0 < i < n else length * i // n for i in range(n + 1)]
    return list(itertools.pairwise(bounds))


def save_by_shards(backend: StorageBackend, prefix: str, shards: list[list[WriteItem]]) -> None:
    """The save protocol as several processes run it: one shard per writer, one commit of every manifest."""
    save_id = uuid.uuid4().hex
    backend.begin(prefix, save_id)
    specs = [ShardSpec(i, len(shards), save_id) for i in range(len(shards))]
    results: list[ShardResult] = [
        backend.write_shard(prefix, s, g) for s, g in reversed(list(zip(specs, shards, strict=True)))
    ]
    try:
        backend.commit(prefix, sorted(results, key=lambda r: r.spec.shard_id))
    except BaseException:
        backend.abort(prefix, save_id)
        raise


def table_entry(where: Any, prefix: str, key: str) -> dict[str, Any]:
    doc = json.loads(where.raw.cat_file(where.raw_path(prefix) + ".zarr/zarr.json"))
    entry: dict[str, Any] = doc["attributes"]["trackpoint"]["tensors"][key]
    return entry


def test_slices_from_several_writers_merge(where: Any) -> None:
    strings = np.array([[b"a", b"bb"], [b"", b"dddd"], [b"e", b"f"]], object)
    shards = [
        [rows(600, 1000), rows(0, 1, strings, "s")],
        [rows(0, 250), rows(1, 3, strings, "s")],
        [rows(250, 600), WriteItem("plain", np.arange(3))],
    ]
    prefix = where.prefix("a")
    save_by_shards(where.backend, prefix, shards)
    entry = table_entry(where, prefix, "t")
    # Listed in offset order, whatever order the shards were written and merged in.
    assert (entry["shape"], [s["slice_offset"] for s in entry["slices"]]) == ([1000, 256], [[0, 0], [250, 0], [600, 0]])
    with where.backend.open_reader(prefix) as reader:
        assert reader.keys() == ["plain", "s", "t"]
        assert reader.info("t").shape == (1000, 256)
        np.testing.assert_array_equal(reader.read("t"), TABLE)
        assert reader.read("s").tolist() == strings.tolist()
        np.testing.assert_array_equal(reader.read_slice("t", (240, 10), (20, 30)), TABLE[240:260, 10:40])
        assert reader.read_slice("s", (0, 1), (2, 1)).tolist() == [[b"bb"], [b"dddd"]]


@pytest.mark.parametrize(
    ("shards", "match"),
    [
        (
            [[rows(0, 600)], [rows(500, 1000)]],
            r"the slices '1000 256 0,600:0,256' and '1000 256 500,500:0,256' of 't' overlap",
        ),
        ([[rows(0, 600)], [rows(700, 1000)]], r"slices saved for 't' cover 230400 of its 256000 elements"),
        ([[rows(0, 1000)]], None),
        ([[rows(0, 600)], [WriteItem("t", TABLE)]], r"tensor 't' appears in two shards"),
    ],
)
def test_commit_checks_the_coverage(local: Any, shards: Any, match: str | None) -> None:
    prefix = local.prefix()
    if match is None:
        save_by_shards(local.backend, prefix, shards)
        assert local.backend.exists(prefix)
        return
    with pytest.raises(tp.CheckpointError, match=match):
        save_by_shards(local.backend, prefix, shards)
    assert not local.backend.exists(prefix)


class Partitioned(Trackable):
    """One object holding a tensor as row slices under one attribute ({spec: array}, TensorFlow's form)."""

    def __init__(self, full: np.ndarray[Any, Any], bounds: list[tuple[int, int]]) -> None:
        self.parts = {TensorSlice(full.shape, (a, 0), (b - a, full.shape[1])).spec: full[a:b].copy() for a, b in bounds}

    def _serialize_to_tensors(self) -> dict[str, Any]:
        return {VARIABLE_VALUE_KEY: dict(self.parts)}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_n_to_m_restore_of_sliced_variables(where: Any, n: int) -> None:
    root = tp.AutoTrackable()
    root.v = Partitioned(TABLE, cuts(n, len(TABLE)))
    path = tp.Checkpoint(model=root).write(where.prefix(), where.options)
    for m in (1, 2, 3, 4):
        for a, b in cuts(m, len(TABLE)):
            rank = tp.AutoTrackable()
            rank.v = tp.Variable(
                np.zeros((b - a, 256), np.float32),
                save_slice_info=tp.SaveSliceInfo("v", TABLE.shape, (a, 0), (b - a, 256)),
            )
            tp.Checkpoint(model=rank).read(path, where.options).assert_consumed()
            np.testing.assert_array_equal(rank.v.numpy(), TABLE[a:b])


class CountingFiles(LocalFiles):
    """Local files counting the bytes read from chunk objects."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chunk_bytes = 0

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        self.chunk_bytes += out.nbytes if "/c." in path else 0
        super().read_into(path, offset, out)

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        self.chunk_bytes += sum(out.nbytes for _, out in ranges) if "/c." in path else 0
        super().read_ranges(path, ranges)


@pytest.mark.parametrize("sliced", [False, True])
def test_a_part_reads_only_the_chunks_it_needs(tmp_path: Path, sliced: bool) -> None:
    files = CountingFiles()
    # Arrays of their own (not packed), in chunks of 16 rows.
    backend = ZarrBackend(files, ZarrOptions.from_mapping({"chunk_bytes": 16 * 1024, "pack_bytes": 0}))
    prefix = str(tmp_path / "ckpt")
    if sliced:
        save_by_shards(backend, prefix, [[rows(a, b)] for a, b in cuts(4, len(TABLE))])
    else:
        save_by_shards(backend, prefix, [[WriteItem("t", TABLE)]])
    for a, b in cuts(3, len(TABLE)):
        with backend.open_reader(prefix) as reader:
            files.chunk_bytes = 0
            got = reader.read_slice("t", (a, 0), (b - a, 256))
        np.testing.assert_array_equal(got, TABLE[a:b])
        # Whole 16-row chunks: what lies beyond the part is less than a chunk at each end.
        assert got.nbytes <= files.chunk_bytes <= 1.1 * got.nbytes


def test_single_process_slices_must_cover(local: Any) -> None:
    root = tp.AutoTrackable()
    root.v = Partitioned(TABLE, [(0, 10)])
    with pytest.raises(tp.TrackableError, match="cover 2560 of its 256000 elements"):
        tp.Checkpoint(model=root).write(local.prefix(), local.options)
    assert not local.backend.exists(local.prefix())
