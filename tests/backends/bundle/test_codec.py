"""Entry, header and string encodings, byte for byte (spec sections 3-4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from trackpoint.backends.bundle._codec import (
    EntryColumns,
    _decode_entry_proto,
    _plain_head,
    decode_entries,
    decode_entry,
    decode_header,
    decode_strings,
    encode_entry,
    encode_header,
    encode_strings,
)
from trackpoint.backends.bundle.proto import tensor_bundle_pb2
from trackpoint.errors import DataLossError, InvalidCheckpointError, UnsupportedDTypeError

pb: Any = tensor_bundle_pb2


def test_header_bytes() -> None:
    assert encode_header(1).hex() == "08011a020801"
    assert encode_header(2).hex() == "08021a020801"
    h = decode_header(encode_header(3), "idx")
    assert (h.num_shards, h.big_endian) == (3, False)


def test_newer_bundle_versions_are_refused() -> None:
    raw = pb.BundleHeaderProto(num_shards=1, version=pb.VersionDef(producer=2, min_consumer=2)).SerializeToString()
    with pytest.raises(InvalidCheckpointError, match="too new"):
        decode_header(raw, "idx")
    raw = pb.BundleHeaderProto(num_shards=1, version=pb.VersionDef(producer=1, bad_consumers=[1])).SerializeToString()
    with pytest.raises(InvalidCheckpointError, match="too new"):
        decode_header(raw, "idx")


def test_spec_entry_example() -> None:
    assert encode_entry(1, (3,), 0, 0, 12, 0x71895B73).hex() == "0801120412020803280c35735b8971"


@pytest.mark.parametrize(
    ("dtype", "shape", "shard", "offset", "size", "crc"),
    [
        (1, (), 0, 0, 4, 1),
        (9, (0, 5), 3, 1 << 40, 0, 0xFFFFFFFF),
        (7, (2, 3, 4), 1, 300, 2**33, 0),
        (14, (1,), 0, 7, 2, 5),
    ],
)
def test_hand_encoding_equals_protobuf(
    dtype: int, shape: tuple[int, ...], shard: int, offset: int, size: int, crc: int
) -> None:
    msg = pb.BundleEntryProto(dtype=dtype, shard_id=shard, offset=offset, size=size, crc32c=crc)
    msg.shape.SetInParent()
    for d in shape:
        msg.shape.dim.add(size=d)
    assert encode_entry(dtype, shape, shard, offset, size, crc) == msg.SerializeToString()
    e = decode_entry(msg.SerializeToString(), "idx")
    assert (e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c) == (dtype, shape, shard, offset, size, crc)


def test_spec_sliced_full_entry_decodes() -> None:
    raw = bytes.fromhex("08011208120208041202080 33a060a0210020a003a080a04080210020a00".replace(" ", ""))
    e = decode_entry(raw, "idx")
    assert e.shape == (4, 3)
    assert e.slices == (((0, 2), (0, -1)), ((2, 2), (0, -1)))


def test_negative_dimensions_are_rejected() -> None:
    msg = pb.BundleEntryProto(dtype=1)
    msg.shape.dim.add(size=-4)
    with pytest.raises(DataLossError, match="negative dimensions"):
        decode_entry(msg.SerializeToString(), "idx")


def test_garbage_entry_is_rejected() -> None:
    with pytest.raises(DataLossError, match="BundleEntryProto"):
        decode_entry(b"\xff\xff\xff", "idx")


@pytest.mark.parametrize(
    ("value", "data", "crc"),
    [
        (np.array(b"hello", dtype=object), "05d9c69c4368656c6c6f", 0x29C0E0EC),
        (np.array([b"", b"ab"], dtype=object), "0002775199c46162", None),
        (np.array([], dtype=object), "d8ea82a2", 0x640CC1F6),
    ],
)
def test_string_encoding_matches_tensorflow(value: np.ndarray[Any, Any], data: str, crc: int | None) -> None:
    raw, got_crc = encode_strings(value, "k")
    assert raw.hex() == data
    if crc is not None:
        assert got_crc == crc
    back = decode_strings(raw, value.shape, got_crc, False, "k")
    assert back.shape == value.shape and list(back.flat) == list(value.flat)


def test_str_elements_are_stored_as_utf8() -> None:
    raw, crc = encode_strings(np.array(["héllo", b"x"], dtype=object), "k")
    assert list(decode_strings(raw, (2,), crc, False, "k")) == ["héllo".encode(), b"x"]


def test_non_bytes_objects_are_refused() -> None:
    with pytest.raises(UnsupportedDTypeError, match="holding int"):
        encode_strings(np.array([1, 2], dtype=object), "counts")


def test_corrupted_strings_are_detected() -> None:
    raw, crc = encode_strings(np.array([b"abc", b"de"], dtype=object), "k")
    bad = bytearray(raw)
    bad[-1] ^= 1
    with pytest.raises(DataLossError, match="CRC-32C mismatch"):
        decode_strings(bytes(bad), (2,), crc, False, "k")
    bad = bytearray(raw)
    bad[2] ^= 1  # inside the length checksum
    with pytest.raises(DataLossError, match="length checksum"):
        decode_strings(bytes(bad), (2,), crc, False, "k")
    with pytest.raises(DataLossError, match="add up to"):
        decode_strings(raw[:-1], (2,), crc, False, "k")


def _pb_entry(**fields: Any) -> Any:
    dims = fields.pop("dims", ())
    msg = pb.BundleEntryProto(**fields)
    msg.shape.SetInParent()
    for d in dims:
        msg.shape.dim.add(size=d)
    return msg


@pytest.mark.parametrize(
    "msg",
    [
        _pb_entry(dtype=1, dims=(3, 0, 7), offset=5, size=0, crc32c=9),
        _pb_entry(dtype=7, dims=(), shard_id=2, offset=2**40, size=2**35),
        _pb_entry(
            dtype=1, dims=(4, 3), slices=[pb.TensorSliceProto(extent=[pb.TensorSliceProto.Extent(start=1, length=2)])]
        ),
        _pb_entry(dtype=1, dims=(2,), shard_id=-1),
        _pb_entry(dtype=-3, dims=(2,)),
    ],
)
def test_entry_decoding_matches_the_message(msg: Any) -> None:
    raw = msg.SerializeToString()
    if msg.shard_id < 0:
        with pytest.raises(DataLossError, match="negative shard_id"):
            decode_entry(raw, "idx")
        with pytest.raises(DataLossError, match="idx: entry has negative shard_id"):
            decode_entries([raw], lambda i: "idx")
        return
    e = decode_entry(raw, "idx")
    assert e.dtype == msg.dtype and e.shape == tuple(d.size for d in msg.shape.dim)
    assert (e.shard_id, e.offset, e.size, e.crc32c) == (msg.shard_id, msg.offset, msg.size, msg.crc32c)
    assert len(e.slices) == len(msg.slices)
    assert _row(decode_entries([raw], str), 0) == tuple(e)


def _row(columns: EntryColumns, i: int) -> tuple[Any, ...]:
    """Entry ``i`` of ``columns`` as the tuple of its :class:`Entry`."""
    dtype, shape = columns.kinds[columns.kind[i]]
    fields = (columns.shard_id[i], columns.offset[i], columns.size[i], columns.crc32c[i])
    return (dtype, shape, *map(int, fields), columns.slices.get(i, ()))


def test_entry_with_unknown_fields_is_tolerated() -> None:
    raw = encode_entry(1, (2,), 0, 0, 8, 7) + b"\x90\x03\x01"  # field 50, varint 1
    e = decode_entry(raw, "idx")
    assert (e.dtype, e.shape, e.size, e.crc32c) == (1, (2,), 8, 7)
    assert _row(decode_entries([raw], str), 0) == tuple(e)


def _proto_entry(raw: bytes) -> tuple[Any, ...] | str:
    """What protobuf makes of ``raw``: the entry's fields, or the error."""
    try:
        return tuple(_decode_entry_proto(raw, "idx"))
    except DataLossError as exc:
        return f"error: {exc}"


