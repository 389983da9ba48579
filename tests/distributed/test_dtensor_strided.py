"""Strided shards (``_StridedShard``) saved and restored by real torch.distributed groups (gloo, CPU).

FSDP2 over tensor parallelism on the same tensor dimension (torchtitan's 2D setup) places parameters and
optimizer state as ``(_StridedShard(dim, sf=tp), Shard(dim))``; other strided shards hold interleaved rows,
several blocks of the whole tensor per rank. Each is checked against torch's own ``full_tensor()``: the
checkpoint holds the whole tensor torch gathers, and restores into any layout give it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ranks import Ranks, needs_torch
from test_dtensor import _key, _same_values, _stored

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]

STRIDED_ROWS = ["_StridedShard(dim=0, sf=2)", "Shard(dim=0)"]


@pytest.fixture(scope="module")
def saved_by_four(torch4: Ranks, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """An FSDP2 + tensor parallel model and optimizer on a (dp, tp) = (2, 2) mesh, saved; values before the save."""
    prefix = str(tmp_path_factory.mktemp("fsdp_tp") / "ckpt")
    before = torch4.values("dtensor_strided_cases:tp_save", prefix=prefix, mesh=(2, 2))
    assert all(rank == before[0] for rank in before)
    return prefix, before[0]


def test_fsdp2_over_tensor_parallelism_saves_the_whole_tensors(saved_by_four: tuple[str, dict[str, Any]]) -> None:
    prefix, before = saved_by_four
    # Column-parallel layers: tensor parallelism splits the rows, FSDP2 each part's rows again (a strided shard);
    # 10 rows are 5 per tp rank, then 3 and 2 per dp rank. Row-parallel weights are no strided shard.
    assert before["model"]["0.weight"]["dtensor"] == STRIDED_ROWS
    assert before["model"]["0.bias"]["dtensor"] == STRIDED_ROWS
    assert before["model"]["2.weight"]["dtensor"] == ["Shard(dim=0)", "Shard(dim=1)"]
    assert before["optim"]["0.exp_avg"]["dtensor"] == STRIDED_ROWS
    # Each whole tensor, as torch's full_tensor() gathers it, is what the checkpoint holds.
    _stored(prefix, before)


@pytest.mark.parametrize(
    ("mesh", "columns"),
    [((2, 2), False), ((2, 2), True), ((1, 2), False)],
    ids=["same-layout", "fsdp-on-columns", "two-ranks"],
)
def test_fsdp2_over_tensor_parallelism_restores_into_any_layout(
    torch2: Ranks, torch4: Ranks, saved_by_four: tuple[str, dict[str, Any]], mesh: tuple[int, int], columns: bool
) -> None:
    prefix, before = saved_by_four
    ranks = torch4 if mesh == (2, 2) else torch2
    after = ranks.values("dtensor_strided_cases:tp_restore", prefix=prefix, mesh=mesh, columns=columns)
    for rank in after:
        assert rank.pop("stepped") is True
        _same_values(rank, before)
        assert rank["optim"]["0.exp_avg_sq"]["dtensor"] == rank["model"]["0.weight"]["dtensor"]
    if columns:  # FSDP2 shards the last layer's columns, which tensor parallelism splits: strided on dimension 1
        assert after[0]["model"]["6.weight"]["dtensor"] == ["_StridedShard(dim=1, sf=2)", "Shard(dim=1)"]
    else:
        assert after[0]["model"]["0.weight"]["dtensor"] == STRIDED_ROWS


def test_an_fsdp2_tp_checkpoint_restores_into_a_plain_model_in_one_process(
    saved_by_four: tuple[str, dict[str, Any]],
) -> None:
    import torch
    from dtensor_strided_cases import _tp_net

    prefix, before = saved_by_four
    net = _tp_net(seed=11)
    optim = torch.optim.Adam(net.parameters(), lr=0.01)
    tp.Checkpoint(model=net, optim=optim).read(prefix).assert_consumed()
    for key, entry in before["model"].items():
        np.testing.assert_array_equal(net.state_dict()[key].numpy(), entry["value"])
    state = optim.state_dict()["state"]
    for key, entry in before["optim"].items():
        index, name = key.split(".")
        value = entry["value"] if "value" in entry else entry["tensor"]
        np.testing.assert_array_equal(state[int(index)][name].numpy(), value)


def test_a_plain_checkpoint_restores_into_fsdp2_over_tensor_parallelism(torch4: Ranks, tmp_path: Path) -> None:
    import torch
    from dtensor_cases import IN
    from dtensor_strided_cases import _tp_net

    net = _tp_net(seed=5)
    optim = torch.optim.Adam(net.parameters(), lr=0.01)
    optim.zero_grad()
    net(torch.ones(2, IN)).sum().backward()
    optim.step()
    prefix = tp.Checkpoint(model=net, optim=optim).write(str(tmp_path / "plain"))
    for rank in torch4.values("dtensor_strided_cases:tp_restore", prefix=prefix, mesh=(2, 2), columns=True):
        assert rank["model"]["0.weight"]["dtensor"] == STRIDED_ROWS
        for key, value in net.state_dict().items():
            np.testing.assert_array_equal(rank["model"][key]["value"], value.numpy(), err_msg=key)
        for index, entry in optim.state_dict()["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_array_equal(rank["optim"][f"{index}.{name}"]["value"], entry[name].numpy())


@pytest.fixture(scope="module")
def torch6() -> Iterator[Ranks]:
    """Six torch.distributed (gloo) ranks: the smallest (dp, tp) mesh, (3, 2), where FSDP2's rows differ."""
    with Ranks(6, "torch") as ranks:
        yield ranks


