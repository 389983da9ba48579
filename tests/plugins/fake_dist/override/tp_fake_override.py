"""A third-party plugin replacing the built-in ``memory`` backend on purpose (override=True)."""

from __future__ import annotations

from collections.abc import Callable

from trackpoint.backends.memory import MemoryBackend
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import CheckpointOptions


class FastMemoryBackend(MemoryBackend):
    """The replacement."""


def _create(url: str, options: CheckpointOptions) -> FastMemoryBackend:
    return FastMemoryBackend()


@hookimpl
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="memory", factory=_create, schemes=("memory",), description="replacement memory", override=True
        )
    )
