"""save_on_sigterm: a real process sent SIGTERM saves once, exits with 143, and the checkpoint restores."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.preemption import save_on_sigterm

#: Trains "forever": every step sets both variables to the step number; prints "ready" once running.
TRAIN = """
import sys
import numpy as np
import trackpoint as tp
from trackpoint.preemption import save_on_sigterm

directory, mode = sys.argv[1], sys.argv[2]
step = tp.Variable(0)
weights = tp.Variable(np.zeros(100_000))
ckpt = tp.Checkpoint(step=step, weights=weights)
manager = tp.CheckpointManager(ckpt, directory, max_to_keep=2)
handler = save_on_sigterm(manager, at_step=(mode == "step"))
print("ready", flush=True)
while True:
    n = int(step.numpy()) + 1
    step.assign(n)
    weights.assign(np.full(100_000, float(n)))  # a step updates two variables
    handler.check()
"""


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """``proc`` once it printed "ready" (its handler is installed)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", proc.stderr.read() if proc.stderr else line
    return proc


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    return _ready(_spawn(script, *args))


def _restored(directory: Path, size: int = 100_000) -> tuple[int, np.ndarray[Any, Any]]:
    step, weights = tp.Variable(-1), tp.Variable(np.zeros(size))
    latest = tp.latest_checkpoint(str(directory))
    assert latest is not None, f"no checkpoint in {directory}"
    tp.Checkpoint(step=step, weights=weights).restore(latest).assert_consumed()
    return int(step.numpy()), weights.numpy()


@pytest.mark.parametrize("mode", ["signal", "step"])
def test_sigterm_saves_once_then_exits(tmp_path: Path, mode: str) -> None:
    proc = _start(TRAIN, str(tmp_path), mode)
    time.sleep(0.3)  # some steps
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err  # 143, as a shell reports death by SIGTERM
    state = tp.read_checkpoint_state(str(tmp_path))
    assert state is not None and len(state.all_model_checkpoint_paths) == 1  # saved once, recorded by the manager
    step, weights = _restored(tmp_path)
    assert step > 0
    if mode == "step":
        # At a step boundary: never half a step.
        assert (weights == step).all()


CONTINUE = """
import sys
import trackpoint as tp
from trackpoint.preemption import save_on_sigterm

ckpt = tp.Checkpoint(v=tp.Variable([1.0, 2.0]))
handler = save_on_sigterm(ckpt, sys.argv[1] + "/ckpt", exit_after=False)
print("ready", flush=True)
import time
while not handler.saved:
    time.sleep(0.01)
print("continued after", handler.saved_path, flush=True)
"""


def test_a_checkpoint_target_and_no_exit(tmp_path: Path) -> None:
    proc = _start(CONTINUE, str(tmp_path))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == f"continued after {tmp_path / 'ckpt-1'}\n"
    v = tp.Variable([0.0, 0.0])
    tp.Checkpoint(v=v).restore(str(tmp_path / "ckpt-1")).assert_consumed()
    assert v.numpy().tolist() == [1.0, 2.0]


def test_installs_and_uninstalls_in_process(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    saved: list[str] = []
    with save_on_sigterm(lambda: saved.append("saved"), at_step=True) as handler:
        assert signal.getsignal(signal.SIGTERM) != before
        handler.check()
        assert saved == [] and not handler.signalled
    assert signal.getsignal(signal.SIGTERM) == before


def test_bad_targets_and_threads_are_refused() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    with pytest.raises(tp.TrackableError, match=r"needs file_prefix, where checkpoint.save writes"):
        save_on_sigterm(ckpt)
    with pytest.raises(
        tp.TrackableError, match=r"needs a CheckpointManager, a Checkpoint with file_prefix, .* got int"
    ):
        save_on_sigterm(3)
    errors: list[BaseException] = []

    def install() -> None:
        try:
            save_on_sigterm(lambda: None)
        except tp.TrackableError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "must be called from the main thread" in str(errors[0])


# ------------------------------------------------------------------ several ranks
RANK = """
import datetime, sys
import numpy as np
import torch.distributed as dist
import trackpoint as tp
from trackpoint.distributed import TorchCoordinator
from trackpoint.preemption import save_on_sigterm

rank, port, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
coordinator = TorchCoordinator()
step = tp.Variable(0)
weights = tp.Variable(np.zeros(1000))
ckpt = tp.Checkpoint(step=step, weights=weights)
manager = tp.CheckpointManager(ckpt, directory, max_to_keep=2, options=tp.CheckpointOptions(coordinator=coordinator))
handler = save_on_sigterm(manager, coordinator=coordinator)
print("ready", flush=True)
while True:
    n = int(step.numpy()) + 1
    step.assign(n)
    weights.assign(np.full(1000, float(n)))
    handler.check()
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch: pip install 'trackpoint[torch]'")
def test_with_a_coordinator_every_rank_saves_at_the_same_step(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    ranks = [_spawn(RANK, str(rank), port, str(tmp_path)) for rank in range(2)]
    for proc in ranks:
        _ready(proc)
    time.sleep(0.5)
    ranks[1].send_signal(signal.SIGTERM)  # only one rank is told
    for proc in ranks:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 128 + signal.SIGTERM, err
    state = tp.read_checkpoint_state(str(tmp_path))
    assert state is not None and len(state.all_model_checkpoint_paths) == 1
    step, weights = _restored(tmp_path, size=1000)
    assert step > 0 and (weights == step).all()


# ------------------------------------------------------------------ async saves
ASYNC_TRAIN = """
import sys
import numpy as np
import trackpoint as tp
from trackpoint.preemption import save_on_sigterm

directory, mode = sys.argv[1], sys.argv[2]
step = tp.Variable(0)
weights = tp.Variable(np.zeros(100_000))
ckpt = tp.Checkpoint(step=step, weights=weights)
options = tp.CheckpointOptions(enable_async=True)
manager = tp.CheckpointManager(ckpt, directory, max_to_keep=50, options=options)
handler = save_on_sigterm(manager, at_step=(mode == "step"))
print("ready", flush=True)
while True:
    n = int(step.numpy()) + 1
    step.assign(n)
    weights.assign(np.full(100_000, float(n)))  # a step updates two variables ...
    handler.check()
    manager.save()  # ... and saves asynchronously: a save is in flight when the signal comes
"""


@pytest.mark.parametrize("mode", ["signal", "step"])
def test_sigterm_during_async_saves_saves_once_more_and_exits_with_every_save_written(
    tmp_path: Path, mode: str
) -> None:
    proc = _start(ASYNC_TRAIN, str(tmp_path), mode)
    time.sleep(0.5)  # some steps and saves
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "failed in the background" not in err
    state = tp.read_checkpoint_state(str(tmp_path))
    assert state is not None and len(state.all_model_checkpoint_paths) >= 1
    # The preemption save (synced before the exit) is the latest, recorded, and whole.
    assert state.model_checkpoint_path == state.all_model_checkpoint_paths[-1]
    step, weights = _restored(tmp_path)
    assert step > 0
    if mode == "step":
        assert (weights == step).all()
    for path in state.all_model_checkpoint_paths:
        # Every async save that was recorded is readable: none was cut short by the exit.
        back = tp.Variable(np.zeros(100_000))
        tp.Checkpoint(weights=back).read(path).expect_partial()
