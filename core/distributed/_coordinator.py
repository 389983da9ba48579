"""The :class:`Coordinator` protocol and a base for coordinators built on a key-value store.

A coordinator is the one thing trackpoint needs from a multi-process job: who
am I, how many are we, and a way to exchange small byte strings with time-outs.
Everything else (who begins, who writes which tensor, who commits) is decided by
trackpoint from what the ranks exchange (see :mod:`trackpoint.distributed._save`).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
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

_log = logging.getLogger("trackpoint")

#: A wait that lasts this fraction of its time-out is logged (a warning naming the ranks still awaited),
#: and again at each further multiple of it: a job held up by a dead rank says what it waits for long
#: before the time-out ends the wait.
PROGRESS_FRACTION = 0.25

#: What this thread is doing, for the coordinator's warnings ("the writing step of saving 'gs://...'"):
#: set by trackpoint around each collective (``_driver.collective``). The coordinator itself knows only
#: the collective's number.
current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar("trackpoint_current_step", default=None)


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


# Rank 0's record of the ranks that did not confirm leaving an operation in time (they died or hang), per
# namespace: later operations do not wait for them again until they take part in an all-gather again or a
# confirmation of theirs turns up late. Without it, a rank that died right after its last message would hold
# rank 0 up once per operation (a manager's save, then its state-file step).
_absent: dict[str, set[int]] = {}

# Rank 0's record of the confirmations ("left" keys) it has not seen, per namespace and rank: those it gave
# up on and those of operations it did not wait for. A slow rank sets them later; rank 0 deletes them once
# it sees them, so that they do not stay in the store. At most _LATE_KEPT per rank: a rank that died never
# sets them, and each is checked at every operation's end.
_late: dict[str, dict[int, list[str]]] = {}
_LATE_KEPT = 16

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
    gathered: bool = False  # an all-gather of it completed: every rank was alive then


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

    A wait that lasts a quarter of its time-out (:data:`PROGRESS_FRACTION`)
    logs a warning on the ``trackpoint`` logger naming the ranks it still
    waits for, and again after each further quarter; the
    :class:`~trackpoint.errors.CoordinationTimeoutError` at the end names
    them too. To name them, the coordinator asks the store which keys are
    set: override ``_present`` when the store can answer without a wait (the
    default reads each key with a wait of a millisecond).

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

        The store usually lives in rank 0's process (torch's ``TCPStore`` of a ``tcp://`` or ``env://`` group,
        JAX's coordination service). Rank 0 is often the first to finish an operation, with nothing left to
        read, while the others still read its outcome: if its program then ended, they would lose the store
        and fail a save that succeeded. So rank 0 returns only once every other rank has recorded that it
        left the operation. Not after a coordination failure, whose cause (a rank that died or hangs) would
        hold rank 0 up for another time-out, nor after an interrupt.

        The others record that they left right after they read the outcome, so rank 0 waits at most half
        the time-out: a rank that has not recorded it by then died or hangs, the outcome stands, and a live
        rank raises its own error. Half, so that a rank waiting for rank 0 in the next operation (a
        manager's state-file step right after its save) still hears from rank 0 within its own time-out.
        Such a rank is not waited for again in later operations until it takes part in an all-gather
        again, or its confirmation turns up late (see :meth:`_recheck`): a rank that died right after its
        last message holds rank 0 up once, not once per operation, and a slow one is waited for again.
        """
        if self._world_size == 1 or isinstance(failed, CoordinationError):
            return
        if failed is not None and not isinstance(failed, Exception) and self._rank == 0:
            return  # KeyboardInterrupt, SystemExit: leave now
        left = {r: f"{op.prefix}/left/{r}" for r in range(1, self._world_size)}
        if self._rank != 0:
            with contextlib.suppress(CoordinationError):  # the store is gone: nobody waits for this record
                self._set(left[self._rank], b"")
            return
        self._recheck(op, left)
        with _sequences_lock:
            absent = _absent.setdefault(self._namespace, set())
            if op.gathered:
                absent.clear()  # every rank took part in this operation: none is known to be gone
            awaited = [r for r in left if r not in absent]
            skipped = [r for r in left if r in absent]
        confirmed = awaited
        if awaited:
            try:
                self._wait(
                    [left[r] for r in awaited],
                    self._timeout / 2,
                    "{ranks} to confirm reading the outcome of",
                    None,
                    op,
                    ranks=awaited,
                    warn=False,  # one warning below, not one per quarter on top of the all-gathers' own
                )
            except CoordinationTimeoutError as exc:
                missing: list[int] = list(getattr(exc, "missing_ranks", []))
                # The store could not tell who is missing: treat every awaited rank as missing, since none of
                # them confirmed in time for all we know.
                gone = missing or awaited
                with _sequences_lock:
                    absent.update(gone)
                skipped += gone
                confirmed = [r for r in awaited if r not in gone]
                _log.warning(
                    "%s: rank 0 of %d leaves %s without confirmation from %s after %.1f s (half the time-out): "
                    "died or hangs; the outcome stands, and later operations do not wait for this confirmation "
                    "from %s until it turns up or %s takes part in an all-gather again",
                    type(self).__name__,
                    self._world_size,
                    self._where(None, op),
                    _ranks_text(missing) if missing else "another rank",
                    self._timeout / 2,
                    _ranks_text(missing) if missing else "it",
                    "it" if len(missing) < 2 else "each",
                )
            except CoordinationError:
                # The store failed: nobody can read from it any more, so there is nothing to wait for.
                return
        # A rank not waited for may still set its key: remembered, deleted once seen (see _recheck), not
        # deleted now, which would come before the key is set and leave it in the store.
        with _sequences_lock:
            late = _late.setdefault(self._namespace, {})
            for r in skipped:
                keys = late.setdefault(r, [])
                keys.append(left[r])
                del keys[:-_LATE_KEPT]
        if confirmed:
            self._delete([left[r] for r in confirmed])

    def _recheck(self, op: _Operation, left: dict[int, str]) -> None:
        """Delete the late confirmations that have turned up; a rank that sent one is waited for again.

        A rank marked absent may only be slow: once its confirmation of an earlier operation, or of ``op``,
        is set, it is alive and reads the store, so rank 0 must again wait for it before leaving (its program
        ending would take the store away). Asked without waiting (``_present``): a rank that is really gone
        costs no time.
        """
        with _sequences_lock:
            pending = {r: list(keys) for r, keys in _late.get(self._namespace, {}).items() if keys}
        for r, keys in pending.items():
            try:
                here = self._present([*keys, left[r]])
            except CoordinationError:
                continue  # the store cannot tell now: asked again at the next operation's end
            seen = [key for key, set_ in zip(keys, here[: len(keys)], strict=True) if set_]
            if seen:
                self._delete(seen)
            with _sequences_lock:
                late = _late.setdefault(self._namespace, {})
                rest = [key for key in late.get(r, []) if key not in seen]
                if rest:
                    late[r] = rest
                else:
                    late.pop(r, None)
                if any(here):
                    _absent.setdefault(self._namespace, set()).discard(r)

    def _current(self) -> _Operation | None:
        operation: _Operation | None = getattr(self._local, "operation", None)
        return operation

    def _key(self, sequence: int, rank: int) -> str:
        return f"{self._namespace}/{sequence}/{rank}"

    @staticmethod
    def _where(sequence: int | None, op: _Operation | None) -> str:
        if sequence is None:
            assert op is not None, "a wait outside operations belongs to a collective"
            return f"{op.kind} operation {op.number}"
        return f"collective {sequence}" if op is None else f"collective {sequence} of {op.kind} operation {op.number}"

    def _present(self, keys: Sequence[str]) -> list[bool]:
        """Whether each of ``keys`` is set now (for messages naming the ranks a wait is still waiting for).

        A subclass whose store answers without waiting (torch's ``check``, a non-blocking get) should
        override this; by default each key is read with a wait of a millisecond.
        """
        out = []
        for key in keys:
            try:
                self._get([key], 0.001)
                out.append(True)
            except CoordinationTimeoutError:
                out.append(False)
        return out

    def _missing(self, keys: Sequence[str], owners: Sequence[int]) -> list[int]:
        """The ranks among ``owners`` (``owners[i]`` sets ``keys[i]``) whose key is not set; ``[]`` if unknown."""
        try:
            present = self._present(keys)
        except CoordinationError:
            return []
        return [rank for rank, here in zip(owners, present, strict=True) if not here]

    def _wait(
        self,
        keys: Sequence[str],
        timeout: float | None,
        what: str,
        sequence: int | None,
        op: _Operation | None = None,
        *,
        ranks: Sequence[int] | None = None,
        warn: bool = True,
    ) -> list[bytes]:
        """The values of ``keys`` (``keys[i]`` set by rank ``ranks[i]``, by default rank ``i``) within ``timeout``.

        Waits in parts of :data:`PROGRESS_FRACTION` of the time-out; each part that ends without every
        key logs a warning naming the ranks still awaited and how much of the time-out has passed.
        ``what`` describes the wait for the messages, ``{ranks}`` standing for those ranks. The
        :class:`~trackpoint.errors.CoordinationTimeoutError` raised at the time-out names them too and
        carries them as its ``missing_ranks`` attribute. With ``warn`` false, waits in one part and logs
        nothing: the caller reports the time-out itself.
        """
        seconds = self._timeout if timeout is None else float(timeout)
        owners = list(range(len(keys))) if ranks is None else list(ranks)
        start = time.monotonic()
        deadline = start + seconds
        part = max(seconds * PROGRESS_FRACTION if warn else seconds, 0.001)
        note = start + part
        while True:
            final = note >= deadline - part / 100  # this part ends at the time-out
            try:
                return self._get(keys, max(0.001, (deadline if final else note) - time.monotonic()))
            except CoordinationTimeoutError as exc:
                missing = self._missing(keys, owners)
                elapsed = time.monotonic() - start
                if not missing:
                    # Every key came just now (or the store cannot tell): read them, quickly at the end.
                    if not final:
                        # On to the next part: were the store unable to tell, retrying at once would spin on
                        # millisecond reads, and never reach the final part, until the keys came.
                        note += part
                        continue
                    with contextlib.suppress(CoordinationTimeoutError):
                        return self._get(keys, 0.001)
                who = _ranks_text(missing) if missing else "another rank"
                text = what.format(ranks=who)
                if final:
                    many = len(missing) > 1
                    error = CoordinationTimeoutError(
                        f"{type(self).__name__}: rank {self._rank} of {self._world_size} waited {elapsed:.1f} s "
                        f"(time-out {seconds:g} s) for {text} {self._where(sequence, op)}; {who} "
                        f"{'have' if many else 'has'} died, {'hang' if many else 'hangs'} or {'are' if many else 'is'} "
                        "slower than the time-out (raise the coordinator's timeout if the work legitimately takes "
                        "longer)"
                    )
                    error.missing_ranks = missing  # type: ignore[attr-defined]  # for _leave
                    raise error from exc
                step = current_step.get()
                _log.warning(
                    "%s: rank %d of %d is waiting for %s %s%s (%.1f s of %g s)",
                    type(self).__name__,
                    self._rank,
                    self._world_size,
                    text,
                    self._where(sequence, op),
                    "" if step is None else f", {step}",
                    elapsed,
                    seconds,
                )
                note += part

    def all_gather(self, data: bytes, *, timeout: float | None = None) -> list[bytes]:
        # docstring inherited
        op = self._current()
        if op is not None:
            return self._gather_in(op, bytes(data), timeout)
        sequence = _next_sequence(self._namespace)
        own = self._key(sequence, self._rank)
        self._set(own, bytes(data))
        values = self._wait(
            [self._key(sequence, r) for r in range(self._world_size)],
            timeout,
            "the contribution of {ranks} to",
            sequence,
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
                values = self._wait(keys, timeout, "the contribution of {ranks} to", sequence, op)
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
                values = self._wait(keys, min(self._timeout, 10.0), "the contribution of {ranks} to", sequence, op)
        except BaseException:
            _remember(op.cleanup, mine)
            raise
        op.gathered = True
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
        return self._wait([key], timeout, "the message {ranks} broadcasts at", sequence, op, ranks=[root])[0]

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


def _ranks_text(ranks: Sequence[int]) -> str:
    """``rank 3``, ``ranks 2 and 3``, ``ranks 1, 2 and 5``; the first few of many, with the count."""
    if not ranks:
        return "no rank"
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    shown = [str(r) for r in ranks[:8]]
    if len(ranks) > 8:
        return f"{len(ranks)} ranks ({', '.join(shown)}, ...)"
    return f"ranks {', '.join(shown[:-1])} and {shown[-1]}"
