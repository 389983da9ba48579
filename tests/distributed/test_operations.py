"""KeyValueCoordinator.operation: one namespace per operation, one recorded ending per all-gather.

Ranks here are threads over one in-memory store (no processes needed); the
multi-process behaviour is in test_in_step.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.distributed import KeyValueCoordinator
from trackpoint.distributed._driver import collective, decode, encode, on_root, operation


class _Store:
    """A dict every thread-rank shares, with blocking reads."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.changed = threading.Condition()


class _Rank(KeyValueCoordinator):
    def __init__(self, store: _Store, rank: int, world: int, namespace: str, timeout: float = 1.0) -> None:
        super().__init__(rank, world, timeout=timeout, namespace=namespace)
        self.store = store

    def _set(self, key: str, value: bytes) -> None:
        with self.store.changed:
            self.store.data[key] = value
            self.store.changed.notify_all()

    def _get(self, keys: Sequence[str], timeout: float) -> list[bytes]:
        with self.store.changed:
            if not self.store.changed.wait_for(lambda: all(k in self.store.data for k in keys), timeout):
                raise tp.CoordinationTimeoutError(f"keys missing after {timeout} s")
            return [self.store.data[k] for k in keys]

    def _delete(self, keys: Sequence[str]) -> None:
        with self.store.changed:
            for k in keys:
                self.store.data.pop(k, None)

    def _set_if_absent(self, key: str, value: bytes) -> bytes:
        with self.store.changed:
            recorded = self.store.data.setdefault(key, value)
            self.store.changed.notify_all()
            return recorded


def _group(world: int = 2, timeout: float = 1.0) -> tuple[_Store, list[_Rank]]:
    store = _Store()
    namespace = f"ops-{uuid.uuid4().hex}"  # operation numbers are per namespace and process
    return store, [_Rank(store, r, world, namespace, timeout) for r in range(world)]


def _on_threads(*calls: object) -> list[object]:
    """Run one call per rank in threads; each one's result or exception."""
    out: list[object] = [None] * len(calls)

    def run(i: int, call: object) -> None:
        try:
            out[i] = call()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - returned for the test to check
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def _gather_in_op(rank: _Rank, data: bytes, delay: float = 0.0, kind: str = "save") -> list[bytes]:
    time.sleep(delay)
    with rank.operation(kind):
        return rank.all_gather(data)


def test_collectives_of_an_operation_use_its_own_keys_and_are_deleted_once_every_rank_moved_on() -> None:
    store, (a, b) = _group()
    seen: dict[str, list[str]] = {}

    def rank(me: _Rank, name: str) -> list[list[bytes]]:
        first = _gather_in_op(me, f"{name}0".encode())
        if me.rank == 0:
            time.sleep(0.1)  # both ranks are done with the first save
            seen["after first"] = sorted(store.data)
        # A one-rank step (broadcasts only), then the next save: its all-gather completes on every rank,
        # so every rank has left both operations before it, whose keys go.
        assert on_root(me, lambda: b"state", "recording") == b"state"
        if me.rank == 0:
            time.sleep(0.1)
            seen["after step"] = sorted(store.data)
        return [first, _gather_in_op(me, f"{name}1".encode())]

    assert _on_threads(lambda: rank(a, "a"), lambda: rank(b, "b")) == [[[b"a0", b"b0"], [b"a1", b"b1"]]] * 2
    prefix = f"{a._namespace}/save.0/0"
    assert seen["after first"] == [f"{prefix}/0", f"{prefix}/1", f"{prefix}/end"]
    assert any(f"{a._namespace}/root.0/" in k for k in seen["after step"]), seen
    assert all(k.startswith(f"{a._namespace}/save.1/") for k in store.data), sorted(store.data)


