"""TensorFlow's ``tf.train`` and ``tf.compat.v1.train`` names, for code ported by changing its import.

``tf.train.Checkpoint(...)`` becomes ``tp.train.Checkpoint(...)`` (``import trackpoint as tp``), and so on
for every name below: each is the trackpoint object of the same name (``tp.train.Checkpoint is
tp.Checkpoint``), with TensorFlow's parameter names and positions. Names TensorFlow has and trackpoint
does not (``tf.train.Example``, ``ExponentialMovingAverage``, ``CheckpointView``, ...) are absent, so
a call to one fails with an ``AttributeError`` at once rather than doing something else.
"""

from __future__ import annotations

from trackpoint.checkpoint import Checkpoint
from trackpoint.checkpoint_management import (
    NewCheckpointReader,
    checkpoint_exists,
    checkpoints_iterator,
    generate_checkpoint_state_proto,
    get_checkpoint_mtimes,
    get_checkpoint_state,
    load_variable,
    remove_checkpoint,
    update_checkpoint_state,
)
from trackpoint.manager import CheckpointManager
from trackpoint.reader import list_variables, load_checkpoint
from trackpoint.saver import Saver
from trackpoint.state import latest_checkpoint
from trackpoint.storage import CheckpointOptions

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "CheckpointOptions",
    "NewCheckpointReader",
    "Saver",
    "checkpoint_exists",
    "checkpoints_iterator",
    "generate_checkpoint_state_proto",
    "get_checkpoint_mtimes",
    "get_checkpoint_state",
    "latest_checkpoint",
    "list_variables",
    "load_checkpoint",
    "load_variable",
    "remove_checkpoint",
    "update_checkpoint_state",
]
