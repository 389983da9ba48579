"""A restore fills the per-parameter state an optimizer's state dict given as a dict lacks (restore on creation).

PyTorch DCP's resume in a fresh process, ``sd = {"model": net.state_dict(), "optim": opt.state_dict()}``,
``tp.Checkpoint(**sd).restore(path)``, then ``opt.load_state_dict(sd["optim"])``: the optimizer has not stepped,
so ``sd["optim"]["state"]`` is ``{}``. The restore makes the entry of each parameter the checkpoint holds state
for (CPU tensors of the saved dtypes and shapes, Python numbers of the saved types, LBFGS's history as lists) in
the user's ``state`` dict and fills it, so that ``load_state_dict`` loads what giving the optimizer itself would
have restored, and the next step makes the very parameters an uninterrupted run makes. Only in a state dict as
torch makes it (``state`` keyed by the int parameter numbers of ``param_groups``), and only where the checkpoint
tells each value's kind: no other dict gets entries invented.
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

OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2, betas=(0.8, 0.95)),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    "adam_amsgrad": lambda params: torch.optim.Adam(params, lr=1e-2, amsgrad=True),
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=1e-2, momentum=0.9, nesterov=True),
}


def _net(seed: int) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _step(net: Any, opt: Any, first_layer_only: bool = False) -> None:
    opt.zero_grad(set_to_none=True)
    out = net[1](net[0](INPUTS)).sum() if first_layer_only else (net(INPUTS) - TARGETS).square().mean()
    out.backward()  # first_layer_only: the second layer's parameters get no gradient, so no state
    opt.step()


def _resume(path: str, net: Any, opt: Any) -> dict[str, Any]:
    """PyTorch DCP's pattern: restore into the state dicts given as dicts, then load them."""
    sd = {"model": net.state_dict(), "optim": opt.state_dict()}
    tp.Checkpoint(**sd).restore(path).assert_consumed()
    assert_plain(sd)
    net.load_state_dict(sd["model"])
    opt.load_state_dict(sd["optim"])
    return sd


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_fresh_optimizers_state_dict_is_filled_and_resumes_bit_for_bit(tmp_path: Path, name: str) -> None:
    make = OPTIMIZERS[name]
    net = _net(0)
    opt = make(net.parameters())
    for _ in range(3):
        _step(net, opt)
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))

    net2 = _net(1)
    opt2 = make(net2.parameters())  # a fresh process: no state yet
    assert opt2.state_dict()["state"] == {}
    sd = _resume(path, net2, opt2)
    state = sd["optim"]["state"]
    assert sorted(state) == [0, 1, 2, 3] and all(type(entry) is dict for entry in state.values())
    assert all(value.device.type == "cpu" for entry in state.values() for value in entry.values())
    assert_same(opt2.state_dict(), opt.state_dict())

    _step(net, opt)
    _step(net2, opt2)
    assert_same(net2.state_dict(), net.state_dict())
    assert_same(opt2.state_dict(), opt.state_dict())


def test_without_the_fill_the_resumed_step_would_differ(tmp_path: Path) -> None:
    # What the fill prevents: zeroed Adam moments make other parameters (the comparison above tells).
    net = _net(0)
    opt = OPTIMIZERS["adam"](net.parameters())
    for _ in range(3):
        _step(net, opt)
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    net2 = _net(1)
    opt2 = OPTIMIZERS["adam"](net2.parameters())
    sd = {"model": net2.state_dict(), "optim": opt2.state_dict()}
    tp.Checkpoint(**sd).restore(path)
    net2.load_state_dict(sd["model"])
    opt2.load_state_dict({**sd["optim"], "state": {}})  # the state as it was before this release: empty
    _step(net, opt)
    _step(net2, opt2)
    assert not torch.equal(net2[0].weight, net[0].weight)


