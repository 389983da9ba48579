"""A torch optimizer's state dict given as a dict is restored into in place, as PyTorch's ``dcp.load`` does.

``tp.Checkpoint(**sd).restore(path)`` with ``sd = {"model": net.state_dict(), "optim": opt.state_dict()}``
leaves ``sd`` holding the restored values, for ``net.load_state_dict(sd["model"])`` and
``opt.load_state_dict(sd["optim"])``: the values a restore replaces (Python numbers such as ``lr``, LBFGS's
``n_iter``, tuples such as ``betas``) are written into the user's containers, and tensors are restored into the
very tensors those hold. A save still never changes them, nor the optimizer's own per-parameter dicts (the
checkpoint wraps a copy of the state dict's containers), and the restore's own writes are no change for which
the next save would be refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp
from stateful_objects import assert_same
from torch_training import INPUTS, TARGETS, assert_plain, closure, containers, lbfgs

torch = pytest.importorskip("torch")


def _adam(seed: int, steps: int, **options: Any) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), **options)
    for _ in range(steps):
        opt.zero_grad()
        (net(INPUTS) - TARGETS).square().mean().backward()
        opt.step()
    return net, opt


def _layout(value: Any) -> list[tuple[int, type, list[int]]]:
    """Each container of ``value``: its identity, its exact type and the identity of what it holds."""
    return [(id(c), type(c), [id(v) for v in (c.values() if isinstance(c, dict) else c)]) for c in containers(value)]


def test_adam_state_dict_restored_in_place_loads_the_saved_values(tmp_path: Path) -> None:
    net, opt = _adam(0, steps=2, lr=1e-3, betas=(0.8, 0.95))
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))

    net2, opt2 = _adam(1, steps=1, lr=0.5)  # its state exists: the restore has tensors to write into
    sd = {"model": net2.state_dict(), "optim": opt2.state_dict()}
    tp.Checkpoint(**sd).restore(path).assert_existing_objects_matched()

    # The user's dicts hold the restored values, in their own plain containers.
    group, state = sd["optim"]["param_groups"][0], sd["optim"]["state"][0]
    assert group["lr"] == 1e-3 and type(group["lr"]) is float
    assert group["betas"] == (0.8, 0.95) and type(group["betas"]) is tuple
    assert torch.equal(state["step"], torch.tensor(2.0))
    assert_plain(sd)
    net2.load_state_dict(sd["model"])
    opt2.load_state_dict(sd["optim"])
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.8, 0.95)
    assert_same(opt2.state_dict(), opt.state_dict())
    assert_same(net2.state_dict(), net.state_dict())


def test_lbfgs_state_dict_restored_in_place_loads_its_history_and_counters(tmp_path: Path) -> None:
    net, opt = lbfgs(0, steps=5)
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    saved = opt.state[net[0].weight]

    net2, opt2 = lbfgs(1, steps=2)  # a full history too (history_size 3), of other values
    mine = opt2.state[net2[0].weight]
    assert [len(mine[key]) for key in ("old_dirs", "old_stps", "ro", "al")] == [3] * 4
    assert (mine["n_iter"], mine["func_evals"]) != (saved["n_iter"], saved["func_evals"])
    sd = {"model": net2.state_dict(), "optim": opt2.state_dict()}
    tp.Checkpoint(**sd).restore(path).assert_existing_objects_matched()

    state = sd["optim"]["state"][0]
    assert (state["n_iter"], state["func_evals"]) == (saved["n_iter"], saved["func_evals"])
    assert type(state["n_iter"]) is int and type(state["func_evals"]) is int
    assert type(state["prev_loss"]) is float and state["prev_loss"] == saved["prev_loss"]
    for key in ("old_dirs", "old_stps", "ro", "al"):
        assert type(state[key]) is list
        assert all(torch.equal(a, b) for a, b in zip(state[key], saved[key], strict=True))
    assert_plain(sd)
    net2.load_state_dict(sd["model"])
    opt2.load_state_dict(sd["optim"])
    assert_same(opt2.state_dict(), opt.state_dict())

    # One more step of each makes the same parameters.
    opt.step(closure(net, opt))
    opt2.step(closure(net2, opt2))
    assert_same(net2.state_dict(), net.state_dict())


def test_an_lbfgs_history_given_shorter_than_the_saved_one_takes_the_whole_saved_history(tmp_path: Path) -> None:
    net, opt = lbfgs(0, steps=2, history_size=5, max_iter=3)
    saved = opt.state[net[0].weight]
    assert len(saved["old_dirs"]) == 3 and sum(a is not None for a in saved["al"]) == 3
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))

    net2, opt2 = lbfgs(1, steps=1, history_size=5, max_iter=3)  # a younger optimizer: a shorter history
    assert len(opt2.state[net2[0].weight]["old_dirs"]) == 1
    sd = {"model": net2.state_dict(), "optim": opt2.state_dict()}
    tp.Checkpoint(**sd).restore(path).assert_consumed()

    state = sd["optim"]["state"][0]
    for key in ("old_dirs", "old_stps", "ro", "al"):
        assert type(state[key]) is list and len(state[key]) == len(saved[key])
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(state[key], saved[key], strict=True))
    assert_plain(sd)
    net2.load_state_dict(sd["model"])
    opt2.load_state_dict(sd["optim"])
    assert_same(opt2.state_dict(), opt.state_dict())
    opt.step(closure(net, opt))
    opt2.step(closure(net2, opt2))
    assert_same(net2.state_dict(), net.state_dict())


# A history of 3 given where 1 was saved; 7 given where 3 were saved (`al` of 10 places, history_size 10).
@pytest.mark.parametrize(("history_size", "saved_steps", "given_steps", "max_iter"), [(5, 1, 2, 3), (10, 1, 2, 4)])
def test_an_lbfgs_history_given_longer_than_the_saved_one_takes_the_whole_saved_history(
    tmp_path: Path, history_size: int, saved_steps: int, given_steps: int, max_iter: int
) -> None:
    # As where the history given is shorter: the restore cuts each list of the history to the saved length (and
    # `al` takes its history_size places again), as the optimizer itself, given instead, takes the saved history.
    net, opt = lbfgs(0, steps=saved_steps, history_size=history_size, max_iter=max_iter)
    saved = opt.state[net[0].weight]
    path = tp.Checkpoint(model=net.state_dict(), optim=opt.state_dict()).save(str(tmp_path / "ckpt"))
    net2, opt2 = lbfgs(1, steps=given_steps, history_size=history_size, max_iter=max_iter)
    mine = opt2.state[net2[0].weight]
    saved_length = len(saved["old_dirs"])
    assert len(mine["old_dirs"]) > saved_length > 0
    sd = {"model": net2.state_dict(), "optim": opt2.state_dict()}
    tp.Checkpoint(**sd).restore(path).assert_consumed().assert_existing_objects_matched()

    state = sd["optim"]["state"][0]
    for key in ("old_dirs", "old_stps", "ro", "al"):
        assert type(state[key]) is list and len(state[key]) == len(saved[key])
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(state[key], saved[key], strict=True))
    assert len(state["al"]) == history_size
    assert_plain(sd)
    net2.load_state_dict(sd["model"])
    opt2.load_state_dict(sd["optim"])
    assert_same(opt2.state_dict(), opt.state_dict())
    opt.step(closure(net, opt))
    opt2.step(closure(net2, opt2))
    assert_same(net2.state_dict(), net.state_dict())

    # The optimizer itself, given instead, takes the saved history whole too.
    _, opt3 = lbfgs(1, steps=given_steps, history_size=history_size, max_iter=max_iter)
    tp.Checkpoint(optim=opt3).restore(path).assert_existing_objects_matched()
    assert [len(opt3.state_dict()["state"][0][key]) for key in ("old_dirs", "al")] == [saved_length, history_size]


@pytest.mark.parametrize("make", [lbfgs, _adam], ids=["lbfgs", "adam"])
def test_a_save_changes_neither_the_state_dict_given_nor_the_optimizer(
    tmp_path: Path, make: Callable[[int, int], tuple[Any, Any]]
) -> None:
    net, opt = make(0, 3)
    sd = {"model": net.state_dict(), "optim": opt.state_dict()}
    layout, own = _layout(sd), _layout(opt.state)
    ckpt = tp.Checkpoint(**sd)
    ckpt.save(str(tmp_path / "ckpt"))
    ckpt.save(str(tmp_path / "ckpt"))
    assert _layout(sd) == layout and _layout(opt.state) == own
    assert_plain(sd)


def test_a_save_after_the_restore_saves_what_it_wrote_and_after_a_step_what_the_step_made(tmp_path: Path) -> None:
    net, opt = lbfgs(0, steps=5)
    path = tp.Checkpoint(optim=opt.state_dict()).write(str(tmp_path / "saved"))
    net2, opt2 = lbfgs(1, steps=2)
    sd = opt2.state_dict()  # its per-parameter dicts are opt2's own
    ckpt = tp.Checkpoint(optim=sd)
    ckpt.read(path).assert_consumed()

    # Saved again as restored.
    again = ckpt.write(str(tmp_path / "again"))
    assert tp.load_tree(again)["optim"]["state"]["0"]["n_iter"] == opt.state[net[0].weight]["n_iter"]
    # A step of the optimizer that owns those dicts changes them: the save saves them as they are now.
    opt2.step(closure(net2, opt2))
    after = ckpt.write(str(tmp_path / "after"))
    assert tp.load_tree(after)["optim"]["state"]["0"]["n_iter"] == opt2.state[net2[0].weight]["n_iter"]
    assert_plain(opt2.state_dict())


def test_a_state_dict_inside_a_dict_given_is_copied_also_with_jax_imported(tmp_path: Path) -> None:
    # With jax imported, the dict around the state dict is looked at for JAX arrays first: it holds none, so it is
    # copied as a dict holding a torch state dict is, and the state dict inside too, its lists never replaced by
    # wrappers.
    pytest.importorskip("jax")
    _, opt = lbfgs(0, steps=2)
    sd = opt.state_dict()
    own = _layout(opt.state)
    path = tp.Checkpoint(training={"optim": sd, "epoch": 3}).write(str(tmp_path / "ckpt"))
    assert _layout(opt.state) == own
    assert_plain(sd)

    _, opt2 = lbfgs(1, steps=1)
    sd2 = opt2.state_dict()
    tp.Checkpoint(training={"optim": sd2, "epoch": 0}).read(path).assert_consumed()
    assert_plain(sd2)
    opt2.load_state_dict(sd2)
    assert_same(opt2.state_dict(), opt.state_dict())


def test_a_longer_lbfgs_history_keyed_by_names_is_cut_to_the_saved_one(tmp_path: Path) -> None:
    # As for a state dict keyed by parameter numbers: the cut depends on the param groups' keys alone (as the
    # growth of a shorter history does), so that the history restored is the saved one whole.
    def by_names(net: Any, opt: Any) -> dict[str, Any]:
        sd = opt.state_dict()
        names = [name for name, _ in net.named_parameters()]
        return {
            "state": {names[key]: value for key, value in sd["state"].items()},
            "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in sd["param_groups"]],
        }

    net, opt = lbfgs(0, steps=1, history_size=5)
    saved = opt.state_dict()["state"][0]
    path = tp.Checkpoint(optim=by_names(net, opt)).save(str(tmp_path / "ckpt"))
    net2, opt2 = lbfgs(1, steps=4, history_size=5)
    sd = by_names(net2, opt2)
    name = next(iter(sd["state"]))
    assert len(sd["state"][name]["old_dirs"]) > len(saved["old_dirs"])
    tp.Checkpoint(optim=sd).restore(path).assert_consumed()
    for key in ("old_dirs", "old_stps", "ro"):
        assert len(sd["state"][name][key]) == len(saved[key])
        for got, want in zip(sd["state"][name][key], saved[key], strict=True):
            assert torch.equal(got, want)
