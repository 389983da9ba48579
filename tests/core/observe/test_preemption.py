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
from preempting import preempt
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


# ------------------------------------------------------------------ numbering
def _manager(directory: str, step: tp.Variable, **kwargs: Any) -> tp.CheckpointManager:
    return tp.CheckpointManager(tp.Checkpoint(step=step), directory, max_to_keep=3, **kwargs)


@pytest.mark.parametrize("with_step_counter", [False, True])
def test_a_loop_numbering_by_step_gets_a_preemption_checkpoint_that_sorts_newest(with_step_counter: bool) -> None:
    run = f"memory://preempt-by-step-{with_step_counter}"
    step = tp.Variable(np.int64(0))
    manager = _manager(run, step, step_counter=step if with_step_counter else None)
    for s in (100, 200):
        step.assign(s)
        manager.save(checkpoint_number=step)
    step.assign(250)
    # At the step with a step counter (Orbax's choice); without one, above the highest number.
    expected = f"{run}/ckpt-250" if with_step_counter else f"{run}/ckpt-201"
    assert preempt(manager) == expected
    assert manager.latest_checkpoint == expected and tp.latest_checkpoint(run) == expected
    assert manager.checkpoints == [f"{run}/ckpt-100", f"{run}/ckpt-200", expected]


@pytest.mark.parametrize("with_step_counter", [False, True])
def test_a_loop_numbering_by_save_counter_gets_the_next_number(with_step_counter: bool) -> None:
    # TensorFlow's own idiom: manager.save() numbers by save_counter, the step counter only paces the saves.
    run = f"memory://preempt-by-counter-{with_step_counter}"
    step = tp.Variable(np.int64(0))
    kwargs: dict[str, Any] = {"step_counter": step, "checkpoint_interval": 100} if with_step_counter else {}
    manager = _manager(run, step, **kwargs)
    for s in (100, 200):
        step.assign(s)
        manager.save()
    step.assign(250)
    assert preempt(manager) == f"{run}/ckpt-3"
    # The numbering goes on after it (and the interval counts from it).
    step.assign(350)
    assert manager.save() == f"{run}/ckpt-4"


def test_a_preemption_at_a_step_already_saved_saves_again_above_the_highest_number() -> None:
    # The step counter paces the saves and the loop saved at this very step: the loop's own save is not due again
    # (once per step), but the preemption save is, since the variables may have changed within the step; it sorts
    # newest by number.
    run = "memory://preempt-same-step"
    step = tp.Variable(np.int64(0))
    manager = _manager(run, step, step_counter=step, checkpoint_interval=10)
    for s in (10, 20, 21):
        step.assign(s)
        manager.save(checkpoint_number=step)
    assert manager.latest_checkpoint == f"{run}/ckpt-20"  # step 21 was not due
    step.assign(20)
    assert manager.save(checkpoint_number=step) is None
    assert preempt(manager) == f"{run}/ckpt-21" == manager.latest_checkpoint
    assert manager.checkpoints == [f"{run}/ckpt-10", f"{run}/ckpt-20", f"{run}/ckpt-21"]


def test_a_step_behind_the_highest_number_and_a_reopened_directory_still_sort_newest() -> None:
    run = "memory://preempt-behind"
    step = tp.Variable(np.int64(0))
    first = _manager(run, step, step_counter=step)
    for s in (100, 200, 300):
        step.assign(s)
        first.save(checkpoint_number=step)
    first.close()
    # A new process, restored from an older checkpoint (the step went back to 200).
    step.assign(0)
    manager = _manager(run, step, step_counter=step)
    manager.checkpoint.restore(f"{run}/ckpt-200").assert_consumed()
    assert int(step.numpy()) == 200
    assert preempt(manager) == f"{run}/ckpt-301"


def test_the_preemption_save_waits_for_an_async_save_before_numbering(tmp_path: Path) -> None:
    step = tp.Variable(np.int64(0))
    options = tp.CheckpointOptions(enable_async=True)
    manager = _manager(str(tmp_path), step, options=options)
    step.assign(500)
    manager.save(checkpoint_number=step)  # maybe still being written when the signal arrives
    assert preempt(manager) == str(tmp_path / "ckpt-501")
    assert tp.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-501")


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