@pytest.mark.parametrize("name", ["adam", "sgd_momentum"])
def test_a_partly_stepped_optimizer_is_restored_in_place_and_filled_where_it_lacks_state(
    tmp_path: Path, name: str
) -> None:
    make = OPTIMIZERS[name]
    net = _net(0)
    opt = make(net.parameters())
    for _ in range(3):
        _step(net, opt)
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))

    net2 = _net(1)
    opt2 = make(net2.parameters())
    _step(net2, opt2, first_layer_only=True)
    own = opt2.state_dict()["state"]
    assert sorted(own) == [0, 1]  # the second layer (parameters 2 and 3) has no state
    held = {key: {k: v for k, v in entry.items()} for key, entry in own.items()}
    sd = _resume(path, net2, opt2)
    # The state given is restored into, in place; the rest made.
    assert all(sd["optim"]["state"][0][k] is v for k, v in held[0].items() if torch.is_tensor(v))
    assert sorted(sd["optim"]["state"]) == [0, 1, 2, 3]
    assert_same(opt2.state_dict(), opt.state_dict())
    _step(net, opt)
    _step(net2, opt2)
    assert_same(net2.state_dict(), net.state_dict())


@pytest.mark.parametrize("steps", [1, 3])
def test_a_fresh_lbfgs_state_dict_takes_the_saved_history(tmp_path: Path, steps: int) -> None:
    net, opt = lbfgs(0, steps=steps, history_size=5)
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    saved = opt.state[net[0].weight]

    net2, opt2 = lbfgs(1, steps=0, history_size=5)
    sd = _resume(path, net2, opt2)
    state = sd["optim"]["state"][0]
    assert sorted(state) == sorted(saved)
    for key, value in saved.items():
        if isinstance(value, list):
            assert type(state[key]) is list and len(state[key]) == len(value)  # `al`: history_size places
        else:
            assert type(state[key]) is type(value)  # Python ints and floats as saved; tensors as tensors
    assert_same(opt2.state_dict(), opt.state_dict())
    opt.step(closure(net, opt))
    opt2.step(closure(net2, opt2))
    assert_same(net2.state_dict(), net.state_dict())


