"""Cases for test_dtensor.py: state dicts of DTensors (FSDP2's ``fully_shard``, tensor parallelism's placements).

Run on every rank as ``Ranks.run("dtensor_cases:<case>", ...)``. torch is imported inside the cases only, as
cases.py does: JAX workers import this folder's modules too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cases import Context, _options

import trackpoint as tp

#: Output rows of the first layer: 5 rows shard unevenly over 2 ranks (3, 2) and 4 ranks (2, 2, 1, 0).
HIDDEN = 5
IN, OUT = 4, 3

_MESHES: dict[tuple[int, ...], Any] = {}


def _mesh(shape: tuple[int, ...]) -> Any:
    """A CPU device mesh over the whole group, made once per process (meshes of 2 dims make subgroups)."""
    from torch.distributed.device_mesh import init_device_mesh

    if shape not in _MESHES:
        names = ("dp", "tp")[: len(shape)]
        _MESHES[shape] = init_device_mesh("cpu", shape, mesh_dim_names=names)
    return _MESHES[shape]


def _net(seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, OUT))


def _train(net: Any, optim: Any, steps: int, seed: int) -> None:
    """``steps`` Adam steps on the same batch on every rank (FSDP2 averages the gradients)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(6, IN, generator=generator)
    for _ in range(steps):
        optim.zero_grad()
        net(x).pow(2).sum().backward()
        optim.step()


