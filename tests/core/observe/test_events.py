"""Event hooks: fired once per save and restore, in order, with the documented fields; failures never spread."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from solo_coordinator import SoloCoordinator
from trackpoint import observe, plugins
from trackpoint.errors import PluginError
from trackpoint.plugins import hookimpl


def _model(n: int = 3, size: int = 1000) -> tp.AutoTrackable:
    root = tp.AutoTrackable()
    for i in range(n):
        setattr(root, f"v{i}", tp.Variable(np.full(size, float(i), dtype=np.float32)))
    return root


def test_a_save_fires_started_progress_and_one_commit(tmp_path: Path, recorder: Any) -> None:
    ckpt = tp.Checkpoint(model=_model())
    path = ckpt.save(str(tmp_path / "ckpt"))
    names = recorder.names()
    assert names[0] == "save_started" and names[-1] == "save_committed"
    assert set(names[1:-1]) == {"save_progress"} and names.count("save_committed") == 1
    started, committed = recorder.of("save_started")[0], recorder.of("save_committed")[0]
    assert started == {
        "path": path,
        "operation": "checkpoint",
        "backend": "bundle",
        "total_bytes": committed["nbytes"],
        # 3 variables, save_counter and the object graph
        "num_tensors": 5,
        "is_async": False,
    }
    assert committed["nbytes"] > 3 * 4000  # the variables' bytes plus the graph
    assert committed["seconds"] > 0 and committed["blocking_seconds"] == committed["seconds"]
    progress = [p["written_bytes"] for p in recorder.of("save_progress")]
    assert progress == sorted(progress) and progress[-1] >= committed["nbytes"]


def test_bundle_reports_per_tensor(tmp_path: Path, recorder: Any, every_progress: None) -> None:
    ckpt = tp.Checkpoint(model=_model(n=6))
    ckpt.write(str(tmp_path / "one-shard"), options=tp.CheckpointOptions(num_writers=1))
    # One shard: without per-tensor reports there would be a single progress event.
    assert len(recorder.of("save_progress")) == 7  # 6 variables and the object graph


def test_a_failed_save_fires_failed_not_committed(tmp_path: Path, recorder: Any) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    ckpt = tp.Checkpoint(v=tp.Variable([1.0]))
    with pytest.raises(tp.CheckpointError) as info:
        ckpt.write(str(tmp_path / "file" / "ckpt"))
    assert recorder.names()[0] == "save_started" and recorder.names()[-1] == "save_failed"
    assert "save_committed" not in recorder.names()
    failed = recorder.of("save_failed")[0]
    assert failed["error"] is info.value and failed["path"] == str(tmp_path / "file" / "ckpt")
    assert failed["blocking_seconds"] == failed["seconds"] >= 0


def test_a_save_refused_over_another_format_fires_failed(tmp_path: Path, recorder: Any) -> None:
    # The refusal came after save_started and outside the events: observers saw a save that never ended.
    prefix = str(tmp_path / "ckpt-1")
    tp.Checkpoint(v=tp.Variable([1.0])).write(prefix)
    zarr = tp.CheckpointOptions(backend="zarr")
    root = tp.AutoTrackable()
    root.v = tp.Variable([2.0])
    for save in (
        lambda: tp.Checkpoint(v=tp.Variable([2.0])).write(prefix, zarr),
        lambda: tp.Saver({"v": root.v}).save(None, prefix, options=zarr),
    ):
        recorder.clear()
        with pytest.raises(tp.CheckpointExistsError):
            save()
        assert recorder.names() == ["save_started", "save_failed"]


def test_a_restore_fires_started_and_finished_with_bytes_read(tmp_path: Path, recorder: Any) -> None:
    path = tp.Checkpoint(model=_model()).save(str(tmp_path / "ckpt"))
    recorder.clear()
    restored = _model()
    for v in (restored.v0, restored.v1, restored.v2):
        v.assign(np.zeros(1000, np.float32))
    tp.Checkpoint(model=restored).restore(str(tmp_path)).assert_consumed()  # a directory: its latest
    assert restored.v2.numpy()[0] == 2.0
    names = recorder.names()
    assert names[0] == "restore_started" and names[-1] == "restore_finished"
    started, finished = recorder.of("restore_started")[0], recorder.of("restore_finished")[0]
    assert started["path"] == finished["path"] == path
    assert started["backend"] == "bundle" and started["operation"] == "checkpoint"
    assert started["num_tensors"] == 5 and started["total_bytes"] == 3 * 4000 + 8
    # Read during the call: the graph and 3 variables. save_counter is created after the read and restored
    # then (a deferred restore), after the event.
    assert finished["nbytes"] == 3 * 4000 and finished["num_tensors"] == 4


def test_an_observed_restore_of_a_slice_reads_and_reports_only_the_slice(tmp_path: Path, recorder: Any) -> None:
    """The counting reader hands slices to the backend's ranged read instead of reading whole tensors."""
    path = tp.Checkpoint(e=tp.Variable(np.arange(18, dtype=np.float32).reshape(6, 3))).save(str(tmp_path / "ckpt"))
    recorder.clear()
    part = tp.Variable(np.zeros((2, 3), np.float32), save_slice_info=tp.SaveSliceInfo("e", [6, 3], [4, 0], [2, 3]))
    tp.Checkpoint(e=part).restore(path).expect_partial()
    assert part.numpy().ravel().tolist() == list(range(12, 18))
    assert recorder.of("restore_finished")[0]["nbytes"] == 2 * 3 * 4