def test_fsdp2_over_tensor_parallelism_with_rows_that_do_not_divide(torch6: Ranks, tmp_path: Path) -> None:
    import torch
    from dtensor_strided_cases import WIDTHS_DP3, _tp_net

    prefix = str(tmp_path / "ckpt")
    kwargs: dict[str, Any] = {"prefix": prefix, "mesh": (3, 2), "widths": WIDTHS_DP3, "gather": True}
    before = torch6.values("dtensor_strided_cases:tp_save", steps=1, local_shapes=True, **kwargs)
    # 7 rows over tp=2 (4 and 3), each part over dp=3: rank (2, 0) holds no row, rank (2, 1) one. Cutting the
    # placements left to right instead (7 rows over dp, then over tp) gives (2, 0) one and (2, 1) none.
    assert before[0]["model"]["0.weight"]["dtensor"] == STRIDED_ROWS
    assert [rank["local"]["0.weight"][0] for rank in before] == [2, 1, 2, 1, 0, 1]
    assert [rank["local"]["4.weight"][0] for rank in before] == [3, 2, 3, 2, 1, 2]
    wholes = {part: before[0][part] for part in ("model", "optim")}
    assert all({part: rank[part] for part in ("model", "optim")} == wholes for rank in before)
    # The checkpoint holds each whole tensor as torch's full_tensor() gathers it.
    _stored(prefix, before[0])
    # A fresh model on the same mesh gets it back, and so does a plain model in this process.
    for rank in torch6.values("dtensor_strided_cases:tp_restore", **kwargs):
        assert rank.pop("stepped") is True
        _same_values(rank, before[0])
    net = _tp_net(seed=11, widths=WIDTHS_DP3)
    optim = torch.optim.Adam(net.parameters(), lr=0.01)
    tp.Checkpoint(model=net, optim=optim).read(prefix).assert_consumed()
    for key, entry in before[0]["model"].items():
        np.testing.assert_array_equal(net.state_dict()[key].numpy(), entry["value"], err_msg=key)


