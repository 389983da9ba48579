"""Conditions callers branch on have error classes of their own, so no handler has to read a message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.storage import TensorSlice, check_coverage
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable

FULL = np.arange(24, dtype=np.float32).reshape(6, 4)


class Rows(Trackable):
    """Holds the rows ``cuts`` of :data:`FULL` as slices of one tensor (the form a partitioned value takes)."""

    def __init__(self, cuts: list[tuple[int, int]]) -> None:
        self.parts = [(TensorSlice(FULL.shape, (a, 0), (b - a, 4)), FULL[a:b].copy()) for a, b in cuts]

    def _serialize_to_tensors(self) -> dict[str, Any]:
        return {VARIABLE_VALUE_KEY: {s.spec: a for s, a in self.parts}}


def test_a_gap_is_its_own_class_and_an_overlap_is_not() -> None:
    top = TensorSlice((6, 4), (0, 0), (3, 4))
    with pytest.raises(tp.IncompletePartitionError, match=r"cover 12 of its 24 elements") as gap:
        check_coverage("k", (6, 4), [top], "here")
    assert isinstance(gap.value, tp.TrackableError) and isinstance(gap.value, ValueError)
    with pytest.raises(tp.TrackableError, match="overlap") as overlap:
        check_coverage("k", (6, 4), [top, TensorSlice((6, 4), (2, 0), (4, 4))], "here")
    assert not isinstance(overlap.value, tp.IncompletePartitionError)


@pytest.mark.parametrize("backend", ["bundle", "zarr", "memory"])
def test_a_save_leaving_part_of_a_value_out_raises_it_and_keeps_the_earlier_checkpoint(
    tmp_path: Path, backend: str
) -> None:
    prefix = "memory://error-types/ckpt" if backend == "memory" else str(tmp_path / "ckpt")
    options = tp.CheckpointOptions(backend=None if backend == "memory" else backend)
    tp.Checkpoint(p=Rows([(0, 6)])).write(prefix, options=options)
    with pytest.raises(tp.IncompletePartitionError, match=r"cover 16 of its 24 elements"):
        tp.Checkpoint(p=Rows([(0, 2), (2, 4)])).write(prefix, options=options)
    np.testing.assert_array_equal(tp.load_variable(prefix, f"p/.ATTRIBUTES/{VARIABLE_VALUE_KEY}"), FULL)


# One of two torch.distributed (gloo) ranks, saving its shard of a DTensor alone: the refusal it gets.
_RANK = """
import json, sys
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard
import trackpoint as tp


# A Stateful object holding DTensors: the form a DTensor is saved in, as a module's would be.
class Holder:
    def __init__(self, tensors):
        self.tensors = tensors

    def state_dict(self):
        return dict(self.tensors)

    def load_state_dict(self, state):
        self.tensors.update(state)


rank, init, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
try:
    mesh = init_device_mesh("cpu", (2,))
    value = DTensor.from_local(torch.full((2, 3), float(rank)), mesh, [Shard(0)], run_check=False)
    try:
        tp.Checkpoint(held=Holder({"w": value})).write(f"{prefix}-{rank}")
        print(json.dumps(None))
    except tp.CheckpointError as exc:
        print(json.dumps([type(exc).__name__, isinstance(exc, tp.IncompletePartitionError), str(exc)]))
finally:
    dist.destroy_process_group()
"""


def test_a_rank_saving_alone_gets_the_class_with_the_coordinator_hint(tmp_path: Path) -> None:
    pytest.importorskip("torch.distributed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    init, prefix = tmp_path / "group", tmp_path / "alone"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", _RANK, str(rank), str(init), str(prefix)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outs = [rank.communicate(timeout=120) for rank in ranks]
    for rank, (out, err) in zip(ranks, outs, strict=True):
        assert rank.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert result is not None, "a save of half a DTensor was not refused"
        name, is_incomplete, message = result
        # The hint is chosen by the class, and the hinted error keeps it for the caller's handlers.
        assert (name, is_incomplete) == ("IncompletePartitionError", True), message
        assert "every part of a partitioned value" in message
        assert "passing CheckpointOptions(coordinator=TorchCoordinator()) on every rank" in message
    assert not list(tmp_path.glob("alone-*.index"))
