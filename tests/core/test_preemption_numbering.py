"""The preemption checkpoint of a manager: what it holds, and its number (the loop's own, by step or by
save_counter, above every checkpoint number).

Each run is a real process that a real SIGTERM preempts. The test paces its steps through stdin and
signals it between two steps (or in the middle of one), so the state the preemption save sees is known:
the checkpoint must hold that state under the number the loop would have given it, and ordering by
number (``trackpoint verify --latest-good``) must agree with the state file, run after run. What does not
depend on a signal (the number after a rollback, a resume, a failed save) is tested in process.
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
from preempting import preempt

#: One step per line read from stdin; check() at the top of each step, as a training loop calls it.
#: argv: directory, numbering ("step": save(checkpoint_number=step), "counter": save()), save every N steps,
#: retention ("recency", "best": best_fn with metrics, "best-nokeep": and keep_checkpoints_without_metrics=False).
TRAIN = """
import atexit, sys
import numpy as np
import trackpoint as tp
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

#: A loop whose step_counter counts epochs, and check() runs every batch (one per line of stdin): the epoch a
#: checkpoint holds says nothing of the batches trained since. argv: directory, batches per epoch (save() after each).
EPOCHS = """
import atexit, sys
import numpy as np
import trackpoint as tp
from trackpoint.preemption import save_on_sigterm

directory, per_epoch = sys.argv[1], int(sys.argv[2])
epoch, batches = tp.Variable(np.int64(0)), tp.Variable(np.int64(0))
weights = tp.Variable(np.zeros(1000))
manager = tp.CheckpointManager(tp.Checkpoint(epoch=epoch, batches=batches, weights=weights), directory,
                               max_to_keep=3, step_counter=epoch)
restored = manager.restore_or_initialize()
handler = save_on_sigterm(manager, at_step=True)
atexit.register(lambda: handler.saved and print("preempted", handler.saved_path, flush=True))
print("resumed", restored, int(batches.numpy()), flush=True)
for line in sys.stdin:
    handler.check()
    b = int(batches.numpy()) + 1
    weights.assign(np.full(1000, float(b)))
    batches.assign(b)
    if b % per_epoch == 0:
        epoch.assign_add(1)
        print("saved", manager.save(), flush=True)
    print("step", b, flush=True)
print("done", flush=True)
"""

#: A loop saving every step by step, preempted in the signal handler (no at_step). A line "half" runs the next
#: step's update, then waits for a line before the rest (the step counter, the save): the test signals there.
MID_STEP = """
import atexit, sys
import numpy as np
import trackpoint as tp
from trackpoint.preemption import save_on_sigterm

directory = sys.argv[1]
step = tp.Variable(np.int64(0))
weights = tp.Variable(np.zeros(1000))
manager = tp.CheckpointManager(tp.Checkpoint(step=step, weights=weights), directory, max_to_keep=3,
                               step_counter=step)
restored = manager.restore_or_initialize()
handler = save_on_sigterm(manager)
atexit.register(lambda: handler.saved and print("preempted", handler.saved_path, flush=True))
print("resumed", restored, int(step.numpy()), flush=True)
for line in sys.stdin:
    s = int(step.numpy()) + 1
    weights.assign(np.full(1000, float(s)))
    if line.strip() == "half":
        print("updated", s, flush=True)
        sys.stdin.readline()
    step.assign(s)
    print("saved", manager.save(checkpoint_number=step), flush=True)
    print("step", s, flush=True)
print("done", flush=True)
"""


