"""TensorFlow's checkpoint functions are called by TensorFlow's parameter names and positions.

The names below are TensorFlow 2.21's (``inspect.signature`` of ``tf.train.*``, ``tf.compat.v1.train.*``).
trackpoint's own parameters come after them or are keyword-only, so a call written for TensorFlow binds
every argument to the parameter TensorFlow would.
"""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from fixtures.tf import tfcases
from trackpoint.errors import ArgumentTypeError

TF_PARAMETERS: dict[str, tuple[Callable[..., Any], list[str]]] = {
    "latest_checkpoint": (tp.latest_checkpoint, ["checkpoint_dir", "latest_filename"]),
    "load_checkpoint": (tp.load_checkpoint, ["ckpt_dir_or_file"]),
    "list_variables": (tp.list_variables, ["ckpt_dir_or_file"]),
    "load_variable": (tp.load_variable, ["ckpt_dir_or_file", "name"]),
    "checkpoint_exists": (tp.checkpoint_exists, ["checkpoint_prefix"]),
    "get_checkpoint_state": (tp.get_checkpoint_state, ["checkpoint_dir", "latest_filename"]),
    "update_checkpoint_state": (
        tp.update_checkpoint_state,
        [
            "save_dir",
            "model_checkpoint_path",
            "all_model_checkpoint_paths",
            "latest_filename",
            "all_model_checkpoint_timestamps",
            "last_preserved_timestamp",
        ],
    ),
    "generate_checkpoint_state_proto": (
        tp.generate_checkpoint_state_proto,
        [
            "save_dir",
            "model_checkpoint_path",
            "all_model_checkpoint_paths",
            "all_model_checkpoint_timestamps",
            "last_preserved_timestamp",
        ],
    ),
    "get_checkpoint_mtimes": (tp.get_checkpoint_mtimes, ["checkpoint_prefixes"]),
    "remove_checkpoint": (
        tp.remove_checkpoint,
        ["checkpoint_prefix", "checkpoint_format_version", "meta_graph_suffix"],
    ),
    "checkpoints_iterator": (tp.checkpoints_iterator, ["checkpoint_dir", "min_interval_secs", "timeout", "timeout_fn"]),
    "NewCheckpointReader": (tp.NewCheckpointReader, ["filepattern"]),
    "CheckpointManager": (
        tp.CheckpointManager.__init__,
        [
            "self",
            "checkpoint",
            "directory",
            "max_to_keep",
            "keep_checkpoint_every_n_hours",
            "checkpoint_name",
            "step_counter",
            "checkpoint_interval",
            "init_fn",
            "last_checkpoint_step",
        ],
    ),
    "CheckpointManager.save": (tp.CheckpointManager.save, ["self", "checkpoint_number", "check_interval", "options"]),
    "Checkpoint.save": (tp.Checkpoint.save, ["self", "file_prefix", "options"]),
    "Checkpoint.write": (tp.Checkpoint.write, ["self", "file_prefix", "options"]),
    "Checkpoint.read": (tp.Checkpoint.read, ["self", "save_path", "options"]),
    "Checkpoint.restore": (tp.Checkpoint.restore, ["self", "save_path", "options"]),
}


