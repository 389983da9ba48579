"""Saves and restores by a real jax.distributed job of two CPU processes (JAX's coordination service)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ranks import Ranks, needs_jax

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
