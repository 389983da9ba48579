"""A torch optimizer's state dict given as a dict is followed: a save saves what it holds at that save.

The checkpoint wraps copies of such a state dict's containers (its per-parameter dicts are the optimizer's own,
which a wrapper must not replace), and those copies follow the dicts given: a step of the optimizer (a Python
``int`` step counter, LBFGS's history) or an edit of the dict (``sd["param_groups"][0]["lr"] = ...``) since
they were given is saved by the next save, and a restore fills what they hold then. That holds wherever the
state dict is given: to a ``Checkpoint``, in its containers, or to an ``AutoTrackable``'s attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp
from stateful_objects import assert_same
from torch_training import INPUTS, TARGETS, assert_plain, closure, lbfgs

torch = pytest.importorskip("torch")


class CountingOptimizer(torch.optim.Optimizer):  # type: ignore[misc]
    """Keeps a Python ``int`` step in its per-parameter state, as transformers' ``Adafactor`` does."""

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    def step(self, closure: Callable[[], Any] | None = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["buf"] = torch.zeros_like(param)
                state["step"] += 1
                state["buf"].add_(param.grad)
                param.data.add_(-group["lr"] * state["buf"])


def _train(net: Any, opt: Any) -> None:
    opt.zero_grad()
    (net(INPUTS) - TARGETS).square().mean().backward()
    opt.step()


def test_a_python_int_step_counted_since_the_state_dict_was_given_is_saved(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 1)
    opt = CountingOptimizer(net.parameters())
    _train(net, opt)
    ckpt = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict())
    first = ckpt.save(str(tmp_path / "ckpt"))
    _train(net, opt)  # `state["step"] += 1`: a new int in the optimizer's own dict, which the checkpoint copied
    second = ckpt.save(str(tmp_path / "ckpt"))

    assert tp.load_tree(first)["optim"]["state"]["0"]["step"] == 1
    saved = tp.load_tree(second)["optim"]["state"]["0"]
    assert saved["step"] == 2 and type(saved["step"]) is int
    assert type(opt.state[net.weight]["step"]) is int  # the optimizer's own dict holds its own int
    assert_plain(list(opt.state.values()))


def test_an_edit_of_the_dict_given_is_saved(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, betas=(0.8, 0.9))
    _train(net, opt)
    sd = {"model": net.state_dict(), "optim": opt.state_dict()}
    ckpt = tp.Checkpoint(**sd)
    ckpt.save(str(tmp_path / "ckpt"))
    sd["optim"]["param_groups"][0]["lr"] = 0.01
    sd["optim"]["param_groups"][0]["betas"] = (0.5, 0.6)
    path = ckpt.save(str(tmp_path / "ckpt"))

    group = tp.load_tree(path)["optim"]["param_groups"]["0"]
    assert group["lr"] == 0.01 and (group["betas"]["0"], group["betas"]["1"]) == (0.5, 0.6)
    assert_plain(sd)


def test_a_restore_fills_what_the_dict_given_holds_after_a_step(tmp_path: Path) -> None:
    net, opt = lbfgs(0, steps=5)
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))

    net2, opt2 = lbfgs(1, steps=3)  # a full history (history_size 3), as the one saved
    sd = {"model": net2.state_dict(), "optim": opt2.state_dict()}
    ckpt = tp.Checkpoint(**sd)
    # A step after the dict was given: new tensors (`d`, `prev_flat_grad`) and a rolled history in opt2's dicts.
    opt2.step(closure(net2, opt2))
    ckpt.restore(path).assert_consumed()

    assert_plain(sd)
    net2.load_state_dict(sd["model"])
    opt2.load_state_dict(sd["optim"])
    assert_same(opt2.state_dict(), opt.state_dict())
    opt.step(closure(net, opt))
    opt2.step(closure(net2, opt2))
    assert_same(net2.state_dict(), net.state_dict())


@pytest.mark.parametrize("holder", ["autotrackable", "autotrackable_dict", "checkpoint_attribute"])
def test_a_state_dict_given_to_any_holder_leaves_the_optimizer_its_own_lists(tmp_path: Path, holder: str) -> None:
    net, opt = lbfgs(0, steps=2)
    sd = opt.state_dict()
    if holder == "checkpoint_attribute":
        ckpt = tp.Checkpoint()
        ckpt.optim = sd
    else:
        module = tp.AutoTrackable()
        module.optim = sd if holder == "autotrackable" else {"optim": sd}
        ckpt = tp.Checkpoint(module=module)
    ckpt.save(str(tmp_path / "given"))
    assert_plain(list(opt.state.values()))
    assert_plain(sd)

    # The optimizer itself saves after a step: its history holds its own lists, no wrapper it would refuse.
    opt.step(closure(net, opt))
    path = tp.Checkpoint(optim=opt).save(str(tmp_path / "own"))
    assert tp.load_tree(path)["optim"]["state"][0]["n_iter"] == opt.state[net[0].weight]["n_iter"]
    assert_plain(list(opt.state.values()))
    ckpt.save(str(tmp_path / "given"))  # the state dict given is followed after that step too
    assert_plain(list(opt.state.values()))
