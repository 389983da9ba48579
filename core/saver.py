"""``Saver``: TensorFlow 1's name-based ``tf.compat.v1.train.Saver`` without sessions or graphs.

A name-based checkpoint stores each variable under its name (``dense/kernel``)
and has no object graph. :class:`Saver` writes and reads such checkpoints
through any storage backend, keeps TF1's bookkeeping (``max_to_keep``,
``keep_checkpoint_every_n_hours``, the ``checkpoint`` state file with
absolute paths by default) and reads checkpoints written by TensorFlow's
``Saver``, including partitioned variables and sharded saves. Variables
holding slices (``save_slice_info``) are saved and restored as slices of
one tensor, as TensorFlow 1 saves the parts of a partitioned variable.

Cross-loading works both ways, as in TensorFlow: :meth:`Saver.restore` on an
object-based checkpoint (written by :class:`~trackpoint.Checkpoint`) maps each
name through the object graph (an attribute's ``full_name`` to its
``checkpoint_key``), and ``Checkpoint.restore`` on a name-based checkpoint
matches variables by name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import numpy as np

from trackpoint import _async, _gc, _paths, _resolve, observe, state
from trackpoint._array_values import PYTHON_NUMBERS_KEY
from trackpoint.errors import (
    CheckpointError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    DTypeMismatchError,
    InvalidCheckpointError,
    InvalidSavePathError,
    NameConflictError,
    NotTrackableError,
    SavePathIsNoneError,
    ShapeMismatchError,
    TrackableError,
    UnsupportedOptionError,
)
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.reader import full_name_keys
from trackpoint.restore import order_restores, partial_restore_noted, read_requests
from trackpoint.storage import (
    OBJECT_GRAPH_KEY,
    CheckpointOptions,
    CheckpointReader,
    TensorInfo,
    TensorSlice,
    WriteItem,
    check_coverage,
)
from trackpoint.trackable import VARIABLE_VALUE_KEY
from trackpoint.variables import Variable

__all__ = ["CheckpointableSaver", "FrozenSaver", "Saver", "TrackableSaver", "frozen_saver"]

_log = logging.getLogger(__name__)

#: TensorFlow's ``SaverDef.V2``: the TensorBundle format.
_V2: Final = 2

#: Upper bound on data shards of a ``sharded=True`` save (each is written by one thread).
_MAX_SHARDS: Final = 8


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """One variable of a :class:`Saver`: the tensor ``name``, or the part ``part`` of it.

    ``part`` is the variable's ``save_slice_info`` when it was given as one of
    the slices of ``name`` (TensorFlow's saveable with a ``slice_spec``), else
    ``None``: the variable is saved as the whole tensor.
    """

    name: str
    var: Variable
    part: TensorSlice | None


def _names_to_entries(var_list: Any) -> list[_Entry]:
    """TF's ``op_list_to_dict`` and ``saveable_objects_for_op`` for trackpoint Variables.

    A list keys a variable by its name, or, when it holds a slice
    (``save_slice_info``), by the slice's ``full_name``: the slices of one
    tensor are saved and restored under that one key. A dict maps a name to a
    Variable (saved whole, even one holding a slice, as in TensorFlow) or to a
    list of Variables holding slices of the one tensor saved under that name.
    Entries come sorted by name, then by slice offset.
    """
    plain: dict[str, Variable] = {}
    sliced: dict[str, list[Any]] = {}
    if isinstance(var_list, Mapping):
        for name, value in var_list.items():
            if not isinstance(name, str) or not name:
                raise NotTrackableError(
                    "names_to_saveables must be a dict mapping string names to trackable operations: var_list "
                    f"keys must be non-empty strings (checkpoint keys), got {name!r}"
                )
            if isinstance(value, (list, tuple)):
                sliced[name] = list(value)
            elif isinstance(value, Variable):
                plain[name] = value
            else:
                raise NotTrackableError(
                    f"Variable to save is not a Variable: var_list[{name!r}] must be a trackpoint.Variable, got "
                    f"{type(value).__name__} (or a list of the Variables holding the slices of one tensor)"
                )
    elif isinstance(var_list, (list, tuple)):
        for var in var_list:
            if not isinstance(var, Variable):
                raise NotTrackableError(
                    f"Variable to save is not a Variable: var_list must hold trackpoint.Variable objects, got "
                    f"{type(var).__name__}; pass a dict {{name: Variable}} to choose names yourself"
                )
            info = var.save_slice_info
            if info is None:
                if var.name in plain:
                    raise NameConflictError(
                        f"At least two variables have the same name: {var.name!r}; give them distinct `name=`s "
                        "or pass a dict {name: Variable}"
                    )
                plain[var.name] = var
            else:
                # TensorFlow 1 saves a partitioned variable under the whole tensor's name.
                sliced.setdefault(info.full_name or var.name, []).append(var)
        for name, parts in sliced.items():
            if name in plain:
                raise NameConflictError(
                    f"Mixing slices and non-slices with the same name: {name!r} is the name of Variable "
                    f"{plain[name].name!r} and the full_name of the slices held by "
                    f"{[v.name for v in parts]}; rename one of them"
                )
    else:
        got = type(var_list).__name__
        raise NotTrackableError(f"Variables to save should be passed in a dict or a list, got {got}")
    entries = [_Entry(name, var, None) for name, var in plain.items()]
    for name, parts in sliced.items():
        entries += _slices_of_one_tensor(name, parts)
    seen: dict[int, str] = {}
    for entry in entries:
        where = seen.get(id(entry.var))
        if where is not None:
            twice = (
                f"twice among the slices of {where!r}"
                if where == entry.name
                else f"under two names: {where!r} and {entry.name!r}"
            )
            raise NameConflictError(f"The same variable would be saved {twice} (Variable {entry.var.name!r})")
        seen[id(entry.var)] = entry.name
    entries.sort(key=lambda e: (e.name, () if e.part is None else e.part.offset))
    return entries


def _slices_of_one_tensor(name: str, parts: list[Any]) -> list[_Entry]:
    """The entries of ``parts``, checked to be Variables holding slices of one tensor (TF's "Slices must all be").

    Whether they tile the tensor is checked when they are saved: a restore
    may read just some of the slices.
    """
    if not parts:
        raise TrackableError(
            f"var_list[{name!r}] is an empty list: give the Variables holding the slices of {name!r}, or leave "
            "the name out"
        )
    out: list[_Entry] = []
    full_names: set[str | None] = set()
    for var in parts:
        if not isinstance(var, Variable):
            raise NotTrackableError(
                f"Slices must all be Variables: the slices of {name!r} must be trackpoint.Variable objects, got "
                f"{type(var).__name__}"
            )
        info = var.save_slice_info
        if info is None:
            raise TrackableError(
                f"Slices must all be slices: Variable {var.name!r}, listed among the slices of {name!r}, has no "
                "save_slice_info; give it a trackpoint.SaveSliceInfo or save it under a name of its own"
            )
        out.append(_Entry(name, var, info.slice))
        full_names.add(info.full_name)
    if len(full_names) > 1:
        raise TrackableError(
            f"Slices must all be from the same tensor: the slices saved as {name!r} name the tensors "
            f"{sorted(full_names, key=str)} in their save_slice_info.full_name"
        )
    shapes = sorted({e.part.full_shape for e in out if e.part is not None})
    if len(shapes) > 1:
        raise TrackableError(
            f"Saver: the slices saved for {name!r} disagree on the full shape: {shapes} "
            f"(Variables {[e.var.name for e in out]}); the slices of one tensor must give the same full_shape"
        )
    dtypes = sorted({str(e.var.dtype) for e in out})
    if len(dtypes) > 1:
        raise TrackableError(f"Saver: the slices saved for {name!r} have different dtypes: {dtypes}")
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Read:
    """What the restore of ``var`` reads: the tensor ``key`` whole (stored in ``shape``), or its slice ``part``."""

    var: Variable
    key: str
    part: TensorSlice | None
    shape: tuple[int, ...]

    def run(self, reader: CheckpointReader, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        if self.part is None:
            return reader.read(self.key, out)
        return reader.read_slice(self.key, self.part.offset, self.part.shape, out)


def _object_graph_names(reader: CheckpointReader) -> dict[str, str]:
    """``{full_name: checkpoint_key}`` of an object-based checkpoint (see :func:`~trackpoint.reader.full_name_keys`)."""
    raw = np.asarray(reader.read(OBJECT_GRAPH_KEY), dtype=object).reshape(-1)
    graph = pb.TrackableObjectGraph()
    try:
        graph.ParseFromString(bytes(raw[0]))
    except Exception as exc:
        raise InvalidCheckpointError(f"the object graph in {reader.prefix!r} cannot be parsed: {exc}") from exc
    return full_name_keys(graph)


class Saver:
    """Save and restore variables by name, like ``tf.compat.v1.train.Saver``.

    Parameters
    ----------
    var_list
        ``{name: Variable}``, or a list of Variables saved under their ``name``.
        Required: there is no graph to collect variables from. As in
        TensorFlow, the Variables holding the slices of one partitioned tensor
        (each with a ``save_slice_info``) are saved as slices of the one
        tensor ``save_slice_info.full_name`` when listed, and of the tensor
        ``name`` when given as a list in a dict, ``{name: [part_0, part_1]}``;
        a restore reads each variable's slice, whatever the partitioning the
        checkpoint was written with. A Variable holding a slice given alone
        in a dict is saved whole under its name, as in TensorFlow; its
        restore reads its slice when the stored tensor has its ``full_shape``.
    reshape
        Allow restoring a stored tensor whose shape differs from its
        variable's but has as many elements: it is reshaped to the variable's
        shape (row-major, as TensorFlow's ``reshape``).
    sharded
        Write the data in several shards (up to 8, written in parallel). TF
        shards per device; trackpoint has no devices, so it shards by size.
    max_to_keep
        How many recent checkpoints to keep; ``None`` or 0 keeps all (and then
        the state file lists only the newest, as in TensorFlow). Each save
        deletes the checkpoints that left the window, each reported by the
        ``trackpoint_checkpoint_deleted`` event (reason ``"retention"``); one
        whose delete failed is tried again by the next save.
    keep_checkpoint_every_n_hours
        Besides the ``max_to_keep`` most recent, keep one checkpoint per this
        many hours.
    name
        Accepted for TensorFlow's call shape (it names graph ops); no effect.
    restore_sequentially
        Read one tensor at a time, in name order, each straight into its
        variable. Without it the reader may read several at once (in
        parallel where the backend can), still into the variables' own
        buffers; either way no copy of the model is held.
    saver_def, builder, filename
        TensorFlow's graph configuration: must stay ``None``.
    defer_build
        Accepted for TensorFlow's call shape; there is nothing to build.
    pad_step_number
        Zero-pad the step to 8 digits in the prefix (``model-00000042``).
    save_relative_paths
        Store paths relative to the directory in the state file (so a copied
        directory works); TF1's default ``False`` stores them as given.
    allow_empty
        Allow an empty ``var_list``; ``save`` then writes nothing and returns
        ``None`` and ``restore`` does nothing.
    write_version
        Must be 2 (TensorFlow's ``SaverDef.V2``, the TensorBundle format).
    options
        Backend choice and storage options for every save and restore.
    clock
        Source of Unix time for ``keep_checkpoint_every_n_hours`` (injectable).

    Raises
    ------
    TrackableError
        ``var_list`` is missing, or empty without ``allow_empty``.
    NotTrackableError
        (a ``TypeError``, as in TensorFlow) ``var_list`` is not a list or
        dict of Variables, or a dict key is not a string.
    NameConflictError
        Two variables share a name, one variable appears under two names, or
        a name is both a variable's and the ``full_name`` of slices.
    TrackableError
        The slices given as one tensor are not all Variables with a
        ``save_slice_info``, or disagree on its ``full_name``, full shape or
        dtype. (Slices that overlap or leave a gap are refused by ``save``.)
    UnsupportedOptionError
        ``saver_def``, ``builder`` or ``filename`` is given, or ``write_version`` is not 2.
    """

    def __init__(
        self,
        var_list: Mapping[str, Variable] | Sequence[Variable] | None = None,
        reshape: bool = False,
        sharded: bool = False,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        name: str | None = None,
        restore_sequentially: bool = False,
        saver_def: None = None,
        builder: None = None,
        defer_build: bool = False,
        allow_empty: bool = False,
        write_version: int = 2,
        pad_step_number: bool = False,
        save_relative_paths: bool = False,
        filename: None = None,
        *,
        options: CheckpointOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for what, value in (("saver_def", saver_def), ("builder", builder), ("filename", filename)):
            if value is not None:
                raise UnsupportedOptionError(
                    f"Saver({what}=...) configures TensorFlow's graph ops; trackpoint has no graph. Leave it "
                    "unset and pass the checkpoint path to save() and restore()"
                )
        if write_version != _V2:
            raise UnsupportedOptionError(
                f"Saver(write_version={write_version!r}): only the V2 format (write_version=2, TensorFlow's "
                "default since 1.x) is written; TensorFlow itself deprecates V1"
            )
        del name, defer_build  # graph-building arguments: no effect without a graph
        if var_list is None:
            raise TrackableError(
                "Saver needs `var_list`, a list or dict of Variables to save: without a graph there is "
                "no global collection of variables to default to"
            )
        self._entries = _names_to_entries(var_list)
        # The checkpoint keys, sorted: one per variable, or per tensor whose slices several variables hold.
        self._names = list(dict.fromkeys(e.name for e in self._entries))
        if not self._entries and not allow_empty:
            raise TrackableError("No variables to save (pass allow_empty=True to allow an empty Saver)")
        self._sharded = sharded
        self._reshape = reshape
        self._restore_sequentially = restore_sequentially
        self._max_to_keep = max_to_keep
        self._keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._pad_step_number = pad_step_number
        self._save_relative_paths = save_relative_paths
        self._options = options
        self._clock = clock
        # One backend per location and options, held until close().
        self._backends = _resolve.Backends()
        self._last_checkpoints: list[tuple[str, float]] = []
        self._checkpoints_to_be_deleted: list[tuple[str, float]] = []
        self._next_checkpoint_time = clock() + keep_checkpoint_every_n_hours * 3600.0

    # ---------------------------------------------------------- bookkeeping
    @property
    def last_checkpoints(self) -> list[str]:
        """Prefixes of the checkpoints not yet deleted, oldest first."""
        return [p for p, _ in self._last_checkpoints]

    def set_last_checkpoints_with_time(self, last_checkpoints_with_time: list[tuple[str, float]]) -> None:
        """Replace the list of kept checkpoints with ``[(prefix, unix time), ...]``, oldest first."""
        if not isinstance(last_checkpoints_with_time, list):
            raise TrackableError(
                f"last_checkpoints_with_time must be a list of (prefix, time) pairs, "
                f"got {type(last_checkpoints_with_time).__name__}"
            )
        self._last_checkpoints = [(str(p), float(t)) for p, t in last_checkpoints_with_time]

    def set_last_checkpoints(self, last_checkpoints: list[str]) -> None:
        """Replace the list of kept checkpoints with ``last_checkpoints``, oldest first (TensorFlow 1's older form).

        Their times are unknown, so, as in TensorFlow, they count as infinitely
        new: one leaving the ``max_to_keep`` window is kept (not deleted) by
        ``keep_checkpoint_every_n_hours``. Prefer
        :meth:`set_last_checkpoints_with_time` or :meth:`recover_last_checkpoints`.

        Raises
        ------
        TrackableError
            (a ``ValueError``) ``last_checkpoints`` is not a list.
        """
        if not isinstance(last_checkpoints, list):
            raise TrackableError(
                f"last_checkpoints must be a list of checkpoint prefixes, got {type(last_checkpoints).__name__}"
            )
        self._last_checkpoints = [(str(p), float("inf")) for p in last_checkpoints]

    def recover_last_checkpoints(self, checkpoint_paths: str | Sequence[str]) -> None:
        """Rebuild the kept list after a restart from ``checkpoint_paths`` (oldest first).

        One path alone is a list of one (not its characters). Each committed
        checkpoint is stamped with its commit time as its store
        reports it (:func:`trackpoint.get_checkpoint_mtimes`), as TensorFlow
        stamps the files' modification times, so ``keep_checkpoint_every_n_hours``
        treats old checkpoints as old. Paths with nothing committed are
        dropped. A store that cannot tell the time stamps the current time
        (``clock``): such a checkpoint is not preserved until it ages in this run.
        """
        from trackpoint.checkpoint_management import checkpoint_mtime

        kept = []
        for path in _paths.path_list(checkpoint_paths, "Saver.recover_last_checkpoints", "checkpoint_paths"):
            stamp = checkpoint_mtime(self._backends.store(path, self._options), path, self._clock)
            if stamp is not None:
                kept.append((path, stamp))
        self.set_last_checkpoints_with_time(kept)

    def _record_last_checkpoint(self, path: str) -> None:
        if not self._max_to_keep:
            return
        # A re-used prefix moves to the newest end, and is no longer one to delete (a failed delete waits in
        # that queue for the next save, which has just written the prefix again).
        self._last_checkpoints = [p for p in self._last_checkpoints if p[0] != path]
        self._checkpoints_to_be_deleted = [p for p in self._checkpoints_to_be_deleted if p[0] != path]
        self._last_checkpoints.append((path, self._clock()))
        if len(self._last_checkpoints) > self._max_to_keep:
            self._checkpoints_to_be_deleted.append(self._last_checkpoints.pop(0))

    def _maybe_delete_old_checkpoints(self) -> None:
        # As TensorFlow: the checkpoints that left the window, one per save unless a delete failed before. A
        # failed one stays queued for the next save, behind the others, so that one delete failing for good
        # neither blocks the others nor is dropped.
        failed: list[tuple[str, float]] = []
        while self._checkpoints_to_be_deleted:
            path, stamp = self._checkpoints_to_be_deleted.pop(0)
            if stamp > self._next_checkpoint_time:
                self._next_checkpoint_time += self._keep_checkpoint_every_n_hours * 3600.0
                continue
            store = self._backends.store(path, self._options)
            try:
                observe.delete_checkpoint(
                    store, path, reason="retention", backend=functools.partial(_resolve.holder_name, store, path)
                )
            except CheckpointError:
                # Reported, and logged as a warning, by the delete event. Already unlisted: a failed delete
                # leaves garbage, never a broken checkpoint (as CheckpointManager's retention).
                failed.append((path, stamp))
        self._checkpoints_to_be_deleted = failed

    # ----------------------------------------------------------------- save
    @_gc.full_collections_deferred()
    def save(self, *args: Any, **kwargs: Any) -> str | None:
        """Save the variables; TensorFlow 1's ``save(sess, save_path, global_step, ...)`` works too.

        Called as ``save(save_path, global_step=None, latest_filename=None,
        write_state=True, options=None)`` (see :meth:`_save`), or with
        TensorFlow 1's arguments ``save(sess, save_path, global_step=None,
        latest_filename=None, meta_graph_suffix="meta", write_meta_graph=True,
        write_state=True, strip_default_attrs=False, save_debug_info=False)``:
        the session and the meta-graph arguments are accepted and ignored (no
        graph is written), as eager TensorFlow ignores the session.
        """
        session_first = bool(args) and not isinstance(args[0], (str, os.PathLike))
        if "sess" in kwargs or (session_first and (len(args) >= 2 or "save_path" in kwargs)):
            bound = _TF1_SAVE.bind(*args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            return self._save(a["save_path"], a["global_step"], a["latest_filename"], a["write_state"], a["options"])
        return self._save(*args, **kwargs)

    def _save(
        self,
        save_path: str | os.PathLike[str],
        global_step: int | Any | None = None,
        latest_filename: str | None = None,
        write_state: bool = True,
        options: CheckpointOptions | None = None,
    ) -> str | None:
        """Save the variables to ``save_path`` (or ``save_path-<global_step>``).

        Parameters
        ----------
        save_path
            Checkpoint prefix, local path or URL.
        global_step
            Appended as ``-<step>``: an int, an integer Variable, or TensorFlow 1's
            tensor name of a variable of this Saver (``"global_step:0"``, or its
            name without ``:0``).
        latest_filename
            Name of the state file beside the checkpoint (default ``checkpoint``).
        write_state
            Update the state file and the ``max_to_keep`` bookkeeping.
        options
            Overrides the Saver's options for this save.

        Returns
        -------
        str or None
            The checkpoint prefix, or ``None`` for an empty Saver.

        Raises
        ------
        InvalidCheckpointError
            ``latest_filename`` has path components or collides with ``save_path``.
        TrackableError
            The slices of a partitioned tensor overlap or leave part of it
            uncovered; nothing is written.
        CheckpointNotFoundError
            The backend reports that the parent of ``save_path`` does not exist
            and cannot be created.
        StorageError
            ``save_path`` is not writable, for example because a parent is a
            regular file (``StoragePermissionError`` when permissions forbid it).
        """
        if latest_filename is None:
            latest_filename = state.DEFAULT_LATEST_FILENAME
        if os.path.split(latest_filename)[0] or "/" in latest_filename:
            raise InvalidCheckpointError(f"'latest_filename' must not contain path components, got {latest_filename!r}")
        prefix = _as_path(save_path, "save_path")
        if global_step is not None:
            step = _as_step(self._step_variable(global_step) if isinstance(global_step, str) else global_step)
            prefix = f"{prefix}-{step:08d}" if self._pad_step_number else f"{prefix}-{step}"
        elif _basename(prefix) == latest_filename and not self._sharded:
            raise InvalidCheckpointError(
                f"'latest_filename' collides with 'save_path': {latest_filename!r} and {prefix!r}; "
                "choose another save_path or latest_filename"
            )
        if not self._entries:
            return None
        started = time.perf_counter()
        chosen = options or self._options or CheckpointOptions()
        # TensorFlow 1's Saver has no async save; saying so beats a silently synchronous one.
        _async.refuse(chosen, "Saver.save")
        opts = self._shard_options(chosen)
        # Held per the options that choose the backend; the shard tuning goes to this save only.
        backend = self._backends.store(prefix, chosen)
        self._check_slices_tile(prefix)
        # TF writes tensors in name order; keep that so single-shard data files match. A slice that is
        # the whole tensor is saved as a plain value, as Variable._serialize_to_tensors does.
        items = [
            WriteItem(e.name, e.var.value, None if e.part is None or e.part.is_full else e.part) for e in self._entries
        ]
        events = observe.save_events(
            prefix, operation="saver", backend=backend.name, items=items, options=opts, started=started
        )

        def save() -> None:
            # Inside the events: a refused save is reported as failed, not left started.
            _resolve.refuse_shadow(prefix, chosen, _resolve.writer(backend), "Saver.save")
            backend.save(prefix, items, opts, overwrite=True)

        try:
            events.run(save)
        except CheckpointNotFoundError as exc:
            # TensorFlow's wording. A location that exists but cannot be written
            # (a regular file as parent, a read-only directory) is a StorageError
            # from the backend, which says so itself.
            raise CheckpointNotFoundError(
                f"Parent directory of {prefix!r} doesn't exist, can't save (backend {backend.name!r}: {exc})"
            ) from exc
        observe.run_write_callbacks(opts, prefix)
        if write_state:
            self._record_last_checkpoint(prefix)
            directory = _paths.dirname(prefix)
            state.update_checkpoint_state(
                backend,
                directory,
                prefix,
                all_model_checkpoint_paths=self.last_checkpoints,
                save_relative_paths=self._save_relative_paths,
                latest_filename=latest_filename,
            )
            self._maybe_delete_old_checkpoints()
        return prefix

    def _check_slices_tile(self, prefix: str) -> None:
        """Refuse, before anything is written, a save whose slices of a tensor overlap or leave a gap.

        The commit of every backend that stores slices checks the same
        (:func:`trackpoint.storage.check_coverage`); checking first keeps a
        refused save from writing data files, and names the Saver's variables.
        """
        groups: dict[str, list[_Entry]] = {}
        for entry in self._entries:
            if entry.part is not None:
                groups.setdefault(entry.name, []).append(entry)
        for name, group in groups.items():
            parts = [e.part for e in group if e.part is not None]
            try:
                check_coverage(name, parts[0].full_shape, parts, f"Saver.save of {prefix!r}")
            except TrackableError as exc:
                held = ", ".join(f"{e.var.name!r} {e.part.spec!r}" for e in group if e.part is not None)
                raise type(exc)(f"{exc} (slices held by Variables {held})") from exc

    def _step_variable(self, tensor_name: str) -> Variable:
        """The variable of ``var_list`` that TensorFlow 1's tensor name ``tensor_name`` (``global_step:0``) names."""
        name = tensor_name[:-2] if tensor_name.endswith(":0") else tensor_name
        found = next((e.var for e in self._entries if e.part is None and e.name == name), None)
        if found is None:
            found = next((e.var for e in self._entries if e.var.name == name), None)
        if found is None:
            raise TrackableError(
                f"global_step {tensor_name!r} names no variable of this Saver (known: {self._names}); "
                "pass the step as an int or a Variable, or add the step variable to var_list"
            )
        return found

    def _shard_options(self, opts: CheckpointOptions) -> CheckpointOptions:
        if opts.num_writers is not None:
            return opts
        if not self._sharded:
            # One data file, as TF's non-sharded Saver writes.
            return dataclasses.replace(opts, num_writers=1)
        return dataclasses.replace(opts, num_writers=max(1, min(_MAX_SHARDS, len(self._entries))))

    # -------------------------------------------------------------- restore
    def restore(self, *args: Any, **kwargs: Any) -> None:
        """Restore every variable: ``restore(save_path)``, or TensorFlow 1's ``restore(sess, save_path)``.

        The session is accepted and ignored; see :meth:`_restore`.
        """
        if len(args) == 2 or "sess" in kwargs:
            bound = _TF1_RESTORE.bind(*args, **kwargs)
            return self._restore(bound.arguments["save_path"])
        return self._restore(*args, **kwargs)

    @_gc.full_collections_deferred()
    def _restore(self, save_path: str | os.PathLike[str] | None) -> None:
        """Restore every variable from the checkpoint ``save_path``.

        Keys are the variables' names (a partitioned tensor's for its
        slices). On an object-based checkpoint a name missing as a key is
        looked up among the object graph's ``full_name``s. A variable holding
        a slice reads just that part of the stored tensor.
        Every variable is checked (presence, dtype, shape) before any is
        changed, so a failed restore leaves all variables as they were.

        Raises
        ------
        InvalidSavePathError
            (a ``CheckpointNotFoundError`` and, as in TensorFlow, a ``ValueError``)
            No checkpoint is committed at ``save_path``; for ``None`` its
            subclass ``SavePathIsNoneError``.
        CheckpointKeyError
            Some variables are not in the checkpoint; the message lists them
            and explains the likely cause.
        DTypeMismatchError, ShapeMismatchError
            A stored tensor does not fit its variable; no variable was changed.
        DataLossError, StorageError
            Reading the values failed after every check passed: some
            variables may hold the checkpoint's values (the exception's note
            says so); restore again before using them.
        """
        if not self._entries:
            return
        if save_path is None:
            raise SavePathIsNoneError("Can't load save_path when it is None.")
        prefix = _as_path(save_path, "save_path")
        started = time.perf_counter()
        backend = self._backends.store(prefix, self._options)
        if not backend.exists(prefix):
            raise InvalidSavePathError(
                f"The passed save_path is not a valid checkpoint: {prefix!r} (backend {backend.name!r}); "
                "pass a prefix returned by save() or latest_checkpoint()"
            )
        with backend.open_reader(prefix) as opened:
            events = observe.restore_events(
                prefix,
                opened,
                operation="saver",
                backend=functools.partial(_resolve.holder_name, backend, prefix),
                options=self._options,
                started=started,
            )
            try:
                reader = events.wrap(opened)
                keys = self._resolve_keys(reader, prefix)
                # Every variable is checked before any is written: a mismatch leaves all as they were.
                infos = {name: reader.info(keys[name]) for name in self._names}
                reads = [
                    _Read(
                        e.var,
                        keys[e.name],
                        _check_fits(e, infos[e.name], keys[e.name], prefix, self._reshape),
                        tuple(infos[e.name].shape),
                    )
                    for e in self._entries
                ]
                self._read_into_variables(reader, reads)
            except BaseException as exc:
                events.failed(exc)
                raise
        events.finished()

    def _read_into_variables(self, reader: CheckpointReader, reads: list[_Read]) -> None:
        """Assign each variable as its value is read, never holding a copy of the model.

        Numeric values are read straight into the variables' buffers (viewed
        in the stored shape when ``reshape`` allowed another one), a slice by
        :meth:`~trackpoint.storage.CheckpointReader.read_slice`, which reads
        only what overlaps it; strings are read and assigned one at a time.
        """
        direct: list[tuple[_Read, np.ndarray[Any, Any]]] = []
        one_by_one: list[_Read] = []
        for read in reads:
            buffer = read.var._restore_buffer(VARIABLE_VALUE_KEY)
            # A slice is read in the variable's own shape, a whole tensor in the stored one.
            out = buffer if read.part is not None else _buffer_in_shape(buffer, read.shape)
            if out is None:
                one_by_one.append(read)
            else:
                direct.append((read, out))
        with partial_restore_noted(lambda: bool(direct) or len(one_by_one) > 1):
            if self._restore_sequentially:
                for read, out in direct:
                    self._land(read.var, read.run(reader, out), out)
            else:
                # Whole tensors in one batch, slices concurrently: the object-based restore's reads.
                requests: list[tuple[str, np.ndarray[Any, Any] | None]] = [(read.key, out) for read, out in direct]
                parts = {i: read.part for i, (read, _) in enumerate(direct) if read.part is not None}
                for (read, out), result in zip(direct, read_requests(reader, requests, parts), strict=True):
                    self._land(read.var, result, out)
            for read in one_by_one:
                self._land(read.var, read.run(reader, None), None)

    def _land(self, var: Variable, value: np.ndarray[Any, Any], out: np.ndarray[Any, Any] | None) -> None:
        """Finish restoring ``var``: nothing to do when the reader filled its buffer ``out`` in place."""
        if out is not None and value is out:
            return
        var.assign(np.reshape(value, var.shape) if self._reshape else value)

    def _resolve_keys(self, reader: CheckpointReader, prefix: str) -> dict[str, str]:
        """``{variable name: checkpoint key}``, through the object graph where needed."""
        keys = {name: name for name in self._names if reader.has(name)}
        missing = [name for name in self._names if name not in keys]
        if not missing:
            return keys
        if not reader.has(OBJECT_GRAPH_KEY):
            raise CheckpointKeyError(
                f"Restoring from checkpoint failed. This is most likely due to a Variable name or other "
                f"graph key that is missing from the checkpoint. Please ensure that you have not altered "
                f"the variable names expected based on the checkpoint. Not found in {prefix!r}: {missing}"
            )
        _log.warning(
            "Restoring an object-based checkpoint using a name-based Saver. This may be somewhat fragile; "
            "consider loading object-based checkpoints using trackpoint.Checkpoint()."
        )
        by_full_name = _object_graph_names(reader)
        still = []
        for name in missing:
            key = by_full_name.get(name)
            if key is None or not reader.has(key):
                still.append(name)
            else:
                keys[name] = key
        if still:
            known = sorted(by_full_name)[:10]
            raise CheckpointKeyError(
                f"Restoring from checkpoint failed. {prefix!r} is an object-based checkpoint and the "
                f"variable names {still} are neither keys in it nor `full_name`s in its object graph "
                f"(some names it knows: {known}). This is most likely due to a Variable name that changed "
                "since the checkpoint was written; restore it with trackpoint.Checkpoint, which matches "
                "variables by their place in the object graph instead of by name."
            )
        return keys

    # -------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the storage backends this saver opened (one per directory and options).

        Saving or restoring afterwards opens them again. Without ``close``
        they are closed when the saver is garbage collected; ``with
        Saver(...) as saver:`` closes at the end of the block.
        """
        self._backends.close()

    def __enter__(self) -> Saver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Saver({self._names!r}, max_to_keep={self._max_to_keep!r})"


def _check_fits(entry: _Entry, info: TensorInfo, key: str, prefix: str, reshape: bool = False) -> TensorSlice | None:
    """Check that the stored ``info`` fits ``entry``'s variable; return the slice of it to read (``None``: all).

    A variable holding a slice needs the stored tensor to have its
    ``full_shape``. One given whole under a dict name (TensorFlow saves it
    whole there) restores from a tensor of its own shape as any variable, and
    else reads its slice when the tensor has its ``full_shape``.
    """
    var = entry.var
    if info.dtype != var.dtype:
        raise DTypeMismatchError(
            f"Restoring from checkpoint failed. This is most likely due to a mismatch between the current "
            f"variables and the checkpoint: {key!r} in {prefix!r} has dtype {info.dtype}, Variable "
            f"{var.name!r} has dtype {var.dtype}"
        )
    stored = tuple(info.shape)
    part = entry.part
    if part is not None:
        if stored == part.full_shape:
            return part
        raise ShapeMismatchError(
            f"Restoring from checkpoint failed. This is most likely due to a mismatch between the current "
            f"variables and the checkpoint: {key!r} in {prefix!r} has shape {stored}, Variable {var.name!r} "
            f"holds the slice {part.spec!r} of a tensor of shape {part.full_shape} (its save_slice_info)"
        )
    if stored == tuple(var.shape):
        return None
    sliced = var.save_slice_info
    if sliced is not None and stored == sliced.full_shape:
        return sliced.slice
    if reshape and math.prod(stored) == math.prod(var.shape):
        return None
    hint = (
        f" and {math.prod(stored)} elements against {math.prod(var.shape)}, so even reshape=True cannot restore it"
        if reshape
        else "; Saver(reshape=True) restores a value of another shape with as many elements"
    )
    held = "" if sliced is None else f" (a slice of a tensor of shape {sliced.full_shape})"
    raise ShapeMismatchError(
        f"Restoring from checkpoint failed. This is most likely due to a mismatch between the current "
        f"variables and the checkpoint: {key!r} in {prefix!r} has shape {stored}, Variable "
        f"{var.name!r} has shape {tuple(var.shape)}{held}{hint}"
    )


def _buffer_in_shape(buffer: np.ndarray[Any, Any] | None, shape: Sequence[int]) -> np.ndarray[Any, Any] | None:
    """``buffer`` itself, or a view of it in ``shape`` (never a copy: reads must land in the variable)."""
    if buffer is None or tuple(buffer.shape) == tuple(shape):
        return buffer
    view = buffer.view()
    try:
        view.shape = tuple(shape)  # raises instead of copying a non-contiguous buffer
    except AttributeError:
        return None
    return view


def _as_path(path: Any, what: str) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TrackableError(f"{what} must be a non-empty str or os.PathLike, got {path!r}")
    return path


def _as_step(step: Any) -> int:
    value = step.numpy() if hasattr(step, "numpy") else step
    arr = np.asarray(value)
    if arr.shape != () or arr.dtype.kind not in "iu":
        raise TrackableError(f"global_step must be an integer or an integer scalar Variable, got {step!r}")
    return int(arr)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] if _paths.scheme(path) else os.path.basename(path)


def _tf1_save(
    sess: Any,
    save_path: str | os.PathLike[str],
    global_step: Any = None,
    latest_filename: str | None = None,
    meta_graph_suffix: str = "meta",
    write_meta_graph: bool = True,
    write_state: bool = True,
    strip_default_attrs: bool = False,
    save_debug_info: bool = False,
    *,
    options: CheckpointOptions | None = None,
) -> None:
    """TensorFlow 1's ``Saver.save`` arguments (only bound, never called)."""


def _tf1_restore(sess: Any, save_path: str | os.PathLike[str] | None) -> None:
    """TensorFlow 1's ``Saver.restore`` arguments (only bound, never called)."""


_TF1_SAVE: Final = inspect.signature(_tf1_save)
_TF1_RESTORE: Final = inspect.signature(_tf1_restore)


# ------------------------------------------------------------------ object-based savers
class TrackableSaver:
    """Save and restore the object graph of a root object (``tf.compat.v1.train``'s ``TrackableSaver``).

    What :class:`~trackpoint.Checkpoint` uses underneath, in TensorFlow 1
    code: ``save`` writes an object-based checkpoint, numbered with
    ``checkpoint_number``, without a save counter or a state file; ``restore``
    matches the checkpoint's object graph as ``Checkpoint.restore`` does.

    Parameters
    ----------
    graph_view
        The root :class:`~trackpoint.Trackable` (TensorFlow 1's
        ``CheckpointableSaver(root)``) or an ``ObjectGraphView`` of it.
    options
        Backend choice and storage options for every save and restore.
    """

    def __init__(self, graph_view: Any, *, options: CheckpointOptions | None = None) -> None:
        from trackpoint.graph import ObjectGraphView
        from trackpoint.trackable import Trackable

        if isinstance(graph_view, Trackable):
            graph_view = ObjectGraphView(graph_view)
        if not isinstance(graph_view, ObjectGraphView):
            raise NotTrackableError(
                "TrackableSaver needs the root Trackable (or an ObjectGraphView of it), got "
                f"{type(graph_view).__name__}"
            )
        self._view = graph_view
        self._options = options
        self._backends = _resolve.Backends()

    @_gc.full_collections_deferred()
    def save(
        self,
        file_prefix: str | os.PathLike[str],
        checkpoint_number: int | Any | None = None,
        session: Any = None,
        options: CheckpointOptions | None = None,
    ) -> str:
        """Write the graph at ``file_prefix``, or ``<file_prefix>-<checkpoint_number>``.

        As in TensorFlow, a ``checkpoint_number`` of 0 (or ``None``) adds no
        suffix. ``session`` is accepted and ignored. No state file is written.

        Returns
        -------
        str
            The checkpoint prefix written.
        """
        del session  # eager: nothing to run
        from trackpoint.checkpoint import write_items

        prefix = _as_path(file_prefix, "file_prefix")
        number = _as_step(checkpoint_number) if checkpoint_number is not None else 0
        if number:
            prefix = f"{prefix}-{number}"
        chosen = options or self._options
        # Synchronous, as TensorFlow 1's: saying so beats a silently synchronous save (and there is no sync()).
        _async.refuse(chosen, "TrackableSaver.save")
        backend = _resolve.writer(self._backends.store(prefix, chosen))
        _resolve.refuse_shadow(prefix, chosen, backend, "TrackableSaver.save")
        backend.save(prefix, write_items(self._view), chosen, overwrite=True)
        return prefix

    @_gc.full_collections_deferred()
    def restore(self, save_path: str | os.PathLike[str] | None, options: CheckpointOptions | None = None) -> Any:
        """Restore the graph from ``save_path`` (a prefix or a directory); ``None`` initializes only.

        Returns
        -------
        LoadStatus
            ``CheckpointLoadStatus``, ``NameBasedSaverStatus`` for a
            checkpoint without an object graph, or ``InitializationOnlyStatus``
            for ``None``, as ``Checkpoint.restore``.
        """
        from trackpoint.checkpoint import _read_object_graph
        from trackpoint.restore import (
            CheckpointLoadStatus,
            InitializationOnlyStatus,
            RestoreCoordinator,
            restore_by_name,
            restore_root,
        )
        from trackpoint.trackable import next_uid

        if save_path is None:
            return InitializationOnlyStatus(self._view, next_uid())
        path, reader = self._backends.open_checkpoint(os.fspath(save_path), options or self._options)
        try:
            proto = _read_object_graph(reader)
        except BaseException:
            reader.close()
            raise
        if proto is None:
            return restore_by_name(reader, self._view, path)
        coordinator = RestoreCoordinator(proto, reader, self._view, path)
        restore_root(coordinator)
        return CheckpointLoadStatus(coordinator, self._view)

    def close(self) -> None:
        """Close the storage backends this saver opened."""
        self._backends.close()


#: TensorFlow 1.x's name of :class:`TrackableSaver`.
CheckpointableSaver = TrackableSaver


class FrozenSaver:
    """Saves the values of an object graph frozen when it was created; see :func:`frozen_saver`."""

    def __init__(self, root_trackable: Any) -> None:
        from trackpoint.graph import ObjectGraphView, serialize_object_graph
        from trackpoint.trackable import Trackable

        if not isinstance(root_trackable, Trackable):
            raise NotTrackableError(f"frozen_saver needs a Trackable root, got {type(root_trackable).__name__}")
        serialized = serialize_object_graph(ObjectGraphView(root_trackable))
        self._graph = serialized.proto.SerializeToString()
        # (object, {attribute: checkpoint key}) per node with values, fixed now.
        self._nodes = [
            (obj, {a.name: a.checkpoint_key for a in node.attributes})
            for obj, node in zip(serialized.nodes, serialized.proto.nodes, strict=False)
            if node.attributes
        ]
        # The types of the frozen graph's Python numbers (an entry beside the graph, see PYTHON_NUMBERS_KEY),
        # saved with every checkpoint so that load_tree reads them as numbers.
        self._types = [WriteItem(key, array) for key, array in serialized.tensors if key == PYTHON_NUMBERS_KEY]
        self._backends = _resolve.Backends()

    @_gc.full_collections_deferred()
    def save(self, file_prefix: str | os.PathLike[str], options: CheckpointOptions | None = None) -> str:
        """Write the frozen graph's current values at exactly ``file_prefix``; return it.

        Raises
        ------
        TrackableError
            An object no longer has an attribute it had when frozen.
        """
        from trackpoint.graph import saved_array
        from trackpoint.trackable import make_saveable, serialized_refusal, uses_saveables

        prefix = _as_path(file_prefix, "file_prefix")
        items: list[WriteItem] = []
        for obj, attributes in self._nodes:
            if uses_saveables(obj):
                factories = obj._gather_saveables_for_checkpoint()
                for attr, key in attributes.items():
                    for spec in make_saveable(obj, attr, self._factory(obj, factories, attr), key).specs:
                        items.append(WriteItem(spec.name, saved_array(spec.tensor, spec.name)))
                continue
            tensors = obj._serialize_to_tensors()
            if type(tensors) is not dict and not isinstance(tensors, Mapping):
                raise serialized_refusal(obj, tensors, "")
            for attr, key in attributes.items():
                items.append(WriteItem(key, saved_array(self._factory(obj, tensors, attr), key)))
        graph = np.empty((), dtype=object)
        graph[()] = self._graph
        items += self._types
        items.append(WriteItem(OBJECT_GRAPH_KEY, graph))
        _async.refuse(options, "FrozenSaver.save")
        backend = _resolve.writer(self._backends.store(prefix, options))
        _resolve.refuse_shadow(prefix, options, backend, "FrozenSaver.save")
        backend.save(prefix, items, options, overwrite=True)
        return prefix

    @staticmethod
    def _factory(obj: Any, values: Mapping[str, Any], attr: str) -> Any:
        if attr not in values:
            raise TrackableError(
                f"{type(obj).__name__} no longer has the attribute {attr!r} it had when frozen_saver() was "
                "called; a frozen saver saves the graph as it was, create a new one after structural changes"
            )
        return values[attr]

    @_gc.full_collections_deferred()
    def restore(self, file_prefix: str | os.PathLike[str], options: CheckpointOptions | None = None) -> None:
        """Restore every frozen object from ``file_prefix``, by checkpoint key (no fuzzy matching).

        Every value is checked (present, dtype, shape) before any is written.

        Raises
        ------
        CheckpointKeyError
            The checkpoint lacks a key of the frozen graph.
        AssignmentError
            A value does not fit its object.
        """
        from trackpoint.trackable import SaveableObject, Trackable, make_saveable, uses_saveables

        prefix = _as_path(file_prefix, "file_prefix")
        backend = self._backends.store(prefix, options)
        with backend.open_reader(prefix) as reader:
            missing = sorted(k for _, attributes in self._nodes for k in attributes.values() if not reader.has(k))
            if missing:
                raise CheckpointKeyError(
                    f"{prefix!r} does not hold the object graph frozen by frozen_saver(): missing {missing[:10]}; "
                    "restore it with trackpoint.Checkpoint, which matches objects instead of keys"
                )
            plans: list[tuple[Trackable, dict[str, str], list[SaveableObject] | None]] = []
            for obj, attributes in self._nodes:
                if uses_saveables(obj):
                    factories = obj._gather_saveables_for_checkpoint()
                    saveables = [
                        make_saveable(obj, a, self._factory(obj, factories, a), k) for a, k in attributes.items()
                    ]
                    for spec in (spec for saveable in saveables for spec in saveable.specs):
                        stored = reader.info(spec.name).dtype
                        if spec.dtype is not None and stored != spec.dtype:
                            raise DTypeMismatchError(
                                f"cannot restore {spec.name!r} of {prefix!r} into {type(obj).__name__}: the "
                                f"checkpoint holds dtype {stored}, the saveable's spec has dtype {spec.dtype}"
                            )
                    plans.append((obj, attributes, saveables))
                    continue
                obj._check_restore_tensors({a: reader.info(k) for a, k in attributes.items()}, attributes)
                plans.append((obj, attributes, None))
            # In the order Checkpoint.restore applies them (torch modules filled on 'meta' before optimizers).
            by_object = {id(plan[0]): plan for plan in plans}
            for target, keys, planned in (by_object[id(obj)] for obj in order_restores([p[0] for p in plans])):
                if planned is None:
                    target._restore_from_tensors({a: reader.read(k) for a, k in keys.items()})
                    continue
                for saveable in planned:
                    saveable.restore([reader.read(spec.name) for spec in saveable.specs], None)

    def close(self) -> None:
        """Close the storage backends this saver opened."""
        self._backends.close()


def frozen_saver(root_trackable: Any) -> FrozenSaver:
    """A saver for the object graph of ``root_trackable`` as it is now (``tf.compat.v1.train``'s ``frozen_saver``).

    Its checkpoints are object-based (``Checkpoint.restore`` reads them) but
    reflect only the values of the objects present now, never later
    structural changes; its ``restore`` requires exactly those checkpoint keys.

    Raises
    ------
    TrackableError
        The graph cannot be saved as it is (for example a renumbered list).
    """
    return FrozenSaver(root_trackable)
