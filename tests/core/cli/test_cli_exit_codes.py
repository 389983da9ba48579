"""Exit statuses and messages of mistakes made in the command's environment, and of a backend chosen by it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp


def test_a_misspelt_trackpoint_backend_is_a_usage_error(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKPOINT_BACKEND", "s33")
    for command in (["ls", str(tmp_path)], ["verify", str(tmp_path / "ckpt-1")], ["rm", str(tmp_path / "ckpt-1")]):
        done = cli(*command)
        assert done.returncode == 2, command
        assert done.stderr.startswith(f"usage: trackpoint {command[0]} ")
        assert "unknown backend 's33' (chosen by the TRACKPOINT_BACKEND environment variable)" in done.stderr
        assert "set TRACKPOINT_BACKEND to a registered backend, unset it, or choose one with --backend" in done.stderr
    failure = json.loads(cli("ls", str(tmp_path), "--json").stdout)["error"]
    assert (failure["type"], failure["status"]) == ("UnknownBackendError", 2)
    # --backend wins over the environment, as in Python.
    assert cli("ls", str(tmp_path), "--backend", "bundle").returncode == 0


def test_a_chosen_backend_says_which_formats_it_did_not_list(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32))).write(str(run / "ckpt-1"))
    unset = "Unset TRACKPOINT_BACKEND to list every format"
    by_flag = cli("ls", str(run), "--backend", "zarr")
    assert by_flag.returncode == 0
    assert by_flag.stdout.startswith(f"no checkpoints in {run} for the zarr backend (chosen by --backend), which reads")
    assert "the directory holds checkpoints of other formats: ckpt-1 (backend 'bundle')" in by_flag.stdout
    assert "Drop --backend to list every format" in by_flag.stdout
    as_json = cli("ls", str(run), "--backend", "zarr", "--json")
    assert json.loads(as_json.stdout)["checkpoints"] == []
    assert "ckpt-1 (backend 'bundle')" in as_json.stderr
    monkeypatch.setenv("TRACKPOINT_BACKEND", "zarr")
    by_env = cli("ls", str(run))
    assert "(chosen by the TRACKPOINT_BACKEND environment variable)" in by_env.stdout and unset in by_env.stdout
    every = cli("verify", "--all", str(run))
    assert every.returncode == 1 and "ckpt-1 (backend 'bundle')" in every.stdout and unset in every.stdout
    # Nothing of another format there: the plain message.
    monkeypatch.delenv("TRACKPOINT_BACKEND")
    (tmp_path / "empty").mkdir()
    assert cli("ls", str(tmp_path / "empty"), "--backend", "zarr").stdout == f"no checkpoints in {tmp_path / 'empty'}\n"
