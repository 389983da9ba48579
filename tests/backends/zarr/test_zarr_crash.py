"""A writer killed (SIGKILL) at any moment of a save leaves nothing visible but whole checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions

# Saves generation after generation: overwriting "ckpt" and creating "gen-N".
# Every tensor of generation N holds the value N, so a mixed checkpoint shows.
_WRITER = """
import sys
import numpy as np
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, WriteItem

directory, gen = sys.argv[1], int(sys.argv[2]) * 1000
backend = open_backend(directory, CheckpointOptions(backend="zarr", num_writers=2))
print("ready", flush=True)
while True:
    items = [WriteItem(f"t{i}", np.full(40_000 if i % 4 == 0 else 7, gen, np.int64)) for i in range(24)]
    backend.save(f"{directory}/ckpt", items, CheckpointOptions(num_writers=2), overwrite=True)
    backend.save(f"{directory}/gen-{gen}", items, CheckpointOptions(num_writers=2), overwrite=False)
    print("saved", flush=True)
    gen += 1
"""


def _check_consistent(directory: str) -> int:
    backend = open_backend(directory, CheckpointOptions(backend="zarr", backend_options={"cleanup_min_age": 3600}))
    visible = backend.list_checkpoints(directory)
    for prefix in visible:
        with backend.open_reader(prefix) as reader:
            assert reader.keys() == sorted(f"t{i}" for i in range(24))
            values = {int(v) for k in reader.keys() for v in np.unique(reader.read(k))}
            assert len(values) == 1, f"{prefix} mixes generations {values}"
    return len(visible)


def test_sigkill_mid_save_leaves_only_whole_checkpoints(tmp_path: Path) -> None:
    directory = str(tmp_path)
    delays = [0.05, 0.4, 0.9]
    for run, delay in enumerate(delays):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, directory, str(run)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        if run == len(delays) - 1:
            # The last writer is killed only after a whole generation, however loaded the machine:
            # the final check must see checkpoints, or it would prove nothing.
            assert proc.stdout.readline().strip() == b"saved"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _check_consistent(directory)
    leftovers = [n for n in os.listdir(directory) if ".tmp-" in n]
    # The dead writers' temporary groups are recognised as abandoned (their pid is gone).
    backend = open_backend(directory, CheckpointOptions(backend="zarr"))
    removed = backend.cleanup(directory)
    assert sorted(os.path.basename(r) for r in removed) == sorted(leftovers)
    assert not [n for n in os.listdir(directory) if ".tmp-" in n]
    assert all(n.endswith(".zarr") for n in os.listdir(directory))
    assert _check_consistent(directory) >= 1


def test_claim_of_a_killed_writer_without_owner_record_is_removed(tmp_path: Path) -> None:
    # A writer killed between creating its claim directory and finishing the
    # owner record inside leaves a claim whose name alone says who made it.
    from trackpoint.backends.zarr._commit import host_tag as _host_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = os.getppid()  # the test runner's parent: alive for the whole test
    tag = _host_tag()
    dead_claim = tmp_path / f"a.zarr.tmp-{'1' * 32}-init-{tag}-{dead.pid}-0badcafe"
    live_claim = tmp_path / f"b.zarr.tmp-{'2' * 32}-init-{tag}-{alive}-0badcafe"
    other_host = tmp_path / f"c.zarr.tmp-{'3' * 32}-init-ffffffff-{dead.pid}-0badcafe"
    for claim in (dead_claim, live_claim, other_host):
        claim.mkdir()
    backend = open_backend(str(tmp_path), CheckpointOptions(backend="zarr"))
    removed = backend.cleanup(str(tmp_path))
    assert [os.path.basename(r) for r in removed] == [dead_claim.name]
    assert live_claim.exists() and other_host.exists()
