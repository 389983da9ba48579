"""``CheckpointManager`` refuses what it could not use when it is created, and saves that would undo an earlier run."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.errors import ArgumentTypeError, CheckpointExistsError, InvalidArgumentError


@pytest.fixture
def run() -> str:
    return f"memory://manager-args-{uuid.uuid4().hex[:8]}"


def _ckpt(value: float = 0.0) -> tuple[tp.Checkpoint, tp.Variable]:
    w = tp.Variable(np.full(2, value, np.float32))
    return tp.Checkpoint(w=w), w


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_to_keep": "3"}, ArgumentTypeError, r"for `max_to_keep`, got '3' \(str\)"),
        ({"max_to_keep": 2.5}, ArgumentTypeError, r"for `max_to_keep`, got 2\.5 \(float\)"),
        ({"max_to_keep": True}, ArgumentTypeError, r"for `max_to_keep`, got True \(bool\)"),
        ({"keep_checkpoint_every_n_hours": "x"}, ArgumentTypeError, r"keep_checkpoint_every_n_hours must be a num"),
        ({"keep_checkpoint_every_n_hours": -1}, InvalidArgumentError, r"positive, finite number of hours"),
        ({"keep_checkpoint_every_n_hours": float("nan")}, InvalidArgumentError, r"positive, finite number"),
        ({"step_counter": np.zeros((), np.int64), "checkpoint_interval": 0}, InvalidArgumentError, "positive integer"),
        ({"step_counter": np.zeros((), np.int64), "checkpoint_interval": 1.5}, InvalidArgumentError, "positive int"),
        ({"step_counter": 0, "checkpoint_interval": 10}, ArgumentTypeError, r"step_counter is the int 0, which never"),
        (
            {"step_counter": np.int64(0), "checkpoint_interval": 5},
            ArgumentTypeError,
            r"step_counter is the int64 0, which never changes",
        ),
        (
            {"step_counter": np.zeros(2, np.int64), "checkpoint_interval": 5},
            ArgumentTypeError,
            r"step_counter: expected an integer step",
        ),
        ({"init_fn": "init"}, ArgumentTypeError, r"init_fn must be callable"),
        ({"checkpoint_name": 3}, InvalidArgumentError, r"checkpoint_name 3 must be a non-empty file name"),
    ],
)
def test_arguments_are_refused_when_given(run: str, kwargs: dict[str, Any], error: type, message: str) -> None:
    arguments: dict[str, Any] = {"max_to_keep": 2, **kwargs}
    with pytest.raises(error, match=message):
        tp.CheckpointManager(_ckpt()[0], run, **arguments)


@pytest.mark.parametrize("checkpoint", [None, {"w": np.zeros(2)}, tp.AutoTrackable()])
def test_a_checkpoint_is_required(run: str, checkpoint: Any) -> None:
    with pytest.raises(ArgumentTypeError, match=r"checkpoint is \w+, which lacks .*pass a trackpoint\.Checkpoint"):
        tp.CheckpointManager(checkpoint, run, max_to_keep=1)


def test_a_step_counter_updated_in_place_drives_the_interval(run: str) -> None:
    step = np.zeros((), np.int64)
    manager = tp.CheckpointManager(_ckpt()[0], run, max_to_keep=None, step_counter=step, checkpoint_interval=10)
    saved = []
    for _ in range(30):
        saved.append(manager.save())
        step += 1
    assert [path for path in saved if path] == [f"{run}/ckpt-1", f"{run}/ckpt-2", f"{run}/ckpt-3"]


def _earlier_run(run: str, saves: int, max_to_keep: int | None) -> list[str]:
    ckpt, w = _ckpt()
    manager = tp.CheckpointManager(ckpt, run, max_to_keep=max_to_keep)
    paths = []
    for i in range(saves):
        w.assign(np.full(2, float(i + 1), np.float32))
        paths.append(manager.save())
    manager.close()
    return paths


def test_a_run_that_did_not_resume_cannot_overwrite_or_retire_an_earlier_runs_checkpoints(run: str) -> None:
    paths = _earlier_run(run, 5, max_to_keep=1)
    assert paths[-1] == f"{run}/ckpt-5"

    ckpt, _ = _ckpt()
    manager = tp.CheckpointManager(ckpt, run, max_to_keep=1)  # forgot restore_or_initialize()
    with pytest.raises(
        CheckpointExistsError,
        match=r"refused to write ckpt-1: save_counter is 0, but the directory "
        r"holds checkpoints up to ckpt-5 from an earlier run.*restore_or_initialize",
    ):
        manager.save()
    with pytest.raises(
        CheckpointExistsError,
        match=r"refused to write ckpt-5: checkpoint_number=5 was given.*"
        r"would overwrite",
    ):
        manager.save(checkpoint_number=5)
    assert int(ckpt.save_counter.numpy()) == 0  # a refused save changes nothing
    assert manager.latest_checkpoint == f"{run}/ckpt-5"
    assert tp.latest_checkpoint(run) == f"{run}/ckpt-5"
    np.testing.assert_array_equal(tp.load_variable(f"{run}/ckpt-5", "w/.ATTRIBUTES/VARIABLE_VALUE"), [5.0, 5.0])

    assert manager.save(checkpoint_number=6) == f"{run}/ckpt-6"  # numbered above the earlier run: saved


def test_a_run_that_resumed_continues_the_numbering(run: str) -> None:
    _earlier_run(run, 3, max_to_keep=2)
    ckpt, w = _ckpt()
    manager = tp.CheckpointManager(ckpt, run, max_to_keep=2)
    assert manager.restore_or_initialize() == f"{run}/ckpt-3"
    np.testing.assert_array_equal(w.numpy(), [3.0, 3.0])
    assert manager.save() == f"{run}/ckpt-4"


def test_within_one_run_numbers_may_repeat_or_go_down_as_in_tensorflow(run: str) -> None:
    manager = tp.CheckpointManager(_ckpt()[0], run, max_to_keep=None)
    assert manager.save(checkpoint_number=100) == f"{run}/ckpt-100"
    assert manager.save(checkpoint_number=7) == f"{run}/ckpt-7"
    assert manager.save(checkpoint_number=100) == f"{run}/ckpt-100"


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_second_writer_of_the_same_series_is_refused_not_overwritten(run: str, asynchronous: bool) -> None:
    options = tp.CheckpointOptions(enable_async=asynchronous)
    first, w1 = _ckpt(1.0)
    second, _ = _ckpt(2.0)
    zombie = tp.CheckpointManager(first, run, max_to_keep=3, options=options)  # an old instance still running
    fresh = tp.CheckpointManager(second, run, max_to_keep=3, options=options)
    assert fresh.save() == f"{run}/ckpt-1"
    fresh.sync()
    with pytest.raises(tp.CheckpointExistsError, match=r"another writer committed it after this manager was created"):
        zombie.save()
    assert int(first.save_counter.numpy()) == 0
    np.testing.assert_array_equal(tp.load_variable(f"{run}/ckpt-1", "w/.ATTRIBUTES/VARIABLE_VALUE"), [2.0, 2.0])

    # A manager re-saving its own number replaces it (TensorFlow's rule), as does the retry of a failed save.
    assert fresh.save(checkpoint_number=1) == f"{run}/ckpt-1"
    fresh.sync()
    w1.assign(np.full(2, 3.0, np.float32))
    assert zombie.save(checkpoint_number=7) == f"{run}/ckpt-7"
    zombie.sync()


def test_a_run_that_restored_may_save_at_any_number(run: str) -> None:
    # Epochs numbered by the caller; a preemption save mid-epoch 4 took the next number, ckpt-4.
    ckpt, w = _ckpt()
    manager = tp.CheckpointManager(ckpt, run, max_to_keep=None)
    for epoch in (1, 2, 3):
        w.assign(np.full(2, float(epoch), np.float32))
        manager.save(checkpoint_number=epoch)
    assert tp.preemption._save_function(manager, None, None)() == f"{run}/ckpt-4"  # type: ignore[attr-defined]

    again, _ = _ckpt()
    resumed = tp.CheckpointManager(again, run, max_to_keep=None)
    assert resumed.restore_or_initialize() == f"{run}/ckpt-4"
    assert resumed.save(checkpoint_number=4) == f"{run}/ckpt-4"  # epoch 4 rerun: replaces the preemption save
    again.restore(f"{run}/ckpt-2")  # a rollback
    assert resumed.save(checkpoint_number=3) == f"{run}/ckpt-3"


def test_creating_a_manager_does_not_create_the_save_counter(run: str, tmp_path: Any) -> None:
    source, _ = _ckpt(4.0)
    pretrained = source.write(str(tmp_path / "pretrained"))  # write(): no save counter in it
    ckpt, w = _ckpt()
    tp.CheckpointManager(ckpt, run, max_to_keep=1)
    ckpt.read(pretrained).assert_consumed()  # TensorFlow's warm start: the counter is not expected
    np.testing.assert_array_equal(w.numpy(), [4.0, 4.0])


def test_an_int_step_counter_without_an_interval_is_accepted(run: str) -> None:
    manager = tp.CheckpointManager(_ckpt()[0], run, max_to_keep=1, step_counter=0)
    assert manager.save() == f"{run}/ckpt-1"


def test_reload_sees_checkpoints_removed_or_added_by_others(run: str) -> None:
    ckpt, w = _ckpt()
    manager = tp.CheckpointManager(ckpt, run, max_to_keep=None)
    paths = []
    for value in (1.0, 2.0, 3.0):
        w.assign(np.full(2, value, np.float32))
        paths.append(manager.save())
    tp.remove_checkpoint(paths[-1])  # another tool deletes the newest
    assert manager.latest_checkpoint == paths[-1]  # the manager's own record, as TensorFlow's
    manager.reload()
    assert manager.latest_checkpoint == paths[1] and manager.checkpoints == paths[:2]
    assert manager.restore_or_initialize() == paths[1]
    np.testing.assert_array_equal(w.numpy(), [2.0, 2.0])

    other, _ = _ckpt(9.0)
    other.write(f"{run}/ckpt-7")  # committed by something else
    manager.reload()
    assert manager.latest_checkpoint == f"{run}/ckpt-7"
    assert manager.save() == f"{run}/ckpt-3"  # this run restored (save_counter 2): it may save under 7
