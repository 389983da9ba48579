"""``verify --all`` and ``verify --latest-good``: every checkpoint of a directory, and the newest intact one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.storage import CheckpointOptions, ShardSpec, WriteItem


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


def _crash_first_save(directory: Path, backend: str | None = None) -> None:
    """What a job killed during its first save leaves: a save begun and written, never committed."""
    prefix = str(directory / "ckpt-1")
    store = tp.plugins.open_backend(prefix, CheckpointOptions(backend=backend))
    try:
        store.begin(prefix, "killed")
        store.write_shard(prefix, ShardSpec(0, 1, "killed"), [WriteItem("w", np.zeros(3, np.float32))])
    finally:
        store.close()


@pytest.mark.parametrize("backend", [None, "zarr"])
def test_latest_good_after_a_crash_during_the_first_save_is_a_first_start(
    cli: Any, tmp_path: Path, backend: str | None
) -> None:
    # Nothing ever committed, so nothing can be lost: the restart script of docs/cli.md must start afresh (3),
    # not give up (1). stderr says what is there and what removes it.
    run = tmp_path / "run"
    _crash_first_save(run, backend)
    assert json.loads(cli("ls", "--all", str(run), "--json").stdout)["leftovers"]
    fresh = cli("verify", "--latest-good", str(run))
    assert (fresh.returncode, fresh.stdout) == (3, ""), fresh.stderr
    assert fresh.stderr.splitlines() == [
        f"trackpoint verify: no checkpoints in {run}: nothing to restore",
        f"trackpoint verify: {run} holds leftovers of an interrupted save, which never committed: "
        f"`trackpoint cleanup {run}` removes them once older than the age guard (--min-age 0 at once, if no save "
        "is running), as the next CheckpointManager opened there does",
    ]
    # With a state file, the run had committed checkpoints once: a lost run still.
    (run / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    lost = cli("verify", "--latest-good", str(run))
    assert lost.returncode == 1 and f"no intact checkpoint in {run}" in lost.stderr


def test_latest_good_with_a_crashed_save_beside_checkpoints_of_another_format_is_a_lost_run(
    cli: Any, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    _crash_first_save(run)
    tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32))).write(
        str(run / "ckpt-2"), tp.CheckpointOptions(backend="zarr")
    )
    lost = cli("verify", "--latest-good", str(run), "--backend", "bundle")
    assert lost.returncode == 1 and f"no intact checkpoint in {run}" in lost.stderr
