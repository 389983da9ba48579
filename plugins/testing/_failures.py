"""Failed writes: a save that raises left no checkpoint of its own, and a save that returned is committed.

A store failure (one refused raw write) is what a backend sees and handles, unlike a crash
(:mod:`._crash`). Where it falls decides the outcome: before the save's commit point the save must fail
and leave the checkpoint it would replace as it was; after it, the save has succeeded, and a failure of
its housekeeping (deleting staging files, markers, the replaced checkpoint's data) must not be raised, or
the caller takes a committed checkpoint for a failed save (a ``CheckpointManager`` would then neither
record it nor ever retire it). What such a failure leaves, ``cleanup`` removes, or else the WARNING the
backend logs (on the ``trackpoint`` logger or one below it) names it and says what does (files left inside
the committed checkpoint go with it, say): a leftover after ``cleanup`` passes only if a warning of the save
named it. The test fails an
overwriting save's first raw write, then its second, and so on until one runs to the end, through the
harness's :meth:`~trackpoint.plugins.testing.BackendTestBase.intercept_raw_writes`; it is skipped where
that returns ``None``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from trackpoint.errors import CheckpointError, TransientStorageError
from trackpoint.plugins.testing._base import BackendTestBase
from trackpoint.plugins.testing._crash import _holds
from trackpoint.storage import StorageBackend

__all__ = ["FailedWrites"]

#: More raw writes than any save of these tests makes: a sweep that gets here is not ending.
_MAX_WRITES = 500


class _Warnings(logging.Handler):
    """The WARNING (and worse) messages logged on the ``trackpoint`` logger (and below it) while attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _warnings() -> Iterator[_Warnings]:
    """A :class:`_Warnings` attached for the block (the logger's level lowered to WARNING if it was above)."""
    logger = logging.getLogger("trackpoint")
    handler = _Warnings()
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _named(path: str, base_url: str, messages: list[str]) -> bool:
    """Whether one of ``messages`` names ``path``, or a directory holding it below ``base_url`` (quoted)."""
    if any(path in m for m in messages):
        return True
    parent = path.rstrip("/")
    while "/" in parent and len(parent.rsplit("/", 1)[0]) > len(base_url.rstrip("/")):
        parent = parent.rsplit("/", 1)[0]
        if any(f"'{parent}'" in m or f"'{parent}/'" in m for m in messages):
            return True
    return False


class _FailAt:
    """``before_each`` for :meth:`BackendTestBase.intercept_raw_writes`: the ``n``-th write fails, once.

    With a :class:`~trackpoint.errors.TransientStorageError`, as a store that refused it after its retries:
    an ``Exception`` the backend sees and handles, not a crash (unlike the crash tests' ``before_each``, see
    :meth:`BackendTestBase.intercept_raw_writes`). Every other write goes through.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        #: The write that failed, for messages; ``None`` while none did.
        self.failed_at: str | None = None
        self._lock = threading.Lock()

    def __call__(self, what: str) -> None:
        with self._lock:
            self.seen += 1
            if self.seen != self.n:
                return
            self.failed_at = f"raw write {self.seen} ({what})"
        raise TransientStorageError(f"the conformance kit fails {self.failed_at}: the store refused it")


class FailedWrites(BackendTestBase):
    """A save failed by its store raises only before its commit point, and then leaves no checkpoint of its own."""

    def test_a_failed_write_fails_the_save_only_before_its_commit_point(
        self, backend: StorageBackend, base_url: str
    ) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        old = {"a": np.arange(8, dtype=np.int64), "b": np.full(8, 0.5)}
        new = {"a": np.arange(8, 16, dtype=np.int64), "c": np.full(8, -2.0)}
        self.save(backend, prefix, old, num_writers=1)
        #: Leftovers a warning of a save named: allowed after cleanup (see the module's docstring).
        explained: set[str] = set()
        for n in range(1, _MAX_WRITES + 1):
            fail = _FailAt(n)
            raised: CheckpointError | None = None
            with self._intercepting(backend, fail, "the failed-write test needs"), _warnings() as warned:
                try:
                    # Two shards, so the commit has several pieces to publish and to tidy up.
                    self.save(backend, prefix, new, overwrite=True, max_shard_bytes=64, num_writers=1)
                except CheckpointError as exc:
                    raised = exc
            if fail.failed_at is None:
                if raised is not None:
                    raise raised  # a failure of the save itself, not the kit's
                assert fail.seen, (
                    f"{type(self).__name__}.intercept_raw_writes called before_each for no raw write of the "
                    "save: it must be called before every change of the raw storage"
                )
                return
            held = _holds(backend, prefix, {"old": old, "new": new})
            if raised is None:
                assert held == "new", (
                    f"the overwrite of {prefix!r} returned although {fail.failed_at} failed, and the store holds "
                    f"{held}: a save that returns must have committed its checkpoint"
                )
            else:
                assert held == "old", (
                    f"the overwrite of {prefix!r} raised ({type(raised).__name__}: {raised}) when {fail.failed_at} "
                    f"failed, yet the store holds {held}: a failed save must leave the checkpoint it would replace "
                    "as it was. A failure after the commit point (deleting staging files, markers, the replaced "
                    "data) is the housekeeping's: log what it left for cleanup, and return"
                )
            try:
                backend.cleanup(base_url, min_age=0)
                left = backend.leftovers(base_url)
            except CheckpointError as exc:
                pytest.fail(f"after {fail.failed_at} failed in an overwrite of {prefix!r}, cleanup failed: {exc}")
            explained.update(p for p in left if _named(p, base_url, warned.messages))
            unexplained = [p for p in left if p not in explained]
            assert not unexplained, (
                f"after {fail.failed_at} failed in an overwrite of {prefix!r}, cleanup left {unexplained}, which no "
                f"warning of the save named (it logged {warned.messages or 'none'}): cleanup must remove what a "
                "failed step leaves, or the warning must name it and say what removes it"
            )
            assert _holds(backend, prefix, {"old": old, "new": new}) == held, f"cleanup changed {prefix!r}"
            self.save(backend, prefix, old, overwrite=True, num_writers=1)
        pytest.fail(f"the save still made raw writes after {_MAX_WRITES} runs, each failing one write later")
