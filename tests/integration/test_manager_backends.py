"""CheckpointManager, the state file and Saver on every built-in backend.

Each test runs against memory, the local bundle backend (in ``tmp_path``),
S3 (moto), GCS (fake-gcs-server) and Zarr (local). A backend is skipped only
while its module does not exist yet; once it exists, failures are failures.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import state
from trackpoint._resolve import open_backend
from trackpoint.storage import CheckpointOptions, StorageBackend, WriteItem


@dataclass(frozen=True)
class Target:
    """Where a test writes: a directory URL, the options to reach it, the local folder if any."""

    name: str
    directory: str
    options: CheckpointOptions | None
    local: Path | None
    #: Names of every file/object under ``directory``, read behind the backend's back.
    raw_names: Callable[[], list[str]] | None = None

    def backend(self) -> StorageBackend:
        return open_backend(self.directory, self.options)


_MODULES = {
    "memory": "trackpoint.backends.memory",
    "bundle": "trackpoint.backends.stores.local",
    "s3": "trackpoint.backends.stores.s3",
    "gcs": "trackpoint.backends.stores.gcs",
    "zarr": "trackpoint.backends.zarr",
}


@pytest.fixture(
    params=[
        "memory",
        "bundle",
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("gcs", marks=pytest.mark.gcs),
        "zarr",
    ]
)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return _make_target(request.param, request, tmp_path)


@pytest.fixture(params=["bundle", "zarr"])
def local_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """The backends that store checkpoints in a local directory."""
    return _make_target(request.param, request, tmp_path)


def _make_target(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if importlib.util.find_spec(_MODULES[name]) is None:
        pytest.skip(f"backend module {_MODULES[name]} does not exist yet")
    if name == "memory":
        return Target(name, f"memory://mgr-{uuid.uuid4().hex[:10]}/run", None, None)
    if name in ("bundle", "zarr"):
        local = tmp_path / "run"

        def local_names() -> list[str]:
            return sorted(str(p.relative_to(local)) for p in local.rglob("*")) if local.exists() else []

        options = CheckpointOptions(backend="zarr") if name == "zarr" else None
        return Target(name, str(local), options, local, local_names)
    bucket: str = request.getfixturevalue(f"{name}_bucket")
    storage: dict[str, Any] = request.getfixturevalue(f"{name}_storage_options")
    raw = request.getfixturevalue(f"{name}_raw")
    root = bucket.split("://", 1)[1] + "/run"

    def object_names() -> list[str]:
        return sorted(p[len(root) + 1 :] for p in raw.find(root))

    return Target(name, f"{bucket}/run", CheckpointOptions(storage_options=storage), None, object_names)


class _Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _model() -> tuple[Any, Any]:
    w = tp.Variable(np.zeros((2, 2), np.float32), name="w")
    step = tp.Variable(np.int64(0), name="step")
    return w, step


def _ckpt(w: Any, step: Any) -> Any:
    return tp.Checkpoint(w=w, step=step)


# ------------------------------------------------------------- state file
def test_state_file_round_trip_and_recovery(target: Target) -> None:
    backend = target.backend()
    d = target.directory
    for n in (1, 2):
        backend.save(f"{d}/ckpt-{n}", [WriteItem("x", np.full(3, n, np.float32))])
    state.update_checkpoint_state(backend, d, f"{d}/ckpt-1")
    st = state.read_checkpoint_state(d, target.options)
    assert st is not None and st.model_checkpoint_path == f"{d}/ckpt-1"
    # ckpt-2 committed after the state was written (a crash in between): found by listing.
    assert state.latest_checkpoint(d, target.options) == f"{d}/ckpt-2"
    backend.delete(f"{d}/ckpt-2")
    backend.delete(f"{d}/ckpt-1")
    assert state.latest_checkpoint(d, target.options) is None


# ------------------------------------------------------------------ Saver
def test_saver_round_trip_and_retention(target: Target) -> None:
    w, step = _model()
    saver = tp.Saver([w, step], max_to_keep=2, options=target.options)
    paths = []
    for i in range(1, 4):
        w.assign(np.full((2, 2), i, np.float32))
        paths.append(saver.save(f"{target.directory}/model", global_step=i))
    backend = target.backend()
    assert [backend.exists(p) for p in paths] == [False, True, True]  # type: ignore[arg-type]
    assert state.latest_checkpoint(target.directory, target.options) == paths[-1]
    w.assign(np.zeros((2, 2), np.float32))
    tp.Saver([w, step], options=target.options).restore(paths[1])
    np.testing.assert_array_equal(w.numpy(), np.full((2, 2), 2, np.float32))


def test_saver_sharded(target: Target) -> None:
    vs = [tp.Variable(np.full(16, i, np.float32), name=f"v{i}") for i in range(3)]
    prefix = tp.Saver(vs, sharded=True, options=target.options).save(f"{target.directory}/sh", global_step=1)
    for v in vs:
        v.assign(np.zeros(16, np.float32))
    tp.Saver(vs, options=target.options).restore(prefix)
    assert [float(v.numpy()[0]) for v in vs] == [0.0, 1.0, 2.0]


# ---------------------------------------------------------------- manager
def test_retention_and_restart(target: Target) -> None:
    clock = _Clock()
    w, step = _model()
    m = tp.CheckpointManager(_ckpt(w, step), target.directory, max_to_keep=2, options=target.options, clock=clock)
    paths = []
    for i in range(1, 4):
        clock.t += 60.0
        w.assign(np.full((2, 2), i, np.float32))
        paths.append(m.save())
    backend = target.backend()
    assert [backend.exists(p) for p in paths] == [False, True, True]  # type: ignore[arg-type]
    assert m.checkpoints == paths[1:]
    # Restart: fresh objects and a new manager on the existing directory.
    w2, step2 = _model()
    ckpt2 = _ckpt(w2, step2)
    m2 = tp.CheckpointManager(ckpt2, target.directory, max_to_keep=2, options=target.options, clock=clock)
    assert m2.checkpoints == paths[1:]
    assert m2.restore_or_initialize() == paths[-1]
    np.testing.assert_array_equal(w2.numpy(), np.full((2, 2), 3, np.float32))
    clock.t += 60.0
    assert m2.save() == f"{target.directory}/ckpt-4"
    assert not backend.exists(paths[1])  # type: ignore[arg-type]
    assert state.latest_checkpoint(target.directory, target.options) == f"{target.directory}/ckpt-4"


def test_retention_deletes_every_shard(target: Target) -> None:
    # Tiny shards: every tensor gets a data file (or object) of its own.
    opts = dataclasses.replace(target.options or CheckpointOptions(), max_shard_bytes=8)
    m = tp.CheckpointManager(_ckpt(*_model()), target.directory, max_to_keep=1, options=opts)
    first = m.save()
    if target.name == "bundle":
        assert target.local is not None
        assert len(list(target.local.glob("ckpt-1.data-*"))) > 1
    m.save()
    backend = target.backend()
    assert not backend.exists(first)  # type: ignore[arg-type]
    assert backend.list_checkpoints(target.directory) == [f"{target.directory}/ckpt-2"]
    if target.raw_names is not None:
        # Nothing of ckpt-1 is left in the store: no shard, no index, no temporary piece.
        names = target.raw_names()
        assert any(n.startswith("ckpt-2") for n in names)
        assert [n for n in names if n.startswith("ckpt-1")] == []


def test_keep_checkpoint_every_n_hours(target: Target) -> None:
    clock = _Clock()
    m = tp.CheckpointManager(
        _ckpt(*_model()), target.directory, 1, keep_checkpoint_every_n_hours=1.0, options=target.options, clock=clock
    )
    paths = []
    for _ in range(4):
        clock.t += 2400.0  # 40 minutes
        paths.append(m.save())
    backend = target.backend()
    # ckpt-2 (+80 min) is the first leaving the window an hour after the start: preserved.
    assert [backend.exists(p) for p in paths] == [False, True, False, True]  # type: ignore[arg-type]
    assert m.checkpoints == [paths[-1]]


def test_checkpoint_interval_with_step_counter(target: Target) -> None:
    w, step = _model()
    m = tp.CheckpointManager(
        _ckpt(w, step), target.directory, None, step_counter=step, checkpoint_interval=100, options=target.options
    )
    saved = []
    for s in (0, 50, 100, 150, 260):
        step.assign(s)
        saved.append(m.save(checkpoint_number=step))
    d = target.directory
    assert saved == [f"{d}/ckpt-0", None, f"{d}/ckpt-100", None, f"{d}/ckpt-260"]
    assert sorted(target.backend().list_checkpoints(d)) == sorted(p for p in saved if p)


def test_crash_between_commit_and_state_update(target: Target) -> None:
    w, step = _model()
    ckpt = _ckpt(w, step)
    m = tp.CheckpointManager(ckpt, target.directory, max_to_keep=3, options=target.options)
    m.save()
    w.assign(np.full((2, 2), 7, np.float32))
    # The save of ckpt-2 committed through the backend, then the process died before
    # the state file was updated.
    ckpt.save_counter.assign_add(1)
    ckpt.write(f"{target.directory}/ckpt-2", options=target.options)
    assert state.latest_checkpoint(target.directory, target.options) == f"{target.directory}/ckpt-2"
    w2, step2 = _model()
    m2 = tp.CheckpointManager(_ckpt(w2, step2), target.directory, max_to_keep=3, options=target.options)
    assert m2.latest_checkpoint == f"{target.directory}/ckpt-2"
    assert m2.checkpoints == [f"{target.directory}/ckpt-1", f"{target.directory}/ckpt-2"]
    m2.restore_or_initialize()
    np.testing.assert_array_equal(w2.numpy(), np.full((2, 2), 7, np.float32))
    assert m2.save() == f"{target.directory}/ckpt-3"


def test_state_pointing_at_uncommitted_checkpoint(target: Target) -> None:
    m = tp.CheckpointManager(_ckpt(*_model()), target.directory, max_to_keep=3, options=target.options)
    m.save()
    m.save()
    # Deleted behind the manager's back (or a delete interrupted after removing the commit point).
    target.backend().delete(f"{target.directory}/ckpt-2")
    assert state.latest_checkpoint(target.directory, target.options) == f"{target.directory}/ckpt-1"
    m2 = tp.CheckpointManager(_ckpt(*_model()), target.directory, max_to_keep=3, options=target.options)
    assert m2.checkpoints == [f"{target.directory}/ckpt-1"]


def test_leftovers_of_crashed_save_are_cleaned_up(target: Target) -> None:
    from trackpoint.storage import ShardSpec

    backend = target.backend()
    m = tp.CheckpointManager(_ckpt(*_model()), target.directory, max_to_keep=3, options=target.options)
    m.save()
    # A save that wrote its data and died before commit.
    backend.write_shard(
        f"{target.directory}/ckpt-2", ShardSpec(0, 1, uuid.uuid4().hex), [WriteItem("x", np.ones(4, np.float32))]
    )
    if target.name == "bundle":
        # It died an hour ago: bundle cleanup keeps younger leftovers, which a running save may own.
        assert target.local is not None
        for p in target.local.rglob("*"):
            if "ckpt-2" in p.name or "ckpt-2" in p.parent.name:
                os.utime(p, (time.time() - 3600, time.time() - 3600))
    tp.CheckpointManager(_ckpt(*_model()), target.directory, max_to_keep=3, options=target.options)
    # The new manager ran cleanup: nothing is left for another cleanup to remove
    # (backends may keep young leftovers, which a writer might still own, for longer).
    assert backend.cleanup(target.directory) == []
    assert not backend.exists(f"{target.directory}/ckpt-2")
    assert f"{target.directory}/ckpt-2" not in backend.list_checkpoints(target.directory)
    if target.name == "bundle":
        # The bundle backend removes uncommitted data files at once.
        assert target.local is not None
        assert not [p for p in target.local.rglob("*") if "ckpt-2" in p.name]


def test_copied_directory_still_resolves(local_target: Target, tmp_path: Path) -> None:
    target = local_target
    assert target.local is not None
    w, step = _model()
    m = tp.CheckpointManager(_ckpt(w, step), target.directory, max_to_keep=2, options=target.options)
    w.assign(np.full((2, 2), 5, np.float32))
    m.save()
    m.save()
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(target.local, copy)
    shutil.rmtree(target.local)  # the original is gone: only relative paths can work
    assert state.latest_checkpoint(str(copy), target.options) == str(copy / "ckpt-2")
    w2, step2 = _model()
    m2 = tp.CheckpointManager(_ckpt(w2, step2), str(copy), max_to_keep=2, options=target.options)
    assert m2.checkpoints == [str(copy / "ckpt-1"), str(copy / "ckpt-2")]
    assert m2.restore_or_initialize() == str(copy / "ckpt-2")
    np.testing.assert_array_equal(w2.numpy(), np.full((2, 2), 5, np.float32))


def test_two_managers_on_one_directory(target: Target) -> None:
    # Created first, as two jobs that started earlier: a manager's start-up cleanup
    # may remove pieces of a save that is running right then (see CheckpointManager).
    managers = [
        tp.CheckpointManager(
            _ckpt(*_model()), target.directory, max_to_keep=2, checkpoint_name=n, options=target.options
        )
        for n in ("a", "b")
    ]
    errors: list[BaseException] = []

    def work(m: tp.CheckpointManager) -> None:
        try:
            for _ in range(3):
                m.save()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    st = state.read_checkpoint_state(target.directory, target.options)
    assert st is not None
    names = sorted(p.rsplit("/", 1)[1] for p in st.all_model_checkpoint_paths)
    assert names == ["a-2", "a-3", "b-2", "b-3"]
    backend = target.backend()
    assert all(backend.exists(p) for p in st.all_model_checkpoint_paths)
    assert sorted(backend.list_checkpoints(target.directory)) == sorted(
        f"{target.directory}/{n}" for n in ("a-2", "a-3", "b-2", "b-3")
    )


def test_restore_or_initialize_with_init_fn(target: Target) -> None:
    w, step = _model()
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        w.assign(np.full((2, 2), 9, np.float32))

    m = tp.CheckpointManager(_ckpt(w, step), target.directory, max_to_keep=1, init_fn=init, options=target.options)
    assert m.restore_or_initialize() is None
    assert calls == ["init"]
    m.save()
    w2, step2 = _model()
    m2 = tp.CheckpointManager(_ckpt(w2, step2), target.directory, max_to_keep=1, init_fn=init, options=target.options)
    assert m2.restore_or_initialize() == f"{target.directory}/ckpt-1"
    assert calls == ["init"]
    np.testing.assert_array_equal(w2.numpy(), np.full((2, 2), 9, np.float32))


# ---------------------------------------------------------- cross-loading
def test_saver_and_checkpoint_cross_load(target: Target) -> None:
    w, step = _model()
    w.assign(np.full((2, 2), 4, np.float32))
    step.assign(11)
    # Object-based checkpoint read by the name-based Saver (through full_name).
    obj_path = _ckpt(w, step).save(f"{target.directory}/obj", options=target.options)
    w2, step2 = _model()
    tp.Saver([w2, step2], options=target.options).restore(obj_path)
    np.testing.assert_array_equal(w2.numpy(), np.full((2, 2), 4, np.float32))
    assert int(step2.numpy()) == 11
    # Name-based checkpoint read by Checkpoint.restore (matched by variable name).
    name_path = tp.Saver([w, step], options=target.options).save(f"{target.directory}/names", global_step=1)
    w3, step3 = _model()
    _ckpt(w3, step3).restore(name_path, options=target.options).assert_consumed()
    np.testing.assert_array_equal(w3.numpy(), np.full((2, 2), 4, np.float32))
    assert int(step3.numpy()) == 11


# ------------------------------------------------- a crash half-way through a delete
@pytest.mark.s3
def test_a_delete_failing_half_way_stays_listed_invisible_and_is_retried(
    s3_endpoint: str, s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from faultproxy import FaultProxy, Rule

    d = f"{s3_bucket}/run"
    bucket_dir = s3_bucket.split("://", 1)[1] + "/run"
    options = CheckpointOptions(storage_options=s3_storage_options)
    with FaultProxy(s3_endpoint) as proxy:
        opts = CheckpointOptions(
            storage_options={**s3_storage_options, "endpoint_url": proxy.url},
            backend_options={"retries": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.02},
        )
        m = tp.CheckpointManager(_ckpt(*_model()), d, max_to_keep=1, options=opts)
        m.save()
        # Retention removes ckpt-1's commit point (its index) and then fails on its data:
        # the store is left with a half-deleted checkpoint, as after a crash at that moment.
        proxy.add(
            Rule(
                "POST",
                r"\?delete",
                status=403,
                body=b"<Error><Code>AccessDenied</Code><Message>injected</Message></Error>",
                body_match=rb"ckpt-1\.data",
                times=1000,
            )
        )
        with caplog.at_level("WARNING", logger="trackpoint.manager"):
            assert m.save() == f"{d}/ckpt-2"
        assert "could not delete old checkpoint" in caplog.text
        leftovers = sorted(p.rsplit("/", 1)[1] for p in s3_raw.find(bucket_dir))
        assert "ckpt-1.data-00000-of-00001" in leftovers and "ckpt-1.index" not in leftovers
        # The half-deleted checkpoint stays listed, so it is not forgotten; it is invisible and readers skip it.
        st = state.read_checkpoint_state(d, options)
        assert st is not None and list(st.all_model_checkpoint_paths) == [f"{d}/ckpt-1", f"{d}/ckpt-2"]
        assert state.latest_checkpoint(d, options) == f"{d}/ckpt-2"
        again = tp.CheckpointManager(_ckpt(*_model()), d, max_to_keep=1, options=options)
        assert again.checkpoints == [f"{d}/ckpt-2"]
        assert not open_backend(d, options).exists(f"{d}/ckpt-1")
        proxy.clear()
        # The next save retries the delete, which now finishes.
        assert m.save() == f"{d}/ckpt-3"
    assert sorted(p.rsplit("/", 1)[1] for p in s3_raw.find(bucket_dir)) == [
        "checkpoint",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
    ]
    st = state.read_checkpoint_state(d, options)
    assert st is not None and list(st.all_model_checkpoint_paths) == [f"{d}/ckpt-3"]


@pytest.mark.s3
def test_a_reopened_manager_reads_the_kept_checkpoints_metrics_together(
    s3_endpoint: str, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    from faultproxy import FaultProxy, Rule

    d = f"{s3_bucket}/scored"
    with FaultProxy(s3_endpoint) as proxy:
        opts = CheckpointOptions(storage_options={**s3_storage_options, "endpoint_url": proxy.url})
        m = tp.CheckpointManager(
            _ckpt(*_model()), d, max_to_keep=3, best_fn=lambda x: x["loss"], best_mode="min", options=opts
        )
        for loss in (4.0, 1.0, 3.0, 2.0, 5.0):
            m.save(metrics={"loss": loss})
        proxy.clear()
        # Each index read waits, so reads made one after another never overlap.
        proxy.add(Rule("GET", r"ckpt-\d+\.index", action="delay", delay=0.3, times=1000))
        again = tp.CheckpointManager(
            _ckpt(*_model()), d, max_to_keep=3, best_fn=lambda x: x["loss"], best_mode="min", options=opts
        )
        assert proxy.peak_in_flight("GET", r"ckpt-\d+\.index") >= 2
    assert again.best_checkpoint == f"{d}/ckpt-2"
    assert [again.metrics(p)["loss"] for p in again.checkpoints] == [1.0, 3.0, 2.0, 5.0]


@pytest.mark.s3
def test_a_failed_state_update_after_retention_leaves_a_usable_directory(
    s3_endpoint: str, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    from faultproxy import FaultProxy, Rule
    from trackpoint.errors import StoragePermissionError

    d = f"{s3_bucket}/run"
    with FaultProxy(s3_endpoint) as proxy:
        opts = CheckpointOptions(
            storage_options={**s3_storage_options, "endpoint_url": proxy.url},
            backend_options={"retries": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.02},
        )
        m = tp.CheckpointManager(_ckpt(*_model()), d, max_to_keep=1, options=opts)
        m.save()
        proxy.add(
            Rule(
                "PUT",
                r"/run/checkpoint$",
                status=403,
                body=b"<Error><Code>AccessDenied</Code><Message>injected</Message></Error>",
                times=1000,
            )
        )
        # ckpt-2 is committed, then recording it fails (TensorFlow's order: before anything is deleted): the
        # save reports the error, saying the checkpoint was committed, and ckpt-1 is kept.
        with pytest.raises(StoragePermissionError, match=r"writing '.*/run/checkpoint' was refused") as failed:
            m.save()
        assert "ckpt-2 was committed and is whole" in "\n".join(failed.value.__notes__)
        direct = CheckpointOptions(storage_options=s3_storage_options)
        backend = open_backend(d, direct)
        assert backend.exists(f"{d}/ckpt-1") and backend.exists(f"{d}/ckpt-2")
        # The state file still names ckpt-1: readers find ckpt-2, committed after it, by listing.
        assert state.latest_checkpoint(d, direct) == f"{d}/ckpt-2"
        assert m.checkpoints == [f"{d}/ckpt-1", f"{d}/ckpt-2"]
        again = tp.CheckpointManager(_ckpt(*_model()), d, max_to_keep=1, options=opts)
        assert again.checkpoints == [f"{d}/ckpt-1", f"{d}/ckpt-2"] and again.latest_checkpoint == f"{d}/ckpt-2"
        proxy.clear()
        assert m.save() == f"{d}/ckpt-3"
        assert m.checkpoints == [f"{d}/ckpt-3"]
    assert backend.list_checkpoints(d) == [f"{d}/ckpt-3"]
