"""A small torch model trained by LBFGS, and checks of a state dict's containers, for the torch tests.

Importing it skips the importing test module where torch is not installed.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")

INPUTS = torch.linspace(-1, 1, 24).reshape(8, 3)
TARGETS = torch.linspace(0, 2, 8).reshape(8, 1)


def closure(net: Any, opt: Any) -> Callable[[], Any]:
    """The closure ``opt.step`` takes: the mean squared error of ``net`` on the inputs, its gradients computed."""

    def loss() -> Any:
        opt.zero_grad()
        value = (net(INPUTS) - TARGETS).square().mean()
        value.backward()
        return value

    return loss


def lbfgs(seed: int, steps: int, history_size: int = 3, max_iter: int = 4) -> tuple[Any, Any]:
    """A small net seeded by ``seed`` and its ``LBFGS`` optimizer, after ``steps`` steps."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.LBFGS(net.parameters(), lr=0.5, history_size=history_size, max_iter=max_iter)
    for _ in range(steps):
        opt.step(closure(net, opt))
    return net, opt


def containers(value: Any) -> Iterator[Any]:
    """``value``, if a dict, list or tuple, and every one inside it."""
    if isinstance(value, (dict, list, tuple)):
        yield value
        for item in value.values() if isinstance(value, dict) else value:
            yield from containers(item)


def assert_plain(value: Any) -> None:
    """No trackpoint wrapper took the place of one of ``value``'s containers."""
    assert all(type(c) in (dict, collections.OrderedDict, list, tuple) for c in containers(value))