class Run:
    """A training process whose steps the test runs one at a time: ``script`` (``TRAIN``) given ``directory, *args``."""

    def __init__(self, directory: Path, *args: object, script: str = TRAIN) -> None:
        self.directory = directory
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(directory), *map(str, args)],
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
        return self._preempted()

    def preempt_mid_step(self) -> str:
        """SIGTERM in the middle of a step of ``MID_STEP``, its update done; the path the signal handler saved."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("half\n")
        self.proc.stdin.flush()
        assert (line := self._line()).startswith("updated "), line
        self.proc.send_signal(signal.SIGTERM)
        return self._preempted()

    def _preempted(self) -> str:
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 128 + signal.SIGTERM, err
        preempted = [line for line in out.splitlines() if line.startswith("preempted ")]
        assert len(preempted) == 1 and not any(line.startswith("step ") for line in out.splitlines()), out + err
        return preempted[0].split(" ", 1)[1]

    def finish(self) -> None:
        out, err = self.proc.communicate("", timeout=60)
        assert self.proc.returncode == 0 and out.strip() == "done", err


def _step_of(prefix: str, name: str = "step") -> int:
    return int(tp.load_checkpoint(prefix).get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))


def _weights_of(prefix: str) -> float:
    return float(tp.load_checkpoint(prefix).get_tensor("weights/.ATTRIBUTES/VARIABLE_VALUE")[0])


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


def _in_order(directory: Path) -> None:
    """Ordering by number agrees with the state file and with the steps the checkpoints hold."""
    numbers = _numbers(directory)
    steps = [_step_of(str(directory / f"ckpt-{number}")) for number in numbers]
    assert steps == sorted(steps), dict(zip(numbers, steps, strict=True))
    assert tp.latest_checkpoint(str(directory)) == _latest_good(directory) == str(directory / f"ckpt-{numbers[-1]}")


@pytest.mark.parametrize("retention", ["recency", "best"])
def test_a_preemption_at_a_step_saved_already_saves_again_above_it(tmp_path: Path, retention: str) -> None:
    # check() at the top of a step, after a loop saved every step by step: the variables did not change since, but
    # nothing tells the manager so (a signal mid-step, a step counter of epochs: below). It saves the step again,
    # one above its number so that it sorts newest, and the loop's next save, numbered by that step, replaces it.
    # Before, each preemption pushed save_counter + 1 past the step (ckpt-4, ckpt-8, ckpt-12 holding steps 3, 6, 9).
    for stop in (3, 6, 9):
        run = Run(tmp_path, "step", 1, retention)
        run.steps(3)
        assert run.preempt() == str(tmp_path / f"ckpt-{stop + 1}")
        assert _step_of(str(tmp_path / f"ckpt-{stop + 1}")) == stop
        assert tp.latest_checkpoint(str(tmp_path)) == str(tmp_path / f"ckpt-{stop + 1}")
    run = Run(tmp_path, "step", 1, retention)
    run.steps(1)
    run.finish()
    assert run.saved == [str(tmp_path / "ckpt-10")]
    _in_order(tmp_path)
    for number in _numbers(tmp_path):
        assert _step_of(str(tmp_path / f"ckpt-{number}")) == number
    # Retention as for any save: three kept (by recency, or the three best and the newest).
    assert _numbers(tmp_path) == ([8, 9, 10] if retention == "recency" else [4, 8, 9, 10])


def test_preemptions_between_saves_by_step_are_numbered_by_their_step(tmp_path: Path) -> None:
    # Saves at every third step; the preemptions fall between them, two of them before the restarted run saved
    # (told from the checkpoint it restored: numbered by the step it holds), the last one at a step just saved.
    stops = []
    for steps in (4, 1, 3, 1):
        run = Run(tmp_path, "step", 3, "recency")
        run.steps(steps)
        stops.append(run.preempt())
    assert stops == [str(tmp_path / f"ckpt-{n}") for n in (4, 5, 8, 10)]
    assert _step_of(str(tmp_path / "ckpt-10")) == 9  # ckpt-9 held it already: saved again above it
    run = Run(tmp_path, "step", 3, "recency")
    run.steps(3)
    run.finish()
    assert run.saved == [str(tmp_path / "ckpt-12")]
    assert _numbers(tmp_path) == [9, 10, 12]
    _in_order(tmp_path)


def test_a_loop_numbering_by_save_counter_gets_save_counter_plus_one(tmp_path: Path) -> None:
    # TensorFlow's idiom, manager.save(), with the step counter given: the numbers count saves, not steps.
    run = Run(tmp_path, "counter", 2, "recency")
    run.steps(3)  # ckpt-1 at step 2
    assert run.preempt() == str(tmp_path / "ckpt-2")  # at step 3
    run = Run(tmp_path, "counter", 2, "recency")
    run.steps(2)  # ckpt-3 at step 4
    assert run.saved == [str(tmp_path / "ckpt-3")]
    assert run.preempt() == str(tmp_path / "ckpt-4")  # at step 5
    # Preempted again before training a step: saved again, as the next save() would number it.
    run = Run(tmp_path, "counter", 2, "recency")
    assert run.preempt() == str(tmp_path / "ckpt-5")
    run = Run(tmp_path, "counter", 2, "recency")
    run.steps(1)  # step 6
    run.finish()
    assert run.saved == [str(tmp_path / "ckpt-6")]
    assert {n: _step_of(str(tmp_path / f"ckpt-{n}")) for n in _numbers(tmp_path)} == {4: 5, 5: 5, 6: 6}
    _in_order(tmp_path)


# ------------------------------------------------------------------ never skipped: the step says nothing of the rest
def test_a_step_counter_of_epochs_does_not_keep_the_batches_trained_since_from_being_saved(tmp_path: Path) -> None:
    # check() every batch, the step counter counting epochs: at batch 7 the epoch is still the one ckpt-1 (batch 4)
    # holds. Before, nothing was saved ("saved the preemption checkpoint ckpt-1"), and three batches were lost.
    run = Run(tmp_path, 4, script=EPOCHS)
    run.steps(6)
    assert run.saved == [str(tmp_path / "ckpt-1")]
    assert run.preempt() == str(tmp_path / "ckpt-2")
    assert _step_of(str(tmp_path / "ckpt-2"), "batches") == 6
    assert _weights_of(str(tmp_path / "ckpt-2")) == 6.0
    run = Run(tmp_path, 4, script=EPOCHS)  # resumes at batch 6
    run.steps(2)  # batch 8 ends epoch 2
    run.finish()
    assert run.saved == [str(tmp_path / "ckpt-3")]
    assert _step_of(str(tmp_path / "ckpt-3"), "batches") == 8
    assert tp.latest_checkpoint(str(tmp_path)) == _latest_good(tmp_path) == str(tmp_path / "ckpt-3")


def test_a_signal_in_the_middle_of_a_step_saves_the_variables_it_changed(tmp_path: Path) -> None:
    # Without at_step the handler saves where the signal lands: here after step 4's update, before the step counter
    # moved, so the step is the one ckpt-3 holds. Before, nothing was saved and the update was lost.
    run = Run(tmp_path, script=MID_STEP)
    run.steps(3)
    assert run.preempt_mid_step() == str(tmp_path / "ckpt-4")
    assert (_step_of(str(tmp_path / "ckpt-4")), _weights_of(str(tmp_path / "ckpt-4"))) == (3, 4.0)
    _in_order(tmp_path)
    run = Run(tmp_path, script=MID_STEP)
    run.steps(1)  # step 4 again, saved over the preemption checkpoint
    run.finish()
    assert run.saved == [str(tmp_path / "ckpt-4")]
    assert _step_of(str(tmp_path / "ckpt-4")) == 4
    _in_order(tmp_path)


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
    assert preempt(manager) == expected == manager.latest_checkpoint


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
        assert preempt(manager) == f"{run}/ckpt-101"
    assert "cannot read step_counter" in caplog.text


# ------------------------------------------------------------------ above every number: rollbacks and resumes
def _names(manager: tp.CheckpointManager) -> list[str]:
    return [os.path.basename(path) for path in manager.checkpoints]


def test_after_a_rollback_the_preemption_checkpoint_is_numbered_above_the_highest(tmp_path: Path) -> None:
    # save() numbering, rolled back to ckpt-2 of ckpt-1..5: save_counter + 1 is 3. Before, ckpt-3 was saved over
    # while ckpt-4 and ckpt-5 stayed, so the state file's latest (ckpt-3) sorted below them by number.
    step, weights = tp.Variable(np.int64(0)), tp.Variable(np.zeros(4))
    ckpt = tp.Checkpoint(step=step, weights=weights)
    manager = tp.CheckpointManager(ckpt, str(tmp_path), max_to_keep=10, step_counter=step)
    for s in range(1, 6):
        step.assign(s * 10)
        manager.save()
    ckpt.restore(manager.checkpoints[1])
    step.assign(25)
    assert preempt(manager) == str(tmp_path / "ckpt-6") == manager.latest_checkpoint
    assert _names(manager) == [f"ckpt-{n}" for n in range(1, 7)]
    assert [_step_of(str(tmp_path / f"ckpt-{n}")) for n in (3, 6)] == [30, 25]


def test_after_a_rollback_by_step_a_preserved_checkpoint_of_that_step_is_neither_replaced_nor_refused(
    tmp_path: Path,
) -> None:
    # A loop saving by step resumed at ckpt-400, rolled back to ckpt-100 and trained to step 200, whose checkpoint
    # keep_checkpoint_every_n_hours preserved. Before, the preemption save was refused (CheckpointExistsError):
    # no preemption checkpoint at all.
    def manager_of() -> tuple[tp.Variable, tp.Checkpoint, tp.CheckpointManager]:
        step = tp.Variable(np.int64(0))
        ckpt = tp.Checkpoint(step=step, weights=tp.Variable(np.zeros(4)))
        manager = tp.CheckpointManager(
            ckpt, str(tmp_path), max_to_keep=2, step_counter=step, keep_checkpoint_every_n_hours=1e-9
        )
        return step, ckpt, manager

    step, _, manager = manager_of()
    for s in (100, 200, 300, 400):
        step.assign(s)
        manager.save(checkpoint_number=step)
    step, ckpt, manager = manager_of()
    assert manager.restore_or_initialize() == str(tmp_path / "ckpt-400")
    ckpt.restore(str(tmp_path / "ckpt-100"))
    step.assign(200)
    assert preempt(manager) == str(tmp_path / "ckpt-401") == tp.latest_checkpoint(str(tmp_path))
    assert _numbers(tmp_path) == [100, 200, 300, 400, 401]
    assert _step_of(str(tmp_path / "ckpt-200")) == 200 and _step_of(str(tmp_path / "ckpt-401")) == 200


def test_a_run_resumed_by_checkpoint_restore_numbers_by_step(tmp_path: Path) -> None:
    # TensorFlow's idiom, ckpt.restore(manager.latest_checkpoint), instead of restore_or_initialize: the step
    # counter at or above the latest number tells numbering by step. Before, ckpt-201 held step 250.
    step = tp.Variable(np.int64(0))
    manager = tp.CheckpointManager(tp.Checkpoint(step=step), str(tmp_path), max_to_keep=5, step_counter=step)
    for s in (100, 200):
        step.assign(s)
        manager.save(checkpoint_number=step)
    step = tp.Variable(np.int64(0))
    ckpt = tp.Checkpoint(step=step)
    manager = tp.CheckpointManager(ckpt, str(tmp_path), max_to_keep=5, step_counter=step)
    ckpt.restore(manager.latest_checkpoint)
    step.assign(250)
    assert preempt(manager) == str(tmp_path / "ckpt-250") == manager.latest_checkpoint


def test_a_failed_save_does_not_change_the_numbering(tmp_path: Path) -> None:
    # Saves by step; then a save() refused (its number, save_counter + 1 after a rollback, is a checkpoint
    # keep_checkpoint_every_n_hours preserved) tells nothing of how the loop numbers. Before, it switched the
    # preemption save to save_counter + 1: that same preserved number, refused again, and no checkpoint.
    def manager_of() -> tuple[tp.Variable, tp.Checkpoint, tp.CheckpointManager]:
        step = tp.Variable(np.int64(0))
        ckpt = tp.Checkpoint(step=step)
        manager = tp.CheckpointManager(
            ckpt, str(tmp_path), max_to_keep=1, step_counter=step, keep_checkpoint_every_n_hours=1e-9
        )
        return step, ckpt, manager

    step, _, manager = manager_of()
    for s in (10, 20, 30):
        step.assign(s)
        manager.save()  # ckpt-1, ckpt-2 preserved, ckpt-3 kept
    step, ckpt, manager = manager_of()
    manager.restore_or_initialize()
    step.assign(300)
    assert manager.save(checkpoint_number=step) == str(tmp_path / "ckpt-300")
    ckpt.restore(str(tmp_path / "ckpt-1"))
    with pytest.raises(tp.CheckpointExistsError, match=r"refused to write .*ckpt-2: a checkpoint this manager does"):
        manager.save()
    step.assign(350)
    assert preempt(manager) == str(tmp_path / "ckpt-350") == manager.latest_checkpoint


def test_a_preemption_save_at_a_step_checkpoint_interval_saved_saves_what_changed_since() -> None:
    # checkpoint_interval never saves the loop twice at one step (TensorFlow's rule), but the preemption save does:
    # the step counter says nothing of the variables (a counter of epochs, a signal mid-step). Before, it wrote
    # nothing and the state trained since ckpt-1 was lost.
    run = "memory://preempt-interval-step"
    step = tp.Variable(np.int64(0))
    w = tp.Variable(np.zeros(2))
    manager = tp.CheckpointManager(
        tp.Checkpoint(step=step, w=w), run, max_to_keep=3, step_counter=step, checkpoint_interval=1
    )
    step.assign(1)
    assert manager.save() == f"{run}/ckpt-1"
    w.assign(np.ones(2))  # trained on within the step
    assert manager.save() is None  # the loop's own save: once per step
    assert preempt(manager) == f"{run}/ckpt-2" == manager.latest_checkpoint
    assert tp.load_checkpoint(f"{run}/ckpt-2").get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [1.0, 1.0]
    assert manager.save() is None  # and the loop still saves once per step
