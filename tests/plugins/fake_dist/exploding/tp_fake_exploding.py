"""A third-party plugin whose registration hook raises; it also answers the selection hook."""

from __future__ import annotations

from collections.abc import Callable

from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import CheckpointOptions


@hookimpl
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    raise RuntimeError("cannot describe myself")


@hookimpl
def trackpoint_select_backend(url: str, options: CheckpointOptions) -> str | None:
    return "exploding"
