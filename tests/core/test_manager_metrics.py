"""``CheckpointManager`` keeping the best checkpoints by their metrics (Orbax's ``best_fn``)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import state
from trackpoint._resolve import open_store
from trackpoint.errors import (
    ArgumentTypeError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    StorageError,
)
from trackpoint.manager import METRICS_KEY, CheckpointManager
from trackpoint.storage import WriteItem


class _Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "local"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh directory: in memory, or local files (TensorBundle)."""
    if request.param == "memory":
        return f"memory://metrics-{uuid.uuid4().hex[:8]}"
    return str(tmp_path / "run")


def _ckpt() -> tp.Checkpoint:
    return tp.Checkpoint(w=tp.Variable(np.zeros(3, np.float32)))


def _manager(run: str, max_to_keep: int | None = 2, **kwargs: Any) -> CheckpointManager:
    kwargs.setdefault("best_fn", lambda m: m["loss"])
    kwargs.setdefault("best_mode", "min")
    return CheckpointManager(_ckpt(), run, max_to_keep=max_to_keep, **kwargs)


def _numbers(paths: list[str]) -> list[int]:
    return [int(p.rsplit("-", 1)[1]) for p in paths]


def _committed(run: str) -> list[int]:
    with open_store(run) as store:
        return sorted(_numbers(store.list_checkpoints(run)))


def _save_losses(m: CheckpointManager, losses: list[float | None]) -> None:
    for loss in losses:
        m.save(metrics=None if loss is None else {"loss": loss})


# ------------------------------------------------------------------ ranking
def test_min_keeps_the_lowest_and_the_newest(run: str) -> None:
    m = _manager(run)
    _save_losses(m, [0.5, 0.2, 0.9, 0.4, 0.1])
    # Kept: the two lowest (0.2 at 2, 0.1 at 5); 0.9 at 3 went when 4 came, 4 (0.4) when 5 came.
    assert _numbers(m.checkpoints) == [2, 5]
    assert _committed(run) == [2, 5]
    assert m.best_checkpoint == f"{run}/ckpt-5"
    m.save(metrics={"loss": 0.3})
    # The newest stays though it is not among the two best; the state file names it.
    assert _numbers(m.checkpoints) == [2, 5, 6]
    assert _committed(run) == [2, 5, 6]
    assert m.latest_checkpoint == f"{run}/ckpt-6"
    listed = state.read_checkpoint_state(run)
    assert listed is not None
    assert listed.model_checkpoint_path == f"{run}/ckpt-6"
    assert _numbers(list(listed.all_model_checkpoint_paths)) == [2, 5, 6]
    assert state.latest_checkpoint(run) == f"{run}/ckpt-6"
    m.save(metrics={"loss": 0.7})  # 6 goes now: it is neither among the best nor the newest
    assert _numbers(m.checkpoints) == [2, 5, 7]
    assert _committed(run) == [2, 5, 7]


def test_max_is_the_default_mode_and_keeps_the_highest(run: str) -> None:
    m = CheckpointManager(_ckpt(), run, max_to_keep=2, best_fn=lambda metrics: metrics["accuracy"])
    for accuracy in [0.5, 0.9, 0.1, 0.7, 0.6]:
        m.save(metrics={"accuracy": accuracy})
    assert _numbers(m.checkpoints) == [2, 4, 5]
    assert _committed(run) == [2, 4, 5]
    assert m.best_checkpoint == f"{run}/ckpt-2"


def test_ties_keep_the_newer(run: str) -> None:
    m = _manager(run)
    _save_losses(m, [0.3, 0.3, 0.3, 0.3])
    assert _numbers(m.checkpoints) == [3, 4]
    assert m.best_checkpoint == f"{run}/ckpt-4"
    mx = CheckpointManager(_ckpt(), f"{run}-max", max_to_keep=2, best_fn=lambda metrics: metrics["loss"])
    _save_losses(mx, [0.3, 0.3, 0.3])
    assert _numbers(mx.checkpoints) == [2, 3]


