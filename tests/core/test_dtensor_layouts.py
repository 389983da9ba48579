"""Where each rank's part of a DTensor lies, as trackpoint reads it, against where torch itself puts the data.

torch's ``LocalTensorMode`` runs a whole mesh of ranks in this one process (torch's own DTensor code, each
rank's local tensor kept apart): a tensor of known values is redistributed by torch from ``Replicate()`` to
the placements, and for every rank the indices trackpoint computes (``_dtensor_layout``, which a save writes
the slices by and a restore reads them by) must pick exactly that rank's local tensor out of the whole one.
torch's ``full_tensor()`` must give the whole tensor back, so the layout compared with is the one torch
gathers. The placements cover strided shards that torch reads as a shard order (FSDP2 over tensor
parallelism) with uneven sizes, where cutting the placements left to right would put rows elsewhere, on
meshes of 6 to 12 ranks, strided shards read left to right (views), and plain shards.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from trackpoint.errors import TrackableError
from trackpoint.stateful import _dtensor_layout

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
local_tensor = pytest.importorskip("torch.distributed._local_tensor")
fake_pg = pytest.importorskip("torch.testing._internal.distributed.fake_pg")
placement_types = pytest.importorskip("torch.distributed.tensor.placement_types")

from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import Replicate, Shard, distribute_tensor  # noqa: E402

_StridedShard = placement_types._StridedShard

#: Ranks of the fake process group: the largest mesh simulated.
WORLD = 12


def SS(dim: int, sf: int) -> Any:
    return _StridedShard(dim, split_factor=sf)


@pytest.fixture(scope="module", autouse=True)
def _fake_group() -> Iterator[None]:
    """A process group of no real communication, which torch's device meshes need; gone after the module."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("fake", rank=0, world_size=WORLD, store=fake_pg.FakeStore())
    # torch warns of every strided redistribute's sequential all-gathers; nothing here is about their cost.
    logger = logging.getLogger("torch.distributed.tensor._redistribute")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        dist.destroy_process_group()


class _RankMesh:
    """One rank's view of a device mesh: what ``_dtensor_layout`` asks of it."""

    def __init__(self, shape: tuple[int, ...], rank: int) -> None:
        self.shape = shape
        self._coordinate = [int(c) for c in np.unravel_index(rank, shape)]

    def get_coordinate(self) -> list[int]:
        return self._coordinate

    def size(self, mesh_dim: int) -> int:
        return self.shape[mesh_dim]


class _RankDTensor:
    """One simulated rank's DTensor: torch's placements, spec and shape, with that rank's local tensor."""

    def __init__(self, dtensor: Any, local: Any, mesh: _RankMesh) -> None:
        self.placements = dtensor.placements
        self.shape = dtensor.shape
        self._spec = dtensor._spec
        self.device_mesh = mesh
        self._local = local

    def to_local(self) -> Any:
        return self._local


def _placed_by_torch(
    mesh_shape: tuple[int, ...], placements: list[Any], shape: tuple[int, ...], view: Callable[[Any], Any] | None
) -> tuple[Any, Any, dict[int, Any], Any]:
    """torch's own placement of ``arange`` of ``shape``: the DTensor, whole tensor, local tensors by rank, gathered.

    Redistributed from ``Replicate()`` to ``placements``, then ``view`` applied (a view makes its own
    placements); all in one process under ``LocalTensorMode``.
    """
    whole = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    with local_tensor.LocalTensorMode(math.prod(mesh_shape)):
        mesh = init_device_mesh("cpu", mesh_shape)
        dtensor = distribute_tensor(whole, mesh, [Replicate()] * len(mesh_shape)).redistribute(mesh, placements)
        if view is not None:
            dtensor = view(dtensor)
            whole = view(whole)
        locals_ = dict(dtensor.to_local()._local_tensors)
        gathered = dtensor.full_tensor()._local_tensors[0]
    return dtensor, whole, locals_, gathered


