"""``tp.NonStrict``: a torch module restored from the entries a checkpoint has, the others left as they are."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


def _net(*widths: int) -> torch.nn.Sequential:
    layers = [torch.nn.Linear(a, b) for a, b in itertools.pairwise(widths)]
    return torch.nn.Sequential(*layers)


def test_a_module_that_gained_a_layer_restores_the_layers_it_had(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = _net(2, 3)
    path = tp.Checkpoint(model=old).write(str(tmp_path / "c"))

    grown = _net(2, 3, 1)
    head = grown[1].weight.detach().clone()
    body = grown[0].weight  # the same tensor after the restore: read in place
    with pytest.raises(tp.AssignmentError, match=r'Missing key\(s\) in state_dict: "1.weight", "1.bias"'):
        tp.Checkpoint(model=_net(2, 3, 1)).read(path)  # the object itself: strict, as load_state_dict is

    model = tp.NonStrict(grown)
    tp.Checkpoint(model=model).read(path).assert_consumed()
    assert grown[0].weight is body and torch.equal(body, old[0].weight) and torch.equal(grown[0].bias, old[0].bias)
    assert torch.equal(grown[1].weight, head)  # the new head keeps its initial values
    assert model.missing_keys == ["1.weight", "1.bias"] and model.unexpected_keys == []


def test_a_grown_module_restores_from_a_state_dict_saved_as_a_dict(tmp_path: Path) -> None:
    # The older layout (model=net.state_dict()): NonStrict leaves the new layer alone, as with the module's own.
    torch.manual_seed(0)
    old = _net(2, 3)
    path = tp.Checkpoint(model=old.state_dict()).write(str(tmp_path / "c"))
    grown = _net(2, 3, 1)
    head = grown[1].weight.detach().clone()
    model = tp.NonStrict(grown)
    tp.Checkpoint(model=model).read(path).assert_consumed().assert_existing_objects_matched()
    assert torch.equal(grown[0].weight, old[0].weight) and torch.equal(grown[1].weight, head)
    assert model.missing_keys == ["1.weight", "1.bias"]
    with pytest.raises(tp.MatchError, match=r"\(root\)\.model: 1\.weight, 1\.bias"):
        tp.Checkpoint(model=_net(2, 3, 1)).read(path).assert_existing_objects_matched()  # strict: said


def test_entries_the_module_no_longer_has_are_ignored_and_reported(tmp_path: Path) -> None:
    big = _net(2, 3, 1)
    path = tp.Checkpoint(model=tp.NonStrict(big)).write(str(tmp_path / "c"))
    # Saved through NonStrict, the checkpoint is the module's own: keys and all.
    assert tp.list_variables(path) == tp.list_variables(tp.Checkpoint(model=big).write(str(tmp_path / "d")))

    small = tp.NonStrict(_net(2, 3))
    tp.Checkpoint(model=small).read(path).assert_consumed()
    assert torch.equal(small.obj[0].weight, big[0].weight)
    assert small.missing_keys == [] and small.unexpected_keys == ["1.weight", "1.bias"]


def test_a_shape_that_changed_is_still_refused_before_anything_is_read(tmp_path: Path) -> None:
    path = tp.Checkpoint(model=_net(2, 3)).write(str(tmp_path / "c"))
    other = _net(2, 4)
    before = other[0].weight.detach().clone()
    with pytest.raises(tp.ShapeMismatchError):
        tp.Checkpoint(model=tp.NonStrict(other)).read(path)
    assert torch.equal(other[0].weight, before)


def test_only_objects_whose_load_state_dict_takes_strict() -> None:
    net = _net(2, 3)
    with pytest.raises(tp.NotTrackableError, match=r"NonStrict\(SGD\): its load_state_dict\(\) takes no `strict`"):
        tp.NonStrict(torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(tp.NotTrackableError, match=r"NonStrict needs an object with state_dict\(\)"):
        tp.NonStrict(np.ones(2))
    assert tp.NonStrict(tp.NonStrict(net)).obj is net
