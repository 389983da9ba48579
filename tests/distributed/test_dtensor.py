"""DTensor state dicts (FSDP2, tensor parallelism) saved and restored by real torch.distributed groups (gloo, CPU).

Each rank writes its DTensors' local tensors as slices of the whole tensors; the checkpoint holds each whole
tensor once, readable in one process, and restores into any placement on any number of ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ranks import Ranks, needs_torch

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]


def _same_values(got: dict[str, Any], want: dict[str, Any]) -> None:
    """The entries of two ``dtensor_cases._state`` results hold equal values (DTensor or not)."""
    for part in ("model", "optim"):
        assert sorted(got[part]) == sorted(want[part]), part
        for key, entry in want[part].items():
            other = got[part][key]
            value = entry["value"] if isinstance(entry, dict) and "value" in entry else entry
            mine = other["value"] if isinstance(other, dict) and "value" in other else other
            if isinstance(value, dict):
                value, mine = value["tensor"], mine["tensor"]
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(value), err_msg=f"{part} {key}")


def _key(path: str, entry: str) -> str:
    """The checkpoint key of a state dict's entry (a ``.`` in an attribute name is written ``..``)."""
    return f"{path}/.ATTRIBUTES/{entry.replace('.', '..')}"


def _stored(prefix: str, state: dict[str, Any]) -> None:
    """The checkpoint holds each whole tensor under its key, readable by ``load_variable`` in this process."""
    for key, entry in state["model"].items():
        np.testing.assert_array_equal(tp.load_variable(prefix, _key("model", key)), entry["value"])
    for key, entry in state["optim"].items():
        value = entry["value"] if "value" in entry else entry["tensor"]
        np.testing.assert_array_equal(tp.load_variable(prefix, _key("optim", f"state.{key}")), value)


def _plain(seed: int) -> tuple[Any, Any]:
    """The model of dtensor_cases without FSDP2, in this process, and its Adam optimizer."""
    import torch
    from dtensor_cases import _net

    net = _net(seed)
    return net, torch.optim.Adam(net.parameters(), lr=0.01)


