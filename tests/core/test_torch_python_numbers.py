"""A Python number saved where a checkpoint's containers hold it comes back from ``load_tree`` a Python number.

The checkpoint records its type (the entry ``_TRACKPOINT_PYTHON_NUMBERS``, beside the object graph), so
``load_tree`` gives back the ``int``, ``float`` or ``bool``, and ``to_torch`` leaves it alone: only arrays become
tensors, a 0-d array or tensor of the same dtype included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


def test_python_numbers_in_containers_stay_numbers_through_load_tree_and_to_torch(tmp_path: Path) -> None:
    counters = {"n": 3, "lr": 0.5, "flag": True, "big": 2**62}
    arrays = {
        "zero_d": np.asarray(3),
        "tensor": torch.tensor(3),
        "float_tensor": torch.tensor(0.5, dtype=torch.float64),
    }
    path = tp.Checkpoint(counters=counters, arrays=arrays, epoch=7).write(str(tmp_path / "ckpt"))

    tree = tp.load_tree(path)
    assert tree["counters"] == counters
    assert [type(v) for v in tree["counters"].values()] == [int, float, bool, int]
    assert type(tree["epoch"]) is int and tree["epoch"] == 7
    # Saved as the same dtypes, the arrays stay arrays.
    assert all(isinstance(v, np.ndarray) and v.shape == () for v in tree["arrays"].values())

    converted = tp.to_torch(tree)
    assert converted["counters"] == counters and [type(v) for v in converted["counters"].values()] == [
        int,
        float,
        bool,
        int,
    ]
    assert all(isinstance(v, torch.Tensor) for v in converted["arrays"].values())
    assert converted["arrays"]["tensor"].dtype == torch.int64 and converted["arrays"]["tensor"].item() == 3


def test_an_optimizers_state_dict_given_as_a_dict_keeps_its_python_numbers(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    state = opt.state_dict()
    state["state"][0]["step"] = 7  # a step kept as a Python int (older torch, other optimizers)
    path = tp.Checkpoint(optimizer=state).write(str(tmp_path / "ckpt"))

    loaded = tp.to_torch(tp.load_tree(path)["optimizer"])
    assert loaded["state"]["0"]["step"] == 7 and type(loaded["state"]["0"]["step"]) is int
    assert isinstance(loaded["state"]["0"]["momentum_buffer"], torch.Tensor)
    group = loaded["param_groups"]["0"]
    assert (type(group["lr"]), type(group["nesterov"]), type(group["dampening"])) == (float, bool, int)


def test_a_saved_optimizer_keeps_python_numbers_and_tensors_apart(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.LBFGS(net.parameters())

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = net(torch.ones(2, 2)).square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    path = tp.Checkpoint(optimizer=opt).write(str(tmp_path / "ckpt"))
    state = tp.to_torch(tp.load_tree(path)["optimizer"])["state"][0]
    assert type(state["func_evals"]) is int and type(state["n_iter"]) is int and type(state["prev_loss"]) is float
    assert isinstance(state["d"], torch.Tensor)


def test_a_restore_puts_back_the_python_number(tmp_path: Path) -> None:
    path = tp.Checkpoint(counters={"n": 3, "lr": 0.5}).write(str(tmp_path / "ckpt"))
    counters = {"n": 0, "lr": 0.0}
    ckpt = tp.Checkpoint(counters=counters)
    ckpt.read(path).assert_consumed()
    assert ckpt.counters == {"n": 3, "lr": 0.5} and type(ckpt.counters["n"]) is int
