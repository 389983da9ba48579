"""Async saves at interpreter exit, in real subprocesses: waited for, and failures never lost."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp

TESTS = Path(__file__).resolve().parents[1]

PRELUDE = """
import sys, threading
import numpy as np
import trackpoint as tp
from trackpoint import plugins
from trackpoint.errors import StorageError
import gated

plugins.register(gated._Plugin(), "gated-backends")
options = tp.CheckpointOptions(backend="gated-bundle", enable_async=True)
ckpt = tp.Checkpoint(v=tp.Variable(np.arange(4.0)))
"""


def _run(tmp_path: Path, body: str, before: str = "") -> subprocess.CompletedProcess[str]:
    """Run PRELUDE then ``body`` in a fresh interpreter; ``before`` runs ahead of ``import trackpoint``."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(before) + PRELUDE + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120
    )


def _restored(path: Path) -> np.ndarray:
    v = tp.Variable(np.zeros(4))
    tp.Checkpoint(v=v).restore(str(path)).assert_consumed()
    return v.numpy()


def test_exit_waits_for_a_save_in_flight(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        path = ckpt.save(sys.argv[1] + "/ckpt", options)
        ckpt.v.assign(np.full(4, 9.0))
        threading.Timer(0.5, gated.GATE.open.set).start()  # the write is still held when the script ends
        print(path)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip() == str(tmp_path / "run" / "ckpt-1")
    assert tp.latest_checkpoint(str(tmp_path / "run")) == str(tmp_path / "run" / "ckpt-1")
    np.testing.assert_array_equal(_restored(tmp_path / "run" / "ckpt-1"), [0.0, 1.0, 2.0, 3.0])


EARLY_HANDLER = """
import atexit
atexit.register(print, "the handler registered before trackpoint ran")
"""


def test_a_failure_never_raised_is_reported_on_stderr_with_exit_status_1(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        import atexit
        atexit.register(print, "the program's exit handler ran")
        gated.GATE.fail = StorageError("bundle: no space left on device")
        gated.GATE.open.set()
        ckpt.save(sys.argv[1] + "/ckpt", options)
        print("the script ended normally")
        """,
    )
    assert done.returncode == 1
    assert "the script ended normally" in done.stdout  # stdout was flushed before the exit
    # Handlers registered after trackpoint's (at its import) run before it: none was skipped.
    assert "the program's exit handler ran" in done.stdout
    assert "the async save of" in done.stderr and "failed in the background" in done.stderr
    assert "StorageError: bundle: no space left on device" in done.stderr
    assert tp.latest_checkpoint(str(tmp_path / "run")) is None


def test_a_failure_the_program_was_given_is_not_reported_again(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        gated.GATE.fail = StorageError("bundle: no space left on device")
        gated.GATE.open.set()
        ckpt.save(sys.argv[1] + "/ckpt", options)
        try:
            ckpt.sync()
        except StorageError as exc:
            print("handled:", exc)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "handled: bundle: no space left on device" in done.stdout
    assert done.stderr == ""


def test_a_crashing_program_still_gets_its_save_written(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        ckpt.save(sys.argv[1] + "/ckpt", options)
        threading.Timer(0.3, gated.GATE.open.set).start()
        raise RuntimeError("the training step blew up")
        """,
    )
    assert done.returncode == 1
    assert "RuntimeError: the training step blew up" in done.stderr
    assert "failed in the background" not in done.stderr
    np.testing.assert_array_equal(_restored(tmp_path / "run" / "ckpt-1"), [0.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize(("ending", "status"), [("sys.exit(3)", 3), ("sys.exit('bad input')", 1)])
def test_a_failure_keeps_the_non_zero_status_the_program_chose_and_every_exit_handler_runs(
    tmp_path: Path, ending: str, status: int
) -> None:
    done = _run(
        tmp_path,
        f"""
        gated.GATE.fail = StorageError("bundle: no space left on device")
        ckpt.save(sys.argv[1] + "/ckpt", options)
        threading.Timer(0.3, gated.GATE.open.set).start()  # fails after the program has chosen its status
        {ending}
        """,
        before=EARLY_HANDLER,
    )
    assert done.returncode == status, done.stderr
    assert "failed in the background" in done.stderr
    assert "StorageError: bundle: no space left on device" in done.stderr
    assert "the handler registered before trackpoint ran" in done.stdout
    assert tp.latest_checkpoint(str(tmp_path / "run")) is None


def test_a_failure_turns_a_zero_status_the_program_chose_into_1(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        gated.GATE.fail = StorageError("bundle: no space left on device")
        gated.GATE.open.set()
        ckpt.save(sys.argv[1] + "/ckpt", options)
        sys.exit(0)
        """,
    )
    assert done.returncode == 1
    assert "StorageError: bundle: no space left on device" in done.stderr


def test_sys_exit_in_another_thread_is_not_the_programs_status(tmp_path: Path) -> None:
    """A thread's sys.exit(2) ends the thread; the program ends normally, so a failure makes its status 1."""
    done = _run(
        tmp_path,
        """
        gated.GATE.fail = StorageError("bundle: no space left on device")
        gated.GATE.open.set()
        ckpt.save(sys.argv[1] + "/ckpt", options)
        worker = threading.Thread(target=sys.exit, args=(2,))
        worker.start()
        worker.join()
        """,
    )
    assert done.returncode == 1
    assert "StorageError: bundle: no space left on device" in done.stderr


def test_a_failure_after_an_uncaught_exception_is_reported_too_and_every_exit_handler_runs(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        gated.GATE.fail = StorageError("bundle: no space left on device")
        ckpt.save(sys.argv[1] + "/ckpt", options)
        threading.Timer(0.3, gated.GATE.open.set).start()
        raise RuntimeError("the training step blew up")
        """,
        before=EARLY_HANDLER,
    )
    assert done.returncode == 1
    assert "RuntimeError: the training step blew up" in done.stderr
    assert "StorageError: bundle: no space left on device" in done.stderr
    assert "the handler registered before trackpoint ran" in done.stdout
