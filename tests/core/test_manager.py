"""``CheckpointManager`` semantics on the in-memory backend (all backends: tests/integration)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from gated import GatedBackend
from trackpoint import plugins, state
from trackpoint._resolve import open_backend
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.memory import MemoryBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import InvalidArgumentError, StorageError, TrackableError
from trackpoint.manager import CheckpointManager
from trackpoint.storage import Capabilities, CheckpointOptions, ShardResult, ShardSpec, StorageBackend, WriteItem

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


class _Clock:
    """Injected time: tests advance it instead of sleeping."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def run() -> str:
    return f"memory://manager-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def backend(run: str) -> StorageBackend:
    return open_backend(run)


def _ckpt() -> tuple[tp.Checkpoint, tp.Variable]:
    w = tp.Variable(np.zeros(3, np.float32), name="w")
    return tp.Checkpoint(w=w), w


def _numbers(paths: list[str]) -> list[int]:
    return [int(p.rsplit("-", 1)[1]) for p in paths]


# -------------------------------------------------------------- arguments
@pytest.mark.parametrize("max_to_keep", [0, -1])
def test_max_to_keep_must_be_positive_or_none(run: str, max_to_keep: int) -> None:
    with pytest.raises(InvalidArgumentError, match=r"Expected a positive integer or `None` for `max_to_keep`"):
        CheckpointManager(_ckpt()[0], run, max_to_keep=max_to_keep)


def test_checkpoint_interval_needs_step_counter(run: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"`step_counter` should be passed"):
        CheckpointManager(_ckpt()[0], run, max_to_keep=1, checkpoint_interval=5)


def test_directory_and_name_are_checked(run: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"needs a directory"):
        CheckpointManager(_ckpt()[0], "", max_to_keep=1)
    with pytest.raises(InvalidArgumentError, match=r"without path separators"):
        CheckpointManager(_ckpt()[0], run, max_to_keep=1, checkpoint_name="a/b")


def test_properties(run: str) -> None:
    step = tp.Variable(np.int64(0))
    m = CheckpointManager(_ckpt()[0], run, 2, step_counter=step, checkpoint_interval=3)
    assert m.directory == run
    assert m.checkpoint_interval == 3
    assert m.latest_checkpoint is None
    assert m.checkpoints == []
    m.sync()  # a no-op until saves are asynchronous; must not raise
    assert "max_to_keep=2" in repr(m)


# ------------------------------------------------------------ saving
def test_numbering_follows_save_counter_or_explicit_number(run: str) -> None:
    ckpt, _ = _ckpt()
    m = CheckpointManager(ckpt, run, max_to_keep=None)
    assert m.save() == f"{run}/ckpt-1"
    assert m.save() == f"{run}/ckpt-2"
    assert m.save(checkpoint_number=100) == f"{run}/ckpt-100"
    assert m.save(checkpoint_number=tp.Variable(np.int64(7))) == f"{run}/ckpt-7"
    assert int(ckpt.save_counter.numpy()) == 4  # incremented on every save, as in TensorFlow
    assert m.latest_checkpoint == f"{run}/ckpt-7"
    assert state.latest_checkpoint(run) == f"{run}/ckpt-7"
    with pytest.raises(TrackableError, match=r"checkpoint_number=1.5 is refused \(not an integer\)"):
        m.save(checkpoint_number=1.5)


def test_saved_values_restore(run: str) -> None:
    ckpt, w = _ckpt()
    m = CheckpointManager(ckpt, run, max_to_keep=3)
    w.assign([1.0, 2.0, 3.0])
    path = m.save()
    w.assign([0.0, 0.0, 0.0])
    ckpt.restore(path).assert_consumed()
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0, 3.0])


