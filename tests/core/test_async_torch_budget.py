"""What an async save's memory budget counts for torch tensors: the copies it must make, each once.

A CPU tensor is saved through a view of its memory, which the program changes in place (an optimizer
step): it is copied when ``save`` is called and charged to ``async_memory_bytes``. A tensor numpy
cannot share (on a GPU; here, with torch's lazy conjugation, which takes the same path on a CPU-only
machine) is copied to the host by the serialization itself, as for a synchronous save: nothing the
program does reaches that copy, so it is neither copied again nor charged. One tensor saved under
two names (tied weights) is copied and charged once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from gated import Gate, gated_backends

torch = pytest.importorskip("torch")


@pytest.fixture
def gate() -> Iterator[Gate]:
    with gated_backends() as g:
        yield g


def _write(gate: Gate, ckpt: tp.Checkpoint, path: Path, options: tp.CheckpointOptions) -> None:
    """``ckpt.write``; a save made synchronous (what these tests refute) passes the closed gate after 5 s."""
    opener = threading.Timer(5.0, gate.open.set)
    opener.start()
    try:
        ckpt.write(str(path), options)
    finally:
        opener.cancel()


def _step_until(gate: Gate, done: object, shards: int) -> bool:
    """Let the held save write one shard at a time (at most ``shards``) until ``done()``; whether it came."""
    for _ in range(shards):
        gate.reached.clear()
        gate.let_through(1)
        if not gate.reached.wait(10) or done():  # type: ignore[operator]
            return bool(done())  # type: ignore[operator]
    return bool(done())  # type: ignore[operator]


def test_a_tensors_host_copy_is_not_copied_again_and_a_cpu_tensor_is_charged_once(gate: Gate, tmp_path: Path) -> None:
    cpu = torch.arange(1000, dtype=torch.float32)  # 4000 bytes, shared with numpy: copied and charged
    lazy = torch.arange(500, dtype=torch.float32).mul(1 + 1j).conj()  # complex64, 4000 bytes: copied to serialize
    ckpt = tp.Checkpoint(cpu=cpu, lazy=lazy)
    saved_cpu, saved_lazy = cpu.clone(), lazy.resolve_conj()
    # Room for the CPU tensor's copy only: a save that also copied the other would be written synchronously.
    options = tp.CheckpointOptions(backend="gated-bundle", enable_async=True, async_memory_bytes=4000)
    _write(gate, ckpt, tmp_path / "ckpt", options)
    save = ckpt._self_async.last
    assert save is not None, "written synchronously: the host copy was counted as a copy to make"
    try:
        assert gate.reached.wait(10) and ckpt._self_async.busy()
        assert save.held == 4000 and save.peak == 4000
        with torch.no_grad():  # in place, while the save writes: neither reaches the checkpoint
            cpu.mul_(-1)
            lazy.mul_(-1)
    finally:
        gate.open.set()
    ckpt.sync()
    back = tp.Checkpoint(cpu=torch.zeros(1000), lazy=torch.zeros(500, dtype=torch.complex64))
    back.read(str(tmp_path / "ckpt")).assert_consumed()
    assert torch.equal(back.cpu, saved_cpu) and torch.equal(back.lazy, saved_lazy)


class _Tied(torch.nn.Module):  # type: ignore[misc]
    """An embedding and an output layer sharing one weight, as language models often do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(250, 16)  # 16000 bytes
        self.head = torch.nn.Linear(16, 250, bias=False)
        self.head.weight = self.embed.weight


def test_a_tensor_saved_under_two_names_is_copied_and_charged_once(gate: Gate, tmp_path: Path) -> None:
    model = _Tied()
    nbytes = 250 * 16 * 4
    saved = model.embed.weight.detach().clone()
    ckpt = tp.Checkpoint(model=model)
    # One shard per weight (in state-dict order), then the rest; room for one copy of the weight.
    options = tp.CheckpointOptions(
        backend="gated-bundle", enable_async=True, async_memory_bytes=nbytes, num_writers=1, max_shard_bytes=nbytes
    )
    _write(gate, ckpt, tmp_path / "ckpt", options)
    save = ckpt._self_async.last
    assert save is not None, "written synchronously: the weight was counted twice"
    try:
        assert gate.reached.wait(10)
        assert save.held == nbytes and save.peak == nbytes
        with torch.no_grad():
            model.embed.weight.add_(1.0)  # an optimizer step, while the save writes
        # Stored once, under its first name: the copy is released once that shard is written, before the save ends.
        assert _step_until(gate, lambda: save.held == 0, 1), "the shared copy stayed charged after it was written"
        assert ckpt._self_async.busy()
    finally:
        gate.open.set()
    ckpt.sync()
    reader = tp.load_checkpoint(str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(reader.get_tensor("model/.ATTRIBUTES/embed..weight"), saved.numpy())
    assert not reader.has_tensor("model/.ATTRIBUTES/head..weight")
    tree = tp.load_tree(str(tmp_path / "ckpt"))["model"]
    for name in ("embed.weight", "head.weight"):
        np.testing.assert_array_equal(np.asarray(tree[name]), saved.numpy())
