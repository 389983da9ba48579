"""One commit decision per save, recorded with the coordinator's set_if_absent: every rank follows it.

A rank slower than the time-out makes another rank give up; whichever rank that is,
every rank must then report the same outcome and nothing of the save may be visible.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from ranks import Ranks, needs_jax, needs_torch

import trackpoint as tp

pytestmark = pytest.mark.xdist_group("ranks")

SIZES = [1000, 50, 3000]
TIMEOUT = 4.0
DELAY = TIMEOUT + 1.5  # a slowed rank is this much later than the others


def _stored(prefix: str) -> list[np.ndarray]:
    reader = tp.load_checkpoint(prefix)
    return [reader.get_tensor(f"model/v{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(len(SIZES))]


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@needs_torch
def test_torch_set_if_absent_keeps_one_value_for_every_rank(torch4: Ranks) -> None:
    out = torch4.values("set_if_absent_race", key=f"race/{uuid.uuid4().hex}")
    assert all(o == out[0] for o in out), out
    assert out[0][0] in {f"rank{r}" for r in range(4)} and out[0][1] == out[0][0]


@needs_jax
def test_jax_set_if_absent_keeps_one_value_for_every_rank(jax2: Ranks) -> None:
    out = jax2.values("set_if_absent_race", key=f"race/{uuid.uuid4().hex}")
    assert out[0] == out[1] and out[0][0] in {"rank0", "rank1"} and out[0][1] == out[0][0]


def _still_in_step(group: Ranks, prefix: str) -> None:
    """After the failed save the ranks make the same collectives: a save and a restore still work."""
    assert group.values("write", prefix=prefix, sizes=SIZES, seed=3) == [prefix] * group.world_size
    assert group.values("read", prefix=prefix, sizes=SIZES, seed=3) == [True] * group.world_size


@needs_torch
@pytest.mark.slow
@pytest.mark.parametrize("slow", [0, 1])
def test_a_rank_slower_than_the_timeout_aborts_the_save_on_every_rank(torch2: Ranks, tmp_path: Path, slow: int) -> None:
    prefix = f"{tmp_path}/ckpt"
    torch2.values("write", prefix=prefix, sizes=SIZES, seed=1)
    before = _listing(tmp_path)
    results = torch2.run(
        "write_slowly", prefix=prefix, slow=slow, step="write", delay=DELAY, sizes=SIZES, seed=2, timeout=TIMEOUT
    )
    for r in results:
        assert r.error is not None and r.error[0] == "CoordinationTimeoutError", r
    if slow == 0:
        # Rank 1 gave up while rank 0 was still writing; rank 0 then found "abort" recorded and did not commit.
        assert "failed on rank 1" in results[0].error[1] and "rank 1 gave up waiting" in results[0].error[1]  # type: ignore[index]
    else:
        # Rank 0 gave up waiting for rank 1's shards; rank 1 learned it once written, and removed its pieces.
        assert "failed on rank 0" in results[1].error[1]  # type: ignore[index]
    assert _listing(tmp_path) == before, "nothing of the aborted save is left"
    rng = np.random.default_rng(1)  # the previous checkpoint's values (cases._model(1, SIZES))
    for got, n in zip(_stored(prefix), SIZES, strict=True):
        np.testing.assert_array_equal(got, rng.standard_normal(n).astype(np.float32))
    _still_in_step(torch2, prefix)


@needs_torch
@pytest.mark.slow
def test_rank_0_committing_for_longer_than_the_timeout_leaves_the_others_in_doubt(
    torch2: Ranks, tmp_path: Path
) -> None:
    # The one window the decision cannot close: rank 0 recorded "commit" and then takes longer than the
    # time-out to commit. The others cannot know whether it will, and say so instead of guessing.
    prefix = f"{tmp_path}/ckpt"
    results = torch2.run(
        "write_slowly", prefix=prefix, slow=0, step="commit", delay=DELAY, sizes=SIZES, seed=2, timeout=TIMEOUT
    )
    assert results[0].value == prefix
    assert results[1].error is not None and results[1].error[0] == "CoordinationError", results[1]
    assert "rank 0 decided to commit" in results[1].error[1] and "is unknown" in results[1].error[1]
    assert torch2.values("read", prefix=prefix, sizes=SIZES, seed=2) == [True, True]
    _still_in_step(torch2, prefix)


# ------------------------------------------------------------- the state file: rank 0's step for all
@needs_torch
def test_a_state_file_rank_0_cannot_write_fails_the_save_alike_on_every_rank(torch2: Ranks, tmp_path: Path) -> None:
    d = str(tmp_path / "run")
    out = torch2.values("manager_state_file_fails", directory=d)
    first, failed, repaired = zip(*(o["saves"] for o in out), strict=True)
    assert list(first) == [["ok", f"{d}/ckpt-1"]] * 2
    # Rank 0 could not replace the state file: both ranks raise its error class, rank 1 naming rank 0.
    assert [f[0] for f in failed] == [failed[0][0]] * 2 and failed[0][0] != "ok", failed
    assert f"recording '{d}/ckpt-2' failed on rank 0: {failed[0][0]}" in failed[1][1]
    # Every rank's manager is left as rank 0's: ckpt-2 is committed and latest, ckpt-1 still kept.
    assert out[0]["latest"] == out[1]["latest"] == [f"{d}/ckpt-1", f"{d}/ckpt-2", f"{d}/ckpt-3"]
    assert out[0]["checkpoints"] == out[1]["checkpoints"]
    # Repaired, the next save records on every rank again.
    assert list(repaired) == [["ok", f"{d}/ckpt-3"]] * 2
    assert tp.latest_checkpoint(d) == f"{d}/ckpt-3"


@needs_torch
@pytest.mark.slow
def test_rank_0_late_to_the_state_file_step_fails_it_on_every_rank_not_only_the_others(
    torch2: Ranks, tmp_path: Path
) -> None:
    # Rank 0's write callback runs between the commit and the state-file step and takes longer than the
    # time-out: rank 1 gives up first, so rank 0 must not record the checkpoint and both ranks must raise.
    d = str(tmp_path / "run")
    out = torch2.values("manager_rank0_late_to_record", directory=d, delay=DELAY, timeout=TIMEOUT)
    saves = [o["saves"] for o in out]
    assert [s[0] for s in saves] == [["ok", f"{d}/ckpt-1"]] * 2
    assert [s[1][0] for s in saves] == ["CoordinationTimeoutError"] * 2, saves
    for s in saves:
        assert f"recording '{d}/ckpt-2': rank 1 gave up waiting for rank 0 to begin it" in s[1][1]
        assert "it was not done on any rank" in s[1][1]
    assert out[0]["latest"][:2] == out[1]["latest"][:2] == [f"{d}/ckpt-1", f"{d}/ckpt-1"]
    # The ranks stay in step: the next save is recorded on both.
    assert [s[2] for s in saves] == [["ok", f"{d}/ckpt-3"]] * 2
    assert tp.latest_checkpoint(d) == f"{d}/ckpt-3"
