"""Crash safety: a saving process is SIGKILLed at random moments.

Afterwards every listed checkpoint is complete and correct, every checkpoint
the worker reported as saved is still there, nothing partial is visible, and
``cleanup(min_age=0)`` (the writer knows its predecessor was killed; the
default age rule would keep the young leftovers) plus the next save leaves
only committed files behind. A second test kills a forked
saver before each of its file operations in turn, which reaches every step
of the commit deterministically.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import CheckpointNotFoundError
from trackpoint.storage import Capabilities, CheckpointOptions, WriteItem

_WORKER = r"""
import sys
import numpy as np
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.storage import Capabilities, CheckpointOptions, WriteItem

directory, strategy, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
caps = None if strategy == "rename" else Capabilities(conditional_create=True)
backend = BundleBackend(LocalFiles(capabilities=caps))
opts = CheckpointOptions(max_shard_bytes=600_000, num_writers=2)
print("ready", flush=True)
n = start
while True:
    items = [WriteItem(f"w{i}", np.full(65_536, n * 10 + i, np.float32)) for i in range(4)]
    items.append(WriteItem("name", np.array(f"ckpt-{n}".encode(), dtype=object)))
    backend.save(f"{directory}/ckpt-{n}", items, opts, overwrite=False)
    print(n, flush=True)
    n += 1
"""


def _items(n: int) -> list[WriteItem]:
    out = [WriteItem(f"w{i}", np.full(65_536, n * 10 + i, np.float32)) for i in range(4)]
    out.append(WriteItem("name", np.array(f"ckpt-{n}".encode(), dtype=object)))
    return out


def _check_complete(backend: BundleBackend, prefix: str) -> None:
    n = int(prefix.rsplit("-", 1)[1])
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["name", "w0", "w1", "w2", "w3"]
        for i in range(4):
            np.testing.assert_array_equal(r.read(f"w{i}"), np.full(65_536, n * 10 + i, np.float32))
        assert r.read("name")[()] == f"ckpt-{n}".encode()


def _committed_files(directory: Path, backend: BundleBackend) -> set[str]:
    names = set()
    for prefix in backend.list_checkpoints(str(directory)):
        base = Path(prefix).name
        names.add(base + ".index")
        names.update(n for n in os.listdir(directory) if n.startswith(base + ".data-"))
    return names


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["rename", "create"])
def test_sigkill_during_saves(tmp_path: Path, strategy: str) -> None:
    rng = random.Random(1234)
    caps = None if strategy == "rename" else Capabilities(conditional_create=True)
    backend = BundleBackend(LocalFiles(capabilities=caps))
    reported: set[int] = set()
    next_n = 1
    for _ in range(7):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), strategy, str(next_n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        proc.stdout.close()
        reported.update(int(x) for x in out.split())
        listed = backend.list_checkpoints(str(tmp_path))
        listed_n = {int(p.rsplit("-", 1)[1]) for p in listed}
        # Every save that returned is still committed; at most one more (killed after its commit) is visible.
        assert reported <= listed_n
        assert len(listed_n - reported) <= 1
        for prefix in listed:
            _check_complete(backend, prefix)
        # A save killed after its commit but before reporting is complete: count it from now on.
        reported |= listed_n
        in_progress = max(listed_n | reported | {next_n - 1}) + 1
        prefix = str(tmp_path / f"ckpt-{in_progress}")
        if in_progress not in listed_n:
            assert not backend.exists(prefix)
            with pytest.raises(CheckpointNotFoundError):
                backend.open_reader(prefix)
        next_n = in_progress + 1
        # Leftovers of the killed save are seconds old, so only min_age=0 removes
        # them (a running save looks the same; the next save keeps young pieces).
        backend.cleanup(str(tmp_path), min_age=0)
        # The next save of the interrupted prefix succeeds.
        backend.save(prefix, _items(in_progress), CheckpointOptions(max_shard_bytes=600_000), overwrite=True)
        _check_complete(backend, prefix)
        assert not (tmp_path / f"ckpt-{in_progress}_temp").exists()
        # A save killed between its commit and removing its pieces leaves them to cleanup.
        backend.cleanup(str(tmp_path), min_age=0)
        assert set(os.listdir(tmp_path)) == _committed_files(tmp_path, backend)
        reported.add(in_progress)
    assert len(reported) >= 7


# ---------------------------------------------------------------- deterministic crash points

_PATCHED = ("open_sink", "rename", "delete", "sync_dir", "remove_dir", "makedirs", "put")


def _save_killed_at(backend: BundleBackend, prefix: str, value: int, kill_at: int) -> int:
    """Fork a child that saves ``prefix`` and SIGKILLs itself before its ``kill_at``-th file operation.

    Returns the number of file operations the save performed, or -1 when the child was killed.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        os.close(read_end)
        count = 0

        def wrap(fn: Any) -> Any:
            def inner(*args: Any, **kwargs: Any) -> Any:
                nonlocal count
                count += 1
                if count == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return fn(*args, **kwargs)

            return inner

        try:
            for name in _PATCHED:
                setattr(backend.files, name, wrap(getattr(backend.files, name)))
            backend.save(prefix, _items(value), CheckpointOptions(max_shard_bytes=600_000, num_writers=2))
            os.write(write_end, str(count).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return -1
    assert out, "the saving child failed instead of finishing or being killed"
    return int(out)


@pytest.mark.parametrize("strategy", ["rename", "create"])
def test_kill_at_every_file_operation_of_an_overwrite(tmp_path: Path, strategy: str) -> None:
    caps = None if strategy == "rename" else Capabilities(conditional_create=True)
    backend = BundleBackend(LocalFiles(capabilities=caps))
    other = str(tmp_path / "ckpt-other")
    backend.save(other, _items(7))
    prefix = str(tmp_path / "ckpt-1")
    backend.save(prefix, _items(1))
    total = _save_killed_at(backend, prefix, 2, kill_at=0)
    assert total > 5
    _check_complete_as(backend, prefix, 2)
    outcomes = set()
    for k in range(1, total + 1):
        # The same starting point every time: a fresh checkpoint of the shard count the child's
        # save also uses, so the child names its data files for one more shard (the path that
        # keeps both sets of names apart) and performs the same file operations in every round.
        backend.delete(prefix)
        backend.save(prefix, _items(1))
        assert _save_killed_at(backend, prefix, 2, kill_at=k) == -1
        # Never a mixture and never nothing: the old checkpoint or the new one.
        if backend.exists(prefix):
            with backend.open_reader(prefix) as r:
                got = int(r.read("w0")[0]) // 10
            outcomes.add(got)
            _check_complete_as(backend, prefix, got)
        else:
            outcomes.add(0)
            with pytest.raises(CheckpointNotFoundError):
                backend.open_reader(prefix)
        _check_complete_as(backend, other, 7)
        assert backend.list_checkpoints(str(tmp_path)) == sorted([other] + ([prefix] if backend.exists(prefix) else []))
        # cleanup(min_age=0) plus the next save of the prefix leave only committed files.
        backend.cleanup(str(tmp_path), min_age=0)
        backend.save(prefix, _items(3))
        _check_complete_as(backend, prefix, 3)
        assert set(os.listdir(tmp_path)) == _committed_files(tmp_path, backend)
    assert outcomes == {1, 2}, "an interrupted overwrite must leave the old checkpoint or the new one"


def _check_complete_as(backend: BundleBackend, prefix: str, n: int) -> None:
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["name", "w0", "w1", "w2", "w3"]
        for i in range(4):
            np.testing.assert_array_equal(r.read(f"w{i}"), np.full(65_536, n * 10 + i, np.float32))