def test_strided_shards_whose_rows_interleave(torch2: Ranks, torch4: Ranks, tmp_path: Path) -> None:
    from dtensor_strided_cases import _wholes_with_flat

    prefix = str(tmp_path / "ckpt")
    saved = torch4.values("dtensor_strided_cases:strided_save", prefix=prefix, layout="1d")
    # 7 rows split in two (4 and 3), each half over 4 ranks: rank 0 holds rows 0 and 4, rank 3 row 3 alone.
    # 5 columns: 3 and 2, so rank 0 holds columns 0 and 3, rank 3 none. The flattened (4, 6) tensor sharded
    # by columns: each rank holds 2 of every 6 elements (rank 3 none).
    assert saved[0]["placed"] == [
        "rep: [Replicate()] local (3, 2)",
        "rows: [_StridedShard(dim=0, sf=2)] local (2, 6)",
        "cols: [_StridedShard(dim=1, sf=2)] local (2, 2)",
        "flat: [_StridedShard(dim=0, sf=4)] local (8,)",
    ], saved[0]["placed"]
    assert saved[3]["placed"][1:] == [
        "rows: [_StridedShard(dim=0, sf=2)] local (1, 6)",
        "cols: [_StridedShard(dim=1, sf=2)] local (2, 0)",
        "flat: [_StridedShard(dim=0, sf=4)] local (0,)",
    ]
    wholes = _wholes_with_flat(3, flat=True)
    for key, value in wholes.items():
        # torch's full_tensor() is the tensor distributed, and the checkpoint holds it.
        np.testing.assert_array_equal(saved[0]["full"][key], value, err_msg=key)
        np.testing.assert_array_equal(tp.load_variable(prefix, _key("held", key)), value, err_msg=key)
    # On 2 ranks, into other strided layouts (and cast to bfloat16), into a (dp, tp) mesh of 4 ranks.
    everything = {"rep": True, "rows": True, "cols": True, "flat": True}
    assert torch2.values("dtensor_strided_cases:strided_restore", prefix=prefix, layout="1d") == [everything] * 2
    got = torch2.values("dtensor_strided_cases:strided_restore", prefix=prefix, layout="1d", cast=True)
    assert got == [everything] * 2
    assert torch4.values("dtensor_strided_cases:strided_restore", prefix=prefix, layout="2d") == [everything] * 4
    # Into Shard placements (as trackpoint's other DTensor tests place them).
    shards = {"rep": True, "rows": True, "cols": True}
    assert torch2.values("dtensor_cases:placed_restore", prefix=prefix, layout="1d") == [shards] * 2


def test_a_two_dimensional_strided_save_and_a_shard_checkpoint_restored_strided(
    torch2: Ranks, torch4: Ranks, tmp_path: Path
) -> None:
    from dtensor_strided_cases import _wholes_with_flat

    prefix = str(tmp_path / "ckpt")
    saved = torch4.values("dtensor_strided_cases:strided_save", prefix=prefix, layout="2d")
    # Rows by dp (4 and 3), each block strided over tp: rank (1, 0) holds rows 4 and 6; columns strided over
    # dp (0, 1, 3 | 2, 4), rows by tp: two blocks of one row each.
    assert saved[2]["placed"][1:3] == [
        "rows: [Shard(dim=0), _StridedShard(dim=0, sf=2)] local (2, 6)",
        "cols: [_StridedShard(dim=1, sf=2), Shard(dim=0)] local (1, 2)",
    ], saved[2]["placed"]
    for key, value in _wholes_with_flat(3, flat=True).items():
        np.testing.assert_array_equal(saved[2]["full"][key], value, err_msg=key)
        np.testing.assert_array_equal(tp.load_variable(prefix, _key("held", key)), value, err_msg=key)
    everything = {"rep": True, "rows": True, "cols": True, "flat": True}
    assert torch2.values("dtensor_strided_cases:strided_restore", prefix=prefix, layout="1d") == [everything] * 2
    # A checkpoint of Shard placements restores into strided shards.
    shards = str(tmp_path / "shards")
    torch4.values("dtensor_cases:placed_save", prefix=shards, layout="1d")
    got = torch4.values("dtensor_strided_cases:strided_restore", prefix=shards, layout="2d", flat=False)
    assert got == [{"rep": True, "rows": True, "cols": True}] * 4
