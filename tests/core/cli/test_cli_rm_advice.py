"""``trackpoint rm`` of a checkpoint's file names the prefix to pass only when rm takes that prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import trackpoint as tp
from trackpoint.cli._app import EXIT_USAGE


def test_rm_of_a_file_of_a_checkpoint_outside_a_series_does_not_advise_a_refused_prefix(
    cli: Any, tmp_path: Path
) -> None:
    # Checkpoint.write('run/model') names no series NAME-N: `rm run/model` is refused, so it must not be advised.
    tp.Checkpoint(v=tp.Variable(np.ones(3, np.float32))).write(str(tmp_path / "model"))
    for name in ("model.index", "model.data-00000-of-00001"):
        refused = cli("rm", str(tmp_path / name))
        assert refused.returncode == EXIT_USAGE
        message = refused.stderr.splitlines()[-1]
        assert f"rm {tmp_path / 'model'}`" not in message
        assert "is no checkpoint prefix of a series NAME-N" in message
        assert f"`trackpoint ls {tmp_path}` lists the checkpoints of a directory" in message
        assert cli("rm", str(tmp_path / "model")).returncode == EXIT_USAGE  # what the advice would have said


def test_rm_of_a_file_of_a_series_checkpoint_still_names_its_prefix(cli: Any, tmp_path: Path) -> None:
    tp.Checkpoint(v=tp.Variable(np.ones(3, np.float32))).write(str(tmp_path / "ckpt-2"))
    refused = cli("rm", str(tmp_path / "ckpt-2.index"))
    assert refused.returncode == EXIT_USAGE
    assert refused.stderr.splitlines()[-1].endswith(f"pass that prefix (`trackpoint rm {tmp_path / 'ckpt-2'}`)")
