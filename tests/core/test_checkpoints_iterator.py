"""``tp.checkpoints_iterator`` and ``tp.wait_for_new_checkpoint``: an evaluator following a training run."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np

import trackpoint as tp


def _manager(run: str) -> tp.CheckpointManager:
    return tp.CheckpointManager(tp.Checkpoint(w=np.ones(2)), run, max_to_keep=None)


def test_each_new_latest_checkpoint_is_yielded_once_then_a_timeout_ends_it() -> None:
    run = f"memory://iterator-{uuid.uuid4().hex[:8]}"
    manager = _manager(run)
    found = tp.checkpoints_iterator(run, timeout=0.5)
    manager.save()
    assert next(found) == f"{run}/ckpt-1"
    manager.save()
    assert next(found) == f"{run}/ckpt-2"
    manager.save()
    manager.save()
    assert next(found) == f"{run}/ckpt-4"  # the latest: ckpt-3, committed meanwhile, is skipped as in TensorFlow
    assert list(found) == []


def test_a_checkpoint_saved_while_it_waits_is_yielded() -> None:
    run = f"memory://iterator-{uuid.uuid4().hex[:8]}"
    manager = _manager(run)
    later = threading.Timer(0.2, manager.save)
    later.start()
    try:
        assert next(tp.checkpoints_iterator(run, timeout=5.0)) == f"{run}/ckpt-1"
    finally:
        later.join()


def test_timeout_fn_decides_whether_to_wait_again() -> None:
    run = f"memory://iterator-{uuid.uuid4().hex[:8]}"
    asked: list[float] = []

    def timeout_fn() -> bool:
        asked.append(time.monotonic())
        if len(asked) == 1:
            _manager(run).save()  # a checkpoint arrives while the evaluator was told to keep waiting
            return False
        return True

    assert list(tp.checkpoints_iterator(run, timeout=0.2, timeout_fn=timeout_fn)) == [f"{run}/ckpt-1"]
    assert len(asked) == 2


def test_wait_for_new_checkpoint_returns_only_another_one_or_none() -> None:
    run = f"memory://iterator-{uuid.uuid4().hex[:8]}"
    assert tp.wait_for_new_checkpoint(run, timeout=0.1, seconds_to_sleep=0.05) is None
    first = _manager(run).save()
    assert tp.wait_for_new_checkpoint(run, timeout=0.1) == first
    assert tp.wait_for_new_checkpoint(run, first, seconds_to_sleep=0.05, timeout=0.2) is None
