"""Rank 0 hosts the store of a ``tcp://`` or ``env://`` process group: its exit must not fail the others.

Each rank is its own process that saves once and exits at once, as a job's last save does. Rank 1
reads the outcome of every step a little late (as under a GC pause or a loaded CPU), so rank 0,
which has nothing left to read, would exit while rank 1 still needs the store in its process.

Rank 0 builds the store a ``tcp://`` group builds (a ``TCPStore`` it serves, under the ``default_pg``
prefix) on a port the kernel gives it when it binds, and tells rank 1 that port through the test. A port
picked beforehand and freed again (``free_port()``) could be taken by any other process before rank 0 bound
it, as happens now and then with parallel test workers starting servers: rank 0 then failed with EADDRINUSE
and rank 1 waited on whatever held the port.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ranks import needs_torch

import trackpoint as tp

pytestmark = [needs_torch]

RANK = """
import datetime, os, sys, time
import numpy as np
import torch.distributed as dist
import trackpoint as tp
from trackpoint.distributed import TorchCoordinator

rank, directory, how = int(sys.argv[1]), sys.argv[2], sys.argv[3]
timeout = datetime.timedelta(seconds=60)
if rank == 0:
    # What init_method="tcp://..." makes on rank 0, on port 0: bound here, so nothing can take it first.
    # Not waiting for the workers in the constructor: rank 1 learns the port from the line printed below.
    store = dist.TCPStore("127.0.0.1", 0, world_size=2, is_master=True, timeout=timeout, multi_tenant=True,
                          wait_for_workers=False)
    print(store.port, flush=True)
else:
    store = dist.TCPStore("127.0.0.1", int(sys.stdin.readline()), world_size=2, is_master=False, timeout=timeout)
dist.init_process_group("gloo", store=dist.PrefixStore("default_pg", store), rank=rank, world_size=2,
                        timeout=timeout)
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
    """Run both ranks; each one's exit status, output and errors. Rank 0's output starts after its port."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(rank), str(tmp_path), how],
            # Rank 1 reads the port of rank 0's store from its input.
            stdin=subprocess.PIPE if rank else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Unbuffered: reading rank 0's first line takes no more of its output than that line, so the rest
            # is left for communicate(), which reads the pipe itself.
            bufsize=0,
        )
        for rank in range(2)
    ]
    try:
        assert procs[0].stdout is not None and procs[1].stdin is not None
        # Empty when rank 0 ended before its store listened: rank 1 then fails to read a port, and the
        # assertions show rank 0's error.
        port = procs[0].stdout.readline()
        procs[1].stdin.write(port)
        outs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:  # a time-out above: no rank outlives the test
                proc.kill()
                proc.wait()
    return [(proc.returncode, out.decode(), err.decode()) for proc, (out, err) in zip(procs, outs, strict=True)]


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
