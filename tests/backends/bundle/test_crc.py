"""CRC-32C and masking against the test vectors of the format spec (section 2.1)."""

from __future__ import annotations

from trackpoint.backends.bundle._crc import crc32c, extend, mask, unmask


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_extend_continues_a_crc() -> None:
    assert extend(crc32c(b"12345"), b"6789") == crc32c(b"123456789")


def test_mask_vectors() -> None:
    assert mask(0) == 0xA282EAD8
    assert mask(crc32c(b"123456789")) == 0xC78AB0E5


def test_unmask_inverts_mask() -> None:
    for value in (0, 1, 0xFFFFFFFF, 0x12345678, 0xE3069283):
        assert unmask(mask(value)) == value