def test_nan_ranks_below_every_number(run: str) -> None:
    for mode in ("min", "max"):
        m = _manager(f"{run}-{mode}", best_mode=mode)
        _save_losses(m, [float("nan"), 0.5, 0.4, 0.6])
        assert 1 not in _numbers(m.checkpoints)
        assert m.metrics(4) == {"loss": 0.6}


def test_checkpoints_without_metrics_are_kept_outside_the_count_by_default(run: str) -> None:
    m = _manager(run)
    _save_losses(m, [0.5, None, 0.2, None, 0.9, 0.1, 0.3])
    # Every one without metrics, the two best with (3: 0.2, 6: 0.1), and the newest (7).
    assert _numbers(m.checkpoints) == [2, 3, 4, 6, 7]
    assert _committed(run) == [2, 3, 4, 6, 7]
    assert m.metrics(2) is None
    assert m.best_checkpoint == f"{run}/ckpt-6"


def test_checkpoints_without_metrics_rank_lowest_when_not_kept(run: str) -> None:
    m = _manager(run, max_to_keep=3, keep_checkpoints_without_metrics=False)
    _save_losses(m, [None, None, 0.5])
    assert _numbers(m.checkpoints) == [1, 2, 3]  # places are left for them
    _save_losses(m, [None])
    assert _numbers(m.checkpoints) == [2, 3, 4]  # the older one without metrics went first
    _save_losses(m, [0.4, 0.6])
    # The newest (6) stays; the best three are 5 (0.4), 3 (0.5), 6 (0.6): 2 and 4 have no metrics.
    assert _numbers(m.checkpoints) == [3, 5, 6]
    assert _committed(run) == [3, 5, 6]


def test_a_newest_checkpoint_without_metrics_stays_until_the_next_save(run: str) -> None:
    m = _manager(run, max_to_keep=1, keep_checkpoints_without_metrics=False)
    _save_losses(m, [0.1, None])
    assert _numbers(m.checkpoints) == [1, 2]  # 2 has no metrics, but it is the newest
    resumed = _manager(run, max_to_keep=1, keep_checkpoints_without_metrics=False)
    assert resumed.restore_or_initialize() == f"{run}/ckpt-2"  # what a restarted run resumes from
    resumed.save(metrics={"loss": 0.2})
    assert _numbers(resumed.checkpoints) == [1, 3]
    assert _committed(run) == [1, 3]


def test_max_to_keep_none_keeps_everything_and_names_the_best(run: str) -> None:
    m = _manager(run, max_to_keep=None)
    _save_losses(m, [0.5, 0.2, 0.9])
    assert _numbers(m.checkpoints) == [1, 2, 3]
    assert m.best_checkpoint == f"{run}/ckpt-2"


# ------------------------------------------------------------- what is stored
def test_metrics_are_stored_in_the_checkpoint_outside_its_object_graph(run: str) -> None:
    ckpt = tp.Checkpoint(w=tp.Variable(np.arange(3, dtype=np.float32)))
    m = CheckpointManager(ckpt, run, max_to_keep=2, best_fn=lambda metrics: metrics["loss"], best_mode="min")
    path = m.save(metrics={"loss": np.float32(0.25), "step": np.int64(10), "hist": np.array([1, 2])})
    assert path is not None
    stored = tp.load_checkpoint(path).get_tensor(METRICS_KEY)
    assert json.loads(np.asarray(stored, dtype=object).reshape(-1)[0]) == {"hist": [1, 2], "loss": 0.25, "step": 10}
    # Restores go by the object graph, which does not name it (TensorFlow's do the same).
    assert METRICS_KEY not in tp.object_graph_key_mapping(path).values()
    fresh = tp.Checkpoint(w=tp.Variable(np.zeros(3, np.float32)))
    fresh.restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.w.numpy(), [0.0, 1.0, 2.0])
    assert m.metrics(path) == {"hist": [1, 2], "loss": 0.25, "step": 10}


