"""Cases for test_dtensor_strided.py: DTensors under strided shards (``_StridedShard``).

FSDP2 over a model that tensor parallelism already shards on the same tensor dimension places its parameters
and optimizer state as ``(_StridedShard(dim, sf=tp), Shard(dim))`` on a ("dp", "tp") mesh; view operations
(``flatten`` of a column-sharded tensor) and explicit placements give strided shards whose local tensors hold
interleaved rows. Run on every rank as ``Ranks.run("dtensor_strided_cases:<case>", ...)``; torch is imported
inside the cases only.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from cases import Context, _options
from dtensor_cases import IN, Holder, _mesh, _state, _train, _wholes

import trackpoint as tp

#: Widths of the layers: 10 rows over tp=2 then dp=2 are 3 and 2 per rank (uneven under the strided shard).
WIDTHS = (IN, 10, 6, 8, 3)
#: For a (dp, tp) = (3, 2) mesh: 7 rows over tp=2 are 4 and 3, then over dp 2, 2, none and 1, 1, 1 (13 rows:
#: 3, 3, 1 and 2, 2, 2), where cutting the placements left to right would give other ranks other rows. With
#: ``gather``: torch's RowwiseParallel needs its input features split evenly, which 7 and 13 are not.
WIDTHS_DP3 = (IN, 7, 6, 13, 3)


def _tp_net(seed: int, widths: tuple[int, ...] = WIDTHS) -> Any:
    """Two pairs of layers, each split by columns then by rows under tensor parallelism (the usual MLP plan)."""
    import torch

    torch.manual_seed(seed)
    layers: list[Any] = []
    for a, b in itertools.pairwise(widths):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def _fsdp_tp(
    mesh_shape: tuple[int, int],
    seed: int,
    steps: int,
    columns: bool,
    widths: tuple[int, ...] = WIDTHS,
    gather: bool = False,
) -> tuple[Any, Any]:
    """``_tp_net`` parallelized on the "tp" mesh dimension, then sharded by FSDP2 on "dp", after ``steps`` steps.

    ``columns``: FSDP2 shards a weight that tensor parallelism splits by columns on its columns too (where they
    split evenly, as FSDP2 requires), which makes it a strided shard of dimension 1; otherwise FSDP2 shards
    every parameter by rows (dimension 0). ``gather``: the column-parallel layers gather their outputs and
    the layers after them are not parallelized (FSDP2 alone shards them).
    """
    import torch
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = _mesh(mesh_shape)
    net = _tp_net(seed, widths)
    plan: dict[str, Any] = {
        "0": ColwiseParallel(),
        "2": RowwiseParallel(),
        "4": ColwiseParallel(),
        "6": RowwiseParallel(),
    }
    if gather:
        plan = {"0": ColwiseParallel(output_layouts=Replicate()), "4": ColwiseParallel(output_layouts=Replicate())}
    parallelize_module(net, mesh["tp"], plan)
    dp = mesh["dp"].size()

    def by_columns(param: Any) -> Any:
        split = param.placements == (Shard(1),) and param.to_local().shape[1] % dp == 0
        return Shard(1) if split else None

    fully_shard(net, mesh=mesh["dp"], shard_placement_fn=by_columns if columns else None)
    optim = torch.optim.Adam(net.parameters(), lr=0.01)
    _train(net, optim, steps, seed)
    return net, optim


def tp_save(
    ctx: Context,
    prefix: str,
    mesh: tuple[int, int],
    seed: int = 1,
    steps: int = 2,
    widths: tuple[int, ...] = WIDTHS,
    gather: bool = False,
    local_shapes: bool = False,
) -> dict[str, Any]:
    """An FSDP2 + tensor parallel model and its optimizer, saved by every rank; their values before the save.

    ``local_shapes``: also the shape of this rank's local tensor of each parameter (under "local").
    """
    net, optim = _fsdp_tp(tuple(mesh), seed, steps, columns=False, widths=tuple(widths), gather=gather)
    before = _state(net, optim)
    if local_shapes:
        before["local"] = {name: tuple(param.to_local().shape) for name, param in net.named_parameters()}
    tp.Checkpoint(model=net, optim=optim).write(prefix, options=_options(ctx))
    return before


def tp_restore(
    ctx: Context,
    prefix: str,
    mesh: tuple[int, int],
    seed: int = 7,
    columns: bool = False,
    widths: tuple[int, ...] = WIDTHS,
    gather: bool = False,
) -> dict[str, Any]:
    """A fresh FSDP2 + tensor parallel model and optimizer (no state) restored from ``prefix``; their values.

    ``stepped``: a training step runs afterwards (it refuses state not placed as its parameters).
    """
    net, optim = _fsdp_tp(tuple(mesh), seed, 0, columns, tuple(widths), gather)
    tp.Checkpoint(model=net, optim=optim).read(prefix, options=_options(ctx)).assert_consumed()
    after = _state(net, optim)
    _train(net, optim, 1, seed)
    after["stepped"] = True
    return after


def _flat_whole(seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed + 100).standard_normal((4, 6)).astype(np.float32)


def _strided(layout: str, seed: int, flat: bool) -> dict[str, Any]:
    """DTensors of ``_wholes(seed)`` (and the flattened ``_flat_whole``) under strided shards named by ``layout``.

    "1d", on a mesh of every rank: rows and columns split in two, then each half over the ranks (7 rows over 4
    ranks: rows 0 and 4 on rank 0, ..., row 3 alone on rank 3; 5 columns: none on rank 3). "2d", on (dp, tp) =
    (2, world // 2): rows by dp, then each dp block strided over tp; columns strided over dp, rows by tp.
    """
    import torch
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard

    world = torch.distributed.get_world_size()
    whole = _wholes(seed)
    if layout == "1d":
        mesh = _mesh((world,))
        placements = {
            "rep": [Replicate()],
            "rows": [_StridedShard(0, split_factor=2)],
            "cols": [_StridedShard(1, split_factor=2)],
        }
    elif layout == "2d":
        mesh = _mesh((2, world // 2))
        placements = {
            "rep": [Replicate(), Replicate()],
            "rows": [Shard(0), _StridedShard(0, split_factor=2)],
            "cols": [_StridedShard(1, split_factor=2), Shard(0)],
        }
    else:
        raise ValueError(layout)
    placed = {
        k: distribute_tensor(torch.from_numpy(whole[k]), mesh, placements[k], src_data_rank=None) for k in placements
    }
    if flat:
        # torch's own: flattening a column-sharded tensor gives a strided shard of the flat one.
        columns = distribute_tensor(torch.from_numpy(_flat_whole(seed)), _mesh((world,)), [Shard(1)])
        placed["flat"] = columns.flatten()
    return placed


def _wholes_with_flat(seed: int, flat: bool) -> dict[str, np.ndarray[Any, Any]]:
    wholes = _wholes(seed)
    if flat:
        wholes["flat"] = _flat_whole(seed).reshape(-1)
    return wholes


def strided_save(ctx: Context, prefix: str, layout: str, seed: int = 3) -> dict[str, Any]:
    """Every rank saves a :class:`Holder` of strided DTensors; their placements, local shapes and full tensors."""
    tensors = _strided(layout, seed, flat=True)
    tp.Checkpoint(held=Holder(tensors)).write(prefix, options=_options(ctx))
    return {
        "placed": [f"{k}: {list(v.placements)} local {tuple(v.to_local().shape)}" for k, v in tensors.items()],
        "full": {k: v.full_tensor().numpy() for k, v in tensors.items()},
    }


def strided_restore(
    ctx: Context, prefix: str, layout: str, seed: int = 3, flat: bool = True, cast: bool = False
) -> dict[str, bool]:
    """Every rank restores strided DTensors (zeroed first) from ``prefix``; whether each holds ``_wholes(seed)``.

    ``flat``: the flattened DTensor too (a checkpoint of Shard placements has none). ``cast``: the DTensors are
    bfloat16 and take the saved values cast.
    """
    import torch

    tensors = _strided(layout, seed + 1, flat)
    if cast:
        tensors = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    for tensor in tensors.values():
        tensor.to_local().zero_()
    tp.Checkpoint(held=Holder(tensors)).read(prefix, options=_options(ctx)).assert_consumed()
    expected = {k: torch.from_numpy(v).to(tensors[k].dtype) for k, v in _wholes_with_flat(seed, flat).items()}
    return {k: bool(torch.equal(v.full_tensor(), expected[k])) for k, v in tensors.items()}
