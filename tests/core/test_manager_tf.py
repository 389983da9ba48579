"""``CheckpointManager`` rows of TensorFlow's API: the checkpoint property, last_checkpoint_step, a clock reset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_checkpoint_property() -> None:
    ckpt = tp.Checkpoint()
    assert tp.CheckpointManager(ckpt, "memory://mgr-tf/a", max_to_keep=1).checkpoint is ckpt


def test_last_checkpoint_step_counts_the_interval_from_an_earlier_run() -> None:
    step = tp.Variable(np.int64(12))
    ckpt = tp.Checkpoint(step=step)
    manager = tp.CheckpointManager(
        ckpt, "memory://mgr-tf/b", max_to_keep=None, step_counter=step, checkpoint_interval=5, last_checkpoint_step=10
    )
    assert manager.save() is None  # 12 < 10 + 5
    step.assign(15)
    assert manager.save() == "memory://mgr-tf/b/ckpt-1"
    fresh = tp.CheckpointManager(ckpt, "memory://mgr-tf/c", max_to_keep=None, step_counter=step, checkpoint_interval=5)
    assert fresh.save() is not None  # without it, the first save happens


def test_clock_reset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(10000.0)
    ckpt = tp.Checkpoint()
    first = tp.CheckpointManager(ckpt, tmp_path, max_to_keep=1, keep_checkpoint_every_n_hours=1.0, clock=clock)
    paths = [first.save()]
    clock.now += 3600.0
    paths.append(first.save())
    clock.now += 3600.0
    paths.append(first.save())
    assert [tp.checkpoint_exists(p) for p in paths] == [False, True, True]  # the second one is preserved
    state = tp.get_checkpoint_state(tmp_path)
    assert state is not None and state.last_preserved_timestamp == 13600.0
    first.close()

    clock.now = 5000.0  # the clock went back
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        second = tp.CheckpointManager(ckpt, tmp_path, max_to_keep=1, clock=clock)
    assert "behind the last preserved checkpoint timestamp" in caplog.text
    # Unsure whether they were preserved, the manager keeps them: known, never deleted, not listed.
    assert second.latest_checkpoint == paths[2]
    assert second.checkpoints == []
    clock.now += 10.0
    fourth = second.save()
    clock.now += 10.0
    fifth = second.save()
    assert tp.checkpoint_exists(paths[1]) and tp.checkpoint_exists(paths[2])
    assert not tp.checkpoint_exists(fourth)
    assert second.checkpoints == [fifth]
    state = tp.get_checkpoint_state(tmp_path)
    assert state is not None
    # The preservation time before the reset is replaced, not carried over.
    assert state.last_preserved_timestamp == 5000.0
    assert list(state.all_model_checkpoint_timestamps) == [5020.0]


def test_incomplete_state_file_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_text("")
    with pytest.raises(ValueError, match="Invalid checkpoint state loaded from"):
        tp.get_checkpoint_state(tmp_path)


def test_manager_recovers_from_an_incomplete_state_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A deliberate difference (docs/tensorflow.md): TensorFlow's manager raises ValueError here.
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    with tp.CheckpointManager(ckpt, tmp_path, max_to_keep=3) as manager:
        first = manager.save()
    (tmp_path / "checkpoint").write_text("")
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        again = tp.CheckpointManager(ckpt, tmp_path, max_to_keep=3)
    assert "has no model_checkpoint_path" in caplog.text
    assert again.latest_checkpoint == first
    assert again.save() == str(tmp_path / "ckpt-2")
    again.close()
