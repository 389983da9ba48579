"""A restore refused because a value does not fit its template's integer dtype changes nothing.

Whether an integer fits is known only once it is read; the restore reads and checks those values before it
gives any object its value (JAX arrays replaced, numpy arrays written in place), so the tree is left as it
was and the restore can be tried again with a wider template.
"""

from __future__ import annotations

import numpy as np
import pytest

import trackpoint as tp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def test_an_integer_that_does_not_fit_leaves_every_value_as_it_was() -> None:
    saved = {"a": jnp.ones(3), "b": 2**40, "c": jnp.arange(3.0), "d": jnp.int32(1)}
    path = tp.Checkpoint(state=saved, numbers=np.arange(3.0)).save("memory://cast-atomic/one/ckpt")
    template = jax.eval_shape(
        lambda: {"a": jnp.zeros(3, jnp.bfloat16), "b": jnp.int32(0), "c": jnp.zeros(3), "d": jnp.int32(0)}
    )
    numbers = np.zeros(3)  # restored in place: written only once every value was found to fit
    ckpt = tp.Checkpoint(state=template, numbers=numbers)
    with pytest.raises(tp.DTypeMismatchError) as caught:
        ckpt.restore(path)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(ckpt.state))
    assert numbers.tolist() == [0.0, 0.0, 0.0]
    assert str(caught.value).startswith(
        "cannot restore 'state/b/.ATTRIBUTES/VARIABLE_VALUE' into the jax.ShapeDtypeStruct 'b' (Checkpoint.state['b'])"
        " of dtype int32: the checkpoint holds int64 values that do not fit in it (1 of 1: 1099511627776)"
    )
    assert str(caught.value).endswith("; nothing was restored")
    # The same objects, once the template fits (a cast within a kind, as before): restored.
    ckpt.state = {**template, "b": 0}  # a Python int takes any integer
    ckpt.restore(path).assert_consumed()
    assert ckpt.state["b"] == 2**40 and ckpt.state["a"].dtype == jnp.bfloat16 and numbers.tolist() == [0, 1, 2]


def test_every_value_that_does_not_fit_is_named_at_once() -> None:
    path = tp.Checkpoint(big=np.array([1, 300], np.int32), small=np.int64(-(2**40))).save("memory://cast-atomic/two")
    ckpt = tp.Checkpoint(big=jax.ShapeDtypeStruct((2,), jnp.int8), small=jax.ShapeDtypeStruct((), jnp.int32))
    with pytest.raises(tp.DTypeMismatchError) as caught:
        ckpt.restore(path)
    message = str(caught.value)
    assert "2 values of the checkpoint do not fit their objects (nothing was restored)" in message
    assert "'big'" in message and "(1 of 2: 300)" in message and "'small'" in message
    assert isinstance(ckpt.big, jax.ShapeDtypeStruct) and isinstance(ckpt.small, jax.ShapeDtypeStruct)
