"""``trackpoint ls`` shows when each checkpoint was committed, with or without a ``CheckpointManager``.

The time column came from the state file alone (``all_model_checkpoint_timestamps``), so checkpoints written
with ``Checkpoint.write`` or ``save`` without a manager, or copied by ``convert``, showed ``-``. Such a
checkpoint now shows its store's commit time (``StorageBackend.modified``: the bundle's ``.index``, Zarr's
root ``zarr.json``, an object's last modification); ``-`` only where neither the state file nor the store
can tell.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.bundle import BundleBackend

_STAMP = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def _shown(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _rows(cli: Any, directory: Path) -> list[dict[str, Any]]:
    result = cli("ls", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)["checkpoints"]
    return rows


@pytest.mark.parametrize("how", ["write", "save"])
def test_a_checkpoint_written_without_a_manager_shows_its_commit_time(tmp_path: Path, cli: Any, how: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32)))
    # save() without a manager writes a state file too, without timestamps (as TensorFlow's does).
    path = ckpt.write(str(tmp_path / "ckpt-1")) if how == "write" else ckpt.save(str(tmp_path / "ckpt"))
    os.utime(f"{path}.index", (_STAMP, _STAMP))
    (row,) = _rows(cli, tmp_path)
    assert (row["prefix"], row["time"], row["time_source"]) == (path, _STAMP, "store")
    assert cli("ls", str(tmp_path)).stdout.splitlines()[1].split()[:4] == ["ckpt-1", "1", *_shown(_STAMP).split()]


def test_every_format_has_its_time(tmp_path: Path, cli: Any) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32)))
    ckpt.write(str(tmp_path / "ckpt-1"))
    ckpt.write(str(tmp_path / "ckpt-2"), tp.CheckpointOptions(backend="zarr"))
    rows = _rows(cli, tmp_path)
    assert [(r["format"], r["time_source"]) for r in rows] == [("bundle", "store"), ("zarr", "store")]
    assert all(isinstance(r["time"], float) and r["time"] > _STAMP for r in rows)


def test_a_managers_state_file_time_comes_first(tmp_path: Path, cli: Any) -> None:
    manager = tp.CheckpointManager(tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))), str(tmp_path), max_to_keep=2)
    manager.save()
    state = tp.get_checkpoint_state(str(tmp_path))
    assert state is not None
    os.utime(tmp_path / "ckpt-1.index", (_STAMP, _STAMP))  # the file says otherwise: the manager's record wins
    (row,) = _rows(cli, tmp_path)
    assert (row["time"], row["time_source"]) == (state.all_model_checkpoint_timestamps[0], "state")


def test_a_store_that_cannot_tell_shows_a_dash(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "ckpt-1"))
    monkeypatch.setattr(BundleBackend, "modified", lambda self, prefix: None)
    (row,) = _rows(cli, tmp_path)
    assert (row["time"], row["time_source"]) == (None, None)
    assert cli("ls", str(tmp_path)).stdout.splitlines()[1].split()[:3] == ["ckpt-1", "1", "-"]


def test_a_store_failing_to_tell_leaves_the_time_out_not_the_checkpoint(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "ckpt-1"))

    def refused(self: BundleBackend, prefix: str) -> float:
        raise tp.StorageError("stat refused")

    monkeypatch.setattr(BundleBackend, "modified", refused)
    (row,) = _rows(cli, tmp_path)
    assert (row["time"], row["status"], row["tensors"]) == (None, "ok", 1)
