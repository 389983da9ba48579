"""The one LEB128 varint codec, shared by the object-graph encoder and the bundle format."""

from __future__ import annotations

import importlib

import pytest
from google.protobuf.internal import decoder, encoder

from trackpoint._varint import ONE_BYTE, decode_varint, encode_varint
from trackpoint.errors import DataLossError

BOUNDARIES = [
    0,
    1,
    127,
    128,
    300,
    16383,
    16384,
    2**21 - 1,
    2**21,
    150_000_000,
    2**28 - 1,
    2**28,
    2**32 - 1,
    2**35,
    2**63 - 1,
    2**64 - 1,
]


@pytest.mark.parametrize("value", BOUNDARIES)
def test_encoding_equals_protobufs_and_decodes_back(value: int) -> None:
    raw = encode_varint(value)
    assert raw == encoder._VarintBytes(value)
    assert decoder._DecodeVarint(raw, 0) == (value, len(raw))
    assert decode_varint(b"\xff" + raw + b"\x01", 1, "t") == (value, 1 + len(raw))


def test_one_byte_table_holds_the_single_byte_encodings() -> None:
    assert ONE_BYTE == tuple(encode_varint(i) for i in range(128))
    assert all(len(b) == 1 for b in ONE_BYTE)


def test_truncated_and_overlong_varints_are_data_loss() -> None:
    with pytest.raises(DataLossError, match="idx: truncated varint at byte 2"):
        decode_varint(b"\x80\x80", 0, "idx")
    with pytest.raises(DataLossError, match="idx: varint longer than 10 bytes"):
        decode_varint(b"\xff" * 11, 0, "idx")


@pytest.mark.parametrize(
    "module", ["trackpoint._graph_wire", "trackpoint.backends.bundle._codec", "trackpoint.backends.bundle._sstable"]
)
def test_the_graph_encoder_and_the_bundle_share_one_encoder(module: str) -> None:
    assert importlib.import_module(module).encode_varint is encode_varint


def test_the_shared_module_builds_no_large_table() -> None:
    # ``import trackpoint`` loads it (the graph encoder needs it); the bundle's former table of the 16,384
    # two-byte encodings would have come along. Two-byte values are built when asked for instead.
    import trackpoint._varint as module

    assert max(len(v) for v in vars(module).values() if isinstance(v, tuple)) == 128
    assert encode_varint(300) == b"\xac\x02"