@pytest.fixture(scope="module")
def saved_by_two(torch2: Ranks, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """An FSDP2 model and optimizer after two steps, saved by two ranks, and their values before the save."""
    prefix = str(tmp_path_factory.mktemp("fsdp2") / "ckpt")
    before = torch2.values("dtensor_cases:fsdp_save", prefix=prefix)
    assert before[0] == before[1]
    return prefix, before[0]


def test_fsdp2_model_and_optimizer_round_trip(torch2: Ranks, saved_by_two: tuple[str, dict[str, Any]]) -> None:
    prefix, before = saved_by_two
    # The parameters and Adam's moments are DTensors sharded by rows (5 rows: 3 and 2 per rank); step is not.
    assert before["model"]["0.weight"]["dtensor"] == ["Shard(dim=0)"]
    assert before["optim"]["0.exp_avg"]["dtensor"] == ["Shard(dim=0)"]
    assert "tensor" in before["optim"]["0.step"]
    after = torch2.values("dtensor_cases:fsdp_restore", prefix=prefix)
    for rank in after:
        assert rank.pop("stepped") is True
        _same_values(rank, before)
        # The fresh optimizer's state was created as DTensors placed as its parameters.
        assert rank["optim"]["0.exp_avg_sq"]["dtensor"] == ["Shard(dim=0)"]
    _stored(prefix, before)


def test_an_fsdp2_checkpoint_restores_into_a_plain_model_in_one_process(
    saved_by_two: tuple[str, dict[str, Any]],
) -> None:
    prefix, before = saved_by_two
    net, optim = _plain(seed=11)
    tp.Checkpoint(model=net, optim=optim).read(prefix).assert_consumed()
    for key, entry in before["model"].items():
        np.testing.assert_array_equal(net.state_dict()[key].numpy(), entry["value"])
    state = optim.state_dict()["state"]
    for key, entry in before["optim"].items():
        index, name = key.split(".")
        value = entry["value"] if "value" in entry else entry["tensor"]
        np.testing.assert_array_equal(state[int(index)][name].numpy(), value)


def test_four_ranks_save_uneven_shards_and_two_restore(torch2: Ranks, torch4: Ranks, tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    # 5 rows over 4 ranks: 2, 2, 1 and none (an empty local tensor).
    before = torch4.values("dtensor_cases:fsdp_save", prefix=prefix, seed=2, steps=3)
    _stored(prefix, before[0])
    for rank in torch2.values("dtensor_cases:fsdp_restore", prefix=prefix):
        rank.pop("stepped")
        _same_values(rank, before[0])


def test_a_plain_checkpoint_restores_into_an_fsdp2_model(torch2: Ranks, tmp_path: Path) -> None:
    import torch
    from dtensor_cases import IN

    net, optim = _plain(seed=5)
    optim.zero_grad()
    net(torch.ones(2, IN)).sum().backward()
    optim.step()
    prefix = tp.Checkpoint(model=net, optim=optim).write(str(tmp_path / "plain"))
    for rank in torch2.values("dtensor_cases:fsdp_restore", prefix=prefix):
        for key, value in net.state_dict().items():
            np.testing.assert_array_equal(rank["model"][key]["value"], value.numpy())
        exp_avg = optim.state_dict()["state"][0]["exp_avg"].numpy()
        np.testing.assert_array_equal(rank["optim"]["0.exp_avg"]["value"], exp_avg)


@pytest.mark.parametrize("layout", ["1d", "2d"])
def test_replicate_and_shard_placements(torch2: Ranks, torch4: Ranks, tmp_path: Path, layout: str) -> None:
    from dtensor_cases import _wholes

    prefix = str(tmp_path / "ckpt")
    saved = torch4.values("dtensor_cases:placed_save", prefix=prefix, layout=layout)
    if layout == "1d":  # uneven: 7 rows over 4 ranks are 2, 2, 2, 1; 5 columns are 2, 2, 1, 0
        assert [s[1:] for s in saved] == [
            ["rows: [Shard(dim=0)] local (2, 6)", "cols: [Shard(dim=1)] local (2, 2)"],
            ["rows: [Shard(dim=0)] local (2, 6)", "cols: [Shard(dim=1)] local (2, 2)"],
            ["rows: [Shard(dim=0)] local (2, 6)", "cols: [Shard(dim=1)] local (2, 1)"],
            ["rows: [Shard(dim=0)] local (1, 6)", "cols: [Shard(dim=1)] local (2, 0)"],
        ], saved
    else:  # blocks of (4 or 3 rows) x (3 columns); columns replicated over dp: (2, 3) and (2, 2)
        assert [s[1:] for s in saved][3] == [
            "rows: [Shard(dim=0), Shard(dim=1)] local (3, 3)",
            "cols: [Replicate(), Shard(dim=1)] local (2, 2)",
        ], saved
    wholes = _wholes(3)
    for key, value in wholes.items():
        np.testing.assert_array_equal(tp.load_variable(prefix, _key("held", key)), value)
    # Replicated values and slices are written once: the data files hold each element once.
    data = sum(p.stat().st_size for p in tmp_path.glob("ckpt.data-*"))
    assert data < sum(v.nbytes for v in wholes.values()) + 1000, data
    # Restored on another number of ranks, each into its own layout's part; then in one process.
    assert (
        torch2.values("dtensor_cases:placed_restore", prefix=prefix, layout="1d")
        == [{"rep": True, "rows": True, "cols": True}] * 2
    )
    everything = {"rep": True, "rows": True, "cols": True}
    if layout == "2d":
        assert torch4.values("dtensor_cases:placed_restore", prefix=prefix, layout="2d") == [everything] * 4
    else:  # into DTensors of another dtype: read as stored, cast as load_state_dict casts
        got = torch2.values("dtensor_cases:placed_restore", prefix=prefix, layout="1d", cast=True)
        assert got == [everything] * 2


def test_a_save_of_sharded_dtensors_without_a_coordinator_is_refused(torch2: Ranks, tmp_path: Path) -> None:
    for result in torch2.run("dtensor_cases:placed_save_alone", prefix=str(tmp_path / "alone")):
        assert result.error is not None and result.error[0] == "IncompletePartitionError", result
        message = result.error[1].splitlines()[0]
        assert "the slices saved for 'held/.ATTRIBUTES/" in message and "every part of a partitioned" in message
        assert "passing CheckpointOptions(coordinator=TorchCoordinator()) on every rank" in message
    assert not list(tmp_path.glob("alone-*.index"))


def test_partial_and_unknown_placements_are_refused(torch2: Ranks, tmp_path: Path) -> None:
    for result in torch2.run("dtensor_cases:refused", prefix=str(tmp_path / "partial"), placement="partial"):
        assert result.error is not None and result.error[0] == "TrackableError", result
        message = result.error[1].splitlines()[0]
        assert "Checkpoint.held['grad'] is a DTensor with a Partial placement (Partial(" in message, message
        assert "redistribute" in message
    # A placement derived from Shard (strided shards are saved: test_dtensor_strided.py).
    for result in torch2.run("dtensor_cases:refused", prefix=str(tmp_path / "partial"), placement="derived"):
        assert result.error is not None and result.error[0] == "TrackableError", result
        message = result.error[1].splitlines()[0]
        assert "Checkpoint.held['grad'] is a DTensor with the placement Shard(dim=0) (of type " in message, message
        assert "refused.<locals>.Rows)" in message and "only Shard, _StridedShard and Replicate" in message
    assert not list(tmp_path.glob("partial*"))
    # A restore into a Partial DTensor is refused before anything is read.
    prefix = str(tmp_path / "ckpt")
    torch2.values("dtensor_cases:placed_save", prefix=prefix, layout="1d")
    for result in torch2.run("dtensor_cases:partial_restore_refused", prefix=prefix):
        assert result.error is not None and result.error[0] == "AssignmentError", result
        assert "Partial" in result.error[1].splitlines()[0]


def test_a_restore_into_dtensors_on_the_meta_device_is_refused(
    torch2: Ranks, saved_by_two: tuple[str, dict[str, Any]]
) -> None:
    for result in torch2.run("dtensor_cases:meta_restore_refused", prefix=saved_by_two[0]):
        assert result.error is not None and result.error[0] == "AssignmentError", result
        message = result.error[1].splitlines()[0]
        assert "Checkpoint.model['0.weight'] is a DTensor on the 'meta' device" in message, message
        assert "to_empty" in message


def test_a_dtensor_on_a_mesh_without_this_rank_is_refused_by_name(torch2: Ranks, tmp_path: Path) -> None:
    results = torch2.run("dtensor_cases:outside_mesh", prefix=str(tmp_path / "stage"))
    assert results[1].error is not None and results[1].error[0] == "TrackableError", results[1]
    assert "Checkpoint.held['w'] is a DTensor on a device mesh that does not include this rank" in results[1].error[1]
    assert results[0].error is not None and "failed on rank 1" in results[0].error[1]  # every rank fails together
    assert not list(tmp_path.glob("stage*.index"))


def test_a_state_dict_of_dtensors_given_as_a_dict_is_refused_pointing_at_the_module(
    torch2: Ranks, tmp_path: Path
) -> None:
    for result in torch2.run("dtensor_cases:state_dict_of_dtensors", prefix=str(tmp_path / "sd")):
        assert result.error is not None and result.error[0] == "TrackableError", result
        if "failed on rank" not in result.error[1]:
            assert "give the module or optimizer itself" in result.error[1], result


def test_a_scalar_dtensor_parameters_restored_step_stays_a_plain_tensor(torch2: Ranks, tmp_path: Path) -> None:
    steps = torch2.values("dtensor_cases:scalar_parameter_step", prefix=str(tmp_path / "scalar"))
    assert steps == [{"0": "Tensor", "1": "Tensor"}] * 2
