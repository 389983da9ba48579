"""``Checkpoint``: groups trackables and saves/restores them through a storage backend.

The object-graph work happens in :mod:`trackpoint.graph` and
:mod:`trackpoint.restore`; this module adds I/O through the storage contract
(:func:`trackpoint._resolve.open_backend` and :meth:`StorageBackend.save` to
write, :func:`trackpoint._resolve.open_checkpoint` to read a prefix or a
directory in whatever format it is stored) and the ``save_counter``/state-file
bookkeeping of ``tf.train.Checkpoint``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from trackpoint import _resolve
from trackpoint.autotrackable import AutoTrackable
from trackpoint.data_structures import is_numpy_value
from trackpoint.errors import CheckpointNotFoundError, InvalidCheckpointError, NameConflictError, TrackableError
from trackpoint.graph import ObjectGraphView, serialize_object_graph
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.restore import (
    CheckpointLoadStatus,
    InitializationOnlyStatus,
    LoadStatus,
    NameBasedSaverStatus,
    RestoreCoordinator,
    restore_by_name,
    restore_root,
)
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, CheckpointReader, WriteItem
from trackpoint.trackable import Trackable, TrackableReference, next_uid
from trackpoint.variables import Variable

__all__ = ["Checkpoint", "write_items"]


def write_items(view: ObjectGraphView) -> list[WriteItem]:
    """The tensors one save writes, in TensorFlow's order, object graph last."""
    serialized = serialize_object_graph(view)
    items = [WriteItem(key, array) for key, array in serialized.tensors]
    graph = np.empty((), dtype=object)
    graph[()] = serialized.proto.SerializeToString()
    items.append(WriteItem(OBJECT_GRAPH_KEY, graph))
    return items


def _read_object_graph(reader: CheckpointReader) -> pb.TrackableObjectGraph | None:
    """The checkpoint's object graph, or ``None`` for a name-based checkpoint."""
    if not reader.has(OBJECT_GRAPH_KEY):
        return None
    raw = np.asarray(reader.read(OBJECT_GRAPH_KEY), dtype=object)
    proto = pb.TrackableObjectGraph()
    try:
        proto.ParseFromString(bytes(raw.reshape(-1)[0]))
    except Exception as exc:
        raise InvalidCheckpointError(
            f"the object graph stored in {reader.prefix!r} under {OBJECT_GRAPH_KEY!r} cannot be parsed: {exc}"
        ) from exc
    if not proto.nodes:
        raise InvalidCheckpointError(f"the object graph stored in {reader.prefix!r} has no nodes")
    return proto


