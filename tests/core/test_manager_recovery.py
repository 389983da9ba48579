"""What a restarted ``CheckpointManager`` adopts, keeps and retires; TensorFlow's order of a save's steps."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import state
from trackpoint._resolve import open_backend
from trackpoint.errors import StorageError
from trackpoint.manager import CheckpointManager


class _Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def _ckpt(value: float = 0.0) -> tp.Checkpoint:
    return tp.Checkpoint(v=tp.Variable(np.float32(value)))


def _on_disk(directory: Path) -> list[int]:
    return sorted(int(n[5:-6]) for n in os.listdir(directory) if n.endswith(".index"))


def _preserving(directory: Path, clock: _Clock, ckpt: tp.Checkpoint | None = None) -> CheckpointManager:
    return CheckpointManager(ckpt or _ckpt(), directory, max_to_keep=2, keep_checkpoint_every_n_hours=1, clock=clock)


def _saved_half_hourly(
    directory: Path, clock: _Clock, saves: int, ckpt: tp.Checkpoint | None = None
) -> CheckpointManager:
    """A manager keeping 2 and one checkpoint an hour, after ``saves`` saves half an hour apart."""
    m = _preserving(directory, clock, ckpt)
    for _ in range(saves):
        clock.t += 1800
        m.save()
    return m


def test_a_restart_after_a_rollback_resumes_from_the_state_file_and_keeps_preserved_checkpoints(
    tmp_path: Path,
) -> None:
    clock = _Clock()
    ckpt = _ckpt()
    m = _saved_half_hourly(tmp_path, clock, 8, ckpt)
    assert _on_disk(tmp_path) == [2, 4, 6, 7, 8]  # 2, 4 and 6 preserved for ever
    ckpt.restore(str(tmp_path / "ckpt-2"))  # the loss diverged: roll back
    for _ in range(2):
        clock.t += 1800
        m.save()  # ckpt-3, ckpt-4 (ckpt-8 leaves the window preserved)
    assert m.latest_checkpoint == str(tmp_path / "ckpt-4")
    # ckpt-6 and ckpt-8 are numbered above the state file's newest, but were committed before it: preserved
    # checkpoints, not saves that crashed before recording themselves.
    assert tp.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-4")
    again = _preserving(tmp_path, clock)
    assert again.checkpoints == [str(tmp_path / "ckpt-3"), str(tmp_path / "ckpt-4")]
    assert again.restore_or_initialize() == str(tmp_path / "ckpt-4")
    clock.t += 60
    again.save()
    assert _on_disk(tmp_path) == [2, 4, 5, 6, 8]


def test_a_restart_still_adopts_a_save_that_crashed_before_recording_itself(tmp_path: Path) -> None:
    clock = _Clock()
    ckpt = _ckpt()
    _saved_half_hourly(tmp_path, clock, 4, ckpt)
    ckpt.write(str(tmp_path / "ckpt-5"))  # committed, then the process died before the state file
    assert tp.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-5")
    again = _preserving(tmp_path, clock)
    assert again.latest_checkpoint == str(tmp_path / "ckpt-5")
    assert again.checkpoints == [str(tmp_path / "ckpt-3"), str(tmp_path / "ckpt-4"), str(tmp_path / "ckpt-5")]


def test_without_a_state_file_preserved_checkpoints_are_not_adopted_for_deletion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    _saved_half_hourly(tmp_path, clock, 8)
    (tmp_path / "checkpoint").write_text("garbage {")
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        again = _preserving(tmp_path, clock)
    assert "adopting only the newest of 5 checkpoints ckpt-N, ckpt-8" in caplog.text
    assert again.checkpoints == [str(tmp_path / "ckpt-8")]
    again.restore_or_initialize()
    for _ in range(3):
        clock.t += 60
        again.save()
    assert _on_disk(tmp_path) == [2, 4, 6, 7, 10, 11]


def test_a_failed_retention_delete_stays_listed_and_the_next_save_retries_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = f"memory://recovery-{uuid.uuid4().hex[:8]}"
    m = CheckpointManager(_ckpt(), run, max_to_keep=1)
    m.save()
    real = m._backend.delete

    def unavailable(prefix: str) -> None:
        raise StorageError("503 SlowDown")

    monkeypatch.setattr(m._backend, "delete", unavailable)
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        assert m.save() == f"{run}/ckpt-2"
    assert f"could not delete old checkpoint {run}/ckpt-1 (the next save retries): 503 SlowDown" in caplog.text
    # Still whole and still listed: neither forgotten by this manager nor by the next one.
    assert m.checkpoints == [f"{run}/ckpt-1", f"{run}/ckpt-2"]
    st = state.read_checkpoint_state(run)
    assert st is not None and list(st.all_model_checkpoint_paths) == [f"{run}/ckpt-1", f"{run}/ckpt-2"]
    assert CheckpointManager(_ckpt(), run, max_to_keep=1).checkpoints == m.checkpoints
    monkeypatch.setattr(m._backend, "delete", real)
    assert m.save() == f"{run}/ckpt-3"
    assert m.checkpoints == [f"{run}/ckpt-3"]
    assert open_backend(run).list_checkpoints(run) == [f"{run}/ckpt-3"]


def test_the_state_file_names_the_new_checkpoint_before_old_ones_are_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    # TensorFlow's order: a process killed while deleting leaves readers (and TensorFlow's tools) on the new one.
    run = f"memory://recovery-{uuid.uuid4().hex[:8]}"
    m = CheckpointManager(_ckpt(), run, max_to_keep=1)
    m.save()
    real = m._backend.delete
    seen: list[tuple[str, list[str]]] = []

    def delete(prefix: str) -> None:
        st = state.read_checkpoint_state(run)
        assert st is not None
        seen.append((st.model_checkpoint_path, list(st.all_model_checkpoint_paths)))
        real(prefix)

    monkeypatch.setattr(m._backend, "delete", delete)
    m.save()
    assert seen == [(f"{run}/ckpt-2", [f"{run}/ckpt-1", f"{run}/ckpt-2"])]
    st = state.read_checkpoint_state(run)
    assert st is not None and list(st.all_model_checkpoint_paths) == [f"{run}/ckpt-2"]


def test_a_rollback_onto_a_checkpoint_the_manager_does_not_keep_is_refused_for_what_it_is(tmp_path: Path) -> None:
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=3)
    for _ in range(3):
        m.save()
    # A state file without times (TensorFlow 1's Saver): the restarted manager keeps none of them.
    paths = [str(tmp_path / f"ckpt-{n}") for n in (1, 2, 3)]
    tp.update_checkpoint_state(str(tmp_path), paths[-1], paths)
    ckpt = _ckpt()
    again = CheckpointManager(ckpt, tmp_path, max_to_keep=3)
    assert again.checkpoints == []
    ckpt.restore(paths[0]).assert_consumed()
    ckpt.v.assign(7.0)
    with pytest.raises(
        tp.CheckpointExistsError, match=r"a checkpoint this manager does not keep .*manager.delete\(2\)"
    ) as refused:
        again.save()
    assert "another writer" not in str(refused.value)  # that message is for a second process
    again.delete(2)
    assert again.save() == paths[1]
    restored = _ckpt()
    restored.restore(paths[1]).assert_consumed()
    assert float(restored.v.numpy()) == 7.0


def test_a_rollback_never_saves_over_a_preserved_checkpoint(tmp_path: Path) -> None:
    clock = _Clock()
    ckpt = _ckpt()
    _saved_half_hourly(tmp_path, clock, 8, ckpt)
    again_ckpt = _ckpt()
    again = _preserving(tmp_path, clock, again_ckpt)
    again_ckpt.restore(str(tmp_path / "ckpt-2"))
    clock.t += 1800
    assert again.save() == str(tmp_path / "ckpt-3")
    with pytest.raises(tp.CheckpointExistsError, match="preserved by keep_checkpoint_every_n_hours"):
        again.save()  # ckpt-4, kept for ever
    assert _on_disk(tmp_path) == [2, 3, 4, 6, 8]  # ckpt-7 left the window, as in TensorFlow


def test_resuming_from_a_checkpoint_without_save_counter_numbers_on_from_its_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Checkpoint.write (TensorFlow's write(), Keras' save_weights) stores no save_counter.
    _ckpt(1.0).write(str(tmp_path / "ckpt-4"))
    ckpt = _ckpt()
    m = CheckpointManager(ckpt, tmp_path, max_to_keep=3)
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        assert m.restore_or_initialize() == str(tmp_path / "ckpt-4")
    assert caplog.text == ""  # no warning about the save_counter the checkpoint never had
    assert float(ckpt.v.numpy()) == 1.0 and int(ckpt.save_counter.numpy()) == 4
    assert m.save() == str(tmp_path / "ckpt-5")


@pytest.mark.parametrize("suffix", ["/", "//"])
def test_a_url_directory_with_trailing_slashes_resumes_its_checkpoints(suffix: str) -> None:
    run = f"memory://recovery-{uuid.uuid4().hex[:8]}/run"
    first = CheckpointManager(_ckpt(), run, max_to_keep=2)
    first.save()
    first.save()
    ckpt = _ckpt()
    again = CheckpointManager(ckpt, run + suffix, max_to_keep=2)
    assert again.latest_checkpoint == f"{run}/ckpt-2"
    assert again.restore_or_initialize() == f"{run}/ckpt-2"
    assert again.save() == f"{run}/ckpt-3"
    assert again.checkpoints == [f"{run}/ckpt-2", f"{run}/ckpt-3"]


def test_delete_removes_a_checkpoint_from_the_directory_the_record_and_the_state_file(tmp_path: Path) -> None:
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=3)
    for _ in range(3):
        m.save()
    m.delete(2)
    assert _on_disk(tmp_path) == [1, 3]
    assert m.checkpoints == [str(tmp_path / "ckpt-1"), str(tmp_path / "ckpt-3")]
    m.delete(str(tmp_path / "ckpt-3"))  # the latest: the newest one left takes its place
    assert m.latest_checkpoint == str(tmp_path / "ckpt-1") == tp.latest_checkpoint(str(tmp_path))
    st = state.read_checkpoint_state(str(tmp_path))
    assert st is not None and list(st.all_model_checkpoint_paths) == [str(tmp_path / "ckpt-1")]
    # Retention counts what is left: three more saves keep the newest three, ckpt-1 goes.
    for _ in range(3):
        m.save()
    assert _on_disk(tmp_path) == [4, 5, 6]
    with pytest.raises(tp.CheckpointNotFoundError, match="no checkpoint is committed at"):
        m.delete(2)
    for wrong in ("other-5", str(tmp_path / "elsewhere" / "ckpt-5"), -1):
        with pytest.raises(tp.InvalidArgumentError):
            m.delete(wrong)
    assert _on_disk(tmp_path) == [4, 5, 6]


def test_deleting_every_listed_checkpoint_leaves_no_state_file_readers_refuse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=1)
    m.save()
    m.delete(1)  # the only one: nothing is left to name as the latest
    assert _on_disk(tmp_path) == [] and m.latest_checkpoint is None
    assert not (tmp_path / "checkpoint").exists()
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        assert tp.get_checkpoint_state(str(tmp_path)) is None
        assert tp.latest_checkpoint(str(tmp_path)) is None
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    # Another series in the directory: its newest checkpoint becomes the state file's latest.
    other = CheckpointManager(_ckpt(), tmp_path, max_to_keep=1, checkpoint_name="other")
    other.save()
    m.save()
    m.delete(2)
    st = tp.get_checkpoint_state(str(tmp_path))
    assert st is not None and st.model_checkpoint_path == str(tmp_path / "other-1")
    assert list(st.all_model_checkpoint_paths) == [str(tmp_path / "other-1")]


def test_a_checkpoint_deleted_by_another_process_leaves_the_running_managers_record(tmp_path: Path) -> None:
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=3)
    for _ in range(3):
        m.save()
    # `trackpoint rm` (another process's manager.delete) while the job still runs.
    CheckpointManager(_ckpt(), tmp_path, max_to_keep=3).delete(2)
    m.save()
    # Retention counts what is there: nothing more is deleted, and the deleted one is not listed again.
    assert _on_disk(tmp_path) == [1, 3, 4]
    st = tp.get_checkpoint_state(str(tmp_path))
    assert st is not None and [os.path.basename(p) for p in st.all_model_checkpoint_paths] == [
        "ckpt-1",
        "ckpt-3",
        "ckpt-4",
    ]
    assert m.checkpoints == [str(tmp_path / f"ckpt-{n}") for n in (1, 3, 4)]
    m.save()
    assert _on_disk(tmp_path) == [3, 4, 5]


def test_delete_takes_a_preserved_checkpoint_too(tmp_path: Path) -> None:
    clock = _Clock()
    m = _saved_half_hourly(tmp_path, clock, 5)
    assert _on_disk(tmp_path) == [2, 4, 5]  # ckpt-2 preserved, unlisted
    m.delete("ckpt-2")
    assert _on_disk(tmp_path) == [4, 5] and m.checkpoints == [str(tmp_path / "ckpt-4"), str(tmp_path / "ckpt-5")]
