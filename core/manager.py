"""``CheckpointManager``: numbered saves, retention, and resuming after a restart.

A port of ``tf.train.CheckpointManager`` onto the storage contract, made safe
for object stores, crashes and several writers:

* every state-file update is a conditional read-modify-write
  (:func:`trackpoint.state.modify_checkpoint_state`), so two managers on one
  directory never drop each other's entries;
* retention deletes whole checkpoints through
  :meth:`~trackpoint.storage.StorageBackend.delete` (every shard, every format)
  and updates the state file *before* deleting, so a crash half-way through a
  delete never leaves a half-deleted checkpoint listed as kept;
* a manager opened on an existing directory resumes from its state file,
  repairs it from the list of committed checkpoints when a save crashed before
  updating it, and removes leftovers of crashed saves
  (:meth:`~trackpoint.storage.StorageBackend.cleanup`), again after every save;
* without a backend chosen in its options it finds checkpoints of every format
  in the directory (a run saved with ``CheckpointOptions(backend="zarr")`` and
  restarted without it resumes from its Zarr checkpoints).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
import logging
import math
import numbers
import os
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final, Literal, Protocol

import numpy as np

from trackpoint import _array_values, _async, _paths, _resolve, _signal_safe, observe, state
from trackpoint._array_values import PYTHON_NUMBERS_KEY, is_jax_array
from trackpoint.distributed._driver import coordinator_of, on_root
from trackpoint.errors import (
    ArgumentTypeError,
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    InvalidCheckpointError,
    MatchError,
    StorageError,
    TrackableError,
)
from trackpoint.graph import node_names, proto_node_names
from trackpoint.restore import CheckpointLoadStatus
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, CheckpointReader, StorageBackend, WriteItem
from trackpoint.trackable import Trackable

__all__ = ["CheckpointManager"]

_log = logging.getLogger(__name__)

#: Checkpoint key of the metrics given to :meth:`CheckpointManager.save`: a string scalar holding their JSON.
#: Outside the object graph, so restores (trackpoint's and TensorFlow's) never look at it, yet committed with
#: the values and deleted with them: a restarted manager reads the metrics of the checkpoints it adopts.
METRICS_KEY = "_TRACKPOINT_METRICS"

#: Keys of a checkpoint that are no tensors of its objects: the object graph, the metrics, and the types of the
#: Python numbers it holds.
NOT_TENSORS: Final = frozenset({OBJECT_GRAPH_KEY, METRICS_KEY, PYTHON_NUMBERS_KEY})


def stored_metrics(reader: CheckpointReader) -> Any:
    """The value stored under :data:`METRICS_KEY` (JSON text, as ``bytes``), ``None`` when the checkpoint has none.

    Raises
    ------
    ValueError
        The stored tensor is not one value.
    """
    if not reader.has(METRICS_KEY):
        return None
    raw = np.asarray(reader.read(METRICS_KEY), dtype=object).reshape(-1)
    if raw.size != 1:
        raise ValueError(f"{METRICS_KEY} holds {raw.size} values, not one")
    return raw[0]


def read_metrics(reader: CheckpointReader) -> dict[str, Any] | None:
    """The metrics a :class:`CheckpointManager` stored in a checkpoint, decoded; ``None`` when it has none.

    The one reading of them, for the manager (which scores them) and the command line (which lists them).

    Parameters
    ----------
    reader
        An open reader of the checkpoint.

    Returns
    -------
    dict or None
        The metrics as saved (JSON values), or ``None`` without :data:`METRICS_KEY`.

    Raises
    ------
    InvalidCheckpointError
        The stored JSON holds no mapping.
    ValueError
        The stored value is not one value, or not JSON.
    TypeError
        The stored value is neither text nor bytes.
    """
    raw = stored_metrics(reader)
    if raw is None:
        return None
    metrics = json.loads(raw if isinstance(raw, (bytes, str)) else bytes(raw))
    if not isinstance(metrics, dict):
        raise InvalidCheckpointError(f"they hold a {type(metrics).__name__}, not a mapping")
    return metrics


class _Scored:
    """The metrics of one checkpoint as stored (JSON values) and ``best_fn`` of them; both ``None`` without."""

    __slots__ = ("metrics", "score")

    def __init__(self, metrics: dict[str, Any] | None, score: float | None) -> None:
        self.metrics = metrics
        self.score = score


_WITHOUT = _Scored(None, None)
#: A kept checkpoint found no longer committed when its metrics were read (deleted half-way, or by another
#: process): not one without metrics, to be kept for ever, but one for retention to retire (its delete retried).
_GONE = _Scored(None, None)


class _Unread:
    """The metrics of a checkpoint not read yet (``None`` means read, and absent)."""


_UNREAD: Final = _Unread()


class _SaveCounter(Protocol):
    def assign_add(self, delta: Any) -> Any: ...

    def numpy(self) -> Any: ...


class ManagedCheckpoint(Protocol):
    """What the manager needs from the object it saves (``trackpoint.Checkpoint``)."""

    @property
    def save_counter(self) -> _SaveCounter: ...

    def write(self, file_prefix: str, options: CheckpointOptions | None = None) -> str: ...

    def restore(self, save_path: str, options: CheckpointOptions | None = None) -> Any: ...


def _as_int(value: Any) -> int:
    """An ``int`` from an int, a numpy scalar or a variable (anything with ``numpy()``)."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    arr = np.asarray(value)
    if arr.shape != () or arr.dtype.kind not in "iu":
        raise TrackableError(f"expected an integer step (an int or an integer scalar Variable), got {value!r}")
    return int(arr)


def _checkpoint_number(value: Any, directory: str, name: str) -> int:
    """``checkpoint_number`` of :meth:`CheckpointManager.save` as an ``int``, checked before the save changes anything.

    Raises
    ------
    TrackableError
        ``value`` is not an integer (a float, a bool, a string), or is negative.
    """
    try:
        number = _as_int(value)
    except TrackableError:
        number = None
    if number is None or number < 0:
        why = (
            f"negative: it would be saved as {name}-{number}, which a manager reopening the directory does not "
            "recognize and never retires"
            if number is not None
            else "not an integer"
        )
        raise TrackableError(
            f"CheckpointManager.save in {directory!r}: checkpoint_number={value!r} is refused ({why}); nothing was "
            "saved. Pass a non-negative integer (an int, a numpy integer or an integer scalar Variable such as the "
            "global step), or None to number the checkpoint by save_counter"
        )
    return number


_ABSENT = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_arguments(
    checkpoint: Any,
    directory: Any,
    max_to_keep: Any,
    keep_checkpoint_every_n_hours: Any,
    checkpoint_name: Any,
    step_counter: Any,
    checkpoint_interval: Any,
    init_fn: Any,
) -> None:
    """Refuse the arguments of :class:`CheckpointManager` it could not use, before it touches the directory.

    Each would otherwise fail later, at a save, after that save's checkpoint was committed (a
    ``keep_checkpoint_every_n_hours`` that is a string broke retention, so no checkpoint was ever deleted), or
    never (an ``int`` step counter, which cannot advance, made every save after the first one skip).
    """
    where = "CheckpointManager"
    # Looked up statically: reading `save_counter` would create the counter, which a `read()` of a checkpoint
    # written by `write()` then reports as unmatched.
    missing = [
        name
        for name in ("save_counter", "write", "restore")
        if inspect.getattr_static(checkpoint, name, _ABSENT) is _ABSENT
    ]
    if missing:
        raise ArgumentTypeError(
            f"{where}: checkpoint is {type(checkpoint).__name__}, which lacks {', '.join(missing)}: pass a "
            "trackpoint.Checkpoint (tp.Checkpoint(model=..., optimizer=...)), not the objects to save"
        )
    if not isinstance(directory, (str, os.PathLike)):
        raise ArgumentTypeError(f"{where}: directory must be a path or URL string, got {type(directory).__name__}")
    if not os.fspath(directory):
        raise InvalidArgumentError(f"{where} needs a directory (a local path or a URL), got ''")
    if max_to_keep is not None:
        if not _is_int(max_to_keep):
            raise ArgumentTypeError(
                f"Expected a positive integer or `None` for `max_to_keep`, got {max_to_keep!r} "
                f"({type(max_to_keep).__name__})."
            )
        if max_to_keep <= 0:
            raise InvalidArgumentError(f"Expected a positive integer or `None` for `max_to_keep`, got {max_to_keep}.")
    hours = keep_checkpoint_every_n_hours
    if hours is not None:
        if isinstance(hours, (bool, np.bool_)) or not isinstance(hours, (int, float, np.integer, np.floating)):
            raise ArgumentTypeError(
                f"{where}: keep_checkpoint_every_n_hours must be a number of hours or None, got {hours!r} "
                f"({type(hours).__name__})"
            )
        if not hours > 0 or hours == float("inf"):
            raise InvalidArgumentError(
                f"{where}: keep_checkpoint_every_n_hours must be a positive, finite number of hours (or None to "
                f"preserve nothing), got {hours!r}"
            )
    if (
        not isinstance(checkpoint_name, str)
        or not checkpoint_name
        or "/" in checkpoint_name
        or os.sep in checkpoint_name
    ):
        raise InvalidArgumentError(
            f"checkpoint_name {checkpoint_name!r} must be a non-empty file name without path separators; "
            "put sub-directories into `directory` instead"
        )
    if checkpoint_interval is not None:
        if step_counter is None:
            raise InvalidArgumentError("`step_counter` should be passed if `checkpoint_interval` is not None.")
        if not _is_int(checkpoint_interval) or checkpoint_interval <= 0:
            raise InvalidArgumentError(
                f"{where}: checkpoint_interval must be a positive integer number of steps, got {checkpoint_interval!r}"
            )
    if step_counter is not None and checkpoint_interval is not None:
        if _is_int(step_counter) or isinstance(step_counter, float) or is_jax_array(step_counter):
            # Immutable: `step += 1` in the training loop rebinds the caller's name, the manager keeps the old value.
            raise ArgumentTypeError(
                f"{where}: step_counter is the {type(step_counter).__name__} {step_counter}, which never changes "
                "in place: the manager reads it at every save, so every save after the first would be skipped. "
                "Pass something updated in place: a tp.Variable (step.assign_add(1)), a 0-d torch integer tensor "
                "(step = torch.tensor(0); step += 1) or a 0-d numpy integer array (step += 1)"
            )
        try:
            _as_int(step_counter)
        except TrackableError as exc:
            raise ArgumentTypeError(f"{where}: step_counter: {exc}") from None
    if init_fn is not None and not callable(init_fn):
        raise ArgumentTypeError(f"{where}: init_fn must be callable or None, got {type(init_fn).__name__}")


