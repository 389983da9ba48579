"""The :class:`Coordinator` protocol and a base for coordinators built on a key-value store.

A coordinator is the one thing trackpoint needs from a multi-process job: who
am I, how many are we, and a way to exchange small byte strings with time-outs.
Everything else (who begins, who writes which tensor, who commits) is decided by
trackpoint from what the ranks exchange (see :mod:`trackpoint.distributed._save`).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from trackpoint.errors import CoordinationError, CoordinationTimeoutError

__all__ = ["DEFAULT_TIMEOUT", "Coordinator", "KeyValueCoordinator"]

#: Seconds a coordinator waits for the other processes at one step, unless told otherwise.
DEFAULT_TIMEOUT = 300.0


@runtime_checkable
class Coordinator(Protocol):
    """What trackpoint needs from a group of processes that save or restore one checkpoint together.

    Every process of the group (a *rank*) holds a coordinator and calls the
    same trackpoint operations in the same order with the same arguments, as
    in any SPMD program. The methods are collective: each rank calls them in
    the same order. Payloads are small (manifests, flags, error messages:
    kilobytes to a few megabytes), never tensor data.

    Implementations: :class:`~trackpoint.distributed.TorchCoordinator`,
    :class:`~trackpoint.distributed.JaxCoordinator`; ``docs/distributed.md``
    shows how to write one for another runtime (MPI, Ray).

    Notes for implementers
    ----------------------
    Every method must return or raise within its time-out: when another rank
    died or hangs, raise :class:`~trackpoint.errors.CoordinationTimeoutError`
    (or another :class:`~trackpoint.errors.CoordinationError`), never block
    forever. trackpoint relies on this to fail a save on every surviving rank.
    """

    @property
    def rank(self) -> int:
        """This process's index in the group, ``0 <= rank < world_size``; rank 0 commits."""
        ...

    @property
    def world_size(self) -> int:
        """How many processes the group has."""
        ...

    @property
    def timeout(self) -> float:
        """Default seconds each collective waits for the other ranks."""
        ...

    def barrier(self, *, timeout: float | None = None) -> None:
        """Return once every rank has called ``barrier``.

        Raises
        ------
        CoordinationTimeoutError
            Not every rank arrived within ``timeout`` seconds (default :attr:`timeout`).
        """
        ...

    def all_gather(self, data: bytes, *, timeout: float | None = None) -> list[bytes]:
        """Every rank's ``data``, indexed by rank; each rank gets the same list.

        Raises
        ------
        CoordinationTimeoutError
            Not every rank contributed within ``timeout`` seconds (default :attr:`timeout`).
        """
        ...

    def broadcast(self, data: bytes | None, *, root: int = 0, timeout: float | None = None) -> bytes:
        """``data`` of rank ``root`` on every rank (the other ranks pass ``None``).

        Raises
        ------
        CoordinationTimeoutError
            ``root`` did not send within ``timeout`` seconds (default :attr:`timeout`).
        """
        ...

    def set_if_absent(self, key: str, value: bytes) -> bytes:
        """Record ``value`` under ``key`` unless a value is recorded there already; return the recorded value.

        Not a collective: any rank may call it at any time, and it returns
        without waiting for the others. It must be atomic across the group:
        of all calls with one ``key``, on whatever ranks, exactly one records
        its ``value``, and every call, that one included, returns the value
        recorded. trackpoint records each save's commit decision this way:
        rank 0 commits only after recording "commit", and a rank that gives
        up waiting records "abort" first, so every rank follows one decision.

        Parameters
        ----------
        key
            A short ASCII name, new for each save. Once every rank has taken
            part in a later collective, trackpoint never uses the key again,
            so an implementation may forget it (one record at a time is
            enough).
        value
            At most 255 bytes.

        Raises
        ------
        CoordinationError
            The record could not be made or read (the store or service is gone).
        """
        ...


# Sequence numbers of key-value coordinators, per namespace: every coordinator of one
# namespace in this process shares one counter, so that ranks creating several
# coordinators (one per Checkpoint, say) still name each collective alike.
_sequences: dict[str, itertools.count[int]] = {}
_sequences_lock = threading.Lock()


def _next_sequence(namespace: str) -> int:
    with _sequences_lock:
        counter = _sequences.setdefault(namespace, itertools.count())
        return next(counter)


