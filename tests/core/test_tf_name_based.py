"""TF1 ``tf.compat.v1.train.Saver`` checkpoints restored by name through ``trackpoint.Checkpoint``.

The fixtures (``tests/fixtures/tf/tf1_saver``, layout in its README.md) have no
object graph, so ``Checkpoint.restore`` falls back to matching ``Variable.name``
against the checkpoint keys and returns a ``NameBasedSaverStatus``, as TF does.
The expectations mirror what TF 2.21 itself does with these files (checked in
the generator's virtualenv): a ``tf.train.Checkpoint`` whose variables carry
the TF1 names restores all of them, ``assert_consumed()`` passes, and a
variable created after ``restore()`` is still restored by name.

``trackpoint.Saver`` also restores TF2's object-based ``nested`` fixture by
the variables' ``full_name``, as TF's Saver does.

The ``checkpoint`` state files written by TF (TF1 Saver, TF2 ``save()`` and
``CheckpointManager``) are parsed by ``trackpoint.latest_checkpoint`` and
``trackpoint.state.read_checkpoint_state``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from fixtures.tf import tfcases
from fixtures.tf.tfcases import ExpectedCheckpoint, assert_same_tensor
from trackpoint.errors import DTypeMismatchError, InvalidCheckpointError, MatchError, ShapeMismatchError
from trackpoint.state import read_checkpoint_state

TF1 = tfcases.checkpoints("tf1_saver")
TF1_DIR = tfcases.FIXTURES / "tf1_saver"
SHAPES: dict[str, tuple[tuple[int, ...], Any]] = {
    "dense/kernel": ((3, 2), np.float32),
    "dense/bias": ((2,), np.float32),
    "embedding": ((6, 3), np.float32),
    "global_step": ((), np.int64),
}


def _variables(names: list[str] | None = None) -> dict[str, tp.Variable]:
    """Zero-filled trackpoint Variables carrying TF1's variable names."""
    return {n: tp.Variable(np.zeros(*SHAPES[n]), name=n) for n in (names or list(SHAPES))}


def _model(variables: dict[str, tp.Variable]) -> Any:
    # Attribute names are deliberately unlike the TF1 names: name-based restore must not care.
    model: Any = tp.AutoTrackable()
    model.layers = [v for n, v in variables.items() if n != "global_step"]
    if "global_step" in variables:
        model.step = variables["global_step"]
    return model


@pytest.mark.parametrize("c", TF1, ids=repr)
def test_checkpoint_restores_tf1_saver_by_name(c: ExpectedCheckpoint) -> None:
    variables = _variables()
    status = tp.Checkpoint(model=_model(variables)).restore(c.prefix)
    assert isinstance(status, tp.NameBasedSaverStatus)
    status.assert_consumed()
    status.assert_existing_objects_matched()
    status.assert_nontrivial_match()
    for name, var in variables.items():
        assert_same_tensor(var.numpy(), c.tensor(name), f"{c}:{name}")


def test_fixture_values_follow_the_documented_steps() -> None:
    # README.md promises these relations; other engineers (trackpoint.Saver) rely on them.
    first, second, sharded = TF1
    assert [int(c.tensor("global_step")) for c in TF1] == [100, 200, 300]
    np.testing.assert_array_equal(second.tensor("dense/kernel"), first.tensor("dense/kernel") + 1)
    np.testing.assert_array_equal(second.tensor("dense/bias"), first.tensor("dense/bias") + 1)
    initial_kernel = np.arange(6, dtype=np.float32).reshape(3, 2) * 0.25 + 1
    np.testing.assert_array_equal(sharded.tensor("dense/kernel"), initial_kernel)
    assert sharded.record["index"]["header_num_shards"] == 2


@pytest.mark.parametrize("c", TF1, ids=repr)
def test_partitioned_embedding_is_assembled_from_slices(c: ExpectedCheckpoint) -> None:
    assert len(c.record["index"]["entries"]["embedding"]["slices"]) == 2
    var = tp.Variable(np.zeros((6, 3), np.float32), name="embedding")
    status = tp.Checkpoint(model=_model({"embedding": var})).restore(c.prefix)
    status.assert_existing_objects_matched()
    np.testing.assert_array_equal(var.numpy(), np.arange(18, dtype=np.float32).reshape(6, 3) * 0.25 + 20)


def test_list_variables_hides_slice_keys() -> None:
    for c in TF1:
        assert [(n, list(s)) for n, s in tp.list_variables(c.prefix)] == c.list_variables


def test_variable_missing_from_checkpoint_fails_assert_consumed() -> None:
    variables = _variables(["dense/kernel"])
    extra = tp.Variable(np.zeros(2, np.float32), name="dense/missing")
    model = _model(variables)
    model.extra = extra
    status = tp.Checkpoint(model=model).restore(str(TF1_DIR / "model.ckpt-2"))
    with pytest.raises(MatchError, match="dense/missing"):
        status.assert_consumed()
    # The variable that does exist was restored all the same.
    assert_same_tensor(variables["dense/kernel"].numpy(), TF1[1].tensor("dense/kernel"), "dense/kernel")
    np.testing.assert_array_equal(extra.numpy(), np.zeros(2, np.float32))


def test_shape_mismatch_raises_and_restores_nothing() -> None:
    variables = _variables()
    variables["dense/kernel"] = tp.Variable(np.zeros((2, 3), np.float32), name="dense/kernel")
    with pytest.raises(ShapeMismatchError, match="dense/kernel"):
        tp.Checkpoint(model=_model(variables)).restore(str(TF1_DIR / "model.ckpt-2"))
    for name, var in variables.items():
        assert not np.asarray(var.numpy()).any(), f"{name} was modified by a failed restore"


