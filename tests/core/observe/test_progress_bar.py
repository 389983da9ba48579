"""Progress bars: drawn on a terminal (a real pseudo-terminal here) above the size threshold, never into a pipe.

Each case runs a small script in a fresh interpreter whose stderr is either a pseudo-terminal or a pipe,
and looks at what reached it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tqdm")
pty = pytest.importorskip("pty")

BIG = """
import numpy as np, trackpoint as tp
from trackpoint.observe import PROGRESS_MIN_BYTES
ckpt = tp.Checkpoint(v=tp.Variable(np.ones(PROGRESS_MIN_BYTES // 8, np.float64)))
path = ckpt.save("memory://run/big")
ckpt.restore(path)
"""

SMALL = """
import trackpoint as tp
options = tp.CheckpointOptions(progress={progress})
ckpt = tp.Checkpoint(v=tp.Variable([1.0, 2.0]))
ckpt.restore(ckpt.save("memory://run/small", options=options), options=options)
"""

CONVERT = """
import sys
import trackpoint as tp
quiet = tp.CheckpointOptions(progress=False)
path = tp.Checkpoint(v=tp.Variable([1.0, 2.0])).save(sys.argv[1] + "/ckpt", options=quiet)
tp.convert(path, sys.argv[1] + "/copy", dst_options=tp.CheckpointOptions(progress=True))
"""


def _stderr(script: str, *, terminal: bool, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> bytes:
    """What ``script`` writes to stderr, a pseudo-terminal (100 columns) or a pipe."""
    environ = {k: v for k, v in os.environ.items() if k != "TRACKPOINT_PROGRESS"}
    environ.update(env or {})
    command = [sys.executable, "-c", textwrap.dedent(script), *args]
    if not terminal:
        done = subprocess.run(command, capture_output=True, env=environ, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        return done.stderr
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, where tqdm draws nothing: give it a size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower, env=environ)
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            drawn += chunk
        assert proc.wait(timeout=120) == 0, drawn.decode(errors="replace")
    finally:
        os.close(leader)
    return drawn


def test_a_big_save_and_restore_draw_bars_on_a_terminal() -> None:
    # tqdm redraws at most every 0.1 s: a save faster than that would never draw its full count before the bar
    # is cleared. TQDM_MININTERVAL (tqdm's environment default for the argument trackpoint leaves to it) makes
    # every update draw, whatever the machine's speed.
    drawn = _stderr(BIG, terminal=True, env={"TQDM_MININTERVAL": "0"})
    assert b"save run/big-1" in drawn and b"restore run/big-1" in drawn
    assert b"64.0M/64.0M" in drawn  # tqdm's byte count of the whole variable


def test_no_bar_into_a_pipe() -> None:
    assert _stderr(BIG, terminal=False) == b""
    assert _stderr(SMALL.format(progress=True), terminal=False) == b""


def test_small_saves_draw_no_bar_unless_asked() -> None:
    assert _stderr(SMALL.format(progress=None), terminal=True) == b""
    drawn = _stderr(SMALL.format(progress=True), terminal=True)
    assert b"save run/small-1" in drawn and b"restore run/small-1" in drawn


def test_turned_off_by_option_and_by_environment() -> None:
    assert _stderr(SMALL.format(progress=False), terminal=True) == b""
    assert _stderr(BIG, terminal=True, env={"TRACKPOINT_PROGRESS": "0"}) == b""
    # The environment variable wins even over progress=True.
    assert _stderr(SMALL.format(progress=True), terminal=True, env={"TRACKPOINT_PROGRESS": "0"}) == b""


def test_a_conversion_draws_its_bar(tmp_path: Path) -> None:
    drawn = _stderr(CONVERT, terminal=True, args=(str(tmp_path),))
    assert b"convert " in drawn and b"/copy" in drawn