def test_metrics_without_best_fn_are_stored_and_retention_stays_by_recency(run: str) -> None:
    m = CheckpointManager(_ckpt(), run, max_to_keep=2)
    _save_losses(m, [0.1, 0.9, 0.5])
    assert _numbers(m.checkpoints) == [2, 3]
    assert m.best_checkpoint == m.latest_checkpoint  # Orbax's best_step() without best_fn
    assert m.metrics(3) == {"loss": 0.5}
    assert CheckpointManager(_ckpt(), run, max_to_keep=2).metrics(f"{run}/ckpt-2") == {"loss": 0.9}
    with pytest.raises(CheckpointNotFoundError, match=r"ckpt-1"):
        m.metrics(1)
    with pytest.raises(InvalidArgumentError, match=r"not a checkpoint of the series"):
        m.metrics("other-3")


def test_deleting_the_best_names_the_next_best(run: str) -> None:
    m = _manager(run, max_to_keep=3)
    _save_losses(m, [0.5, 0.2, 0.4])
    m.delete(2)
    assert m.best_checkpoint == f"{run}/ckpt-3"


def test_a_delete_failing_half_way_is_retried_not_kept_as_without_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = str(tmp_path / "run")
    m = _manager(run)
    delete = m._backend.delete
    failures = [f"{run}/ckpt-1"]

    def half_way(prefix: str) -> None:
        if prefix in failures:
            failures.remove(prefix)
            (tmp_path / "run" / "ckpt-1.index").unlink()  # the commit point went first, then the store failed
            raise StorageError(f"connection reset deleting {prefix}")
        delete(prefix)

    m._backend.delete = half_way  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        _save_losses(m, [0.9, 0.1, 0.2])
        assert _numbers(m.checkpoints) == [1, 2, 3]  # the delete of 1 failed: still listed, for the next save
        _save_losses(m, [0.3])
    # Ranked by the metrics it was saved with, 1 is retired again and its delete retried: nothing of it is
    # left, where it used to be re-read from the remainder as one "without metrics", and kept for ever.
    assert _numbers(m.checkpoints) == [2, 3, 4]
    assert sorted(f.name for f in (tmp_path / "run").iterdir() if f.name.startswith("ckpt-1.")) == []
    assert "counts as a checkpoint without metrics" not in caplog.text
    listed = state.read_checkpoint_state(run)
    assert listed is not None and _numbers(list(listed.all_model_checkpoint_paths)) == [2, 3, 4]


