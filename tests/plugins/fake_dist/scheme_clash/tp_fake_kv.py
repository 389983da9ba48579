"""A third-party plugin serving ``kv://`` URLs (an in-memory store underneath)."""

from __future__ import annotations

from collections.abc import Callable

from trackpoint.backends.memory import MemoryBackend
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import CheckpointOptions


class KvBackend(MemoryBackend):
    """Distinguishable from the built-in memory backend and from the other claimant."""


def _create(url: str, options: CheckpointOptions) -> KvBackend:
    return KvBackend()


@hookimpl
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(BackendSpec(name="kv", factory=_create, schemes=("kv",), description="kv store"))
