"""``verify --all`` and ``verify --latest-good``: every checkpoint of a directory, and the newest intact one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import trackpoint as tp


def _run(directory: Path, saves: int) -> None:
    ckpt = tp.Checkpoint(w=tp.Variable(np.arange(3, dtype=np.float32)))
    with tp.CheckpointManager(ckpt, str(directory), max_to_keep=None) as manager:
        for _ in range(saves):
            manager.save()


def _flip(prefix: Path) -> None:
    """Flip one bit of the checkpoint's data: only reading every byte finds it."""
    data = prefix.parent / f"{prefix.name}.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[4] ^= 1
    data.write_bytes(bytes(raw))


def test_all_checks_every_checkpoint_newest_first(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(run, 3)
    _flip(run / "ckpt-2")
    checked = cli("verify", "--all", str(run))
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert [line.split()[:2] for line in lines if not line.startswith(" ")][:3] == [
        ["OK", str(run / "ckpt-3")],
        ["DAMAGED", str(run / "ckpt-2")],
        ["OK", str(run / "ckpt-1")],
    ]
    assert lines[-1] == "2 of 3 intact (every byte read)"
    report = json.loads(cli("verify", "--all", str(run), "--json").stdout)
    assert [(c["prefix"], c["status"]) for c in report["checkpoints"]] == [
        (str(run / "ckpt-3"), "intact"),
        (str(run / "ckpt-2"), "damaged"),
        (str(run / "ckpt-1"), "intact"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = cli("verify", "--all", str(empty))
    assert nothing.returncode == 1 and f"no checkpoints in {empty}" in nothing.stdout
    assert cli("verify", "--all", str(tmp_path / "missing")).returncode == 3


def test_latest_good_prints_the_newest_intact_checkpoint(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(run, 3)
    _flip(run / "ckpt-3")
    _flip(run / "ckpt-2")
    found = cli("verify", "--latest-good", str(run))
    assert (found.returncode, found.stdout) == (0, f"{run / 'ckpt-1'}\n")
    # The newer ones passed over are named, not dropped.
    assert f"skipped damaged {run / 'ckpt-3'}: DataLossError" in found.stderr
    assert f"skipped damaged {run / 'ckpt-2'}: DataLossError" in found.stderr
    report = json.loads(cli("verify", "--latest-good", str(run), "--json").stdout)
    assert report["latest_good"] == str(run / "ckpt-1")
    _flip(run / "ckpt-1")
    none = cli("verify", "--latest-good", str(run))
    assert (none.returncode, none.stdout) == (1, "")
    assert f"no intact checkpoint in {run}" in none.stderr
    two = cli("verify", "--latest-good", str(run), str(run))
    assert two.returncode == 2 and "--latest-good takes one directory" in two.stderr
    both = cli("verify", "--latest-good", "--all", str(run))
    assert both.returncode == 2


def test_latest_good_of_a_run_without_checkpoints_is_not_found_not_damaged(cli: Any, tmp_path: Path) -> None:
    # A restart script starts afresh on 3 and stops on 1: a first start must not look like a damaged run.
    empty = tmp_path / "run"
    empty.mkdir()
    fresh = cli("verify", "--latest-good", str(empty))
    assert (fresh.returncode, fresh.stdout) == (3, "")
    assert f"no checkpoints in {empty}: nothing to restore" in fresh.stderr
    assert "skipped" not in fresh.stderr
    report = json.loads(cli("verify", "--latest-good", str(empty), "--json").stdout)
    assert report["latest_good"] is None
    assert cli("verify", "--latest-good", str(tmp_path / "missing")).returncode == 3
    _run(empty, 1)
    _flip(empty / "ckpt-1")
    assert cli("verify", "--latest-good", str(empty)).returncode == 1


def test_latest_good_of_a_run_whose_checkpoints_are_gone_is_a_lost_run_not_a_first_start(
    cli: Any, tmp_path: Path
) -> None:
    # A restart script would start afresh on 3: traces of a run (its state file, a save's leftovers) make it 1.
    run = tmp_path / "run"
    _run(run, 2)
    for index in run.glob("*.index"):
        index.unlink()  # the data files stay: leftovers, and the state file still names the checkpoints
    lost = cli("verify", "--latest-good", str(run))
    assert (lost.returncode, lost.stdout) == (1, "") and f"no intact checkpoint in {run}" in lost.stderr
    (run / "checkpoint").unlink()
    assert cli("verify", "--latest-good", str(run)).returncode == 1  # the data files alone still tell
    for data in run.glob("*.data-*"):
        data.unlink()
    assert cli("verify", "--latest-good", str(run)).returncode == 3
