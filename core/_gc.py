"""Keeping Python's cyclic garbage collector from re-scanning a model during a save or restore.

A save or restore of a model with 10^4-10^5 variables allocates a few objects per variable (keys,
index entries, buffers, bookkeeping tuples). Every 700 net allocations CPython starts a collection of
its young generations, and whenever the objects that reached the oldest generation since the last full
collection outnumber a quarter of those it already holds, a *full* collection, which scans the model
itself. Measured on 200,000 variables, a restore paid for three to six full collections (a quarter to
a third of its CPU time), a save for two or three, for nothing: these steps create no garbage cycles.
Two remedies, both restoring the collector's previous state when they end:

* :func:`paused` disables the collector inside CPU-bound steps (building the graph, parsing an index,
  planning and applying a restore, the status assertions), never around storage I/O, so a read waiting
  on a slow store never holds collections back;
* :func:`full_collections_deferred` covers a whole synchronous save or restore, I/O included: the young
  generations are still collected as usual (most cyclic garbage of other threads dies young), only the
  full collection waits until the operation ends, which turns the repeated full scans into at most one,
  after the operation. Async saves' background writes do not use it: a program saving in the background
  all the time would otherwise never get a full collection.

Reference counting frees memory as usual meanwhile, and objects keep their generations, so garbage made
before or during a pause is collected as it would have been.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from trackpoint import _signal_safe

__all__ = ["full_collections_deferred", "paused"]

# Taken only inside a signal-safe section: a handler that saves (trackpoint.preemption) and arrives
# while the main thread holds this lock (restore-on-create pauses the collector outside any public
# call) would otherwise wait for it forever; inside the section its save waits until the lock is free.
_lock = threading.Lock()
_depth = 0
_was_enabled = False
#: The oldest generation's threshold while full collections are deferred (CPython counts collections
#: of the middle generation against it; the C field is an int). Python 3.14's incremental collector
#: ignores this threshold, and so deferral is a no-op there.
_DEFERRED: Final = 1 << 30
_deferred_depth = 0
_saved_threshold = 0


@contextmanager
def paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block, then restore its previous state.

    Nested and concurrent blocks share one pause: the collector is re-enabled when the last of them
    ends, and only if it was enabled when the first began.
    """
    global _depth, _was_enabled
    with _signal_safe.section, _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _signal_safe.section, _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


@contextmanager
def full_collections_deferred() -> Iterator[None]:
    """Collect only the young generations inside the block; the oldest one's threshold is restored after.

    Nested and concurrent blocks share one deferral, ended by the last of them. Thresholds the program
    sets meanwhile (``gc.set_threshold``) are left as it set them.
    """
    global _deferred_depth, _saved_threshold
    with _signal_safe.section, _lock:
        if _deferred_depth == 0:
            young, middle, _saved_threshold = gc.get_threshold()
            gc.set_threshold(young, middle, _DEFERRED)
        _deferred_depth += 1
    try:
        yield
    finally:
        with _signal_safe.section, _lock:
            _deferred_depth -= 1
            if _deferred_depth == 0:
                young, middle, oldest = gc.get_threshold()
                if oldest == _DEFERRED:
                    gc.set_threshold(young, middle, _saved_threshold)
