"""A third-party plugin that registers ``memory`` again without override=True: a clash."""

from __future__ import annotations

from collections.abc import Callable

from trackpoint.backends.memory import MemoryBackend
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import CheckpointOptions


def _create(url: str, options: CheckpointOptions) -> MemoryBackend:
    return MemoryBackend()


@hookimpl
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(BackendSpec(name="memory", factory=_create, schemes=("memory2",)))
