"""A coordinator of a group of one over a dict: coordinated saves, restores and managers in one process."""

from __future__ import annotations

from collections.abc import Sequence

import trackpoint as tp


class SoloCoordinator(tp.distributed.KeyValueCoordinator):
    """Rank 0 of 1, its key-value store a dict; a key never set is a time-out, as a real store's would be."""

    def __init__(self, namespace: str, timeout: float = 10.0) -> None:
        super().__init__(0, 1, timeout=timeout, namespace=namespace)
        self.store: dict[str, bytes] = {}

    def _set(self, key: str, value: bytes) -> None:
        self.store[key] = value

    def _get(self, keys: Sequence[str], timeout: float) -> list[bytes]:
        missing = [k for k in keys if k not in self.store]
        if missing:
            raise tp.CoordinationTimeoutError(f"missing {missing}")
        return [self.store[k] for k in keys]

    def _delete(self, keys: Sequence[str]) -> None:
        for k in keys:
            self.store.pop(k, None)

    def _set_if_absent(self, key: str, value: bytes) -> bytes:
        return self.store.setdefault(key, value)
