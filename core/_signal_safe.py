"""Keep a signal handler's save out of trackpoint's own work in the main thread.

Python runs a signal handler in the main thread, between two bytecodes of
whatever that thread is doing. A handler that saves a checkpoint
(:mod:`trackpoint.preemption`) must not run in the middle of a save, a
restore or an assignment to a pinned variable: the interrupted code may hold
the lock of the async saves (``trackpoint._async._lock``, not re-entrant), so
the handler's save would wait for it forever, or it may have left its
bookkeeping half done (a save registered but its writer not started yet).

Such work runs inside :data:`section` (``with _signal_safe.section:``; the
sections nest). A handler that finds the main thread :func:`inside` one hands
its work to :func:`call_outside`, which runs it in the main thread as soon as
the outermost section ends, after the interrupted work has finished and
released everything. Only the main thread counts: other threads never run
signal handlers.

No lock guards the counter, on purpose: only the main thread changes it, and
a handler running between two of its bytecodes sees either the old or the new
count, each of which is right at that moment (see :meth:`_Section.__exit__`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final, ParamSpec, TypeVar

__all__ = ["call_outside", "guarded", "inside", "section"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

# How many sections the main thread is in now.
_depth = 0
# Work handed over by a handler, run when the outermost section ends, oldest first.
_pending: list[Callable[[], object]] = []


class _Section:
    """``with section:`` marks trackpoint work of the main thread that a signal handler must not interrupt."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _depth
        if threading.current_thread() is threading.main_thread():
            _depth += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _depth
        if threading.current_thread() is not threading.main_thread():
            return
        # A handler running before this line sees the section still open and hands its work
        # over (run just below); one running after it runs its work itself.
        _depth -= 1
        while _depth == 0 and _pending:
            _pending.pop(0)()


#: The section marker (one object: it holds no state of its own).
section: Final = _Section()


def guarded(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """``function`` run inside a :data:`section` (for the public methods that save, restore or wait)."""

    @functools.wraps(function)
    def in_section(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with section:
            return function(*args, **kwargs)

    return in_section


def inside() -> bool:
    """Whether the main thread is inside a :data:`section` now (asked by a signal handler, which runs there)."""
    return _depth > 0


def call_outside(work: Callable[[], object]) -> None:
    """Run ``work`` in the main thread when its outermost :data:`section` ends.

    Called by a signal handler that found :func:`inside` true. What ``work``
    raises (``SystemExit`` to end the program) propagates from the end of
    that section, as it would have from the handler.
    """
    _pending.append(work)