def test_dtype_mismatch_raises_and_restores_nothing() -> None:
    variables = _variables()
    variables["global_step"] = tp.Variable(np.int32(0), name="global_step")
    with pytest.raises(DTypeMismatchError, match="global_step"):
        tp.Checkpoint(model=_model(variables)).restore(str(TF1_DIR / "model.ckpt-2"))
    for name, var in variables.items():
        assert not np.asarray(var.numpy()).any(), f"{name} was modified by a failed restore"


def test_variable_created_after_name_based_restore_is_restored() -> None:
    # TF 2.21 restores a variable tracked after restore() by name (checked with these fixtures).
    kernel = tp.Variable(np.zeros((3, 2), np.float32), name="dense/kernel")
    model = _model({"dense/kernel": kernel})
    status = tp.Checkpoint(model=model).restore(str(TF1_DIR / "model.ckpt-2"))
    model.bias = tp.Variable(np.zeros(2, np.float32), name="dense/bias")
    status.assert_consumed()
    assert_same_tensor(model.bias.numpy(), TF1[1].tensor("dense/bias"), "dense/bias")


def test_object_metadata_rejects_a_name_based_checkpoint() -> None:
    with pytest.raises(InvalidCheckpointError, match="does not appear to be object-based"):
        tp.object_metadata(str(TF1_DIR / "model.ckpt-1"))


def test_saver_restores_tf2_nested_checkpoint_by_full_name() -> None:
    # Cross-loading the other way, as TF's Saver does: names are the graph's full_name attributes
    # (TF's variable names, e.g. "encoder_dense/kernel" and the slot "shared/Momentum"), mapped
    # to object-based keys through the object graph; the diamond's variable appears once.
    c = tfcases.checkpoints("nested")[0]
    keys = {a["full_name"]: a["checkpoint_key"] for n in c.record["object_graph"] for a in n.get("attributes", [])}
    assert {"shared", "shared/Momentum", "encoder_dense/kernel", "save_counter"} <= set(keys)
    variables = {name: tp.Variable(np.zeros_like(c.tensor(key)), name=name) for name, key in keys.items()}
    tp.Saver(variables).restore(c.prefix)
    for name, var in variables.items():
        assert_same_tensor(var.numpy(), c.tensor(keys[name]), name)


# ---------------------------------------------------------------- state files written by TensorFlow

STATE_DIRS = {
    "tf1_saver": (TF1_DIR, tfcases.expected("tf1_saver")["state_file"]),
    "tf1_saver/sharded": (TF1_DIR / "sharded", tfcases.expected("tf1_saver")["sharded_state_file"]),
    "simple": (tfcases.FIXTURES / "simple", tfcases.expected("simple")["state_file"]),
    "manager": (tfcases.FIXTURES / "manager", tfcases.expected("manager")["state_file"]),
}


@pytest.mark.parametrize("name", list(STATE_DIRS))
def test_latest_checkpoint_reads_tf_state_file(name: str) -> None:
    directory, want = STATE_DIRS[name]
    assert tp.latest_checkpoint(str(directory)) == str(directory / want["latest"])


@pytest.mark.parametrize("name", list(STATE_DIRS))
def test_read_checkpoint_state_matches_tf(name: str) -> None:
    directory, want = STATE_DIRS[name]
    state = read_checkpoint_state(str(directory))
    assert state is not None
    assert state.model_checkpoint_path == str(directory / want["latest"])
    assert list(state.all_model_checkpoint_paths) == [str(directory / p) for p in want["all_model_checkpoint_paths"]]
    assert list(state.all_model_checkpoint_timestamps) == want["all_model_checkpoint_timestamps"]
    assert state.last_preserved_timestamp == want["last_preserved_timestamp"]


def test_manager_state_file_has_timestamps() -> None:
    # Guards the premise of the test above: the manager fixture really carries timestamps.
    want = STATE_DIRS["manager"][1]
    assert len(want["all_model_checkpoint_timestamps"]) == 2 and want["last_preserved_timestamp"] > 0


def test_load_checkpoint_of_tf1_directory_reads_the_latest() -> None:
    reader = tp.load_checkpoint(str(TF1_DIR))
    assert int(reader.get_tensor("global_step")) == 200
    assert_same_tensor(reader.get_tensor("embedding"), TF1[1].tensor("embedding"), "embedding")


def test_copied_tf1_directory_resolves_and_restores(tmp_path: Path) -> None:
    # The state file holds relative paths (save_relative_paths=True), so a copy works where it lands.
    copy = tmp_path / "copied"
    shutil.copytree(TF1_DIR, copy, ignore=shutil.ignore_patterns("expected.json"))
    latest = tp.latest_checkpoint(str(copy))
    assert latest == str(copy / "model.ckpt-2")
    variables = _variables()
    tp.Checkpoint(model=_model(variables)).restore(latest).assert_consumed()
    assert int(variables["global_step"].numpy()) == 200


def test_state_file_pointing_at_a_deleted_checkpoint_recovers_by_listing(tmp_path: Path) -> None:
    # trackpoint goes further than TF (which returns None): it never returns a broken path.
    copy = tmp_path / "copied"
    shutil.copytree(TF1_DIR, copy, ignore=shutil.ignore_patterns("expected.json", "sharded"))
    for f in copy.glob("model.ckpt-2.*"):
        f.unlink()
    assert tp.latest_checkpoint(str(copy)) == str(copy / "model.ckpt-1")
