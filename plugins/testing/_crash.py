"""Crashes: a save or a delete stopped at any raw write leaves a whole checkpoint or none, never part of one.

A failure the backend sees (an unstorable tensor, a refused write) lets it clean
up; a crash does not. These tests stop an overwriting save and a delete at their
first raw write, then at their second, and so on until one runs to the end: each
time the write where it stops and every write after it fail, as if the process had
died there. What the store holds then must be one whole checkpoint, and a save
after the crash must work. They see the raw writes through the harness's
:meth:`~trackpoint.plugins.testing.BackendTestBase.intercept_raw_writes`, and are
skipped where it returns ``None``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest

from trackpoint.errors import CheckpointError
from trackpoint.plugins.testing._base import Array, BackendTestBase, assert_same
from trackpoint.storage import StorageBackend

__all__ = ["CrashSafety"]

#: More raw writes than any save or delete of these tests makes: a sweep that gets here is not ending.
_MAX_WRITES = 500


class _Crash(BaseException):
    """The kit's simulated crash.

    Not an ``Exception``: retry loops and ``except Exception`` clean-ups let it
    through. An object store turns it into a ``StorageError`` (a client call
    must not end the store's I/O thread), so clean-ups of a format over one do
    run; every write they attempt fails too, as after a crash.
    """


class _CrashAt:
    """``before_each`` for :meth:`BackendTestBase.intercept_raw_writes`: the ``n``-th write and all later ones fail."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        #: The write the crash came before, for messages; ``None`` while none was stopped.
        self.crashed_at: str | None = None
        self._lock = threading.Lock()

    def __call__(self, what: str) -> None:
        with self._lock:
            self.seen += 1
            if self.crashed_at is None:
                if self.seen < self.n:
                    return
                self.crashed_at = f"raw write {self.seen} ({what})"
            where = self.crashed_at
        raise _Crash(f"the conformance kit simulates a crash before {where}: from there on nothing is written")


def _holds(backend: StorageBackend, prefix: str, candidates: Mapping[str, Mapping[str, Array]]) -> str:
    """The name of the candidate ``prefix`` holds whole, ``"nothing"`` if nothing is committed, else what it holds."""
    try:
        if not backend.exists(prefix):
            return "nothing"
        with backend.open_reader(prefix) as reader:
            got = {key: reader.read(key) for key in reader.keys()}
    except CheckpointError as exc:
        return f"a committed checkpoint that cannot be read ({type(exc).__name__}: {exc})"
    for name, want in candidates.items():
        if sorted(got) == sorted(want):
            try:
                for key, value in want.items():
                    assert_same(got[key], value, key)
            except AssertionError:
                continue
            return name
    return f"a committed checkpoint holding the tensors {sorted(got)}, whole neither as " + " nor as ".join(
        f"the {name} one {sorted(want)}" for name, want in candidates.items()
    )


class CrashSafety(BackendTestBase):
    """A crash anywhere in an overwriting save or a delete leaves the old checkpoint, the new one, or none."""

    def _holds_after_crash(
        self, backend: StorageBackend, prefix: str, candidates: Mapping[str, Mapping[str, Array]]
    ) -> str:
        """:func:`_holds`, seen as a new process sees the store (:meth:`reopen`) where the harness can."""
        fresh = self.reopen(backend)
        if fresh is None:
            return _holds(backend, prefix, candidates)
        try:
            return _holds(fresh, prefix, candidates)
        finally:
            fresh.close()

    def _crashes(self, backend: StorageBackend, operation: Callable[[], None]) -> Iterator[str | None]:
        """Run ``operation`` crashed before its 1st raw write, then its 2nd, ...; yield where, then ``None`` at its end.

        Between two yields the test checks what the crash left and prepares the next run.
        """
        for n in range(1, _MAX_WRITES + 1):
            crash = _CrashAt(n)
            interception = self._intercepting(backend, crash, "the crash tests need")
            try:
                with interception:
                    operation()
            except BaseException:
                if crash.crashed_at is None:
                    raise  # a failure of the operation itself, not the kit's crash
            if crash.crashed_at is None:
                assert crash.seen, (
                    f"{type(self).__name__}.intercept_raw_writes called before_each for no raw write of the "
                    "operation: it must be called before every change of the raw storage"
                )
                yield None
                return
            yield crash.crashed_at
        pytest.fail(f"the operation still made raw writes after {_MAX_WRITES} runs, each stopped one write later")

    def test_a_crash_while_overwriting_leaves_a_whole_checkpoint(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        old = {"a": np.arange(8, dtype=np.int64), "b": np.full(8, 0.5)}
        # Two shards (one tensor each), written one after the other: a commit that publishes shard by shard
        # shows a checkpoint with only some of these tensors when it is stopped half way.
        new = {"a": np.arange(8, 16, dtype=np.int64), "c": np.full(8, -2.0)}
        self.save(backend, prefix, old, num_writers=1)

        def overwrite() -> None:
            self.save(backend, prefix, new, overwrite=True, max_shard_bytes=64, num_writers=1)

        for crashed_at in self._crashes(backend, overwrite):
            held = self._holds_after_crash(backend, prefix, {"old": old, "new": new})
            if crashed_at is None:
                assert held == "new", f"the overwrite of {prefix!r} ran to its end, and the store holds {held}"
                return
            assert held in ("old", "new"), (
                f"a crash before {crashed_at} in an overwrite of {prefix!r} left {held}: until the new checkpoint is "
                "committed whole, the old one must stay readable as it was (commit in one atomic step, and "
                "remove the old checkpoint's data only after it)"
            )
            try:
                # What a user does after the crash: save again. Leftovers of the crashed save must not stop it.
                self.save(backend, prefix, old, overwrite=True, num_writers=1)
            except CheckpointError as exc:
                pytest.fail(
                    f"after a crash before {crashed_at} in an overwrite of {prefix!r}, saving it again failed: {exc}"
                )
            held = self._holds_after_crash(backend, prefix, {"old": old})
            assert held == "old", f"after a crash before {crashed_at}, saving {prefix!r} again left {held}"

    def test_leftovers_of_a_crashed_save_do_not_block_a_create_only_save(
        self, backend: StorageBackend, base_url: str
    ) -> None:
        # CheckpointManager commits a checkpoint number it has not written itself with overwrite=False, so that
        # it never replaces another writer's checkpoint; after a preemption it saves the number the killed save
        # was writing again, at once (before cleanup's age guard would remove the leftovers).
        prefix = self.url(backend, base_url, "ckpt")
        tensors = {"a": np.arange(8, dtype=np.int64), "b": np.full(8, 0.5)}

        def save_fresh() -> None:
            self.save(backend, prefix, tensors, overwrite=False, max_shard_bytes=64, num_writers=1)

        for crashed_at in self._crashes(backend, save_fresh):
            if crashed_at is None:
                return
            held = self._holds_after_crash(backend, prefix, {"whole": tensors})
            assert held in ("whole", "nothing"), f"a crash before {crashed_at} in a save of {prefix!r} left {held}"
            if held == "whole":
                # The crash came after the commit point; the clean-up that follows it may still have leftovers.
                backend.delete(prefix)
            try:
                save_fresh()
            except CheckpointError as exc:
                pytest.fail(
                    f"after a crash before {crashed_at} in a save of {prefix!r}, saving it again with "
                    f"overwrite=False failed: {exc}. overwrite=False refuses a committed checkpoint only; the "
                    "leftovers of a save that never committed must not block it"
                )
            assert self._holds_after_crash(backend, prefix, {"whole": tensors}) == "whole"
            backend.delete(prefix)

    def test_a_crash_while_deleting_leaves_the_checkpoint_or_nothing(
        self, backend: StorageBackend, base_url: str
    ) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        tensors = {"a": np.arange(8, dtype=np.int64), "b": np.full(8, 0.5)}  # two shards: two data objects
        self.save(backend, prefix, tensors, max_shard_bytes=64, num_writers=1)
        for crashed_at in self._crashes(backend, lambda: backend.delete(prefix)):
            held = self._holds_after_crash(backend, prefix, {"whole": tensors})
            if crashed_at is None:
                assert held == "nothing", f"delete({prefix!r}) ran to its end, and the store holds {held}"
                return
            assert held in ("whole", "nothing"), (
                f"a crash before {crashed_at} in delete({prefix!r}) left {held}: remove the commit point first, "
                "then the data, so that a checkpoint is listed only while all of it is there"
            )
            try:
                backend.delete(prefix)  # finishing the delete after the crash must work
                self.save(backend, prefix, tensors, max_shard_bytes=64, num_writers=1)
            except CheckpointError as exc:
                pytest.fail(
                    f"after a crash before {crashed_at} in delete({prefix!r}), deleting and saving it failed: {exc}"
                )