def test_a_failed_restore_fires_failed(tmp_path: Path, recorder: Any) -> None:
    path = tp.Checkpoint(v=tp.Variable(np.zeros(3, np.float32))).save(str(tmp_path / "ckpt"))
    recorder.clear()
    with pytest.raises(tp.ShapeMismatchError) as info:
        tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32))).restore(path)
    assert recorder.names()[0] == "restore_started" and recorder.names()[-1] == "restore_failed"
    assert recorder.of("restore_failed")[0]["error"] is info.value


def test_no_events_for_a_checkpoint_that_is_not_there(tmp_path: Path, recorder: Any) -> None:
    with pytest.raises(tp.CheckpointNotFoundError):
        tp.Checkpoint(v=tp.Variable(1.0)).restore(str(tmp_path / "missing-1"))
    assert recorder.events == []


def test_manager_saver_and_convert_are_observed(tmp_path: Path, recorder: Any) -> None:
    ckpt = tp.Checkpoint(model=_model())
    manager = tp.CheckpointManager(ckpt, str(tmp_path / "run"), max_to_keep=2)
    saved = manager.save()
    manager.restore_or_initialize()
    assert [(f["operation"], f["path"]) for f in recorder.of("save_committed")] == [("checkpoint", saved)]
    assert [f["path"] for f in recorder.of("restore_finished")] == [saved]

    recorder.clear()
    saver = tp.Saver([tp.Variable(np.ones(10), name="w")])
    prefix = saver.save(str(tmp_path / "tf1" / "model"), global_step=3)
    saver.restore(prefix)
    assert [(f["operation"], f["path"]) for f in recorder.of("save_committed")] == [("saver", prefix)]
    assert [(f["operation"], f["nbytes"]) for f in recorder.of("restore_finished")] == [("saver", 80)]

    recorder.clear()
    assert saved is not None
    tp.convert(saved, str(tmp_path / "copy-1"), dst_options=tp.CheckpointOptions(backend="zarr"))
    tp.convert(saved, str(tmp_path / "export.npz"))
    committed = recorder.of("save_committed")
    assert [(f["operation"], f["backend"], Path(f["path"]).name) for f in committed] == [
        ("convert", "zarr", "copy-1"),
        ("convert", "npz", "export.npz"),
    ]
    # A copy writes the object graph as a tensor, as the save did; a flat file keeps it in its metadata.
    assert committed[0]["nbytes"] > 3 * 4000 + 8 and committed[1]["nbytes"] == 3 * 4000 + 8