def test_a_rank_arriving_after_another_gave_up_fails_at_once_and_the_next_operation_pairs_up() -> None:
    _, (a, b) = _group(timeout=0.5)
    started = time.monotonic()
    # Rank 1 arrives 1 s late: rank 0 gave up after 0.5 s, and its contribution is still in the store.
    out = _on_threads(lambda: _gather_in_op(a, b"a0"), lambda: _gather_in_op(b, b"b0", delay=1.0))
    assert isinstance(out[0], tp.CoordinationTimeoutError) and "time-out 0.5 s" in str(out[0])
    assert isinstance(out[1], tp.CoordinationTimeoutError)
    assert "rank 1 of 2 reached collective 0 of save operation 0 after rank 0 gave up waiting for it" in str(out[1])
    assert time.monotonic() - started < 1.4, "the late rank did not wait for a time-out of its own"
    # The next operation of each rank is the same operation: their messages pair up.
    assert _on_threads(lambda: _gather_in_op(a, b"a1"), lambda: _gather_in_op(b, b"b1")) == [[b"a1", b"b1"]] * 2


def test_a_rank_whose_wait_timed_out_follows_a_recorded_completion() -> None:
    store, (a, _) = _group(timeout=0.5)
    # Rank 1 contributed and recorded "complete" while rank 0's own wait was timing out: rank 0 gets the values.
    prefix = f"{a._namespace}/save.0/0"
    # Rank 1 has also left the operation, which rank 0 waits for before it returns.
    left = f"{a._namespace}/save.0/left/1"
    store.data.update({f"{prefix}/1": b"b", f"{prefix}/end": b"complete", left: b""})
    original = a._wait
    calls = []

    def late_wait(keys: Sequence[str], *args: Any, **kwargs: Any) -> list[bytes]:
        calls.append(list(keys))
        if len(calls) == 1:
            raise tp.CoordinationTimeoutError("the first wait raced rank 1")
        return original(keys, *args, **kwargs)

    a._wait = late_wait  # type: ignore[method-assign]
    with a.operation("save"):
        assert a.all_gather(b"a") == [b"a", b"b"]
        assert len(calls) == 2
    assert len(calls) == 3 and left not in store.data  # the wait for rank 1 to leave; its record is deleted


def test_rank_0_leaves_an_operation_once_every_other_rank_has() -> None:
    # Rank 0 usually hosts the store: were it to return first and its program end, the others could not
    # read the outcome they still wait for.
    _, (a, b) = _group(timeout=2.0)
    left: dict[int, float] = {}

    def run(rank: _Rank, delay: float) -> None:
        with rank.operation("save"):
            rank.all_gather(b"x")
            time.sleep(delay)  # rank 1 is still busy with the operation's outcome
        left[rank.rank] = time.monotonic()

    _on_threads(lambda: run(a, 0.0), lambda: run(b, 0.3))
    assert left[0] >= left[1] - 0.05, left