def test_max_to_keep_deletes_and_unlists(run: str, backend: StorageBackend) -> None:
    clock = _Clock()
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=2, clock=clock)
    paths = []
    for _ in range(5):
        clock.t += 10.0
        paths.append(m.save())
    assert m.checkpoints == paths[-2:]
    assert [backend.exists(p) for p in paths] == [False, False, False, True, True]  # type: ignore[arg-type]
    raw = backend.read_file(f"{run}/checkpoint")
    assert raw is not None
    text = raw.data.decode()
    assert 'model_checkpoint_path: "ckpt-5"' in text
    assert text.count("all_model_checkpoint_paths") == 2
    st = state.read_checkpoint_state(run)
    assert st is not None
    assert list(st.all_model_checkpoint_timestamps) == [clock.t - 10.0, clock.t]


def test_max_to_keep_none_keeps_everything(run: str, backend: StorageBackend) -> None:
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=None)
    paths = [m.save() for _ in range(4)]
    assert m.checkpoints == paths
    assert all(backend.exists(p) for p in paths if p)


def test_resaving_a_number_moves_it_to_the_end(run: str) -> None:
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=3)
    m.save(checkpoint_number=1)
    m.save(checkpoint_number=2)
    m.save(checkpoint_number=1)
    assert _numbers(m.checkpoints) == [2, 1]


def test_keep_checkpoint_every_n_hours(run: str, backend: StorageBackend) -> None:
    clock = _Clock()
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=2, keep_checkpoint_every_n_hours=1.0, clock=clock)
    paths = []
    for _ in range(8):
        clock.t += 1200.0  # 20 minutes per save
        paths.append(m.save())
    # Leaving the window: ckpt-1 (+20 min) is less than an hour after the start, ckpt-3
    # (+60 min) is the first at least an hour after it and is preserved, then ckpt-6 (+120 min).
    assert [backend.exists(p) for p in paths] == [  # type: ignore[arg-type]
        False, False, True, False, False, True, True, True,
    ]  # fmt: skip
    # Preserved checkpoints are kept but no longer listed (TensorFlow's behaviour).
    assert _numbers(m.checkpoints) == [7, 8]
    st = state.read_checkpoint_state(run)
    assert st is not None
    assert st.last_preserved_timestamp == 1_800_000_000.0 + 6 * 1200.0


def test_checkpoint_interval(run: str) -> None:
    step = tp.Variable(np.int64(0))
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=None, step_counter=step, checkpoint_interval=10)
    saved = []
    for s in range(0, 35, 5):
        step.assign(s)
        saved.append(m.save(checkpoint_number=step) is not None)
    assert saved == [True, False, True, False, True, False, True]
    step.assign(32)
    assert m.save(check_interval=False) is not None  # forced
    assert m.save(check_interval=False) is None  # never twice at one step


# ------------------------------------------------- refused and failed saves
@pytest.mark.parametrize(
    "bad",
    [7.0, True, "8", 1.5, -1, np.int64(-3), tp.Variable(np.int64(-2)), tp.Variable(1.5)],
    ids=["float", "bool", "str", "fraction", "negative", "negative-numpy", "negative-variable", "float-variable"],
)
def test_a_refused_checkpoint_number_changes_nothing(run: str, bad: Any) -> None:
    step = tp.Variable(np.int64(0))
    ckpt, _ = _ckpt()
    m = CheckpointManager(ckpt, run, max_to_keep=3, step_counter=step, checkpoint_interval=100)
    assert m.save() == f"{run}/ckpt-1"
    step.assign(100)
    for _ in range(6):
        with pytest.raises(TrackableError, match=r"CheckpointManager.save in .*: checkpoint_number=.* is refused"):
            m.save(checkpoint_number=bad)
    # Neither save_counter nor the interval's step moved: the next save is due and numbered 2.
    assert int(ckpt.save_counter.numpy()) == 1
    assert m.save() == f"{run}/ckpt-2"


