"""Who writes what in a coordinated save (``plan_save``), and the coordinator option; no processes needed."""

from __future__ import annotations

import pytest

import trackpoint as tp
from solo_coordinator import SoloCoordinator
from trackpoint.distributed import Coordinator
from trackpoint.distributed._save import _Meta, plan_save
from trackpoint.storage import OBJECT_GRAPH_KEY


def _metas(sizes: dict[str, int]) -> list[_Meta]:
    return [_Meta(k, n, "float32", (n // 4,), None) for k, n in sizes.items()]


def _owners(plan: object, world: int) -> dict[str, int]:
    shards = plan.shards  # type: ignore[attr-defined]
    return {k: r for r in range(world) for shard in shards[r] for k, _ in shard}


def test_replicated_keys_are_written_once_and_spread_by_bytes() -> None:
    sizes = {"a": 4000, "b": 4000, "c": 400, "d": 4000, "e": 40, "f": 4000, "graph": 100}
    world = 4
    plan = plan_save([_metas(sizes)] * world, [1] * world, [None] * world)
    owners = _owners(plan, world)
    assert sorted(owners) == sorted(sizes), "every key exactly once"
    loads = plan.bytes_per_rank(sizes)
    # Largest first, each to the rank with the fewest bytes: one big tensor per rank, the small ones spread.
    assert sorted(loads) == [4000, 4040, 4100, 4400], loads
    # Deterministic: every rank computes the same plan from the same messages.
    assert plan_save([_metas(sizes)] * world, [1] * world, [None] * world) == plan


def test_keys_of_one_rank_are_written_by_it_and_counted_first() -> None:
    shared = {"w": 1000, "graph": 10}
    rank0 = _metas({**shared, "big0": 5000})
    rank1 = _metas(shared)
    plan = plan_save([rank0, rank1], [1, 1], [None, None])
    owners = _owners(plan, 2)
    assert owners["big0"] == 0
    assert owners["w"] == 1 and owners["graph"] == 1, "replicated keys go to the rank with fewer bytes"


def test_slices_of_one_key_are_separate_values_and_replicated_slices_are_spread() -> None:
    # Two data-parallel replicas of a table partitioned in two: ranks 0 and 2 hold rows 0-50, ranks 1 and 3
    # rows 50-100. Each slice is written once, and the four ranks share the work.
    def rows(a: int, b: int) -> _Meta:
        return _Meta("table", (b - a) * 400, "float32", (b - a, 100), None, f"100 100 {a},{b - a}:-")

    metas = [
        [rows(0, 50), rows(0, 25)],
        [rows(50, 100), rows(75, 100)],
        [rows(0, 50), rows(0, 25)],
        [rows(50, 100), rows(75, 100)],
    ]
    plan = plan_save(metas, [1] * 4, [None] * 4)
    written = [ident for rank in plan.shards for shard in rank for ident in shard]
    assert sorted(written) == sorted({m.ident for ms in metas for m in ms}), "each slice exactly once"
    assert sorted(len([i for shard in rank for i in shard]) for rank in plan.shards) == [1, 1, 1, 1]


def test_shards_are_numbered_across_ranks_by_each_ranks_tuning() -> None:
    sizes = {f"k{i}": 1000 for i in range(8)}
    plan = plan_save([_metas(sizes)] * 2, [2, 1], [None, 1500])
    assert [len(s) for s in plan.shards] == [2, 4]
    assert plan.num_shards == 6 and plan.first_shard(1) == 2


def test_holders_of_one_key_must_agree() -> None:
    a = [_Meta("v", 16, "float32", (4,), None)]
    b = [_Meta("v", 32, "float64", (4,), None)]
    with pytest.raises(tp.CoordinationError, match=r"ranks 0 and 1 both save 'v' but disagree on it"):
        plan_save([a, b], [1, 1], [None, None])
    with pytest.raises(tp.CoordinationError, match=r"\(rank 0: float32 \[4\], rank 1: float64 \[4\]\)"):
        plan_save([a, b], [1, 1], [None, None])
    same_shape = [_Meta("g", 10, "object", (), "aa")], [_Meta("g", 10, "object", (), "bb")]
    with pytest.raises(tp.CoordinationError, match=r"\(both string \[\], different contents\)"):
        plan_save(list(same_shape), [1, 1], [None, None])
    graphs = [_Meta(OBJECT_GRAPH_KEY, 10, "object", (), "aa")], [_Meta(OBJECT_GRAPH_KEY, 10, "object", (), "bb")]
    with pytest.raises(tp.CoordinationError, match=r"ranks 0 and 1 save different object graphs: every rank must"):
        plan_save(list(graphs), [1, 1], [None, None])


def test_checkpoint_options_take_a_coordinator() -> None:
    solo = SoloCoordinator("solo-test", timeout=1.0)
    assert isinstance(solo, Coordinator)
    options = tp.CheckpointOptions(coordinator=solo)
    assert "coordinator=<SoloCoordinator rank 0 of 1, timeout 1 s>" in repr(options)
    assert "coordinator" not in repr(tp.CheckpointOptions())
    with pytest.raises(TypeError, match=r"CheckpointOptions.coordinator must be a trackpoint.distributed.Coordinator"):
        tp.CheckpointOptions(coordinator=object())  # type: ignore[arg-type]


def test_key_value_collectives_delete_what_every_rank_has_read() -> None:
    solo = SoloCoordinator("solo-test", timeout=1.0)
    assert solo.all_gather(b"one") == [b"one"]
    assert solo.broadcast(b"two") == b"two"
    assert len(solo.store) == 2
    solo.barrier()
    # The barrier completed: the all-gather and broadcast before it were read by every rank.
    assert len(solo.store) == 1
    with pytest.raises(tp.CoordinationError, match=r"root 3 is outside a group of 1"):
        solo.broadcast(b"x", root=3)


def test_set_if_absent_keeps_the_first_record_until_every_rank_has_moved_on() -> None:
    solo = SoloCoordinator("solo-test", timeout=1.0)
    assert solo.set_if_absent("save/1", b"commit") == b"commit"
    assert solo.set_if_absent("save/1", b"abort") == b"commit"
    assert solo.set_if_absent("save/2", b"abort") == b"abort"
    assert solo.store == {"solo-test/once/save/1": b"commit", "solo-test/once/save/2": b"abort"}
    solo.barrier()
    # The records were made before a completed collective: no rank reads them any more.
    assert not [k for k in solo.store if "/once/" in k]
    with pytest.raises(tp.CoordinationError, match=r"a record holds at most 255 bytes, got 256"):
        solo.set_if_absent("save/3", b"x" * 256)


def test_a_group_of_one_saves_and_restores_through_the_coordinated_path(tmp_path: object) -> None:
    options = tp.CheckpointOptions(coordinator=SoloCoordinator("solo-test", timeout=1.0))
    v = tp.Variable([1.0, 2.0, 3.0])
    ckpt = tp.Checkpoint(v=v)
    path = ckpt.save(f"{tmp_path}/ckpt", options=options)
    assert path == f"{tmp_path}/ckpt-1" and tp.latest_checkpoint(str(tmp_path)) == path
    v.assign([0.0, 0.0, 0.0])
    ckpt.restore(path, options=options).assert_consumed()
    assert v.numpy().tolist() == [1.0, 2.0, 3.0]


def test_a_rank_uses_one_writer_per_min_bytes_of_what_it_writes() -> None:
    # Rank 0 holds 8 MB of its own; rank 1 only replicated values, which go to rank 1 (fewer bytes) and add
    # up to 3 MB. With 4 writers each and a floor of 2 MB per writer, rank 0 writes 4 shards and rank 1
    # one: what rank 1 writes, not what it holds, sets its count.
    own = {f"own{i}": 1_000_000 for i in range(8)}
    shared = {f"shared{i}": 1_000_000 for i in range(3)}
    metas = [_metas({**own, **shared}), _metas(shared)]
    plan = plan_save(metas, [4, 4], [None, None], [2_000_000, 2_000_000])
    assert [len(s) for s in plan.shards] == [4, 1]
    # A rank without a floor (its num_writers was given) keeps its count.
    plan = plan_save(metas, [4, 4], [None, None], [0, 0])
    assert [len(s) for s in plan.shards] == [4, 3]
