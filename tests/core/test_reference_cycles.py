"""Checkpoints create no reference cycles: they and the arrays they hold are freed as soon as they are
dropped, not when the cycle collector happens to run (TensorFlow's tests assert no garbage is created)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import numpy as np

import trackpoint as tp

# Run in a fresh interpreter: in the test process, other tests leave threads behind (fsspec's event
# loop, thread pools) whose own cyclic garbage would be counted with ours.
_CHECK = """
import gc, sys
import numpy as np
import trackpoint as tp

class Model(tp.AutoTrackable):
    def __init__(self):
        self.dense = tp.AutoTrackable()
        self.dense.kernel = tp.Variable(np.ones((2, 2)))
        self.blocks = [tp.Variable(np.zeros(3))]

def garbage(fn):
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        fn()
        gc.collect()
        return sorted({type(o).__name__ for o in gc.garbage})
    finally:
        gc.garbage.clear()
        gc.set_debug(0)

gc.disable()
tmp = sys.argv[1]
model = Model()
written = tp.Checkpoint(model=model).write(tmp + "/w")
cases = {
    "construct": lambda: tp.Checkpoint(model=model),
    "save": lambda: tp.Checkpoint(model=model).save(tmp + "/s"),
    "write root": lambda: tp.Checkpoint(root=model).write(tmp + "/r"),
    "read": lambda: tp.Checkpoint(model=Model()).read(written).assert_consumed(),
    "restore": lambda: tp.Checkpoint(model=Model()).restore(written).expect_partial(),
    "restore directory": lambda: tp.Checkpoint(model=Model()).restore(tmp),
}
# Once first: the first use of a backend imports modules, and some standard-library modules leave garbage
# cycles when imported (socket's enum classes, for one); those are not the checkpoint's.
for fn in cases.values():
    fn()
for name, fn in cases.items():
    print(name, "=", ",".join(garbage(fn)))
"""


def test_save_write_and_restore_leave_no_cycles(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _CHECK, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = dict(line.split(" = ") for line in done.stdout.splitlines())
    assert found == {name: "" for name in ("construct", "save", "write root", "read", "restore", "restore directory")}


class Model(tp.AutoTrackable):
    def __init__(self) -> None:
        self.dense = tp.AutoTrackable()
        self.dense.kernel = tp.Variable(np.ones((2, 2)))
        self.blocks = [tp.Variable(np.zeros(3))]


def test_dropped_checkpoint_frees_its_arrays_at_once(tmp_path: Path) -> None:
    import weakref

    enabled = gc.isenabled()
    gc.disable()
    try:
        model = Model()
        ckpt = tp.Checkpoint(model=model)
        ckpt.save(str(tmp_path / "ckpt"))
        alive = weakref.ref(ckpt)
        kernel = weakref.ref(model.dense.kernel)
        del ckpt, model
        assert alive() is None and kernel() is None
    finally:
        if enabled:
            gc.enable()
