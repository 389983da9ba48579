"""trackpoint: object-based checkpoints with pluggable storage.

``import trackpoint`` gives the whole user API: trackables and variables, the
``Checkpoint`` facade and its load statuses, checkpoint inspection, options and
the error classes; ``trackpoint.train`` holds them under TensorFlow's ``tf.train``
names. No storage library is imported until a backend is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackpoint import optimizers, preemption, train
from trackpoint.autotrackable import AutoTrackable
from trackpoint.checkpoint import Checkpoint
from trackpoint.checkpoint_management import (
    NewCheckpointReader,
    checkpoint_exists,
    checkpoints_iterator,
    generate_checkpoint_state_proto,
    get_checkpoint_mtimes,
    get_checkpoint_state,
    list_objects,
    load_variable,
    meta_graph_filename,
    object_graph_key_mapping,
    remove_checkpoint,
    update_checkpoint_state,
    wait_for_new_checkpoint,
)
from trackpoint.convert import CopiedCheckpoint, RunCopy, convert, convert_run
from trackpoint.data_structures import ListWrapper, NoDependency
from trackpoint.diff import DiffReport, TensorDiff, diff
from trackpoint.dtypes import string
from trackpoint.errors import *  # noqa: F403
from trackpoint.errors import __all__ as _errors_all
from trackpoint.manager import CheckpointManager
from trackpoint.python_state import PythonState
from trackpoint.reader import TensorReader, list_variables, load_checkpoint, load_tree, object_metadata, to_torch
from trackpoint.restore import (
    CheckpointLoadStatus,
    InitializationOnlyStatus,
    LoadStatus,
    NameBasedSaverStatus,
)
from trackpoint.saver import CheckpointableSaver, Saver, TrackableSaver, frozen_saver
from trackpoint.state import latest_checkpoint, read_checkpoint_state
from trackpoint.stateful import NonStrict, Stateful
from trackpoint.storage import CheckpointOptions, TensorSlice
from trackpoint.trackable import (
    Trackable,
    no_automatic_dependency_tracking,
    no_automatic_dependency_tracking_scope,
    no_manual_dependency_tracking_scope,
)
from trackpoint.variables import SaveSliceInfo, Variable
from trackpoint.verify import Problem, VerifyReport, verify

if TYPE_CHECKING:  # at run time served lazily by __getattr__ below
    from trackpoint.dtypes import bfloat16
    from trackpoint.plugins import list_backends

__version__ = "0.1.0"

__all__ = [
    "AutoTrackable",
    "Checkpoint",
    "CheckpointLoadStatus",
    "CheckpointManager",
    "CheckpointOptions",
    "CheckpointableSaver",
    "CopiedCheckpoint",
    "DiffReport",
    "InitializationOnlyStatus",
    "ListWrapper",
    "LoadStatus",
    "NameBasedSaverStatus",
    "NewCheckpointReader",
    "NoDependency",
    "Problem",
    "PythonState",
    "RunCopy",
    "SaveSliceInfo",
    "Saver",
    "NonStrict",
    "Stateful",
    "TensorDiff",
    "TensorReader",
    "TensorSlice",
    "Trackable",
    "TrackableSaver",
    "Variable",
    "VerifyReport",
    "bfloat16",
    "checkpoint_exists",
    "checkpoints_iterator",
    "convert",
    "convert_run",
    "diff",
    "frozen_saver",
    "generate_checkpoint_state_proto",
    "get_checkpoint_mtimes",
    "get_checkpoint_state",
    "latest_checkpoint",
    "list_backends",
    "list_objects",
    "list_variables",
    "load_checkpoint",
    "load_tree",
    "load_variable",
    "meta_graph_filename",
    "no_automatic_dependency_tracking",
    "no_automatic_dependency_tracking_scope",
    "no_manual_dependency_tracking_scope",
    "object_graph_key_mapping",
    "object_metadata",
    "optimizers",
    "preemption",
    "read_checkpoint_state",
    "remove_checkpoint",
    "string",
    "to_torch",
    "train",
    "update_checkpoint_state",
    "verify",
    "wait_for_new_checkpoint",
    *_errors_all,
]


def __getattr__(name: str) -> object:
    # Lazy: the plugin manager (pluggy, entry points) and ml_dtypes (behind
    # bfloat16) are imported only when asked for, so ``import trackpoint`` stays light.
    if name == "bfloat16":
        from trackpoint import dtypes

        return dtypes.bfloat16
    if name == "list_backends":
        from trackpoint.plugins import list_backends

        return list_backends
    raise AttributeError(f"module 'trackpoint' has no attribute {name!r}")
