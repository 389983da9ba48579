"""JAX arrays held by attributes, containers and state dicts are saved as numpy values are, and replaced on restore.

JAX arrays are immutable: a restore puts a new array, on the sharding of the one it replaces, where the old one
was held. The dict and list wrappers are JAX pytree nodes, so JAX functions see through them.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def test_an_attribute_holding_a_jax_array_is_saved_and_replaced_on_restore(tmp_path: Path) -> None:
    source = tp.AutoTrackable()
    source.w = jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3)
    source.pair = (jnp.int32(7), "config")
    path = tp.Checkpoint(model=source).write(str(tmp_path / "ckpt"))
    # The keys a numpy value (or a variable) in that place has, so TensorFlow reads them too.
    assert ("model/w/.ATTRIBUTES/VARIABLE_VALUE", [2, 3]) in tp.list_variables(path)
    target = tp.AutoTrackable()
    old = target.w = jnp.zeros((2, 3), jnp.bfloat16)
    target.pair = (jnp.int32(0), "config")
    tp.Checkpoint(model=target).read(path).assert_consumed()
    assert isinstance(target.w, jax.Array) and target.w is not old
    assert target.w.dtype == jnp.bfloat16 and target.w.sharding == old.sharding
    np.testing.assert_array_equal(np.asarray(target.w), np.asarray(source.w))
    assert isinstance(target.pair[0], jax.Array) and int(target.pair[0]) == 7 and target.pair[1] == "config"


def test_containers_of_jax_arrays_restore_and_give_plain_pytrees_back(tmp_path: Path) -> None:
    params = {"dense": {"w": jnp.ones((3, 2)), "b": jnp.full(2, 0.5)}, "layers": [jnp.float32(2.0)]}
    path = tp.Checkpoint(params=jax.tree_util.tree_map(lambda x: x, params)).write(str(tmp_path / "ckpt"))
    template = jax.tree_util.tree_map(jnp.zeros_like, params)
    ckpt = tp.Checkpoint(params=template)
    ckpt.read(path).assert_consumed()
    restored = jax.tree_util.tree_map(lambda x: x, ckpt.params)
    assert type(restored) is dict and type(restored["dense"]) is dict and type(restored["layers"]) is list
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(params)
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(params), strict=True):
        assert isinstance(got, jax.Array)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # JAX functions see through the wrappers, with key paths.
    doubled = jax.jit(lambda tree: jax.tree_util.tree_map(lambda x: x * 2, tree))(ckpt.params)
    assert float(doubled["layers"][0]) == 4.0
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(ckpt.params)[0]]
    assert paths == ["['dense']['b']", "['dense']['w']", "['layers'][0]"]


def test_a_jax_array_that_does_not_fit_is_refused_before_anything_changes(tmp_path: Path) -> None:
    path = tp.Checkpoint(p={"a": jnp.ones(3), "b": jnp.ones(2)}).write(str(tmp_path / "ckpt"))
    target = {"a": jnp.zeros(3), "b": jnp.zeros(4)}
    before = dict(target)
    with pytest.raises(tp.ShapeMismatchError, match=r"'p/b/.ATTRIBUTES/VARIABLE_VALUE'"):
        tp.Checkpoint(p=target).read(path)
    assert target["a"] is before["a"] and float(target["a"].sum()) == 0.0


def test_a_state_dict_of_jax_arrays_is_rebuilt_as_jax_arrays(tmp_path: Path) -> None:
    path = tp.Checkpoint(loader=StateHolder({"mu": jnp.arange(3.0), "step": 4})).write(str(tmp_path / "ckpt"))
    target = StateHolder({})
    tp.Checkpoint(loader=target).read(path).assert_consumed()
    assert isinstance(target.state["mu"], jax.Array) and target.state["step"] == 4
    np.testing.assert_array_equal(np.asarray(target.state["mu"]), [0.0, 1.0, 2.0])


def test_a_sharded_array_is_restored_on_its_sharding(tmp_path: Path) -> None:
    # Two host devices need XLA_FLAGS before jax starts: a fresh interpreter.
    script = textwrap.dedent(
        f"""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        import trackpoint as tp

        mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
        sharding = NamedSharding(mesh, PartitionSpec("x"))
        source = tp.AutoTrackable()
        source.w = jax.device_put(jnp.arange(8.0), sharding)
        path = tp.Checkpoint(m=source).write({str(tmp_path / "ckpt")!r})
        # Gathered shard by shard: np.asarray would leave a host copy on the array for its lifetime.
        assert source.w._npy_value is None
        target = tp.AutoTrackable()
        target.w = jax.device_put(jnp.zeros(8), sharding)
        tp.Checkpoint(m=target).read(path).assert_consumed()
        assert target.w.sharding == sharding, target.w.sharding
        assert len(target.w.addressable_shards) == 2
        np.testing.assert_array_equal(np.asarray(target.w), np.arange(8.0))
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_an_optimizer_state_of_namedtuples_round_trips_with_its_tree_structure(tmp_path: Path) -> None:
    # The shape of an optax state: a tuple of namedtuples holding a step count and pytrees of moments.
    class ScaleByAdamState(NamedTuple):
        count: Any
        mu: Any
        nu: Any

    class EmptyState(NamedTuple):
        pass

    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    opt_state = (
        ScaleByAdamState(
            jnp.int32(5), {"w": jnp.full((2, 2), 0.1), "b": jnp.full(2, 0.2)}, {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
        ),
        EmptyState(),
    )

    def copy(tree: Any) -> Any:
        return jax.tree_util.tree_map(lambda x: x, tree)

    path = tp.Checkpoint(state={"params": copy(params), "opt": copy(opt_state)}).write(str(tmp_path / "ckpt"))
    zeros = {
        "params": jax.tree_util.tree_map(jnp.zeros_like, params),
        "opt": jax.tree_util.tree_map(jnp.zeros_like, opt_state),
    }
    ckpt = tp.Checkpoint(state=zeros)
    ckpt.read(path).assert_consumed()
    restored = copy(ckpt.state)
    assert jax.tree_util.tree_structure(restored["opt"]) == jax.tree_util.tree_structure(opt_state)
    assert isinstance(restored["opt"][0], ScaleByAdamState) and int(restored["opt"][0].count) == 5
    for got, want in zip(
        jax.tree_util.tree_leaves(restored),
        jax.tree_util.tree_leaves({"params": params, "opt": opt_state}),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_pytree_given_to_a_holder_stays_plain_for_the_users_jax_code(tmp_path: Path) -> None:
    # The eager loop of an optax user: the pytree assigned before a save is then combined with plain trees.
    params = {"dense": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}, "layers": [jnp.ones(1)]}
    state = tp.AutoTrackable()
    state.params = params
    ckpt = tp.Checkpoint(state=state, also=params)
    assert type(params["dense"]) is dict and type(params["layers"]) is list  # the user's containers
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updated = jax.tree_util.tree_map(lambda p, g: p - g, params, grads)  # raised on wrapped containers
    assert float(updated["dense"]["b"][0]) == -1.0
    ckpt.write(str(tmp_path / "ckpt"))
    state.params = updated  # the next step's arrays
    path = ckpt.write(str(tmp_path / "ckpt2"))
    assert float(tp.load_checkpoint(path).get_tensor("state/params/dense/b/.ATTRIBUTES/VARIABLE_VALUE")[0]) == -1.0


def test_a_donated_array_is_refused_with_what_to_do(tmp_path: Path) -> None:
    holder = tp.AutoTrackable()
    holder.x = jnp.ones(4)
    holder.x.delete()  # as donating it to a jitted function does
    with pytest.raises(tp.TrackableError, match=r"AutoTrackable\.x: the JAX array was deleted \(donated"):
        tp.Checkpoint(m=holder).write(str(tmp_path / "ckpt"))


def test_shape_dtype_structs_are_restored_into_and_never_saved(tmp_path: Path) -> None:
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(2, jnp.bfloat16)}
    path = tp.Checkpoint(params=params, step=7).write(str(tmp_path / "ckpt"))
    ckpt = tp.Checkpoint(params=jax.eval_shape(lambda: params), step=0)  # no memory for the template
    ckpt.read(path).assert_consumed()
    restored = jax.tree_util.tree_map(lambda x: x, ckpt.params)
    assert isinstance(restored["w"], jax.Array) and restored["b"].dtype == jnp.bfloat16 and ckpt.step == 7
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(params["w"]))
    with pytest.raises(
        tp.TrackableError, match=r"Checkpoint\.params\['b'\] is a jax\.ShapeDtypeStruct, which holds no"
    ):
        tp.Checkpoint(params=jax.eval_shape(lambda: params)).write(str(tmp_path / "bad"))


