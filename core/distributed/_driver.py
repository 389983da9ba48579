"""How the core runs a step on several ranks: errors carried between ranks, one rank acting for all.

The save protocol itself is in :mod:`trackpoint.distributed._save`; this module
holds what every coordinated operation shares. Messages are JSON: plain data
any rank can read, never pickles.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NoReturn, TypeVar

import trackpoint.errors as _errors
from trackpoint.distributed._coordinator import Coordinator
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
    says where the ranks parted; the coordinator's own error is chained.
    """
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


def together(coordinator: Coordinator, step: Callable[[], T], what: str) -> T:
    """Run ``step`` on every rank; if it fails on any rank, raise on every rank.

    Each rank runs ``step`` itself; then the ranks exchange whether it
    succeeded, so that a restore that failed on one rank fails on all.
    """
    with operation(coordinator, "together"):
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


def on_root(coordinator: Coordinator, step: Callable[[], bytes], what: str) -> bytes:
    """Run ``step`` on rank 0 only; every rank gets its result, or raises if it failed.

    For the work one rank does for all (the state file, retention): rank 0
    runs it and broadcasts the outcome.
    """
    with operation(coordinator, "root"):
        rank = coordinator.rank
        if rank == 0:
            try:
                payload = step()
            except Exception as exc:
                message = encode({"step": "outcome", "error": describe(0, exc)})
                collective(lambda: coordinator.broadcast(message), what, "outcome", rank)
                raise
            message = encode({"step": "outcome", "error": None, "payload": payload.decode("latin-1")})
            collective(lambda: coordinator.broadcast(message), what, "outcome", rank)
            return payload
        outcome = decode(collective(lambda: coordinator.broadcast(None), what, "outcome", rank), 0, "outcome")
        if outcome.get("error"):
            raise_failures([outcome["error"]], None, what)
        return str(outcome.get("payload", "")).encode("latin-1")
