"""``tp.to_torch``: what a reader returns, as torch tensors (bfloat16 and float8 included)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np
import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


def test_a_bfloat16_module_loads_from_load_tree(tmp_path: Path) -> None:
    # torch.from_numpy refuses ml_dtypes' bfloat16: a PyTorch user could not load what load_tree gave.
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2).to(torch.bfloat16))
    optimizer = torch.optim.Adam(net.parameters())
    for parameter in net.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()  # moments to save, bfloat16 ones included
    path = tp.Checkpoint(model=net, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    tree = tp.load_tree(path)
    assert tree["model"]["1.weight"].dtype == ml_dtypes.bfloat16
    with pytest.raises(TypeError):
        torch.from_numpy(tree["model"]["1.weight"])
    loaded = tp.to_torch(tree)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2).to(torch.bfloat16))
    fresh.load_state_dict(loaded["model"])
    for mine, theirs in zip(fresh.state_dict().values(), net.state_dict().values(), strict=True):
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs)
    other = torch.optim.Adam(fresh.parameters())
    other.load_state_dict(loaded["optimizer"])
    mine, theirs = other.state_dict()["state"], optimizer.state_dict()["state"]
    assert mine[3]["exp_avg"].dtype == torch.bfloat16 and torch.equal(mine[3]["exp_avg"], theirs[3]["exp_avg"])
    assert other.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]  # plain values stay as they are


class Pair(NamedTuple):
    a: Any
    b: Any


def test_structure_and_plain_values_are_kept_and_memory_shared() -> None:
    weights = np.arange(4, dtype=np.float32)
    value = collections.OrderedDict(
        w=weights,
        pair=Pair(np.int64(3), [np.array([1.5], ml_dtypes.bfloat16), b"name"]),
        text=np.array([b"a", b"b"], dtype=object),
        n=7,
        f8=np.zeros(2, ml_dtypes.float8_e4m3fn),
    )
    out = tp.to_torch(value)
    assert type(out) is collections.OrderedDict and list(out) == list(value)
    assert isinstance(out["pair"], Pair) and out["pair"].a.dtype == torch.int64 and out["pair"].a.ndim == 0
    assert out["pair"].b[0].dtype == torch.bfloat16 and float(out["pair"].b[0]) == 1.5 and out["pair"].b[1] == b"name"
    assert out["text"] is value["text"] and out["n"] == 7 and out["f8"].dtype == torch.float8_e4m3fn
    out["w"][0] = 10.0
    assert weights[0] == 10.0  # the tensor shares the array's memory, as torch.from_numpy does
    frozen = np.ones(2, np.float32)
    frozen.flags.writeable = False
    assert torch.equal(tp.to_torch(frozen), torch.ones(2))  # copied: no warning about a read-only buffer


def test_mappings_keep_what_they_carry_beside_their_items() -> None:
    # torch's load_state_dict reads an OrderedDict's _metadata; a Counter rebuilt from pairs counts the pairs.
    state = collections.OrderedDict(w=np.zeros(2, np.float32))
    state._metadata = {"": {"version": 2}}  # type: ignore[attr-defined]
    counts = collections.Counter(a=3)
    factory = collections.defaultdict(list, x=np.ones(1))
    out = tp.to_torch({"state": state, "counts": counts, "factory": factory})
    assert out["state"]._metadata == {"": {"version": 2}} and isinstance(out["state"]["w"], torch.Tensor)
    assert out["counts"] == collections.Counter(a=3)
    assert out["factory"].default_factory is list and isinstance(out["factory"]["x"], torch.Tensor)
    assert isinstance(state["w"], np.ndarray)  # the value given is left as it was


def test_a_dtype_torch_lacks_is_refused_naming_where() -> None:
    with pytest.raises(tp.UnsupportedDTypeError, match=r"the value\['x'\]\[1\] has dtype float8_e4m3b11fnuz"):
        tp.to_torch({"x": [np.zeros(1), np.zeros(1, ml_dtypes.float8_e4m3b11fnuz)]})
    with pytest.raises(tp.UnsupportedDTypeError, match="int4, which torch has no type for"):
        tp.to_torch(np.zeros(2, ml_dtypes.int4))