#: Trains with async saves while a trace function raises SIGTERM at a chosen line trackpoint executes in
#: the main thread: the signal arrives exactly there, e.g. while the main thread holds the async saves' lock.
#: argv: directory, "async" (lines of trackpoint._async) or "all" (every trackpoint line), trials, mode
#: ("stay": exit_after=False, one trial per chosen line, each checked; "exit": one signal while the
#: main thread is inside AsyncSaver.start with the lock taken, and the process exits).
SIGNAL_ANYWHERE = """
import os, signal, sys
import numpy as np
import trackpoint as tp
from trackpoint import _async
from trackpoint.preemption import save_on_sigterm

directory, where, trials, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
traced = _async.__file__ if where == "async" else os.path.dirname(tp.__file__) + os.sep
variables = [tp.Variable(np.zeros(1000)) for _ in range(3)]
ckpt = tp.Checkpoint(layers=variables)
# Room for one new buffer: the first assignment during a save gets one, the others wait for the writer.
manager = tp.CheckpointManager(
    ckpt, directory, max_to_keep=2, options=tp.CheckpointOptions(enable_async=True, async_memory_bytes=8000)
)
lines, at, function = 0, -1, None

def line(frame, event, arg):
    global lines
    if event == "line" and (function is None or (frame.f_code.co_name == function and _async._lock.locked())):
        lines += 1
        if lines == at:
            signal.raise_signal(signal.SIGTERM)  # its handler runs right here, in the main thread
    return line

def tracer(frame, event, arg):
    return line if frame.f_code.co_filename.startswith(traced) else None

def step(n):
    sys.settrace(tracer)
    try:
        for v in variables:
            v.assign(np.full(1000, float(n)))
        manager.save()
    finally:
        sys.settrace(None)

manager.save()
manager.sync()
if mode == "exit":
    function, at = "start", 1
    save_on_sigterm(manager)
    step(1)
    raise SystemExit("the signal never came")
step(1)
total = lines
for n, k in enumerate(sorted({1 + i * total // trials for i in range(trials)}), start=2):
    handler = save_on_sigterm(manager, exit_after=False)
    lines, at = 0, k
    step(n)
    handler.uninstall()
    if lines < at:
        continue  # this step ran fewer lines (fewer waits): no signal
    assert handler.saved, f"no save for the signal at line {k} of {total}"
    back = [tp.Variable(np.full(1000, -1.0)) for _ in variables]
    tp.Checkpoint(layers=back).restore(handler.saved_path).assert_consumed()
    # At the signal (not at a step boundary): each value is this step's or the last one's.
    assert all(set(np.unique(b.numpy())) <= {n - 1.0, float(n)} for b in back), (k, [b.numpy()[0] for b in back])
manager.sync()
print("trials", n - 1, "lines", total, flush=True)
"""


def test_sigterm_anywhere_in_an_async_save_saves_once_and_never_hangs(tmp_path: Path) -> None:
    # Before the fix, a signal landing while the main thread held trackpoint._async's lock made the
    # handler's save wait for that lock forever.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SIGNAL_ANYWHERE), str(tmp_path), "async", "30", "stay"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("trials 30 ") or done.stdout.startswith("trials 31 "), done.stdout


@pytest.mark.slow
def test_sigterm_at_every_trackpoint_line_of_an_async_step(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SIGNAL_ANYWHERE), str(tmp_path), "all", "200", "stay"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr


def test_sigterm_while_a_save_holds_the_lock_saves_after_it_and_exits_143(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SIGNAL_ANYWHERE), str(tmp_path), "async", "1", "exit"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "failed in the background" not in done.stderr
    state = tp.read_checkpoint_state(str(tmp_path))
    # The save before the step, the step's (ckpt-2), then the preemption save, recorded last and whole.
    assert state is not None and state.model_checkpoint_path == str(tmp_path / "ckpt-3")
    back = [tp.Variable(np.full(1000, -1.0)) for _ in range(3)]
    tp.Checkpoint(layers=back).restore(state.model_checkpoint_path).assert_consumed()
    assert all((b.numpy() == 1.0).all() for b in back)
