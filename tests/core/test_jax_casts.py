"""A restore into a ``jax.ShapeDtypeStruct`` template gives the template's dtype, as Orbax's does.

Values are cast within a kind (integers, floats with bfloat16 and the float8 types, complex, bool); an integer
that does not fit and a cast across kinds are refused, naming the key. A restore into an existing JAX array
keeps TensorFlow's strict dtype check, and says how to cast.
Typed PRNG keys are never cast (see test_jax_prng_keys.py).
"""

from __future__ import annotations

import dataclasses
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
ml_dtypes = pytest.importorskip("ml_dtypes")

KEY = "/.ATTRIBUTES/VARIABLE_VALUE"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class State:
    step: Any  # a Python int in an eager loop (flax's TrainState.step), an int32 array once jitted
    lr: Any  # a Python float
    params: Any


def test_python_numbers_saved_as_64_bits_restore_into_an_eval_shape_template_as_its_dtype() -> None:
    # JAX without x64 makes int32 and float32 where the save wrote the Python numbers as int64 and float64.
    state = State(step=12, lr=1e-3, params={"w": jnp.ones((2, 3))})
    path = tp.Checkpoint(state=state).save("memory://casts/py/ckpt")
    dtypes = tp.load_checkpoint(path).get_variable_to_dtype_map()
    assert dtypes["state/step" + KEY] == np.int64 and dtypes["state/lr" + KEY] == np.float64
    template = jax.eval_shape(lambda: State(step=0, lr=0.0, params={"w": jnp.zeros((2, 3))}))
    assert template.step.dtype == jnp.int32 and template.lr.dtype == jnp.float32

    ckpt = tp.Checkpoint(state=template)
    ckpt.restore(path).assert_consumed()

    got = ckpt.state
    assert type(got) is State and isinstance(got.step, jax.Array) and isinstance(got.lr, jax.Array)
    assert got.step.dtype == jnp.int32 and int(got.step) == 12
    assert got.lr.dtype == jnp.float32 and float(got.lr) == pytest.approx(1e-3)
    # The template's weak types too: a learning rate from a Python float does not promote a bfloat16 product.
    assert got.step.weak_type and got.lr.weak_type
    assert (got.lr * jnp.ones(2, jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("saved", "template"),
    [
        (np.float32, "bfloat16"),
        (np.float32, "float8_e4m3fn"),
        (np.float64, np.float16),
        ("bfloat16", np.float32),
        (np.int32, np.int8),
        (np.uint8, np.int32),
        (np.int64, np.uint16),
        (np.complex128, np.complex64),
    ],
)
def test_a_template_casts_within_a_kind(saved: Any, template: Any) -> None:
    saved_dtype = np.dtype(getattr(ml_dtypes, saved) if isinstance(saved, str) else saved)
    template_dtype = np.dtype(getattr(ml_dtypes, template) if isinstance(template, str) else template)
    values = np.array([0, 1, 2, 3], dtype=np.int64).astype(saved_dtype)
    path = tp.Checkpoint(w=values).save("memory://casts/kinds/ckpt")
    assert tp.load_checkpoint(path).get_variable_to_dtype_map()["w" + KEY] == saved_dtype

    ckpt = tp.Checkpoint(w=jax.ShapeDtypeStruct((4,), template_dtype))
    ckpt.restore(path).assert_consumed()

    assert isinstance(ckpt.w, jax.Array) and ckpt.w.dtype == template_dtype
    np.testing.assert_array_equal(np.asarray(ckpt.w), values.astype(template_dtype))


def test_an_integer_that_does_not_fit_the_template_is_refused_naming_key_and_values() -> None:
    path = tp.Checkpoint(state={"step": 2**40, "w": np.arange(3)}).save("memory://casts/big/ckpt")
    template = jax.eval_shape(lambda: {"step": jnp.int32(0), "w": jnp.zeros(3, jnp.int8)})
    with pytest.raises(tp.DTypeMismatchError) as caught:
        tp.Checkpoint(state=template).restore(path)
    message = str(caught.value)
    assert "'state/step/.ATTRIBUTES/VARIABLE_VALUE'" in message and "Checkpoint.state['step']" in message
    assert "int64 values that do not fit in it (1 of 1: 1099511627776)" in message and "dtype int32" in message
    assert "jax_enable_x64" in message
    # Negative values do not fit an unsigned template either.
    path = tp.Checkpoint(w=np.array([-1, 5, -7], np.int32)).save("memory://casts/neg/ckpt")
    with pytest.raises(tp.DTypeMismatchError, match=r"int32 values that do not fit in it \(2 of 3: -1, -7\)"):
        tp.Checkpoint(w=jax.ShapeDtypeStruct((3,), jnp.uint8)).restore(path)


@pytest.mark.parametrize(
    ("saved", "template", "shown"),
    [
        (np.int64, np.float32, "the checkpoint holds dtype int64, the template has dtype float32"),
        (np.float32, np.int32, "the checkpoint holds dtype float32, the template has dtype int32"),
        (np.float32, np.bool_, "the checkpoint holds dtype float32, the template has dtype bool"),
        (np.bool_, np.int8, "the checkpoint holds dtype bool, the template has dtype int8"),
        (np.complex64, np.float32, "the checkpoint holds dtype complex64, the template has dtype float32"),
    ],
)
def test_a_cast_across_kinds_is_refused_before_anything_changes(saved: Any, template: Any, shown: str) -> None:
    path = tp.Checkpoint(p={"a": np.ones(2, np.float32), "b": np.ones(2, saved)}).save("memory://casts/x/ckpt")
    target = {"a": jax.ShapeDtypeStruct((2,), jnp.float32), "b": jax.ShapeDtypeStruct((2,), template)}
    ckpt = tp.Checkpoint(p=target)
    with pytest.raises(tp.DTypeMismatchError) as caught:
        ckpt.restore(path)
    message = str(caught.value)
    assert "'p/b/.ATTRIBUTES/VARIABLE_VALUE'" in message and shown in message
    assert "only within a kind" in message
    # Refused while checking, before any value was given: the other template is still one.
    assert isinstance(ckpt.p["a"], jax.ShapeDtypeStruct)


def test_a_restore_into_an_existing_jax_array_keeps_its_dtype_and_says_how_to_cast() -> None:
    path = tp.Checkpoint(p={"w": jnp.ones(2, jnp.float32)}).save("memory://casts/strict/ckpt")
    existing = {"w": jnp.zeros(2, jnp.bfloat16)}
    with pytest.raises(tp.DTypeMismatchError) as caught:
        tp.Checkpoint(p=existing).restore(path)
    message = str(caught.value)
    assert "the checkpoint holds dtype float32, the value has dtype bfloat16" in message
    assert "restore into a jax.ShapeDtypeStruct template" in message
    # The same restore through a template of that dtype casts.
    ckpt = tp.Checkpoint(p=jax.eval_shape(lambda: existing))
    ckpt.restore(path).assert_consumed()
    assert ckpt.p["w"].dtype == jnp.bfloat16 and ckpt.p["w"].tolist() == [1.0, 1.0]


def test_a_template_restored_once_casts_again_on_the_next_restore() -> None:
    # The arrays that replaced the template are still the ones it asked for: a rollback restores into them alike.
    first = tp.Checkpoint(state={"step": 3}).save("memory://casts/again/a")
    second = tp.Checkpoint(state={"step": 9}).save("memory://casts/again/b")
    ckpt = tp.Checkpoint(state=jax.eval_shape(lambda: {"step": jnp.int32(0)}))
    ckpt.restore(first).assert_consumed()
    assert ckpt.state["step"].dtype == jnp.int32 and int(ckpt.state["step"]) == 3
    ckpt.restore(second).assert_consumed()
    assert ckpt.state["step"].dtype == jnp.int32 and int(ckpt.state["step"]) == 9


def test_a_cast_restore_lands_on_the_shardings_eval_shape_of_a_jit_gives(tmp_path: Path) -> None:
    # jax.eval_shape of a jit with out_shardings gives templates with those shardings; two host devices need
    # XLA_FLAGS before jax starts: a fresh interpreter.
    script = textwrap.dedent(
        f"""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec
        import trackpoint as tp

        path = tp.Checkpoint(state={{"w": np.arange(8.0), "step": 5}}).write({str(tmp_path / "ckpt")!r})
        mesh = jax.make_mesh((2,), ("x",))
        shardings = {{"w": NamedSharding(mesh, PartitionSpec("x")), "step": NamedSharding(mesh, PartitionSpec())}}
        init = jax.jit(lambda: {{"w": jnp.zeros(8, jnp.bfloat16), "step": jnp.int32(0)}}, out_shardings=shardings)
        abstract = jax.eval_shape(init)
        assert abstract["w"].sharding == shardings["w"], abstract
        ckpt = tp.Checkpoint(state=abstract)
        ckpt.read(path).assert_consumed()
        w, step = ckpt.state["w"], ckpt.state["step"]
        assert w.sharding == shardings["w"] and len(w.addressable_shards) == 2, w.sharding
        assert w.dtype == jnp.bfloat16 and np.asarray(w, np.float32).tolist() == list(range(8))
        assert step.dtype == jnp.int32 and int(step) == 5 and step.sharding == shardings["step"]
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
