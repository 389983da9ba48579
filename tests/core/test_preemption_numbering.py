"""The number of a manager's preemption checkpoint: the loop's own numbering, by step or by save_counter.

Each run is a real process that a real SIGTERM preempts. The test paces its steps through stdin and
signals it between two steps, so the step at which ``check()`` (at the top of a step) saves is known:
the checkpoint must hold that step under the number the loop would have given it, and ordering by
number (``trackpoint verify --latest-good``) must agree with the state file, run after run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.preemption import save_on_sigterm

#: One step per line read from stdin; check() at the top of each step, as a training loop calls it.
#: argv: directory, numbering ("step": save(checkpoint_number=step), "counter": save()), save every N steps,
#: retention ("recency", "best": best_fn with metrics, "best-nokeep": and keep_checkpoints_without_metrics=False).
TRAIN = """
import atexit, sys
import numpy as np
import trackpoint as tp
from trackpoint.preemption import save_on_sigterm
from trackpoint.preemption import save_on_sigterm

directory, numbering, every, retention = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
step = tp.Variable(np.int64(0))
weights = tp.Variable(np.zeros(1000))
ckpt = tp.Checkpoint(step=step, weights=weights)
kwargs = {}
if retention != "recency":
    kwargs = {"best_fn": lambda m: m["loss"], "best_mode": "min",
              "keep_checkpoints_without_metrics": retention == "best"}
manager = tp.CheckpointManager(ckpt, directory, max_to_keep=3, step_counter=step, **kwargs)
restored = manager.restore_or_initialize()
handler = save_on_sigterm(manager, at_step=True)
atexit.register(lambda: handler.saved and print("preempted", handler.saved_path, flush=True))
print("resumed", restored, int(step.numpy()), flush=True)
for line in sys.stdin:
    handler.check()
    s = int(step.numpy()) + 1
    weights.assign(np.full(1000, float(s)))
    step.assign(s)
    if s % every == 0:
        metrics = {"metrics": {"loss": float(s % 4)}} if retention != "recency" else {}
        number = {"checkpoint_number": step} if numbering == "step" else {}
        print("saved", manager.save(**number, **metrics), flush=True)
    print("step", s, flush=True)