def test_a_negative_checkpoint_number_is_refused_before_anything_is_written(run: str, backend: StorageBackend) -> None:
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=3)
    refused = r"checkpoint_number=-1 is refused \(negative: it would be saved as ckpt--1"
    with pytest.raises(TrackableError, match=refused) as info:
        m.save(checkpoint_number=-1)
    assert isinstance(info.value, ValueError) and isinstance(info.value, tp.CheckpointError)
    assert "Pass a non-negative integer" in str(info.value)
    assert backend.list_checkpoints(run) == [] and m.checkpoints == []
    assert m.save(checkpoint_number=0) == f"{run}/ckpt-0"  # zero is a number like any other


def test_a_failed_save_does_not_count_for_the_interval_and_gives_its_number_back(tmp_path: Path) -> None:
    run = tmp_path / "run"
    step = tp.Variable(np.int64(0))
    ckpt = tp.Checkpoint(step=step)
    m = CheckpointManager(ckpt, run, max_to_keep=3, step_counter=step, checkpoint_interval=100)
    assert m.save() == f"{run}/ckpt-1"
    shutil.rmtree(run)
    run.write_text("")  # the storage breaks: the directory is a file now
    step.assign(100)
    with pytest.raises(StorageError, match="is a file, not a directory"):
        m.save()
    assert int(ckpt.save_counter.numpy()) == 1  # nothing was committed: the number is given back
    run.unlink()
    run.mkdir()  # the storage is back
    saved = {}
    for s in (101, 150, 200, 201):
        step.assign(s)
        saved[s] = m.save()
    # The retry at 101 saves (reusing number 2); the interval counts from it.
    assert saved == {101: f"{run}/ckpt-2", 150: None, 200: None, 201: f"{run}/ckpt-3"}


class _CommitFails(GatedBackend):
    """The wrapped backend, without the gate; while ``fail`` is set, the commit raises and abort does nothing.

    A save that then fails leaves every shard it wrote behind, as one whose
    process died before its abort ran.
    """

    fail = False

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        return self.inner.write_shard(prefix, spec, items)

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        if _CommitFails.fail:
            raise StorageError(f"{self.name}: connection lost before the commit of {prefix!r}")
        self.inner.commit(prefix, shards, overwrite=overwrite)

    def abort(self, prefix: str, save_id: str) -> None:
        if not _CommitFails.fail:
            self.inner.abort(prefix, save_id)


@pytest.mark.parametrize("inner", ["memory", "bundle-rename", "bundle-create", "zarr"])
def test_the_retry_of_a_failed_save_reuses_its_number_over_its_leftovers(tmp_path: Path, inner: str) -> None:
    def make(url: str, options: CheckpointOptions) -> StorageBackend:
        if inner == "bundle-create":
            # The object stores' commit (create-only writes), on a local disk.
            caps = Capabilities(atomic_rename=False, conditional_create=True)
            return _CommitFails(BundleBackend(LocalFiles(capabilities=caps), options=CheckpointOptions(num_writers=2)))
        name = "bundle" if inner == "bundle-rename" else inner
        return _CommitFails(plugins.open_backend(url, replace(options, backend=name)))

    class Plugin:
        @plugins.hookimpl
        def trackpoint_register_backends(self, register: Any) -> None:
            register(plugins.BackendSpec("commit-fails", make, schemes=()))

    run = f"memory://retry-{uuid.uuid4().hex[:8]}" if inner == "memory" else str(tmp_path / "run")
    plugins.register(Plugin(), "commit-fails-plugin")
    try:
        # Small shards: the failed save leaves several pieces behind.
        options = CheckpointOptions(backend="commit-fails", max_shard_bytes=64, num_writers=2)
        values = {name: tp.Variable(np.full(16, float(i), np.float32)) for i, name in enumerate("abcd")}
        ckpt = tp.Checkpoint(**values)
        m = CheckpointManager(ckpt, run, max_to_keep=3, options=options)
        assert m.save() == f"{run}/ckpt-1"
        for v in values.values():
            v.assign_add(np.ones(16, np.float32))
        _CommitFails.fail = True
        with pytest.raises(StorageError, match="connection lost before the commit"):
            m.save()
        _CommitFails.fail = False
        assert int(ckpt.save_counter.numpy()) == 1
        if inner != "memory":  # the memory backend cannot tell its leftovers
            found = plugins.open_backend(run, CheckpointOptions(backend="zarr" if inner == "zarr" else "bundle"))
            assert any("ckpt-2" in p for p in found.leftovers(run))
        assert m.save() == f"{run}/ckpt-2"  # the same prefix, over the failed save's pieces
        assert m.checkpoints == [f"{run}/ckpt-1", f"{run}/ckpt-2"]
        assert tp.verify(f"{run}/ckpt-2", options=options).ok
        back = {name: tp.Variable(np.zeros(16, np.float32)) for name in values}
        tp.Checkpoint(**back).restore(f"{run}/ckpt-2", options=options).assert_consumed()
        for name, v in back.items():
            np.testing.assert_array_equal(v.numpy(), values[name].numpy())
    finally:
        _CommitFails.fail = False
        plugins.unregister("commit-fails-plugin")


