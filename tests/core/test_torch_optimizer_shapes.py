"""The state torch's own optimizers keep in their parameter's shape is checked against that parameter.

A fresh optimizer has no state to compare with: a moment saved for a (16, 8) parameter was loaded for a
(32, 8) one and the failure came at ``step()``. Only what is certain is checked (``exp_avg`` of Adam,
``momentum_buffer`` of SGD, ...): other optimizers' state need not have their parameter's shape (Adafactor's
factored moments), and restores as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


def _stepped(hidden: int, make: Any) -> tuple[Any, Any]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    opt = make(net.parameters())
    net(torch.randn(4, 8)).square().sum().backward()
    opt.step()
    return net, opt


def test_moments_of_another_shape_than_their_parameter_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    _, adam = _stepped(16, torch.optim.AdamW)
    path = tp.Checkpoint(optimizer=adam, step=tp.Variable(np.int64(9))).write(str(tmp_path / "adam" / "ckpt"))
    _, fresh = _stepped(32, torch.optim.AdamW)
    fresh.state.clear()  # a fresh optimizer: nothing of its own to compare with
    step = tp.Variable(np.int64(0))
    with pytest.raises(tp.ShapeMismatchError) as caught:
        tp.Checkpoint(optimizer=fresh, step=step).read(path)
    message = str(caught.value)
    assert message.startswith("6 values do not fit Checkpoint.optimizer")
    assert (
        "'optimizer/.ATTRIBUTES/state..0..exp_avg' into Checkpoint.optimizer: it is the 'exp_avg' state of "
        "parameter 0 (in the order of the optimizer's param_groups), of shape (16, 8), and that parameter has "
        "shape (32, 8); AdamW keeps 'exp_avg' in its parameter's shape"
    ) in message
    assert "state..0..step" not in message  # a scalar, of no parameter's shape
    assert len(fresh.state) == 0 and int(step.numpy()) == 0

    # SGD's momentum too, and the same state saved from the state dict given as a dict.
    _, sgd = _stepped(16, lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9))
    for name, saved in (("sgd", sgd), ("sgd-dict", sgd.state_dict())):
        path = tp.Checkpoint(optimizer=saved).write(str(tmp_path / name / "ckpt"))
        _, target = _stepped(32, lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9))
        target.state.clear()
        with pytest.raises(tp.AssignmentError, match=r"'momentum_buffer' state of parameter 0 .* shape \(16, 8\)"):
            tp.Checkpoint(optimizer=target).read(path)
        assert len(target.state) == 0

    # State of another shape than its parameter by design (Adafactor's factored second moment) restores.
    net, factored = _stepped(16, torch.optim.Adafactor)
    assert factored.state[net[0].weight]["row_var"].shape != net[0].weight.shape
    path = tp.Checkpoint(model=net, optimizer=factored).write(str(tmp_path / "adafactor" / "ckpt"))
    net2, factored2 = _stepped(16, torch.optim.Adafactor)
    factored2.state.clear()
    tp.Checkpoint(model=net2, optimizer=factored2).read(path).assert_consumed()
    batch = torch.randn(4, 8)
    for model, optimizer in ((net, factored), (net2, factored2)):
        optimizer.zero_grad()
        model(batch).square().sum().backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters(), strict=True))