print("done", flush=True)
"""


class Run:
    """A training process whose steps the test runs one at a time."""

    def __init__(self, directory: Path, numbering: str, every: int, retention: str) -> None:
        self.directory = directory
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(TRAIN), str(directory), numbering, str(every), retention],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.saved: list[str] = []
        first = self._line()
        assert first.startswith("resumed "), first

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the training process ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return line.strip()

    def steps(self, n: int) -> None:
        assert self.proc.stdin is not None
        for _ in range(n):
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
            while not (line := self._line()).startswith("step "):
                assert line.startswith("saved "), line
                self.saved.append(line.split(" ", 1)[1])

    def preempt(self) -> str:
        """SIGTERM between two steps, then one more step, whose check() saves and exits; the saved path."""
        assert self.proc.stdin is not None
        self.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # delivered while the process waits for its next step
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 128 + signal.SIGTERM, err
        preempted = [line for line in out.splitlines() if line.startswith("preempted ")]
        assert len(preempted) == 1 and not any(line.startswith("step ") for line in out.splitlines()), out + err
        return preempted[0].split(" ", 1)[1]

    def finish(self) -> None:
        out, err = self.proc.communicate("", timeout=60)
        assert self.proc.returncode == 0 and out.strip() == "done", err


def _step_of(prefix: str) -> int:
    return int(tp.load_checkpoint(prefix).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def _numbers(directory: Path) -> list[int]:
    return sorted(int(name[len("ckpt-") : -len(".index")]) for name in os.listdir(directory) if name.endswith(".index"))


def _latest_good(directory: Path) -> str:
    """What a restart script takes: the newest checkpoint by number that verifies."""
    verify = subprocess.run(
        [sys.executable, "-m", "trackpoint", "verify", "--latest-good", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr
    return verify.stdout.strip()


@pytest.mark.parametrize("retention", ["recency", "best"])
def test_three_preemptions_of_a_loop_saving_every_step_by_step_add_no_checkpoint(
    tmp_path: Path, retention: str
) -> None:
    # The loop saved the step it stopped at: its checkpoint is the preemption checkpoint. Before, each
    # preemption saved the same state again as save_counter + 1 (ckpt-4, ckpt-8, ckpt-12 holding steps 3, 6,
    # 9, as save_counter ran ahead of the step), and verify --latest-good rolled the run back to ckpt-12
    # once it had saved ckpt-10.
    for stop in (3, 6, 9):
        run = Run(tmp_path, "step", 1, retention)
        run.steps(3)
        assert run.preempt() == str(tmp_path / f"ckpt-{stop}")
        assert tp.latest_checkpoint(str(tmp_path)) == str(tmp_path / f"ckpt-{stop}")
    run = Run(tmp_path, "step", 1, retention)
    run.steps(1)
    run.finish()
    assert run.saved == [str(tmp_path / "ckpt-10")]
    assert tp.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-10")
    assert _latest_good(tmp_path) == str(tmp_path / "ckpt-10")
    for number in _numbers(tmp_path):
        assert _step_of(str(tmp_path / f"ckpt-{number}")) == number
    # Retention as for any save: three kept (by recency, or the three best and the newest), none without metrics.
    kept = _numbers(tmp_path)
    assert kept == ([8, 9, 10] if retention == "recency" else [4, 8, 9, 10])


def test_preemptions_between_saves_by_step_are_numbered_by_their_step(tmp_path: Path) -> None:
    # Saves at every third step; each preemption falls between two of them, two of them before the restarted
    # run saved (told from the checkpoint it restored: numbered by the step it holds).
    stops = []
    for steps in (4, 1, 3, 1):
        run = Run(tmp_path, "step", 3, "recency")
        run.steps(steps)
        stops.append(run.preempt())
    assert stops == [str(tmp_path / f"ckpt-{n}") for n in (4, 5, 8, 9)]
    run = Run(tmp_path, "step", 3, "recency")
    run.steps(3)
    run.finish()
    assert run.saved == [str(tmp_path / "ckpt-12")]
    assert _numbers(tmp_path) == [8, 9, 12]
    for number in _numbers(tmp_path):
        assert _step_of(str(tmp_path / f"ckpt-{number}")) == number
    assert tp.latest_checkpoint(str(tmp_path)) == _latest_good(tmp_path) == str(tmp_path / "ckpt-12")


def test_a_loop_numbering_by_save_counter_gets_save_counter_plus_one(tmp_path: Path) -> None:
    # TensorFlow's idiom, manager.save(), with the step counter given: the numbers count saves, not steps.
    run = Run(tmp_path, "counter", 2, "recency")
    run.steps(3)  # ckpt-1 at step 2
    assert run.preempt() == str(tmp_path / "ckpt-2")  # at step 3
    run = Run(tmp_path, "counter", 2, "recency")
    run.steps(2)  # ckpt-3 at step 4
    assert run.saved == [str(tmp_path / "ckpt-3")]
    assert run.preempt() == str(tmp_path / "ckpt-4")  # at step 5
    # Preempted again before training a step: ckpt-4 holds this very step, so nothing is saved twice.
    run = Run(tmp_path, "counter", 2, "recency")
    assert run.preempt() == str(tmp_path / "ckpt-4")
    run = Run(tmp_path, "counter", 2, "recency")
    run.steps(1)  # step 6
    run.finish()
    assert run.saved == [str(tmp_path / "ckpt-5")]
    assert {n: _step_of(str(tmp_path / f"ckpt-{n}")) for n in _numbers(tmp_path)} == {3: 4, 4: 5, 5: 6}
    assert tp.latest_checkpoint(str(tmp_path)) == _latest_good(tmp_path) == str(tmp_path / "ckpt-5")


@pytest.mark.parametrize("keep_without_metrics", [True, False])
def test_a_preemption_checkpoint_without_metrics_under_best_fn(tmp_path: Path, keep_without_metrics: bool) -> None:
    # It has no metrics (the handler has none to give). Kept as the newest until a later save; then
    # keep_checkpoints_without_metrics decides, as for any checkpoint without metrics: True (the default, as
    # Orbax) keeps it for good, False lets it go once max_to_keep checkpoints have metrics.
    retention = "best" if keep_without_metrics else "best-nokeep"
    run = Run(tmp_path, "step", 2, retention)
    run.steps(7)  # ckpt-2, 4, 6 with metrics
    assert run.preempt() == str(tmp_path / "ckpt-7")
    assert _numbers(tmp_path) == [2, 4, 6, 7]
    manager = tp.CheckpointManager(
        tp.Checkpoint(step=tp.Variable(np.int64(0))), str(tmp_path), max_to_keep=3, best_fn=lambda m: 0.0
    )
    assert manager.metrics(7) is None
    manager.close()
    run = Run(tmp_path, "step", 2, retention)
    run.steps(1)  # ckpt-8
    run.finish()
    # The three best by loss (step % 4: ckpt-4 and ckpt-8 at 0, then the newer of ckpt-2 and ckpt-6).
    assert _numbers(tmp_path) == ([4, 6, 7, 8] if keep_without_metrics else [4, 6, 8])


# ------------------------------------------------------------------ told by what the loop passed, in process
def _preempt(manager: tp.CheckpointManager) -> object:
    """SIGTERM this process, with a handler saving at the step boundary; what the preemption save returned."""
    with save_on_sigterm(manager, at_step=True, exit_after=False) as handler:
        os.kill(os.getpid(), signal.SIGTERM)
        handler.check()
    assert handler.saved
    return handler.saved_path


@pytest.mark.parametrize("by_step", [True, False])
def test_steps_equal_to_save_counter_plus_one_do_not_decide_the_numbering(by_step: bool) -> None:
    # Steps 1, 2, 3 saved: each number is both the step and save_counter + 1. What the loop passed tells:
    # checkpoint_number=step numbers by step, save() by save_counter. Before, ckpt-4 either way.
    run = f"memory://preempt-coincide-{by_step}"
    step = tp.Variable(np.int64(0))
    manager = tp.CheckpointManager(tp.Checkpoint(step=step), run, max_to_keep=3, step_counter=step)
    for s in (1, 2, 3):
        step.assign(s)
        manager.save(checkpoint_number=step) if by_step else manager.save()
    step.assign(5)  # two steps trained since
    expected = f"{run}/ckpt-5" if by_step else f"{run}/ckpt-4"
    assert _preempt(manager) == expected == manager.latest_checkpoint


def test_a_step_counter_that_cannot_be_read_numbers_after_the_highest_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class OnDevice:
        """A step counter whose numpy() raises, as a CUDA tensor's does."""

        def numpy(self) -> int:
            raise TypeError("can't convert cuda:0 device type tensor to numpy")

    run = "memory://preempt-unreadable-step"
    manager = tp.CheckpointManager(
        tp.Checkpoint(step=tp.Variable(np.int64(0))), run, max_to_keep=3, step_counter=OnDevice()
    )
    assert manager.save(checkpoint_number=100) == f"{run}/ckpt-100"  # the save does not need it
    with caplog.at_level("WARNING", logger="trackpoint"):
        assert _preempt(manager) == f"{run}/ckpt-101"
    assert "cannot read step_counter" in caplog.text
