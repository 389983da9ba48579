"""How the core runs a step on several ranks: errors carried between ranks, one rank acting for all.

The save protocol itself is in :mod:`trackpoint.distributed._save`; this module
holds what every coordinated operation shares. Messages are JSON: plain data
any rank can read, never pickles.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NoReturn, TypeVar

import trackpoint.errors as _errors
from trackpoint.distributed._coordinator import Coordinator, current_step
from trackpoint.errors import CheckpointError, CoordinationError, CoordinationTimeoutError
from trackpoint.storage import CheckpointOptions

__all__ = [
    "Failure",
    "collective",
    "coordinator_of",
    "decode",
    "describe",
    "encode",
    "on_root",
    "operation",
    "raise_failures",
    "together",
]

T = TypeVar("T")

#: A failure as sent between ranks: ``[rank, exception class name, message]``.
Failure = list[Any]


def coordinator_of(options: CheckpointOptions | None) -> Coordinator | None:
    """The coordinator of ``options``, or ``None`` for a process on its own (also for a group of one)."""
    if options is None or options.coordinator is None:
        return None
    return options.coordinator


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: bytes, rank: int, step: str | None = None) -> dict[str, Any]:
    """The message ``rank`` sent; with ``step``, one that rank sent at that step of the same kind of operation."""
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise CoordinationError(
            f"rank {rank} sent a message trackpoint cannot read ({len(data)} bytes); do all ranks run the same "
            "trackpoint version?"
        ) from exc
    if not isinstance(message, dict):
        raise CoordinationError(f"rank {rank} sent a message trackpoint cannot read: {message!r:.80}")
    if step is not None and message.get("step") != step:
        # Collectives paired across operations: only a coordinator without operation namespaces
        # (``operation`` below) lets this happen.
        raise CoordinationError(
            f"the ranks are out of step: at the {step} step rank {rank} sent the message of its "
            f"{message.get('step')!r} step; a rank failed or timed out in an earlier collective and the coordinator "
            f"keeps no operations apart (give it an operation(kind) method, as KeyValueCoordinator has); restart "
            "the ranks' coordinators together"
        )
    return message


def operation(coordinator: Coordinator, kind: str) -> AbstractContextManager[object]:
    """The coordinator's ``operation(kind)`` context (see ``KeyValueCoordinator.operation``), if it has one.

    Every coordinated save, restore and one-rank step runs in one, so that
    its collectives cannot pair up with those of another operation on a rank
    that is late or skipped some.
    """
    scope = getattr(coordinator, "operation", None)
    if callable(scope):
        context: AbstractContextManager[object] = scope(kind)
        return context
    return contextlib.nullcontext()


def collective(call: Callable[[], T], what: str, step: str, rank: int) -> T:
    """Run one collective of ``what``'s ``step`` on ``rank``; any failure becomes a :class:`CoordinationError`.

    The message names the operation, the step and the rank, so a time-out
    says where the ranks parted; the coordinator's own error is chained. A
    :class:`KeyValueCoordinator` names the step in the warnings it logs
    while the wait lasts.
    """
    token = current_step.set(f"the {step} step of {what}")
    try:
        return call()
    except CoordinationError as exc:
        cls = CoordinationTimeoutError if isinstance(exc, CoordinationTimeoutError) else CoordinationError
        raise cls(f"{what}: the {step} step failed on rank {rank}: {exc}") from exc
    except Exception as exc:
        raise CoordinationError(
            f"{what}: the {step} step failed on rank {rank}: the coordinator raised {type(exc).__name__}: {exc} "
            "(a coordinator must raise CoordinationError; is its store or service still running?)"
        ) from exc
    finally:
        current_step.reset(token)


def describe(rank: int, exc: BaseException) -> Failure:
    """``exc`` of ``rank`` as it travels to the other ranks."""
    return [rank, type(exc).__name__, str(exc)]


def raise_failures(failures: list[Failure], own: BaseException | None, what: str) -> NoReturn:
    """Raise for a step that failed somewhere: the own exception where this rank failed, else one naming the rank.

    A rank that did not fail raises the same trackpoint error class as the
    first rank that did (``CheckpointExistsError`` on every rank, say), or a
    :class:`CoordinationError` when that rank's error is no trackpoint error.
    """
    if own is not None:
        raise own
    rank, name, message = failures[0]
    others = (
        ""
        if len(failures) == 1
        else f" (and {len(failures) - 1} other rank(s): "
        + "; ".join(f"rank {r}: {n}: {m}" for r, n, m in failures[1:])
        + ")"
    )
    text = f"{what} failed on rank {rank}: {name}: {message}{others}"
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, CheckpointError):
        raise cls(text)
    raise CoordinationError(text)


def together(coordinator: Coordinator, step: Callable[[], T], what: str, *, agree_on: str | None = None) -> T:
    """Run ``step`` on every rank; if it fails on any rank, raise on every rank.

    Each rank runs ``step`` itself; then the ranks exchange whether it
    succeeded, so that a restore that failed on one rank fails on all.
    ``agree_on``: a value every rank must give alike (the path restored),
    compared before ``step`` runs anywhere.

    Raises
    ------
    CoordinationError
        On every rank, before ``step`` runs, when the ranks' ``agree_on`` differ.
    """
    with operation(coordinator, "together"):
        if agree_on is not None:
            data = collective(
                lambda: coordinator.all_gather(encode({"step": "agree", "value": agree_on})),
                what,
                "agreement",
                coordinator.rank,
            )
            values = [decode(m, r, "agree")["value"] for r, m in enumerate(data)]
            differing = [(r, v) for r, v in enumerate(values) if v != values[0]]
            if differing:
                r, v = differing[0]
                raise CoordinationError(
                    f"{what}: the ranks restore different checkpoints: rank 0 {values[0]!r}, rank {r} {v!r}; "
                    "every rank must restore the same path (a replicated model would differ between ranks). "
                    "Nothing was restored"
                )
        own: BaseException | None = None
        result: T | None = None
        try:
            result = step()
        except Exception as exc:  # noqa: BLE001 - carried to the other ranks, then raised here
            own = exc
        report = {"step": "done", "error": None if own is None else describe(coordinator.rank, own)}
        data = collective(lambda: coordinator.all_gather(encode(report)), what, "report", coordinator.rank)
        gathered = [decode(m, r, "done") for r, m in enumerate(data)]
        failures = [m["error"] for m in gathered if m.get("error")]
        if failures:
            raise_failures(failures, own, what)
        return result  # type: ignore[return-value]  # step returned: result is set


def on_root(
    coordinator: Coordinator,
    step: Callable[[], bytes],
    what: str,
    *,
    state: Callable[[], bytes] | None = None,
    adopt: Callable[[bytes], None] | None = None,
) -> bytes:
    """Run ``step`` on rank 0 only; every rank gets its result, or raises if it failed.

    For the work one rank does for all (the state file, retention). Rank 0
    records that it runs the step (with ``set_if_absent``) before running it,
    and a rank that gives up waiting for the outcome records that it gave up,
    so the first record decides for every rank: if rank 0's came first, the
    others wait for its outcome a second time-out; if a give-up came first,
    rank 0 does not run the step and every rank raises
    :class:`CoordinationTimeoutError`. Only a rank 0 that began the step and
    then neither finishes nor fails within twice the time-out leaves the
    others with a :class:`CoordinationError` saying the outcome is unknown.

    Parameters
    ----------
    state, adopt
        When the step fails on rank 0, ``state()`` (rank 0) is sent with the
        failure and ``adopt`` (the other ranks) receives it before they
        raise, so every rank is left in the state rank 0 is in.
    """
    with operation(coordinator, "root"):
        rank = coordinator.rank
        key = _record_key("root", what, rank)
        if rank == 0:
            return _run_on_root(coordinator, step, what, key, state)
        receive = functools.partial(collective, lambda: coordinator.broadcast(None), what, "outcome", rank)
        try:
            data = receive()
        except CoordinationTimeoutError as exc:
            recorded = collective(lambda: coordinator.set_if_absent(key, _gave_up(rank)), what, "decision", rank)
            if recorded != _RUN:
                # A give-up is recorded (this rank's or another's): rank 0 will not run the step.
                raise CoordinationTimeoutError(
                    f"{what}: rank {rank} gave up waiting for rank 0 to begin it (time-out {coordinator.timeout:g} "
                    "s), so it was not done on any rank; make rank 0 reach it within the time-out of the others "
                    "(or raise the coordinator's timeout), then retry"
                ) from exc
            try:
                # Rank 0 began the step before this rank gave up: its outcome decides. Rank 0 sends it
                # twice, so that a rank whose first wait ended can wait once more for the second copy.
                data = receive()
            except CoordinationTimeoutError as again:
                raise CoordinationError(
                    f"{what}: rank 0 began it but did not report how it went to rank {rank} within twice the "
                    f"time-out ({2 * coordinator.timeout:g} s; rank 0 died or hangs), so whether it was done is "
                    "unknown: check the storage (latest_checkpoint, the state file) before relying on it"
                ) from again
        else:
            with contextlib.suppress(CoordinationError):
                # The second copy, sent right after the first: read so that coordinators whose broadcasts
                # pair up in order stay paired. Losing it changes nothing: the first copy decides.
                receive()
        outcome = decode(data, 0, "outcome")
        if outcome.get("error"):
            if adopt is not None and outcome.get("state") is not None:
                adopt(str(outcome["state"]).encode("latin-1"))
            raise_failures([outcome["error"]], None, what)
        return str(outcome.get("payload", "")).encode("latin-1")


def _run_on_root(
    coordinator: Coordinator, step: Callable[[], bytes], what: str, key: str, state: Callable[[], bytes] | None
) -> bytes:
    """Rank 0's part of :func:`on_root`: record, run, report."""

    def report(outcome: dict[str, Any]) -> None:
        outcome["step"] = "outcome"
        message = encode(outcome)
        # Twice: a rank that gave up waiting for the first copy after rank 0 recorded "run" reads the second.
        for _ in range(2):
            collective(lambda: coordinator.broadcast(message), what, "outcome", 0)

    recorded = collective(lambda: coordinator.set_if_absent(key, _RUN), what, "decision", 0)
    if recorded != _RUN:
        # Some rank gave up waiting before rank 0 got here: the step is not run, on any rank.
        gave_up = recorded.decode(errors="replace").removeprefix("gave up:")
        error = CoordinationTimeoutError(
            f"{what}: rank {gave_up} gave up waiting for rank 0 to begin it (time-out {coordinator.timeout:g} s), "
            "so it was not done on any rank; make rank 0 reach it within the time-out of the others (or raise the "
            "coordinator's timeout), then retry"
        )
        report({"error": describe(0, error)})
        raise error
    try:
        payload = step()
    except Exception as exc:
        report({"error": describe(0, exc), "state": None if state is None else state().decode("latin-1")})
        raise
    report({"error": None, "payload": payload.decode("latin-1")})
    return payload


#: Rank 0's record that it runs an :func:`on_root` step; any other record names a rank that gave up.
_RUN = b"run"

# How many times this process made each record of a one-rank step: the ranks make the same calls in the
# same order, so the n-th record of one ``what`` is the same on every rank, and new for each call.
_record_counts: dict[str, int] = {}
_record_lock = threading.Lock()


def _record_key(kind: str, what: str, rank: int) -> str:
    # Counted per rank too, so that ranks sharing a process (threads in tests) count like processes.
    counted = f"{rank}/{kind}/{what}"
    with _record_lock:
        n = _record_counts[counted] = _record_counts.get(counted, -1) + 1
    return f"{kind}/{hashlib.sha256(what.encode()).hexdigest()[:24]}/{n}"


def _gave_up(rank: int) -> bytes:
    return f"gave up:{rank}".encode()