def test_a_save_that_committed_but_could_not_record_it_keeps_its_number_and_step(run: str) -> None:
    step = tp.Variable(np.int64(0))
    ckpt, _ = _ckpt()
    m = CheckpointManager(ckpt, run, max_to_keep=3, step_counter=step, checkpoint_interval=10)
    m.save()
    step.assign(10)
    real = m._record_state

    def refuse() -> None:
        raise StorageError("memory: the state file is read-only")

    m._record_state = refuse  # type: ignore[method-assign]
    with pytest.raises(StorageError, match="read-only") as failed:
        m.save()
    assert f"{run}/ckpt-2 was committed and is whole; only the state file" in "\n".join(failed.value.__notes__)
    m._record_state = real  # type: ignore[method-assign]
    # ckpt-2 is committed and the manager's latest: it counts, and is not overwritten by the next save.
    assert int(ckpt.save_counter.numpy()) == 2 and m.latest_checkpoint == f"{run}/ckpt-2"
    assert m.save() is None
    step.assign(20)
    assert m.save() == f"{run}/ckpt-3"


def test_a_process_killed_as_retention_starts_leaves_no_checkpoint_that_no_manager_retires(
    run: str, backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=2)
    m.save()
    m.save()

    def killed(prefix: str) -> None:
        raise KeyboardInterrupt  # the process dies here: nothing after this line of save runs

    monkeypatch.setattr(m._backend, "delete", killed)
    with pytest.raises(KeyboardInterrupt):
        m.save()  # ckpt-3 committed; ckpt-1 about to leave the window
    monkeypatch.undo()
    # The next run's manager retires everything the window no longer holds.
    again = CheckpointManager(_ckpt()[0], run, max_to_keep=2)
    assert again.restore_or_initialize() == f"{run}/ckpt-3"
    again.save()
    assert again.checkpoints == [f"{run}/ckpt-3", f"{run}/ckpt-4"]
    assert backend.list_checkpoints(run) == again.checkpoints


# ----------------------------------------------------------- restarting
def test_restart_picks_up_checkpoints_and_retention(run: str, backend: StorageBackend) -> None:
    clock = _Clock()
    first = CheckpointManager(_ckpt()[0], run, max_to_keep=3, clock=clock)
    for _ in range(3):
        clock.t += 1.0
        first.save()
    # A new process: fresh objects, a new manager on the same directory.
    ckpt, _w = _ckpt()
    second = CheckpointManager(ckpt, run, max_to_keep=3, clock=clock)
    assert second.checkpoints == first.checkpoints
    assert second.latest_checkpoint == f"{run}/ckpt-3"
    assert second.restore_or_initialize() == f"{run}/ckpt-3"
    assert int(ckpt.save_counter.numpy()) == 3
    clock.t += 1.0
    assert second.save() == f"{run}/ckpt-4"
    # Retention continues over checkpoints written before the restart.
    assert _numbers(second.checkpoints) == [2, 3, 4]
    assert not backend.exists(f"{run}/ckpt-1")