class CountingOptimizer(torch.optim.Optimizer):  # type: ignore[misc]
    """Keeps a Python ``int`` and a Python ``float`` in its per-parameter state, as some libraries' optimizers do."""

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    def step(self, closure: Callable[[], Any] | None = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state[param]
                if not state:
                    state["step"], state["scale"], state["buf"] = 0, 1.0, torch.zeros_like(param)
                state["step"] += 1
                state["scale"] *= 0.5
                state["buf"].add_(param.grad)
                param.data.add_(-group["lr"] * state["scale"] * state["buf"])


def test_python_numbers_of_the_state_are_made_as_their_saved_types(tmp_path: Path) -> None:
    net = _net(0)
    opt = CountingOptimizer(net.parameters())
    for _ in range(2):
        _step(net, opt)
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    net2 = _net(1)
    opt2 = CountingOptimizer(net2.parameters())
    sd = _resume(path, net2, opt2)
    entry = sd["optim"]["state"][0]
    assert entry["step"] == 2 and type(entry["step"]) is int
    assert entry["scale"] == 0.25 and type(entry["scale"]) is float
    _step(net, opt)
    _step(net2, opt2)
    assert_same(net2.state_dict(), net.state_dict())


def test_a_restore_after_the_fill_restores_into_the_entries_made(tmp_path: Path) -> None:
    net = _net(0)
    opt = OPTIMIZERS["adam"](net.parameters())
    _step(net, opt)
    first = tp.Checkpoint(optim=opt.state_dict()).save(str(tmp_path / "first"))
    _step(net, opt)
    second = tp.Checkpoint(optim=opt.state_dict()).save(str(tmp_path / "second"))

    opt2 = OPTIMIZERS["adam"](_net(1).parameters())
    sd = opt2.state_dict()
    ckpt = tp.Checkpoint(optim=sd)
    ckpt.restore(first).assert_consumed()
    made = sd["state"][0]["exp_avg"]
    ckpt.restore(second).assert_consumed()
    assert sd["state"][0]["exp_avg"] is made  # restored in place the second time
    assert torch.equal(made, opt.state_dict()["state"][0]["exp_avg"])
    # And saved as it is now.
    again = ckpt.save(str(tmp_path / "again"))
    assert tp.load_tree(again)["optim"]["state"]["0"]["step"] == 2


def test_no_state_is_made_for_other_parameters(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The param groups given are not the saved ones (fewer parameters): the saved state of parameter 0 may be
    # another parameter's, so none is made, and the status names the entries; a warning says why.
    big = _net(0)
    opt = OPTIMIZERS["adam"](big.parameters())
    _step(big, opt)
    path = tp.Checkpoint(optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    small = torch.nn.Linear(3, 4)  # parameters 0 and 1 only
    sd = OPTIMIZERS["adam"](small.parameters()).state_dict()
    status = tp.Checkpoint(optim=sd).restore(path)
    assert sd["state"] == {}
    assert "param group 0 holds parameters [0, 1, 2, 3] in the checkpoint, [0, 1] in the one given" in caplog.text
    with pytest.raises(tp.MatchError, match=r"(?s)optim/state/0/.*optim/state/2"):
        status.assert_consumed()


@pytest.mark.parametrize(
    "given",
    [
        # Not as torch makes it: more than `state` and `param_groups`; `state` not a plain dict.
        {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1, 2, 3]}], "extra": 1},
        {"state": [], "param_groups": [{"lr": 0.01, "params": [0, 1, 2, 3]}]},
        # A parameter number twice.
        {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}, {"lr": 0.01, "params": [1, 2, 3]}]},
        # Another dict holding a `state`: the entries stay as given.
        {"state": {}, "other": {"params": [0, 1, 2, 3]}},
    ],
    ids=["more_keys", "state_list", "twice", "no_param_groups"],
)
def test_no_entry_is_made_in_a_dict_not_made_by_torch(tmp_path: Path, given: dict[str, Any]) -> None:
    net = _net(0)
    opt = OPTIMIZERS["adam"](net.parameters())
    _step(net, opt)
    path = tp.Checkpoint(optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    status = tp.Checkpoint(optim=given).restore(path)
    assert given["state"] in ({}, [])
    with pytest.raises(tp.MatchError):
        status.assert_consumed()


def test_no_entry_is_made_in_a_state_dict_keyed_by_parameter_names(tmp_path: Path) -> None:
    # PyTorch DCP's get_optimizer_state_dict keys the state and the params by name: which entries the dict
    # lacks, nothing tells with certainty.
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]

    def by_name(state_dict: dict[str, Any]) -> dict[str, Any]:
        groups = [
            {**group, "params": [names[number] for number in group["params"]]} for group in state_dict["param_groups"]
        ]
        return {"state": {names[n]: entry for n, entry in state_dict["state"].items()}, "param_groups": groups}

    net = _net(0)
    opt = OPTIMIZERS["adam"](net.parameters())
    _step(net, opt)
    path = tp.Checkpoint(optim=by_name(opt.state_dict())).save(str(tmp_path / "ckpt"))
    sd = by_name(OPTIMIZERS["adam"](_net(1).parameters()).state_dict())
    status = tp.Checkpoint(optim=sd).restore(path)
    assert sd["state"] == {}
    with pytest.raises(tp.MatchError):
        status.assert_consumed()


def test_a_checkpoint_without_the_types_of_its_python_numbers_makes_no_entry_it_cannot_tell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 0-d int64 value of a checkpoint written before the types of Python numbers were recorded may have been a
    # Python int or a 0-d tensor: the entry holding it is not made. One of tensors only (Adam's float32 `step`
    # is no Python number's dtype) is certain, and made.
    import trackpoint.stateful as stateful

    monkeypatch.setattr(stateful, "_number_types", lambda coordinator: None)  # as such a checkpoint reads
    net = _net(0)
    counting = CountingOptimizer(net.parameters())
    adam = OPTIMIZERS["adam"](net.parameters())
    _step(net, counting)
    _step(net, adam)
    path = tp.Checkpoint(counting=counting.state_dict(), adam=adam.state_dict()).save(str(tmp_path / "ckpt"))
    fresh = _net(1)
    sd = {
        "counting": CountingOptimizer(fresh.parameters()).state_dict(),
        "adam": adam.__class__(fresh.parameters()).state_dict(),
    }
    status = tp.Checkpoint(**sd).restore(path)
    assert sd["counting"]["state"] == {}
    assert sorted(sd["adam"]["state"]) == [0, 1, 2, 3]
    with pytest.raises(tp.MatchError, match=r"counting"):
        status.assert_consumed()


