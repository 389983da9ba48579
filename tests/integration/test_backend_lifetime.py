"""Backend lifetime: one backend per location for the lifetime of its holder, closed by the holder.

A registered test plugin replaces the ``memory`` backend with one that counts
how often it is opened and closed, and counts the selection and configure
hooks, so each test sees exactly what the core asks of the plugin host.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import _resolve, plugins
from trackpoint.backends import memory
from trackpoint.backends.memory import MemoryBackend
from trackpoint.storage import CheckpointOptions, StorageBackend


@dataclass
class Counts:
    opened: list[str] = field(default_factory=list)
    closed: int = 0
    selected: int = 0
    configured: int = 0

    def snapshot(self) -> tuple[int, int, int, int]:
        return len(self.opened), self.closed, self.selected, self.configured


class CountedMemory(MemoryBackend):
    def __init__(self, counts: Counts) -> None:
        super().__init__()
        self._counts = counts

    def close(self) -> None:
        self._counts.closed += 1


class CountingPlugin:
    """Replaces ``memory`` with :class:`CountedMemory` and counts the hooks the host runs."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def _create(self, url: str, options: CheckpointOptions) -> StorageBackend:
        self.counts.opened.append(url)
        return CountedMemory(self.counts)

    @plugins.hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        register(plugins.BackendSpec("memory", self._create, schemes=("memory",), override=True))

    @plugins.hookimpl
    def trackpoint_select_backend(self, url: str, options: CheckpointOptions) -> str | None:
        self.counts.selected += 1
        return None

    @plugins.hookimpl
    def trackpoint_configure_backend(self, name: str, url: str, options: CheckpointOptions) -> Mapping[str, Any] | None:
        self.counts.configured += 1
        return None


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    for var in ("TRACKPOINT_BACKEND", "TRACKPOINT_BLOCK_BACKENDS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    memory.clear()
    found = Counts()
    plugins.register(CountingPlugin(found), "counting")
    yield found
    plugins.reset()
    memory.clear()


@pytest.fixture
def run() -> str:
    return f"memory://lifetime-{uuid.uuid4().hex[:8]}/run"


def _values(n: float) -> np.ndarray[Any, Any]:
    return np.arange(3, dtype=np.float32) + n


def _collect() -> None:
    # Finalizers of objects in reference cycles (trackables are full of them) run after a collection.
    for _ in range(3):
        gc.collect()


# ------------------------------------------------------------------ the contract's default
def test_a_backend_is_a_context_manager(counts: Counts, run: str) -> None:
    with plugins.open_backend(run) as backend:
        assert backend.exists(f"{run}/ckpt-1") is False
    assert counts.closed == 1


# ------------------------------------------------------------------ Checkpoint
def test_checkpoint_opens_one_backend_per_location_for_its_lifetime(counts: Counts, run: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(_values(0)))
    first = ckpt.save(f"{run}/ckpt")
    after_first = counts.snapshot()
    # Opened once: one run of the selection precedence and of the configure hook.
    assert after_first == (1, 0, 1, 1)
    for n in range(1, 5):
        ckpt.v.assign(_values(n))
        path = ckpt.save(f"{run}/ckpt")
        ckpt.write(f"{run}/written")
        ckpt.restore(path).assert_consumed()
        ckpt.read(f"{run}/written").assert_consumed()
    ckpt.restore(run).assert_consumed()  # a directory: its latest checkpoint, through the same backend
    # A save used to open two backends and a restore of a directory three; now none after the first.
    assert counts.snapshot() == after_first
    assert counts.opened == [first]
    ckpt.close()
    assert counts.closed == 1


def test_checkpoint_as_context_manager_closes_and_reopens_when_used_again(counts: Counts, run: str) -> None:
    with tp.Checkpoint(v=tp.Variable(_values(1))) as ckpt:
        path = ckpt.save(f"{run}/ckpt")
    assert counts.closed == 1
    ckpt.restore(path).assert_consumed()  # used after close: opens afresh
    assert len(counts.opened) == 2
    ckpt.close()
    assert counts.closed == 2


def test_other_locations_and_options_get_their_own_backend(counts: Counts, run: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(_values(1)))
    ckpt.save(f"{run}/a/ckpt")
    ckpt.save(f"{run}/b/ckpt")
    ckpt.save(f"{run}/a/ckpt", CheckpointOptions(max_shard_bytes=1 << 20))
    ckpt.save(f"{run}/a/ckpt", CheckpointOptions(max_shard_bytes=1 << 20))
    assert len(counts.opened) == 3
    ckpt.close()
    assert counts.closed == 3


def test_a_checkpoint_collected_without_close_closes_its_backends(counts: Counts, run: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(_values(1)))
    ckpt.save(f"{run}/ckpt")
    del ckpt
    _collect()
    assert counts.closed == 1


def test_a_pending_restore_keeps_its_backend_open_past_close(counts: Counts, run: str) -> None:
    path = tp.Checkpoint(v=tp.Variable(_values(7))).save(f"{run}/ckpt")
    _collect()
    closed_before = counts.closed
    ckpt = tp.Checkpoint()
    status = ckpt.restore(path)  # "v" does not exist yet: its value waits in the restore
    ckpt.close()
    assert counts.closed == closed_before  # the waiting restore still reads through it
    ckpt.v = tp.Variable(np.zeros(3, np.float32))
    np.testing.assert_array_equal(ckpt.v.numpy(), _values(7))
    status.assert_consumed()
    del ckpt, status
    _collect()
    assert counts.closed == closed_before + 1


def test_a_checkpoint_keeps_a_bounded_number_of_locations_open(counts: Counts, run: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(_values(1)))
    for i in range(_resolve.MAX_HELD + 3):
        ckpt.write(f"{run}/d{i}/ckpt")
    assert len(counts.opened) == _resolve.MAX_HELD + 3
    assert counts.closed == 3  # the least recently used ones
    ckpt.write(f"{run}/d{_resolve.MAX_HELD + 2}/ckpt")  # still held
    assert len(counts.opened) == _resolve.MAX_HELD + 3
    ckpt.close()
    assert counts.closed == _resolve.MAX_HELD + 3


# ------------------------------------------------------------------ readers
def test_load_checkpoint_of_a_directory_opens_one_backend_and_closes_it_with_the_reader(
    counts: Counts, run: str
) -> None:
    with tp.Checkpoint(v=tp.Variable(_values(2))) as ckpt:
        ckpt.save(f"{run}/ckpt")
    before = counts.snapshot()
    reader = tp.load_checkpoint(run)
    assert len(counts.opened) == before[0] + 1  # was three
    assert counts.configured == before[3] + 1
    assert counts.closed == before[1]  # open while the reader is
    np.testing.assert_array_equal(reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE"), _values(2))
    reader.close()
    assert counts.closed == before[1] + 1
    tp.list_variables(run)
    tp.object_metadata(f"{run}/ckpt-1")
    assert len(counts.opened) == counts.closed == before[0] + 3


def test_latest_checkpoint_closes_what_it_opens(counts: Counts, run: str) -> None:
    with tp.Checkpoint(v=tp.Variable(_values(2))) as ckpt:
        path = ckpt.save(f"{run}/ckpt")
    assert tp.latest_checkpoint(run) == path
    assert tp.read_checkpoint_state(run) is not None
    assert len(counts.opened) == counts.closed == 3


def test_checkpoint_management_functions_close_what_they_open(counts: Counts, run: str) -> None:
    with tp.Checkpoint(v=tp.Variable(_values(2))) as ckpt:
        path = ckpt.save(f"{run}/ckpt")
    assert tp.get_checkpoint_state(run) is not None
    tp.update_checkpoint_state(run, path)
    assert tp.checkpoint_exists(path)
    np.testing.assert_array_equal(tp.load_variable(run, "v/.ATTRIBUTES/VARIABLE_VALUE"), _values(2))
    tp.remove_checkpoint(path)
    assert len(counts.opened) == counts.closed == 6


def test_convert_closes_both_sides(counts: Counts, run: str, tmp_path: Path) -> None:
    with tp.Checkpoint(v=tp.Variable(_values(2))) as ckpt:
        path = ckpt.save(f"{run}/ckpt")
    tp.convert(path, f"{run}/copy")
    assert len(counts.opened) == counts.closed == 3


# ------------------------------------------------------------------ CheckpointManager and Saver
def test_manager_holds_one_backend_and_closes_it(counts: Counts, run: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(_values(0)))
    manager = tp.CheckpointManager(ckpt, run, max_to_keep=2)
    manager.save()
    after_first = counts.snapshot()
    # One for the manager's directory, one held by the checkpoint it saves.
    assert after_first[0] == 2
    for _ in range(4):
        manager.save()
    manager.restore_or_initialize()
    assert counts.snapshot() == after_first
    with manager:
        pass
    assert counts.closed == 1
    ckpt.close()
    assert counts.closed == 2


def test_a_manager_collected_without_close_closes_its_backend(counts: Counts, run: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(_values(0)))
    tp.CheckpointManager(ckpt, run, max_to_keep=2).save()
    _collect()
    assert counts.closed == 1  # the manager's; the checkpoint is still alive
    del ckpt
    _collect()
    assert counts.closed == 2


def test_saver_holds_one_backend_per_location(counts: Counts, run: str) -> None:
    v = tp.Variable(_values(0), name="v")
    saver = tp.Saver([v], max_to_keep=2)
    path = saver.save(f"{run}/model", global_step=1)
    assert len(counts.opened) == 1
    for step in range(2, 6):
        path = saver.save(f"{run}/model", global_step=step)  # also deletes old checkpoints
        saver.restore(path)
    saver.recover_last_checkpoints([path])
    sharded = tp.Saver([v], sharded=True)
    sharded.save(f"{run}/sharded")
    assert len(counts.opened) == 2 and counts.configured == 2
    with saver:
        pass
    assert counts.closed == 1
    del sharded
    _collect()
    assert counts.closed == 2
