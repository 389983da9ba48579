"""Registered JAX pytree nodes (a register_dataclass train state, register_pytree_node classes) and int dict keys.

A node of a registered type is saved as a tuple is: an object of the graph whose children, one level down, are
named by their key-path entries, so keys read ``state/params/w/.ATTRIBUTES/VARIABLE_VALUE``; a restore gives
back a node of the same type (rebuilt by its own unflatten) with the restored leaves. An int dict key is saved
under its decimal string and restored by the template's key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import trackpoint as tp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
tree_util = jax.tree_util

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


class ScaleByAdamState(NamedTuple):
    count: Any
    mu: Any


class EmptyState(NamedTuple):
    pass


@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    step: Any
    params: Any
    opt_state: Any
    # Static (meta) data: part of the tree's structure, not a leaf, so never saved.
    tag: str = dataclasses.field(default="run", metadata={"static": True})


def train_state(scale: float = 1.0) -> TrainState:
    params = {"dense": {"w": jnp.full((3, 2), scale), "b": jnp.arange(2.0) * scale}}
    mu = tree_util.tree_map(lambda x: x * 0.1, params)
    return TrainState(jnp.int32(7), params, (ScaleByAdamState(jnp.int32(5), mu), EmptyState()))


def plain(tree: Any) -> Any:
    return tree_util.tree_map(lambda x: x, tree)


def assert_same_tree(got: Any, want: Any) -> None:
    assert tree_util.tree_structure(plain(got)) == tree_util.tree_structure(want)
    for a, b in zip(tree_util.tree_leaves(got), tree_util.tree_leaves(want), strict=True):
        assert isinstance(a, jax.Array) and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def names(path: str) -> list[str]:
    return [key for key, _ in tp.list_variables(path) if key.endswith(VALUE) and not key.startswith("save_counter")]


def test_a_registered_dataclass_train_state_round_trips_as_its_own_type(tmp_path: Path) -> None:
    state = train_state()
    ckpt = tp.Checkpoint(state=state)
    assert type(state.params["dense"]) is dict  # the user's tree stays plain
    path = ckpt.write(str(tmp_path / "ckpt"))
    # The keys a tree of dicts and namedtuples has, named by the dataclass's fields: TensorFlow's layout.
    assert names(path) == [
        "state/opt_state/0/count" + VALUE,
        "state/opt_state/0/mu/dense/b" + VALUE,
        "state/opt_state/0/mu/dense/w" + VALUE,
        "state/params/dense/b" + VALUE,
        "state/params/dense/w" + VALUE,
        "state/step" + VALUE,
    ]
    # An abstract template (no memory), whose static field differs: the template's is kept, as Orbax keeps it.
    template = dataclasses.replace(jax.eval_shape(lambda: state), tag="restored")
    restored = tp.Checkpoint(state=template)
    restored.read(path).assert_consumed()
    assert type(restored.state) is TrainState and restored.state.tag == "restored"
    assert isinstance(restored.state.opt_state[0], ScaleByAdamState)
    assert_same_tree(restored.state, dataclasses.replace(state, tag="restored"))
    assert int(jax.jit(lambda s: s.step + 1)(restored.state)) == 8  # JAX sees through it
    assert tp.load_tree(path)["state"]["params"]["dense"]["w"].shape == (3, 2)  # plain nested dicts


def test_a_train_state_restores_on_creation_through_memory() -> None:
    path = tp.Checkpoint(state=train_state(2.0), epoch=3).save("memory://pytrees/create/ckpt")
    ckpt = tp.Checkpoint(epoch=0)
    status = ckpt.restore(path)
    ckpt.state = tree_util.tree_map(jnp.zeros_like, train_state())  # created after the restore: restored at once
    status.assert_consumed()
    assert type(ckpt.state) is TrainState and ckpt.epoch == 3
    assert_same_tree(ckpt.state, train_state(2.0))


def test_an_attribute_holding_a_train_state_is_tracked_and_replaced(tmp_path: Path) -> None:
    trainer = tp.AutoTrackable()
    trainer.state = train_state(3.0)
    path = tp.Checkpoint(trainer=trainer).write(str(tmp_path / "ckpt"))
    assert "trainer/state/step" + VALUE in names(path)
    target = tp.AutoTrackable()
    target.state = tree_util.tree_map(jnp.zeros_like, train_state())
    tp.Checkpoint(trainer=target).read(path).assert_consumed()
    assert type(target.state) is TrainState
    assert_same_tree(target.state, train_state(3.0))
    target.config = TrainState("a", "b", "c")  # holds nothing saved: configuration, as a tuple of strings is
    assert "config" not in target._trackable_children()


class Pair:
    """A class registered without keys: its children are named by position."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second


