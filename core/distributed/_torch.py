"""``TorchCoordinator``: a :class:`~trackpoint.distributed.Coordinator` over ``torch.distributed``."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Sequence
from typing import Any

from trackpoint.distributed._coordinator import DEFAULT_TIMEOUT, KeyValueCoordinator
from trackpoint.errors import BackendUnavailableError, CoordinationError, CoordinationTimeoutError

__all__ = ["TorchCoordinator"]


def _dist() -> Any:
    try:
        import torch.distributed as dist
    except ImportError as exc:
        raise BackendUnavailableError(
            "TorchCoordinator needs PyTorch: pip install 'trackpoint[torch]' (or install torch yourself)"
        ) from exc
    return dist


class TorchCoordinator(KeyValueCoordinator):
    """Coordinate ranks of an initialised ``torch.distributed`` process group.

    The ranks exchange trackpoint's small messages through the process
    group's key-value store (the ``TCPStore`` that ``init_process_group``
    created), not through collectives of the communication backend: a store
    read takes a time-out of its own, so a rank that died makes the others
    fail after ``timeout`` seconds instead of hanging until the group's
    collective time-out (30 minutes by default). Any backend works (gloo,
    nccl), and no tensor is moved.

    Parameters
    ----------
    group
        The process group whose ranks save together; ``None`` for the default
        (world) group. Ranks are numbered within the group.
    timeout
        Seconds each step of a save or restore waits for the other ranks,
        including the time they take to write their share. Set it above the
        slowest rank's write time.
    store
        The store to exchange messages through; by default the one the
        default process group was initialised with. Each thread that uses
        the coordinator talks to it through a clone of its own
        (``Store.clone``), so that one thread's wait, such as a
        preemption check in the training loop, never holds up another's
        request, such as an async save's writer thread: a store client
        serves one request at a time. A store that cannot be cloned is
        shared by every thread.

    Raises
    ------
    BackendUnavailableError
        PyTorch is not installed.
    CoordinationError
        ``torch.distributed`` is not initialised, or this process is not in ``group``.
    """

    def __init__(self, group: Any = None, *, timeout: float = DEFAULT_TIMEOUT, store: Any = None) -> None:
        dist = _dist()
        if not dist.is_available() or not dist.is_initialized():
            raise CoordinationError(
                "TorchCoordinator: torch.distributed is not initialised; call "
                "torch.distributed.init_process_group(...) on every rank first"
            )
        rank = dist.get_rank(group)
        if rank < 0:
            raise CoordinationError("TorchCoordinator: this process is not a member of the given process group")
        world_size = dist.get_world_size(group)
        if store is None:
            from torch.distributed import distributed_c10d

            store = distributed_c10d._get_default_store()
        name = (
            "world" if group is None else str(getattr(group, "group_name", "") or dist.get_process_group_ranks(group))
        )
        self._store = store
        self._clients = threading.local()
        super().__init__(rank, world_size, timeout=timeout, namespace=f"trackpoint/{name!s}")

    def _client(self) -> Any:
        """This thread's client of the store: a clone made on first use, or the store if it has no clones."""
        client = getattr(self._clients, "store", None)
        if client is None:
            try:
                client = self._store.clone()
            except Exception:  # noqa: BLE001 - a Python subclass of Store raises RuntimeError ("pure virtual")
                client = self._store
            self._clients.store = client
        return client

    def _set(self, key: str, value: bytes) -> None:
        try:
            self._client().set(key, value)
        except Exception as exc:  # torch raises RuntimeError subclasses of many kinds
            raise CoordinationError(
                f"TorchCoordinator: rank {self.rank} could not write to the process group's store: {exc} "
                "(the store lives in rank 0's process: did rank 0 exit?)"
            ) from exc

    def _get(self, keys: Sequence[str], timeout: float) -> list[bytes]:
        dist = _dist()
        try:
            client = self._client()
            client.wait(list(keys), datetime.timedelta(seconds=timeout))
            values = client.multi_get(list(keys))
        except dist.DistStoreError as exc:
            if "timeout" in str(exc).lower():
                raise CoordinationTimeoutError(str(exc)) from exc
            raise self._failed(exc) from exc
        except Exception as exc:  # torch raises RuntimeError subclasses of many kinds
            raise self._failed(exc) from exc
        return [bytes(v) for v in values]

    def _present(self, keys: Sequence[str]) -> list[bool]:
        # ``check`` answers at once, without the values (a wait that timed out would also make torch log a
        # warning per key), for several keys together: halving the keys that are not all there finds the
        # missing ones in a few requests, not one per rank.
        out = [True] * len(keys)
        try:
            client = self._client()

            def look(low: int, high: int) -> None:
                if client.check(list(keys[low:high])):
                    return
                if high - low == 1:
                    out[low] = False
                    return
                middle = (low + high) // 2
                look(low, middle)
                look(middle, high)

            if keys:
                look(0, len(keys))
        except Exception as exc:  # torch raises RuntimeError subclasses of many kinds
            raise self._failed(exc) from exc
        return out

    def _failed(self, exc: BaseException) -> CoordinationError:
        return CoordinationError(
            f"TorchCoordinator: rank {self.rank} lost the process group's store: {exc} "
            "(the store lives in rank 0's process: did rank 0 exit?)"
        )

    def _set_if_absent(self, key: str, value: bytes) -> bytes:
        # compare_set with an empty expected value sets a missing key and otherwise returns the value
        # stored, in one request the store serves atomically (TCPStore, FileStore, HashStore, PrefixStore).
        try:
            return bytes(self._client().compare_set(key, "", value))
        except Exception as exc:  # torch raises RuntimeError subclasses of many kinds
            raise self._failed(exc) from exc

    def _delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self._client().delete_key(key)
            except Exception:  # noqa: BLE001 - best effort: a key left behind costs a few bytes
                return
