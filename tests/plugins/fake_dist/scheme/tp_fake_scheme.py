"""A third-party plugin adding a new URL scheme, ``fake://`` (an in-memory store underneath)."""

from __future__ import annotations

from collections.abc import Callable

from trackpoint.backends.memory import MemoryBackend
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import CheckpointOptions


class FakeBackend(MemoryBackend):
    """Distinguishable from the built-in memory backend."""


def _create(url: str, options: CheckpointOptions) -> FakeBackend:
    return FakeBackend()


@hookimpl
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(BackendSpec(name="fake", factory=_create, schemes=("fake",), description="fake scheme for tests"))
