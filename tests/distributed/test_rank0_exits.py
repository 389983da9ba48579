"""Rank 0 hosts the store of a ``tcp://`` or ``env://`` process group: its exit must not fail the others.

Each rank is its own process that saves once and exits at once, as a job's last save does. Rank 1
reads the outcome of every step a little late (as under a GC pause or a loaded CPU), so rank 0,
which has nothing left to read, would exit while rank 1 still needs the store in its process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ranks import free_port, needs_torch

import trackpoint as tp

pytestmark = [needs_torch]

RANK = """
import datetime, os, sys, time
import numpy as np
import torch.distributed as dist
import trackpoint as tp
from trackpoint.distributed import TorchCoordinator

rank, port, directory, how = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
if how == "die-after-commit" and rank == 0:
    send = TorchCoordinator.broadcast
    def broadcast(self, data, **kwargs):
        if data is not None and b'"outcome"' in data:
            os._exit(9)  # committed; the others never hear of it, and the store goes with this process
        return send(self, data, **kwargs)
    TorchCoordinator.broadcast = broadcast
if rank == 1:
    late = TorchCoordinator._get
    def _get(self, keys, timeout):
        time.sleep(0.2)
        return late(self, keys, timeout)
    TorchCoordinator._get = _get
model = tp.AutoTrackable()
model.w = tp.Variable(np.arange(4, dtype=np.float32) + rank * 0)
options = tp.CheckpointOptions(coordinator=TorchCoordinator(timeout=30))
ckpt = tp.Checkpoint(model=model)
if how == "manager":
    path = tp.CheckpointManager(ckpt, directory, max_to_keep=2, options=options).save()
else:
    path = ckpt.save(f"{directory}/ckpt", options=options)
print(path, flush=True)
"""


def _run(tmp_path: Path, how: str) -> list[tuple[int, str, str]]:
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(rank), port, str(tmp_path), how],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outs = [proc.communicate(timeout=120) for proc in procs]
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outs, strict=True)]


@pytest.mark.parametrize("how", ["checkpoint", "manager"])
def test_every_rank_returns_the_save_when_rank_0_exits_right_after_it(tmp_path: Path, how: str) -> None:
    for returncode, out, err in _run(tmp_path, how):
        assert returncode == 0, err[-3000:]
        assert out.strip() == f"{tmp_path}/ckpt-1"
    assert tp.latest_checkpoint(str(tmp_path)) == f"{tmp_path}/ckpt-1"


def test_a_rank_that_loses_rank_0_after_its_commit_says_the_outcome_is_unknown(tmp_path: Path) -> None:
    (died, _, _), (returncode, out, err) = _run(tmp_path, "die-after-commit")
    assert died == 9 and returncode == 1 and out == ""
    assert "lost the coordinator while waiting for rank 0 to commit and report the outcome" in err, err[-3000:]
    assert f"whether the checkpoint at '{tmp_path}/ckpt-1' was committed is unknown" in err
    # It was: the storage knows.
    reader = tp.load_checkpoint(f"{tmp_path}/ckpt-1")
    assert reader.get_tensor("model/w/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [0.0, 1.0, 2.0, 3.0]