tree_util.register_pytree_node(Pair, lambda p: ((p.first, p.second), None), lambda _, children: Pair(*children))


class Layers:
    """A class registered with keys of its own: int dict keys and an attribute."""

    def __init__(self, blocks: dict[int, Any], scale: Any) -> None:
        self.blocks, self.scale = blocks, scale


tree_util.register_pytree_with_keys(
    Layers,
    lambda node: (
        [(tree_util.DictKey(key), node.blocks[key]) for key in sorted(node.blocks)]
        + [(tree_util.GetAttrKey("scale"), node.scale)],
        tuple(sorted(node.blocks)),
    ),
    lambda keys, children: Layers(dict(zip(keys, children[:-1], strict=True)), children[-1]),
)


def test_nodes_registered_with_and_without_keys_are_named_by_their_entries() -> None:
    tree = {"pair": Pair(jnp.ones(2), None), "layers": Layers({0: jnp.ones(1), 1: jnp.zeros(1)}, jnp.float32(2.0))}
    path = tp.Checkpoint(tree=tree).save("memory://pytrees/kinds/ckpt")
    assert names(path) == [
        "tree/layers/0" + VALUE,
        "tree/layers/1" + VALUE,
        "tree/layers/scale" + VALUE,
        "tree/pair/0" + VALUE,  # FlattenedIndexKey(0); the None is an empty subtree and saves nothing
    ]
    ckpt = tp.Checkpoint(tree=tree_util.tree_map(jnp.zeros_like, tree))
    ckpt.restore(path).assert_consumed()
    layers, pair = ckpt.tree["layers"], ckpt.tree["pair"]
    assert type(layers) is Layers and type(pair) is Pair and pair.second is None
    assert float(layers.blocks[0][0]) == 1.0 and float(layers.scale) == 2.0 and float(pair.first[1]) == 1.0


def test_a_tree_that_differs_from_the_saved_one_is_named_by_its_path(tmp_path: Path) -> None:
    path = tp.Checkpoint(state=train_state()).write(str(tmp_path / "ckpt"))
    fewer = train_state()
    fewer = dataclasses.replace(fewer, params={"dense": {"w": fewer.params["dense"]["w"]}})
    status = tp.Checkpoint(state=fewer).read(path)
    with pytest.raises(tp.MatchError, match=r"\(root\)\.state\.params\.dense\.b: state/params/dense/b/"):
        status.assert_consumed()
    more = train_state()
    more = dataclasses.replace(more, params={"dense": {**more.params["dense"], "c": jnp.ones(1)}})
    status = tp.Checkpoint(state=more).read(path)
    with pytest.raises(tp.MatchError, match=r"\(root\)\.state\.params\.dense\.c: <JAX array 'c'"):
        status.assert_existing_objects_matched()
    with pytest.raises(
        tp.ShapeMismatchError, match=r"'state/step/.ATTRIBUTES/VARIABLE_VALUE' into the JAX array 'step'"
    ):
        tp.Checkpoint(state=dataclasses.replace(train_state(), step=jnp.zeros(2, jnp.int32))).read(path)


@dataclasses.dataclass
class Mutable:
    weights: Any


tree_util.register_dataclass(Mutable, data_fields=["weights"], meta_fields=[])


