"""torch's LBFGS, whose per-parameter state holds Python numbers and lists of tensors (its history).

Saving never changes the optimizer or the state dict given (no wrapper takes the place of a list), and a
restore into a fresh LBFGS gives it back its state in the types it keeps, from either layout: the optimizer
itself (``optimizer=opt``) or its state dict given as a dict (``optimizer=opt.state_dict()``). One more step
after the restore then makes the same parameters as one more step of the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp
from stateful_objects import assert_same
from torch_training import closure, lbfgs

torch = pytest.importorskip("torch")


def _types(opt: Any) -> dict[str, Any]:
    """The type of each entry of the optimizer's per-parameter state, and of a list's elements."""
    state = next(iter(opt.state.values()))
    return {
        key: (type(value), sorted({type(e).__name__ for e in value})) if isinstance(value, list) else type(value)
        for key, value in state.items()
    }


# One iteration: no history yet (empty lists, `H_diag` the Python int 1, no `al`); then some history, and a
# history that rolled over (`history_size` 3).
@pytest.mark.parametrize(("steps", "max_iter"), [(1, 1), (1, 4), (5, 4)])
@pytest.mark.parametrize("layout", ["object", "dict"])
def test_a_restored_lbfgs_steps_as_the_original(tmp_path: Path, steps: int, max_iter: int, layout: str) -> None:
    net, opt = lbfgs(0, steps, max_iter=max_iter)
    types = _types(opt)
    state = opt.state_dict()
    given = opt if layout == "object" else state
    path = tp.Checkpoint(model=net, optimizer=given).write(str(tmp_path / "ckpt"))

    # Nothing of the optimizer's or of the state dict given changed.
    assert _types(opt) == types
    assert all(type(v) is list for v in state["state"][0].values() if isinstance(v, list))
    assert type(state["state"]) is dict and type(state["param_groups"]) is list

    fresh_net, fresh_opt = lbfgs(0, 0, max_iter=max_iter)
    tp.Checkpoint(model=fresh_net, optimizer=fresh_opt).read(path).assert_consumed()
    assert _types(fresh_opt) == types

    opt.step(closure(net, opt))
    fresh_opt.step(closure(fresh_net, fresh_opt))
    for mine, theirs in zip(net.parameters(), fresh_net.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert _types(fresh_opt) == _types(opt)


def test_a_state_dict_given_as_a_dict_and_changed_by_a_step_is_saved_as_it_is_then(tmp_path: Path) -> None:
    net, opt = lbfgs(0, 2)
    state = opt.state_dict()
    ckpt = tp.Checkpoint(optimizer=state)
    ckpt.write(str(tmp_path / "first"))
    opt.step(closure(net, opt))  # changes the optimizer's own per-parameter state, which the checkpoint copied
    types = _types(opt)
    path = ckpt.write(str(tmp_path / "second"))
    assert _types(opt) == types  # the optimizer's lists are still its own
    saved = tp.load_tree(path)["optimizer"]["state"]["0"]
    own = opt.state[net[0].weight]
    assert saved["n_iter"] == own["n_iter"] and len(saved["old_dirs"]) == len(own["old_dirs"]) == 3

    # What was saved is the optimizer after its step: restored, one more step of each makes the same parameters.
    fresh_net, fresh_opt = lbfgs(0, 0)
    tp.Checkpoint(optimizer=fresh_opt).read(path).assert_consumed()
    fresh_net.load_state_dict(net.state_dict())
    opt.step(closure(net, opt))
    fresh_opt.step(closure(fresh_net, fresh_opt))
    for mine, theirs in zip(net.parameters(), fresh_net.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_al_takes_the_history_size_restored_with_it(tmp_path: Path) -> None:
    # `al` holds `history_size` places, of which only those a step computed are saved; the restore gives the
    # optimizer the saved param group, whose `history_size` its next step indexes `al` by.
    net, opt = lbfgs(0, 1, history_size=10)
    assert len(opt.state[net[0].weight]["old_dirs"]) < 10
    path = tp.Checkpoint(model=net.state_dict(), optimizer=opt.state_dict()).write(str(tmp_path / "ckpt"))

    fresh_net, fresh_opt = lbfgs(0, 0)  # history_size 3
    tp.Checkpoint(model=fresh_net, optimizer=fresh_opt).read(path).assert_consumed()
    assert fresh_opt.param_groups[0]["history_size"] == 10
    assert len(fresh_opt.state[fresh_net[0].weight]["al"]) == 10

    opt.step(closure(net, opt))
    fresh_opt.step(closure(fresh_net, fresh_opt))
    for mine, theirs in zip(net.parameters(), fresh_net.parameters(), strict=True):
        assert torch.equal(mine, theirs)


# A history of 3 entries, as long as the one given; one of 7, longer (its `al` grows to 7 places, then 10).
@pytest.mark.parametrize("steps", [1, 2])
def test_al_of_a_state_dict_given_as_a_dict_takes_the_history_size_restored_with_it(tmp_path: Path, steps: int) -> None:
    # Restored in place (PyTorch's `dcp.load` pattern), the dict's `al` takes the places of the saved
    # `history_size` too, which `load_state_dict` gives the optimizer: as the optimizer itself restored does.
    net, opt = lbfgs(0, steps, history_size=10)
    saved = opt.state[net[0].weight]
    assert len(saved["old_dirs"]) == sum(a is not None for a in saved["al"]) == [3, 7][steps - 1]
    path = tp.Checkpoint(model=net.state_dict(), optimizer=opt.state_dict()).write(str(tmp_path / "ckpt"))

    net2, opt2 = lbfgs(1, 1)  # history_size 3, a history of 3 entries
    sd = {"model": net2.state_dict(), "optimizer": opt2.state_dict()}
    tp.Checkpoint(**sd).read(path).assert_consumed()
    assert sd["optimizer"]["param_groups"][0]["history_size"] == 10
    assert len(sd["optimizer"]["state"][0]["al"]) == 10
    net2.load_state_dict(sd["model"])
    opt2.load_state_dict(sd["optimizer"])
    assert_same(opt2.state_dict(), opt.state_dict())

    opt.step(closure(net, opt))
    opt2.step(closure(net2, opt2))
    assert_same(net2.state_dict(), net.state_dict())
    assert_same(opt2.state_dict(), opt.state_dict())
