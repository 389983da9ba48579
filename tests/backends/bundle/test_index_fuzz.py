"""Mutated index files: the reader answers with a trackpoint error or correct data, never anything else.

Random bytes rarely get past the SSTable's per-block CRC-32C, so most cases
here are structure-aware: valid tables (fresh CRCs) whose header and entries
are mutated field by field, the way a buggy writer or a hostile file would
produce them. A smaller share flips, truncates or splices the raw bytes of
the index and of the entry protos. Seeds are fixed, so a failure names the
seed that reproduces it; the loop is bounded in time to stay fast.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.bundle._codec import encode_entry, encode_header
from trackpoint.backends.bundle._ordered_code import encode_slice_key
from trackpoint.backends.bundle._sstable import build_table, read_table
from trackpoint.backends.bundle.proto import tensor_bundle_pb2
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import CheckpointError, InvalidCheckpointError
from trackpoint.storage import WriteItem

pb: Any = tensor_bundle_pb2

#: Wall-clock budget of the random loop; every case runs at least ``_MIN_CASES`` times.
_BUDGET_S: Final = 3.0
_MIN_CASES: Final = 300

_DIMS: Final = (0, 1, 2, 3, 7, 2**31, 2**32 + 1, 2**40, 2**59, 2**62, 2**63 - 1, -1)
_SIZES: Final = (0, 1, 4, 8, 24, 2**31, 2**40, 2**63 - 1)
# Numeric, string, half/bfloat16/complex, resource/variant (unreadable) and unknown enum values.
_DTYPES: Final = (0, 1, 2, 3, 7, 9, 10, 14, 18, 19, 20, 21, 23, 24, 63, 64, 101, 1000)


def _valid(prefix: str) -> list[tuple[bytes, bytes]]:
    """A real checkpoint (numeric, string, empty, scalar tensors) plus a sliced tensor; its index entries."""
    BundleBackend(LocalFiles()).save(
        prefix,
        [
            WriteItem("f", np.arange(6, dtype=np.float32).reshape(2, 3)),
            WriteItem("s", np.array([b"ab", b"", b"xyz"], dtype=object)),
            WriteItem("e", np.zeros((0, 4), np.int64)),
            WriteItem("scalar", np.array(3.5)),
        ],
    )
    entries = read_table(Path(prefix + ".index").read_bytes(), "valid")
    # A partitioned tensor over the existing float data: two slices of one row each.
    meta = pb.BundleEntryProto(dtype=1)
    meta.shape.dim.add(size=2)
    meta.shape.dim.add(size=3)
    for start in (0, 1):
        extent = meta.slices.add().extent
        first = extent.add()
        first.start, first.length = start, 1
        extent.add()
    sliced = [
        (b"p", meta.SerializeToString()),
        (encode_slice_key(b"p", [(0, 1), (0, -1)]), _slice_entry(entries, b"f", shape=(1, 3), offset=0, size=12)),
        (encode_slice_key(b"p", [(1, 1), (0, -1)]), _slice_entry(entries, b"f", shape=(1, 3), offset=12, size=12)),
    ]
    return sorted([*entries, *sliced])


def _slice_entry(
    entries: list[tuple[bytes, bytes]], key: bytes, *, shape: tuple[int, ...], offset: int, size: int
) -> bytes:
    """An entry for part of ``key``'s bytes (its CRC will not match: reads must say so)."""
    msg = pb.BundleEntryProto()
    msg.ParseFromString(dict(entries)[key])
    return encode_entry(msg.dtype, shape, 0, offset, size, msg.crc32c)


def _mutate_entry(rng: random.Random, value: bytes) -> bytes:
    msg = pb.BundleEntryProto()
    msg.ParseFromString(value)
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(("dtype", "shape", "dim", "shard", "offset", "size", "crc", "slices", "rank"))
        if field == "dtype":
            msg.dtype = rng.choice(_DTYPES)
        elif field == "shape":
            del msg.shape.dim[:]
            for _ in range(rng.randint(0, 4)):
                msg.shape.dim.add(size=rng.choice(_DIMS))
            if rng.random() < 0.5:
                msg.shape.dim.add(size=0)  # a zero beside huge dims: an empty but "huge" tensor
        elif field == "dim" and msg.shape.dim:
            rng.choice(msg.shape.dim).size = rng.choice(_DIMS)
        elif field == "rank":
            del msg.shape.dim[:]
            for _ in range(rng.choice((33, 64, 65, 200))):
                msg.shape.dim.add(size=rng.choice((0, 1, 1, 2)))
            msg.shape.unknown_rank = rng.random() < 0.1
        elif field == "shard":
            msg.shard_id = rng.choice((0, 1, 2, 2**31 - 1, -1))
        elif field == "offset":
            msg.offset = rng.choice((0, 1, 12, 2**40, -5))
        elif field == "size":
            msg.size = rng.choice((*_SIZES, -1))
        elif field == "crc":
            msg.crc32c = rng.getrandbits(32)
        elif field == "slices":
            s = msg.slices.add()
            for _ in range(rng.randint(0, 3)):
                e = s.extent.add()
                e.start = rng.choice((0, 1, 2, 2**40, -1))
                if rng.random() < 0.7:
                    e.length = rng.choice((0, 1, 2, 2**40, -1))
    return bytes(msg.SerializeToString())


def _mutate_header(rng: random.Random) -> bytes:
    msg = pb.BundleHeaderProto(num_shards=1, version=pb.VersionDef(producer=1))
    choice = rng.randrange(4)
    if choice == 0:
        msg.num_shards = rng.choice((0, 2, 2**24 + 1, 2**31 - 1, -3))
    elif choice == 1:
        msg.endianness = 1
    elif choice == 2:
        msg.version.min_consumer = rng.choice((0, 2))
        msg.version.bad_consumers.append(rng.choice((0, 1)))
    else:
        msg.version.producer = rng.choice((-1, 0, 5))
    return bytes(msg.SerializeToString())