def test_restart_adopts_checkpoint_committed_before_crash(run: str) -> None:
    ckpt, _ = _ckpt()
    m = CheckpointManager(ckpt, run, max_to_keep=5)
    m.save()
    m.save()
    # Crash between committing ckpt-3 and updating the state file.
    ckpt.write(f"{run}/ckpt-3")
    assert state.latest_checkpoint(run) == f"{run}/ckpt-3"
    again = CheckpointManager(_ckpt()[0], run, max_to_keep=5)
    assert _numbers(again.checkpoints) == [1, 2, 3]
    assert again.latest_checkpoint == f"{run}/ckpt-3"


def test_restart_skips_listed_but_uncommitted_checkpoints(run: str, backend: StorageBackend) -> None:
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=5)
    for _ in range(3):
        m.save()
    # An interrupted delete (commit point gone) or a lost checkpoint: still listed in the file.
    backend.delete(f"{run}/ckpt-3")
    backend.delete(f"{run}/ckpt-1")
    again = CheckpointManager(_ckpt()[0], run, max_to_keep=5)
    assert _numbers(again.checkpoints) == [2]
    assert again.latest_checkpoint == f"{run}/ckpt-2"
    assert state.latest_checkpoint(run) == f"{run}/ckpt-2"


def test_restart_without_state_file_lists_committed(run: str, backend: StorageBackend) -> None:
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=5)
    for _ in range(3):
        m.save()
    backend.delete_file(f"{run}/checkpoint")
    again = CheckpointManager(_ckpt()[0], run, max_to_keep=5)
    assert _numbers(again.checkpoints) == [1, 2, 3]
    assert again.latest_checkpoint == f"{run}/ckpt-3"


def test_restart_with_garbage_state_file(run: str, backend: StorageBackend) -> None:
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=5)
    m.save()
    backend.write_file(f"{run}/checkpoint", b"\x00 not a state file {")
    ckpt, _ = _ckpt()
    again = CheckpointManager(ckpt, run, max_to_keep=5)
    assert again.latest_checkpoint == f"{run}/ckpt-1"
    again.restore_or_initialize()
    again.save()
    assert state.latest_checkpoint(run) == f"{run}/ckpt-2"


def test_restart_keeps_preserved_time(run: str) -> None:
    clock = _Clock()
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=1, keep_checkpoint_every_n_hours=1.0, clock=clock)
    for _ in range(4):
        clock.t += 1800.0
        m.save()
    st = state.read_checkpoint_state(run)
    assert st is not None
    again = CheckpointManager(_ckpt()[0], run, max_to_keep=1, keep_checkpoint_every_n_hours=1.0, clock=clock)
    assert again._last_preserved_timestamp == st.last_preserved_timestamp > 0


def test_clock_behind_last_preserved_time_is_clamped(run: str, backend: StorageBackend) -> None:
    clock = _Clock()
    m = CheckpointManager(_ckpt()[0], run, max_to_keep=2, clock=clock)
    m.save()
    clock.t -= 10_000.0  # time went backwards between runs
    again = CheckpointManager(_ckpt()[0], run, max_to_keep=2, clock=clock)
    assert again._last_preserved_timestamp == clock.t
    # As in TensorFlow, old checkpoints' times are clamped to now, which makes them
    # preserved: never deleted by retention, even after more saves.
    assert again.checkpoints == []
    for n in (100, 101, 102):
        clock.t += 1.0
        again.save(checkpoint_number=n)
    assert _numbers(again.checkpoints) == [101, 102]
    assert backend.exists(f"{run}/ckpt-1")


