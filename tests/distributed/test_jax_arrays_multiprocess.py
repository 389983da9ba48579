"""JAX arrays spread over the processes of a real jax.distributed job: saved as parts, restored N -> M.

Two processes with two CPU devices each form a global mesh of 4 devices (jax's CPU backend joins the
processes' devices once ``jax.distributed.initialize`` ran). Each process writes the distinct parts of each
array it holds the first copy of, the commit merges them into one ordinary tensor, and a restore reads only
the parts this process's devices need, into any sharding, on 2 processes or 1. The cases run in
jax_array_cases.py; every value is checked bit for bit against the known data it was made from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jax_array_cases import FIRST_COPIES, SAVED, key, saved_values
from ranks import HERE, Ranks, needs_jax

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_jax]

DEVICES_PER_PROCESS = 2


@pytest.fixture(scope="module")
def grid() -> Iterator[Ranks]:
    """Two jax.distributed processes of 2 CPU devices each: a global mesh of 4 devices."""
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"}
    with Ranks(2, "jax", env=env) as ranks:
        yield ranks


def _save(grid: Ranks, tmp_path: Path) -> list[dict[str, Any]]:
    prefix = f"{tmp_path}/ckpt"
    out: list[dict[str, Any]] = grid.values("jax_array_cases:save_spread", prefix=prefix)
    assert [o["path"] for o in out] == [prefix, prefix]
    return out


def _stored(prefix: str, names: list[str]) -> None:
    """The checkpoint holds each array as one whole tensor, bit for bit the data it was made from."""
    reader = tp.load_checkpoint(prefix)
    values = saved_values()
    for name in names:
        stored = reader.get_tensor(key(name))
        assert stored.dtype == values[name].dtype and stored.shape == values[name].shape, name
        assert stored.tobytes() == values[name].tobytes(), name


def test_each_part_is_written_once_by_one_process_into_one_tensor(grid: Ranks, tmp_path: Path) -> None:
    out = _save(grid, tmp_path)
    spread = {name: bool(spec) for name, (_, _, spec) in SAVED.items()}  # all but the replicated one
    assert [o["spread"] for o in out] == [spread, spread]
    _stored(f"{tmp_path}/ckpt", list(SAVED))
    # Each process wrote the parts it holds the first copy of: a part copied on several devices or processes
    # (rows on both devices of a process, cols on both processes) once. What remains is the replicated array
    # (8 KiB, a plain value written by one process) and the object graph (written once, a few hundred bytes).
    written = [o["written"] for o in out]
    total = sum(values.nbytes for values in saved_values().values())
    assert total <= sum(written) < total + 4096, written
    for rank, bytes_written in enumerate(written):
        own = sum(parts[rank] for parts in FIRST_COPIES.values())
        assert own <= bytes_written < own + 8192 + 4096, (rank, written)
    # Each process copies off its devices only what it writes: the replicated array on one process alone.
    assert sum(o["gathered"] for o in out) == total, [o["gathered"] for o in out]


def test_a_restore_reads_only_what_this_process_devices_hold_on_another_mesh(grid: Ranks, tmp_path: Path) -> None:
    _save(grid, tmp_path)
    layouts = {
        "rows": ("grid", ("x", "y"), "float32"),  # rows saved, blocks restored
        "blocks": ("reversed", ("d",), "float32"),  # another mesh: process 1's devices hold the first rows
        "cols": ("grid", ("y",), "int32"),  # each process holds the whole array, in halves on its devices
        "flat": ("grid", ("x",), "float32"),  # bfloat16 saved, cast into the template's float32
        "replicated": ("grid", (("x", "y"),), "float32"),  # a plain value restored into parts
    }
    outs = grid.values("jax_array_cases:restore_spread", prefix=f"{tmp_path}/ckpt", layouts=layouts)
    for rank, out in enumerate(outs):
        assert out["problems"] == dict.fromkeys(layouts), rank
        # The union of this process's parts: half of each array (4 KiB) but cols, all of whose 8 KiB it holds.
        assert out["needed"] == 4 * 4096 + 8192, out
        assert out["needed"] <= out["read"] <= 1.1 * out["needed"], (rank, out)


def test_shards_that_interleave_across_processes_are_read_as_the_block_around_them(grid: Ranks, tmp_path: Path) -> None:
    _save(grid, tmp_path)
    # ("y", "x") puts the process axis x inside: process 0's devices hold row runs 0 and 2 of 4, process 1's 1
    # and 3. Each process reads rows 0-23 or 8-31 of 32 (the block around its runs) and keeps its own.
    layouts = {"blocks": ("grid", (("y", "x"),), "float32")}
    outs = grid.values("jax_array_cases:restore_spread", prefix=f"{tmp_path}/ckpt", layouts=layouts, partial=True)
    for rank, out in enumerate(outs):
        assert out["problems"] == {"blocks": None}, rank
        assert out["needed"] == 4096 and 6144 <= out["read"] < 8192, (rank, out)


def test_a_restore_into_existing_global_arrays_replaces_them_on_their_sharding(grid: Ranks, tmp_path: Path) -> None:
    _save(grid, tmp_path)
    out = grid.values("jax_array_cases:restore_into_arrays", prefix=f"{tmp_path}/ckpt")
    for rank in out:
        assert rank["problems"] == {"rows": None, "blocks": None, "cols": None}
    _stored(out[0]["again"], ["rows", "blocks", "cols"])


def test_checkpoints_move_between_two_processes_and_one(grid: Ranks, tmp_path: Path) -> None:
    _save(grid, tmp_path)
    plain = f"{tmp_path}/plain/ckpt"
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    script = f"import jax_array_cases as c; c.one_process({f'{tmp_path}/ckpt'!r}, {plain!r})"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # One process, 4 local devices: the 2-process checkpoint restored bit for bit (checked there), and arrays
    # sharded over those devices saved as plain tensors, which the 2 processes restore into global arrays.
    _stored(plain, ["rows", "blocks", "flat"])
    for rank, out in enumerate(grid.values("jax_array_cases:restore_plain", prefix=plain)):
        assert out["problems"] == {"rows": None, "blocks": None, "flat": None}, rank
        assert out["needed"] <= out["read"] <= 1.1 * out["needed"], (rank, out)


def test_refusals_say_what_to_do(grid: Ranks, tmp_path: Path) -> None:
    for rank in grid.values("jax_array_cases:refusals", directory=str(tmp_path)):
        kind, message = rank["no_coordinator"]
        assert kind == "IncompletePartitionError" and "every part of a partitioned value must be saved" in message
        assert "passing CheckpointOptions(coordinator=JaxCoordinator())" in message
        assert rank["earlier_intact"] is True
        kind, message = rank["abstract_mesh"]
        assert kind == "TrackableError" and "over an AbstractMesh: it names the mesh's axes but no devices" in message
        assert "sharding=x.sharding" in message and "jax.set_mesh(mesh)" in message
        kind, message = rank["other_devices"]
        assert kind == "TrackableError" and "this process holds no part of it" in message
        kind, message = rank["uneven"]
        assert kind == "TrackableError" and "(31, 64)" in message and "evenly divide" in message


@pytest.mark.parametrize("existing", [False, True], ids=["template", "array"])
def test_another_whole_shape_is_refused_before_anything_is_replaced(
    grid: Ranks, tmp_path: Path, existing: bool
) -> None:
    _save(grid, tmp_path)
    prefix = f"{tmp_path}/ckpt"
    out = grid.values("jax_array_cases:restore_whole_shape", prefix=prefix, shape=(64, 64), existing=existing)
    for rank, refused in enumerate(out):
        assert refused is not None, rank
        kind, message, kept = refused
        assert kind == "ShapeMismatchError" and kept == "True", refused
        assert "(32, 64)" in message and "(64, 64)" in message, message
    assert any("the whole shape of the array spread over several processes" in r[1] for r in out)