def _misplaced(
    mesh_shape: tuple[int, ...],
    placements: list[Any],
    shape: tuple[int, ...],
    view: Callable[[Any], Any] | None = None,
) -> str | None:
    """Why trackpoint's indices of some rank do not pick that rank's local tensor out of the whole; else None."""
    dtensor, whole, locals_, gathered = _placed_by_torch(mesh_shape, placements, shape, view)
    case = f"mesh {mesh_shape}, {list(dtensor.placements)}, shape {tuple(whole.shape)}"
    # torch's own consistency: what it gathers is the whole tensor it placed.
    assert torch.equal(gathered, whole), f"{case}: torch's full_tensor() is not the tensor it placed"
    for rank in range(math.prod(mesh_shape)):
        try:
            local, full_shape, indices = _dtensor_layout(
                _RankDTensor(dtensor, locals_[rank], _RankMesh(mesh_shape, rank)), "x"
            )
        except TrackableError as error:
            return f"{case}: rank {rank} refused: {error}"
        assert full_shape == tuple(whole.shape)
        every = [np.arange(n) if index is None else index for index, n in zip(indices, full_shape, strict=True)]
        picked = whole.numpy()[np.ix_(*every)]
        if not np.array_equal(picked, local.numpy()):
            return f"{case}: rank {rank} holds {local.numpy().tolist()}, trackpoint reads {picked.tolist()} there"
    return None


def _strided_placements(mesh_shape: tuple[int, ...], ndim: int) -> list[list[Any]]:
    """Every placement list with a strided shard that torch reads as a shard order, on ``mesh_shape``.

    A mesh dimension takes ``Replicate()``, ``Shard(d)`` or ``_StridedShard(d, sf)`` with ``sf`` a product of
    other mesh dimensions' sizes (the split factors a shard order gives); those torch can decode are kept.
    """
    from torch.distributed.tensor._dtensor_spec import DTensorSpec

    class Sizes:
        def size(self, mesh_dim: int) -> int:
            return mesh_shape[mesh_dim]

    options = []
    for mesh_dim in range(len(mesh_shape)):
        others = [size for i, size in enumerate(mesh_shape) if i != mesh_dim]
        factors = {math.prod(c) for k in range(1, len(others) + 1) for c in itertools.combinations(others, k)} - {1}
        options.append(
            [Replicate()] + [Shard(d) for d in range(ndim)] + [SS(d, sf) for d in range(ndim) for sf in sorted(factors)]
        )
    return [
        list(p)
        for p in itertools.product(*options)
        if any(type(x) is _StridedShard for x in p)
        and DTensorSpec._maybe_convert_StridedShard_to_shard_order(p, Sizes()) is not None
    ]


@pytest.mark.parametrize(
    ("mesh_shape", "shape"),
    [((3, 2), (7,)), ((2, 3), (7,)), ((2, 2, 3), (13,)), ((2, 3, 2), (13,)), ((3, 2, 2), (13,)), ((2, 2, 2), (5, 6))],
)
def test_strided_shards_read_as_a_shard_order_lie_where_torch_puts_them(
    mesh_shape: tuple[int, int], shape: tuple[int, ...]
) -> None:
    every = _strided_placements(mesh_shape, len(shape))
    assert every
    # Sizes that do not divide evenly, where cutting the placements left to right puts rows elsewhere.
    wrong = [why for p in every if (why := _misplaced(mesh_shape, p, shape)) is not None]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("mesh_shape", "placements", "shape"),
    [
        # FSDP2's placements for dp=3 over tp=2, 7 rows: rank (2, 0) holds none, rank (2, 1) row 6.
        ((3, 2), [SS(0, 2), Shard(0)], (7, 4)),
        # 9 rows, where every rank's shape agrees with a left-to-right cut, yet the rows of some differ.
        ((2, 2, 3), [SS(0, 6), Shard(0), Shard(0)], (9,)),
        ((2, 3, 2), [SS(0, 6), SS(0, 2), Shard(0)], (9,)),
    ],
    ids=["fsdp-tp-7-rows", "same-shapes-other-rows", "two-strided"],
)
def test_strided_shards_with_rows_that_do_not_divide(
    mesh_shape: tuple[int, ...], placements: list[Any], shape: tuple[int, ...]
) -> None:
    assert _misplaced(mesh_shape, placements, shape) is None


