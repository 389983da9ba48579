"""Saves and restores by real torch.distributed process groups (gloo on 127.0.0.1), on local disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from ranks import Ranks, needs_torch

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]

SIZES = [1000, 50, 3000, 7, 20000, 1]


def _expected(seed: int, sizes: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) for n in sizes]


def _stored(prefix: str, sizes: list[int]) -> list[np.ndarray]:
    reader = tp.load_checkpoint(prefix)
    return [reader.get_tensor(f"model/v{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(len(sizes))]


def test_coordinator_collectives(torch2: Ranks) -> None:
    assert torch2.values("identity") == [[0, 2], [1, 2]]
    out = torch2.values("collectives")
    assert out[0] == out[1]
    assert out[0]["gathered"] == ["rank0", "rank1rank1"]
    assert bytes.fromhex(out[0]["sent"]) == b"\x00from-root\xff"
    assert out[0]["from_last"] == "last"
    assert out[0]["big"] == [True, True]


def test_a_missing_rank_times_out_instead_of_hanging(torch2: Ranks) -> None:
    start = time.monotonic()
    # Rank 1 joins only after the others gave up, which keeps the group usable for later tests.
    results = torch2.run("late_rank", absent=1, timeout=1.0)
    assert time.monotonic() - start < 20
    assert results[0].error is not None and results[0].error[0] == "CoordinationTimeoutError"
    assert "waited" in results[0].error[1] and "time-out 1 s" in results[0].error[1]
    assert results[1].value == "late"


@pytest.mark.parametrize("ranks", ["torch2", "torch4"])
def test_replicated_save_and_restore(ranks: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    group: Ranks = request.getfixturevalue(ranks)
    out = group.values("save_and_restore", directory=str(tmp_path), sizes=SIZES)
    assert all(o == out[0] for o in out), out
    assert out[0]["path"] == f"{tmp_path}/ckpt-1" and out[0]["latest"] == out[0]["path"]
    assert out[0]["same"] and out[0]["step"] == 1
    # Written once: the data files hold every value once, TensorFlow's layout, readable in one process.
    for got, want in zip(_stored(out[0]["path"], SIZES), _expected(1, SIZES), strict=True):
        np.testing.assert_array_equal(got, want)
    data = sorted(tmp_path.glob("ckpt-1.data-*"))
    assert sum(p.stat().st_size for p in data) < 4 * sum(SIZES) + 2000
    assert not list(tmp_path.glob("*_temp"))


def test_replicated_bytes_are_spread_over_the_ranks(torch4: Ranks, tmp_path: Path) -> None:
    sizes = [4000] * 8
    torch4.values("write", prefix=f"{tmp_path}/even", sizes=sizes, seed=3)
    # One data file per rank (each rank's share fits one shard per writer), each holding 2 of the 8 tensors.
    index = tp.load_checkpoint(f"{tmp_path}/even")
    assert index.get_tensor("model/v7/.ATTRIBUTES/VARIABLE_VALUE").shape == (4000,)
    sizes_on_disk = sorted(p.stat().st_size for p in tmp_path.glob("even.data-*") if p.stat().st_size)
    biggest = max(sizes_on_disk)
    assert sum(sizes_on_disk) >= 8 * 16000
    # No rank wrote more than its quarter plus the small values and the object graph.
    assert biggest <= 2 * 16000 + 2000, sizes_on_disk


def test_a_failing_rank_fails_every_rank_and_keeps_the_previous_checkpoint(torch4: Ranks, tmp_path: Path) -> None:
    prefix = f"{tmp_path}/ckpt"
    torch4.values("write", prefix=prefix, sizes=SIZES, seed=1)
    results = torch4.run("write_then_fail", prefix=prefix, failing=2, sizes=SIZES, seed=2)
    assert results[2].error is not None and results[2].error[0] == "StorageError"
    for r in (0, 1, 3):
        error = results[r].error
        assert error is not None and error[0] == "StorageError", results[r]
        assert "failed on rank 2" in error[1] and "disk full" in error[1]
    for got, want in zip(_stored(prefix, SIZES), _expected(1, SIZES), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not list(tmp_path.glob("*_temp")), "the failed save's pieces were removed"
    # The group is still usable, and a later save replaces the checkpoint.
    assert torch4.values("write", prefix=prefix, sizes=SIZES, seed=3) == [prefix] * 4
    assert torch4.values("read", prefix=prefix, sizes=SIZES, seed=3) == [True] * 4


def test_ranks_saving_different_paths_fail_together(torch2: Ranks, tmp_path: Path) -> None:
    results = torch2.run("different_paths", directory=str(tmp_path))
    for r in results:
        assert r.error is not None and r.error[0] == "CoordinationError"
        assert "ranks save different checkpoints" in r.error[1]
    assert tp.latest_checkpoint(str(tmp_path)) is None and not list(tmp_path.glob("rank*.index"))


def test_replicated_values_must_agree(torch2: Ranks, tmp_path: Path) -> None:
    results = torch2.run("mismatched", prefix=f"{tmp_path}/ckpt")
    for r in results:
        assert r.error is not None and r.error[0] == "CoordinationError"
        assert "disagree on it" in r.error[1] and "model/v0" in r.error[1]
    assert not list(tmp_path.glob("ckpt*"))


def test_a_restore_failing_on_one_rank_fails_on_every_rank(torch2: Ranks, tmp_path: Path) -> None:
    torch2.values("write", prefix=f"{tmp_path}/ckpt-1", sizes=[4], seed=1)
    results = torch2.run("restore_not_fitting_on_one_rank", directory=str(tmp_path))
    assert results[1].error is not None and results[1].error[0] == "ShapeMismatchError"
    assert results[0].error is not None and results[0].error[0] == "ShapeMismatchError"
    assert "failed on rank 1" in results[0].error[1]


def test_manager_numbering_and_retention_across_ranks(torch4: Ranks, tmp_path: Path) -> None:
    directory = str(tmp_path / "run")
    first = torch4.values("manager_run", directory=directory, saves=3, max_to_keep=2)
    assert all(o == first[0] for o in first), first
    assert first[0]["restored"] is None
    assert first[0]["paths"] == [f"{directory}/ckpt-{i}" for i in (1, 2, 3)]
    assert first[0]["checkpoints"] == [f"{directory}/ckpt-2", f"{directory}/ckpt-3"]
    assert sorted(p.name for p in (tmp_path / "run").glob("*.index")) == ["ckpt-2.index", "ckpt-3.index"]
    # A restart: every rank resumes from ckpt-3 and continues the numbering.
    again = torch4.values("manager_run", directory=directory, saves=1, max_to_keep=2)
    assert all(o == again[0] for o in again), again
    assert again[0]["restored"] == f"{directory}/ckpt-3" and again[0]["step"] == 7 + 3 + 1
    assert again[0]["paths"] == [f"{directory}/ckpt-4"]
    assert again[0]["checkpoints"] == [f"{directory}/ckpt-3", f"{directory}/ckpt-4"]
    assert tp.latest_checkpoint(directory) == f"{directory}/ckpt-4"


@pytest.mark.parametrize("how", ["state_dict", "number"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_save_failing_on_one_rank_before_it_begins_fails_on_every_rank(
    torch2: Ranks, tmp_path: Path, how: str, asynchronous: bool
) -> None:
    directory = str(tmp_path / "run")
    results = torch2.values("a_rank_fails_before_its_save", directory=directory, how=how, asynchronous=asynchronous)
    for result in results:
        assert result["outcomes"][0] == "saved" and result["outcomes"][2] == "saved", results
        assert result["outcomes"][1] != "saved", results  # on every rank, not only rank 1
        # What was committed holds each step's own values: none paired with another step's.
        assert result["stored"] == {"ckpt-1": [1, 1.0], "ckpt-3": [3, 3.0]}, results


def test_ranks_restoring_different_checkpoints_are_refused_on_every_rank(torch2: Ranks, tmp_path: Path) -> None:
    values = torch2.values("restore_different_paths", directory=str(tmp_path))
    untouched = np.random.default_rng(3).standard_normal(4).astype(np.float32).tolist()
    assert values == [untouched, untouched]


def test_reload_gives_every_rank_rank_0s_view_of_the_directory(torch2: Ranks, tmp_path: Path) -> None:
    directory = str(tmp_path / "run")
    views = torch2.values("manager_reload", directory=directory)
    assert views[0] == views[1] == {"checkpoints": [f"{directory}/ckpt-1"], "latest": f"{directory}/ckpt-1"}


def test_delete_deletes_once_and_gives_every_rank_the_same_record(torch2: Ranks, tmp_path: Path) -> None:
    directory = str(tmp_path / "run")
    views = torch2.values("manager_delete", directory=directory)
    kept = [f"{directory}/ckpt-1", f"{directory}/ckpt-2"]
    assert views[0] == views[1] == {"checkpoints": kept, "latest": kept[-1]}
    assert sorted(n for n in os.listdir(directory) if n.endswith(".index")) == ["ckpt-1.index", "ckpt-2.index"]


@pytest.mark.slow
def test_a_rank_killed_mid_save_fails_the_others_within_the_timeout(tmp_path: Path) -> None:
    prefix = f"{tmp_path}/ckpt"
    with Ranks(2, "torch") as group:
        group.values("write", prefix=prefix, sizes=SIZES, seed=1)
        start = time.monotonic()
        results = group.run("write_and_die", prefix=prefix, dying=1, sizes=SIZES, seed=2, timeout=3.0)
        elapsed = time.monotonic() - start
    assert results[1].error is not None and results[1].error[0] == "died"
    assert results[0].error is not None and results[0].error[0] == "CoordinationTimeoutError", results[0]
    assert results[0].elapsed < 3.0 + 5.0 and elapsed < 20
    # The previous checkpoint is intact and nothing of the killed save is visible.
    for got, want in zip(_stored(prefix, SIZES), _expected(1, SIZES), strict=True):
        np.testing.assert_array_equal(got, want)
    assert tp.latest_checkpoint(str(tmp_path)) is None  # ckpt was written with write(): no state file
    assert not list(tmp_path.glob("ckpt.data-*-of-00004")), "no data file of the killed save is visible"


def test_a_coordinated_save_in_another_format_over_the_urls_own_is_refused_on_every_rank(
    torch2: Ranks, tmp_path: Path
) -> None:
    # Readers without options ask the bundle first: a zarr save at a bundle's prefix would be hidden.
    prefix = f"{tmp_path}/ckpt-1"
    tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(prefix)
    before = sorted(os.listdir(tmp_path))
    results = torch2.run("write", prefix=prefix, sizes=[4], seed=1, backend="zarr")
    for r in results:
        assert r.error is not None and r.error[0] == "CheckpointExistsError", r
    assert "a bundle checkpoint is committed there" in results[0].error[1]
    assert "failed on rank 0" in results[1].error[1]
    assert sorted(os.listdir(tmp_path)) == before