def test_entries_decoded_together_agree_with_protobuf_on_mutated_entries() -> None:
    # Entries laid out as TensorFlow writes them are decoded with numpy; whatever that accepts must be what
    # protobuf parses, everything else must fall through to protobuf, and no entry may bleed into its
    # neighbours (they are decoded from one buffer).
    rng = np.random.default_rng(7)
    valid = [
        encode_entry(1, (3, 4), 0, 0, 48, 0x12345678),
        encode_entry(7, (), 2, 2**40, 9, 1),
        encode_entry(19, (0, 5), 1, 300, 0, 0),
        encode_entry(1, (2**33,), 0, 127, 2**35, 2**32 - 1),
        encode_entry(1, (2,), 2**31 - 1, 2**63 - 1, 2**63 - 1, 5),
        pb.BundleEntryProto(dtype=1, shape={"dim": [{"size": 2, "name": "x"}]}, size=8).SerializeToString(),
    ]
    together = decode_entries(valid, str)
    assert together.irregular == 0
    assert [_row(together, i) for i in range(len(valid))] == [_proto_entry(raw) for raw in valid]
    mutants: list[bytes] = []
    for _ in range(8000):
        raw = bytearray(valid[int(rng.integers(len(valid)))])
        for _ in range(int(rng.integers(1, 4))):
            op = int(rng.integers(3))
            pos = int(rng.integers(len(raw) + 1))
            if op == 0 and raw:
                raw[min(pos, len(raw) - 1)] = int(rng.integers(256))
            elif op == 1:
                raw.insert(pos, int(rng.integers(256)))
            elif raw:
                del raw[min(pos, len(raw) - 1)]
        mutants.append(bytes(raw))
    expected = [_proto_entry(raw) for raw in mutants]
    parsed = [raw for raw, e in zip(mutants, expected, strict=True) if not isinstance(e, str)]
    columns = decode_entries(parsed, str)
    assert [_row(columns, i) for i in range(len(parsed))] == [e for e in expected if not isinstance(e, str)]
    assert len(parsed) - columns.irregular > 500  # the comparison above ran on many entries read by numpy
    rejected = [(raw, e) for raw, e in zip(mutants, expected, strict=True) if isinstance(e, str)]
    assert len(rejected) > 1000
    for raw, e in rejected[:500]:
        with pytest.raises(DataLossError) as info:
            decode_entries([valid[0], raw, valid[1]], lambda i: "idx")
        assert f"error: {info.value}" == e


