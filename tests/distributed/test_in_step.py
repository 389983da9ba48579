"""Each coordinated operation's collectives live in a namespace of its own: a rank that falls behind stays in step.

A rank that reaches a save after the others gave up waiting for it must fail that save at
once with a trackpoint error (not take part in it, nor pair its messages with the next
save's), and the next save must then work on every rank.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ranks import Ranks, needs_jax, needs_torch

pytestmark = pytest.mark.xdist_group("ranks")

SIZES = [300, 20]
TIMEOUT = 3.0
DELAY = TIMEOUT + 2.0  # rank 1 reaches the first save's planning step this much after rank 0


@pytest.mark.parametrize(
    ("group", "late"),
    [
        pytest.param("torch2", 1, marks=needs_torch),
        pytest.param("torch2", 0, marks=needs_torch),
        # JAX's coordination service: its non-overwriting insert records each all-gather's ending.
        pytest.param("jax2", 1, marks=needs_jax),
    ],
)
def test_a_rank_late_to_the_planning_step_fails_that_save_and_the_next_save_works(
    group: str, late: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ranks: Ranks = request.getfixturevalue(group)
    prefix = f"{tmp_path}/ckpt"
    results = ranks.values("write_late_then_again", prefix=prefix, late=late, delay=DELAY, sizes=SIZES, timeout=TIMEOUT)
    waiting, arriving = results[1 - late][0], results[late][0]
    # The rank that waited gave up at the planning step; the late one learned that as it arrived.
    assert [waiting[0], arriving[0]] == ["CoordinationTimeoutError", "CoordinationTimeoutError"], results
    assert f"saving {prefix!r}: the planning step failed on rank {1 - late}" in waiting[1]
    assert f"time-out {TIMEOUT:g} s" in waiting[1]
    assert f"saving {prefix!r}: the planning step failed on rank {late}" in arriving[1]
    assert f"after rank {1 - late} gave up waiting for it" in arriving[1]
    assert "the next operation starts in step on every rank" in arriving[1]
    # The ranks are in step again: the second save is one save on both, and holds the second model.
    assert [r[1] for r in results] == [["ok", prefix], ["ok", prefix]], results
    assert ranks.values("read", prefix=prefix, sizes=SIZES, seed=2) == [True, True]
