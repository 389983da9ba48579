"""Saves and restores by a real jax.distributed job of two CPU processes (JAX's coordination service)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from ranks import Ranks, Result, needs_jax

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_jax]

SIZES = [1000, 50, 3000, 7]


def test_coordinator_collectives(jax2: Ranks) -> None:
    assert jax2.values("identity") == [[0, 2], [1, 2]]
    out = jax2.values("collectives")
    assert out[0] == out[1]
    assert out[0]["gathered"] == ["rank0", "rank1rank1"]
    assert bytes.fromhex(out[0]["sent"]) == b"\x00from-root\xff"
    assert out[0]["from_last"] == "last" and out[0]["big"] == [True, True]


def test_a_missing_process_times_out_instead_of_hanging(jax2: Ranks) -> None:
    start = time.monotonic()
    results = jax2.run("late_rank", absent=0, timeout=1.0)
    assert time.monotonic() - start < 20
    assert results[1].error is not None and results[1].error[0] == "CoordinationTimeoutError", results[1]
    assert results[0].value == "late"


def test_save_restore_and_failure(jax2: Ranks, tmp_path: Path) -> None:
    out = jax2.values("save_and_restore", directory=str(tmp_path), sizes=SIZES)
    assert out[0] == out[1] and out[0]["same"] and out[0]["path"] == f"{tmp_path}/ckpt-1"
    results = jax2.run("write_then_fail", prefix=out[0]["path"], failing=0, sizes=SIZES, seed=2)
    assert [r.error[0] if r.error else None for r in results] == ["StorageError", "StorageError"]
    assert "failed on rank 0" in results[1].error[1]  # type: ignore[index]
    assert jax2.values("read", prefix=out[0]["path"], sizes=SIZES, seed=1) == [True, True]


def test_manager(jax2: Ranks, tmp_path: Path) -> None:
    d = str(tmp_path / "run")
    out = jax2.values("manager_run", directory=d, saves=2, max_to_keep=1)
    assert out[0] == out[1] and out[0]["checkpoints"] == [f"{d}/ckpt-2"]


# ------------------------------------------------------------------ a process killed mid-save
# JAX's coordination service watches heartbeats: heartbeat_timeout_seconds after a process stops sending
# them, it ends every other process with SIGABRT, unless jax_enable_recoverability is on; when process 0,
# which runs the service, dies, the others lose the service and JAX ends them at once either way.
HEARTBEAT = 4
TIMEOUT = 2.0


def _files(directory: Path) -> dict[str, bytes]:
    """The committed checkpoint's files (what a reader sees), by name; staging directories left out."""
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def _killed_mid_save(tmp_path: Path, dying: int, recoverable: bool) -> tuple[Ranks, list[Result], float]:
    env = {"TP_TEST_JAX_HEARTBEAT": str(HEARTBEAT), "TP_TEST_JAX_RECOVERABLE": "1" if recoverable else "0"}
    group = Ranks(2, "jax", env=env)
    prefix = f"{tmp_path}/ckpt"
    try:
        group.values("write", prefix=prefix, sizes=SIZES, seed=1)
        before = _files(tmp_path)
        start = time.monotonic()
        results = group.run("write_and_die", prefix=prefix, dying=dying, sizes=SIZES, seed=2, timeout=TIMEOUT)
        elapsed = time.monotonic() - start
        # Whatever happened to the survivor, the previous checkpoint is intact and nothing new is visible.
        assert _files(tmp_path) == before
        assert tp.load_checkpoint(prefix).get_tensor("model/v0/.ATTRIBUTES/VARIABLE_VALUE").shape == (SIZES[0],)
    except BaseException:
        group.close()
        raise
    return group, results, elapsed


@pytest.mark.slow
@pytest.mark.parametrize("recoverable", [False, True], ids=["default", "recoverable"])
def test_a_process_killed_mid_save_fails_the_other_within_the_timeout(tmp_path: Path, recoverable: bool) -> None:
    group, results, elapsed = _killed_mid_save(tmp_path, dying=1, recoverable=recoverable)
    with group:
        assert results[1].error is not None and results[1].error[0] == "died"
        assert results[0].error is not None and results[0].error[0] == "CoordinationTimeoutError", results[0]
        # The survivor names the step and the process it waited for.
        assert "the writing step failed on rank 0" in results[0].error[1], results[0]
        assert "for the contribution of rank 1 to" in results[0].error[1], results[0]
        assert results[0].elapsed < TIMEOUT + 3.0 and elapsed < 15
        survivor = group.procs[0]
        if recoverable:
            # With jax_enable_recoverability the survivor outlives the heartbeat time-out and keeps working.
            time.sleep(HEARTBEAT + 2)
            assert survivor.poll() is None
            assert group.values("identity", ranks=[0]) == [[0, 2]]
        else:
            # JAX's default: the heartbeat time-out after the death, the survivor is ended with SIGABRT.
            assert survivor.wait(HEARTBEAT + 30) == -signal.SIGABRT


@pytest.mark.slow
def test_process_0_killed_mid_save_takes_the_coordination_service_with_it(tmp_path: Path) -> None:
    group, results, _ = _killed_mid_save(tmp_path, dying=0, recoverable=True)
    with group:
        assert results[0].error is not None and results[0].error[0] == "died"
        error = results[1].error
        assert error is not None
        # Process 1 raises CoordinationError (the service is gone) unless JAX ends it first; it ends it anyway.
        assert error[0] in ("CoordinationError", "died"), error
        if error[0] == "CoordinationError":
            assert "coordination service" in error[1]
        assert group.procs[1].wait(30) == -signal.SIGABRT


def test_async_saves_and_coordinated_preemption_checks_share_one_coordinator(jax2: Ranks, tmp_path: Path) -> None:
    directory = str(tmp_path / "run")
    out = jax2.values("async_saves_with_preemption_checks", directory=directory, steps=3)
    assert all(o == out[0] for o in out), out
    assert out[0]["checkpoints"] == [f"{directory}/ckpt-2", f"{directory}/ckpt-3"] and out[0]["step"] == 2


def test_a_global_array_replicated_over_the_processes_is_saved(jax2: Ranks, tmp_path: Path) -> None:
    out = jax2.values("jax_global_arrays", directory=str(tmp_path))
    for rank in out:
        assert rank["fully_addressable"] is False  # each process holds its copy only: a global array
        assert rank["values"] == [float(i) for i in range(8)] and rank["same_sharding"] is True
