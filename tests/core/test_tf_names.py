"""Every TensorFlow name of issue 15's porting list is importable from ``trackpoint`` and callable there."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import trackpoint as tp

NAMES = [
    # checkpoint management (tf.train / tf.compat.v1.train)
    "latest_checkpoint",
    "get_checkpoint_state",
    "update_checkpoint_state",
    "generate_checkpoint_state_proto",
    "checkpoint_exists",
    "remove_checkpoint",
    "get_checkpoint_mtimes",
    "meta_graph_filename",
    # readers
    "load_checkpoint",
    "list_variables",
    "load_variable",
    "NewCheckpointReader",
    "list_objects",
    "object_graph_key_mapping",
    # savers and checkpoints
    "Checkpoint",
    "CheckpointManager",
    "CheckpointOptions",
    "Saver",
    "TrackableSaver",
    "CheckpointableSaver",
    "frozen_saver",
    "PythonState",
    # dependency tracking
    "no_automatic_dependency_tracking",
    "no_automatic_dependency_tracking_scope",
    "no_manual_dependency_tracking_scope",
]


@pytest.mark.parametrize("name", NAMES)
def test_exported(name: str) -> None:
    assert name in tp.__all__
    assert callable(getattr(tp, name))


def test_aliases() -> None:
    assert tp.CheckpointableSaver is tp.TrackableSaver
    simple = Path(__file__).resolve().parents[1] / "fixtures" / "tf" / "simple" / "ckpt-1"
    with tp.NewCheckpointReader(simple) as reader:
        assert reader.has_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")


def test_tensorflow_1_saver_signature_order() -> None:
    # TensorFlow 1's positional order, so positional calls port unchanged.
    params = list(inspect.signature(tp.Saver).parameters)
    assert params[:15] == [
        "var_list",
        "reshape",
        "sharded",
        "max_to_keep",
        "keep_checkpoint_every_n_hours",
        "name",
        "restore_sequentially",
        "saver_def",
        "builder",
        "defer_build",
        "allow_empty",
        "write_version",
        "pad_step_number",
        "save_relative_paths",
        "filename",
    ]
    # CheckpointManager's order is checked with the other tf.train signatures (test_tf_signatures).