def _check_best_arguments(best_fn: Any, best_mode: Any, keep_checkpoints_without_metrics: Any) -> None:
    """Refuse the metrics-retention arguments of :class:`CheckpointManager` (Orbax's names and values)."""
    where = "CheckpointManager"
    if best_fn is not None and not callable(best_fn):
        raise ArgumentTypeError(
            f"{where}: best_fn must be a function of a checkpoint's metrics returning a number (for example "
            f"best_fn=lambda m: m['loss']), or None, got {type(best_fn).__name__}"
        )
    if best_mode not in ("min", "max"):
        raise InvalidArgumentError(
            f"{where}: best_mode must be 'min' (lower best_fn values are better, a loss) or 'max' (higher are "
            f"better, an accuracy), got {best_mode!r}"
        )
    if not isinstance(keep_checkpoints_without_metrics, (bool, np.bool_)):
        raise ArgumentTypeError(
            f"{where}: keep_checkpoints_without_metrics must be True or False, got "
            f"{keep_checkpoints_without_metrics!r} ({type(keep_checkpoints_without_metrics).__name__})"
        )


def _plain(value: Any) -> Any:
    """``json.dumps``'s fallback: numpy, JAX and torch scalars and arrays as Python numbers and lists."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, type):
        return tolist()
    raise TypeError(f"{type(value).__name__} {value!r} is not a JSON value")


def _encode_metrics(metrics: Any, directory: str) -> tuple[bytes, dict[str, Any]]:
    """The JSON ``metrics`` are stored as, and what it decodes to: what ``best_fn`` is given, now and after restarts.

    Raises
    ------
    ArgumentTypeError
        ``metrics`` is not a mapping with string keys, or holds a value that is no JSON value (nor a numpy,
        JAX or torch scalar or array).
    """
    where = f"CheckpointManager.save in {directory!r}"
    if not isinstance(metrics, Mapping):
        raise ArgumentTypeError(
            f"{where}: metrics must be a mapping of names to values ({{'loss': 0.3}}), got {type(metrics).__name__}; "
            "nothing was saved"
        )
    bad = [k for k in metrics if not isinstance(k, str)]
    if bad:
        raise ArgumentTypeError(f"{where}: the names of metrics must be strings, got {bad[0]!r}; nothing was saved")
    nested = _non_string_key(metrics)
    if nested is not None:
        path, key = nested
        raise ArgumentTypeError(
            f"{where}: metrics are stored as JSON, whose objects have string keys, and metrics{path} has the key "
            f"{key!r} ({type(key).__name__}); JSON would turn it into the string {json.dumps(str(key))} (or fail "
            f"on keys of mixed types), so name it with a string ({{{json.dumps(str(key))}: ...}}) or give a list; "
            "nothing was saved"
        )
    try:
        # Sorted keys: the same metrics give the same bytes on every rank of a coordinated save, which checks that
        # ranks giving them agree.
        text = json.dumps(dict(metrics), sort_keys=True, default=_plain)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            f"{where}: metrics are stored as JSON with the checkpoint, and {exc}; give numbers, strings, booleans, "
            "None, and lists and dicts of them (numpy, JAX and torch scalars and arrays are converted); nothing "
            "was saved"
        ) from None
    data = text.encode()
    decoded: dict[str, Any] = json.loads(data)
    return data, decoded


def _non_string_key(metrics: Mapping[str, Any]) -> tuple[str, Any] | None:
    """Where in ``metrics`` a dict (at any depth, in lists too) has a key that is no string, and that key.

    JSON's objects have string keys: ``json.dumps`` turns ``0`` into ``"0"`` (read back as a string, so
    ``best_fn`` would see other metrics after a restart than at the save) and fails sorting mixed keys.
    """
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(f"[{k!r}]", v) for k, v in metrics.items()]
    while stack:
        path, value = stack.pop()
        if not isinstance(value, (dict, list, tuple)) or id(value) in seen:
            continue  # a cycle is json.dumps' to refuse
        seen.add(id(value))
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    return path, k
                stack.append((f"{path}[{k!r}]", v))
        else:
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


def _metrics_item(data: bytes) -> WriteItem:
    value = np.empty((), dtype=object)
    value[()] = data
    return WriteItem(METRICS_KEY, value)


def _sort_key(score: float, best_mode: str, order: int) -> tuple[int, float, int]:
    """Worst first: NaN, then by ``score`` (reversed for ``"min"``), then the older (``order``) of equal ones."""
    if math.isnan(score):
        return (0, 0.0, order)
    return (1, score if best_mode == "max" else -score, order)


def _warn_unmatched(status: Any, path: str, counter: Any) -> None:
    """Log the objects of the program that a restore without a status to check left at their initial values.

    ``counter``, the checkpoint's ``save_counter``, is not among them: a checkpoint written without one had its
    numbering taken from its name by :meth:`CheckpointManager.restore_or_initialize`.
    """
    if not isinstance(status, CheckpointLoadStatus):
        return  # a name-based restore matches by name: it has no objects to miss
    try:
        status.assert_existing_objects_matched()
    except MatchError as exc:
        stale, _ = status._stale_and_unresolved()
        if not stale and all(o is counter for o in status._unmatched_python_objects()):
            return
        _log.warning(
            "restore_or_initialize resumed from %s, but some objects of the program have no value there and keep "
            "their initial values (restore with checkpoint.restore(path) and check its status to refuse this): %s",
            path,
            exc,
        )


def _refuse_empty_templates(status: CheckpointLoadStatus, path: str) -> None:
    """Raise :class:`MatchError` if the restore of ``path`` left ``jax.ShapeDtypeStruct`` templates without a value.

    A template holds no values and no later restore-on-create can fill it (it is a leaf that exists already):
    the training step would fail on it, inside ``jax.jit``, with an error that does not say why. Orbax's
    restore refuses a tree that differs from the checkpoint's too.
    """
    empty = [obj for obj in status._unmatched_python_objects() if _array_values.is_placeholder_node(obj)]
    if not empty:
        return
    names = node_names(status._view)
    shown = [names.get(id(obj), str(getattr(obj, "_where", obj))) for obj in empty]
    coordinator = status._checkpoint
    matched = coordinator.matched
    unresolved = [
        i
        for i, holds in enumerate(coordinator.holds_attributes)
        if holds and ((ref := matched[i]) is None or ref() is None)
    ]
    unused = ""
    if unresolved:
        saved = proto_node_names(coordinator.object_graph_proto)
        listed = [saved.get(i, str(i)) for i in unresolved]
        unused = (
            f" The checkpoint's values that no object took (renamed there?): {', '.join(listed[:10])}"
            f"{', ...' if len(listed) > 10 else ''}."
        )
    # The error says it all; the status's own warning about unused values, when it is collected, would repeat it.
    status.expect_partial()
    raise MatchError(
        f"CheckpointManager.restore_or_initialize restored {path}, but {len(empty)} jax.ShapeDtypeStruct "
        f"template(s) got no value from it: {', '.join(shown[:10])}{', ...' if len(shown) > 10 else ''}. A "
        "template holds no values, so the program would fail on it later (inside jax.jit, with an error that does "
        f"not say why).{unused} Make the template's tree match the checkpoint's (tp.load_tree(path) shows it), or, "
        "for a partial restore on purpose, call checkpoint.restore(manager.latest_checkpoint).expect_partial() "
        "and give those leaves arrays. The values that matched were restored"
    )


class CheckpointManager:
    """Keep a rolling set of numbered checkpoints of one ``Checkpoint`` in a directory.

    Parameters
    ----------
    checkpoint
        The :class:`~trackpoint.Checkpoint` to save and restore.
    directory
        Where checkpoints go: a local path or a URL (``s3://bucket/run``).
    max_to_keep
        How many of the most recent checkpoints to keep; older ones are deleted.
        ``None`` keeps all of them (and the state file lists all of them).
    keep_checkpoint_every_n_hours
        Additionally keep one checkpoint per this many hours of saving: a
        checkpoint leaving the ``max_to_keep`` window is preserved (and no longer
        listed) if it is at least this long after the last preserved one.
    checkpoint_name
        Prefix name of the checkpoints: ``<directory>/<checkpoint_name>-<N>``.
        Managers sharing a directory must use different names.
    step_counter
        Integer variable read by :meth:`save` when ``checkpoint_interval`` is
        set. The preemption save of :func:`trackpoint.preemption.save_on_sigterm`
        is numbered by it when the checkpoints are numbered by step.
    checkpoint_interval
        Save only when ``step_counter`` advanced by at least this many steps
        since the last save that committed (unless ``check_interval=False``);
        a save that fails does not count, so the next :meth:`save` retries.
    init_fn
        Called by :meth:`restore_or_initialize` when there is nothing to restore.
    last_checkpoint_step
        The step of the last checkpoint saved (by an earlier run), from which
        ``checkpoint_interval`` is counted; ``None`` lets the first save happen.
    options
        Backend choice and storage options, used for every save and restore.
        Without a backend chosen (here or by ``TRACKPOINT_BACKEND``), saves
        use the backend the directory's URL selects, and the checkpoints of
        every backend that can store them in ``directory`` are found, listed
        and retired alike, numbered together by their ``-N`` suffix (see
        ``trackpoint.plugins.detect_backends``). With a backend chosen, the
        manager reads that backend's format alone, but still lists its series
        in the other formats when it reads the directory (one listing each):
        newer checkpoints there make :meth:`restore_or_initialize` and a
        first :meth:`save` refuse rather than start the series over beside
        them, and older ones are named in a warning (it never retires them).
        With a ``coordinator`` in the
        options, every rank of a job creates the manager and calls
        :meth:`save` and :meth:`restore_or_initialize` alike: rank 0 reads and
        repairs the directory, writes the state file and deletes old
        checkpoints, and every rank adopts what it decided (see
        ``docs/distributed.md``); per-save ``options`` must keep the coordinator.
    clock
        Source of Unix time for checkpoint timestamps (injectable for tests).
    best_fn
        Keep the best checkpoints by their metrics instead of the most recent
        ones (Orbax's ``best_fn``): called with the metrics given to
        :meth:`save` (as stored, JSON values), it returns a number ranking the
        checkpoint. ``max_to_keep`` then counts the best checkpoints with
        metrics; the newest checkpoint is always kept too, so there may be one
        more (see Notes). ``None`` (the default): retention by recency.
    best_mode
        ``"max"`` (the default, as in Orbax): higher ``best_fn`` values are
        better (an accuracy); ``"min"``: lower ones are (a loss).
    keep_checkpoints_without_metrics
        With ``best_fn``: ``True`` (the default, as in Orbax) keeps every
        checkpoint saved without metrics, outside the ``max_to_keep`` count;
        ``False`` ranks them below every checkpoint with metrics (the older
        lower), so they are kept only while fewer than ``max_to_keep``
        checkpoints have metrics.

    Raises
    ------
    InvalidArgumentError
        ``directory`` is empty, ``max_to_keep`` or ``checkpoint_interval``
        is not positive, ``keep_checkpoint_every_n_hours`` is not a positive
        finite number, ``checkpoint_interval`` is given without
        ``step_counter``, ``best_mode`` is neither ``"min"`` nor ``"max"``,
        or ``best_fn`` fails on the metrics of a checkpoint the manager
        adopts from the directory (nothing is deleted then).
    ArgumentTypeError
        An argument of the wrong type (``max_to_keep="3"``), a
        ``checkpoint`` that is not a checkpoint, or a ``step_counter`` that
        cannot change in place (a Python ``int``, a JAX array) with a
        ``checkpoint_interval``; a ``best_fn`` that is not callable or
        returns no number for the metrics of an adopted checkpoint.

    Notes
    -----
    Order of a :meth:`save`, TensorFlow's: (1) the checkpoint is written and
    committed; (2) the state file is rewritten to name it (the checkpoints
    about to leave the window still listed); (3) the manager decides which
    older checkpoints leave the window and deletes them; (4) the state file
    is rewritten without them. A crash after (1) leaves a committed but
    unrecorded checkpoint, which the next manager (and
    :func:`trackpoint.latest_checkpoint`) finds by listing: one numbered above
    the state file's newest and committed after it. A delete removes the
    commit point first, so a crash during (3) or before (4) leaves entries of
    the state file naming checkpoints that are gone or invisible: a new
    manager skips them (and retires those (3) did not reach, which are still
    listed), and ``cleanup`` removes uncommitted pieces when it opens the
    directory. A delete that fails is logged as a warning and its checkpoint
    stays listed, so the next save retries it. Nothing is left that no
    manager would retire, except checkpoints preserved by
    ``keep_checkpoint_every_n_hours``, which are kept on purpose. If (2)
    fails, :meth:`save` raises with a note that the checkpoint was committed
    (nothing is deleted); the next save rewrites the state file. If (4)
    fails, it is logged as a warning.

    Several managers may share a directory if their checkpoint names
    differ: each rewrites only its own entries of the state file, with
    conditional writes. Creating a manager runs the backends' ``cleanup``
    with their default ``min_age``, and every successful :meth:`save` runs
    the writing backend's: only leftovers untouched for that long (10
    minutes for the built-in backends) are removed, so a save still running
    in another process is left alone, and pieces of a crashed save go with
    the first save after they are that old. A failing cleanup is logged as
    a warning and never fails the save.

    Retention by metrics (``best_fn``), as Orbax's: after each save, the
    ``max_to_keep`` checkpoints with the best ``best_fn`` values are kept (of
    equal values, the newer), and those without metrics as
    ``keep_checkpoints_without_metrics`` says; of the others, the ones
    ``keep_checkpoint_every_n_hours`` preserves are kept too, and the rest
    are deleted. Unlike Orbax, the newest checkpoint is never deleted, however
    bad its metrics (or without any): the state file's
    ``model_checkpoint_path`` names it and :meth:`restore_or_initialize`
    resumes from it; the next save lets it go if it is not among the best.
    A checkpoint's ``best_fn`` value is worked out once, when it is saved or
    adopted; NaN ranks below every number. The metrics are stored in the
    checkpoint itself, under the key ``"_TRACKPOINT_METRICS"`` outside its
    object graph (which TensorFlow's and trackpoint's restores ignore), so
    they are committed and deleted with it, and a manager opened later on
    the directory reads them back (one small read per checkpoint it
    adopts, only with ``best_fn``). A checkpoint whose metrics cannot be
    read counts as one without metrics, with a warning; one whose read
    failed with a storage error is kept until a later save reads them; one
    found no longer committed (a delete that failed half-way, or another
    process) is let go, and what is left of it deleted.
    With a coordinator, rank 0 applies retention with the metrics the
    checkpoint holds (see :meth:`save`) and every rank adopts its decision.
    A manager opened later on the directory without ``best_fn`` takes over
    every checkpoint the state file lists, a best one kept from before the
    last preserved checkpoint too (listed, so not preserved), and retires
    them by recency, oldest first.
    """

    def __init__(
        self,
        checkpoint: ManagedCheckpoint,
        directory: str | os.PathLike[str],
        max_to_keep: int | None,
        keep_checkpoint_every_n_hours: float | None = None,
        checkpoint_name: str = "ckpt",
        step_counter: Any = None,
        checkpoint_interval: int | None = None,
        init_fn: Callable[[], Any] | None = None,
        last_checkpoint_step: int | None = None,
        *,
        options: CheckpointOptions | None = None,
        clock: Callable[[], float] = time.time,
        best_fn: Callable[[Mapping[str, Any]], float] | None = None,
        best_mode: Literal["min", "max"] = "max",
        keep_checkpoints_without_metrics: bool = True,
    ) -> None:
        _check_arguments(
            checkpoint,
            directory,
            max_to_keep,
            keep_checkpoint_every_n_hours,
            checkpoint_name,
            step_counter,
            checkpoint_interval,
            init_fn,
        )
        _check_best_arguments(best_fn, best_mode, keep_checkpoints_without_metrics)
        directory = os.fspath(directory)
        self._checkpoint = checkpoint
        self._directory = directory
        self._max_to_keep = max_to_keep
        self._keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._checkpoint_name = checkpoint_name
        self._prefix = _paths.join(directory, checkpoint_name)
        self._step_counter = step_counter
        self._checkpoint_interval = checkpoint_interval
        self._last_checkpoint_step: int | None = None if last_checkpoint_step is None else _as_int(last_checkpoint_step)
        self._init_fn = init_fn
        self._options = options
        self._clock = clock
        self._best_fn = best_fn
        self._best_mode = best_mode
        self._keep_without_metrics = bool(keep_checkpoints_without_metrics)
        # The metrics of kept checkpoints known to this manager (read back or saved); one missing is not read yet.
        self._scored: dict[str, _Scored] = {}
        # An async save records itself and applies retention in its writer thread.
        self._lock = threading.RLock()
        self._own = re.compile(re.escape(checkpoint_name) + r"-(\d+)$")
        # Reads, listings and deletes see every format stored in the directory;
        # writes, the state file and the per-save cleanup go to the writer.
        self._backend: StorageBackend = _resolve.open_store(directory, _async.storage_options_of(options))
        # Held for the manager's lifetime: closed by close(), or when the manager is collected.
        self._closer = weakref.finalize(self, self._backend.close)
        self._writer = _resolve.writer(self._backend)
        self._maybe_delete: OrderedDict[str, float] = OrderedDict()
        self._latest_checkpoint: str | None = None
        # The highest number of a committed checkpoint of this manager seen (kept, preserved or retired).
        self._highest = -1
        # The highest number among the committed checkpoints found in the directory when it was opened: an
        # earlier run's. A save numbered at or below it would overwrite or outlive them (see save).
        self._found_highest = -1
        # The prefixes this manager has written or tried to (a failed save's retry reuses its number).
        self._attempted: set[str] = set()
        # This manager's series' committed checkpoints found when the directory was (re)read (kept or not).
        self._found: set[str] = set()
        # Whether this manager's last committed save was numbered by step (checkpoint_number=step_counter's value);
        # None before one committed. The preemption save numbers on in it (_preemption_number).
        self._by_step: bool | None = None
        # The checkpoint restore_or_initialize restored, with the value of step_counter it holds.
        self._restored_step: tuple[str, int] | None = None
        # While the preemption save runs (_save_for_preemption): it saves at a step saved already.
        self._for_preemption = False
        # The step directories of an Orbax run found in the directory when it held no checkpoint to restore.
        self._orbax_steps: list[str] = []
        # With a backend chosen explicitly: this series' committed checkpoints of the formats it does not read.
        self._others: state.OtherFormats | None = None
        self._coordinator = coordinator_of(options)
        try:
            if self._coordinator is None:
                self._open_directory()
            else:
                # One rank reads and repairs the directory; every rank adopts what it found.
                self._adopt(on_root(self._coordinator, self._open_directory, f"opening {directory!r}"))
        except BaseException:
            self._closer()
            raise

    # --------------------------------------------------------------- restart
    def _open_directory(self) -> bytes:
        """Remove pieces of saves that crashed before their commit, then resume; the resulting bookkeeping."""
        self._backend.cleanup(self._directory)
        self._recover()
        return self._bookkeeping()

    def _bookkeeping(self) -> bytes:
        """What a coordinated manager's rank 0 decided, for the other ranks to :meth:`_adopt`."""
        return json.dumps(
            {
                "kept": list(self._maybe_delete.items()),
                "latest": self._latest_checkpoint,
                "preserved": self._last_preserved_timestamp,
                "highest": self._highest,
                "found": self._found_highest,
                # What every rank's metrics() and best_checkpoint report; rank 0 alone read or scored them.
                # A checkpoint found gone is marked so (a fourth element): every rank's metrics() refuses it.
                "metrics": [[p, s.metrics, s.score, *([True] if s is _GONE else [])] for p, s in self._scored.items()],
                "orbax": self._orbax_steps,
                "others": None if self._others is None else list(self._others),
            }
        ).encode()

    def _adopt(self, bookkeeping: bytes) -> None:
        data = json.loads(bookkeeping)
        self._maybe_delete = OrderedDict((str(p), float(t)) for p, t in data["kept"])
        self._latest_checkpoint = data["latest"]
        self._last_preserved_timestamp = float(data["preserved"])
        self._highest = int(data.get("highest", -1))
        self._found_highest = int(data.get("found", -1))
        self._orbax_steps = [str(step) for step in data.get("orbax", [])]
        others = data.get("others")
        self._others = None if others is None else state.OtherFormats(*others)
        self._scored = {
            str(p): _GONE if gone else _Scored(m, None if score is None else float(score))
            for p, m, score, *gone in data.get("metrics", [])
        }

    def _is_own(self, path: str) -> bool:
        return self._own.fullmatch(_basename(path)) is not None

    def _recover(self) -> None:
        """Pick up this manager's checkpoints and retention state (TF's rules, plus listing)."""
        now = self._clock()
        self._scored = {}
        recovered = state.read_checkpoint_state(self._directory, backend=self._backend)
        listed = {
            _basename(p): _paths.join(self._directory, _basename(p))
            for p in self._backend.list_checkpoints(self._directory)
            if self._is_own(p)
        }
        self._highest = max((self._number(n) for n in listed), default=-1)
        self._found = set(listed.values())
        self._others = self._other_formats()
        if self._others is not None and not self._newer_elsewhere():
            # Older than this manager's newest: no progress is lost, but nothing will ever retire them either.
            _log.warning(
                "%s: this manager's backend %r, chosen by %s, does not read checkpoints of the series %s-N that "
                "other formats hold there, all older than its newest (%s-%d): %s. It neither lists nor retires "
                "them; delete them (tp.remove_checkpoint with CheckpointOptions(backend=<their backend>)) if they "
                "are not needed",
                self._directory,
                self._others.chosen,
                self._others.source,
                self._checkpoint_name,
                self._checkpoint_name,
                self._highest,
                self._others.describe(list(self._others.found)),
            )
        if recovered is None:
            # Slightly in the past so a manager re-created at once does not preserve its first save.
            self._last_preserved_timestamp = now - 1.0
            known: list[tuple[str, float, bool]] = []
        else:
            self._last_preserved_timestamp = recovered.last_preserved_timestamp
            if now < self._last_preserved_timestamp:
                _log.warning(
                    "time.time() returned a value %f seconds behind the last preserved checkpoint timestamp "
                    "of %s; using the current time",
                    self._last_preserved_timestamp - now,
                    self._directory,
                )
                self._last_preserved_timestamp = now
            paths = list(recovered.all_model_checkpoint_paths)
            stamps = list(recovered.all_model_checkpoint_timestamps)
            timed = len(stamps) == len(paths)
            if not timed:
                stamps = [self._last_preserved_timestamp] * len(paths)
            known = [
                (listed[_basename(p)], min(t, now), timed and t < self._last_preserved_timestamp)
                for p, t in zip(paths, stamps, strict=True)
                # Only committed checkpoints of this manager; an uncommitted entry is a
                # crashed save or an interrupted delete and must not be reported as kept.
                if self._is_own(p) and _basename(p) in listed
            ]
        for path, stamp, older in known:
            # TensorFlow's filter keeps the entries newer than the last preserved checkpoint: the others (a state
            # file without times, or times ahead of a clock that went back behind it) may be preserved, so they
            # are kept for ever, unlisted. An entry whose own recorded time is older than the last preserved
            # checkpoint was listed after that preservation, so it is not preserved (every manager, TensorFlow's
            # too, takes the checkpoints it preserves off the list): the best one kept by metrics from long
            # ago (with or without best_fn now), or one older than a preservation by another manager sharing
            # the state file. It stays this manager's to rank and retire; dropped, it would never be deleted.
            if stamp > self._last_preserved_timestamp or older or self._best_fn is not None:
                self._maybe_delete[path] = stamp
        for name in self._unrecorded(recovered, known, listed):
            self._maybe_delete[listed[name]] = now
        if self._maybe_delete:
            self._latest_checkpoint = next(reversed(self._maybe_delete))
        elif recovered is not None and _basename(recovered.model_checkpoint_path) in listed:
            self._latest_checkpoint = listed[_basename(recovered.model_checkpoint_path)]
        elif (
            recovered is not None
            and not listed
            and _resolve.holder(self._backend, recovered.model_checkpoint_path) is not None
        ):
            # Checkpoint.save wrote here under another name: continue from it, as TensorFlow
            # does (it is neither listed among this manager's checkpoints nor ever deleted).
            self._latest_checkpoint = recovered.model_checkpoint_path
        else:
            newest = max(listed, key=self._number, default=None)
            self._latest_checkpoint = None if newest is None else listed[newest]
        if self._best_fn is not None:
            self._load_all_scored(list(self._maybe_delete))
        # Looked for only where nothing is to be restored (one local listing): restore_or_initialize refuses to
        # start from scratch over an Orbax run.
        self._orbax_steps = state.orbax_steps(self._directory) if self._latest_checkpoint is None else []

    def _other_formats(self) -> state.OtherFormats | None:
        """This series' committed checkpoints that a backend chosen explicitly does not read (``None``: none).

        Also sets ``_found_highest``, from them and ``_found``: an earlier run's checkpoints in a format this
        manager does not read count too, since a save numbered at or below them would start the series over
        beside them and leave them behind for good. Nothing is asked unless a backend was chosen (``options``
        or ``TRACKPOINT_BACKEND``): then one listing per other format.
        """
        own = [self._number(p) for p in self._found]
        others = state.other_formats(self._directory, self._options, self._backend)
        mine: dict[str, str] = {}
        for prefix, name in [] if others is None else others.found.items():
            path = _paths.join(self._directory, _basename(prefix))
            # A prefix this manager's backend holds too (a second format's copy, or its own format under another
            # backend's name, such as bundle's on an s3:// URL) is read as the manager's own.
            if self._is_own(prefix) and path not in self._found:
                mine[path] = name
        self._found_highest = max([-1, *own, *map(self._number, mine)])
        return None if others is None or not mine else others._replace(found=mine)

    def _newer_elsewhere(self) -> list[str]:
        """This series' checkpoints in formats the manager does not read, numbered above any it reads."""
        found = {} if self._others is None else self._others.found
        return [p for p in found if self._number(p) > self._highest]

    def _unread(self) -> str:
        """For an error: the checkpoints of :meth:`_newer_elsewhere`, and what to do."""
        others = self._others
        assert others is not None
        newer = self._newer_elsewhere()
        top = max(newer, key=self._number)
        return (
            f"{self._directory!r} holds checkpoints of the series {self._checkpoint_name}-N up to {_basename(top)} "
            f"that this manager's backend {others.chosen!r}, chosen by {others.source}, does not read (it reads its "
            f"own format alone): {others.describe(newer)}. To resume that run, choose no backend (unset "
            "TRACKPOINT_BACKEND and drop backend= from the manager's options): the manager then reads every format "
            "in the directory, restores the newest checkpoint and saves on in the directory's own format. To go on "
            f"in the {others.chosen} format instead, copy the newest one into it first (tp.convert({top!r}, {top!r}, "
            f"src_options=CheckpointOptions(backend={others.found[top]!r}), "
            f"dst_options=CheckpointOptions(backend={others.chosen!r}), overwrite=True)). To start a new run, give "
            "the manager another directory"
        )

    def _unrecorded(
        self, recovered: state.CheckpointState | None, known: list[tuple[str, float, bool]], listed: dict[str, str]
    ) -> list[str]:
        """The names of committed checkpoints a crashed save left unrecorded, oldest first, for adoption.

        A save that committed but crashed before updating the state file left
        a checkpoint numbered above the newest one the file knows, committed
        after it. Checkpoints preserved by ``keep_checkpoint_every_n_hours``
        are unlisted too, and a rollback saves below them: one committed
        before the newest recorded checkpoint is such a checkpoint, kept
        forever, never adopted (retention would delete it). Without a state
        file nothing tells them apart, so with ``keep_checkpoint_every_n_hours``
        only the newest is adopted and the others are left as they are.
        """
        newest_known = max((self._number(p) for p, *_ in known), default=-1)
        if recovered is not None and self._is_own(recovered.model_checkpoint_path):
            newest_known = max(newest_known, self._number(recovered.model_checkpoint_path))
        above = sorted((n for n in listed if self._number(n) > newest_known), key=self._number)
        if not above:
            return above
        if recovered is None:
            if not self._keep_checkpoint_every_n_hours or len(above) == 1:
                return above
            _log.warning(
                "%s has no readable state file: adopting only the newest of %d checkpoints %s-N, %s; the others "
                "may be preserved by keep_checkpoint_every_n_hours, so they are left as they are (never deleted by "
                "this manager; remove them with tp.remove_checkpoint if they are not needed)",
                self._directory,
                len(above),
                self._checkpoint_name,
                above[-1],
            )
            return above[-1:]
        reference = next((listed[n] for n in listed if self._number(n) == newest_known), None)
        since = None if reference is None else self._backend.modified(reference)
        if since is None:
            return above
        # The same store's clock on both sides; a store that cannot tell (None) keeps the checkpoint adopted.
        return [n for n in above if (self._backend.modified(listed[n]) or since) >= since]

    def _number(self, path: str) -> int:
        m = self._own.fullmatch(_basename(path))
        return int(m.group(1)) if m else -1

    # --------------------------------------------------------------- metrics
    def _score(self, metrics: dict[str, Any], whose: str) -> float:
        """``best_fn(metrics)`` as a float, or a clear error naming ``whose`` metrics these are."""
        assert self._best_fn is not None
        try:
            value = self._best_fn(metrics)
        except Exception as exc:
            raise InvalidArgumentError(
                f"CheckpointManager in {self._directory!r}: best_fn raised {type(exc).__name__}: {exc} on the "
                f"metrics {metrics!r} of {whose}. best_fn must return a number for the metrics of every "
                "checkpoint (with best_mode='min', m.get('loss', float('inf')) ranks one lacking it last)"
            ) from exc
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
            raise ArgumentTypeError(
                f"CheckpointManager in {self._directory!r}: best_fn returned {value!r} ({type(value).__name__}) "
                f"for the metrics {metrics!r} of {whose}; it must return a number that ranks the checkpoint "
                "(higher is better with best_mode='max', lower with 'min')"
            )
        return float(value)

    def _read_metrics(self, prefix: str, unreadable: list[str] | None = None) -> dict[str, Any] | None:
        """The metrics stored in the checkpoint ``prefix``; ``None`` if it has none or they are unreadable (warned).

        The warning about unreadable metrics goes to ``unreadable`` instead of the log when it is given
        (a read on another thread, whose caller logs it in order).

        Raises
        ------
        StorageError
            The store failed, not the metrics: whoever asked may try again later.
        CheckpointNotFoundError
            No checkpoint is committed at ``prefix`` (any more): it is gone, which is not "without metrics".
        """
        try:
            with self._backend.open_reader(prefix) as reader:
                return read_metrics(reader)
        except (StorageError, CheckpointNotFoundError):
            raise
        except (CheckpointError, ValueError, TypeError) as exc:
            warning = (
                f"the metrics stored in {prefix} under {METRICS_KEY!r} cannot be read ({type(exc).__name__}: {exc}); "
                "it counts as a checkpoint without metrics"
            )
            if unreadable is None:
                _log.warning("%s", warning)
            else:
                unreadable.append(warning)
            return None

    def _load_all_scored(self, paths: list[str]) -> None:
        """Read and score the metrics of the kept checkpoints ``paths``, reading them concurrently.

        Each read opens a checkpoint, a round trip or more on an object store, so a manager
        keeping many checkpoints would otherwise start up one latency per checkpoint. Only the
        reads overlap: ``best_fn`` runs afterwards, in order, on this thread, as a user's
        function may not expect to be called from several threads at once.

        Raises
        ------
        InvalidArgumentError, ArgumentTypeError
            ``best_fn`` fails on the metrics read.
        """
        if len(paths) < 2:
            for path in paths:
                self._load_scored(path)
            return

        def read(path: str) -> tuple[dict[str, Any] | BaseException | None, list[str]]:
            warnings: list[str] = []
            try:
                return self._read_metrics(path, warnings), warnings
            except (StorageError, CheckpointNotFoundError) as exc:
                return exc, warnings

        with ThreadPoolExecutor(max_workers=min(8, len(paths)), thread_name_prefix="trackpoint-metrics") as pool:
            try:
                futures = [pool.submit(read, path) for path in paths]
            except RuntimeError:
                # The interpreter is exiting (a manager made in an atexit handler): no new threads start there.
                futures = []
        outcomes = [future.result() for future in futures] if futures else [read(path) for path in paths]
        # Logged here, in the checkpoints' order, as the reads one after another logged them.
        for path, (outcome, warnings) in zip(paths, outcomes, strict=True):
            for warning in warnings:
                _log.warning("%s", warning)
            self._load_scored(path, outcome)

    def _load_scored(
        self, path: str, outcome: dict[str, Any] | BaseException | _Unread | None = _UNREAD
    ) -> _Scored | None:
        """Read and score the metrics of the kept checkpoint ``path``; ``None`` when the store failed (warned).

        ``outcome`` is what reading them gave, if they were read already (metrics, ``None`` or the
        store's exception); by default they are read here.

        Raises
        ------
        InvalidArgumentError, ArgumentTypeError
            ``best_fn`` fails on the metrics read.
        """
        try:
            if isinstance(outcome, _Unread):
                metrics = self._read_metrics(path)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                metrics = outcome
        except StorageError as exc:
            # Not known to be without metrics: kept (never deleted) until a later save reads them.
            _log.warning("could not read the metrics of %s (kept until a later save reads them): %s", path, exc)
            return None
        except CheckpointNotFoundError as exc:
            # Deleted half-way (its commit point first) or by another process: retention retires it.
            _log.warning("%s is no longer committed (retention lets it go, deleting what is left): %s", path, exc)
            self._scored[path] = _GONE
            return _GONE
        scored = _WITHOUT if metrics is None else _Scored(metrics, self._score(metrics, path))
        self._scored[path] = scored
        return scored

    def _recorded_scored(self, path: str) -> _Scored | None:
        """The known metrics of the kept checkpoint ``path``, read if not yet; ``None`` if that failed (warned)."""
        scored = self._scored.get(path)
        if scored is not None:
            return scored
        try:
            return self._load_scored(path)
        except CheckpointError as exc:
            # best_fn fails on metrics read back after a save committed and was recorded: keep the checkpoint
            # rather than fail that save.
            _log.warning("%s is kept, as if its metrics were still unread: %s", path, exc)
            return None

    def _series_prefix(self, checkpoint: Any, where: str) -> str:
        """The prefix of this manager's checkpoint ``checkpoint`` (its prefix or number), checked."""
        if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, str)):
            raise ArgumentTypeError(f"{where} takes a checkpoint's prefix or number, got {type(checkpoint).__name__}")
        if isinstance(checkpoint, int):
            if checkpoint < 0:
                raise InvalidArgumentError(f"{where}: checkpoint numbers are >= 0, got {checkpoint}")
            return f"{self._prefix}-{checkpoint}"
        name = _basename(checkpoint)
        prefix = _paths.join(self._directory, name)
        if not self._is_own(prefix) or checkpoint not in (name, prefix):
            raise InvalidArgumentError(
                f"{where}: {checkpoint!r} is not a checkpoint of the series {self._checkpoint_name}-N in "
                f"{self._directory!r}"
            )
        return prefix

    # ------------------------------------------------------------ properties
    @property
    def checkpoint(self) -> ManagedCheckpoint:
        """The checkpoint this manager saves and restores."""
        return self._checkpoint

    @property
    def directory(self) -> str:
        """The directory the checkpoints are written to."""
        return self._directory

    @property
    def checkpoint_interval(self) -> int | None:
        """Minimum step difference between two saves, or ``None``."""
        return self._checkpoint_interval

    @property
    def latest_checkpoint(self) -> str | None:
        """Prefix of the newest checkpoint of this manager, or ``None``.

        An async save counts once it is committed (after :meth:`sync`).
        """
        with self._lock:
            return self._latest_checkpoint

    @property
    def checkpoints(self) -> list[str]:
        """Prefixes of the kept checkpoints, oldest first (preserved ones are not listed)."""
        with self._lock:
            return list(self._maybe_delete)

    @property
    def best_checkpoint(self) -> str | None:
        """Prefix of the best of the kept checkpoints by ``best_fn`` (Orbax's ``best_step()``).

        Among :attr:`checkpoints` with metrics, the one whose ``best_fn``
        value is highest (``best_mode="max"``) or lowest (``"min"``); of equal
        values, the newer. ``None`` when none of them has metrics. Without a
        ``best_fn``, :attr:`latest_checkpoint`, as in Orbax.

        From the manager's own record, as :attr:`checkpoints` is: a
        checkpoint removed by something else (``tp.remove_checkpoint``,
        another process) may be named until :meth:`reload`.
        """
        with self._lock:
            if self._best_fn is None:
                return self._latest_checkpoint
            best: tuple[tuple[int, float, int], str] | None = None
            for order, path in enumerate(self._maybe_delete):
                scored = self._scored.get(path)
                if scored is None or scored.score is None:
                    continue
                key = _sort_key(scored.score, self._best_mode, order)
                if best is None or key > best[0]:
                    best = (key, path)
            return None if best is None else best[1]

    def metrics(self, checkpoint: str | int) -> dict[str, Any] | None:
        """The metrics given to :meth:`save` for one checkpoint of this manager's series (Orbax's ``metrics(step)``).

        Parameters
        ----------
        checkpoint
            Its prefix (an entry of :attr:`checkpoints`, or one preserved by
            ``keep_checkpoint_every_n_hours``) or its number (``3`` for
            ``<directory>/<checkpoint_name>-3``).

        Returns
        -------
        dict or None
            The metrics as stored (JSON values: numpy, JAX and torch numbers
            are Python numbers), a copy; ``None`` for a checkpoint saved
            without metrics, or whose metrics cannot be read (logged as a
            warning). Those of kept checkpoints are known to the manager with
            ``best_fn``; others are read from the checkpoint.

        Raises
        ------
        CheckpointNotFoundError
            No checkpoint of the series is committed there.
        InvalidArgumentError
            A prefix outside the directory or series, or a negative number.
        StorageError
            The store failed while reading them.
        """
        prefix = self._series_prefix(checkpoint, "CheckpointManager.metrics")
        with self._lock:
            scored = self._scored.get(prefix)
            if scored is not None and scored is not _GONE and prefix in self._maybe_delete:
                return copy.deepcopy(scored.metrics)
        try:
            return self._read_metrics(prefix)
        except CheckpointNotFoundError as exc:  # the reader's open found nothing: no second request to ask
            raise CheckpointNotFoundError(
                f"CheckpointManager.metrics: no checkpoint is committed at {prefix!r}", url=prefix
            ) from exc

    # ------------------------------------------------------------------ save
    @_signal_safe.guarded
    def save(
        self,
        checkpoint_number: int | Any | None = None,
        check_interval: bool = True,
        options: CheckpointOptions | None = None,
        *,
        metrics: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Write a numbered checkpoint, record it, and apply retention.

        Parameters
        ----------
        checkpoint_number
            Number for the prefix (a non-negative int or integer Variable such as
            a global step). ``None`` uses the checkpoint's ``save_counter`` after
            increment.
        check_interval
            With ``checkpoint_interval`` set, skip the save unless the step counter
            advanced far enough since the last save that committed. ``False``
            saves anyway (still never twice at one step).
        options
            Overrides the manager's options for writing this checkpoint (for
            example ``max_shard_bytes``); the state file and deletions still go
            through the manager's backend, so keep the same backend and store.
        metrics
            Metrics of this checkpoint (``{"loss": 0.3}``), by which ``best_fn``
            ranks it (Orbax's ``save(step, metrics=)``). Stored in the
            checkpoint as JSON, with or without ``best_fn``: numbers, strings,
            booleans, ``None``, lists and dicts with string keys (JSON's
            objects have no others: ``{0: 0.5}`` is refused, not turned into
            ``{"0": 0.5}``); numpy, JAX and torch scalars and arrays become
            Python numbers and lists. ``best_fn`` is applied to them as
            stored before anything is written. With a coordinator,
            give them on every rank or on some (rank 0, say): the ranks giving
            them must give the same, one value per checkpoint (average a
            per-rank loss across ranks first; a save where they differ fails
            on every rank, ``CoordinationError``), and the checkpoint holds
            them for all: every rank's :meth:`metrics` reports them.

        Returns
        -------
        str or None
            The checkpoint prefix, or ``None`` when the save was skipped.

        Raises
        ------
        TrackableError
            ``checkpoint_number`` is not a non-negative integer. Checked
            first: nothing changed (no ``save_counter`` increment, no step
            recorded for ``checkpoint_interval``).
        CheckpointExistsError
            The number is at or below the newest checkpoint of this
            manager's series that was in the directory when the manager was
            created (an earlier run's): a run that did not resume would
            overwrite it, or be retained in its place. Also when they are in a
            format that a backend chosen explicitly does not read (and still
            committed when the save asks again). Nothing changed.
        ArgumentTypeError
            ``metrics`` is not a mapping of JSON values, or ``best_fn``
            returns no number for them; checked first, nothing changed.
        InvalidArgumentError
            ``best_fn`` raised on ``metrics`` (the error is its cause); checked
            first, nothing changed.

        With ``CheckpointOptions(enable_async=True)`` (here or in the
        manager's options) it returns once the values are snapshotted; the
        write, the state file and retention follow in the background, and
        :attr:`latest_checkpoint` names the checkpoint once it is committed
        (:meth:`sync` waits). A failure is raised by the next ``save``,
        :meth:`sync` or restore.

        What a failed save leaves: ``save_counter`` moves only for a save
        that is committed or still being written. A synchronous save whose
        write raises gives its number back (the next save reuses it, over
        whatever the failed write left at that prefix, which ``cleanup``
        removes later); an async save's number is taken once its background write
        started (it is in the snapshot, and ``save`` returned its path), even
        if that write fails later. ``checkpoint_interval`` counts from the
        last save that committed, synchronous or async: after a failure the
        next ``save`` is due (it waits for an async save in flight before it
        decides, so it always sees the outcome). A save that committed but
        could not update the state file still raises, yet counts for both:
        its checkpoint exists and is the manager's latest.
        """
        started = time.perf_counter()
        # Arguments first: a refused call changes nothing.
        number = None
        opts = options or self._options
        extra: list[WriteItem] = []
        scored: _Scored | None = None  # the metrics given on this rank, with their best_fn value
        if checkpoint_number is not None or metrics is not None:
            # Refused on this rank alone: the other ranks' coordinated save must fail too, not wait for the next.
            failing = getattr(self._checkpoint, "_failing_together", None)
            refused = (TrackableError, InvalidArgumentError)
            with contextlib.nullcontext() if failing is None else failing(self._prefix, opts, refused):
                if checkpoint_number is not None:
                    number = _checkpoint_number(checkpoint_number, self._directory, self._checkpoint_name)
                if metrics is not None:
                    extra, scored = self._scored_metrics(metrics)
        asynchronous = _async.enabled(opts)
        saver: _async.AsyncSaver | None = getattr(self._checkpoint, "_self_async", None)
        if saver is not None:
            saver.begin(opts)
        elif asynchronous:
            _async.refuse(opts, f"CheckpointManager.save of a {type(self._checkpoint).__name__}")
        step: int | None = None
        if self._checkpoint_interval is not None:
            step = _as_int(self._step_counter)
            # begin() waited for an async save in flight: the step it recorded on its commit is here.
            last = self._last_checkpoint_step
            if last is not None:
                if step == last and not self._for_preemption:
                    return None
                if check_interval and step < last + self._checkpoint_interval:
                    return None
        counter = self._checkpoint.save_counter
        if number is None:
            number = _as_int(counter) + 1
        if number <= self._found_highest and _as_int(counter) == 0:
            # A checkpoint that never saved nor restored (its counter is 0) numbered into an earlier run's
            # checkpoints: a run that did not resume. One that restored (the counter came back with its
            # checkpoint) may save at any number, as in TensorFlow: after a preemption save, or a rollback.
            self._refuse_earlier_run(number, checkpoint_number is None)
        # Told by what the loop passed, not by the values alone: checkpoint_number=step numbers by step even where
        # each step is save_counter + 1 (every step saved). Recorded on the commit: a failed save tells nothing.
        by_step = checkpoint_number is not None and number == self._step_value()
        counter.assign_add(1)
        prefix = f"{self._prefix}-{number}"
        committed = False

        def on_commit(saved: str) -> None:
            # The checkpoint exists from here on: it counts for the interval even if recording it fails.
            nonlocal committed
            committed = True
            with self._lock:
                self._by_step = by_step
                if step is not None:
                    self._last_checkpoint_step = step
            self._after_commit(saved, scored)

        # Not among this manager's checkpoints, so not its to replace: written only if nobody committed it first.
        fresh = prefix not in self._maybe_delete and prefix not in self._attempted
        try:
            if (
                self._coordinator is None  # ranks must not decide apart; rank 0 alone would need a round trip
                and fresh
                and self._writer.exists(prefix)  # the format this manager writes: one request
            ):
                # Not among this manager's checkpoints, so not its to replace. Re-saving a number of its own (or
                # retrying one that failed) replaces it, as in TensorFlow.
                if prefix in self._found:
                    # There when the directory was read, yet not kept: preserved for ever by
                    # keep_checkpoint_every_n_hours, or one the state file does not list (a rollback's saves
                    # number into them). TensorFlow overwrites it, and retention then deletes it.
                    raise CheckpointExistsError(
                        f"CheckpointManager.save refused to write {prefix}: a checkpoint this manager does not keep "
                        "is committed there (one preserved by keep_checkpoint_every_n_hours, or one the state file "
                        "does not list), so saving over it would replace it for good. Delete it first "
                        f"(manager.delete({number})), or number this save past it (checkpoint_number=); nothing "
                        "was saved"
                    )
                raise self._another_writer(prefix)
            self._attempted.add(prefix)

            def committed_by_another(exc: CheckpointExistsError) -> BaseException:
                # The store refused the create-only commit. Not a checkpoint of another format in the way (refused
                # with its own message) but one in this manager's format, committed by another writer while this
                # save was writing: its number stays that writer's.
                if not self._writer.exists(prefix):
                    return exc
                self._attempted.discard(prefix)
                return self._another_writer(prefix)

            # A number not this manager's is committed only if nobody committed it first (the store's create-only
            # commit), so a writer that committed it after the check above is never replaced.
            on_exists = committed_by_another if fresh else None
            if asynchronous:
                self._checkpoint._write_async(  # type: ignore[attr-defined]
                    prefix, opts, then=lambda: on_commit(prefix), started=started, extra=extra, on_exists=on_exists
                )
                return prefix
            write_with = getattr(self._checkpoint, "_write_with", None)
            if write_with is not None:
                # The metrics (extra) are committed with the values: a checkpoint never exists without the metrics
                # it was saved with, and they go when it goes.
                write_with(prefix, opts, extra, started=started, on_exists=on_exists)
                saved = prefix
            else:
                # Another ManagedCheckpoint: its write() is all there is, checked before the write only.
                saved = self._checkpoint.write(prefix, options=opts)
            on_commit(saved)
            return saved
        except BaseException:
            # Nothing committed and nothing still being written: give the number back.
            if not committed and not (saver is not None and saver.busy()):
                counter.assign_add(-1)
            raise

    def _another_writer(self, prefix: str) -> CheckpointExistsError:
        """The refusal of a save of ``prefix``, which another writer of this series committed."""
        # An earlier instance of the job still running, or a second job given the same directory.
        return CheckpointExistsError(
            f"CheckpointManager.save refused to write {prefix}: another writer committed it after this "
            f"manager was created, so two managers (processes) are saving the series "
            f"{self._checkpoint_name}-N in {self._directory!r}. Stop the other one, or give each its own "
            "directory or checkpoint_name; that checkpoint was left as it is"
        )

    def _refuse_earlier_run(self, number: int, by_counter: bool) -> None:
        """Refuse a save numbered ``number``, at or below the checkpoints an earlier run left in the directory.

        Such a save is what a run that did not resume does (its ``save_counter`` starts again at 0): it would
        overwrite the earlier run's checkpoint of that number, or be taken for the newest and have retention
        delete the earlier run's newer ones. TensorFlow does both; Orbax refuses an existing step. Returns
        (the save goes on) only when the checkpoints of formats this manager does not read that made it refuse
        are gone: without a coordinator, those formats are listed again first.
        """
        if self._others is not None and self._coordinator is None:
            # They may have been deleted since the directory was read, as the refusal says to (with a coordinator
            # the ranks decide alike, from what rank 0 read: reload() reads again).
            self._others = self._other_formats()
            if number > self._found_highest:
                return
        found = self._found_highest
        if self._newer_elsewhere():
            # The earlier run's newest checkpoints are in a format this manager does not read, so neither
            # restore_or_initialize nor numbering past them would go on from them.
            assert self._others is not None
            there = self._others.found.get(f"{self._prefix}-{number}")
            raise CheckpointExistsError(
                f"CheckpointManager.save refused to write {self._checkpoint_name}-{number}: "
                f"{'' if there is None else f'a {there} checkpoint is committed there, and '}{self._unread()}. "
                "Nothing was saved"
            )
        how = f"save_counter is {number - 1}" if by_counter else f"checkpoint_number={number} was given"
        raise CheckpointExistsError(
            f"CheckpointManager.save in {self._directory!r} refused to write {self._checkpoint_name}-{number}: "
            f"{how}, but the directory holds checkpoints up to {self._checkpoint_name}-{found} from an earlier "
            "run, and this checkpoint's save_counter is 0 (it has neither saved one nor restored one that holds a "
            "save_counter): the save would overwrite them or fall behind them, and retention would then delete "
            "newer ones. Nothing was saved. To resume, call manager.restore_or_initialize() before training (it "
            "also numbers on from a checkpoint written without a save_counter); to start over, save into another "
            f"directory or remove the old checkpoints first; or number saves above {found} (checkpoint_number=step)."
        )

    def _scored_metrics(self, metrics: Any) -> tuple[list[WriteItem], _Scored]:
        """The item storing ``metrics`` in the checkpoint, and them as stored with their ``best_fn`` value."""
        if inspect.getattr_static(self._checkpoint, "_write_with", _ABSENT) is _ABSENT:
            raise ArgumentTypeError(
                f"CheckpointManager.save: metrics are stored in the checkpoint, which a "
                f"{type(self._checkpoint).__name__} cannot do; use a trackpoint.Checkpoint. Nothing was saved"
            )
        data, decoded = _encode_metrics(metrics, self._directory)
        score = None
        if self._best_fn is not None:
            score = self._score(decoded, "the checkpoint being saved (nothing was saved)")
        return [_metrics_item(data)], _Scored(decoded, score)

    def _after_save(self, saved: str, scored: _Scored | None) -> bytes:
        self._record_and_sweep(saved, scored)
        self._cleanup()
        return self._bookkeeping()

    def _after_commit(self, saved: str, scored: _Scored | None = None) -> None:
        """Record the committed checkpoint ``saved``, apply retention, clean up (an async save's writer runs it).

        ``scored``: the metrics this rank gave :meth:`save` with their ``best_fn`` value, ``None`` if none.
        """
        with self._lock:
            if self._coordinator is not None:
                # The state file and retention are one rank's work; every rank adopts the result.
                # On failure, rank 0's bookkeeping travels with the error, so every rank's manager is left alike.
                bookkeeping = on_root(
                    self._coordinator,
                    lambda: self._after_save(saved, scored),
                    f"recording {saved!r}",
                    state=self._bookkeeping,
                    adopt=self._adopt,
                )
                self._adopt(bookkeeping)
                return
            self._record_and_sweep(saved, scored)
        self._cleanup()

    def _cleanup(self) -> None:
        """Remove leftovers of crashed saves that are old enough (the backend's default age guard).

        Run after every save, not only when the manager is created: a save
        that crashed shortly before the manager started was too young to be
        removed then, and a long run would otherwise keep it until the next
        restart.
        """
        try:
            self._writer.cleanup(self._directory)
        except CheckpointError as exc:
            # The checkpoint is saved and recorded; garbage left behind is no reason to fail.
            _log.warning("could not clean up leftovers of crashed saves in %s: %s", self._directory, exc)

    def _record_and_sweep(self, path: str, scored: _Scored | None = None) -> None:
        timestamp = self._clock()
        self._highest = max(self._highest, self._number(path))
        # Re-saving a number moves it to the newest end of the window.
        self._maybe_delete.pop(path, None)
        self._maybe_delete[path] = timestamp
        self._latest_checkpoint = path
        self._scored.pop(path, None)  # a re-saved number's metrics are the new checkpoint's
        if scored is not None:
            self._scored[path] = scored
        elif self._coordinator is None:
            self._scored[path] = _WITHOUT
        elif self._best_fn is not None:
            # Rank 0 was given no metrics, but other ranks may have been: the checkpoint holds what they gave.
            self._recorded_scored(path)
        # Else (a coordinator, no best_fn): left unknown, as other ranks may have given metrics; metrics() reads
        # them from the checkpoint when asked, on any rank.
        # TensorFlow's order: record the new checkpoint first (the ones about to leave still listed), delete,
        # then record again without them. Readers and TensorFlow's tools name the new checkpoint from the
        # first write on, and a crash while deleting leaves entries naming checkpoints that are gone or
        # invisible, which readers skip and the next save drops: never a committed checkpoint nothing lists.
        try:
            self._record_state()
        except BaseException as exc:
            if isinstance(exc, Exception):
                # The save itself worked: say so, or the caller takes a whole checkpoint for a failed one.
                exc.add_note(
                    f"{path} was committed and is whole; only the state file of {self._directory!r} was not "
                    "updated, so tp.latest_checkpoint(directory) does not name it yet (this manager does, and "
                    "its next save records it)"
                )
            raise
        listed = len(self._maybe_delete)
        failed: list[tuple[str, float]] = []
        for prefix, stamp in self._sweep():
            try:
                named = functools.partial(_resolve.holder_name, self._backend, prefix)
                observe.delete_checkpoint(self._backend, prefix, reason="retention", backend=named)
            except CheckpointError:
                # Reported and logged as a warning by the delete event; the save that retired it has committed and
                # succeeded, whatever the delete met (the store failing, or gone, or no longer a checkpoint there).
                # Still whole (a delete removes the commit point first) or an invisible remainder: either way it
                # stays listed, oldest first, so the next save retries and a later manager retires it.
                failed.append((prefix, stamp))
            else:
                self._scored.pop(prefix, None)
        for prefix, stamp in reversed(failed):
            # Its metrics stay known (they are not read again from what may be a remainder without its commit
            # point): retention ranks it as before, so the next save retires it again and retries the delete.
            self._maybe_delete[prefix] = stamp
            self._maybe_delete.move_to_end(prefix, last=False)
        if len(self._maybe_delete) == listed:
            return
        try:
            self._record_state()
        except CheckpointError as exc:
            # The new checkpoint is recorded; the entries of the deleted ones are skipped by readers, and the
            # next save's record drops them.
            _log.warning("could not remove deleted checkpoints from the state file of %s: %s", self._directory, exc)

    def _sweep(self) -> list[tuple[str, float]]:
        """Checkpoints leaving the window that are not preserved (TF's rules), with their times."""
        leaving: list[tuple[str, float]] = []
        if not self._max_to_keep:
            return leaving
        for prefix in self._retiring(self._max_to_keep):
            timestamp = self._maybe_delete.pop(prefix)
            hours = self._keep_checkpoint_every_n_hours
            # Oldest first, as TensorFlow's window lets them go; with best_fn, the ones not among the best.
            # One found gone is not preserved: there is nothing left to keep, only a remainder to delete.
            gone = self._scored.get(prefix) is _GONE
            if hours and not gone and timestamp - hours * 3600.0 >= self._last_preserved_timestamp:
                # Preserved: kept forever but no longer listed, so the state file stays small.
                self._last_preserved_timestamp = timestamp
                self._scored.pop(prefix, None)
                continue
            # Its metrics are forgotten once it is deleted (the caller's), kept if the delete fails.
            leaving.append((prefix, timestamp))
        return leaving

    def _retiring(self, max_to_keep: int) -> list[str]:
        """The kept checkpoints that retention lets go, oldest first (``keep_checkpoint_every_n_hours`` aside)."""
        kept = list(self._maybe_delete)
        if len(kept) <= max_to_keep:
            return []
        if self._best_fn is None:
            return kept[: len(kept) - max_to_keep]
        ranked: list[tuple[tuple[int, float, int], str]] = []
        without: list[str] = []
        # The newest always stays: the state file names it and restore_or_initialize resumes from it.
        # So does one whose metrics the store could not give: it is not known to be without.
        staying = {kept[-1]}
        for order, path in enumerate(kept):
            scored = self._recorded_scored(path)
            if scored is None:
                staying.add(path)
            elif scored is _GONE:
                continue  # retired: its delete is retried (removing what is left of it), never kept
            elif scored.score is None:
                without.append(path)
            else:
                ranked.append((_sort_key(scored.score, self._best_mode, order), path))
        best = [p for _, p in sorted(ranked)]  # worst first
        if self._keep_without_metrics:
            staying.update(without, best[-max_to_keep:])
        else:
            # Below every checkpoint with metrics, the older lower: kept only while places are left.
            staying.update([*without, *best][-max_to_keep:])
        return [p for p in kept if p not in staying]

    def _record_state(self) -> None:
        mine = [(_basename(p), t) for p, t in self._maybe_delete.items()]
        latest = _basename(self._latest_checkpoint or "")
        preserved = self._last_preserved_timestamp
        # This manager's checkpoints that something else deleted while it ran (`trackpoint rm`, another process's
        # manager.delete): unlisted in the file and no longer committed, they leave its record too, so that
        # retention does not count them, nor the file list them again.
        deleted: set[str] = set()

        def update(current: state.CheckpointState | None) -> state.CheckpointState:
            # Entries of other managers (other checkpoint names) are carried over
            # untouched; this manager's entries are replaced by its own list.
            others: list[tuple[str, float | None]] = []
            others_preserved: float | None = None
            kept = mine
            if current is not None:
                listed = {_basename(p) for p in current.all_model_checkpoint_paths}
                # Asked only of entries missing from the file, which normally is the new checkpoint alone.
                deleted.update(
                    p
                    for p, _ in mine
                    if p != latest and p not in listed and not self._backend.exists(_paths.join(self._directory, p))
                )
                kept = [(p, t) for p, t in mine if p not in deleted]
                others = [(p, t) for p, t in state.timed_entries(current) if not self._is_own(p)]
                if current.last_preserved_timestamp <= self._clock():
                    # Another manager's preservation; one ahead of the clock is from before
                    # a clock reset, which this manager has already replaced by the current time.
                    others_preserved = current.last_preserved_timestamp
            base = state.CheckpointState()
            # Relative paths (TF2's choice): the directory can be copied or moved.
            base.model_checkpoint_path = latest
            base.last_preserved_timestamp = preserved
            new = state.merge_other_series(base, kept, others, others_preserved)
            if not new.model_checkpoint_path and new.all_model_checkpoint_paths:
                # With none of this manager's left (all deleted), the latest is the newest of another series':
                # TensorFlow's readers refuse a state without one.
                new.model_checkpoint_path = new.all_model_checkpoint_paths[-1]
            return new

        stored = state.modify_checkpoint_state(self._backend, self._directory, update)
        for name in deleted:
            gone = _paths.join(self._directory, name)
            self._maybe_delete.pop(gone, None)
            self._scored.pop(gone, None)
        if not stored.model_checkpoint_path:
            # Nothing left to list (the last checkpoint was deleted): no state file rather than one every reader
            # refuses as invalid. A checkpoint preserved by keep_checkpoint_every_n_hours is then found by listing.
            self._backend.delete_file(_paths.join(self._directory, state.DEFAULT_LATEST_FILENAME))

    def _save_for_preemption(self, options: CheckpointOptions | None) -> str:
        """The save of :func:`trackpoint.preemption.save_on_sigterm`; returns its path.

        Numbered by :meth:`_preemption_number`, due whatever ``checkpoint_interval`` says, and made even at a
        step this manager saved already: TensorFlow's rule of one save per step is for the loop's saves, while a
        step counter says nothing of the variables (a signal in the middle of a step, a counter of epochs), and
        a second checkpoint of a step costs less than what was trained since the first.
        """
        number = self._preemption_number()
        self._for_preemption = True
        try:
            path = self.save(checkpoint_number=number, check_interval=False, options=options)
        finally:
            self._for_preemption = False
        assert path is not None  # only the interval skips a save, and it is bypassed
        return path

    def _step_value(self) -> int | None:
        """The value of ``step_counter``, or ``None`` without one or if it holds no integer.

        Without ``checkpoint_interval`` the counter is not checked when the
        manager is created and :meth:`save` does not need it: it only tells
        how the saves are numbered, so one that cannot be read tells nothing
        (:meth:`_preemption_number` says so).
        """
        if self._step_counter is None:
            return None
        try:
            return _as_int(self._step_counter)
        except Exception:  # noqa: BLE001 - whatever it is (a CUDA tensor's numpy() raises TypeError), no save fails on it
            return None

    def _preemption_number(self) -> int:
        """The number of the preemption save of :func:`trackpoint.preemption.save_on_sigterm`.

        Numbered as the loop numbers its own saves, and always above every
        checkpoint number of the manager (kept, preserved or retired), so
        that it sorts newest by number as it is newest in the state file:

        * by step (the last committed save was given ``checkpoint_number``
          equal to the value of ``step_counter``): the step counter's value;
        * otherwise (``save()``, other numbers, nothing telling):
          ``save_counter + 1``, what ``save()`` would use;

        either raised to one more than the highest number when it is not
        above it (after a rollback, or when the latest checkpoint holds this
        step already: a second checkpoint of the step rather than none, since
        nothing tells whether the variables changed since that save).

        The numbering is what this manager's last committed save was given.
        Before one committed, the latest checkpoint tells: its number equal to
        the ``save_counter`` (restored with it: a save counts itself) is
        numbering by ``save_counter``; equal to the step it holds, by step.
        That step is known when :meth:`restore_or_initialize` restored it;
        after another restore (``checkpoint.restore(manager.latest_checkpoint)``)
        the step counter's value now stands for it: at or above the number,
        by step. A number equal to both tells nothing. Nothing is read from
        the checkpoint. Called with no save in flight (after :meth:`sync`).
        """
        step = self._step_value()
        if self._step_counter is not None and step is None:
            _log.warning(
                "the preemption save cannot read step_counter (%r holds no integer): numbered by save_counter, "
                "above the highest checkpoint number, instead of by step",
                self._step_counter,
            )
        counter = _as_int(self._checkpoint.save_counter)
        with self._lock:
            highest, latest = self._highest, self._latest_checkpoint
            restored, by_step = self._restored_step, self._by_step
        if by_step is None and latest is not None:
            # No save committed since the restart: the latest checkpoint tells. Numbered by step, it holds the step
            # its number says: known when restore_or_initialize restored it; else the step counter, now at or above
            # it, stands in (nothing is read at signal time). Its number being the save_counter it came back with
            # (a save counts itself) is save()'s numbering, or nothing telling: save_counter + 1 either way.
            number = self._number(latest)
            if restored is not None and restored[0] == latest:
                by_step = number == restored[1]
            else:
                by_step = step is not None and step >= number
            by_step = by_step and number != counter
        candidate = step if by_step and step is not None else counter + 1
        return max(candidate, highest + 1)

    @_signal_safe.guarded
    def reload(self) -> None:
        """Read the directory again: the checkpoints kept, the latest one and the state file's times.

        The manager reads its directory when it is created and then keeps
        its own record, as TensorFlow's does; after checkpoints were removed
        or added by something else (``tp.remove_checkpoint``, another tool),
        ``reload()`` brings :attr:`checkpoints`, :attr:`latest_checkpoint`
        and :attr:`best_checkpoint` up to date, as Orbax's ``reload`` does.
        An async save in flight is waited for first. Nothing is cleaned up
        or deleted.
        """
        self._wait_for_save("reload()")

        def reread() -> bytes:
            with self._lock:
                self._maybe_delete = OrderedDict()
                self._latest_checkpoint = None
                self._recover()
                return self._bookkeeping()

        self._on_root(reread, f"reloading {self._directory!r}")

    @_signal_safe.guarded
    def delete(self, checkpoint: str | int) -> None:
        """Delete one checkpoint of this manager's series, and its entry in the state file (Orbax's ``delete``).

        Parameters
        ----------
        checkpoint
            Its prefix (an entry of :attr:`checkpoints`, or one preserved by
            ``keep_checkpoint_every_n_hours``) or its number (``3`` for
            ``<directory>/<checkpoint_name>-3``).

        Raises
        ------
        CheckpointNotFoundError
            No checkpoint of the series is committed there; nothing changed.
        InvalidArgumentError
            A prefix outside the directory or series, or a negative number.

        Notes
        -----
        An async save in flight is waited for first. The checkpoint's commit
        point goes first, as for retention; when it was the latest, the newest
        one left becomes :attr:`latest_checkpoint` (``None`` if none is).
        Unlike ``tp.remove_checkpoint``, the manager's own record stays right,
        so a later save's retention does not count the deleted checkpoint.
        """
        prefix = self._series_prefix(checkpoint, "CheckpointManager.delete")
        self._wait_for_save("delete()")

        def remove() -> bytes:
            with self._lock:
                # The same check as exists(), and it names the backend for the delete event.
                held = _resolve.holder(self._backend, prefix)
                if held is None:
                    raise CheckpointNotFoundError(
                        f"CheckpointManager.delete: no checkpoint is committed at {prefix!r}", url=prefix
                    )
                observe.delete_checkpoint(self._backend, prefix, reason="delete", backend=held.name)
                self._maybe_delete.pop(prefix, None)
                self._scored.pop(prefix, None)
                if self._latest_checkpoint == prefix:
                    self._latest_checkpoint = next(reversed(self._maybe_delete), None)
                self._record_state()
                return self._bookkeeping()

        self._on_root(remove, f"deleting {prefix!r}")

    def _on_root(self, work: Callable[[], bytes], what: str) -> None:
        """Run ``work`` here, or with a coordinator on rank 0 alone, every rank adopting the bookkeeping it returns."""
        if self._coordinator is None:
            work()
        else:
            self._adopt(on_root(self._coordinator, work, what))

    # --------------------------------------------------------------- restore
    @_signal_safe.guarded
    def restore_or_initialize(self) -> str | None:
        """Restore the latest checkpoint if there is one, else call ``init_fn``.

        As TensorFlow's, it returns no load status: objects of the program
        that the checkpoint has no value for keep their initial values. Such
        objects are logged at once, as a warning naming each one (a renamed
        attribute or dict key, say). For a restore that must match, call
        ``checkpoint.restore(manager.latest_checkpoint)`` and check its status
        (``assert_existing_objects_matched()``, ``assert_consumed()``).

        A checkpoint written without a ``save_counter`` (``Checkpoint.write``,
        TensorFlow's ``write()``, Keras' ``save_weights``) sets the counter
        from its name: after ``ckpt-4`` the next :meth:`save` is ``ckpt-5``.

        A ``jax.ShapeDtypeStruct`` template the checkpoint has no value for
        is refused, not logged: a template holds no values, so the program
        would fail on it later, inside a jitted function, far from the cause.

        Returns
        -------
        str or None
            The restored prefix, or ``None`` if ``init_fn`` ran (or nothing happened).

        Raises
        ------
        MatchError
            The checkpoint restored left ``jax.ShapeDtypeStruct`` templates
            without a value (a renamed or new leaf); the message names them and
            the checkpoint's values no object took. The values that matched are
            restored. For a partial restore on purpose, call
            ``checkpoint.restore(manager.latest_checkpoint).expect_partial()``
            and give those leaves arrays.
        CheckpointExistsError
            The (local) directory holds no checkpoint trackpoint reads but an
            Orbax run (numbered step directories): starting from scratch would
            drop that run's progress unnoticed. Or the manager's backend was
            chosen explicitly (``options`` or ``TRACKPOINT_BACKEND``) and other
            formats hold checkpoints of its series newer than any it reads:
            restoring an older one, or none, would drop their progress; the
            message names them and what to do. Nothing was restored or
            initialized.
        """
        # An async save in flight becomes the latest checkpoint once committed (or raises here).
        self.sync()
        if self._newer_elsewhere():
            # Restoring an older checkpoint, or none, would drop the progress of the newer ones unnoticed.
            raise CheckpointExistsError(
                f"CheckpointManager.restore_or_initialize: {self._unread()}. Nothing was restored or initialized"
            )
        if self._latest_checkpoint is not None:
            status = self._checkpoint.restore(self._latest_checkpoint, options=self._options)
            if isinstance(status, CheckpointLoadStatus) and _array_values.placeholders_exist():
                _refuse_empty_templates(status, self._latest_checkpoint)
            counter = self._checkpoint.save_counter
            number = self._number(self._latest_checkpoint)
            if (
                isinstance(status, CheckpointLoadStatus)
                and number > 0
                and _as_int(counter) == 0
                and isinstance(counter, Trackable)
                and not status._checkpoint.is_matched(counter)
            ):
                # Written without a save_counter (Checkpoint.write, TensorFlow's write() or Keras' save_weights):
                # numbering continues from its name, so the next save neither overwrites it nor is refused.
                counter.assign_add(number)
                _log.info(
                    "%s holds no save_counter; numbering continues from its name (the next save is %s-%d)",
                    self._latest_checkpoint,
                    self._checkpoint_name,
                    number + 1,
                )
            _warn_unmatched(status, self._latest_checkpoint, counter)
            if self._checkpoint_interval is not None:
                self._last_checkpoint_step = _as_int(self._step_counter)
            restored_step = self._step_value()
            # What the preemption save numbers by after a restart, before this run saved (_preemption_number).
            self._restored_step = None if restored_step is None else (self._latest_checkpoint, restored_step)
            return self._latest_checkpoint
        if self._orbax_steps:
            steps = self._orbax_steps
            raise CheckpointExistsError(
                f"CheckpointManager.restore_or_initialize: {self._directory!r} holds no checkpoint trackpoint reads "
                f"({self._checkpoint_name}-N), but it holds an Orbax run (step directories "
                f"{', '.join(steps[-5:])}{', ...' if len(steps) > 5 else ''}), which trackpoint does not read: "
                "starting from scratch here would drop that run's progress unnoticed. To go on from it, restore its "
                "latest step with Orbax once, assign the values to the checkpoint and save them with this manager "
                "(ckpt.state = restored; manager.save(checkpoint_number=step)): restore_or_initialize resumes from "
                "that checkpoint from then on. To start a new run, give the manager another directory. Nothing "
                "was restored or initialized"
            )
        if self._init_fn is not None:
            self._init_fn()
        return None

    @_signal_safe.guarded
    def sync(self) -> None:
        """Wait until the async save in flight is committed, recorded and retention applied.

        Returns at once when no save is in flight (and after synchronous
        saves). Call it before reading a checkpoint this manager just wrote
        from another process.

        Raises
        ------
        CheckpointError
            (or whatever the background save raised) The async save failed;
            it is neither committed nor in the state file. Each failure is
            raised once, by this, the next save or the next restore.
        """
        self._wait_for_save("sync()")

    def _wait_for_save(self, by: str) -> None:
        """:meth:`sync`, its failure's note naming the call ``by`` that raised it."""
        saver: _async.AsyncSaver | None = getattr(self._checkpoint, "_self_async", None)
        if saver is not None:
            saver.sync(by)

    # -------------------------------------------------------------- lifetime
    @_signal_safe.guarded
    def close(self) -> None:
        """Close the storage backend the manager opened for its directory.

        The manager opens its directory's backend once, when created, and
        uses it for every listing, state-file update, deletion and cleanup.
        The checkpoint it saves holds its own (see ``Checkpoint.close``).
        Without ``close`` the backend is closed when the manager is garbage
        collected; ``with CheckpointManager(...) as manager:`` closes at the
        end of the block. The manager is not used after ``close``. An async
        save in flight is waited for first (it records itself through this
        backend), and its failure raised.
        """
        try:
            self._wait_for_save("close()")
        finally:
            self._closer()

    def __enter__(self) -> CheckpointManager:
        return self

    @_signal_safe.guarded
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            # The block's exception wins; a failure of the save stays pending (sync(), exit).
            saver: _async.AsyncSaver | None = getattr(self._checkpoint, "_self_async", None)
            if saver is not None:
                saver.wait()
            self._closer()
            return
        self.close()

    def __repr__(self) -> str:
        return (
            f"CheckpointManager(directory={self._directory!r}, max_to_keep={self._max_to_keep!r}, "
            f"checkpoints={len(self._maybe_delete)})"
        )


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] if _paths.scheme(path) else os.path.basename(path)
