"""``JaxCoordinator``: a :class:`~trackpoint.distributed.Coordinator` over ``jax.distributed``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trackpoint.distributed._coordinator import DEFAULT_TIMEOUT, KeyValueCoordinator
from trackpoint.errors import BackendUnavailableError, CoordinationError, CoordinationTimeoutError

__all__ = ["JaxCoordinator"]

#: A value of at least this many bytes gets an empty marker key beside it (its key and this suffix), which
#: ``_present`` reads instead: the service has no read that leaves the value out, and a rank naming the
#: ranks it waits for would otherwise fetch every other rank's plan (a message per tensor) to see it is there.
_MARKED_BYTES = 1024
_MARK = "~set"


def _global_state() -> Any:
    try:
        from jax._src import distributed
    except ImportError as exc:
        raise BackendUnavailableError(
            "JaxCoordinator needs JAX: pip install 'trackpoint[jax]' (or install jax yourself)"
        ) from exc
    return distributed.global_state


class JaxCoordinator(KeyValueCoordinator):
    """Coordinate the processes of a ``jax.distributed`` job.

    Messages go through the key-value store of JAX's coordination service
    (the service ``jax.distributed.initialize`` starts in process 0), whose
    blocking reads take a time-out; ranks are JAX's process indices.

    Parameters
    ----------
    timeout
        Seconds each step of a save or restore waits for the other processes,
        including the time they take to write their share.

    Raises
    ------
    BackendUnavailableError
        JAX is not installed.
    CoordinationError
        ``jax.distributed.initialize`` has not been called in this process.

    Notes
    -----
    JAX offers the store only through ``jax._src.distributed.global_state``
    (its client's ``key_value_set_bytes`` / ``blocking_key_value_get_bytes``),
    which trackpoint uses as Orbax does. When a process dies, a waiting rank
    fails with :class:`~trackpoint.errors.CoordinationTimeoutError` after
    ``timeout``; JAX then ends the others with ``SIGABRT`` once
    ``heartbeat_timeout_seconds`` (of ``jax.distributed.initialize``) have
    passed, unless ``jax_enable_recoverability`` is on. When process 0 (which
    runs the service) dies, JAX ends the others at once either way.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        state = _global_state()
        if state.client is None:
            raise CoordinationError(
                "JaxCoordinator: jax.distributed is not initialised; call jax.distributed.initialize(...) in every "
                "process first"
            )
        self._client = state.client
        super().__init__(int(state.process_id), int(state.num_processes), timeout=timeout, namespace="trackpoint")

    def _set(self, key: str, value: bytes) -> None:
        try:
            self._client.key_value_set_bytes(key, value)
            if len(value) >= _MARKED_BYTES:
                self._client.key_value_set_bytes(key + _MARK, b"")  # after the value: a marker means it is there
        except Exception as exc:  # jaxlib raises its own runtime error type
            raise CoordinationError(
                f"JaxCoordinator: process {self.rank} could not write to JAX's coordination service: {exc}"
            ) from exc

    def _get(self, keys: Sequence[str], timeout: float) -> list[bytes]:
        import time

        deadline = time.monotonic() + timeout
        values = []
        for key in keys:
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                values.append(bytes(self._client.blocking_key_value_get_bytes(key, remaining_ms)))
            except Exception as exc:  # jaxlib raises its own runtime error type
                if "DEADLINE_EXCEEDED" in str(exc) or "timed out" in str(exc).lower():
                    raise CoordinationTimeoutError(str(exc)) from exc
                raise CoordinationError(
                    f"JaxCoordinator: process {self.rank} lost JAX's coordination service: {exc}"
                ) from exc
        return values

    def _present(self, keys: Sequence[str]) -> list[bool]:
        # The marker of a large value, else the (small) value itself.
        return [self._exists(key + _MARK) or self._exists(key) for key in keys]

    def _exists(self, key: str) -> bool:
        """Whether ``key`` is set now: a non-blocking read, NOT_FOUND for a key not set."""
        try:
            self._client.key_value_try_get_bytes(key)
            return True
        except Exception as exc:  # jaxlib raises its own runtime error type
            if "NOT_FOUND" not in str(exc) and "not found" not in str(exc).lower():
                raise CoordinationError(
                    f"JaxCoordinator: process {self.rank} could not read {key!r} from JAX's coordination service: {exc}"
                ) from exc
            return False

    def _set_if_absent(self, key: str, value: bytes) -> bytes:
        # The coordination service inserts a key atomically and, without allow_overwrite, refuses one
        # that exists (ALREADY_EXISTS): then the value recorded first is the one to return.
        try:
            self._client.key_value_set_bytes(key, value, allow_overwrite=False)
            return value
        except Exception as exc:  # jaxlib raises its own runtime error type
            if "ALREADY_EXISTS" not in str(exc):
                raise CoordinationError(
                    f"JaxCoordinator: process {self.rank} could not write to JAX's coordination service: {exc}"
                ) from exc
        try:
            return bytes(self._client.key_value_try_get_bytes(key))
        except Exception as exc:  # jaxlib raises its own runtime error type
            raise CoordinationError(
                f"JaxCoordinator: process {self.rank} could not read {key!r} from JAX's coordination service: {exc}"
            ) from exc

    def _delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            for name in (key, key + _MARK):  # the marker, if the value had one
                try:
                    self._client.key_value_delete(name)
                except Exception:  # noqa: BLE001 - best effort: a key left behind costs a few bytes
                    return
