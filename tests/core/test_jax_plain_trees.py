"""A pytree of JAX arrays read from a checkpoint's attribute is a plain tree, interchangeable with the one given.

JAX compares container types (a treedef), so a restored ``state`` must be made of the user's kinds of
containers for ``tree_map(f, plain, ckpt.state)`` and optax's ``tx.update(grads, state.opt_state, params)`` to
work. flax and optax are not needed: their structures are emulated here (a registered dataclass with static
fields for flax's ``TrainState``, namedtuples for optax's states).
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any, NamedTuple

import numpy as np
import pytest

import trackpoint as tp
import trackpoint.autotrackable

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
tree_util = jax.tree_util


class ScaleByAdamState(NamedTuple):  # optax.ScaleByAdamState
    count: Any
    mu: Any
    nu: Any


class EmptyState(NamedTuple):  # optax.EmptyState
    pass


@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:  # flax.training.train_state.TrainState: apply_fn and tx are static (struct.field(pytree_node=False))
    step: Any
    params: Any
    opt_state: Any
    apply_fn: Any = dataclasses.field(default=None, metadata={"static": True})


def adam_init(params: Any) -> tuple[ScaleByAdamState, EmptyState]:
    zeros = tree_util.tree_map(jnp.zeros_like, params)
    return ScaleByAdamState(jnp.zeros([], jnp.int32), zeros, zeros), EmptyState()


def adam_update(grads: Any, opt_state: Any, params: Any) -> tuple[Any, Any]:
    """The shape of an optax update: it maps the plain gradients over the state's and the parameters' trees."""
    adam, empty = opt_state
    mu = tree_util.tree_map(lambda g, m: 0.9 * m + 0.1 * g, grads, adam.mu)
    nu = tree_util.tree_map(lambda g, v: 0.99 * v + 0.01 * g * g, grads, adam.nu)
    updates = tree_util.tree_map(lambda m, v, p: -0.1 * m / (jnp.sqrt(v) + 1e-8) + 0 * p, mu, nu, params)
    return updates, (ScaleByAdamState(adam.count + 1, mu, nu), empty)


def create_state(scale: float = 1.0) -> TrainState:
    params = {"dense": {"kernel": jnp.full((3, 2), scale), "bias": jnp.zeros(2)}, "layers": [jnp.ones(2), None]}
    return TrainState(jnp.int32(0), params, adam_init(params), apply_fn=print)


def train_step(state: TrainState, grads: Any) -> TrainState:
    updates, opt_state = adam_update(grads, state.opt_state, state.params)
    params = tree_util.tree_map(lambda p, u: p + u, state.params, updates)
    return dataclasses.replace(state, step=state.step + 1, params=params, opt_state=opt_state)


def test_a_restored_train_state_is_interchangeable_with_a_plain_one() -> None:
    state = create_state()
    grads = tree_util.tree_map(jnp.ones_like, state.params)  # plain dicts and lists, as jax.grad gives them
    state = train_step(state, grads)
    path = tp.Checkpoint(state=state).save("memory://plain-trees/train/ckpt")

    ckpt = tp.Checkpoint(state=jax.eval_shape(create_state))
    ckpt.restore(path).assert_consumed()
    restored = ckpt.state

    assert tree_util.tree_structure(restored) == tree_util.tree_structure(state)
    assert type(restored.params["dense"]) is dict and type(restored.params["layers"]) is list
    assert type(restored.opt_state[0]) is ScaleByAdamState and restored.opt_state[1] == EmptyState()
    assert restored.params["layers"][1] is None and restored.apply_fn is print  # the template's static field
    # With the plain gradients: the update of an optimizer, and a tree_map over a plain tree and a restored one.
    again = train_step(restored, grads)
    expected = train_step(state, grads)
    for got, want in zip(tree_util.tree_leaves(again), tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    total = tree_util.tree_map(lambda a, b: a + b, grads, ckpt.state.params)
    assert float(total["dense"]["kernel"][0, 0]) == float(state.params["dense"]["kernel"][0, 0]) + 1
    assert int(jax.jit(lambda s: s.step + 1)(ckpt.state)) == 2


def test_a_tree_assigned_reads_back_as_itself_and_a_later_assignment_is_saved() -> None:
    state = {"params": {"w": jnp.ones(3)}, "step": jnp.int32(1)}
    ckpt = tp.Checkpoint(state=state, counts={"seen": np.zeros(2)})
    assert ckpt.state is state  # the very tree given, not a copy of it
    ckpt.state = ckpt.state  # assigning it again (after a change in place, say) is a new assignment
    assert ckpt.state is state
    newer = {"params": {"w": jnp.full(3, 2.0)}, "step": jnp.int32(2)}
    ckpt.state = newer
    assert ckpt.state is newer
    saved = tp.load_tree(ckpt.save("memory://plain-trees/assign/ckpt"))["state"]
    assert saved["params"]["w"].tolist() == [2.0, 2.0, 2.0] and int(saved["step"]) == 2
    # A dict without JAX arrays is wrapped in place, as TensorFlow wraps it: edits through the attribute are saved.
    assert type(ckpt.counts) is not dict and isinstance(ckpt.counts, dict)
    ckpt.counts["more"] = np.ones(1)
    assert "more" in tp.load_tree(ckpt.save("memory://plain-trees/assign/ckpt"))["counts"]


def test_a_restored_tree_changed_in_place_is_refused_until_assigned_again() -> None:
    path = tp.Checkpoint(state={"w": jnp.ones(2), "step": jnp.int32(4)}).save("memory://plain-trees/change/ckpt")
    ckpt = tp.Checkpoint(state={"w": jnp.zeros(2), "step": jnp.int32(0)})
    ckpt.restore(path).assert_consumed()
    state = ckpt.state
    assert type(state) is dict and float(state["w"][0]) == 1.0
    state["step"] = jnp.int32(5)  # the plain dict read back, changed: not what the checkpoint holds
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.state: the dict given there .* was changed since"):
        ckpt.save("memory://plain-trees/change/ckpt")
    ckpt.state = state  # assigned again: saved as it is now
    assert int(tp.load_tree(ckpt.save("memory://plain-trees/change/ckpt"))["state"]["step"]) == 5


def test_an_attribute_restored_on_creation_or_holding_tuples_reads_as_a_plain_tree() -> None:
    optimizer = adam_init({"w": jnp.ones(2)})
    holder = tp.AutoTrackable()
    holder.opt = optimizer
    path = tp.Checkpoint(holder=holder, state={"w": [jnp.ones(2)]}).save("memory://plain-trees/create/ckpt")

    ckpt = tp.Checkpoint()
    status = ckpt.restore(path)
    ckpt.state = {"w": [jnp.zeros(2)]}  # created after the restore: restored at once
    target = tp.AutoTrackable()
    target.opt = jax.eval_shape(lambda: optimizer)  # a tuple of namedtuples, held by an object's attribute
    ckpt.holder = target
    status.assert_consumed()

    assert type(ckpt.state["w"]) is list and float(ckpt.state["w"][0][0]) == 1.0
    assert tree_util.tree_structure(target.opt) == tree_util.tree_structure(optimizer)
    assert type(target.opt[0].mu) is dict and float(target.opt[0].mu["w"][0]) == 0.0
    # A restore the attribute was already read after gives the newer values at the next read.
    ckpt.restore(tp.Checkpoint(state={"w": [jnp.full(2, 3.0)]}).save("memory://plain-trees/create/b")).expect_partial()
    assert float(ckpt.state["w"][0][0]) == 3.0
    del ckpt.state  # restored, and deleted all the same
    assert not hasattr(ckpt, "state") and "state" not in ckpt._trackable_children()


class Holder(tp.AutoTrackable):
    pass


def test_a_restore_replaces_a_tree_changed_in_place_with_the_one_given_restored() -> None:
    holder = Holder()
    holder.params = {"w": jnp.zeros(3), "inner": {"b": jnp.zeros(1)}}
    ckpt = tp.Checkpoint(holder=holder)
    path = ckpt.save("memory://plain-trees/in-place/ckpt")
    holder.params["w"] = jnp.ones(3)  # in place, on the tree the attribute reads as
    holder.params["inner"]["extra"] = jnp.ones(2)
    with pytest.raises(tp.TrackableError, match=r"Holder\.params: the dict given there .* was changed since"):
        ckpt.save("memory://plain-trees/in-place/refused")

    ckpt.restore(path).assert_consumed()  # a restore is no save: it restores into the tree as given

    assert holder.params["w"].tolist() == [0.0, 0.0, 0.0] and set(holder.params["inner"]) == {"b"}
    saved = tp.load_tree(ckpt.save("memory://plain-trees/in-place/ckpt"))["holder"]["params"]
    assert saved["w"].tolist() == [0.0, 0.0, 0.0] and set(saved["inner"]) == {"b"}
    # The tree read back after the restore is the one a save checks, down to the dicts inside.
    holder.params["inner"]["b"] = jnp.ones(1)
    with pytest.raises(tp.TrackableError, match=r"Holder\.params\['inner'\]: the dict given there"):
        ckpt.save("memory://plain-trees/in-place/refused")
    holder.params = holder.params
    assert tp.load_tree(ckpt.save("memory://plain-trees/in-place/ckpt"))["holder"]["params"]["inner"]["b"] == 1.0


def test_a_status_names_a_tree_changed_in_place_that_the_checkpoint_lacks() -> None:
    path = tp.Checkpoint(holder=Holder()).save("memory://plain-trees/status/ckpt")
    holder = Holder()
    holder.params = {"w": jnp.zeros(2)}
    holder.params["w"] = jnp.ones(2)  # a save would refuse it; a status only lists the graph
    status = tp.Checkpoint(holder=holder).restore(path)
    with pytest.raises(tp.MatchError, match=r"(?s)not bound to checkpointed values.*\(root\)\.holder\.params"):
        status.assert_existing_objects_matched()
    assert holder.params["w"].tolist() == [1.0, 1.0]  # nothing restored into it: the change stays


@tree_util.register_dataclass
@dataclasses.dataclass
class MutableState:
    step: Any
    params: Any


def test_a_restore_replaces_a_registered_node_changed_in_place() -> None:
    holder = Holder()
    holder.state = MutableState(jnp.int32(0), {"w": jnp.zeros(2)})
    ckpt = tp.Checkpoint(holder=holder)
    path = ckpt.save("memory://plain-trees/node/ckpt")
    holder.state.step = jnp.int32(3)
    holder.state.params["w"] = jnp.ones(2)
    with pytest.raises(tp.TrackableError, match=r"Holder\.state: the MutableState given there was changed"):
        ckpt.save("memory://plain-trees/node/refused")

    ckpt.restore(path).assert_consumed()

    assert int(holder.state.step) == 0 and holder.state.params["w"].tolist() == [0.0, 0.0]
    assert int(tp.load_tree(ckpt.save("memory://plain-trees/node/ckpt"))["holder"]["state"]["step"]) == 0


def test_a_restored_tree_is_in_the_instance_dict_before_it_is_read() -> None:
    holder = Holder()
    holder.params = {"w": jnp.zeros(2)}
    path = tp.Checkpoint(holder=holder).save("memory://plain-trees/dict/ckpt")
    holder.params = {"w": jnp.ones(2)}
    tp.Checkpoint(holder=holder).restore(path).assert_consumed()

    restored = vars(holder)["params"]  # what code walking __dict__ (copy, pickle, introspection) finds
    assert type(restored) is dict and restored["w"].tolist() == [0.0, 0.0]
    assert copy.copy(holder).__dict__["params"] is restored
    assert pickle.loads(pickle.dumps(holder)).__dict__["params"]["w"].tolist() == [0.0, 0.0]


def test_a_save_or_restore_reads_no_attribute_an_auto_trackable_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    # An attribute missing from an AutoTrackable goes through its __getattr__ (a plain tree out of date is
    # rebuilt there): asked of each of 10^5 objects by a restore, it costs about a microsecond each.
    asked: list[str] = []
    rebuild = trackpoint.autotrackable.read_plain_tree

    def counting(owner: tp.Trackable, name: str) -> Any:
        asked.append(name)
        return rebuild(owner, name)

    monkeypatch.setattr(trackpoint.autotrackable, "read_plain_tree", counting)
    root = Holder()
    root.layer = Holder()
    root.layer.w = tp.Variable(np.ones(2))
    root.params = {"w": jnp.ones(2)}
    ckpt = tp.Checkpoint(model=root)
    path = ckpt.save("memory://plain-trees/lookups/ckpt")
    ckpt.restore(path).assert_consumed()
    assert asked == []