@pytest.mark.parametrize("call", sorted(TF_PARAMETERS))
def test_tensorflows_parameters_come_first_in_its_order(call: str) -> None:
    function, names = TF_PARAMETERS[call]
    positional = [p.name for p in inspect.signature(function).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional[: len(names)] == names


def _run(tmp_path: Path) -> tuple[str, str]:
    """A directory with two saves; the second's prefix."""
    ckpt = tp.Checkpoint(v=tp.Variable(np.arange(3, dtype=np.float32)))
    ckpt.save(str(tmp_path / "ckpt"))
    return str(tmp_path), ckpt.save(str(tmp_path / "ckpt"))


def test_latest_checkpoint_takes_tensorflows_names_and_positions(tmp_path: Path) -> None:
    run, second = _run(tmp_path)
    # A second series with a state file of another name: latest_filename must choose which file is read.
    best = tp.Checkpoint(v=tp.Variable(np.zeros(3, np.float32))).write(f"{run}/best-1")
    tp.update_checkpoint_state(run, best, latest_filename="evaluated")
    assert tp.latest_checkpoint(checkpoint_dir=run, latest_filename="checkpoint") == second
    assert tp.latest_checkpoint(run, "evaluated") == best
    assert tp.latest_checkpoint(checkpoint_dir=run, latest_filename="evaluated") == best
    assert tp.latest_checkpoint(run, None) == second


def test_latest_checkpoint_keeps_its_former_names(tmp_path: Path) -> None:
    run, second = _run(tmp_path)
    options = tp.CheckpointOptions(backend="bundle")
    assert tp.latest_checkpoint(directory=run) == second
    assert tp.latest_checkpoint(run, options) == second  # options, where earlier versions had them
    assert tp.latest_checkpoint(run, options=options) == second
    with pytest.raises(ArgumentTypeError, match="'checkpoint_dir' and 'directory'"):
        tp.latest_checkpoint(run, directory=run)
    with pytest.raises(ArgumentTypeError, match="options twice"):
        tp.latest_checkpoint(run, options, options=options)
    with pytest.raises(ArgumentTypeError, match="missing its required argument 'checkpoint_dir'"):
        tp.latest_checkpoint()
    with pytest.raises(ArgumentTypeError, match="latest_filename must be"):
        tp.latest_checkpoint(run, {"backend": "bundle"})  # type: ignore[arg-type]


def test_readers_take_ckpt_dir_or_file_and_their_former_name(tmp_path: Path) -> None:
    run, second = _run(tmp_path)
    want = tp.list_variables(second)
    assert tp.list_variables(ckpt_dir_or_file=run) == want
    assert tp.list_variables(path=run) == want
    with tp.load_checkpoint(ckpt_dir_or_file=run) as reader:
        np.testing.assert_array_equal(reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE"), [0.0, 1.0, 2.0])
    with tp.load_checkpoint(path=second, options=tp.CheckpointOptions()) as reader:
        assert reader.has_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    with pytest.raises(ArgumentTypeError, match="'ckpt_dir_or_file' and 'path'"):
        tp.list_variables(run, path=run)
    with pytest.raises(ArgumentTypeError, match="'ckpt_dir_or_file' and 'path'"):
        tp.load_checkpoint(ckpt_dir_or_file=run, path=run)


def test_checkpoint_exists_matches_files_and_globs_as_tensorflow(tmp_path: Path) -> None:
    # The answers TensorFlow 2.21's tf.compat.v1.train.checkpoint_exists gives for the same paths.
    run = tmp_path / "manager"
    shutil.copytree(Path(tfcases.prefix("manager")).parent, run)
    assert tp.checkpoint_exists(run / "ckpt-3")  # a committed checkpoint
    assert tp.checkpoint_exists(run / "ckpt-3.index")  # a file
    assert tp.checkpoint_exists(run)  # a directory
    assert tp.checkpoint_exists(f"{run}/ckpt-*")  # a glob matching files
    assert tp.checkpoint_exists(f"{run}/ckpt-[23]")  # a glob matching <prefix>.index
    assert tp.checkpoint_exists(f"file://{run}/ckpt-3.data-00000-of-00001")
    assert not tp.checkpoint_exists(run / "ckpt-1")  # deleted by TensorFlow's manager
    assert not tp.checkpoint_exists(f"{run}/model-*")
    (run / "ckpt-3.index").unlink()  # data without an index: a file still, but not the prefix
    assert not tp.checkpoint_exists(run / "ckpt-3")
    assert tp.checkpoint_exists(run / "ckpt-3.data-00000-of-00001")


def test_checkpoint_exists_on_other_stores_counts_committed_checkpoints() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    path = ckpt.save("memory://tfsig/run/ckpt")
    assert tp.checkpoint_exists(path)
    assert not tp.checkpoint_exists("memory://tfsig/run/ckpt-*")
    assert not tp.checkpoint_exists("memory://tfsig/run/ckpt-2")
