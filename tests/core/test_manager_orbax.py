"""A directory holding an Orbax run and no checkpoint trackpoint reads: never a silent start from scratch.

Orbax's ``CheckpointManager`` writes one directory per step (``run/3/``, or ``run/<step_prefix>_3/``) holding
its metadata (``_CHECKPOINT_METADATA``), a commit marker on some stores (``commit_success.txt``) and one
directory per item (``default/`` with ``_METADATA`` and OCDBT files). The layout is written here by hand, as
Orbax writes it, so the test needs no Orbax.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp


def orbax_run(directory: Path, *steps: int, prefix: str = "") -> None:
    for step in steps:
        step_dir = directory / f"{prefix}{step}"
        (step_dir / "default" / "ocdbt.process_0").mkdir(parents=True)
        (step_dir / "_CHECKPOINT_METADATA").write_text('{"init_timestamp_nsecs": 1}')
        (step_dir / "default" / "_METADATA").write_text("{}")
        (step_dir / "default" / "manifest.ocdbt").write_bytes(b"\0")


def test_restore_or_initialize_refuses_to_start_over_an_orbax_run(tmp_path: Path) -> None:
    orbax_run(tmp_path, 3, 10)
    (tmp_path / "7").mkdir()  # a numbered directory without Orbax's files is not a step
    called: list[int] = []
    ckpt = tp.Checkpoint(state={"w": np.zeros(2)})
    manager = tp.CheckpointManager(ckpt, tmp_path, max_to_keep=2, init_fn=lambda: called.append(1))
    with pytest.raises(tp.CheckpointExistsError) as caught:
        manager.restore_or_initialize()
    message = str(caught.value)
    assert f"{str(tmp_path)!r} holds no checkpoint trackpoint reads (ckpt-N)" in message
    assert "an Orbax run (step directories 3, 10)" in message
    assert "manager.save(checkpoint_number=step)" in message and "another directory" in message
    assert called == []  # nothing initialized
    # Going on from it: the values restored with Orbax, saved once with the manager; resumed from then on.
    ckpt.state = {"w": np.full(2, 10.0)}
    manager.save(checkpoint_number=10)
    again = tp.Checkpoint(state={"w": np.zeros(2)})
    resumed = tp.CheckpointManager(again, tmp_path, max_to_keep=2).restore_or_initialize()
    assert resumed == str(tmp_path / "ckpt-10") and again.state["w"].tolist() == [10.0, 10.0]


def test_a_step_prefix_and_item_names_are_recognised_and_other_directories_ignored(tmp_path: Path) -> None:
    orbax_run(tmp_path / "orbax", 2, prefix="checkpoint_")
    with pytest.raises(tp.CheckpointExistsError, match=r"step directories checkpoint_2\)"):
        tp.CheckpointManager(tp.Checkpoint(v=tp.Variable(1.0)), tmp_path / "orbax", 1).restore_or_initialize()
    # A directory of other numbered directories, or none at all, starts from scratch as before.
    for name in ("0", "1"):
        (tmp_path / "plain" / name / "data").mkdir(parents=True)
    called: list[Path] = []
    for directory in (tmp_path / "plain", tmp_path / "missing"):
        manager = tp.CheckpointManager(
            tp.Checkpoint(v=tp.Variable(1.0)), directory, 1, init_fn=lambda d=directory: called.append(d)
        )
        assert manager.restore_or_initialize() is None
    assert called == [tmp_path / "plain", tmp_path / "missing"]


def test_latest_checkpoint_warns_once_about_an_orbax_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    orbax_run(tmp_path, 5)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        assert tp.latest_checkpoint(tmp_path) is None
        assert tp.latest_checkpoint(tmp_path) is None  # a polling loop is told once
    warnings = [r.getMessage() for r in caplog.records if "Orbax run" in r.getMessage()]
    assert len(warnings) == 1 and "step directories 5" in warnings[0] and "starts from scratch" in warnings[0]
