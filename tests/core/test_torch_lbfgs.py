"""torch's LBFGS, whose per-parameter state holds Python numbers and lists of tensors (its history).

Saving never changes the optimizer or the state dict given (no wrapper takes the place of a list), and a
restore into a fresh LBFGS gives it back its state in the types it keeps, from either layout: the optimizer
itself (``optimizer=opt``) or its state dict given as a dict (``optimizer=opt.state_dict()``). One more step
after the restore then makes the same parameters as one more step of the original.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")

INPUTS = torch.linspace(-1, 1, 24).reshape(8, 3)
TARGETS = torch.linspace(0, 2, 8).reshape(8, 1)


def _fresh(max_iter: int = 4) -> tuple[Any, Any]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    return net, torch.optim.LBFGS(net.parameters(), lr=0.5, history_size=3, max_iter=max_iter)


def _closure(net: Any, opt: Any) -> Callable[[], Any]:
    def closure() -> Any:
        opt.zero_grad()
        loss = (net(INPUTS) - TARGETS).square().mean()
        loss.backward()
        return loss

    return closure


def _trained(steps: int, max_iter: int = 4) -> tuple[Any, Any]:
    net, opt = _fresh(max_iter)
    for _ in range(steps):
        opt.step(_closure(net, opt))
    return net, opt


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
    net, opt = _trained(steps, max_iter)
    types = _types(opt)
    state = opt.state_dict()
    given = opt if layout == "object" else state
    path = tp.Checkpoint(model=net, optimizer=given).write(str(tmp_path / "ckpt"))

    # Nothing of the optimizer's or of the state dict given changed.
    assert _types(opt) == types
    assert all(type(v) is list for v in state["state"][0].values() if isinstance(v, list))
    assert type(state["state"]) is dict and type(state["param_groups"]) is list

    fresh_net, fresh_opt = _fresh(max_iter)
    tp.Checkpoint(model=fresh_net, optimizer=fresh_opt).read(path).assert_consumed()
    assert _types(fresh_opt) == types

    opt.step(_closure(net, opt))
    fresh_opt.step(_closure(fresh_net, fresh_opt))
    for mine, theirs in zip(net.parameters(), fresh_net.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert _types(fresh_opt) == _types(opt)


def test_a_state_dict_given_as_a_dict_and_changed_by_a_step_is_refused_until_given_again(tmp_path: Path) -> None:
    net, opt = _trained(2)
    ckpt = tp.Checkpoint(optimizer=opt.state_dict())
    ckpt.write(str(tmp_path / "first"))
    opt.step(_closure(net, opt))  # changes the optimizer's own per-parameter state, which the checkpoint copied
    with pytest.raises(
        tp.TrackableError, match=r"part of a torch optimizer's state dict .* Assign opt\.state_dict\(\) again"
    ):
        ckpt.write(str(tmp_path / "second"))
    ckpt.optimizer = opt.state_dict()
    path = ckpt.write(str(tmp_path / "third"))
    assert tp.load_tree(path)["optimizer"]["state"]["0"]["n_iter"] == opt.state[net[0].weight]["n_iter"]