def _flip(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    if not raw:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
    op = rng.randrange(4)
    if op == 0:
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    elif op == 1:
        del raw[rng.randrange(len(raw)) :]
    elif op == 2:
        pos = rng.randrange(len(raw))
        raw[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 6)))
    else:
        raw[rng.randrange(len(raw))] = rng.choice((0x00, 0x7F, 0x80, 0xFF))
    return bytes(raw)


def _case(rng: random.Random, valid: list[tuple[bytes, bytes]], index: bytes) -> bytes:
    """One mutated index file."""
    kind = rng.random()
    if kind < 0.1:
        return _flip(rng, index)  # raw bytes: mostly block CRC failures, sometimes footer/handle damage
    entries = list(valid)
    if kind < 0.2:
        entries[0] = (b"", _mutate_header(rng))
    targets = rng.sample(range(1, len(entries)), rng.randint(1, 3))
    for i in targets:
        key, value = entries[i]
        value = _flip(rng, value) if kind < 0.3 else _mutate_entry(rng, value)
        entries[i] = (key, value)
    if rng.random() < 0.1:
        del entries[rng.randrange(1, len(entries))]
    return build_table(entries)


def _exercise(backend: BundleBackend, prefix: str) -> None:
    """Everything a reader offers: keys, info, read, read into ``out``, read_many."""
    with backend.open_reader(prefix) as reader:
        keys = list(reader.keys())
        for key in keys:
            attempts: list[Callable[[], object]] = [
                lambda k=key: reader.info(k),
                lambda k=key: reader.read(k),
                lambda k=key: reader.read_many([(k, None)]),
            ]
            for attempt in attempts:
                try:
                    attempt()
                except CheckpointError:
                    pass
        try:
            reader.read_many([(k, None) for k in keys])
        except CheckpointError:
            pass


def test_mutated_indexes_raise_only_trackpoint_errors(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    valid = _valid(prefix)
    index = build_table(valid)
    backend = BundleBackend(LocalFiles())
    index_path = Path(prefix + ".index")
    index_path.write_bytes(index)
    _exercise(backend, prefix)  # the unmutated table reads cleanly
    start = time.monotonic()
    seed = 0
    while seed < _MIN_CASES or time.monotonic() - start < _BUDGET_S:
        rng = random.Random(seed)
        index_path.write_bytes(_case(rng, valid, index))
        try:
            _exercise(backend, prefix)
        except CheckpointError:
            pass
        except Exception as exc:  # noqa: BLE001 - any other escape is the failure under test
            pytest.fail(f"seed {seed}: {type(exc).__name__} escaped the reader: {exc}")
        seed += 1
        if time.monotonic() - start > 4 * _BUDGET_S:
            break


@pytest.mark.parametrize(("dtype", "itemsize"), [(1, 4), (7, 8), (9, 8), (18, 16), (4, 1)])
@pytest.mark.parametrize("shape", [(0, 2**40, 2**40), (2**40, 0, 2**40), (0, 2**62, 2), (2**63 - 1, 0, 2)])
def test_zero_dimension_beside_huge_ones(tmp_path: Path, dtype: int, itemsize: int, shape: tuple[int, ...]) -> None:
    # Zero elements, so the size checks pass; numpy still refuses the shape ("array is too big").
    prefix = str(tmp_path / "ckpt")
    big = 1
    for d in shape:
        big *= d or 1
    assert big * itemsize >= 2**63, "the case must exceed numpy's limit"
    table = build_table([(b"", encode_header(1)), (b"t", encode_entry(dtype, shape, 0, 0, 0, 0))])
    Path(prefix + ".index").write_bytes(table)
    Path(prefix + ".data-00000-of-00001").write_bytes(b"")
    backend = BundleBackend(LocalFiles())
    with backend.open_reader(prefix) as reader:
        assert reader.keys() == ["t"]
        for call in (lambda: reader.info("t"), lambda: reader.read("t"), lambda: reader.read_many([("t", None)])):
            with pytest.raises(InvalidCheckpointError, match=r"tensor 't' has shape .* which no numpy array can hold"):
                call()


def test_rank_above_numpy_limit(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    table = build_table([(b"", encode_header(1)), (b"t", encode_entry(1, (1,) * 65, 0, 0, 4, 0))])
    Path(prefix + ".index").write_bytes(table)
    Path(prefix + ".data-00000-of-00001").write_bytes(bytes(4))
    with (
        BundleBackend(LocalFiles()).open_reader(prefix) as reader,
        pytest.raises(InvalidCheckpointError, match=r"tensor 't' has 65 dimensions; numpy arrays hold at most 64"),
    ):
        reader.read("t")


def test_sliced_tensor_with_unholdable_shape(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    meta = pb.BundleEntryProto(dtype=1)
    for d in (0, 2**40, 2**40):
        meta.shape.dim.add(size=d)
    extent = meta.slices.add().extent
    for _ in range(3):
        extent.add()
    piece = encode_entry(1, (0, 2**40, 2**40), 0, 0, 0, 0)
    table = build_table(
        sorted(
            [
                (b"", encode_header(1)),
                (b"w", meta.SerializeToString()),
                (encode_slice_key(b"w", [(0, -1)] * 3), piece),
            ]
        )
    )
    Path(prefix + ".index").write_bytes(table)
    Path(prefix + ".data-00000-of-00001").write_bytes(b"")
    with (
        BundleBackend(LocalFiles()).open_reader(prefix) as reader,
        pytest.raises(InvalidCheckpointError, match="which no numpy array can hold"),
    ):
        reader.read("w")
