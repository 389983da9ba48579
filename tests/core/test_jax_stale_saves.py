"""A save that writes exactly the JAX arrays of the previous save of its checkpoint is said, once.

A functional JAX loop rebinds ``state = update(state)``; without ``ckpt.state = state`` before saving, every
save writes the state the checkpoint was given. JAX arrays are immutable, so the very same array objects mean
the very same values: the checkpoint compares identities (held weakly) and logs a warning naming where.
"""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any

import numpy as np
import pytest

import trackpoint as tp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

STALE = "every JAX array it saves is the very array the previous save of this Checkpoint"


def update(state: dict[str, Any]) -> dict[str, Any]:
    return {"w": state["w"] + 1.0, "step": state["step"] + 1}


def stale_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if STALE in r.getMessage()]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_loop_that_forgets_to_assign_the_new_state_is_warned_once(
    caplog: pytest.LogCaptureFixture, asynchronous: bool
) -> None:
    state = {"w": jnp.zeros(3), "step": jnp.int32(0)}
    ckpt = tp.Checkpoint(state=state)
    options = tp.CheckpointOptions(enable_async=asynchronous)
    manager = tp.CheckpointManager(ckpt, "memory://stale/run", max_to_keep=5, options=options)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        for step in range(1, 5):
            state = update(state)  # forgot: ckpt.state = state
            manager.save(checkpoint_number=step)
        manager.sync()
    (message,) = stale_warnings(caplog)  # once per checkpoint, not once per save
    assert message.startswith("saving memory://stale/run/ckpt-2: ") and "memory://stale/run/ckpt-1" in message
    assert "(root).state.step, (root).state.w" in message and "`ckpt.state = state`" in message
    assert "ignore this" in message  # the message says when it is a false alarm
    # What it warns about: the checkpoint indeed holds the first state.
    assert tp.load_tree("memory://stale/run")["state"]["w"].tolist() == [0.0, 0.0, 0.0]


def test_no_warning_when_the_state_is_assigned_or_any_array_changed(caplog: pytest.LogCaptureFixture) -> None:
    # numpy arrays, variables and numbers change in place: unchanged between saves says nothing.
    numpy_ckpt = tp.Checkpoint(w=np.zeros(3), v=tp.Variable(1.0), n=3)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        for _ in range(3):
            numpy_ckpt.save("memory://numpy/ckpt")
    assert stale_warnings(caplog) == []
    frozen = {"embedding": jnp.ones(4)}  # never updated, saved with the rest
    state = {"w": jnp.zeros(3), "step": jnp.int32(0)}
    ckpt = tp.Checkpoint(frozen=frozen, state=state)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        for _ in range(3):
            state = update(state)
            ckpt.state = state
            ckpt.save("memory://fresh/ckpt")
        # Only the step counter moved: a new array, so the state moved.
        ckpt.state = {"w": state["w"], "step": state["step"] + 1}
        ckpt.save("memory://fresh/ckpt")
    assert stale_warnings(caplog) == []
    # The same unchanged state written to the prefix the previous save wrote (a manager saving one step again,
    # as at the end of a run after a periodic save) is a deliberate re-save.
    manager = tp.CheckpointManager(ckpt, "memory://fresh/run", max_to_keep=2)
    ckpt.state = state = update(state)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        manager.save(checkpoint_number=5)
        manager.save(checkpoint_number=5)
    assert stale_warnings(caplog) == []
    # Saving it once more to another place is said (the message says to ignore it if meant).
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        ckpt.write("memory://fresh/copy")
    assert len(stale_warnings(caplog)) == 1


def test_the_record_of_a_save_keeps_no_array_alive(caplog: pytest.LogCaptureFixture) -> None:
    state = {"w": jnp.zeros(1000)}
    ckpt = tp.Checkpoint(state=state)
    ckpt.save("memory://weak/ckpt")
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        ckpt.save("memory://weak/ckpt")
    assert len(stale_warnings(caplog)) == 1  # the record is there, and recognised the array
    old = weakref.ref(state["w"])
    ckpt.state = state = {"w": state["w"] + 1}
    gc.collect()
    # The checkpoint let the replaced array go: the record of the saves holds it weakly.
    assert old() is None