# ---------------------------------------------------- restore_or_initialize
def test_restore_or_initialize_calls_init_fn_on_empty_directory(run: str) -> None:
    calls: list[int] = []
    ckpt, w = _ckpt()
    m = CheckpointManager(ckpt, run, max_to_keep=1, init_fn=lambda: calls.append(1))
    assert m.restore_or_initialize() is None
    assert calls == [1]
    w.assign([4.0, 5.0, 6.0])
    m.save()
    fresh, w2 = _ckpt()
    m2 = CheckpointManager(fresh, run, max_to_keep=1, init_fn=lambda: calls.append(2))
    assert m2.restore_or_initialize() == f"{run}/ckpt-1"
    assert calls == [1]  # not called when a checkpoint exists
    np.testing.assert_array_equal(w2.numpy(), [4.0, 5.0, 6.0])


def test_restore_or_initialize_resets_interval_step(run: str) -> None:
    step = tp.Variable(np.int64(20))
    ckpt, _ = _ckpt()
    ckpt.step = step
    CheckpointManager(ckpt, run, max_to_keep=None, step_counter=step, checkpoint_interval=10).save()
    step2 = tp.Variable(np.int64(0))
    ckpt2, _ = _ckpt()
    ckpt2.step = step2
    m = CheckpointManager(ckpt2, run, max_to_keep=None, step_counter=step2, checkpoint_interval=10)
    m.restore_or_initialize()
    assert int(step2.numpy()) == 20
    step2.assign(25)
    assert m.save() is None  # within the interval of the restored step
    step2.assign(30)
    assert m.save() is not None


# ------------------------------------------------------------ two managers
def test_two_managers_interleaved_keep_each_others_entries(run: str, backend: StorageBackend) -> None:
    clock = _Clock()
    a = CheckpointManager(_ckpt()[0], run, max_to_keep=2, checkpoint_name="a", clock=clock)
    b = CheckpointManager(_ckpt()[0], run, max_to_keep=2, checkpoint_name="b", clock=clock)
    for _ in range(3):
        clock.t += 1.0
        a.save()
        clock.t += 1.0
        b.save()
    st = state.read_checkpoint_state(run)
    assert st is not None
    names = [p.rsplit("/", 1)[1] for p in st.all_model_checkpoint_paths]
    assert names == ["a-2", "b-2", "a-3", "b-3"]  # ordered by time
    assert st.model_checkpoint_path == f"{run}/b-3"
    assert all(backend.exists(p) for p in st.all_model_checkpoint_paths)
    assert not backend.exists(f"{run}/a-1") and not backend.exists(f"{run}/b-1")


def test_two_managers_saving_concurrently_lose_no_entry(run: str, backend: StorageBackend) -> None:
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            m = CheckpointManager(_ckpt()[0], run, max_to_keep=2, checkpoint_name=name)
            for _ in range(6):
                m.save()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    st = state.read_checkpoint_state(run)
    assert st is not None
    assert sorted(p.rsplit("/", 1)[1] for p in st.all_model_checkpoint_paths) == ["a-5", "a-6", "b-5", "b-6"]
    assert sorted(backend.list_checkpoints(run)) == [f"{run}/{n}" for n in ("a-5", "a-6", "b-5", "b-6")]


# --------------------------------------------------- TensorFlow's directory
def test_resumes_directory_written_by_tensorflow_manager(tmp_path: Path) -> None:
    expected = json.loads((FIXTURES / "manager" / "expected.json").read_text())
    d = tmp_path / "manager"
    shutil.copytree(FIXTURES / "manager", d)
    step = tp.Variable(np.int64(0))
    w = tp.Variable(np.zeros((2, 2), np.float32))
    ckpt = tp.Checkpoint(step=step, w=w)
    clock = _Clock(2_000_000_000.0)  # after TensorFlow's wall-clock timestamps
    m = CheckpointManager(ckpt, str(d), max_to_keep=2, clock=clock)
    assert m.checkpoints == [str(d / "ckpt-2"), str(d / "ckpt-3")]
    assert m.restore_or_initialize() == str(d / "ckpt-3")
    want = expected["checkpoints"]["ckpt-3"]["tensors"]["w/.ATTRIBUTES/VARIABLE_VALUE"]
    np.testing.assert_array_equal(w.numpy(), np.frombuffer(bytes.fromhex(want["hex"]), np.float32).reshape(2, 2))
    assert m.save() == str(d / "ckpt-4")
    assert not (d / "ckpt-2.index").exists() and not (d / "ckpt-2.data-00000-of-00001").exists()
    assert (d / "checkpoint").read_text().startswith('model_checkpoint_path: "ckpt-4"\n')


