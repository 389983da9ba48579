"""``trackpoint.train``: TensorFlow's ``tf.train`` / ``tf.compat.v1.train`` names, so porting changes the import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import trackpoint as tp
import trackpoint.train

# The names of TensorFlow 2.21's tf.train (first group) and tf.compat.v1.train (second) trackpoint has.
TF_TRAIN = {
    "Checkpoint",
    "CheckpointManager",
    "CheckpointOptions",
    "checkpoints_iterator",
    "get_checkpoint_state",
    "latest_checkpoint",
    "list_variables",
    "load_checkpoint",
    "load_variable",
}
TF_COMPAT_V1_TRAIN = {
    "NewCheckpointReader",
    "Saver",
    "checkpoint_exists",
    "generate_checkpoint_state_proto",
    "get_checkpoint_mtimes",
    "remove_checkpoint",
    "update_checkpoint_state",
}


def test_the_names_are_tensorflows_and_the_objects_trackpoints() -> None:
    assert tp.train is trackpoint.train
    assert set(trackpoint.train.__all__) == TF_TRAIN | TF_COMPAT_V1_TRAIN
    for name in trackpoint.train.__all__:
        assert getattr(trackpoint.train, name) is getattr(tp, name), name
    # A name TensorFlow has and trackpoint does not is absent, never a stand-in.
    assert not hasattr(trackpoint.train, "ExponentialMovingAverage")
    assert not hasattr(trackpoint.train, "CheckpointView")


def test_tf_train_code_runs_with_only_its_import_changed(tmp_path: Path) -> None:
    train = tp.train  # was: from tensorflow import train
    step = tp.Variable(np.int64(0))
    ckpt = train.Checkpoint(step=step, w=tp.Variable(np.arange(4, dtype=np.float32)))
    manager = train.CheckpointManager(ckpt, str(tmp_path / "run"), max_to_keep=2)
    for _ in range(3):
        step.assign_add(1)
        manager.save()
    latest = train.latest_checkpoint(str(tmp_path / "run"))
    assert latest == str(tmp_path / "run" / "ckpt-3")
    assert train.get_checkpoint_state(str(tmp_path / "run")).all_model_checkpoint_paths[0].endswith("ckpt-2")
    assert int(train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE")) == 3
    assert next(iter(train.checkpoints_iterator(str(tmp_path / "run"), timeout=0))) == latest
    saver = train.Saver([tp.Variable(np.ones(2), name="w")])  # was: tf.compat.v1.train.Saver
    prefix = saver.save(None, str(tmp_path / "tf1" / "model"), global_step=5)
    assert train.checkpoint_exists(prefix) and train.list_variables(prefix) == [("w", [2])]


def test_importing_it_loads_nothing_optional() -> None:
    script = """
import json, sys
import trackpoint.train
lazy = ("ml_dtypes", "pluggy", "trackpoint.plugins", "trackpoint.backends")
print(json.dumps([n for n in lazy if any(m == n or m.startswith(n + ".") for m in sys.modules)]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
