"""Restoring the variables of a SavedModel directory (``export/variables/variables``) with numpy alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp

CASE = Path(__file__).resolve().parents[1] / "fixtures" / "tf" / "saved_model"


class Dense(tp.AutoTrackable):
    def __init__(self) -> None:
        self.kernel = tp.Variable(np.zeros((3, 2), np.float32))
        self.bias = tp.Variable(np.zeros(2, np.float32))


class Exported(tp.AutoTrackable):
    def __init__(self) -> None:
        self.dense = Dense()
        self.scale = tp.Variable(np.float32(0.0))


def _expected() -> dict[str, object]:
    return json.loads((CASE / "expected.json").read_text())["structure"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("suffix", ["", "/"])
def test_restore_from_a_tensorflow_saved_model_directory(suffix: str) -> None:
    model = Exported()
    status = tp.Checkpoint(root=model).restore(str(CASE / "export") + suffix)
    # The functions and signatures of the SavedModel have no values; every variable matched.
    status.assert_nontrivial_match()
    expected = _expected()
    dense = expected["dense"]
    assert isinstance(dense, dict)
    np.testing.assert_array_equal(model.dense.kernel.numpy(), np.array(dense["kernel"], np.float32))
    np.testing.assert_array_equal(model.dense.bias.numpy(), np.array(dense["bias"], np.float32))
    assert float(model.scale.numpy()) == expected["scale"]


def test_read_matches_every_object() -> None:
    model = Exported()
    tp.Checkpoint(root=model).read(CASE / "export").assert_existing_objects_matched()
    assert float(model.scale.numpy()) == 2.5


def test_readers_accept_the_directory_too() -> None:
    names = [n for n, _ in tp.list_variables(CASE / "export")]
    assert "scale/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert tp.load_variable(CASE / "export", "scale/.ATTRIBUTES/VARIABLE_VALUE") == 2.5


def test_a_directory_without_variables_is_still_not_found(tmp_path: Path) -> None:
    shutil.copytree(CASE / "export", tmp_path / "export")
    shutil.rmtree(tmp_path / "export" / "variables")
    with pytest.raises(tp.CheckpointNotFoundError, match="a SavedModel directory without the checkpoint of its variab"):
        tp.Checkpoint(root=Exported()).restore(str(tmp_path / "export"))


def test_a_saved_model_written_by_trackpoint(tmp_path: Path) -> None:
    # The same layout written here (any backend): the directory restores its variables.
    source = Exported()
    source.scale.assign(np.float32(4.0))
    tp.Checkpoint(root=source).write(str(tmp_path / "m" / "variables" / "variables"))
    target = Exported()
    tp.Checkpoint(root=target).read(str(tmp_path / "m")).assert_consumed()
    assert float(target.scale.numpy()) == 4.0