def test_an_ordered_dict_keeps_its_order_and_type_through_jax() -> None:
    ordered = collections.OrderedDict([("z", jnp.ones(1)), ("a", jnp.zeros(1))])
    ckpt = tp.Checkpoint(p=ordered)
    plain = jax.tree_util.tree_map(lambda x: x, ckpt.p)
    assert type(plain) is collections.OrderedDict and list(plain) == ["z", "a"]
    assert jax.tree_util.tree_structure(plain) == jax.tree_util.tree_structure(ordered)


def test_none_in_a_pytree_is_kept_and_saves_nothing(tmp_path: Path) -> None:
    path = tp.Checkpoint(p={"w": jnp.ones(2), "frozen": None}).write(str(tmp_path / "ckpt"))
    assert [key for key, _ in tp.list_variables(path)] == [
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "p/w/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    target = tp.Checkpoint(p={"w": jnp.zeros(2), "frozen": None})
    target.read(path).assert_consumed()
    assert target.p["frozen"] is None


def test_a_weakly_typed_scalar_stays_weak(tmp_path: Path) -> None:
    path = tp.Checkpoint(t={"lr": jnp.asarray(0.5), "w": jnp.ones(2, jnp.bfloat16)}).write(str(tmp_path / "ckpt"))
    ckpt = tp.Checkpoint(t={"lr": jnp.asarray(0.0), "w": jnp.zeros(2, jnp.bfloat16)})
    ckpt.read(path).assert_consumed()
    assert ckpt.t["lr"].weak_type and float(ckpt.t["lr"]) == 0.5
    assert (ckpt.t["lr"] * ckpt.t["w"]).dtype == jnp.bfloat16  # as before the save: no promotion to float32


def test_a_pytree_changed_after_it_was_given_is_refused_not_saved_stale(tmp_path: Path) -> None:
    state = {"w": jnp.ones(2), "inner": {"v": jnp.ones(1)}}
    ckpt = tp.Checkpoint(state=state)
    ckpt.write(str(tmp_path / "a"))
    state["inner"]["v"] = jnp.zeros(1)  # the user's dict; the checkpoint holds a copy of the containers
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.state\['inner'\]: the dict given there holds JAX"):
        ckpt.write(str(tmp_path / "b"))
    ckpt.state = state  # assigned again: saved as it is now
    path = ckpt.write(str(tmp_path / "c"))
    assert tp.load_checkpoint(path).get_tensor("state/inner/v/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [0.0]


def test_a_pytree_holding_itself_does_not_hang() -> None:
    tree: dict[str, Any] = {"w": jnp.ones(1)}
    tree["self"] = tree
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.tree\['self'\] is a dict that also holds it"):
        tp.Checkpoint(tree=tree)


def test_wrappers_made_before_jax_was_imported_are_seen_through() -> None:
    script = textwrap.dedent(
        """
        import numpy as np
        import trackpoint as tp

        ckpt = tp.Checkpoint(p={"w": np.ones(1)})  # wrapped before jax exists in the process
        import jax, jax.numpy as jnp

        ckpt.p["x"] = jnp.ones(2)
        print(len(jax.tree_util.tree_leaves(ckpt.p)))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr


def test_a_template_the_checkpoint_has_no_value_for_is_said_at_restore(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A ShapeDtypeStruct holds no values: left in place unsaid, it would fail later, inside a jitted function.
    path = tp.Checkpoint(p={"a": jnp.ones(2), "b": jnp.zeros(2)}).write(str(tmp_path / "ckpt"))
    spec = jax.ShapeDtypeStruct((2,), jnp.float32)
    with caplog.at_level("WARNING", logger="trackpoint"):
        tp.Checkpoint(p={"a": spec, "b": spec}).read(path).assert_consumed()
    assert "template" not in caplog.text
    target = tp.Checkpoint(p={"a": spec, "c": spec})
    with caplog.at_level("WARNING", logger="trackpoint"):
        target.read(path).expect_partial()
    assert "left 1 jax.ShapeDtypeStruct template(s) without a value" in caplog.text
    assert "'c' shape=(2,)" in caplog.text and "'a'" not in caplog.text.split("value, which")[1]