def _fsdp(seed: int, steps: int) -> tuple[Any, Any]:
    """A model sharded by FSDP2 over every rank and its Adam optimizer, after ``steps`` steps."""
    import torch
    from torch.distributed.fsdp import fully_shard

    net = _net(seed)
    mesh = _mesh((torch.distributed.get_world_size(),))
    for layer in (net[0], net[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(net, mesh=mesh)
    optim = torch.optim.Adam(net.parameters(), lr=0.01)
    _train(net, optim, steps, seed)
    return net, optim


def _full(value: Any) -> Any:
    """A state dict's entry as plain data: DTensors gathered whole (a collective: every rank calls it alike)."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return {"dtensor": [repr(p) for p in value.placements], "value": value.full_tensor().tolist()}
    if hasattr(value, "tolist"):
        return {"tensor": value.tolist()}
    return value


def _state(net: Any, optim: Any) -> dict[str, Any]:
    """What the test compares: every model entry and every optimizer state entry, whole."""
    optim_state = optim.state_dict()["state"]
    return {
        "model": {k: _full(v) for k, v in net.state_dict().items()},
        "optim": {f"{i}.{k}": _full(v) for i, entry in sorted(optim_state.items()) for k, v in sorted(entry.items())},
    }


def fsdp_save(ctx: Context, prefix: str, seed: int = 1, steps: int = 2) -> dict[str, Any]:
    """An FSDP2 model and its optimizer after ``steps`` steps, saved by every rank; their values before the save."""
    net, optim = _fsdp(seed, steps)
    before = _state(net, optim)
    tp.Checkpoint(model=net, optim=optim).write(prefix, options=_options(ctx))
    return before


def fsdp_restore(ctx: Context, prefix: str, seed: int = 7) -> dict[str, Any]:
    """A fresh FSDP2 model (other initial values) and a fresh optimizer (no state) restored from ``prefix``.

    Returns their values after the restore, the kinds of the restored optimizer state, and whether a training
    step runs afterwards (it refuses optimizer state that is not placed as its parameters).
    """
    net, optim = _fsdp(seed, steps=0)
    status = tp.Checkpoint(model=net, optim=optim).read(prefix, options=_options(ctx))
    status.assert_consumed()
    after = _state(net, optim)
    _train(net, optim, 1, seed)
    after["stepped"] = True
    return after


class Holder:
    """A Stateful object holding DTensors of given placements (no module): ``state_dict`` returns them."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self.tensors = tensors

    def state_dict(self) -> dict[str, Any]:
        return dict(self.tensors)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert all(state[k] is v for k, v in self.tensors.items()), "DTensors are restored in place"


def _placed(layout: str, seed: int) -> dict[str, Any]:
    """DTensors of a named ``layout`` on this group, from fixed whole values (the same on every rank)."""
    import torch
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    world = torch.distributed.get_world_size()
    whole = _wholes(seed)
    if layout == "1d":
        mesh = _mesh((world,))
        placements = {"rep": [Replicate()], "rows": [Shard(0)], "cols": [Shard(1)]}
    elif layout == "2d":  # FSDP x TP: (dp, tp) = (2, world // 2)
        mesh = _mesh((2, world // 2))
        placements = {
            "rep": [Replicate(), Replicate()],
            "rows": [Shard(0), Shard(1)],  # a block per rank
            "cols": [Replicate(), Shard(1)],  # the same slice on both dp ranks: written once
        }
    else:
        raise ValueError(layout)
    return {
        k: distribute_tensor(torch.from_numpy(whole[k]), mesh, placements[k], src_data_rank=None) for k in placements
    }


def _wholes(seed: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {
        "rep": rng.standard_normal((3, 2)).astype(np.float32),
        "rows": rng.standard_normal((7, 6)).astype(np.float32),  # 7 rows: uneven on 2 and 4 ranks
        "cols": rng.standard_normal((2, 5)).astype(np.float64),
    }


def placed_save(ctx: Context, prefix: str, layout: str, seed: int = 3) -> list[str]:
    """Every rank saves a :class:`Holder` of DTensors in ``layout``; returns the placements saved."""
    tensors = _placed(layout, seed)
    tp.Checkpoint(held=Holder(tensors)).write(prefix, options=_options(ctx))
    return [f"{k}: {list(v.placements)} local {tuple(v.to_local().shape)}" for k, v in tensors.items()]


def placed_restore(ctx: Context, prefix: str, layout: str, seed: int = 3, cast: bool = False) -> dict[str, bool]:
    """Every rank restores DTensors in ``layout`` (zeroed first) from ``prefix``; whether each got its part.

    ``cast``: the DTensors are bfloat16, and take the saved float32 and float64 values cast.
    """
    import torch

    tensors = _placed(layout, seed + 1)
    if cast:
        tensors = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    for tensor in tensors.values():
        tensor.to_local().zero_()
    tp.Checkpoint(held=Holder(tensors)).read(prefix, options=_options(ctx)).assert_consumed()
    expected = {k: torch.from_numpy(v).to(tensors[k].dtype) for k, v in _wholes(seed).items()}
    return {k: bool(torch.equal(v.full_tensor(), expected[k])) for k, v in tensors.items()}


def placed_save_alone(ctx: Context, prefix: str) -> str:
    """Each rank saves its sharded DTensors alone (no coordinator), to a prefix of its own."""
    tp.Checkpoint(held=Holder(_placed("1d", 3))).write(f"{prefix}-{ctx.rank}")
    return "saved"


def refused(ctx: Context, prefix: str, placement: str) -> str:
    """A save of a DTensor whose local tensors are not known parts of it: every rank raises (this rank's error)."""
    import torch
    from torch.distributed.tensor import DTensor, Partial, Shard

    class Rows(Shard):
        """A placement derived from Shard, which may place its parts otherwise."""

    mesh = _mesh((torch.distributed.get_world_size(),))
    # Partial: addends of the value, no part of it.
    placed = Partial() if placement == "partial" else Rows(0)
    value = DTensor.from_local(torch.ones(2, 3), mesh, [placed], run_check=False)
    tp.Checkpoint(held=Holder({"grad": value})).write(prefix, options=_options(ctx))
    return "saved"


def partial_restore_refused(ctx: Context, prefix: str) -> str:
    """A restore into a Partial DTensor of the saved shape: refused before anything is read."""
    import torch
    from torch.distributed.tensor import DTensor, Partial

    mesh = _mesh((torch.distributed.get_world_size(),))
    summed = DTensor.from_local(torch.zeros(3, 2), mesh, [Partial()], run_check=False)
    tp.Checkpoint(held=Holder({"rep": summed})).read(prefix, options=_options(ctx))
    return "restored"


def meta_restore_refused(ctx: Context, prefix: str) -> str:
    """A restore into an FSDP2 model built on the 'meta' device and not given memory: refused."""
    import torch
    from torch.distributed.fsdp import fully_shard

    with torch.device("meta"):
        net = _net(0)
    fully_shard(net, mesh=_mesh((torch.distributed.get_world_size(),)))
    tp.Checkpoint(model=net).read(prefix, options=_options(ctx))
    return "restored"


def outside_mesh(ctx: Context, prefix: str) -> str:
    """A DTensor on a mesh of rank 0 alone (a pipeline stage's): refused on the rank it leaves out."""
    import torch
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = DeviceMesh("cpu", [0])
    value = distribute_tensor(torch.arange(6.0).reshape(3, 2), mesh, [Shard(0)], src_data_rank=None)
    tp.Checkpoint(held=Holder({"w": value})).write(prefix, options=_options(ctx))
    return "saved"


def state_dict_of_dtensors(ctx: Context, prefix: str) -> str:
    """``Checkpoint(model=fsdp_model.state_dict())``: refused, pointing at the module itself."""
    import torch
    from torch.distributed.fsdp import fully_shard

    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    fully_shard(net, mesh=_mesh((torch.distributed.get_world_size(),)))
    tp.Checkpoint(model=net.state_dict()).write(prefix, options=_options(ctx))
    return "saved"


def scalar_parameter_step(ctx: Context, prefix: str) -> dict[str, Any]:
    """A 0-d DTensor parameter: a fresh optimizer's restored ``step`` stays a plain tensor, as torch keeps it."""
    import torch
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    mesh = _mesh((torch.distributed.get_world_size(),))

    def make() -> Any:
        torch.manual_seed(0)
        module = torch.nn.Module()
        module.temp = torch.nn.Parameter(DTensor.from_local(torch.tensor(1.5), mesh, [Replicate()], run_check=False))
        module.w = torch.nn.Parameter(distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)]))
        return module

    module = make()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.1)
    (module.temp * module.w).sum().backward()
    optimizer.step()
    tp.Checkpoint(model=module, optim=optimizer).write(prefix, options=_options(ctx))
    fresh = make()
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.1)
    tp.Checkpoint(model=fresh, optim=fresh_optimizer).read(prefix, options=_options(ctx)).assert_consumed()
    state = fresh_optimizer.state_dict()["state"]
    return {str(i): type(entry["step"]).__name__ for i, entry in state.items()}
