"""A storage backend that holds shard writes at a gate, for tests of async saves.

``gated-<name>`` wraps the real backend ``<name>`` (bundle, zarr, s3, gcs,
memory...) and passes every call through to it, except that
:meth:`GatedBackend.write_shard` first waits until the test opens the gate.
A test can therefore act while an async save is certainly still writing, and
the bytes that end up stored are the real backend's. ``fail`` makes the next
shard write raise instead (a store that fails mid-save).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from trackpoint import plugins
from trackpoint.errors import StorageError
from trackpoint.storage import (
    ANY_VERSION,
    Capabilities,
    CheckpointOptions,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    VersionCondition,
    VersionedBytes,
    WriteItem,
)

INNER = ("bundle", "zarr", "memory", "s3", "gcs")


class Gate:
    """Opened by the test; shard writes wait for it. Records how many writes reached it.

    :meth:`let_through` lets single shard writes pass a closed gate, so a test
    can step a save shard by shard.
    """

    def __init__(self) -> None:
        self.open = threading.Event()
        self.reached = threading.Event()
        self.fail: BaseException | None = None
        self.writes = 0
        self._permits = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.open.clear()
        self.reached.clear()
        self.fail = None
        self.writes = 0
        self._permits = 0

    def let_through(self, n: int = 1) -> None:
        """Let ``n`` more shard writes pass while the gate is closed."""
        with self._lock:
            self._permits += n

    def wait_turn(self, timeout: float) -> bool:
        """Wait until the gate is open or a write may pass it; ``False`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.open.is_set():
            with self._lock:
                if self._permits:
                    self._permits -= 1
                    return True
            if time.monotonic() > deadline:
                return False
            self.open.wait(0.005)
        return True


GATE = Gate()


class GatedBackend(StorageBackend):
    """Every call goes to ``inner``; shard writes wait at :data:`GATE` first."""

    def __init__(self, inner: StorageBackend) -> None:
        self.inner = inner
        self.name = f"gated-{inner.name}"

    @property  # type: ignore[override]
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property  # type: ignore[override]
    def save_defaults(self) -> CheckpointOptions:
        return self.inner.save_defaults

    def begin(self, prefix: str, save_id: str, *, overwrite: bool = True) -> None:
        self.inner.begin(prefix, save_id, overwrite=overwrite)

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        GATE.reached.set()
        if not GATE.wait_turn(60):
            raise TimeoutError("the test never opened the gate")
        if GATE.fail is not None:
            raise GATE.fail
        GATE.writes += 1
        return self.inner.write_shard(prefix, spec, items)

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        self.inner.commit(prefix, shards, overwrite=overwrite)

    def abort(self, prefix: str, save_id: str) -> None:
        self.inner.abort(prefix, save_id)

    def open_reader(self, prefix: str) -> CheckpointReader:
        return self.inner.open_reader(prefix)

    def exists(self, prefix: str) -> bool:
        return self.inner.exists(prefix)

    def delete(self, prefix: str) -> None:
        self.inner.delete(prefix)

    def list_checkpoints(self, directory: str) -> list[str]:
        return self.inner.list_checkpoints(directory)

    def cleanup(self, directory: str, *, min_age: float = 600.0) -> list[str]:
        return self.inner.cleanup(directory, min_age=min_age)

    def read_file(self, path: str) -> VersionedBytes | None:
        return self.inner.read_file(path)

    def write_file(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        return self.inner.write_file(path, data, if_version=if_version)

    def delete_file(self, path: str) -> None:
        self.inner.delete_file(path)

    def dirname(self, path: str) -> str:
        return self.inner.dirname(path)

    def join(self, directory: str, name: str) -> str:
        return self.inner.join(directory, name)

    def close(self) -> None:
        self.inner.close()


def _factory(inner: str) -> Any:
    def make(url: str, options: CheckpointOptions) -> StorageBackend:
        return GatedBackend(plugins.open_backend(url, replace(options, backend=inner)))

    return make


class _Plugin:
    @plugins.hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        for inner in INNER:
            register(plugins.BackendSpec(f"gated-{inner}", _factory(inner), schemes=()))


@contextmanager
def gated_backends() -> Iterator[Gate]:
    """Register ``gated-<name>`` for each of :data:`INNER` while the block runs; yield the gate (closed)."""
    GATE.reset()
    plugins.register(_Plugin(), "gated-backends")
    try:
        yield GATE
    finally:
        GATE.open.set()
        plugins.unregister("gated-backends")
        GATE.reset()


def storage_error(message: str) -> StorageError:
    """The failure a gated write raises when the test sets ``GATE.fail``."""
    return StorageError(message)
