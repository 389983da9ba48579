"""A coordinated ``CheckpointManager`` with ``best_fn``: rank 0 ranks by what the checkpoint holds; all adopt."""

from __future__ import annotations

from pathlib import Path

import pytest
from ranks import Ranks, needs_torch

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]


def test_every_rank_retains_the_same_best_checkpoints_whichever_ranks_give_the_metrics(
    torch2: Ranks, tmp_path: Path
) -> None:
    directory = str(tmp_path / "run")
    out = torch2.values("manager_metrics_cases:best_by_metrics", directory=directory)
    assert out[0] == out[1], out
    report = out[0]
    # 0.1 (ckpt-2, given on rank 0) and 0.2 (ckpt-3, given on rank 1 alone) are the best; ckpt-4 the newest.
    assert report["checkpoints"] == [f"{directory}/ckpt-{n}" for n in (2, 3, 4)]
    assert report["metrics"] == [{"loss": 0.1}, {"loss": 0.2}, {"loss": 0.9}]
    assert report["best"] == report["reopened_best"] == f"{directory}/ckpt-2"
    assert report["refused"] == "CoordinationError"  # the ranks gave different metrics: nothing saved
    # Its advice: one value per checkpoint (averaged, or given on rank 0), not a partitioned value.
    assert report["advice"] == [True, True, False]
    assert report["steps"] == [9, 10, 11]  # the model starts at step 7; each save is the values of its call


def test_metrics_given_on_any_one_rank_are_reported_on_every_rank_without_best_fn(
    torch2: Ranks, tmp_path: Path
) -> None:
    out = torch2.values("manager_metrics_cases:metrics_without_best_fn", directory=str(tmp_path / "run"))
    # Given on rank 1 alone, on rank 0 alone, on none: rank 0 does not take "not given here" for "none".
    expected = {"metrics": [{"loss": 0.25}, {"loss": 0.5}, None], "best": True}
    assert out == [expected, expected], out
