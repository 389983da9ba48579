"""``ls`` shows the metrics a CheckpointManager stored, and flags checkpoints the state file does not list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import trackpoint as tp
from trackpoint.manager import METRICS_KEY
from trackpoint.storage import WriteItem


def test_ls_shows_the_metrics_of_each_checkpoint(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpt = tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32)))
    with tp.CheckpointManager(ckpt, str(run), max_to_keep=3, best_fn=lambda m: -m["loss"]) as manager:
        manager.save(metrics={"loss": 0.5})
        manager.save()  # without metrics
    listing = cli("ls", str(run))
    assert listing.returncode == 0, listing.stderr
    header, first, second = listing.stdout.splitlines()
    assert header.split() == ["checkpoint", "number", "time", "(UTC)", "tensors", "size", "format", "metrics"]
    assert first.split()[-2:] == ['{"loss":', "0.5}"]
    assert second.split()[-2:] == ["-", "latest"]
    rows = json.loads(cli("ls", str(run), "--json").stdout)["checkpoints"]
    assert [(r["metrics"], r["metrics_error"]) for r in rows] == [({"loss": 0.5}, None), (None, None)]
    # The metrics are no tensor of the checkpoint's objects: verify counts them among the tensors it checks.
    assert rows[0]["tensors"] == 2
    assert json.loads(cli("verify", str(run / "ckpt-1"), "--json").stdout)["checkpoints"][0]["tensors"] == 3


def test_unreadable_metrics_leave_the_checkpoint_listed(cli: Any, tmp_path: Path) -> None:
    ckpt = tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32)))
    garbage = np.empty((), dtype=object)
    garbage[()] = b"{not json"
    ckpt._write_with(str(tmp_path / "run" / "ckpt-1"), None, [WriteItem(METRICS_KEY, garbage)], started=0.0)
    listing = cli("ls", str(tmp_path / "run"), "--json")
    assert listing.returncode == 0, listing.stderr
    (row,) = json.loads(listing.stdout)["checkpoints"]
    assert (row["status"], row["metrics"], row["metrics_error"]["error"]) == ("ok", None, "JSONDecodeError")
    assert "metrics unreadable: JSONDecodeError" in cli("ls", str(tmp_path / "run")).stdout


def test_ls_flags_checkpoints_the_state_file_does_not_list(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    hours = [0.0]

    def clock() -> float:
        hours[0] += 0.6
        return 1_700_000_000.0 + hours[0] * 3600

    ckpt = tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32)))
    with tp.CheckpointManager(ckpt, str(run), max_to_keep=1, keep_checkpoint_every_n_hours=1, clock=clock) as m:
        for _ in range(4):
            m.save()
        kept = {Path(p).name for p in m.checkpoints}
    # A plain write of another series, which no state file lists: not of the manager's series, not flagged.
    tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32))).write(str(run / "plain-7"))
    rows = json.loads(cli("ls", str(run), "--json").stdout)["checkpoints"]
    flagged = {Path(r["prefix"]).name: r["unlisted"] for r in rows}
    preserved = {n for n in flagged if n.startswith("ckpt-") and n not in kept}
    assert preserved, "keep_checkpoint_every_n_hours preserved none: the test shows nothing"
    assert flagged == {**{n: True for n in preserved}, **{n: False for n in kept}, "plain-7": False}
    text = cli("ls", str(run)).stdout
    for line in text.splitlines()[1:]:
        assert line.endswith("unlisted") == (line.split()[0] in preserved), line