def test_rank_0_does_not_wait_for_the_others_after_a_coordination_failure() -> None:
    _, (a, _) = _group(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(tp.CoordinationTimeoutError), a.operation("save"):
        a.all_gather(b"alone")
    assert time.monotonic() - started < 0.6  # one time-out, not a second one waiting for rank 1 to leave


def test_a_rank_confirming_late_is_waited_for_again_and_no_confirmation_stays_in_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Rank 1 confirms leaving the save 1.3 s late, after rank 0 gave up on it (half the 2 s time-out), but is
    # alive: in the next, broadcast-only operation (the manager's state-file step) rank 0 must again wait for
    # it to read the outcome, since rank 0's program may end there and take the store with it.
    import logging

    store, (a, b) = _group(timeout=2.0)
    set_key = b._set

    def slow_confirmation(key: str, value: bytes) -> None:
        if "/save." in key and "/left/" in key:
            time.sleep(1.3)
        set_key(key, value)

    b._set = slow_confirmation  # type: ignore[method-assign]
    times: dict[str, float] = {}

    def rank_0() -> None:
        with a.operation("save"):
            a.all_gather(b"x")
        with a.operation("root"):
            time.sleep(0.6)  # its step outlasts rank 1's late confirmation (at 1.3 s)
            a.broadcast(b"outcome")
        times["0 left"] = time.monotonic()

    def rank_1() -> None:
        with b.operation("save"):
            b.all_gather(b"x")
        with b.operation("root"):
            time.sleep(0.5)  # reads the outcome after rank 0 sent it
            assert b.broadcast(None) == b"outcome"
            times["1 read"] = time.monotonic()

    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        assert _on_threads(rank_0, rank_1) == [None, None]
    assert times["0 left"] >= times["1 read"], times
    assert not [k for k in store.data if "/left/" in k]
    # One warning for the confirmation rank 0 gave up on, naming the rank, not one per quarter as well.
    confirming = [r.getMessage() for r in caplog.records if "confirm" in r.getMessage()]
    assert len(confirming) == 1 and "rank 1" in confirming[0], confirming


def test_a_wait_on_a_store_that_cannot_tell_who_is_missing_does_not_spin() -> None:
    class Blind(_Rank):
        calls = 0

        def _get(self, keys: Sequence[str], timeout: float) -> list[bytes]:
            self.calls += 1
            if self.calls > 1000:
                raise RuntimeError("spinning on the store")
            return super()._get(keys, timeout)

        def _present(self, keys: Sequence[str]) -> list[bool]:
            self.calls += 1
            raise tp.CoordinationError("this store cannot tell which keys are set")

    alone = Blind(_Store(), 0, 2, f"blind-{uuid.uuid4().hex}", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(tp.CoordinationTimeoutError, match="another rank"):
        alone.all_gather(b"alone")
    assert time.monotonic() - started < 1.5
    assert alone.calls < 20, alone.calls  # a read and a check per quarter of the time-out, not per millisecond


def test_operations_of_different_kinds_are_numbered_apart() -> None:
    # Each rank runs a save in one thread and a preemption check in another, started in opposite orders
    # on the two ranks: each collective still meets its own kind's on the other rank.
    _, (a, b) = _group()
    out = _on_threads(
        lambda: _gather_in_op(a, b"save", kind="save"),
        lambda: _gather_in_op(a, b"check", delay=0.1, kind="check"),
        lambda: _gather_in_op(b, b"check", kind="check"),
        lambda: _gather_in_op(b, b"save", delay=0.1, kind="save"),
    )
    assert out == [[b"save"] * 2, [b"check"] * 2, [b"check"] * 2, [b"save"] * 2]


def test_a_coordinator_failing_with_a_builtin_error_surfaces_as_a_coordination_error() -> None:
    def broken() -> bytes:
        raise KeyError("trackpoint/save.3/0/1")

    with pytest.raises(
        tp.CoordinationError,
        match=r"saving 'x': the planning step failed on rank 1: the coordinator "
        r"raised KeyError",
    ) as info:
        collective(broken, "saving 'x'", "planning", 1)
    assert isinstance(info.value.__cause__, KeyError)


def test_a_message_of_another_step_is_refused_by_name() -> None:
    message = encode({"step": "written", "error": None})
    assert decode(message, 1, "written")["error"] is None
    with pytest.raises(
        tp.CoordinationError,
        match=r"the ranks are out of step: at the plan step rank 1 sent the "
        r"message of its 'written' step",
    ):
        decode(message, 1, "plan")


class _Plain:
    """A coordinator of the bare protocol (no ``operation``): a group of one."""

    rank, world_size, timeout = 0, 1, 1.0

    def barrier(self, *, timeout: float | None = None) -> None:
        pass

    def all_gather(self, data: bytes, *, timeout: float | None = None) -> list[bytes]:
        return [data]

    def broadcast(self, data: bytes | None, *, root: int = 0, timeout: float | None = None) -> bytes:
        assert data is not None
        return data

    def set_if_absent(self, key: str, value: bytes) -> bytes:
        return value


def test_a_coordinator_without_operations_still_saves_and_restores(tmp_path: Path) -> None:
    with operation(_Plain(), "save"):  # type: ignore[arg-type]
        pass
    options = tp.CheckpointOptions(coordinator=_Plain())  # type: ignore[arg-type]
    v = tp.Variable([1.0, 2.0])
    path = tp.Checkpoint(v=v).save(f"{tmp_path}/ckpt", options=options)
    v.assign([0.0, 0.0])
    tp.Checkpoint(v=v).restore(path, options=options).assert_consumed()
    assert v.numpy().tolist() == [1.0, 2.0]


@pytest.mark.parametrize(("num_writers", "files"), [(None, 2), (4, 8)])
def test_a_coordinated_save_keeps_the_backends_bytes_per_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_writers: int | None, files: int
) -> None:
    # Two thread-ranks, four small tensors each, four CPUs' worth of writers: on a local disk (256 MiB per
    # writer) each rank writes one data file, as a single process would; an explicit num_writers is kept.
    from trackpoint.distributed import _save
    from trackpoint.plugins import open_backend
    from trackpoint.storage import WriteItem

    monkeypatch.setattr(_save, "_default_writers", lambda: 4)
    _, ranks = _group(timeout=10.0)
    prefix = str(tmp_path / "ckpt")
    backend = open_backend(prefix)
    options = tp.CheckpointOptions(num_writers=num_writers)

    def save(rank: int) -> object:
        items = [WriteItem(f"r{rank}/v{i}", np.full(100, rank * 10 + i, np.float32)) for i in range(4)]
        return lambda: _save.save(ranks[rank], backend, prefix, items, options)

    assert _on_threads(save(0), save(1)) == [None, None]
    assert len(list(tmp_path.glob("ckpt.data-*"))) == files
    with backend.open_reader(prefix) as reader:
        assert reader.read("r1/v3").tolist() == [13.0] * 100


# ------------------------------------------------------------------ on_root: rank 0's step, one decision
def _root_step(rank: _Rank, delay: float, what: str) -> bytes:
    def step() -> bytes:
        time.sleep(delay)
        return b"done"

    return on_root(rank, step, what)


def test_a_rank_that_gave_up_after_rank_0_began_its_step_waits_for_the_outcome() -> None:
    _, (a, b) = _group(timeout=0.4)
    # Rank 0's step takes longer than one time-out but less than two: rank 1 finds "run" recorded and waits.
    assert _on_threads(lambda: _root_step(a, 0.6, "w"), lambda: _root_step(b, 0, "w")) == [b"done", b"done"]


def test_rank_0_stalling_in_its_step_beyond_twice_the_timeout_leaves_the_outcome_unknown() -> None:
    _, (a, b) = _group(timeout=0.3)
    out = _on_threads(lambda: _root_step(a, 0.9, "recording 'x'"), lambda: _root_step(b, 0, "recording 'x'"))
    assert out[0] == b"done"
    assert isinstance(out[1], tp.CoordinationError) and not isinstance(out[1], tp.CoordinationTimeoutError)
    assert "recording 'x': rank 0 began it but did not report how it went to rank 1" in str(out[1])
    assert "is unknown: check the storage" in str(out[1])


def test_rank_0_arriving_after_a_rank_gave_up_does_not_run_the_step() -> None:
    _, (a, b) = _group(timeout=0.3)
    ran = []

    def late_root() -> bytes:
        time.sleep(0.6)
        return on_root(a, lambda: ran.append(1) or b"done", "w")

    out = _on_threads(late_root, lambda: _root_step(b, 0, "w"))
    assert not ran
    for error in out:
        assert isinstance(error, tp.CoordinationTimeoutError)
        assert "w: rank 1 gave up waiting for rank 0 to begin it" in str(error), error


def test_a_restore_that_failed_on_another_rank_leaves_no_warning_about_unused_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import gc
    import logging

    _, (a, b) = _group(timeout=5.0)
    # y has no object on either rank: a status the caller got would warn about it unless told expect_partial().
    saved = tp.Checkpoint(w=tp.Variable(np.ones(3)), x=tp.Variable(np.ones(2)), y=tp.Variable(np.ones(1)))
    path = saved.write(str(tmp_path / "ckpt"))

    def restore(rank: _Rank, size: int) -> None:
        # Rank 1's x does not fit: the restore fails on both ranks, after rank 0 restored its values.
        tp.Checkpoint(w=tp.Variable(np.zeros(3)), x=tp.Variable(np.zeros(size))).read(
            path, options=tp.CheckpointOptions(coordinator=rank)
        )

    gc.collect()  # statuses an earlier test left in reference cycles warn when collected: not here
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        out = _on_threads(lambda: restore(a, 2), lambda: restore(b, 5))
        errors = [(type(e).__name__, str(e)) for e in out]
        del out  # their tracebacks hold the statuses
        gc.collect()
    assert [name for name, _ in errors] == ["ShapeMismatchError", "ShapeMismatchError"], errors
    assert "failed on rank 1" in errors[0][1]
    assert not [r for r in caplog.records if "unrestored values" in r.getMessage() and path in r.getMessage()], (
        caplog.text
    )