# ------------------------------------------------- cleanup on every save
def _leftover(directory: Path, name: str, age: float) -> Path:
    """A data file of a save that crashed before its commit, last modified ``age`` seconds ago."""
    path = directory / f"{name}.data-00000-of-00001"
    path.write_bytes(b"\0" * 16)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_each_save_cleans_leftovers_old_enough_for_the_default_age_guard(tmp_path: Path) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(np.ones(2)))
    young_at_start = _leftover(tmp_path, "ckpt-7", age=5.0)
    m = CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)
    assert young_at_start.exists()  # too young when the manager started: a save may still be writing it
    # Time passes: the crashed save's pieces are now older than the 10-minute guard.
    then = time.time() - 3600.0
    os.utime(young_at_start, (then, then))
    still_young = _leftover(tmp_path, "ckpt-8", age=5.0)
    m.save()
    assert not young_at_start.exists()
    assert still_young.exists()  # the default guard still protects a save that may be running
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
        "ckpt-8.data-00000-of-00001",
    ]


def test_a_failing_cleanup_after_a_save_is_logged_and_never_fails_the_save(caplog: pytest.LogCaptureFixture) -> None:
    class FlakyCleanup(MemoryBackend):
        """Listing for the cleanup fails after start-up (the store's listing permission was revoked, say)."""

        calls = 0

        def cleanup(self, directory: str, *, min_age: float = 600.0) -> list[str]:
            FlakyCleanup.calls += 1
            if FlakyCleanup.calls > 1:
                raise StorageError(f"memory: cannot list {directory!r} right now")
            return []

    class Plugin:
        @plugins.hookimpl
        def trackpoint_register_backends(self, register: Any) -> None:
            register(plugins.BackendSpec("flaky", lambda url, opts: FlakyCleanup(), schemes=()))

    plugins.register(Plugin(), "flaky-plugin")
    try:
        options = CheckpointOptions(backend="flaky")
        m = CheckpointManager(tp.Checkpoint(v=tp.Variable(1.0)), "memory://flaky/run", 2, options=options)
        with caplog.at_level(logging.WARNING, logger="trackpoint"):
            assert m.save() == "memory://flaky/run/ckpt-1"
        assert FlakyCleanup.calls == 2
        assert "could not clean up leftovers of crashed saves in memory://flaky/run" in caplog.text
        assert state.latest_checkpoint("memory://flaky/run", options) == "memory://flaky/run/ckpt-1"
    finally:
        plugins.unregister("flaky-plugin")


def test_restore_or_initialize_names_the_objects_it_left_at_their_initial_values(
    run: str, caplog: pytest.LogCaptureFixture
) -> None:
    CheckpointManager(tp.Checkpoint(params={"w": np.ones(3), "old": np.ones(2)}), run, max_to_keep=2).save()
    params = {"w": np.zeros(3), "new": np.zeros(2)}
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        assert CheckpointManager(tp.Checkpoint(params=params), run, max_to_keep=2).restore_or_initialize()
    assert params["w"].tolist() == [1.0, 1.0, 1.0] and params["new"].tolist() == [0.0, 0.0]
    (record,) = [r for r in caplog.records if r.name == "trackpoint.manager"]
    assert "keep their initial values" in record.getMessage() and "(root).params.new" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trackpoint.manager"):
        CheckpointManager(tp.Checkpoint(params={"w": np.zeros(3)}), run, max_to_keep=2).restore_or_initialize()
    assert not [r for r in caplog.records if r.name == "trackpoint.manager"]  # a complete match says nothing