def test_entries_protobuf_rejects_never_pass_the_fast_path() -> None:
    negative_offset = pb.BundleEntryProto(dtype=1, shape={"dim": [{"size": 2}]}, offset=-1, size=8)
    twice = encode_entry(1, (2,), 0, 0, 8, 0) + b"\x28\x09"  # size given twice: protobuf keeps the last
    unknown_field = encode_entry(1, (2,), 0, 0, 8, 0) + b"\x48\x01"
    assert decode_entries([twice, unknown_field], str).irregular == 2
    with pytest.raises(DataLossError, match="negative"):
        decode_entries([negative_offset.SerializeToString()], str)
    assert decode_entries([twice], str).size[0] == 9


def test_entries_of_one_dtype_and_shape_keep_their_own_fields() -> None:
    # Entries reuse the encoded dtype and shape of earlier ones: only those two fields may be shared.
    for shape in [(), (3,), [3], (3, 0), (0,), (2**20, 2)]:
        for dtype in (0, 1, 19):
            for shard, offset, size, crc in [(0, 0, 0, 0), (2, 1, 12, 7), (0, 2**40, 300, 2**32 - 1)]:
                msg = pb.BundleEntryProto(dtype=dtype, shard_id=shard, offset=offset, size=size, crc32c=crc)
                msg.shape.SetInParent()
                for d in shape:
                    msg.shape.dim.add(size=d)
                assert encode_entry(dtype, shape, shard, offset, size, crc) == msg.SerializeToString()


def test_plain_heads_are_what_protobuf_parses() -> None:
    # Entries' dtype-and-shape heads are parsed without protobuf when laid out as TensorFlow writes them:
    # whatever that parser accepts must be what protobuf parses; the rest it must leave to protobuf.
    rng = np.random.default_rng(11)
    heads = []
    for rank in (0, 1, 2, 3, 8, 40, 70):  # 70 dimensions need two-byte shape lengths
        for _ in range(20):
            dims = [int(d) for d in rng.integers(0, 2 ** int(rng.integers(1, 63)), rank)]
            msg = pb.BundleEntryProto(dtype=int(rng.integers(0, 130)))
            msg.shape.SetInParent()
            for d in dims:
                msg.shape.dim.add(size=d)
            heads.append(msg.SerializeToString())
    named = pb.BundleEntryProto(dtype=1, shape={"dim": [{"size": 2, "name": "x"}]}).SerializeToString()
    unknown_rank = pb.BundleEntryProto(dtype=1, shape={"unknown_rank": True}).SerializeToString()
    negative = pb.BundleEntryProto(dtype=1, shape={"dim": [{"size": -1}]}).SerializeToString()
    assert _plain_head(heads[30]) is not None  # rank 1, one-byte dtype
    assert [_plain_head(h) for h in (named, unknown_rank, negative)] == [None, None, None]
    long_shape = [h for h in heads if len(h) > 130]
    assert long_shape and all(_plain_head(h) is None for h in long_shape)
    mutants = list(heads)
    for _ in range(20000):
        raw = bytearray(heads[int(rng.integers(len(heads)))][:60])
        for _ in range(int(rng.integers(1, 3))):
            pos = int(rng.integers(len(raw) + 1))
            op = int(rng.integers(3))
            if op == 0 and raw:
                raw[min(pos, len(raw) - 1)] = int(rng.choice([0x00, 0x08, 0x12, 0x18, 0x7F, 0x80, 0xFF]))
            elif op == 1:
                raw.insert(pos, int(rng.integers(256)))
            elif raw:
                del raw[min(pos, len(raw) - 1)]
        mutants.append(bytes(raw))
    accepted = 0
    for raw in mutants:
        plain = _plain_head(raw)
        if plain is None:
            continue
        accepted += 1
        e = _decode_entry_proto(raw, "idx")  # raises if protobuf refuses what the plain parser accepted
        assert plain == (e.dtype, e.shape), raw
    assert accepted > 500
