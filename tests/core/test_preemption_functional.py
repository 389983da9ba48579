"""The preemption save of a functional JAX loop, which gives the checkpoint its state only before its own saves.

Such a loop (``state = train_step(state)``, Orbax's habit) leaves the checkpoint holding the state of its last
save: ``check(state=state)`` gives the checkpoint the current state when the preemption save happens, and
without it a save that meets the arrays a donating step deleted says what to do.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp
from preempting import preempt
from trackpoint.preemption import save_on_sigterm

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def _loop(directory: Path, *, donate: bool) -> tuple[tp.CheckpointManager, Any]:
    """Seven steps of a functional loop that assigns its state to the checkpoint only at its save at step 5."""

    @functools.partial(jax.jit, donate_argnums=0 if donate else ())
    def train_step(s: Any) -> Any:
        return {"w": s["w"] + 1.0, "step": s["step"] + 1}

    ckpt = tp.Checkpoint(state={"w": jnp.zeros(4), "step": jnp.int32(0)})
    manager = tp.CheckpointManager(ckpt, str(directory), max_to_keep=3)
    state = ckpt.state
    for _ in range(7):
        state = train_step(state)
        if int(state["step"]) == 5:
            ckpt.state = state
            manager.save(checkpoint_number=5)
    return manager, state


@pytest.mark.parametrize("donate", [True, False])
def test_check_given_the_state_saves_the_current_state(tmp_path: Path, donate: bool) -> None:
    manager, state = _loop(tmp_path, donate=donate)
    path = preempt(manager, state=state)
    saved = tp.load_tree(str(path))["state"]
    assert int(saved["step"]) == 7 and saved["w"].tolist() == [7.0] * 4  # not the state of the save at step 5
    assert manager.checkpoint.state is not None and int(manager.checkpoint.state["step"]) == 7


def test_a_preemption_save_meeting_donated_arrays_says_to_give_the_state_to_check(tmp_path: Path) -> None:
    manager, _ = _loop(tmp_path, donate=True)
    with pytest.raises(tp.TrackableError) as caught:
        preempt(manager)
    message = str(caught.value)
    assert message.startswith("Checkpoint.state[") and "the JAX array was deleted" in message
    assert "so the preemption save cannot write it" in message
    assert "`preemption.check(state=state)`" in message and "No preemption checkpoint was written" in message
    assert [p.rsplit("/", 1)[1] for p in manager.checkpoints] == ["ckpt-5"]


def test_values_for_a_function_target_are_refused() -> None:
    with save_on_sigterm(lambda: None, at_step=True, exit_after=False) as handler:
        with pytest.raises(tp.TrackableError, match=r"check\(state=\.\.\.\) gives the values to the checkpoint"):
            handler.check(state={})


def test_values_for_a_handler_saving_in_the_signal_handler_are_refused(tmp_path: Path) -> None:
    # at_step=False (the default) saves at the signal with what the checkpoint holds: the values would be dropped.
    ckpt = tp.Checkpoint(state={"step": jnp.int32(0)})
    manager = tp.CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)
    with save_on_sigterm(manager, exit_after=False) as handler:
        with pytest.raises(tp.TrackableError, match=r"check\(state=\.\.\.\): this handler saves in the signal") as e:
            handler.check(state={"step": jnp.int32(1)})
    assert "pass at_step=True to save_on_sigterm" in str(e.value)
    assert not handler.saved and manager.checkpoints == []


@pytest.mark.parametrize("name", ["save_counter", "write"])
def test_a_name_the_checkpoint_refuses_is_refused_at_the_first_check(tmp_path: Path, name: str) -> None:
    ckpt = tp.Checkpoint(state={"step": jnp.int32(0)})
    manager = tp.CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)
    with save_on_sigterm(manager, at_step=True, exit_after=False) as handler:
        with pytest.raises(tp.NameConflictError, match=rf"^PreemptionHandler\.check\({name}=\.\.\.\), which sets"):
            handler.check(**{name: jnp.int32(1)})  # no signal yet: refused all the same
        handler.check(state={"step": jnp.int32(1)})  # other names still pass
    assert not handler.signalled and manager.checkpoints == []


@pytest.mark.parametrize("value", ["a note", object(), {"tag": "a note"}], ids=["str", "object", "dict of str"])
def test_a_value_the_checkpoint_does_not_save_is_refused_at_the_first_check(tmp_path: Path, value: Any) -> None:
    # Refused at the preemption save instead, it would leave the job without its preemption checkpoint.
    state = {"step": jnp.int32(0)}
    manager = tp.CheckpointManager(tp.Checkpoint(state=state), str(tmp_path), max_to_keep=3)
    with save_on_sigterm(manager, at_step=True, exit_after=False) as handler:
        with pytest.raises(tp.TrackableError, match=r"^PreemptionHandler\.check\(state=\.\.\., extra=\.\.\.\): the"):
            handler.check(state=state, extra=value)  # no signal yet: refused all the same
        handler.check(state=state, step=3)  # a number is saved
    assert not handler.signalled and manager.checkpoints == []


def test_donated_arrays_given_to_check_are_named_as_such(tmp_path: Path) -> None:
    manager, state = _loop(tmp_path, donate=True)
    train_step = jax.jit(lambda s: {"w": s["w"] + 1.0, "step": s["step"] + 1}, donate_argnums=0)
    train_step(state)  # the loop forgot to rebind its state: `state` is deleted now
    with pytest.raises(tp.TrackableError) as caught:
        preempt(manager, state=state)
    message = str(caught.value)
    assert "the JAX array was deleted" in message
    assert "the arrays given to PreemptionHandler.check() were deleted" in message
    assert "Pass check() the current state" in message and "No preemption checkpoint was written" in message
    assert "`preemption.check(state=state)` assigns it" not in message  # the advice the loop followed already
    assert [p.rsplit("/", 1)[1] for p in manager.checkpoints] == ["ckpt-5"]