def test_a_node_or_tree_changed_since_it_was_given_is_refused_not_saved_stale(tmp_path: Path) -> None:
    holder = Mutable(jnp.ones(2))
    ckpt = tp.Checkpoint(m=holder)
    ckpt.write(str(tmp_path / "a"))
    holder.weights = jnp.zeros(2)  # the user's object; the checkpoint holds a copy
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.m: the Mutable given there was changed since"):
        ckpt.write(str(tmp_path / "b"))
    ckpt.m = holder  # assigned again: saved as it is now
    assert tp.load_checkpoint(ckpt.write(str(tmp_path / "c"))).get_tensor("m/weights" + VALUE).tolist() == [0, 0]
    state = train_state()
    ckpt = tp.Checkpoint(state=state)
    state.params["dense"]["b"] = jnp.zeros(2)  # inside a frozen dataclass, the user's dict is still mutable
    with pytest.raises(
        tp.TrackableError,
        match=r"Checkpoint\.state: the TrainState given there was changed since it was given \(at "
        r"Checkpoint\.state\.params\['dense'\]\['b'\]\)",
    ):
        ckpt.write(str(tmp_path / "d"))


def test_an_async_save_keeps_the_values_of_the_tree_it_was_given() -> None:
    ckpt = tp.Checkpoint(state=train_state(1.0))
    path = ckpt.save("memory://pytrees/async/ckpt", options=tp.CheckpointOptions(enable_async=True))
    ckpt.state = train_state(5.0)  # the next step's state, while the save may still be writing
    ckpt.sync()
    assert tp.load_checkpoint(path).get_tensor("state/params/dense/w" + VALUE)[0, 0] == 1.0


class FrozenMapping:
    """A node whose unflatten copies the dicts it is given (as frozen mappings do)."""

    def __init__(self, items: dict[str, Any]) -> None:
        self.items = {key: dict(value) if isinstance(value, dict) else value for key, value in items.items()}


tree_util.register_pytree_with_keys(
    FrozenMapping,
    lambda node: ([(tree_util.DictKey(key), node.items[key]) for key in sorted(node.items)], tuple(sorted(node.items))),
    lambda keys, children: FrozenMapping(dict(zip(keys, children, strict=True))),
)


def test_a_node_that_copies_its_children_still_shows_the_restored_values(tmp_path: Path) -> None:
    path = tp.Checkpoint(p=FrozenMapping({"dense": {"w": jnp.ones(2)}, "b": jnp.ones(1)})).write(str(tmp_path / "c"))
    ckpt = tp.Checkpoint(p=FrozenMapping({"dense": {"w": jnp.zeros(2)}, "b": jnp.zeros(1)}))
    ckpt.read(path).assert_consumed()
    assert type(ckpt.p) is FrozenMapping
    assert float(ckpt.p.items["dense"]["w"][0]) == 1.0 and float(ckpt.p.items["b"][0]) == 1.0


def test_a_node_with_keys_that_name_nothing_is_refused_with_what_to_do() -> None:
    class Odd:
        def __init__(self, value: Any) -> None:
            self.value = value

    tree_util.register_pytree_with_keys(
        Odd, lambda node: ([(tree_util.DictKey(1.5), node.value)], None), lambda _, children: Odd(*children)
    )
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.o is a Odd, a JAX pytree node whose child 0 .*DictKey"):
        tp.Checkpoint(o=Odd(jnp.ones(1)))


# ------------------------------------------------------------------------------------------ int dict keys
def test_int_keys_are_saved_as_decimal_strings_and_restored_by_the_templates_keys(tmp_path: Path) -> None:
    layers = {0: jnp.ones(2), 1: jnp.full(3, 2.0), -1: jnp.zeros(1)}
    path = tp.Checkpoint(layers=layers).write(str(tmp_path / "ckpt"))
    assert names(path) == ["layers/-1" + VALUE, "layers/0" + VALUE, "layers/1" + VALUE]
    ckpt = tp.Checkpoint(layers=jax.eval_shape(lambda: layers))
    ckpt.read(path).assert_consumed()
    restored = plain(ckpt.layers)
    assert sorted(restored) == [-1, 0, 1] and float(restored[1][0]) == 2.0
    # A str-keyed template (what TensorFlow's {"0": ...} is) reads the same names; load_tree gives them as str.
    by_name = tp.Checkpoint(
        layers={"0": np.zeros(2, np.float32), "1": np.zeros(3, np.float32), "-1": np.ones(1, np.float32)}
    )
    by_name.read(path).expect_partial()
    assert by_name.layers["1"][0] == 2.0
    assert sorted(tp.load_tree(path)["layers"]) == ["-1", "0", "1"]


