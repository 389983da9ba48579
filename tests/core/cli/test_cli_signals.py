"""A command stopped by SIGTERM or SIGHUP unwinds as Ctrl-C does: a convert leaves nothing behind.

Before: their default action ended the process on the spot, so ``timeout 60 trackpoint convert ...``,
``kill``, a closed terminal or a container's stop left the unfinished save (``out/ckpt-1.zarr.tmp-...``)
and the directory ``out/`` the convert had made, which no ``cleanup`` removes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp

# The command line, held in the first progress event of the copy (once a shard is written, before the
# commit) by a plugin implementing the public event hook, until a signal stops it.
_HELD_COMMAND = """
import sys
import time

import trackpoint.plugins
from trackpoint.cli import main


class Hold:
    @trackpoint.plugins.hookimpl
    def trackpoint_save_progress(self, written_bytes: int) -> None:
        print("written", flush=True)
        time.sleep(120)


trackpoint.plugins.register(Hold(), "hold")
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("backend", "signum"),
    [("zarr", signal.SIGTERM), ("zarr", signal.SIGHUP), ("bundle", signal.SIGTERM)],
)
def test_a_terminated_convert_leaves_nothing_behind(tmp_path: Path, backend: str, signum: int) -> None:
    tp.Checkpoint(w=tp.Variable(np.arange(1000.0)), b=tp.Variable(np.ones(5))).write(str(tmp_path / "src" / "ckpt-1"))
    proc = subprocess.Popen(
        [sys.executable, "-c", _HELD_COMMAND, "convert", "src/ckpt-1", "out/ckpt-1", "--dst-backend", backend],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
        assert (tmp_path / "out").is_dir() and list((tmp_path / "out").iterdir())  # the unfinished save
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert err.strip() == f"trackpoint: terminated ({signal.Signals(signum).name})"
    # The save was aborted and the directory the convert made removed: nothing new, nothing for cleanup.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_the_handlers_are_put_back(tmp_path: Path, cli: Any) -> None:
    tp.Checkpoint(w=tp.Variable(np.arange(3.0))).write(str(tmp_path / "ckpt-1"))
    assert cli("inspect", str(tmp_path / "ckpt-1")).returncode == 0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