# Keys a thread of this process set in operations (per namespace, rank and thread), deleted once a
# later all-gather of an operation in the same thread completes. Each thread's operations follow one
# another, and every rank makes the same ones in the same order (an async save's writer thread its
# saves and state-file steps, the training loop its checks), so every rank has then left the
# collectives before it. Shared by the coordinators of one namespace, as the sequence numbers are.
_leftovers: dict[str, list[str]] = {}


def _remember(cleanup: str, keys: list[str]) -> None:
    with _sequences_lock:
        _leftovers.setdefault(cleanup, []).extend(keys)


@dataclass(slots=True)
class _Operation:
    """The operation a thread is in: what it is, its number, its key prefix, the number of its next collective."""

    kind: str
    number: int
    cleanup: str  # where its keys wait for deletion (see _leftovers)
    prefix: str
    collectives: itertools.count[int] = field(default_factory=itertools.count)


#: How an all-gather of an operation ended when some rank saw every contribution; any other record
#: is the number of the rank that gave up waiting first.
_COMPLETE = b"complete"


class KeyValueCoordinator(ABC):
    """A :class:`Coordinator` over a key-value store that every rank reaches (torch's TCPStore, JAX's service).

    Each collective gets the next number of the coordinator's namespace; rank
    ``r`` stores its contribution under ``<namespace>/<number>/<r>`` and reads
    the others' with a deadline. :meth:`set_if_absent` records under
    ``<namespace>/once/<key>``. A rank deletes its own keys once an all-gather
    after them completes, because every rank has then finished reading them.

    Inside :meth:`operation` (trackpoint runs each coordinated save, restore
    and state-file update in one), collectives are numbered within the
    operation instead, under ``<namespace>/<kind>.<n>/<number>/<r>``, and
    each all-gather ends with one record that every rank follows, so a rank
    that arrives after the others gave up fails at once instead of taking
    another operation's messages for its own.

    Parameters
    ----------
    rank, world_size
        This process's place in the group.
    timeout
        Default seconds a collective waits.
    namespace
        Key prefix; ranks of one group must use the same, other groups another.
    """

    def __init__(self, rank: int, world_size: int, *, timeout: float, namespace: str) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise CoordinationError(f"{type(self).__name__}: rank {rank} is outside a group of {world_size}")
        if not timeout > 0:
            raise ValueError(f"{type(self).__name__}: timeout must be positive seconds, got {timeout!r}")
        self._rank = rank
        self._world_size = world_size
        self._timeout = float(timeout)
        self._namespace = namespace
        # Own keys of collectives outside operations, readable by others until the next all-gather completes.
        self._pending: list[str] = []
        # The operation each thread is in, if any.
        self._local = threading.local()

    # -------------------------------------------------------------- the store
    @abstractmethod
    def _set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` (a new key)."""

    @abstractmethod
    def _get(self, keys: Sequence[str], timeout: float) -> list[bytes]:
        """The values of ``keys``, waiting up to ``timeout`` seconds for them to be set.

        Raise :class:`CoordinationTimeoutError` when they are not all set in time
        and :class:`CoordinationError` when the store fails.
        """

    @abstractmethod
    def _delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; best effort."""

    @abstractmethod
    def _set_if_absent(self, key: str, value: bytes) -> bytes:
        """Store ``value`` under ``key`` unless ``key`` is set; return the value ``key`` holds afterwards.

        Must be one atomic operation of the store (torch's ``compare_set``,
        an insert that refuses to overwrite), never a read followed by a
        write: two ranks calling it at once must get the same value back.
        """

    # ------------------------------------------------------------ collectives
    @property
    def rank(self) -> int:
        """This process's index in the group."""
        return self._rank

    @property
    def world_size(self) -> int:
        """How many processes the group has."""
        return self._world_size

    @property
    def timeout(self) -> float:
        """Default seconds each collective waits."""
        return self._timeout

    @contextlib.contextmanager
    def operation(self, kind: str) -> Iterator[None]:
        """Run the collectives this thread makes meanwhile as one operation, in a namespace of its own.

        Every rank calls the same operations in the same order, so the
        ``n``-th operation of ``kind`` on one rank is the ``n``-th on every
        other: its collectives use keys under ``<namespace>/<kind>.<n>/``,
        numbered from 0 within it. A rank that skipped collectives of a failed
        operation therefore starts the next one in step with the others, and a
        rank that is late only ever meets messages of its own operation.

        Each all-gather inside an operation ends with one record, made
        atomically as :meth:`set_if_absent` makes its records: the first rank
        to finish records whether it saw every contribution or gave up
        waiting, and every rank follows that record. Either every rank gets
        the gathered values (one whose wait timed out reads them again), or
        every rank raises :class:`~trackpoint.errors.CoordinationTimeoutError`,
        a rank that arrives after another gave up included, at once.

        Parameters
        ----------
        kind
            What the operation is (``"save"``, ``"restore"``, ...). Each kind
            is numbered on its own, so operations of different kinds may run
            in different threads (an async save's writer thread, a training
            loop's preemption check) without taking each other's numbers.
        """
        # Counted per rank too, so that ranks sharing a process (threads in tests) count like processes.
        stream = f"{self._namespace}/{kind}@{self._rank}"
        number = _next_sequence(stream)
        previous = getattr(self._local, "operation", None)
        cleanup = f"{self._namespace}@{self._rank}#{threading.get_ident()}"
        op = _Operation(kind, number, cleanup, f"{self._namespace}/{kind}.{number}")
        self._local.operation = op
        failed: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self._local.operation = previous
            self._leave(op, failed)

    def _leave(self, op: _Operation, failed: BaseException | None) -> None:
        """End ``op``: the other ranks say they are done with the store; rank 0 waits until they have.

        The store usually lives in rank 0's process (torch's ``TCPStore`` of a ``tcp://`` or ``env://``
        group, JAX's coordination service). Rank 0 is often the first to finish an operation, with
        nothing left to read, while the others still read its outcome: if its program then ended, they
        would lose the store and fail a save that succeeded. So rank 0 returns only once every other
        rank has recorded that it left the operation. Not after a coordination failure, whose cause (a
        rank that died or hangs) would hold rank 0 up for another time-out, nor after an interrupt.
        """
        if self._world_size == 1 or isinstance(failed, CoordinationError):
            return
        if failed is not None and not isinstance(failed, Exception) and self._rank == 0:
            return  # KeyboardInterrupt, SystemExit: leave now
        left = [f"{op.prefix}/left/{r}" for r in range(1, self._world_size)]
        if self._rank != 0:
            with contextlib.suppress(CoordinationError):  # the store is gone: nobody waits for this record
                self._set(left[self._rank - 1], b"")
            return
        try:
            self._get(left, self._timeout)
        except CoordinationError:
            # A rank died or hangs after the outcome was decided: the outcome stands here, and that rank
            # raises its own error if it is alive.
            return
        self._delete(left)

    def _current(self) -> _Operation | None:
        operation: _Operation | None = getattr(self._local, "operation", None)
        return operation

    def _key(self, sequence: int, rank: int) -> str:
        return f"{self._namespace}/{sequence}/{rank}"

    @staticmethod
    def _where(sequence: int, op: _Operation | None) -> str:
        return f"collective {sequence}" if op is None else f"collective {sequence} of {op.kind} operation {op.number}"

    def _wait(
        self, keys: Sequence[str], timeout: float | None, what: str, sequence: int, op: _Operation | None = None
    ) -> list[bytes]:
        seconds = self._timeout if timeout is None else float(timeout)
        start = time.monotonic()
        try:
            return self._get(keys, seconds)
        except CoordinationTimeoutError as exc:
            raise CoordinationTimeoutError(
                f"{type(self).__name__}: rank {self._rank} of {self._world_size} waited "
                f"{time.monotonic() - start:.1f} s (time-out {seconds:g} s) for {what} at "
                f"{self._where(sequence, op)}; another rank died, hangs or is slower than the time-out (raise the "
                "coordinator's timeout if its work legitimately takes longer)"
            ) from exc

    def all_gather(self, data: bytes, *, timeout: float | None = None) -> list[bytes]:
        # docstring inherited
        op = self._current()
        if op is not None:
            return self._gather_in(op, bytes(data), timeout)
        sequence = _next_sequence(self._namespace)
        own = self._key(sequence, self._rank)
        self._set(own, bytes(data))
        values = self._wait(
            [self._key(sequence, r) for r in range(self._world_size)], timeout, "every rank's contribution", sequence
        )
        # Every rank has contributed to this collective, so it has read every earlier one.
        done, self._pending = self._pending, [own]
        if done:
            self._delete(done)
        return values

    def _gather_in(self, op: _Operation, data: bytes, timeout: float | None) -> list[bytes]:
        """An all-gather inside ``op``: wait, then follow the one record of how it ended (see :meth:`operation`)."""
        sequence = next(op.collectives)
        keys = [f"{op.prefix}/{sequence}/{r}" for r in range(self._world_size)]
        record = f"{op.prefix}/{sequence}/end"
        self._set(keys[self._rank], data)
        mine = [keys[self._rank]]  # keys of this collective set here: deleted after a later all-gather
        try:
            values: list[bytes] | None = None
            gave_up: CoordinationTimeoutError | None = None
            try:
                values = self._wait(keys, timeout, "every rank's contribution", sequence, op)
            except CoordinationTimeoutError as exc:
                gave_up = exc
            ending = _COMPLETE if gave_up is None else str(self._rank).encode()
            recorded = self._set_if_absent(record, ending)
            if recorded == ending:
                mine.append(record)
            if recorded != _COMPLETE:
                if gave_up is not None:
                    raise gave_up
                other = recorded.decode(errors="replace")
                raise CoordinationTimeoutError(
                    f"{type(self).__name__}: rank {self._rank} of {self._world_size} reached "
                    f"{self._where(sequence, op)} after rank {other} gave up waiting for it (time-out "
                    f"{self._timeout:g} s): the operation failed on rank {other} and so on every rank; make every rank "
                    "reach trackpoint's calls within the time-out of each other, or raise the coordinator's timeout "
                    "(the next operation starts in step on every rank)"
                )
            if values is None:
                # Another rank saw every contribution (its wait raced this rank's time-out): all are stored.
                values = self._wait(keys, min(self._timeout, 10.0), "every rank's contribution", sequence, op)
        except BaseException:
            _remember(op.cleanup, mine)
            raise
        # Every rank has contributed to this collective, so it has left every earlier one of this thread.
        with _sequences_lock:
            done = _leftovers.pop(op.cleanup, [])
            _leftovers[op.cleanup] = mine
        if done:
            self._delete(done)
        return values

    def broadcast(self, data: bytes | None, *, root: int = 0, timeout: float | None = None) -> bytes:
        # docstring inherited
        if not 0 <= root < self._world_size:
            raise CoordinationError(f"{type(self).__name__}: root {root} is outside a group of {self._world_size}")
        op = self._current()
        if op is None:
            sequence = _next_sequence(self._namespace)
            key = self._key(sequence, root)
        else:
            sequence = next(op.collectives)
            key = f"{op.prefix}/{sequence}/{root}"
        if self._rank == root:
            if data is None:
                raise CoordinationError(f"{type(self).__name__}: broadcast root {root} must pass bytes, got None")
            self._set(key, bytes(data))
            if op is None:
                self._pending.append(key)
            else:
                _remember(op.cleanup, [key])
            return bytes(data)
        return self._wait([key], timeout, f"rank {root}'s broadcast", sequence, op)[0]

    def barrier(self, *, timeout: float | None = None) -> None:
        # docstring inherited
        self.all_gather(b"", timeout=timeout)

    def set_if_absent(self, key: str, value: bytes) -> bytes:
        # docstring inherited
        if len(value) > 255:
            raise CoordinationError(f"{type(self).__name__}: a record holds at most 255 bytes, got {len(value)}")
        name = f"{self._namespace}/once/{key}"
        recorded = self._set_if_absent(name, bytes(value))
        if recorded == value:
            # Whichever rank recorded it deletes it after the next all-gather (in an operation of the same
            # thread, inside one): by then every rank has finished the step that reads it. (A loser holding
            # the same value deletes it too: harmless.)
            op = self._current()
            if op is None:
                self._pending.append(name)
            else:
                _remember(op.cleanup, [name])
        return recorded

    def __repr__(self) -> str:
        return f"<{type(self).__name__} rank {self._rank} of {self._world_size}, timeout {self._timeout:g} s>"