def test_an_int_key_added_after_a_restore_gets_its_value() -> None:
    path = tp.Checkpoint(d={np.int64(3): np.arange(3.0)}).save("memory://pytrees/intkey/ckpt")
    ckpt = tp.Checkpoint(d={})
    status = ckpt.restore(path)
    ckpt.d[3] = np.zeros(3)
    status.assert_consumed()
    np.testing.assert_array_equal(ckpt.d[3], [0.0, 1.0, 2.0])


def test_keys_that_would_share_a_name_are_refused() -> None:
    with pytest.raises(
        tp.NameConflictError, match=r"save or restore Checkpoint\.d: its keys 0 and '0' would both be named '0'"
    ):
        tp.Checkpoint(d={0: np.ones(1), "0": np.zeros(1)}).write("memory://pytrees/clash/ckpt")


def test_a_restore_into_a_template_with_clashing_keys_says_restore_too() -> None:
    path = tp.Checkpoint(d={"0": np.ones(1)}).write("memory://pytrees/clash-restore/ckpt")
    with pytest.raises(tp.NameConflictError, match=r"Unable to save or restore Checkpoint\.d: its keys 0 and '0'"):
        tp.Checkpoint(d={0: np.zeros(1), "0": np.zeros(1)}).read(path)


# ------------------------------------------------------------------ nodes that copy or convert what they are given
@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Normalized:
    """Converts its array to float32 on construction (np.array copies it even when it is float32 already)."""

    step: Any
    w: Any

    def __post_init__(self) -> None:
        if isinstance(self.w, np.ndarray):
            object.__setattr__(self, "w", np.array(self.w, dtype=np.float32))


def test_a_node_that_copies_its_leaves_is_restored_and_saved_through_its_own_copies() -> None:
    # Nothing replaced, so nothing rebuilt: the restore wrote into the float32 copy the node holds.
    alone = tp.Checkpoint(p=Normalized(None, np.ones(3))).write("memory://pytrees/copying/alone")
    ckpt = tp.Checkpoint(p=Normalized(None, np.zeros(3)))
    ckpt.read(alone).assert_consumed()
    assert ckpt.p.w.tolist() == [1.0, 1.0, 1.0]
    path = tp.Checkpoint(p=Normalized(jnp.int32(3), np.ones(3))).save("memory://pytrees/copying/ckpt")
    assert tp.load_tree(path)["p"]["w"].dtype == np.float32  # the node's own float32 copy was saved
    ckpt = tp.Checkpoint(p=Normalized(jnp.int32(0), np.zeros(3)))
    ckpt.restore(path).assert_consumed()
    # The step (a JAX array, replaced) rebuilt the node, whose __post_init__ copied w again: still restored.
    assert int(ckpt.p.step) == 3 and ckpt.p.w.tolist() == [1.0, 1.0, 1.0]
    ckpt.p.w[:] = 7  # the array the node holds is the one saved
    assert tp.load_tree(ckpt.write("memory://pytrees/copying/again"))["p"]["w"].tolist() == [7.0, 7.0, 7.0]
    ckpt.restore(path).assert_consumed()  # and restored into, again
    assert ckpt.p.w.tolist() == [1.0, 1.0, 1.0]


@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeepCopies:
    params: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tree_util.tree_map(np.array, dict(self.params)))


def test_a_node_that_copies_arrays_inside_a_dict_is_refused_naming_where() -> None:
    with pytest.raises(
        tp.TrackableError,
        match=r"Checkpoint\.d: the DeepCopies's pytree unflatten .* copies or converts the arrays inside the list or "
        r"dict it is given at Checkpoint\.d\.params, so a restore",
    ):
        tp.Checkpoint(d=DeepCopies({"w": np.ones(2)}))
    kept = tp.AutoTrackable()
    kept.d = tp.NoDependency(DeepCopies({"w": np.ones(2)}))  # what the message offers: kept, unsaved
    assert "d" not in kept._trackable_children()


class Model:
    """Its flatten builds the dict it gives as its one child each time it is flattened."""

    def __init__(self, w: Any, b: Any) -> None:
        self.w, self.b = w, b


tree_util.register_pytree_node(
    Model, lambda m: (({"w": m.w, "b": m.b},), None), lambda _, children: Model(children[0]["w"], children[0]["b"])
)


