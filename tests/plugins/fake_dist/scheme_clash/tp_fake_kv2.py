"""A second third-party plugin that also claims ``kv://`` (under another backend name): a scheme clash."""

from __future__ import annotations

from collections.abc import Callable

from trackpoint.backends.memory import MemoryBackend
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import CheckpointOptions


class Kv2Backend(MemoryBackend):
    """Distinguishable from the built-in memory backend and from the other claimant."""


def _create(url: str, options: CheckpointOptions) -> Kv2Backend:
    return Kv2Backend()


@hookimpl
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(BackendSpec(name="kv2", factory=_create, schemes=("kv", "kv2"), description="kv store, rewritten"))


@hookimpl
def trackpoint_detect_backends(url: str, options: CheckpointOptions) -> list[str] | None:
    # Its checkpoints at kv:// URLs: a name that must not break detection while the backend is left out.
    return ["kv2"] if url.startswith("kv://") else None
