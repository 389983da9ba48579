"""The host memory a save of JAX arrays holds, and what it costs an async save's budget.

A JAX array lives on its devices; a checkpoint holds its host copy. An async save makes every such copy
before ``save`` returns, since a jitted step may donate (and so delete) the array right after, and the
copies count against ``async_memory_bytes`` like the copies of numpy values: a save whose copies exceed
the budget is written synchronously, with a warning. A synchronous save gathers each array when the
backend writes it and lets the copy go after, so it holds about one array's copy at a time, not the
state's.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from gated import Gate, gated_backends

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


@pytest.fixture
def gate() -> Iterator[Gate]:
    with gated_backends() as g:
        yield g


def _key(name: str) -> str:
    return f"state/{name}/.ATTRIBUTES/VARIABLE_VALUE"


def _assert_saved(path: Path, expected: dict[str, np.ndarray[Any, Any]]) -> None:
    reader = tp.load_checkpoint(str(path))
    for name, value in expected.items():
        np.testing.assert_array_equal(reader.get_tensor(_key(name)), value)


def _sync_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "written synchronously" in r.getMessage()]


def test_jax_host_copies_over_the_budget_make_the_save_synchronous_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = {f"w{i}": jnp.full((16, 64), float(i), jnp.float32) for i in range(4)}  # 4 x 4 KiB
    expected = {name: np.asarray(value) for name, value in state.items()}
    ckpt = tp.Checkpoint(state=state)
    options = tp.CheckpointOptions(enable_async=True, async_memory_bytes=8 * 1024)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        ckpt.write(str(tmp_path / "ckpt"), options)
    # Written before write returned, by no background save.
    assert ckpt._self_async.last is None, "the save ran in the background although its copies exceed the budget"
    (message,) = _sync_warnings(caplog)
    assert "16.0 KiB of JAX arrays to gather from their devices" in message
    assert "exceed async_memory_bytes (8.0 KiB)" in message
    _assert_saved(tmp_path / "ckpt", expected)


def test_jax_and_numpy_copies_share_one_budget(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Each copy fits the budget alone; together they do not.
    ckpt = tp.Checkpoint(state={"params": jnp.ones(1024, jnp.float32), "stats": np.ones(1024, np.float32)})
    options = tp.CheckpointOptions(enable_async=True, async_memory_bytes=6 * 1024)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        ckpt.write(str(tmp_path / "ckpt"), options)
    assert ckpt._self_async.last is None, "the JAX array's host copy was not counted against the budget"
    (message,) = _sync_warnings(caplog)
    assert "4.0 KiB of JAX arrays to gather" in message and "4.0 KiB of numpy arrays" in message
    _assert_saved(tmp_path / "ckpt", {"params": np.ones(1024, np.float32), "stats": np.ones(1024, np.float32)})


def test_jax_host_copies_within_the_budget_are_charged_and_survive_donation(gate: Gate, tmp_path: Path) -> None:
    expected = {"w": np.arange(4096, dtype=np.float32).reshape(16, 256), "b": np.full(1024, 0.5, np.float32)}
    # Not read through np.asarray, which makes JAX keep a host copy on the array and refuse to donate it.
    state = {name: jnp.asarray(value) for name, value in expected.items()}
    nbytes = 5 * 4096
    ckpt = tp.Checkpoint(state=state)
    options = tp.CheckpointOptions(backend="gated-bundle", enable_async=True, async_memory_bytes=nbytes)
    # A save made synchronous would wait at the closed gate: opened after 5 s, it fails the test below.
    opener = threading.Timer(5.0, gate.open.set)
    opener.start()
    try:
        ckpt.write(str(tmp_path / "ckpt"), options)
    finally:
        opener.cancel()
    save = ckpt._self_async.last
    assert save is not None, "written synchronously: the copies fit the budget"
    step = jax.jit(functools.partial(jax.tree_util.tree_map, lambda x: x * 2 + 1), donate_argnums=0)
    try:
        assert gate.reached.wait(10) and ckpt._self_async.busy()
        assert save.held == nbytes and save.peak == nbytes, "the host copies were not charged to the budget"
        # The next training step donates the saved arrays while the save still writes.
        state = step(dict(ckpt.state))
        assert all(array.is_deleted() for array in ckpt.state.values())
    finally:
        gate.open.set()
    ckpt.sync()
    assert save.held == 0
    _assert_saved(tmp_path / "ckpt", expected)
    ckpt.state = state  # the arrays the step returned save as usual
    ckpt.write(str(tmp_path / "next"), tp.CheckpointOptions(enable_async=True))
    ckpt.sync()
    _assert_saved(tmp_path / "next", {name: value * 2 + 1 for name, value in expected.items()})


@pytest.mark.parametrize(
    "options",
    [None, tp.CheckpointOptions(enable_async=True, async_memory_bytes=1 << 20)],
    ids=["sync", "async-over-budget"],
)
def test_a_synchronous_save_holds_about_one_jax_arrays_host_copy_at_a_time(
    tmp_path: Path, options: tp.CheckpointOptions | None
) -> None:
    state = {f"w{i}": jnp.full((256, 256), float(i), jnp.float32) for i in range(16)}  # 16 x 256 KiB
    state_bytes = 16 * 256 * 256 * 4
    ckpt = tp.Checkpoint(state=state)
    # The backend's first use in this process (imports, plugin discovery) is not what is measured.
    tp.Checkpoint(state={"w": jnp.ones(4)}).write(str(tmp_path / "warm"))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ckpt.write(str(tmp_path / "ckpt"), options)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # Two arrays' copies at most (the one written and the next), with room to spare; the state is 4 MiB.
    assert peak < state_bytes // 2, f"the save held {peak} bytes of a {state_bytes}-byte state"
    assert ckpt._self_async.last is None
    _assert_saved(tmp_path / "ckpt", {name: np.asarray(value) for name, value in state.items()})


def test_an_async_save_keeps_no_jax_array_alive_while_it_writes(gate: Gate, tmp_path: Path) -> None:
    ckpt = tp.Checkpoint(state={"w": jnp.full((16, 256), 3.0, jnp.float32)})
    old = weakref.ref(ckpt.state["w"])
    options = tp.CheckpointOptions(backend="gated-bundle", enable_async=True)
    ckpt.write(str(tmp_path / "ckpt"), options)
    try:
        assert gate.reached.wait(10) and ckpt._self_async.busy()
        # The program moves on: without donation, the old array's device memory is freed once unreferenced.
        ckpt.state = {"w": jnp.zeros((16, 256), jnp.float32)}
        gc.collect()
        assert old() is None, "the save in flight keeps the old JAX array (its device memory) alive"
    finally:
        gate.open.set()
    ckpt.sync()
    _assert_saved(tmp_path / "ckpt", {"w": np.full((16, 256), 3.0, np.float32)})


def test_a_zarr_save_gathers_each_jax_array_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trackpoint import _array_values

    gathered: list[tuple[int, ...]] = []
    real = _array_values.host_copy

    def counted(*args: Any, **kwargs: Any) -> Any:
        copy = real(*args, **kwargs)
        gathered.append(tuple(copy.shape))
        return copy

    monkeypatch.setattr(_array_values, "host_copy", counted)
    state = {"big": jnp.full((1024, 512), 2.0, jnp.float32), "small": jnp.ones(8)}  # 2 MiB and 32 bytes
    options = tp.CheckpointOptions(backend="zarr", backend_options={"pack_bytes": 1 << 20})
    tp.Checkpoint(state=state).write(str(tmp_path / "ckpt"), options)
    # Each array is read once, when it is written: the pack of small ones is sized from dtypes and shapes.
    assert sorted(gathered) == [(8,), (1024, 512)], gathered
    restored = tp.Checkpoint(state={"big": jnp.zeros((1024, 512)), "small": jnp.zeros(8)})
    restored.read(str(tmp_path / "ckpt"), options).assert_consumed()
    assert bool((restored.state["big"] == 2.0).all()) and bool((restored.state["small"] == 1.0).all())
