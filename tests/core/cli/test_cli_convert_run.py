"""``trackpoint convert --all SRC_DIR DST_DIR``: a whole run copied, one line per checkpoint, then the state file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.storage import CheckpointOptions


def _run(directory: Path) -> tp.CheckpointManager:
    """Three saves, of which retention keeps ckpt-1 (the best) and ckpt-3 (the newest)."""
    ckpt = tp.Checkpoint(w=tp.Variable(np.zeros(3, np.float32)))
    manager = tp.CheckpointManager(ckpt, str(directory), max_to_keep=2, best_fn=lambda m: -m["loss"])
    for loss in (0.5, 0.9, 0.7):
        ckpt.w.assign_add(np.ones(3, np.float32))
        manager.save(metrics={"loss": loss})
    return manager


def test_every_checkpoint_one_line_each_then_the_state_file(tmp_path: Path, cli: Any) -> None:
    _run(tmp_path / "run")
    src, dst = str(tmp_path / "run"), str(tmp_path / "zarr")

    result = cli("convert", "--all", src, dst, "--dst-backend", "zarr")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:4] for line in lines[:2]] == [
        ["copied", f"{src}/ckpt-{n}", "->", f"{dst}/ckpt-{n}"] for n in (1, 3)
    ]
    assert lines[2:] == [f"converted {src} -> {dst}: 2 copied; state file written"]
    assert sorted(os.listdir(dst)) == ["checkpoint", "ckpt-1.zarr", "ckpt-3.zarr"]
    # The manager's metrics came along: a manager with best_fn opened on the copy ranks them as on the source.
    manager = tp.CheckpointManager(
        tp.Checkpoint(w=tp.Variable(np.zeros(3, np.float32))), dst, max_to_keep=2, best_fn=lambda m: -m["loss"]
    )
    assert manager.checkpoints == [f"{dst}/ckpt-1", f"{dst}/ckpt-3"]
    assert manager.best_checkpoint == f"{dst}/ckpt-1"

    again = cli("convert", "--all", src, dst, "--dst-backend", "zarr", "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert [(c["action"], c["bytes"]) for c in data["checkpoints"]] == [("skipped", 0)] * 2
    assert data["state_file"] == f"{dst}/checkpoint"


def test_a_destination_holding_the_series_needs_overwrite(tmp_path: Path, cli: Any) -> None:
    _run(tmp_path / "run")
    other = tp.CheckpointManager(tp.Checkpoint(w=tp.Variable(np.full(3, 9.0, np.float32))), str(tmp_path / "dst"), 1)
    other.save()
    before = sorted(os.listdir(tmp_path / "dst"))

    refused = cli("convert", "--all", str(tmp_path / "run"), str(tmp_path / "dst"))
    assert refused.returncode == 4
    assert "differ from the source's: ckpt-1" in refused.stderr and "pass --overwrite" in refused.stderr
    assert refused.stdout == "" and sorted(os.listdir(tmp_path / "dst")) == before

    replaced = cli("convert", "--all", str(tmp_path / "run"), str(tmp_path / "dst"), "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert [line.split()[0] for line in replaced.stdout.splitlines()] == ["replaced", "copied", "converted"]
    assert tp.latest_checkpoint(str(tmp_path / "dst")) == str(tmp_path / "dst" / "ckpt-3")


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--include", "w*"], "--include"), (["--keep-keys"], "--keep-keys"), (["--separator", "."], "--separator")],
)
def test_options_of_one_copy_are_a_usage_error(tmp_path: Path, cli: Any, flags: list[str], named: str) -> None:
    _run(tmp_path / "run")
    result = cli("convert", "--all", str(tmp_path / "run"), str(tmp_path / "dst"), *flags)
    assert result.returncode == 2
    assert f"error: {named} shape the tensors of one copy or export, and --all copies every checkpoint" in result.stderr
    assert not (tmp_path / "dst").exists()


def test_the_source_itself_is_a_usage_error(tmp_path: Path, cli: Any) -> None:
    _run(tmp_path / "run")
    result = cli("convert", "--all", str(tmp_path / "run"), f"{tmp_path}/run/", "--overwrite")
    assert result.returncode == 2 and "same directory" in result.stderr


@pytest.mark.s3
def test_to_s3_and_back(tmp_path: Path, cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any]) -> None:
    _run(tmp_path / "run")
    storage = [f"--dst-storage-option={k}={v}" for k, v in s3_storage_options.items()]
    up = cli("convert", "--all", str(tmp_path / "run"), f"{s3_bucket}/run", *storage)
    assert up.returncode == 0, up.stderr
    remote = CheckpointOptions(storage_options=s3_storage_options)
    assert tp.latest_checkpoint(f"{s3_bucket}/run", remote) == f"{s3_bucket}/run/ckpt-3"
    options = [f"-o{k}={v}" for k, v in s3_storage_options.items()]
    down = cli("convert", "--all", f"{s3_bucket}/run", str(tmp_path / "back"), *options)
    assert down.returncode == 0, down.stderr
    for n in (1, 3):
        assert tp.diff(f"{tmp_path}/run/ckpt-{n}", f"{tmp_path}/back/ckpt-{n}").equal
