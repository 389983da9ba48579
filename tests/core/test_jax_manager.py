"""``CheckpointManager.restore_or_initialize`` refuses to leave ``jax.ShapeDtypeStruct`` templates without a value.

It returns no status to check, and a template holds no values: left in the restored tree, it would fail later
inside ``jax.jit`` with an error that does not say why. ``Checkpoint.restore`` keeps TensorFlow's status
semantics: the status tells, ``expect_partial()`` allows it, and a later restore can fill the template.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

import trackpoint as tp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def test_restore_or_initialize_refuses_templates_left_without_a_value(caplog: pytest.LogCaptureFixture) -> None:
    old = {"params": {"dense": {"w": jnp.full((2, 2), 7.0)}, "head": {"w": jnp.full(2, 7.0)}}, "step": jnp.int32(100)}
    tp.CheckpointManager(tp.Checkpoint(state=old), "memory://tmpl/run", max_to_keep=2).save(checkpoint_number=100)
    # The new program renamed head to out.
    new = {"params": {"dense": {"w": jnp.zeros((2, 2))}, "out": {"w": jnp.zeros(2)}}, "step": jnp.int32(0)}
    ckpt = tp.Checkpoint(state=jax.eval_shape(lambda: new))
    manager = tp.CheckpointManager(ckpt, "memory://tmpl/run", max_to_keep=2)
    with pytest.raises(tp.MatchError) as caught:
        manager.restore_or_initialize()
    message = str(caught.value)
    assert "restored memory://tmpl/run/ckpt-100, but 1 jax.ShapeDtypeStruct template(s) got no value" in message
    assert "(root).state.params.out.w" in message  # the template left
    assert "no object took (renamed there?): (root).state.params.head.w" in message  # the checkpoint's value
    assert "expect_partial()" in message
    # What matched was restored; the template left is still one.
    assert float(ckpt.state["params"]["dense"]["w"][0, 0]) == 7.0 and int(ckpt.state["step"]) == 100
    assert isinstance(ckpt.state["params"]["out"]["w"], jax.ShapeDtypeStruct)

    # Concrete values keep their initial values, as in TensorFlow: logged, not refused (they hold values).
    concrete = tp.Checkpoint(state=new)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        assert tp.CheckpointManager(concrete, "memory://tmpl/run", max_to_keep=2).restore_or_initialize()
    assert "keep their initial values" in caplog.text and "(root).state.params.out.w" in caplog.text


def test_checkpoint_restore_keeps_the_status_semantics_for_templates() -> None:
    # A partial restore on purpose: the pretrained body from one checkpoint (saved in float64, cast into the
    # template's float32), the head from another.
    body = tp.Checkpoint(params={"body": np.ones(2)}).save("memory://tmpl/body/ckpt")
    head = tp.Checkpoint(params={"head": jnp.full(3, 2.0)}).save("memory://tmpl/head/ckpt")
    ckpt = tp.Checkpoint(params=jax.eval_shape(lambda: {"body": jnp.zeros(2), "head": jnp.zeros(3)}))
    status = ckpt.restore(body)
    with pytest.raises(tp.MatchError, match=r"\(root\)\.params\.head"):
        status.assert_existing_objects_matched()
    ckpt.restore(head).expect_partial()
    assert ckpt.params["body"].tolist() == [1.0, 1.0] and ckpt.params["body"].dtype == jnp.float32
    assert ckpt.params["head"].tolist() == [2.0, 2.0, 2.0]
    # Through the manager, the same directory resumes once the tree matches.
    manager = tp.CheckpointManager(ckpt, "memory://tmpl/both", max_to_keep=1)
    manager.save(checkpoint_number=1)
    again = tp.Checkpoint(params=jax.eval_shape(lambda: {"body": jnp.zeros(2), "head": jnp.zeros(3)}))
    assert tp.CheckpointManager(again, "memory://tmpl/both", max_to_keep=1).restore_or_initialize()
    assert again.params["head"].tolist() == [2.0, 2.0, 2.0]