@pytest.mark.parametrize(
    ("mesh_shape", "placements", "shape", "view"),
    [
        # Strided shards no shard order explains: each split as its own, left to right.
        ((4,), [SS(0, 2)], (7, 3), None),
        ((2,), [SS(0, 3)], (8,), None),
        ((2, 2), [Shard(0), SS(0, 2)], (7, 2), None),
        ((2, 2), [SS(1, 2), Shard(0)], (3, 5), None),
        # Views: flattening a column-sharded tensor, and two sharded dimensions into one.
        ((4,), [Shard(1)], (4, 6), lambda t: t.flatten()),
        ((2, 2), [Shard(1), Shard(0)], (4, 6, 3), lambda t: t.flatten(0, 1)),
        # Plain shards, uneven, on one dimension twice and on two dimensions.
        ((3, 2), [Shard(0), Shard(0)], (7, 2), None),
        ((2, 3), [Shard(1), Shard(0)], (5, 7), None),
        ((2, 2), [Replicate(), Shard(0)], (3,), None),
    ],
    ids=[
        "rows-1d",
        "sf3-1d",
        "shard-then-strided",
        "strided-cols",
        "flatten",
        "flatten-2d",
        "shards",
        "two-dims",
        "rep",
    ],
)
def test_other_placements_lie_where_torch_puts_them(
    mesh_shape: tuple[int, ...], placements: list[Any], shape: tuple[int, ...], view: Callable[[Any], Any] | None
) -> None:
    assert _misplaced(mesh_shape, placements, shape, view) is None


def test_a_view_is_read_left_to_right_and_the_same_placements_given_to_torch_as_a_shard_order() -> None:
    # flatten(0, 1) of [Shard(1), Shard(0)] on a (2, 2) mesh gives [_StridedShard(0, sf=...), Shard(0)]: torch
    # marks the view's strided shard as not a shard order, and trackpoint reads each the way torch does.
    dtensor, *_ = _placed_by_torch((2, 2), [Shard(1), Shard(0)], (2, 2, 3), lambda t: t.flatten(0, 1))
    assert type(dtensor.placements[0]) is _StridedShard
    assert dtensor._spec.use_strided_shard_as_shard_order is False
    assert _misplaced((2, 2), [Shard(1), Shard(0)], (2, 2, 3), lambda t: t.flatten(0, 1)) is None


# torch's private DTensor code differs from what trackpoint reads: errors, not AttributeErrors.


def _one_rank(mesh_shape: tuple[int, ...], placements: list[Any], shape: tuple[int, ...]) -> _RankDTensor:
    dtensor, _, locals_, _ = _placed_by_torch(mesh_shape, placements, shape, None)
    return _RankDTensor(dtensor, locals_[0], _RankMesh(mesh_shape, 0))


def test_shard_placements_save_on_a_torch_without_strided_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    rank = _one_rank((2,), [Shard(0)], (5, 2))
    monkeypatch.delattr(placement_types, "_StridedShard")
    local, full_shape, indices = _dtensor_layout(rank, "x")
    assert full_shape == (5, 2) and indices[0] is not None and indices[0].tolist() == [0, 1, 2]
    assert indices[1] is None and tuple(local.shape) == (3, 2)


def test_strided_shards_on_a_torch_that_does_not_say_how_it_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    rank = _one_rank((3, 2), [SS(0, 2), Shard(0)], (7,))

    class OlderSpec:  # a spec without the flag saying whether strided shards are a shard order
        pass

    rank._spec = OlderSpec()
    with pytest.raises(TrackableError) as caught:
        _dtensor_layout(rank, "model['0.weight']")
    message = str(caught.value)
    assert "model['0.weight']" in message and torch.__version__ in message
    assert "upgrade torch" in message and "full_tensor()" in message
    assert "use_strided_shard_as_shard_order" in message


def test_strided_shards_on_a_torch_without_the_decoding_or_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.distributed.tensor._dtensor_spec import DTensorSpec

    ordered = _one_rank((3, 2), [SS(0, 2), Shard(0)], (7,))
    own_split = _one_rank((4,), [SS(0, 2)], (7,))  # no shard order: cut by the strided shard's own split
    for rank, owner, lacked in (
        (ordered, DTensorSpec, "_maybe_convert_StridedShard_to_shard_order"),
        (own_split, _StridedShard, "_split_tensor"),
    ):
        with monkeypatch.context() as patched:
            patched.delattr(owner, lacked)
            with pytest.raises(TrackableError, match="upgrade torch, or save dtensor.full_tensor") as caught:
                _dtensor_layout(rank, "x")
        assert lacked in str(caught.value) and torch.__version__ in str(caught.value)