def test_a_failing_observer_is_logged_and_changes_nothing(
    tmp_path: Path, recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @hookimpl
        def trackpoint_save_committed(self, path: str) -> None:
            raise RuntimeError("monitoring is down")

    plugins.register(Broken(), "broken")
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        path = tp.Checkpoint(v=tp.Variable([1.0])).save(str(tmp_path / "ckpt"))
    assert tp.checkpoint_exists(path)
    # The other observer still saw the commit.
    assert [f["path"] for f in recorder.of("save_committed")] == [path]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'broken'" in warnings[0].getMessage() and "monitoring is down" in warnings[0].getMessage()
    assert "trackpoint_save_committed" in warnings[0].getMessage() and path in warnings[0].getMessage()


def test_an_observer_taking_fewer_parameters(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Minimal:
        @hookimpl
        def trackpoint_save_committed(self, nbytes: int) -> None:
            seen.append(nbytes)

    plugins.register(Minimal(), "minimal")
    tp.Checkpoint(v=tp.Variable(np.zeros(5, np.float64))).write(str(tmp_path / "ckpt"))
    assert len(seen) == 1 and seen[0] >= 40


def test_wrappers_are_refused_on_event_hooks() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def trackpoint_save_committed(self, path: str) -> Any:
            return (yield)

    with pytest.raises(PluginError, match=r"trackpoint_save_committed as a wrapper; event hooks are called one"):
        plugins.register(Wrapper(), "wrapper")


def test_nobody_listening_costs_nothing(recorder_class: Any) -> None:
    # No observer, the logger below INFO, stderr no terminal: the shared do-nothing object, sizes never computed.
    logging.getLogger("trackpoint").setLevel(logging.WARNING)
    plugins.get_plugin_manager()
    assert observe._relay is None

    class Items:
        def __iter__(self) -> Any:
            raise AssertionError("sizes computed although nobody listens")

        def __len__(self) -> int:
            raise AssertionError("counted although nobody listens")

    events = observe.save_events("p", operation="checkpoint", backend="bundle", items=Items())  # type: ignore[arg-type]
    assert events is observe._NO_EVENTS
    rec = recorder_class()
    plugins.register(rec, "late")
    assert observe._relay is not None
    plugins.unregister("late")
    assert observe._relay is None
    logging.getLogger("trackpoint").setLevel(logging.NOTSET)


def test_a_value_restored_on_creation_fires_a_restore_of_its_own(tmp_path: Path, recorder: Any) -> None:
    saved = _model()
    saved.late = tp.Variable(np.full(250, 7.0, np.float32))
    path = tp.Checkpoint(model=saved).save(str(tmp_path / "ckpt"))
    restored = _model()
    tp.Checkpoint(model=restored).restore(path)
    first = len(recorder.of("restore_finished"))
    recorder.clear()
    restored.late = tp.Variable(np.zeros(250, np.float32))  # restored now, on creation
    assert restored.late.numpy()[0] == 7.0
    assert recorder.names() == ["restore_started", "restore_finished"] and first >= 1
    started, finished = recorder.of("restore_started")[0], recorder.of("restore_finished")[0]
    assert started["path"] == finished["path"] == path and started["operation"] == "checkpoint"
    assert started["num_tensors"] == finished["num_tensors"] == 1
    assert started["total_bytes"] == finished["nbytes"] == 1000


def test_a_value_restored_on_creation_is_logged_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    saved = _model(n=1)
    saved.late = tp.Variable(np.full(250, 7.0, np.float32))
    path = tp.Checkpoint(model=saved).save(str(tmp_path / "ckpt"))
    restored = _model(n=1)
    with caplog.at_level(logging.DEBUG, logger="trackpoint"):
        tp.Checkpoint(model=restored).restore(path)
        caplog.clear()
        restored.late = tp.Variable(np.zeros(250, np.float32))
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "on creation" in r.getMessage()]
    assert lines and all(level == logging.DEBUG for level, _ in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


@pytest.mark.parametrize("enable_async", [False, True])
def test_a_coordinated_save_reports_progress_as_it_writes(
    tmp_path: Path, recorder: Any, every_progress: None, enable_async: bool
) -> None:
    ckpt = tp.Checkpoint(model=_model(n=6))
    options = tp.CheckpointOptions(
        coordinator=SoloCoordinator("observe-solo"), num_writers=1, enable_async=enable_async
    )
    ckpt.write(str(tmp_path / "ckpt"), options=options)
    ckpt.sync()
    progress = [f["written_bytes"] for f in recorder.of("save_progress")]
    # Per tensor (the bundle reports each), as a single process's save: 6 variables and the graph.
    assert len(progress) == 7 and progress == sorted(progress)
    assert progress[-1] == recorder.of("save_committed")[0]["nbytes"]


@pytest.mark.parametrize("backend", ["bundle", "zarr"])
def test_a_convert_reports_the_bytes_a_save_of_the_same_checkpoint_reports(
    tmp_path: Path, recorder: Any, every_progress: None, backend: str
) -> None:
    # String tensors (the object graph, a PythonState) count in a save's total: in a convert's too, or its
    # progress ends above its total and dashboards show two sizes for one checkpoint.
    model = _model()
    model.note = tp.Variable(np.array([b"x" * 3000, b"yz"], dtype=object))
    source = tp.Checkpoint(model=model).write(str(tmp_path / "source"), options=tp.CheckpointOptions(backend=backend))
    saved = recorder.of("save_committed")[-1]["nbytes"]
    done: list[tuple[int, int]] = []
    tp.convert(source, str(tmp_path / "copy"), progress=lambda d, t: done.append((d, t)))
    started, committed = recorder.of("save_started")[-1], recorder.of("save_committed")[-1]
    assert started["operation"] == "convert"
    assert started["total_bytes"] == committed["nbytes"] == saved
    assert recorder.of("save_progress")[-1]["written_bytes"] == saved
    assert done[-1] == (saved, saved)