def test_a_kept_checkpoint_found_gone_is_retired_not_kept_as_without_metrics(
    run: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    m = _manager(run, max_to_keep=1)
    _save_losses(m, [0.9])
    m.close()
    read = CheckpointManager._read_metrics
    failing = {f"{run}/ckpt-1"}

    def flaky(self: CheckpointManager, prefix: str, *args: Any) -> dict[str, Any] | None:
        if prefix in failing:
            raise StorageError("connection reset")
        return read(self, prefix, *args)

    monkeypatch.setattr(CheckpointManager, "_read_metrics", flaky)
    resumed = _manager(run, max_to_keep=1)  # the metrics of 1 are not known: it is kept until they are read
    resumed.restore_or_initialize()
    failing.clear()
    tp.remove_checkpoint(f"{run}/ckpt-1")  # by another process
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        _save_losses(resumed, [0.5])
    # Gone is not "without metrics" (kept for ever by keep_checkpoints_without_metrics): it leaves the record.
    assert _numbers(resumed.checkpoints) == [2]
    assert "no longer committed" in caplog.text
    assert "counts as a checkpoint without metrics" not in caplog.text
    listed = state.read_checkpoint_state(run)
    assert listed is not None and _numbers(list(listed.all_model_checkpoint_paths)) == [2]
    with pytest.raises(CheckpointNotFoundError):
        resumed.metrics(1)


# ------------------------------------------------------------------ restarts
def test_a_restarted_manager_retains_by_the_earlier_metrics(run: str) -> None:
    m = _manager(run)
    _save_losses(m, [0.5, 0.1, 0.9])
    assert _numbers(m.checkpoints) == [1, 2, 3]
    m.close()
    ckpt = _ckpt()
    resumed = CheckpointManager(ckpt, run, max_to_keep=2, best_fn=lambda metrics: metrics["loss"], best_mode="min")
    assert resumed.best_checkpoint == f"{run}/ckpt-2"
    assert resumed.metrics(1) == {"loss": 0.5}
    assert resumed.restore_or_initialize() == f"{run}/ckpt-3"
    resumed.save(metrics={"loss": 0.3})
    # 1 (0.5) and 3 (0.9, no longer the newest) go: the earlier metrics ranked them.
    assert _numbers(resumed.checkpoints) == [2, 4]
    assert _committed(run) == [2, 4]
    resumed.reload()
    assert resumed.best_checkpoint == f"{run}/ckpt-2"


def test_unreadable_metrics_count_as_none_with_a_warning(run: str, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = _ckpt()
    ckpt.save_counter.assign(3)
    garbage = np.empty((), dtype=object)
    garbage[()] = b"{not json"
    ckpt._write_with(f"{run}/ckpt-3", None, [WriteItem(METRICS_KEY, garbage)], started=0.0)
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        m = CheckpointManager(
            ckpt,
            run,
            max_to_keep=1,
            best_fn=lambda metrics: metrics["loss"],
            best_mode="min",
            keep_checkpoints_without_metrics=False,
        )
    assert "ckpt-3" in caplog.text and "counts as a checkpoint without metrics" in caplog.text
    assert m.metrics(3) is None
    _save_losses(m, [0.5, 0.4])
    assert _numbers(m.checkpoints) == [5]


def test_warnings_about_metrics_read_together_come_in_the_checkpoints_order(
    run: str, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = _ckpt()
    garbage = np.empty((), dtype=object)
    garbage[()] = b"{not json"
    for n in range(1, 6):
        ckpt._write_with(f"{run}/ckpt-{n}", None, [WriteItem(METRICS_KEY, garbage)], started=0.0)
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        CheckpointManager(ckpt, run, max_to_keep=2, best_fn=lambda metrics: metrics["loss"], best_mode="min")
    unreadable = [r for r in caplog.records if "counts as a checkpoint without metrics" in r.getMessage()]
    assert [r.getMessage().split(" under ")[0].rsplit("-", 1)[1] for r in unreadable] == ["1", "2", "3", "4", "5"]
    # Logged by the thread that opened the manager, as a read one after another logged them.
    assert {r.threadName for r in unreadable} == {threading.current_thread().name}


def test_a_manager_with_best_fn_opens_in_an_atexit_handler(tmp_path: Path) -> None:
    # At interpreter exit no new thread starts: the metrics are read one after another there.
    script = f"""
import atexit
import numpy as np
import trackpoint as tp

ckpt = tp.Checkpoint(v=tp.Variable(np.zeros(2, np.float32)))
m = tp.CheckpointManager(ckpt, {str(tmp_path)!r}, max_to_keep=3, best_fn=lambda x: x["loss"], best_mode="min")
for loss in (3.0, 1.0, 2.0):
    m.save(metrics={{"loss": loss}})


def at_exit():
    again = tp.CheckpointManager(ckpt, {str(tmp_path)!r}, max_to_keep=3, best_fn=lambda x: x["loss"], best_mode="min")
    print("best:", again.best_checkpoint.rsplit("/", 1)[1], flush=True)


atexit.register(at_exit)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "best: ckpt-2", done.stderr


def test_a_store_failing_to_give_metrics_keeps_the_checkpoint(
    run: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    m = _manager(run, max_to_keep=1)
    _save_losses(m, [0.9])
    m.close()
    failing = {f"{run}/ckpt-1"}
    read = CheckpointManager._read_metrics

    def flaky(self: CheckpointManager, prefix: str, *args: Any) -> dict[str, Any] | None:
        if prefix in failing:
            raise StorageError("connection reset")
        return read(self, prefix, *args)

    monkeypatch.setattr(CheckpointManager, "_read_metrics", flaky)
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        resumed = CheckpointManager(
            _ckpt(), run, max_to_keep=1, best_fn=lambda metrics: metrics["loss"], best_mode="min"
        )
        resumed.restore_or_initialize()
        _save_losses(resumed, [0.5])
    assert "kept until a later save reads them" in caplog.text
    assert _numbers(resumed.checkpoints) == [1, 2]  # not known to be worse: kept
    failing.clear()
    _save_losses(resumed, [0.7])
    assert _numbers(resumed.checkpoints) == [2, 3]  # read now: 0.9 goes (and the newest stays)


# --------------------------------------------------------------- bad best_fn
def test_a_raising_best_fn_refuses_the_save_and_loses_nothing(run: str) -> None:
    m = _manager(run)
    _save_losses(m, [0.5, 0.2])
    counter = int(m.checkpoint.save_counter.numpy())  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgumentError, match=r"best_fn raised KeyError: 'loss'.*nothing was saved") as info:
        m.save(metrics={"accuracy": 0.5})
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ArgumentTypeError, match=r"best_fn returned 'low' \(str\)"):
        _manager(f"{run}-str", best_fn=lambda metrics: "low").save(metrics={"loss": 0.1})
    with pytest.raises(ArgumentTypeError, match=r"best_fn returned True"):
        _manager(f"{run}-bool", best_fn=lambda metrics: metrics["loss"] < 1).save(metrics={"loss": 0.1})
    assert int(m.checkpoint.save_counter.numpy()) == counter  # type: ignore[attr-defined]
    assert _numbers(m.checkpoints) == [1, 2]
    assert _committed(run) == [1, 2]
    assert m.save(metrics={"loss": 0.9}) == f"{run}/ckpt-3"  # numbering goes on


def test_a_best_fn_failing_on_adopted_metrics_refuses_the_manager_and_deletes_nothing(run: str) -> None:
    m = CheckpointManager(_ckpt(), run, max_to_keep=3)
    _save_losses(m, [0.5, 0.2, 0.4])
    with pytest.raises(InvalidArgumentError, match=r"best_fn raised KeyError: 'accuracy' on the metrics .*ckpt-1"):
        CheckpointManager(_ckpt(), run, max_to_keep=1, best_fn=lambda metrics: metrics["accuracy"])
    assert _committed(run) == [1, 2, 3]


@pytest.mark.parametrize(
    ("metrics", "match"),
    [
        ([("loss", 0.1)], r"metrics must be a mapping"),
        ({1: 0.1}, r"names of metrics must be strings"),
        ({"loss": object()}, r"stored as JSON"),
        ({"loss": b"0.1"}, r"stored as JSON"),
        # JSON objects have string keys: int keys would come back as strings, and mixed ones fail to sort.
        ({"loss": 0.1, "per_class": {0: 0.5, 1: 0.2}}, r"metrics\['per_class'\] has the key 0 \(int\)"),
        ({"loss": 0.1, "per_class": {0: 0.5, "avg": 0.2}}, r"metrics\['per_class'\] has the key 0 \(int\)"),
        ({"runs": [{"loss": 0.1}, {(1, 2): 0.2}]}, r"metrics\['runs'\]\[1\] has the key \(1, 2\) \(tuple\)"),
    ],
)
def test_metrics_that_cannot_be_stored_are_refused_before_anything_changes(run: str, metrics: Any, match: str) -> None:
    m = _manager(run)
    with pytest.raises(ArgumentTypeError, match=match):
        m.save(metrics=metrics)
    assert m.checkpoints == [] and _committed(run) == []
    assert int(m.checkpoint.save_counter.numpy()) == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"best_fn": "loss"}, ArgumentTypeError, r"best_fn must be a function"),
        ({"best_mode": "lowest"}, InvalidArgumentError, r"best_mode must be 'min' .* or 'max'"),
        ({"keep_checkpoints_without_metrics": "yes"}, ArgumentTypeError, r"keep_checkpoints_without_metrics must"),
    ],
)
def test_arguments_are_refused_before_the_directory_is_touched(
    run: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        CheckpointManager(_ckpt(), run, max_to_keep=2, **kwargs)


# ------------------------------------------------------------ with the others
def test_async_saves_retain_by_metrics_after_their_commit(run: str) -> None:
    options = tp.CheckpointOptions(enable_async=True)
    m = _manager(run, options=options)
    _save_losses(m, [0.5, 0.2, 0.9, 0.4])
    m.sync()
    assert _numbers(m.checkpoints) == [2, 4]
    assert _committed(run) == [2, 4]
    assert m.metrics(4) == {"loss": 0.4}
    m.close()


def test_checkpoints_preserved_by_the_hours_rule_stay(run: str) -> None:
    clock = _Clock()
    m = _manager(run, max_to_keep=1, keep_checkpoint_every_n_hours=1, clock=clock)
    for loss in [0.1, 0.5, 0.6, 0.7, 0.8]:
        clock.t += 1800  # half an hour apart, the first half an hour after the manager started
        m.save(metrics={"loss": loss})
    # 1 (0.1) stays the best. The others leave oldest first, and TensorFlow's rule preserves (for ever, unlisted)
    # each one at least an hour after the last preserved: 2 (an hour after the start), then 4.
    assert _numbers(m.checkpoints) == [1, 5]
    assert _committed(run) == [1, 2, 4, 5]
    m.close()
    clock.t += 1800
    resumed = _manager(run, max_to_keep=1, keep_checkpoint_every_n_hours=1, clock=clock)
    # The best checkpoint is older than the last preserved one, yet still ranked and retired by the manager.
    assert _numbers(resumed.checkpoints) == [1, 5]
    resumed.restore_or_initialize()
    resumed.save(metrics={"loss": 0.05})
    # 1 and 5 leave; neither is an hour after the last preserved (4), so both go; 2 and 4 stay.
    assert _numbers(resumed.checkpoints) == [6]
    assert _committed(run) == [2, 4, 6]


def test_a_manager_without_best_fn_takes_over_the_best_kept_from_long_ago(run: str) -> None:
    clock = _Clock()
    m = _manager(run, max_to_keep=1, keep_checkpoint_every_n_hours=1, clock=clock)
    for loss in [0.1, 0.5, 0.6, 0.7, 0.8]:
        clock.t += 1800
        m.save(metrics={"loss": loss})
    assert _numbers(m.checkpoints) == [1, 5]  # 1 is listed, older than the last preserved checkpoint (4)
    m.close()
    clock.t += 60
    # Restarted by recency: 1 is listed, so not preserved (preserved ones are taken off the list). Dropped
    # by TensorFlow's time rule it would be neither listed nor ever deleted; taken over, it goes first.
    recency = CheckpointManager(_ckpt(), run, max_to_keep=2, clock=clock)
    assert _numbers(recency.checkpoints) == [1, 5]
    recency.restore_or_initialize()
    for _ in range(3):
        clock.t += 60
        recency.save()
    assert _numbers(recency.checkpoints) == [7, 8]
    assert _committed(run) == [2, 4, 7, 8]  # the preserved ones stay


def test_a_tensorflow_style_reader_sees_a_plain_state_file(run: str) -> None:
    m = _manager(run)
    _save_losses(m, [0.5, 0.2, 0.9])
    with open_store(run) as store:
        got = store.read_file(f"{run}/checkpoint")
    assert got is not None
    text = got.data.decode()
    # Only CheckpointState's own fields: TensorFlow parses it.
    assert {line.split(":")[0] for line in text.splitlines()} == {
        "model_checkpoint_path",
        "all_model_checkpoint_paths",
        "all_model_checkpoint_timestamps",
        "last_preserved_timestamp",
    }


def test_metrics_of_zarr_checkpoints_are_read_back_after_a_restart(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    options = tp.CheckpointOptions(backend="zarr")
    m = _manager(str(tmp_path), options=options)
    _save_losses(m, [0.5, 0.1, 0.9])
    m.close()
    # Reopened without the backend chosen: the Zarr checkpoints are found, their metrics read.
    resumed = _manager(str(tmp_path))
    assert resumed.best_checkpoint == f"{tmp_path}/ckpt-2"
    assert resumed.metrics(1) == {"loss": 0.5}
