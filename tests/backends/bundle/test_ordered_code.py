"""OrderedCode slice keys (spec section 5)."""

from __future__ import annotations

import pytest

from trackpoint.backends.bundle._ordered_code import _signed_num_increasing, decode_slice_key, encode_slice_key
from trackpoint.errors import DataLossError


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "80"),
        (2, "82"),
        (63, "bf"),
        (-1, "7f"),
        (-64, "40"),
        (64, "c040"),
        (112, "c070"),
        (877, "c36d"),
        (8192, "e02000"),
        (-65, "3fbf"),
        (-8192, "2000"),
    ],
)
def test_signed_num_increasing_matches_tensorflow(value: int, encoded: str) -> None:
    assert _signed_num_increasing(value).hex() == encoded


def test_spec_slice_keys() -> None:
    assert encode_slice_key(b"w", [(0, 2), (0, -1)]).hex() == "0077000101028082807f"
    assert encode_slice_key(b"w", [(2, 2), (0, -1)]).hex() == "0077000101028282807f"


@pytest.mark.parametrize(
    "extents",
    [[(0, 2)], [(5, 3), (0, -1)], [(2**40, 7), (-3, 2**62)], [(2**63 - 1, -(2**63))], [(123, 877), (8191, 8192)]],
)
def test_round_trip(extents: list[tuple[int, int]]) -> None:
    name = b"a\x00b\xffc/d"
    assert decode_slice_key(encode_slice_key(name, extents), "k") == (name, extents)


def test_encoding_preserves_numeric_order() -> None:
    values = [-(2**63), -(2**40), -8193, -65, -64, -1, 0, 1, 63, 64, 8191, 8192, 2**40, 2**63 - 1]
    encoded = [_signed_num_increasing(v) for v in values]
    assert encoded == sorted(encoded)


@pytest.mark.parametrize(
    ("key", "match"),
    [
        (b"\x01\x01w\x00\x01\x01\x02\x80\x82", "NumIncreasing"),
        (b"\x00w\x00\x01\x00", "rank 0"),
        (b"\x00w", "unterminated"),
        (b"\x00w\x00\x01\x01\x01\x80\x82\x00", "trailing"),
    ],
)
def test_malformed_keys_are_rejected(key: bytes, match: str) -> None:
    with pytest.raises(DataLossError, match=match):
        decode_slice_key(key, "idx")