@pytest.mark.parametrize("array", [np.ones, jnp.ones], ids=["numpy", "jax"])
def test_a_node_whose_flatten_builds_its_children_is_saved_and_a_real_change_refused(array: Any) -> None:
    model = Model(array(2), array(1))
    ckpt = tp.Checkpoint(model=model)
    path = ckpt.write("memory://pytrees/fresh/a")
    restored = tp.Checkpoint(model=Model(np.zeros(2) if array is np.ones else jnp.zeros(2), array(1) * 0))
    restored.read(path).assert_consumed()
    assert restored.model.w.tolist() == [1.0, 1.0]
    restored.write("memory://pytrees/fresh/b")  # the restore changed nothing the user holds
    model.w = array(2) * 5  # the user's node, changed: refused, as before
    with pytest.raises(tp.TrackableError, match=r"Model given there was changed since it was given \(at "):
        ckpt.write("memory://pytrees/fresh/c")


class Frozen:
    """A mapping-like node (flax's FrozenDict's shape): its items are its children, and it copies them."""

    unflattens = 0

    def __init__(self, items: Any) -> None:
        self.items = dict(items)


def _unflatten_frozen(keys: tuple[str, ...], children: Any) -> Frozen:
    Frozen.unflattens += 1
    return Frozen(zip(keys, children, strict=True))


tree_util.register_pytree_with_keys(
    Frozen,
    lambda f: ([(tree_util.DictKey(k), f.items[k]) for k in sorted(f.items)], tuple(sorted(f.items))),
    _unflatten_frozen,
)


def test_a_restore_rebuilds_a_node_once_not_once_per_leaf() -> None:
    n = 300
    path = tp.Checkpoint(t=Frozen({f"w{i}": jnp.full(2, i) for i in range(n)})).write("memory://pytrees/once/a")
    ckpt = tp.Checkpoint(t=Frozen({f"w{i}": jnp.zeros(2, jnp.int32) for i in range(n)}))
    Frozen.unflattens = 0
    ckpt.read(path).assert_consumed()
    assert Frozen.unflattens == 1  # n leaves replaced, one rebuild (it was n, each of n children)
    assert type(ckpt.t) is Frozen and ckpt.t.items["w299"].tolist() == [299, 299]
    # The same through a dict the node copies (the node is rebuilt when a restore changes the checkpoint's).
    path = tp.Checkpoint(t=FrozenMapping({"d": {f"w{i}": jnp.full(2, i) for i in range(n)}})).write(
        "memory://pytrees/once/b"
    )
    ckpt = tp.Checkpoint(t=FrozenMapping({"d": {f"w{i}": jnp.zeros(2, jnp.int32) for i in range(n)}}))
    rebuilt = []
    node = ckpt._lookup_dependency("t")
    original = node._rebuild

    def counting() -> None:
        rebuilt.append(1)
        original()

    node._rebuild = counting
    ckpt.read(path).assert_consumed()
    assert len(rebuilt) == 1 and ckpt.t.items["d"]["w7"].tolist() == [7, 7]


def test_a_restore_lets_the_templates_replaced_arrays_go() -> None:
    import gc
    import weakref

    path = tp.Checkpoint(n=Mutable(jnp.ones(1000)), d={"w": jnp.ones(1000)}).write("memory://pytrees/free/ckpt")
    direct, inside = jnp.zeros(1000), jnp.zeros(1000)
    refs = [weakref.ref(direct), weakref.ref(inside)]
    ckpt = tp.Checkpoint(n=Mutable(direct), d={"w": inside})
    del direct, inside
    ckpt.read(path).assert_consumed()
    gc.collect()
    assert [ref() is None for ref in refs] == [True, True]  # the template's node and dict held them until now
    assert float(ckpt.n.weights[0]) == 1.0 and float(ckpt.d["w"][0]) == 1.0


def test_an_object_holding_a_node_pickles_and_saves_after() -> None:
    import pickle

    holder = tp.AutoTrackable()
    holder.state = Normalized(jnp.int32(2), np.ones(2))
    copied = pickle.loads(pickle.dumps(holder))
    path = tp.Checkpoint(m=copied).write("memory://pytrees/pickled/ckpt")
    assert tp.load_tree(path)["m"]["state"]["w"].tolist() == [1.0, 1.0]
