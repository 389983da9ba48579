"""A SIGTERM save arriving while the collector's bookkeeping lock is held does not hang.

Restore-on-create applies values outside any public trackpoint call (when the
program attaches a new variable), and pauses the collector (``trackpoint._gc``)
while it does. A signal handler that saves runs between two bytecodes of the
main thread; had it arrived while ``_gc``'s lock was held, its save would
have waited for that lock forever.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp

SCRIPT = """
import signal, sys
import numpy as np
import trackpoint as tp
from trackpoint import _gc
from trackpoint.preemption import save_on_sigterm

source, target = sys.argv[1], sys.argv[2]
root = tp.AutoTrackable()
ckpt = tp.Checkpoint(model=root)
ckpt.restore(source)  # nothing to match yet: values wait for the variable (restore-on-create)
save_on_sigterm(ckpt, target)
raised = False

def line(frame, event, arg):
    global raised
    if event == "line" and not raised and _gc._lock.locked():
        raised = True
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, with the lock held
    return line

def tracer(frame, event, arg):
    return line if frame.f_code.co_filename == _gc.__file__ else None

sys.settrace(tracer)
root.v = tp.Variable(np.zeros(4))  # restore-on-create pauses the collector
sys.settrace(None)
print("no signal was raised")
sys.exit(3)
"""


@pytest.mark.timeout(120)
def test_sigterm_save_while_collector_lock_is_held(tmp_path: Path) -> None:
    src = tp.AutoTrackable()
    src.v = tp.Variable(np.arange(4.0))
    source = tp.Checkpoint(model=src).write(str(tmp_path / "source"))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, source, str(tmp_path / "on-term")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the SIGTERM save waited forever for the collector's lock")
    assert proc.returncode == 143, proc.stdout + proc.stderr
    # The handler's save happened (before the new variable was attached: the signal came first).
    names = [name for name, _ in tp.list_variables(str(tmp_path / "on-term-1"))]
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" in names