def test_no_entry_is_made_in_an_autotrackables_state_dict(tmp_path: Path) -> None:
    # An AutoTrackable's containers save and restore no Python numbers (configuration, as in TensorFlow): what
    # the checkpoint holds of a parameter's state there may lack some, so no entry is made (today's behaviour).
    net = _net(0)
    opt = OPTIMIZERS["adam"](net.parameters())
    _step(net, opt)
    saver = tp.AutoTrackable()
    saver.optim = opt.state_dict()
    path = tp.Checkpoint(module=saver).save(str(tmp_path / "ckpt"))
    module = tp.AutoTrackable()
    sd = module.optim = OPTIMIZERS["adam"](_net(1).parameters()).state_dict()
    status = tp.Checkpoint(module=module).restore(path)
    assert sd["state"] == {}
    with pytest.raises(tp.MatchError):
        status.assert_consumed()


@pytest.mark.parametrize("layout", ["names_reordered", "groups_split"])
def test_no_state_is_made_where_the_param_groups_differ(
    tmp_path: Path, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The saved state of parameter 0 would be made for the given parameter 0, another parameter (of another
    # shape: the next step fails; of the same: other moments load silently). Nothing is made: the status names it.
    net = _net(0)
    opt = torch.optim.Adam(net.named_parameters(), lr=1e-2)
    _step(net, opt)
    path = tp.Checkpoint(optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    net2 = _net(1)
    if layout == "names_reordered":  # the head's parameters first
        opt2 = torch.optim.Adam([*net2[2].named_parameters(prefix="2"), *net2[0].named_parameters(prefix="0")])
        why = "param group 0 names its parameters ['0.weight', '0.bias', '2.weight', '2.bias'] in the checkpoint"
    else:  # the same parameters in two groups
        opt2 = torch.optim.Adam([{"params": list(net2[0].parameters())}, {"params": list(net2[2].parameters())}])
        why = "the checkpoint holds 1 param groups, the state dict given 2"
    sd = opt2.state_dict()
    status = tp.Checkpoint(optim=sd).restore(path)
    assert sd["state"] == {}
    assert why in caplog.text
    with pytest.raises(tp.MatchError, match=r"optim/state/0/"):
        status.assert_consumed()


def test_the_fill_reads_the_state_dict_and_follows_it_once_per_restore_not_per_parameter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted, not timed: reading the parameter numbers and following the user's `state` walk every parameter;
    # done for each entry made, filling n entries cost O(n^2) (5,000 parameters: 21 s).
    from trackpoint import data_structures as ds

    params = [torch.nn.Parameter(torch.full((2,), float(index))) for index in range(40)]
    opt = torch.optim.Adam(params, lr=1e-2)
    sum((p * p).sum() for p in params).backward()
    opt.step()
    path = tp.Checkpoint(optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    calls = {"numbers": 0, "follows": 0}
    numbers, follow = ds.optimizer_param_numbers, ds._DictWrapper._follow

    def counted_numbers(state_dict: Any) -> Any:
        calls["numbers"] += 1
        return numbers(state_dict)

    def counted_follow(self: Any, now: Any, then: Any) -> None:
        calls["follows"] += 1
        follow(self, now, then)

    monkeypatch.setattr(ds, "optimizer_param_numbers", counted_numbers)
    monkeypatch.setattr(ds._DictWrapper, "_follow", counted_follow)
    fresh = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2)) for _ in range(40)], lr=1e-2)
    sd = fresh.state_dict()
    tp.Checkpoint(optim=sd).restore(path).assert_consumed()
    assert sorted(sd["state"]) == list(range(40))
    assert calls["numbers"] <= 2  # once per restore (HEAD: once per parameter)
    assert calls["follows"] <= 4  # the first entry made; each further one is recorded alone (HEAD: 40)
    fresh.load_state_dict(sd)
    for index in range(len(params)):
        torch.testing.assert_close(
            fresh.state_dict()["state"][index]["exp_avg"], opt.state_dict()["state"][index]["exp_avg"]
        )
    # The entries made are the copy's as followed: a save of the dict given saves them, a second restore refills.
    again = tp.Checkpoint(optim=sd).save(str(tmp_path / "again"))
    other = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2)) for _ in range(40)], lr=1e-2).state_dict()
    tp.Checkpoint(optim=other).restore(again).assert_consumed()
    torch.testing.assert_close(other["state"][39]["exp_avg_sq"], sd["state"][39]["exp_avg_sq"])
