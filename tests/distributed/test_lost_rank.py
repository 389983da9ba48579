"""A rank killed right after it sent its part of a coordinated save, on a real torch.distributed group of 3.

The survivors must learn it within about one time-out, say which rank they wait for while they wait,
and fail naming it and the step (when the save cannot be committed) or return the committed checkpoint
without waiting for the dead rank once per operation (when its last message was already in).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ranks import Ranks, needs_torch

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]

CASE = "lost_rank_cases:manager_save_then_die"


def _stored_step(prefix: str) -> int:
    return int(tp.load_variable(prefix, "model/step/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow  # a group of its own (a rank dies): about 15 s to start on 2 CPUs
def test_a_rank_killed_after_its_plan_fails_the_save_on_the_others_naming_it_and_the_step(tmp_path: Path) -> None:
    timeout = 2.0
    directory = str(tmp_path / "run")
    with Ranks(3, "torch") as group:
        results = group.run(CASE, directory=directory, dying=2, after="planning", timeout=timeout)
    assert results[2].error is not None and results[2].error[0] == "died"
    for result in results[:2]:
        out = result.unwrap()
        kind, message = out["outcome"]
        assert kind == "CoordinationTimeoutError", out
        # The rank awaited and the step, not "another rank".
        assert f"the writing step failed on rank {result.rank}" in message, message
        assert "waited" in message and "for the contribution of rank 2 to" in message, message
        assert "rank 2 has died, hangs or is slower than the time-out" in message, message
        # Detected within about one time-out (the wait for the written shards), not two.
        assert out["elapsed"] < timeout + 1.5, out["elapsed"]
        # While waiting, each survivor said what it waits for, and for how long so far.
        waiting = [m for m in out["logged"] if "is waiting for the contribution of rank 2" in m]
        assert waiting and all(m.startswith("WARNING: ") for m in waiting), out["logged"]
        assert "the writing step of saving" in waiting[0] and f"s of {timeout:g} s)" in waiting[0], waiting
        assert out["checkpoints"] == [out["first"]]
    # Nothing of the failed save is visible; the earlier checkpoint is intact and still the latest.
    first = f"{directory}/ckpt-1"
    assert tp.latest_checkpoint(directory) == first
    assert not (tmp_path / "run" / "ckpt-2.index").exists()
    assert _stored_step(first) == 1
    stored = tp.load_variable(first, "model/w/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(stored, np.full(64, 1, np.float32))


@pytest.mark.slow  # a group of its own (a rank dies)
def test_a_rank_killed_after_its_last_message_holds_rank_0_up_once_and_briefly(tmp_path: Path) -> None:
    timeout = 4.0
    directory = str(tmp_path / "run")
    with Ranks(3, "torch") as group:
        results = group.run(CASE, directory=directory, dying=2, after="writing", timeout=timeout)
    assert results[2].error is not None and results[2].error[0] == "died"
    # Every rank's shards were written and reported before rank 2 died: the checkpoint is whole, committed,
    # and recorded in the state file by rank 0; both survivors return it.
    second = f"{directory}/ckpt-2"
    rank0, rank1 = (result.unwrap() for result in results[:2])
    for out in (rank0, rank1):
        assert out["outcome"] == ["saved", second], out
        assert out["checkpoints"] == [f"{directory}/ckpt-1", second]
    assert tp.latest_checkpoint(directory) == second and _stored_step(second) == 2
    # Rank 0 waited for rank 2's confirmation that it read the outcome at most half the time-out, once: not
    # a time-out for the save and another for its state-file step.
    assert rank0["elapsed"] < 0.8 * timeout, rank0["elapsed"]
    gone = [m for m in rank0["logged"] if "without confirmation from rank 2" in m]
    assert len(gone) == 1 and gone[0].startswith("WARNING: ") and "save operation" in gone[0], rank0["logged"]
    # That one warning names the rank; the wait for the confirmation logs nothing each quarter on top of it.
    assert not any("to confirm reading the outcome" in m for m in rank0["logged"]), rank0["logged"]
