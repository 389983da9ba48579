"""Key <-> array-name encoding: reversible, and every name stays one child of the data group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackpoint.backends.stores import LocalFiles
from trackpoint.backends.zarr import ZarrBackend, decode_key, encode_key
from trackpoint.errors import CheckpointKeyError, InvalidCheckpointError
from trackpoint.storage import WriteItem

_keys = st.text(min_size=1, max_size=40).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
_slashy = st.lists(st.sampled_from(["", ".", "..", "a", "__x", "%2F", "b c", "é", "/"]), min_size=1, max_size=8).map(
    "/".join
)


def _is_contained(name: str) -> bool:
    # One valid Zarr v3 node name: non-empty, no separator, not "."/"..", not reserved "__".
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith("_")


@given(_keys)
def test_round_trip_of_any_text(key: str) -> None:
    assert decode_key(encode_key(key)) == key


@given(st.one_of(_keys, _slashy).filter(bool))
def test_names_never_escape_the_group(key: str) -> None:
    name = encode_key(key)
    assert _is_contained(name)
    assert all(c.isascii() and (c.isalnum() or c in "-_.%") for c in name)


@given(_keys, _keys)
def test_distinct_keys_get_distinct_names(a: str, b: str) -> None:
    assert (encode_key(a) == encode_key(b)) == (a == b)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("model/kernel/.ATTRIBUTES/VARIABLE_VALUE", "model%2Fkernel%2F.ATTRIBUTES%2FVARIABLE_VALUE"),
        ("..", "%2E."),
        (".", "%2E"),
        ("/etc/passwd", "%2Fetc%2Fpasswd"),
        ("a//b", "a%2F%2Fb"),
        ("__zarr", "%5F_zarr"),
        ("_CHECKPOINTABLE_OBJECT_GRAPH", "%5FCHECKPOINTABLE_OBJECT_GRAPH"),
        ("a b%", "a%20b%25"),
        ("é", "%C3%A9"),
    ],
)
def test_documented_examples(key: str, name: str) -> None:
    assert encode_key(key) == name
    assert decode_key(name) == key


def test_prefix_keys_do_not_collide() -> None:
    # "a" is a tensor and also a prefix of "a/b": flat names store both.
    assert encode_key("a") != encode_key("a/b")
    assert not encode_key("a/b").startswith(encode_key("a") + "/")


def test_empty_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CheckpointKeyError, match="empty string cannot be a tensor key"):
        encode_key("")
    # Also for a small tensor, which is packed and never needs an array name of its own.
    backend = ZarrBackend(LocalFiles())
    for value in (np.ones(3), np.ones(100_000)):
        with pytest.raises(CheckpointKeyError, match="empty string cannot be a tensor key"):
            backend.save(str(tmp_path / "ckpt"), [WriteItem("", value)])
    assert not backend.list_checkpoints(str(tmp_path))


@pytest.mark.parametrize("name", ["", "a/b", "%zz", "%41", ".x", "_packed-00000", "a%2f"])
def test_non_canonical_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidCheckpointError, match="not (an encoded tensor key|the canonical encoding)"):
        decode_key(name)
