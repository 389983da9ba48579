"""``trackpoint rm``: deletes checkpoints as ``CheckpointManager.delete`` does, and nothing else."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp


def _run(directory: Path | str, saves: int, name: str = "ckpt", options: tp.CheckpointOptions | None = None) -> None:
    ckpt = tp.Checkpoint(w=tp.Variable(np.arange(3, dtype=np.float32)))
    with tp.CheckpointManager(ckpt, str(directory), max_to_keep=None, checkpoint_name=name, options=options) as m:
        for _ in range(saves):
            m.save()


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir() if p.name != "checkpoint"}


def test_rm_deletes_the_checkpoint_and_its_entry_only(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(run, 3)
    _run(run, 2, name="other")  # a second series sharing the state file
    before = _digests(run)
    done = cli("rm", str(run / "ckpt-3"), str(run / "ckpt-1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"deleted {run / 'ckpt-3'}",
        f"deleted {run / 'ckpt-1'}",
        f"latest checkpoint of {run}: {run / 'ckpt-2'}",
    ]
    after = _digests(run)
    # The other checkpoints' files are byte for byte what they were; the deleted ones' are gone.
    assert after == {k: v for k, v in before.items() if not k.startswith(("ckpt-3.", "ckpt-1."))}
    state = tp.read_checkpoint_state(str(run))
    assert state is not None
    assert [Path(p).name for p in state.all_model_checkpoint_paths] == ["ckpt-2", "other-1", "other-2"]
    assert Path(state.model_checkpoint_path).name == "ckpt-2"
    assert tp.latest_checkpoint(str(run)) == str(run / "ckpt-2")


def test_a_path_that_is_no_committed_checkpoint_deletes_nothing(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(run, 2)
    before = _digests(run)
    state = (run / "checkpoint").read_bytes()
    typo = cli("rm", str(run / "ckpt-2"), str(run / "ckpt-9"), "--json")
    assert typo.returncode == 3
    assert json.loads(typo.stdout)["error"]["type"] == "CheckpointNotFoundError"
    assert f"no checkpoint is committed at {str(run / 'ckpt-9')!r}: nothing was deleted" in typo.stderr
    for wrong in (str(run), str(run / "checkpoint")):
        refused = cli("rm", wrong)
        assert refused.returncode == 2, wrong
        assert refused.stderr.startswith("usage: trackpoint rm ")
        assert "is no checkpoint prefix of a series NAME-N" in refused.stderr
    # A file of a checkpoint (as a file browser offers it) is answered with its prefix, as inspect and verify
    # answer it: `trackpoint ls run/ckpt-2.index`, advised before, fails too.
    prefix = str(run / "ckpt-2")
    for wrong, what in (
        (f"{prefix}.index", "a file"),
        (f"{prefix}.data-00000-of-00001", "a file"),
        (f"{prefix}.zarr", "the Zarr directory"),
    ):
        refused = cli("rm", wrong, "--json")
        assert refused.returncode == 2, wrong
        assert refused.stderr.startswith("usage: trackpoint rm ")
        message = f"{wrong!r} is {what} of the checkpoint {prefix!r}, not a checkpoint prefix: pass that prefix"
        assert message in refused.stderr and f"(`trackpoint rm {prefix}`)" in refused.stderr
        assert "trackpoint ls" not in refused.stderr
        assert json.loads(refused.stdout)["error"]["message"].startswith(message)
    assert _digests(run) == before and (run / "checkpoint").read_bytes() == state


@pytest.mark.s3
def test_rm_on_an_object_store(cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any) -> None:
    run = f"{s3_bucket}/run"
    _run(run, 2, options=tp.CheckpointOptions(storage_options=s3_storage_options))
    flags = [f"-o{k}={v}" for k, v in s3_storage_options.items()]
    done = cli("rm", f"{run}/ckpt-2", "--json", *flags)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"deleted": [f"{run}/ckpt-2"], "latest": {run: f"{run}/ckpt-1"}}
    names = sorted(p.rsplit("/", 1)[-1] for p in s3_raw.ls(run.removeprefix("s3://"), refresh=True))
    assert names == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
