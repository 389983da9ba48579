"""Bad input: damaged storage, missing keys, wrong item types, hostile keys."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from trackpoint.errors import (
    CheckpointError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    DataLossError,
    InvalidCheckpointError,
)
from trackpoint.plugins.testing._base import Array, BackendTestBase
from trackpoint.storage import StorageBackend, WriteItem

__all__ = ["BadInput"]


def _payload() -> dict[str, Array]:
    rng = np.random.default_rng(11)
    return {
        "floats": rng.standard_normal((32, 16)).astype(np.float32),
        "ints": np.arange(300, dtype=np.int64),
        "strings": np.array([b"alpha", b"", b"\xce\xb2eta"], dtype=object),
    }


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_middle(data: bytes) -> bytes:
    if not data:
        return b"\x00"
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :]


def _empty(data: bytes) -> bytes:
    return b""


class BadInput(BackendTestBase):
    """Damage is reported as a trackpoint error, never as a crash or as wrong values."""

    def _outcome(self, backend: StorageBackend, prefix: str, expected: dict[str, Array]) -> str:
        """``"error"`` if reading reports the damage, ``"intact"`` if every value still reads back exactly."""
        try:
            with backend.open_reader(prefix) as reader:
                got = {k: reader.read(k) for k in reader.keys()}
        except (DataLossError, InvalidCheckpointError, CheckpointKeyError, CheckpointNotFoundError):
            return "error"
        same = set(got) == set(expected) and all(
            got[k].dtype == v.dtype
            and got[k].shape == v.shape
            and (list(got[k].flat) == list(v.flat) if v.dtype.kind == "O" else got[k].tobytes() == v.tobytes())
            for k, v in expected.items()
        )
        assert same, f"damaged storage of {prefix!r} was read back as different values instead of raising"
        return "intact"

    @pytest.mark.parametrize("damage", [_truncate, _flip_middle, _empty], ids=["truncate", "flip-byte", "empty"])
    def test_damaged_objects_are_detected(
        self, backend: StorageBackend, base_url: str, damage: Callable[[bytes], bytes]
    ) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        tensors = _payload()
        self.save(backend, prefix, tensors)
        entries = self.entries_of(backend, prefix)
        assert entries, f"raw_list shows no objects for {prefix!r}"
        outcomes = {}
        for path in entries:
            original = self.raw_read(path)
            self.raw_write(path, damage(original))
            try:
                outcomes[path] = self._outcome(backend, prefix, tensors)
            finally:
                self.raw_write(path, original)
        assert "error" in outcomes.values(), f"no damage was detected in any of {entries}"
        self.assert_contents(backend, prefix, tensors)

    def test_missing_objects_are_detected(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        tensors = _payload()
        self.save(backend, prefix, tensors)
        for path in self.entries_of(backend, prefix):
            original = self.raw_read(path)
            self.raw_delete(path)
            try:
                self._outcome(backend, prefix, tensors)
            finally:
                self.raw_write(path, original)
        self.assert_contents(backend, prefix, tensors)

    def test_missing_checkpoint(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "nothing-here")
        self.assert_absent(backend, prefix)
        with pytest.raises(CheckpointNotFoundError):
            backend.open_reader(prefix)

    def test_missing_key(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        self.save(backend, prefix, {"present": np.zeros(2)})
        with backend.open_reader(prefix) as reader:
            assert not reader.has("absent")
            with pytest.raises(CheckpointKeyError, match="absent"):
                reader.info("absent")
            with pytest.raises(CheckpointKeyError, match="absent"):
                reader.read("absent")
            with pytest.raises(KeyError):  # generic handlers keep working
                reader.read("absent")

    @pytest.mark.parametrize(
        "array",
        [
            np.array([b"ok", 3], dtype=object),
            np.array([{"a": 1}], dtype=object),
            np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
            np.array(["2020-01-01"], dtype="datetime64[D]"),
        ],
        ids=["int-in-strings", "dict-in-strings", "structured", "datetime"],
    )
    def test_unstorable_items_are_rejected(self, backend: StorageBackend, base_url: str, array: Array) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        with pytest.raises(CheckpointError):
            backend.save(prefix, [WriteItem("fine", np.zeros(2)), WriteItem("bad", array)])
        self.assert_absent(backend, prefix)
        self.assert_nothing_left(base_url, "a save that refused an item")

    @pytest.mark.parametrize("key", ["../../x", "../sibling", "/abs/path", "a/../../../b", "..", "x\\..\\..\\y"])
    def test_hostile_keys_stay_inside_the_checkpoint(self, backend: StorageBackend, base_url: str, key: str) -> None:
        prefix = self.url(backend, base_url, "sub", "ckpt")
        tensors: dict[str, Array] = {key: np.arange(3, dtype=np.int32), "normal": np.ones(2)}
        self.save(backend, prefix, tensors, num_writers=2)
        outside = [p for p in self.raw_list(base_url) if not p.startswith(prefix)]
        assert outside == [], f"key {key!r} wrote outside {prefix!r}: {outside}"
        self.assert_contents(backend, prefix, tensors)
