"""Async saves with a coordinator: each rank writes in the background, the commit waits for every rank."""

from __future__ import annotations

from pathlib import Path

import pytest
from ranks import Ranks, needs_torch

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]


def test_async_manager_saves_on_two_ranks_hold_the_values_of_their_save_calls(torch2: Ranks, tmp_path: Path) -> None:
    directory = str(tmp_path / "run")
    out = torch2.values("async_manager_run", directory=directory, saves=3)
    assert all(o == out[0] for o in out), out
    assert out[0]["paths"] == [f"{directory}/ckpt-{i}" for i in (1, 2, 3)]
    assert out[0]["checkpoints"] == [f"{directory}/ckpt-2", f"{directory}/ckpt-3"]
    assert out[0]["latest"] == f"{directory}/ckpt-3" == tp.latest_checkpoint(directory)
    assert out[0]["steps"] == [101, 102]  # never the -1 assigned while each save was written


def test_async_saves_and_coordinated_preemption_checks_share_one_torch_coordinator(
    torch2: Ranks, tmp_path: Path
) -> None:
    # torch's store client serves one request at a time: a check's wait in the main thread must not hold
    # up the writer thread's save collectives (every rank timed out while they shared one client).
    directory = str(tmp_path / "run")
    out = torch2.values("async_saves_with_preemption_checks", directory=directory, steps=4)
    assert all(o == out[0] for o in out), out
    assert out[0]["checkpoints"] == [f"{directory}/ckpt-3", f"{directory}/ckpt-4"]
    assert out[0]["step"] == 3


def test_with_async_when_busy_raise_every_rank_skips_the_same_saves(torch2: Ranks, tmp_path: Path) -> None:
    # Each rank deciding "busy" alone made rank 0 start saves rank 1 skipped: every later save timed out.
    directory = str(tmp_path / "run")
    out = torch2.values("async_saves_when_busy_raise", directory=directory, steps=25)
    assert out[0] == out[1], out
    assert out[0]["skipped"] and len(out[0]["started"]) >= 2  # some saves were refused, on both ranks alike


def test_copies_of_values_another_rank_writes_are_released_once_the_save_is_planned(
    torch2: Ranks, tmp_path: Path
) -> None:
    # Four arrays both ranks hold alike: each rank copies all four when write() is called (the plan comes
    # later), but writes two; the copies of the other two are freed as soon as the plan says so.
    prefix = str(tmp_path / "ckpt")
    out = torch2.values("async_share_cases:replicated_copies_while_writing", prefix=prefix, values=4, size=1000)
    for o in out:
        assert o["copied"] == 4 * 8000, out
        assert o["held_while_writing"] == 2 * 8000, out
    reader = tp.load_checkpoint(prefix)
    for i in range(4):
        assert reader.get_tensor(f"model/t{i}/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [float(i)] * 1000
