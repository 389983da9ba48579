"""``FrozenSaver.restore`` applies values in the order ``Checkpoint.restore`` does: modules on 'meta' first.

torch's ``Optimizer.load_state_dict`` places each state tensor on its parameter's device: an optimizer loaded
before its module is filled would keep its state on 'meta', without values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


def _stepped(seed: int) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).square().sum().backward()
    opt.step()
    return net, opt


def _to_meta(module: Any) -> None:
    """Release the module's memory, keeping its Parameter objects (the optimizer holds them)."""
    for param in module.parameters():
        torch.utils.swap_tensors(param, torch.nn.Parameter(torch.empty_like(param, device="meta")))


def test_a_frozen_saver_fills_the_module_on_meta_before_loading_its_optimizer(tmp_path: Path) -> None:
    net, opt = _stepped(0)
    path = tp.frozen_saver(tp.Checkpoint(adam=opt, model=net)).save(str(tmp_path / "ckpt"))

    net2, opt2 = _stepped(1)
    # The optimizer comes first in the graph: its values are applied before the module's unless reordered.
    saver = tp.frozen_saver(tp.Checkpoint(adam=opt2, model=net2))
    _to_meta(net2)
    saver.restore(path)
    assert not net2.weight.is_meta and torch.equal(net2.weight, net.weight)
    state = opt2.state[net2.weight]["exp_avg"]
    assert not state.is_meta and torch.equal(state, opt.state[net.weight]["exp_avg"])
