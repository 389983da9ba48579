"""Typed JAX PRNG key arrays are saved as their key data and restored with the template's implementation.

A key array (``jax.random.key``, dtype ``key<fry>``) is saved as ``jax.random.key_data`` (uint32, the
implementation's key shape after the keys' shape) under the usual key. A restore into a key array or an
abstract key template wraps the data with that template's implementation, onto its sharding, and refuses data
of another implementation's shape before anything is restored. The data is never cast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def _same_keys(got: Any, want: Any) -> None:
    """``got`` is a typed key array of ``want``'s implementation with the same bits, and splits the same."""
    assert jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key), got.dtype
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(got)), np.asarray(jax.random.key_data(want)))
    got_next = jax.random.key_data(jax.random.split(got.reshape(-1)[0]))
    want_next = jax.random.key_data(jax.random.split(want.reshape(-1)[0]))
    np.testing.assert_array_equal(np.asarray(got_next), np.asarray(want_next))


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_typed_keys_round_trip_into_concrete_and_abstract_templates(tmp_path: Path, impl: str, shape: Any) -> None:
    def make(seed: int) -> Any:
        key = jax.random.key(seed, impl=impl)
        return key if shape == () else jax.random.split(key, shape)

    keys = make(7)
    path = tp.Checkpoint(state={"rng": keys}).write(str(tmp_path / "ckpt"))
    # Saved as the key data under the usual key, which load_tree shows.
    data = np.asarray(jax.random.key_data(keys))
    assert ("state/rng/.ATTRIBUTES/VARIABLE_VALUE", list(data.shape)) in tp.list_variables(path)
    loaded = tp.load_tree(path)["state"]["rng"]
    assert loaded.dtype == np.uint32
    np.testing.assert_array_equal(loaded, data)

    concrete = tp.Checkpoint(state={"rng": make(0)})
    concrete.read(path).assert_consumed()
    _same_keys(concrete.state["rng"], keys)

    abstract = tp.Checkpoint(state=jax.eval_shape(lambda: {"rng": make(0)}))
    abstract.read(path).assert_consumed()
    _same_keys(abstract.state["rng"], keys)
    # Restored keys save again.
    again = abstract.write(str(tmp_path / "again"))
    np.testing.assert_array_equal(tp.load_tree(again)["state"]["rng"], data)


def test_an_nnx_like_state_with_keys_and_params_restores_abstractly(tmp_path: Path) -> None:
    def init() -> dict[str, Any]:
        return {"params": {"w": jnp.ones((2, 3))}, "rngs": {"default": {"key": jax.random.key(3), "count": 0}}}

    state = init()
    state["rngs"]["default"]["key"] = jax.random.split(state["rngs"]["default"]["key"])[0]
    path = tp.Checkpoint(state=state).save(str(tmp_path / "ckpt"))
    ckpt = tp.Checkpoint(state=jax.eval_shape(init))
    ckpt.restore(path).assert_consumed()
    _same_keys(ckpt.state["rngs"]["default"]["key"], state["rngs"]["default"]["key"])
    np.testing.assert_array_equal(np.asarray(ckpt.state["params"]["w"]), np.ones((2, 3)))


@pytest.mark.parametrize("abstract", [False, True])
def test_keys_of_another_implementation_are_refused_before_anything_is_restored(tmp_path: Path, abstract: bool) -> None:
    path = tp.Checkpoint(a=jnp.arange(3.0), rng=jax.random.key(1, impl="rbg")).write(str(tmp_path / "ckpt"))
    ckpt = tp.Checkpoint(a=jnp.zeros(3), rng=jax.random.key(0))
    if abstract:
        ckpt = tp.Checkpoint(a=jnp.zeros(3), rng=jax.eval_shape(lambda: jax.random.key(0)))
    old_a, old_rng = ckpt.a, ckpt.rng
    with pytest.raises(tp.ShapeMismatchError) as caught:
        ckpt.read(path)
    message = str(caught.value)
    assert "'rng/.ATTRIBUTES/VARIABLE_VALUE'" in message and "implementation threefry2x32" in message
    assert "key data of shape (4,)" in message and "need key data of shape (2,)" in message
    assert ckpt.a is old_a and ckpt.rng is old_rng


def test_key_data_of_another_dtype_is_not_cast_into_keys(tmp_path: Path) -> None:
    path = tp.Checkpoint(rng=np.array([0, 1], dtype=np.int32)).write(str(tmp_path / "ckpt"))
    ckpt = tp.Checkpoint(rng=jax.eval_shape(lambda: jax.random.key(0)))
    with pytest.raises(tp.DTypeMismatchError, match=r"holds dtype int32, and keys are restored from their uint32"):
        ckpt.read(path)


def test_typed_and_raw_uint32_keys_restore_into_each_other(tmp_path: Path) -> None:
    typed = jax.random.key(11)
    raw = jax.random.PRNGKey(11)
    typed_path = tp.Checkpoint(rng=typed).write(str(tmp_path / "typed"))
    raw_path = tp.Checkpoint(rng=raw).write(str(tmp_path / "raw"))

    into_raw = tp.Checkpoint(rng=jax.eval_shape(lambda: jax.random.PRNGKey(0)))
    into_raw.read(typed_path).assert_consumed()
    assert into_raw.rng.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(into_raw.rng), np.asarray(raw))

    into_typed = tp.Checkpoint(rng=jax.random.key(0))
    into_typed.read(raw_path).assert_consumed()
    _same_keys(into_typed.rng, typed)


def test_a_deleted_key_array_is_refused_at_save(tmp_path: Path) -> None:
    keys = jax.random.split(jax.random.key(0), 2)
    ckpt = tp.Checkpoint(rng=keys)
    keys.delete()
    with pytest.raises(tp.TrackableError, match=r"Checkpoint.rng: the JAX array was deleted"):
        ckpt.write(str(tmp_path / "ckpt"))


def test_sharded_keys_restore_onto_the_template_sharding(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        import trackpoint as tp

        sharding = NamedSharding(Mesh(np.array(jax.devices()), ("x",)), PartitionSpec("x"))
        for impl in ("threefry2x32", "rbg"):
            keys = jax.device_put(jax.random.split(jax.random.key(5, impl=impl), 8), sharding)
            path = tp.Checkpoint(rng=keys).write({str(tmp_path)!r} + "/" + impl)
            concrete = tp.Checkpoint(rng=jax.device_put(jax.random.split(jax.random.key(0, impl=impl), 8), sharding))
            template = jax.ShapeDtypeStruct(keys.shape, keys.dtype, sharding=sharding)
            abstract = tp.Checkpoint(rng=template)
            for ckpt in (concrete, abstract):
                ckpt.read(path).assert_consumed()
                assert ckpt.rng.dtype == keys.dtype and ckpt.rng.sharding == sharding, ckpt.rng.sharding
                assert len(ckpt.rng.addressable_shards) == 4
                assert (jax.random.key_data(ckpt.rng) == jax.random.key_data(keys)).all()
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
