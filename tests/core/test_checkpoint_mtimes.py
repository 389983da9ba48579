"""``get_checkpoint_mtimes`` and ``StorageBackend.modified``: the stores' commit times (TensorFlow: file mtimes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.storage import CheckpointOptions


def _save(prefix: str, options: CheckpointOptions | None = None) -> str:
    return tp.Checkpoint(v=tp.Variable(np.arange(3.0))).write(prefix, options)


def test_bundle_times_are_the_index_files_mtimes(tmp_path: Path) -> None:
    first = _save(str(tmp_path / "a"))
    second = _save(str(tmp_path / "b"))
    os.utime(tmp_path / "a.index", (1_000_000.0, 1_000_000.0))
    os.utime(tmp_path / "b.index", (2_000_000.5, 2_000_000.5))
    assert tp.get_checkpoint_mtimes([first, second]) == [1_000_000.0, 2_000_000.5]
    assert tp.get_checkpoint_mtimes([tmp_path / "b", first]) == [2_000_000.5, 1_000_000.0]  # order kept, Paths work


def test_missing_prefixes_are_skipped(tmp_path: Path) -> None:
    # As TensorFlow: only checkpoints that exist get a time, so the list may be shorter.
    path = _save(str(tmp_path / "a"))
    os.utime(tmp_path / "a.index", (5.0, 5.0))
    assert tp.get_checkpoint_mtimes([str(tmp_path / "gone"), path, str(tmp_path / "nothing" / "x")]) == [5.0]
    assert tp.get_checkpoint_mtimes([]) == []


def test_zarr_time_is_its_commit_point(tmp_path: Path) -> None:
    path = _save(str(tmp_path / "z"), CheckpointOptions(backend="zarr"))
    root = next(p for p in tmp_path.iterdir() if p.is_dir())
    os.utime(root / "zarr.json", (7_000.0, 7_000.0))
    # Found without naming the backend: a directory's checkpoints of every format count.
    assert tp.get_checkpoint_mtimes([path]) == [7_000.0]


def test_memory_backend_reports_the_commit_time() -> None:
    before = time.time()
    path = _save("memory://mtimes/a")
    after = time.time()
    (stamp,) = tp.get_checkpoint_mtimes([path])
    assert before <= stamp <= after


def test_a_backend_that_cannot_tell_gives_the_clock(tmp_path: Path) -> None:
    pytest.importorskip("trackpoint_example_sqlite")
    # The example plugin does not implement modified(): the contract's default says "unknown".
    path = _save(f"sqlite://{tmp_path}/runs.sqlite/run/a")
    assert tp.get_checkpoint_mtimes([path], clock=lambda: 42.0) == [42.0]
    assert tp.get_checkpoint_mtimes([f"sqlite://{tmp_path}/runs.sqlite/run/b"], clock=lambda: 42.0) == []