class Checkpoint(AutoTrackable):
    """Groups trackable objects, saving and restoring them (``tf.train.Checkpoint``).

    Parameters
    ----------
    root
        Optional root object: its dependencies become the checkpoint's top
        level, so the checkpoint matches one written for ``root`` directly.
    **kwargs
        Trackables (or lists/dicts/tuples of them) saved as dependencies named
        by the keyword. Sorted by name in the saved graph; ``save_counter``
        comes after them.

    Raises
    ------
    TrackableError
        ``root`` or a keyword value is not trackable (the message names it).
    NameConflictError
        With ``root``, a keyword names an existing, different dependency of
        ``root``.

    Examples
    --------
    >>> import trackpoint as tp
    >>> ckpt = tp.Checkpoint(v=tp.Variable([1.0, 2.0]))
    >>> path = ckpt.save("memory://doc/ckpt")
    >>> path
    'memory://doc/ckpt-1'
    >>> ckpt.restore(path).assert_consumed()  # doctest: +ELLIPSIS
    <trackpoint.restore.CheckpointLoadStatus object at ...>
    """

    # Everything handed to a checkpoint is saved: refuse values it would skip.
    _refuse_unsaved_values = True

    def __init__(self, root: Trackable | None = None, **kwargs: Any) -> None:
        self._self_save_counter: Variable | None = None
        self._self_root: Trackable | None = root
        attached: list[TrackableReference] | None = None
        if root is not None:
            _assert_trackable(root, "root")
            root._maybe_initialize_trackable()
            attached = []
            kwargs["root"] = root
            existing = root._lookup_dependency("save_counter")
            if isinstance(existing, Variable):
                self._self_save_counter = existing
        for name, value in sorted(kwargs.items(), key=lambda item: item[0]):
            if not isinstance(value, (dict, list, tuple)) and not is_numpy_value(value):
                _assert_trackable(value, name)
            setattr(self, name, value)
            converted = _assert_trackable(self._lookup_dependency(name), name)
            if root is not None and attached is not None:
                child = root._lookup_dependency(name)
                if child is None:
                    attached.append(TrackableReference(name, converted))
                elif child is not converted:
                    raise NameConflictError(
                        f"Cannot create a Checkpoint with keyword argument {name!r} if root.{name} already exists "
                        "(and is a different object)."
                    )
        self._self_attached = attached
        self._self_view = ObjectGraphView(root if root is not None else self, attached)

    # ---------------------------------------------------------- save_counter
    @property
    def save_counter(self) -> Variable:
        """An int64 variable incremented by :meth:`save`, created on first use."""
        self._maybe_create_save_counter()
        assert self._self_save_counter is not None
        return self._self_save_counter

    def _maybe_create_save_counter(self) -> None:
        if self._self_save_counter is not None:
            return
        counter = self.add_variable("save_counter", shape=(), dtype=np.int64, initializer=0, trainable=False)
        self._self_save_counter = counter
        if self._self_attached is not None and self._self_root is not None:
            # With root=, the counter is attached to the root's level of the graph;
            # a restore that already ran queued its value on the root.
            self._self_attached.append(TrackableReference("save_counter", counter))
            self._self_view.attached_dependencies.append(TrackableReference("save_counter", counter))
            waiting = self._self_root._deferred_dependencies.pop("save_counter", [])
            for position in sorted(waiting, key=lambda p: p.restore_uid, reverse=True):
                position.restore(counter)

    # ------------------------------------------------------------------ save
    def write(self, file_prefix: str | os.PathLike[str], options: CheckpointOptions | None = None) -> str:
        """Write a checkpoint at exactly ``file_prefix``; no counter, no state file.

        Returns
        -------
        str
            ``file_prefix``.
        """
        prefix = os.fspath(file_prefix)
        items = write_items(self._self_view)
        backend = _resolve.open_backend(prefix, options)
        backend.save(prefix, items, options, overwrite=True)
        return prefix

    def save(self, file_prefix: str | os.PathLike[str], options: CheckpointOptions | None = None) -> str:
        """Increment :attr:`save_counter`, write ``<file_prefix>-<N>`` and update the state file.

        Returns
        -------
        str
            The path written, e.g. ``"/run/ckpt-3"``; pass it to :meth:`restore`.
        """
        prefix = os.fspath(file_prefix)
        number = int(self.save_counter.assign_add(1).numpy())
        path = self.write(f"{prefix}-{number}", options)
        from trackpoint.state import update_checkpoint_state

        backend = _resolve.open_backend(path, options)
        update_checkpoint_state(backend, backend.dirname(path), path, all_model_checkpoint_paths=[path])
        return path

    # --------------------------------------------------------------- restore
    def read(self, save_path: str | os.PathLike[str], options: CheckpointOptions | None = None) -> LoadStatus:
        """Restore a checkpoint written by :meth:`write` (``save_counter`` is not expected).

        ``save_path`` is a checkpoint prefix or a directory, whose latest
        checkpoint (:func:`trackpoint.latest_checkpoint`) is then read; a
        committed prefix wins over a directory of the same name. Without a
        backend chosen in ``options``, a checkpoint of any format stored
        there is found, whatever options it was saved with.

        Returns
        -------
        CheckpointLoadStatus or NameBasedSaverStatus
            The latter for checkpoints without an object graph.

        Raises
        ------
        CheckpointNotFoundError
            Nothing is committed at ``save_path`` and it is no directory
            holding checkpoints.
        AssignmentError
            A value does not fit its object; no object was changed.
        """
        try:
            path, reader = _resolve.open_checkpoint(os.fspath(save_path), options)
        except CheckpointNotFoundError as exc:
            raise CheckpointNotFoundError(
                f"Error when restoring from checkpoint {os.fspath(save_path)!r}: {exc}\nPlease double-check that "
                "the path is correct. You may be missing the checkpoint suffix (e.g. the '-1' in "
                "'path/to/ckpt-1'); trackpoint.latest_checkpoint(directory) returns the newest checkpoint of a "
                "directory."
            ) from exc
        try:
            proto = _read_object_graph(reader)
        except BaseException:
            reader.close()
            raise
        if proto is None:
            return restore_by_name(reader, self._self_view, path)
        coordinator = RestoreCoordinator(proto, reader, self._self_view, path)
        restore_root(coordinator)
        return CheckpointLoadStatus(coordinator, self._self_view)

    def restore(self, save_path: str | os.PathLike[str] | None, options: CheckpointOptions | None = None) -> LoadStatus:
        """Restore a checkpoint written by :meth:`save`; values for objects created later are applied then.

        ``save_path`` is a prefix (the path :meth:`save` returned) or a
        directory, whose latest checkpoint is restored, as for :meth:`read`.
        ``save_path=None`` (as from ``latest_checkpoint`` on an empty
        directory) returns an :class:`InitializationOnlyStatus`.

        Raises
        ------
        CheckpointNotFoundError
            Nothing is committed at ``save_path`` and it is no directory
            holding checkpoints; the message reminds about the ``-N`` suffix.
        AssignmentError
            A value does not fit its object; no object was changed.
        """
        if save_path is None:
            status: LoadStatus = InitializationOnlyStatus(self._self_view, next_uid())
        else:
            status = self.read(save_path, options)
        # Created after the restore so that a saved counter is restored on creation.
        self._maybe_create_save_counter()
        if isinstance(status, NameBasedSaverStatus):
            status.add_to_optionally_restored(self.save_counter)
        return status


def _assert_trackable(obj: Any, name: str) -> Trackable:
    if not isinstance(obj, Trackable):
        raise TrackableError(
            f"`Checkpoint` was expecting {name} to be a trackable object (an object derived from "
            f"trackpoint.Trackable, a numeric numpy value, or a list/dict/tuple of them), got "
            f"{type(obj).__name__}: {obj!r:.80}"
        )
    return obj
