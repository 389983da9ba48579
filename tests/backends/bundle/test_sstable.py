"""The LevelDB-style table of ``.index`` files: TensorFlow's builder rules and the reader's checks."""

from __future__ import annotations

import struct

import pytest

from trackpoint.backends.bundle._crc import crc32c, mask
from trackpoint.backends.bundle._sstable import (
    BLOCK_SIZE,
    FOOTER_SIZE,
    TableBuilder,
    build_table,
    first_entry,
    read_table,
    short_successor,
    shortest_separator,
)
from trackpoint.errors import DataLossError, InvalidCheckpointError, TrackableError


def _handles(table: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    from trackpoint._varint import decode_varint

    footer = table[-FOOTER_SIZE:]
    m_off, pos = decode_varint(footer, 0, "f")
    m_size, pos = decode_varint(footer, pos, "f")
    i_off, pos = decode_varint(footer, pos, "f")
    i_size, pos = decode_varint(footer, pos, "f")
    return (m_off, m_size), (i_off, i_size)


def test_separator_rules() -> None:
    assert shortest_separator(b"abc", b"abz") == b"abd"
    assert shortest_separator(b"abc", b"abd") == b"abc"  # a[i]+1 == b[i]: unchanged
    assert shortest_separator(b"ab", b"abc") == b"ab"  # prefix: unchanged
    assert shortest_separator(b"a\xff", b"b\x00") == b"a\xff"
    assert short_successor(b"v/.ATTRIBUTES") == b"w"
    assert short_successor(b"\xff\xffa") == b"\xff\xffb"
    assert short_successor(b"\xff\xff") == b"\xff\xff"
    assert short_successor(b"") == b""


def test_empty_table_layout() -> None:
    table = build_table([])
    (m_off, m_size), (i_off, i_size) = _handles(table)
    # No data block; metaindex and index are empty 8-byte blocks.
    assert (m_off, m_size) == (0, 8)
    assert (i_off, i_size) == (13, 8)
    assert table[:8] == bytes.fromhex("0000000001000000")
    assert table[-8:] == bytes.fromhex("57fb808b247547db")
    assert read_table(table, "t") == []


def test_round_trip_many_blocks_with_restarts() -> None:
    entries = [(f"layer{i:05d}/kernel".encode(), bytes(100)) for i in range(6000)]
    table = build_table(entries)
    assert read_table(table, "t") == entries
    # 6000 * ~120 bytes needs more than two 256 KiB blocks.
    (_, _), (_i_off, i_size) = _handles(table)
    assert i_size > 20


def test_oversized_entry_starts_a_new_block() -> None:
    big = bytes(2 * BLOCK_SIZE)
    table = build_table([(b"a", b"x"), (b"b", big), (b"c", b"y")])
    assert read_table(table, "t") == [(b"a", b"x"), (b"b", big), (b"c", b"y")]
    # The first block holds only "a": 3 header varints + key + value + restart array.
    assert table[: 3 + 1 + 1] == b"\x00\x01\x01ax"
    assert struct.unpack_from("<II", table, 5) == (0, 1)


def test_keys_must_increase() -> None:
    builder = TableBuilder()
    builder.add(b"b", b"")
    with pytest.raises(TrackableError, match="unique and sorted"):
        builder.add(b"a", b"")


def test_block_trailer_is_masked_crc_of_contents_and_type() -> None:
    table = build_table([(b"k", b"v")])
    n = 5 + 4 + 4  # one entry "00 01 01 k v", one restart, the restart count
    assert table[n] == 0
    assert struct.unpack_from("<I", table, n + 1)[0] == mask(crc32c(table[: n + 1]))


def test_foreign_bytes_are_rejected() -> None:
    with pytest.raises(InvalidCheckpointError, match="not a TensorFlow bundle index"):
        read_table(b"hello world" * 10, "/x/ckpt.index")
    with pytest.raises(InvalidCheckpointError, match="ckpt.index"):
        read_table(b"", "/x/ckpt.index")


def test_flipped_byte_fails_block_crc() -> None:
    table = bytearray(build_table([(b"key", b"value")]))
    table[3] ^= 0x01
    with pytest.raises(DataLossError, match="CRC-32C"):
        read_table(bytes(table), "t")


def _single_block_table(contents: bytes, block_type: int = 0) -> bytes:
    """A table whose only data block has the given raw contents."""
    from trackpoint._varint import encode_varint

    out = bytearray(contents) + bytes((block_type,)) + struct.pack("<I", mask(crc32c(contents + bytes((block_type,)))))
    empty = bytes.fromhex("0000000001000000")
    meta_off = len(out)
    out += empty + b"\x00" + struct.pack("<I", mask(crc32c(empty + b"\x00")))
    handle = encode_varint(0) + encode_varint(len(contents))
    index = b"\x00\x01" + bytes((len(handle),)) + b"z" + handle + struct.pack("<II", 0, 1)
    idx_off = len(out)
    out += index + b"\x00" + struct.pack("<I", mask(crc32c(index + b"\x00")))
    footer = encode_varint(meta_off) + encode_varint(8) + encode_varint(idx_off) + encode_varint(len(index))
    out += footer + bytes(40 - len(footer)) + bytes.fromhex("57fb808b247547db")
    return bytes(out)


def test_snappy_blocks_are_reported_as_unsupported() -> None:
    with pytest.raises(InvalidCheckpointError, match="Snappy"):
        read_table(_single_block_table(b"\x00\x01\x01ax" + struct.pack("<II", 0, 1), block_type=1), "t")


def test_restart_array_is_validated() -> None:
    # Claims 1000 restarts in a 9-byte block.
    with pytest.raises(DataLossError, match="restarts"):
        read_table(_single_block_table(b"\x00\x01\x01ax" + struct.pack("<I", 1000)), "t")
    # Restart offset beyond the entries.
    with pytest.raises(DataLossError, match="restart offset"):
        read_table(_single_block_table(b"\x00\x01\x01ax" + struct.pack("<II", 99, 1)), "t")
    # An entry at a restart point must not share key bytes.
    with pytest.raises(DataLossError, match="restart point"):
        read_table(_single_block_table(b"\x01\x01\x01ax" + struct.pack("<II", 0, 1)), "t")


def test_truncated_entry_is_rejected() -> None:
    with pytest.raises(DataLossError, match="corrupted block entry"):
        read_table(_single_block_table(b"\x00\x01\x09ax" + struct.pack("<II", 0, 1)), "t")


@pytest.mark.parametrize(
    "entries",
    [
        b"\x00\x01\x01bx" + b"\x00\x01\x01ay",  # "b" then "a"
        b"\x00\x01\x01ax" + b"\x01\x00\x01y",  # "a" twice (the second shares the whole key)
    ],
)
def test_keys_out_of_order_within_a_block_are_rejected(entries: bytes) -> None:
    # Readers find keys by bisection and expect the slices' keys (a NUL byte first) before the others.
    with pytest.raises(DataLossError, match="entry at byte 5 does not follow the previous one"):
        read_table(_single_block_table(entries + struct.pack("<II", 0, 1)), "t")


def test_first_entry_reads_only_the_first_block() -> None:
    entries = [(f"layer{i:05d}/kernel".encode(), bytes(100)) for i in range(6000)]
    table = bytearray(build_table(entries))
    assert first_entry(bytes(table), "t") == entries[0]
    assert first_entry(build_table([]), "t") is None
    # Damage in the last data block (just before the metaindex block): the whole table fails its check,
    # the first entry is still read.
    (m_off, _), _ = _handles(bytes(table))
    table[m_off - 10] ^= 0xFF
    with pytest.raises(DataLossError, match="fails its CRC-32C check"):
        read_table(bytes(table), "t")
    assert first_entry(bytes(table), "t") == entries[0]
    # Damage in the first block is reported.
    table[10] ^= 0xFF
    with pytest.raises(DataLossError, match="fails its CRC-32C check"):
        first_entry(bytes(table), "t")
    with pytest.raises(InvalidCheckpointError, match="missing the table magic number"):
        first_entry(bytes(table[:-1]), "t")


def test_header_count_reads_the_header_entry_alone() -> None:
    from trackpoint.backends.bundle._codec import encode_header
    from trackpoint.backends.bundle._index import header_count

    entries = [(b"", encode_header(3))] + [(f"v{i:05d}".encode(), bytes(100)) for i in range(6000)]
    table = bytearray(build_table(entries))
    assert header_count(bytes(table), "t") == 3
    (m_off, _), _ = _handles(bytes(table))
    table[m_off - 10] ^= 0xFF  # a damaged later block does not hide how many data files there are
    assert header_count(bytes(table), "t") == 3
    assert header_count(build_table(entries[1:]), "t") is None  # no header entry
    assert header_count(b"not an index", "t") is None
