"""An observer plugin that records every event, registered on a fresh plugin manager per test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from observers import Deletes
from trackpoint import observe, plugins
from trackpoint.backends import memory
from trackpoint.plugins import hookimpl


class Recorder:
    """Implements every event hook with every parameter; ``events`` holds ``(hook, fields)`` in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def _add(self, hook: str, **fields: Any) -> None:
        with self._lock:
            self.events.append((hook, fields))
            self.threads.append(threading.current_thread().name)

    def names(self) -> list[str]:
        return [name.removeprefix("trackpoint_") for name, _ in self.events]

    def of(self, short: str) -> list[dict[str, Any]]:
        return [f for name, f in self.events if name == f"trackpoint_{short}"]

    def clear(self) -> None:
        self.events.clear()
        self.threads.clear()

    @hookimpl
    def trackpoint_save_started(
        self, path: str, operation: str, backend: str, total_bytes: int, num_tensors: int, is_async: bool
    ) -> None:
        self._add("trackpoint_save_started", **locals_of(locals()))

    @hookimpl
    def trackpoint_save_progress(
        self, path: str, operation: str, written_bytes: int, total_bytes: int, seconds: float
    ) -> None:
        self._add("trackpoint_save_progress", **locals_of(locals()))

    @hookimpl
    def trackpoint_save_committed(
        self,
        path: str,
        operation: str,
        backend: str,
        nbytes: int,
        num_tensors: int,
        seconds: float,
        blocking_seconds: float,
        is_async: bool,
    ) -> None:
        self._add("trackpoint_save_committed", **locals_of(locals()))

    @hookimpl
    def trackpoint_save_failed(
        self,
        path: str,
        operation: str,
        backend: str,
        error: BaseException,
        seconds: float,
        blocking_seconds: float,
        is_async: bool,
    ) -> None:
        self._add("trackpoint_save_failed", **locals_of(locals()))

    @hookimpl
    def trackpoint_restore_started(
        self, path: str, operation: str, backend: str, total_bytes: int, num_tensors: int
    ) -> None:
        self._add("trackpoint_restore_started", **locals_of(locals()))

    @hookimpl
    def trackpoint_restore_progress(
        self, path: str, operation: str, read_bytes: int, total_bytes: int, seconds: float
    ) -> None:
        self._add("trackpoint_restore_progress", **locals_of(locals()))

    @hookimpl
    def trackpoint_restore_finished(
        self, path: str, operation: str, backend: str, nbytes: int, num_tensors: int, seconds: float
    ) -> None:
        self._add("trackpoint_restore_finished", **locals_of(locals()))

    @hookimpl
    def trackpoint_restore_failed(
        self, path: str, operation: str, backend: str, error: BaseException, seconds: float
    ) -> None:
        self._add("trackpoint_restore_failed", **locals_of(locals()))


def locals_of(scope: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scope.items() if k != "self"}


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("TRACKPOINT_BACKEND", "TRACKPOINT_BLOCK_BACKENDS", "TRACKPOINT_PROGRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    memory.clear()
    yield
    plugins.reset()
    memory.clear()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    plugins.register(rec, "recorder")
    yield rec


@pytest.fixture
def recorder_class() -> type[Recorder]:
    """The :class:`Recorder` class (fixtures avoid importing from a conftest module)."""
    return Recorder


@pytest.fixture
def every_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress events unthrottled, so a test sees one per report."""
    monkeypatch.setattr(observe, "PROGRESS_INTERVAL", 0.0)


@pytest.fixture
def deletes() -> Deletes:
    """A :class:`Deletes` observer, registered on the test's plugin manager."""
    observer = Deletes()
    plugins.register(observer, "deletes")
    return observer
