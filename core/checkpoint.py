"""``Checkpoint``: groups trackables and saves/restores them through a storage backend.

The object-graph work happens in :mod:`trackpoint.graph` and
:mod:`trackpoint.restore`; this module adds I/O through the storage contract
(:meth:`StorageBackend.save` to write, :func:`trackpoint._resolve.open_checkpoint`
to read a prefix or a directory in whatever format it is stored) and the
``save_counter``/state-file bookkeeping of ``tf.train.Checkpoint``. A
checkpoint holds one backend per location (:class:`trackpoint._resolve.Backends`)
until :meth:`Checkpoint.close`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Final, TypeAlias

import numpy as np

from trackpoint import _array_values, _async, _gc, _paths, _resolve, _signal_safe, observe
from trackpoint._array_values import PYTHON_NUMBERS
from trackpoint.autotrackable import AutoTrackable
from trackpoint.data_structures import NoDependency, is_array_value, is_pytree_node
from trackpoint.distributed._driver import coordinator_of, on_root, together
from trackpoint.errors import (
    ArgumentTypeError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    ForeignCheckpointError,
    IncompletePartitionError,
    InvalidArgumentError,
    InvalidCheckpointError,
    NameConflictError,
    TrackableError,
)
from trackpoint.graph import ObjectGraphView, node_names, serialize_object_graph
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
from trackpoint.stateful import is_stateful
from trackpoint.storage import (
    OBJECT_GRAPH_KEY,
    CheckpointOptions,
    CheckpointReader,
    TensorSlice,
    WriteItem,
    _LazyItem,
    _options_argument,
    _options_refusal,
)
from trackpoint.trackable import Trackable, TrackableReference, dependency_changes, next_uid
from trackpoint.variables import Variable

__all__ = ["Checkpoint", "write_items"]

#: The checkpoint paths ``Checkpoint`` takes: TensorFlow's ``str`` and UTF-8 ``bytes``, and ``os.PathLike``.
PathArgument: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

_log = logging.getLogger("trackpoint")


def write_items(view: ObjectGraphView) -> list[WriteItem]:
    """The tensors one save writes, in TensorFlow's order, object graph last."""
    return _snapshot(view)[0]


@_gc.paused()
def _snapshot(
    view: ObjectGraphView, jax_arrays: list[tuple[Trackable, Any]] | None = None
) -> tuple[list[WriteItem], tuple[Trackable, ...]]:
    """:func:`write_items` and the graph's objects (an async save pins their variables' buffers).

    Nothing else keeps a reference to the arrays when this returns: an async
    save tells the arrays only its items hold from shared ones by that.

    ``jax_arrays``, if given, receives ``(node, array)`` for each JAX array
    saved, and the save is a ``Checkpoint``'s own: JAX arrays are then not
    gathered from their devices here: each item's host copy is made when
    the backend writes it (a synchronous save holds about one at a time) or,
    for an async save, by ``AsyncSaver.start`` before ``save`` returns.
    """
    if jax_arrays is None:
        serialized = serialize_object_graph(view)
        deferred = None
    else:
        with _array_values.saved_jax(defer=True) as (saved, deferred):
            serialized = serialize_object_graph(view)
        jax_arrays.extend(saved)
    slices = serialized.slices or (None,) * len(serialized.tensors)
    if deferred:
        items = [
            _write_item(key, array, s, deferred) for (key, array), s in zip(serialized.tensors, slices, strict=True)
        ]
    else:
        items = [WriteItem(key, array, s) for (key, array), s in zip(serialized.tensors, slices, strict=True)]
    del deferred
    graph = np.empty((), dtype=object)
    graph[()] = serialized.data
    items.append(WriteItem(OBJECT_GRAPH_KEY, graph))
    return items, serialized.nodes


def _write_item(key: str, array: np.ndarray[Any, Any], part: TensorSlice | None, deferred: dict[int, Any]) -> WriteItem:
    """The item writing ``array``: for a JAX array's placeholder (see ``saved_jax``), its host copy made when read."""
    entry = deferred.get(id(array))
    if entry is None or entry[0] is not array:
        return WriteItem(key, array, part)
    _, source, where = entry
    return _LazyItem(key, array, part, make=functools.partial(_array_values.host_copy, source, array.dtype, where))


def _ranks_without_coordinator() -> str | None:
    """The coordinator to pass when this process is one of several of a job, each holding its part; else ``None``.

    One of an initialised torch.distributed group of several ranks, or of a ``jax.distributed`` job of
    several processes (neither torch nor JAX is imported here).
    """
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return (
                "torch.distributed ranks, each holding its part (a DTensor's, say): save with the others, passing "
                "CheckpointOptions(coordinator=TorchCoordinator())"
            )
    except Exception:  # noqa: BLE001 - only a hint depends on it
        pass
    jax = sys.modules.get("jax")
    try:
        if jax is not None and jax.process_count() > 1:
            return (
                "jax.distributed processes, each holding its part of an array spread over them: save with the "
                "others, passing CheckpointOptions(coordinator=JaxCoordinator())"
            )
    except Exception:  # noqa: BLE001 - only a hint depends on it
        pass
    return None


def _with_extra(items: list[WriteItem], extra: Sequence[WriteItem]) -> list[WriteItem]:
    """``items`` (object graph last) with ``extra`` before the object graph, which stays last."""
    return [*items[:-1], *extra, *items[-1:]] if extra else items


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
        Values saved as dependencies named by the keyword: trackables, numeric
        numpy values, torch tensors, JAX arrays, Python numbers, objects with
        ``state_dict()`` and ``load_state_dict()`` (a torch module or
        optimizer), or lists/dicts/tuples of them. Sorted by name in the saved
        graph; ``save_counter`` comes after them.

    Raises
    ------
    TrackableError
        ``root`` or a keyword value is not one of these (the message names it).
    NameConflictError
        With ``root``, a keyword names an existing, different dependency of
        ``root``; or a keyword is the name of one of the checkpoint's own
        attributes (``save``, ``restore``, ``save_counter``, ...), which a
        dependency of that name would hide. Assigning to those names
        (``ckpt.save = value``) is refused the same way.

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
    # Class defaults of what __init__ sets, for a checkpoint built without it (see _check_stale).
    _self_saved_jax: tuple[str, dict[int, weakref.ref[Any]]] | None = None
    _self_stale_warned = False
    # The restore whose restore() created save_counter (after it, as TensorFlow's does), weakly: its status's report
    # of a checkpoint without a counter says so (see restore._unmatched_report).
    _self_counter_made_for: weakref.ref[RestoreCoordinator] | None = None

    def __init__(self, root: Trackable | weakref.ref[Trackable] | None = None, **kwargs: Any) -> None:
        # Before anything is tracked: TensorFlow sets such a keyword as an attribute, which hides the method
        # (`save=...`) or fails on the property (`save_counter=...`).
        for name in sorted(kwargs):
            if name in _OWN_NAMES:
                raise _hides_own_attribute(name, f"Checkpoint({name}=...)")
        self._self_save_counter: Variable | None = None
        # root=weakref.ref(obj), as in TensorFlow: the checkpoint does not keep the root alive.
        self._self_root_ref: weakref.ref[Trackable] | None = None
        if isinstance(root, weakref.ref):
            self._self_root_ref = root
            root = root()
            if root is None:
                raise TrackableError("Checkpoint(root=weakref.ref(...)): the referenced object no longer exists")
        self._self_root: Trackable | None = root if self._self_root_ref is None else None
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
            if name == "root" and self._self_root_ref is not None:
                # Held weakly: `ckpt.root` is the weak reference, and the root's edge to
                # itself is added each time the graph is walked (see _view).
                setattr(self, name, NoDependency(self._self_root_ref))
                continue
            if isinstance(value, NoDependency):
                setattr(self, name, value)  # kept on the checkpoint, unsaved
                continue
            if (
                not isinstance(value, (dict, list, tuple))
                and not is_array_value(value)
                and not is_stateful(value)
                and type(value) not in PYTHON_NUMBERS
                and not is_pytree_node(value)  # a registered JAX pytree node (a train state dataclass)
            ):
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
        # One backend per location, opened on first use and held until close().
        self._self_backends = _resolve.Backends()
        # Async saves of this checkpoint: at most one in flight, failures kept until raised.
        self._self_async = _async.AsyncSaver()
        self._self_view: ObjectGraphView | None = None
        # With a weak root, each walk gets its own view (a view holds its root); the
        # statuses holding one must see a save_counter created afterwards.
        self._self_weak_views: weakref.WeakSet[ObjectGraphView] = weakref.WeakSet()
        # The prefix and JAX arrays of the previous save, by id, weakly (see _check_stale).
        self._self_saved_jax = None
        self._self_stale_warned = False
        if root is not None and self._self_root_ref is None:
            self._self_view = ObjectGraphView(root, attached)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN_NAMES:
            if callable(value) and callable(getattr(type(self), name, None)):
                # Replacing a method by a callable (unittest.mock.patch.object(ckpt, "save")) is monkeypatching,
                # not state: set it untracked, so it is neither saved nor taken for a Stateful object (a mock is).
                object.__setattr__(self, name, value)
                return
            # A dependency named `save` would hide the method from every later caller, the manager's included.
            raise _hides_own_attribute(name, f"Checkpoint.{name} = ...")
        super().__setattr__(name, value)

    def _root_object(self) -> Trackable | None:
        """The ``root`` given (dereferenced when it was a weak reference), or ``None``."""
        if self._self_root_ref is None:
            return self._self_root
        root = self._self_root_ref()
        if root is None:
            raise TrackableError(
                "the root object of this Checkpoint, given as a weak reference, no longer exists; keep a "
                "reference to it for as long as the checkpoint is used"
            )
        return root

    def _view(self) -> ObjectGraphView:
        """The graph saved and restored: from ``root`` (or this checkpoint), with the attached dependencies."""
        if self._self_view is not None:
            return self._self_view
        if self._self_attached is None:
            # Rooted at this checkpoint: a view per walk, so the checkpoint holds no
            # reference cycle through its own view and is freed without the cycle collector.
            return ObjectGraphView(self)
        root = self._root_object()
        assert root is not None and self._self_attached is not None
        view = ObjectGraphView(root, [TrackableReference("root", root), *self._self_attached])
        self._self_weak_views.add(view)
        return view

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
        root = self._root_object()
        if self._self_attached is not None and root is not None:
            # With root=, the counter is attached to the root's level of the graph;
            # a restore that already ran queued its value on the root.
            self._self_attached.append(TrackableReference("save_counter", counter))
            for view in [self._self_view, *self._self_weak_views]:
                if view is not None:
                    view.attached_dependencies.append(TrackableReference("save_counter", counter))
            waiting = root._deferred_dependencies.pop("save_counter", [])
            for position in sorted(waiting, key=lambda p: p.restore_uid, reverse=True):
                position.restore(counter)

    # ------------------------------------------------------------------ save
    @_signal_safe.guarded
    def write(self, file_prefix: PathArgument, options: CheckpointOptions | Any = None, session: Any = None) -> str:
        """Write a checkpoint at exactly ``file_prefix``; no counter, no state file.

        ``session`` (``tf.compat.v1.train.Checkpoint.write(file_prefix, session)``,
        also accepted in the place of ``options``) is ignored, as eager
        TensorFlow ignores it.

        Events (:mod:`trackpoint.observe`) report the save to observers, the
        log and a progress bar; after the commit the write callbacks of
        ``options`` run (``experimental_write_callbacks``).

        With ``CheckpointOptions(enable_async=True)`` it returns once the
        values are snapshotted and writes in the background (see :meth:`sync`).

        ``file_prefix`` is a local path or URL: a ``str``, ``bytes`` (decoded
        as UTF-8, as TensorFlow does) or an ``os.PathLike`` (``pathlib.Path``).

        Returns
        -------
        str
            ``file_prefix``, as a ``str``.

        Raises
        ------
        ArgumentTypeError
            ``file_prefix`` is no path, or ``options`` neither
            ``CheckpointOptions`` nor ``None`` (nor a TensorFlow 1 session).
        InvalidArgumentError
            ``file_prefix`` is empty, ends with ``/`` or names only a bucket
            or store root.
        """
        started = time.perf_counter()
        prefix = _save_prefix(file_prefix, "Checkpoint.write")
        options = _options_or_session(options, session, "Checkpoint.write")
        self._write_with(prefix, options, (), started=started)
        return prefix

    def _write_with(
        self,
        prefix: str,
        options: CheckpointOptions | None,
        extra: Sequence[WriteItem],
        *,
        started: float,
        on_exists: Callable[[CheckpointExistsError], BaseException] | None = None,
    ) -> None:
        """:meth:`write` at the checked ``prefix``, with ``extra`` items committed together with the values.

        ``CheckpointManager.save`` passes the metrics of the checkpoint this way, so they are committed with
        it (one commit point, deleted with it) under a key outside the object graph, which restores ignore.
        Without ``on_exists`` the save replaces what is committed at ``prefix``; with it, it commits only if
        nothing is by then (the store's create-only commit) and raises what ``on_exists`` makes of the store's
        refusal (the refusal itself if it returns that).
        """
        self._self_async.begin(options)
        if _async.enabled(options):
            self._write_async(prefix, options, then=None, started=started, extra=extra, on_exists=on_exists)
        else:
            with _gc.full_collections_deferred():
                with self._failing_together(prefix, options):
                    arrays: list[tuple[Trackable, Any]] = []
                    items = _with_extra(_snapshot(self._view(), arrays)[0], extra)
                    self._check_stale(prefix, arrays)
                    del arrays
                self._write_items(prefix, items, options, started=started, on_exists=on_exists)

    def _fail_coordinated(self, prefix: str, options: CheckpointOptions | None, failure: BaseException) -> None:
        """Take part in a coordinated save that failed on this rank before it began, so it fails on every rank.

        A rank whose objects fail to give their values (a ``state_dict()`` raising, a value refused) or
        whose save is refused must still take part: had it only raised, the others' save would pair up with
        this rank's next one and commit values of two different steps. Returns without doing anything
        outside a coordinated save; the caller raises ``failure`` then.
        """
        if coordinator_of(_async.storage_options_of(options)) is not None:
            self._write_items(prefix, [], options, started=time.perf_counter(), failure=failure)

    @contextlib.contextmanager
    def _failing_together(
        self,
        prefix: str,
        options: CheckpointOptions | None,
        errors: type[Exception] | tuple[type[Exception], ...] = Exception,
    ) -> Iterator[None]:
        """Run the block; an ``errors`` it raises fails the coordinated save on every rank (see above), then rises."""
        try:
            yield
        except errors as exc:
            self._fail_coordinated(prefix, options, exc)
            raise

    def _check_stale(self, prefix: str, arrays: list[tuple[Trackable, Any]]) -> None:
        """Warn (once per checkpoint) when a save writes exactly the JAX arrays the previous save wrote.

        JAX arrays are immutable: a training step makes new ones, so a save that finds every JAX array it
        saves to be the very object the previous save of this checkpoint saved almost always comes from a
        loop that rebinds ``state = update(state)`` without assigning the new tree (``ckpt.state = state``),
        and saves the first state for ever. Identity only, against weak references (the old arrays are
        not kept alive): saves without JAX arrays pay nothing, and any new array (a step counter) means
        the state moved. A save to the prefix the previous one wrote (a manager saving a step number
        again) is a deliberate re-save.
        """
        if self._self_stale_warned:
            return
        previous = self._self_saved_jax
        if not arrays:
            self._self_saved_jax = None
            return
        try:
            # Weak references to JAX arrays: the old state's device memory is not kept alive by this record.
            self._self_saved_jax = (prefix, {id(array): weakref.ref(array) for _, array in arrays})
        except TypeError:  # an array type without weak references: not compared, never kept alive
            self._self_saved_jax = None
            return
        if previous is None or previous[0] == prefix:
            return
        refs = previous[1]
        for _, array in arrays:
            ref = refs.get(id(array))
            if ref is None or ref() is not array:
                return
        self._self_stale_warned = True
        _warn_stale(self._view(), prefix, previous[0], arrays)

    # ------------------------------------------------------------ async saves
    def _write_items(
        self,
        prefix: str,
        items: list[WriteItem],
        options: CheckpointOptions | None,
        *,
        started: float,
        events: observe.SaveEvents | None = None,
        failure: BaseException | None = None,
        on_exists: Callable[[CheckpointExistsError], BaseException] | None = None,
    ) -> None:
        """The save driver: write and commit ``items`` at ``prefix``, then run the write callbacks.

        A synchronous save calls it in the caller's thread, an async save in
        its writer thread, with the snapshot's items and the events it
        started when it was called. ``failure``: collecting the items failed
        on this rank of a coordinated save (see :meth:`_fail_coordinated`).
        """
        options = _async.storage_options_of(options)
        backend = _resolve.writer(self._self_backends.store(prefix, options))
        if events is None:
            events = observe.save_events(
                prefix, operation="checkpoint", backend=backend.name, items=items, options=options, started=started
            )
        coordinator = coordinator_of(options)
        if coordinator is not None and options is not None:
            from trackpoint.distributed._save import save as save_together

            def save() -> None:
                # Every rank reports the save it takes part in (sizes: the whole checkpoint's).
                with _refused_as(on_exists):
                    save_together(
                        coordinator, backend, prefix, items, options, overwrite=on_exists is None, failure=failure
                    )

        else:

            def save() -> None:
                # Inside the events: a refused save is reported as failed, not left started.
                _resolve.refuse_shadow(prefix, options, backend, "Checkpoint.write")
                try:
                    with _refused_as(on_exists):
                        backend.save(prefix, items, options, overwrite=on_exists is None)
                except IncompletePartitionError as exc:
                    hint = _ranks_without_coordinator()
                    if hint is None:
                        raise
                    raise IncompletePartitionError(
                        f"{exc}; this process is one of several {hint} on every rank",
                        backend=exc.backend,
                        url=exc.url,
                        key=exc.key,
                    ) from exc

        events.run(save)
        observe.run_write_callbacks(options, prefix)

    def _write_async(
        self,
        prefix: str,
        options: CheckpointOptions,
        then: Callable[[], None] | None,
        *,
        started: float,
        extra: Sequence[WriteItem] = (),
        on_exists: Callable[[CheckpointExistsError], BaseException] | None = None,
    ) -> None:
        """Snapshot the values and write them at ``prefix`` in the background, then run ``then``.

        The caller has called ``self._self_async.begin(options)``. Used by
        :meth:`write`, :meth:`save` and ``CheckpointManager.save`` (whose
        ``then`` records the checkpoint and applies retention after the commit).
        With a coordinator, each rank's writer thread runs the collective save.
        """
        with self._failing_together(prefix, options):
            arrays: list[tuple[Trackable, Any]] = []
            items, nodes = _snapshot(self._view(), arrays)
            self._check_stale(prefix, arrays)
            del arrays
        items = _with_extra(items, extra)
        backend = _resolve.writer(self._self_backends.store(prefix, _async.storage_options_of(options)))
        events = observe.save_events(
            prefix,
            operation="checkpoint",
            backend=backend.name,
            items=items,
            options=options,
            is_async=True,
            started=started,
        )
        del backend

        def ready() -> None:
            events.blocking_seconds = time.perf_counter() - started

        self._self_async.start(
            items,
            nodes,
            f"the async save of {prefix!r}",
            options,
            lambda snapshot: self._write_items(
                prefix, snapshot, options, started=started, events=events, on_exists=on_exists
            ),
            then,
            ready=ready,
            prefix=prefix,
        )

    @_signal_safe.guarded
    def sync(self) -> None:
        """Wait until the async save in flight (if any) is written and committed.

        TensorFlow's ``Checkpoint.sync``. Returns at once when no save is in
        flight, and after a synchronous save.

        Raises
        ------
        CheckpointError
            (or whatever the background save raised) The async save failed:
            nothing of it was committed or recorded. Each failure is raised
            once, by this, the next save or the next restore, whichever comes
            first.
        """
        self._self_async.sync()

    @_signal_safe.guarded
    def save(self, file_prefix: PathArgument, options: CheckpointOptions | Any = None, session: Any = None) -> str:
        """Increment :attr:`save_counter`, write ``<file_prefix>-<N>`` and update the state file.

        ``session`` (``tf.compat.v1.train.Checkpoint.save(file_prefix, session)``,
        also accepted in the place of ``options``) is ignored, as eager
        TensorFlow ignores it.

        The write callbacks of ``options`` run after the commit and before the
        state file is updated, as in TensorFlow.

        A synchronous save whose write raises gives its number back
        (``save_counter`` is as before, and the next save reuses the number);
        one that committed keeps it, even if the state file update then
        fails. An async save keeps its number once its background write
        started, whatever becomes of that write.

        ``file_prefix`` is a local path or URL: a ``str``, ``bytes`` (decoded
        as UTF-8, as TensorFlow does) or an ``os.PathLike`` (``pathlib.Path``).

        Returns
        -------
        str
            The path written, e.g. ``"/run/ckpt-3"``; pass it to :meth:`restore`.

        Raises
        ------
        ArgumentTypeError
            ``file_prefix`` is no path, or ``options`` neither
            ``CheckpointOptions`` nor ``None`` (nor a TensorFlow 1 session).
        InvalidArgumentError
            ``file_prefix`` is empty (the checkpoint would be ``-1`` in the
            current directory), ends with ``/`` (a directory), or names only a
            bucket or store root (``s3://bucket``).
        InvalidPathError
            ``file_prefix`` starts with a URL scheme and one slash
            (``s3:/bucket/run``), which would be a local path.
        """
        prefix = _save_prefix(file_prefix, "Checkpoint.save")
        options = _options_or_session(options, session, "Checkpoint.save")
        started = time.perf_counter()
        self._self_async.begin(options)
        counter = self.save_counter
        number = int(counter.assign_add(1).numpy())
        path = f"{prefix}-{number}"
        committed = False

        def record() -> None:
            nonlocal committed
            committed = True
            self._record_saved(path, options)

        try:
            if _async.enabled(options):
                # The state file names the checkpoint only once it is committed.
                self._write_async(path, options, then=record, started=started)
                return path
            self.write(path, options)
            record()
            return path
        except BaseException:
            # Nothing committed and nothing still being written: give the number back.
            if not committed and not self._self_async.busy():
                counter.assign_add(-1)
            raise

    def _record_saved(self, path: str, options: CheckpointOptions | None) -> None:
        """Point the state file of ``path``'s directory at ``path`` (after its commit)."""
        from trackpoint.state import update_checkpoint_state

        options = _async.storage_options_of(options)
        backend = _resolve.writer(self._self_backends.store(path, options))

        def record() -> bytes:
            update_checkpoint_state(backend, backend.dirname(path), path, all_model_checkpoint_paths=[path])
            return b""

        coordinator = coordinator_of(options)
        if coordinator is None:
            record()
        else:  # one rank writes the state file, every rank learns how that went
            on_root(coordinator, record, f"updating the checkpoint state file beside {path!r}")

    # --------------------------------------------------------------- restore
    @_signal_safe.guarded
    def read(self, save_path: PathArgument | None, options: CheckpointOptions | None = None) -> LoadStatus:
        """Restore a checkpoint written by :meth:`write` (``save_counter`` is not expected).

        ``save_path`` is a checkpoint prefix or a directory, whose latest
        checkpoint (:func:`trackpoint.latest_checkpoint`) is then read; a
        committed prefix wins over a directory of the same name. Without a
        backend chosen in ``options``, a checkpoint of any format stored
        there is found, whatever options it was saved with. ``None`` (as
        from ``latest_checkpoint`` on an empty directory) reads nothing, as
        TensorFlow's ``read`` does. A path is a ``str``, ``bytes`` (decoded as
        UTF-8, as TensorFlow does) or an ``os.PathLike`` (``pathlib.Path``).

        Returns
        -------
        CheckpointLoadStatus, NameBasedSaverStatus or InitializationOnlyStatus
            The second for checkpoints without an object graph, the last for
            ``save_path=None``.

        Raises
        ------
        ArgumentTypeError
            ``save_path`` is no path (nor ``None``), or ``options`` neither
            ``CheckpointOptions`` nor ``None``.
        CheckpointNotFoundError
            Nothing is committed at ``save_path`` and it is no directory
            holding checkpoints.
        AssignmentError
            A value does not fit its object; no object was changed.
        DataLossError, StorageError
            Reading the values failed after every check passed: arrays
            restored in place may hold some of the checkpoint's values (the
            exception's note says so); restore again before using them.
        CoordinationError
            With a coordinator in ``options``: the restore failed on another
            rank (every rank raises when one does).

        An async save of this checkpoint still in flight is waited for first,
        and its failure raised.
        """
        path = _restore_path(save_path, "Checkpoint.read")
        options = _options_argument(options, "Checkpoint.read")
        self._self_async.sync("read()")
        if path is None:
            return InitializationOnlyStatus(self._view(), next_uid())
        options = _async.storage_options_of(options)
        coordinator = coordinator_of(options)
        with _gc.full_collections_deferred():
            if coordinator is not None:
                read: list[LoadStatus] = []

                def step() -> LoadStatus:
                    read.append(self._read(path, options))
                    return read[-1]

                try:
                    return together(coordinator, step, f"restoring {path!r}", agree_on=path)
                except BaseException:
                    # Restored here but failed on another rank: the caller gets the error, never this status,
                    # whose end-of-life warning about unused values would only repeat the failure, wrongly.
                    for status in read:
                        status.expect_partial()
                    raise
            return self._read(path, options)

    def _read(self, save_path: str, options: CheckpointOptions | None) -> LoadStatus:
        """:meth:`read` in this process alone."""
        started = time.perf_counter()
        try:
            path, reader = self._self_backends.open_checkpoint(save_path, options)
        except CheckpointNotFoundError as exc:
            if _async.writing(save_path):
                # This checkpoint's own async save was waited for by read(); another object's was not.
                raise CheckpointNotFoundError(
                    f"Error when restoring from checkpoint {save_path!r}: an async save of it is still being "
                    "written in this process, by another Checkpoint; call sync() on the checkpoint (or "
                    "CheckpointManager) that saved it before reading it, or restore through that object"
                ) from exc
            if isinstance(exc, ForeignCheckpointError):
                # Another library's checkpoint or weights file (Orbax, Keras, PyTorch): the message says what it is
                # and what to do, and a missing -N suffix is not the cause.
                raise ForeignCheckpointError(
                    f"Error when restoring from checkpoint {save_path!r}: {exc.found}", found=exc.found, url=save_path
                ) from exc
            raise CheckpointNotFoundError(
                f"Error when restoring from checkpoint {save_path!r}: {exc}\nPlease double-check that "
                "the path is correct. You may be missing the checkpoint suffix (e.g. the '-1' in "
                "'path/to/ckpt-1'); trackpoint.latest_checkpoint(directory) returns the newest checkpoint of a "
                "directory."
            ) from exc
        try:
            events = observe.restore_events(
                path,
                reader,
                operation="checkpoint",
                backend=lambda: _resolve.holder_name(self._self_backends.store(path, options), path),
                options=options,
                started=started,
            )
        except BaseException:
            reader.close()
            raise
        reader = events.wrap(reader)
        try:
            try:
                proto = _read_object_graph(reader)
            except BaseException:
                reader.close()
                raise
            view = self._view()
            status: LoadStatus
            if proto is None:
                status = restore_by_name(reader, view, path)
            else:
                coordinator = RestoreCoordinator(proto, reader, view, path)
                restore_root(coordinator)
                status = CheckpointLoadStatus(coordinator, view)
        except BaseException as exc:
            events.failed(exc)
            raise
        events.finished()
        if isinstance(status, CheckpointLoadStatus) and _array_values.placeholders_exist():
            _warn_empty_templates(status, path)
        return status

    @_signal_safe.guarded
    def restore(self, save_path: PathArgument | None, options: CheckpointOptions | None = None) -> LoadStatus:
        """Restore a checkpoint written by :meth:`save`; values for objects created later are applied then.

        ``save_path`` is a prefix (the path :meth:`save` returned) or a
        directory, whose latest checkpoint is restored, as for :meth:`read`.
        ``save_path=None`` (as from ``latest_checkpoint`` on an empty
        directory) returns an :class:`InitializationOnlyStatus`. A path is a
        ``str``, ``bytes`` (decoded as UTF-8, as TensorFlow does) or an
        ``os.PathLike`` (``pathlib.Path``).

        Raises
        ------
        ArgumentTypeError
            ``save_path`` is no path (nor ``None``), or ``options`` neither
            ``CheckpointOptions`` nor ``None``.
        CheckpointNotFoundError
            Nothing is committed at ``save_path`` and it is no directory
            holding checkpoints; the message reminds about the ``-N`` suffix.
        AssignmentError
            A value does not fit its object; no object was changed.
        DataLossError, StorageError
            Reading the values failed after every check passed: arrays
            restored in place may hold some of the checkpoint's values (the
            exception's note says so); restore again before using them.

        An async save of this checkpoint still in flight is waited for first,
        and its failure raised.
        """
        path = _restore_path(save_path, "Checkpoint.restore")
        options = _options_argument(options, "Checkpoint.restore")
        self._self_async.sync("restore()")
        status = self.read(path, options)
        # Created after the restore so that a saved counter is restored on creation.
        changes = dependency_changes()
        created = self._self_save_counter is None
        self._maybe_create_save_counter()
        if created and isinstance(status, CheckpointLoadStatus):
            # The status assertions then know the graph the restore matched grew by the counter alone.
            status._added(self.save_counter, changes)
            self._self_counter_made_for = weakref.ref(status._checkpoint)
        if isinstance(status, NameBasedSaverStatus):
            status.add_to_optionally_restored(self.save_counter)
        return status

    # -------------------------------------------------------------- lifetime
    @_signal_safe.guarded
    def close(self) -> None:
        """Close the storage backends this checkpoint opened.

        A checkpoint opens one backend per directory (and options) on first
        use and keeps it, so repeated saves and restores select and configure
        a backend once. ``close`` releases them (clients, connections); a
        backend still read by a restore whose values wait for objects created
        later stays open until that restore is garbage collected. Saving or
        restoring after ``close`` opens backends again. Without ``close`` they
        are closed when the checkpoint is garbage collected; ``with
        Checkpoint(...) as ckpt:`` closes at the end of the block.

        An async save in flight is waited for first (its backend is among
        them), and its failure raised after the backends are closed; the warm
        buffers kept for the copy-on-write of later async saves are freed.
        """
        try:
            self._self_async.sync("close()")
        finally:
            self._self_async.free()
            self._self_backends.close()

    def __enter__(self) -> Checkpoint:
        return self

    @_signal_safe.guarded
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Not self.close(): a dependency named "close" would shadow the method.
        try:
            if exc is None:
                self._self_async.sync("the end of the with block")
            else:
                # The block's exception wins; a failure of the save stays pending (sync(), exit).
                self._self_async.wait()
        finally:
            self._self_async.free()
            self._self_backends.close()


def _options_or_session(options: Any, session: Any, call: str) -> CheckpointOptions | None:
    """The options of a save, given TensorFlow 1's ``(file_prefix, session)`` call shape too.

    A TensorFlow session (anything with a ``run`` method) in the place of
    ``options`` is ignored, as is ``session``: values are numpy arrays, there
    is nothing to run.

    Raises
    ------
    ArgumentTypeError
        ``options`` is neither ``CheckpointOptions``, ``None`` nor a session.
    """
    del session  # accepted for TensorFlow 1 code; eager execution has no use for it
    if options is None or isinstance(options, CheckpointOptions):
        return options
    if callable(getattr(options, "run", None)):
        return None
    raise ArgumentTypeError(
        _options_refusal(options, call) + " (in TensorFlow 1's call shape a session is accepted there, and ignored)"
    )


def _save_prefix(file_prefix: object, call: str) -> str:
    """``file_prefix`` of a save or write as a ``str``, refused when it is no path or empty."""
    prefix = _paths.argument(file_prefix, call, "file_prefix")
    if not prefix:
        # An empty prefix names no place: save("") would write -1.index and a state file into the working directory.
        raise InvalidArgumentError(
            f"{call}: file_prefix is empty; pass the prefix of the checkpoint to write, such as 'run/ckpt' "
            "(save writes run/ckpt-1, write writes run/ckpt)"
        )
    scheme, rest = _paths.split_scheme(prefix)
    if scheme == "file":
        scheme = ""  # a local path: file:///ckpt is /ckpt
    body = rest.strip("/")
    bare_bucket = bool(scheme) and "/" not in body and _has_buckets(scheme)
    if prefix.endswith(("/", os.sep)) or bare_bucket:
        # The files are named by appending to the prefix: "run/" would give run/-1.index, and "s3://bucket" the
        # objects s3://bucket-1.index..., in another bucket. A prefix is a directory and a name in it.
        if not scheme:
            what, where = "directory", prefix.rstrip("/" + os.sep) or "/"
        elif not body:
            what, where = "store root", f"{scheme}://{'<bucket>' if _has_buckets(scheme) else 'run'}"
        else:
            what, where = ("bucket" if bare_bucket else "directory"), f"{scheme}://{body}"
        raise InvalidArgumentError(
            f"{call}: file_prefix {prefix!r} names a {what}, not a checkpoint: the checkpoint's files are named by "
            f"appending to the prefix, so give a name inside it, such as {where.rstrip('/')}/ckpt"
        )
    return prefix


def _has_buckets(scheme: str) -> bool:
    """Whether a URL of ``scheme`` names a bucket first, as the backend serving the scheme declares.

    Object stores address ``scheme://bucket/key`` (``memory://`` and local paths do not); a plugin's store
    registers its schemes as such (``BackendSpec.buckets``), so the plugin host is asked, not a list of the
    built-in schemes. Imported here, not at module level: ``import trackpoint`` stays light.
    """
    from trackpoint.plugins.manager import _has_buckets as served_with_buckets

    return served_with_buckets(scheme)


def _restore_path(save_path: object, call: str) -> str | None:
    """``save_path`` of a read or restore as a ``str`` (``None`` stays: it reads nothing)."""
    return None if save_path is None else _paths.argument(save_path, call, "save_path")


def _hides_own_attribute(name: str, given: str) -> NameConflictError:
    """The refusal of a dependency named as one of ``Checkpoint``'s own attributes (``save``, ``save_counter``)."""
    what = (
        "the counter that save() increments (it is saved as 'save_counter' already)"
        if name == "save_counter"
        else f"a {'method' if callable(getattr(Checkpoint, name, None)) else 'property'} of every Checkpoint"
    )
    if given.startswith("Checkpoint("):
        instead = (
            f"tp.Checkpoint(**{{'{name}_': value}}) saves it as '{name}_') or nest it "
            f"(tp.Checkpoint(state={{'{name}': value}}) saves it as 'state/{name}')"
        )
    else:
        instead = f"ckpt.{name}_ = value saves it as '{name}_') or nest it (ckpt.state = {{'{name}': value}})"
    return NameConflictError(
        f"{given}: {name!r} is the name of Checkpoint.{name}, {what}; a dependency of that name would hide it. "
        f"Give the value another name ({instead}."
    )


def _warn_empty_templates(status: CheckpointLoadStatus, path: str) -> None:
    """Say which ``jax.ShapeDtypeStruct`` templates a restore left without a value.

    A template holds no values: one the checkpoint had nothing for would fail later, inside a jitted
    function, far from its cause, unless the caller checks the status. Only asked when templates exist.
    """
    empty = [obj for obj in status._unmatched_python_objects() if _array_values.is_placeholder_node(obj)]
    if empty:
        _log.warning(
            "restoring %s left %d jax.ShapeDtypeStruct template(s) without a value, which hold no values: %s "
            "(the checkpoint has nothing there; status.assert_existing_objects_matched() raises for them)",
            path,
            len(empty),
            ", ".join(repr(obj) for obj in empty[:5]) + (", ..." if len(empty) > 5 else ""),
        )


def _warn_stale(view: ObjectGraphView, prefix: str, previous: str, arrays: list[tuple[Trackable, Any]]) -> None:
    """Log that the save of ``prefix`` writes the JAX arrays the save of ``previous`` wrote, naming where."""
    try:
        names = node_names(view)  # a walk of the graph, only for this message, once per checkpoint
    except Exception:  # noqa: BLE001 -- only the message depends on it: the nodes' own paths instead
        names = {}
    paths = sorted({names.get(id(node), str(getattr(node, "_where", node))) for node, _ in arrays})
    tops = sorted({path.split(".")[1] for path in paths if path.startswith("(root).")}) or ["state"]
    assign = " or ".join(f"`ckpt.{name} = {name}`" for name in tops[:3])
    shown = ", ".join(paths[:5]) + (f", ... ({len(paths)} in all)" if len(paths) > 5 else "")
    _log.warning(
        "saving %s: every JAX array it saves is the very array the previous save of this Checkpoint (%s) saved, "
        "so both hold the same values (%s). JAX updates make new arrays: a loop that rebinds its state "
        "(`state = train_step(state)`) must assign the new one to the checkpoint before each save (%s), or every "
        "save writes the state the checkpoint was given. If nothing changed between the two saves on purpose "
        "(the same state saved again at the end of a run, or to a second place), ignore this. Logged once per "
        "Checkpoint.",
        prefix,
        previous,
        shown,
        assign,
    )


@contextlib.contextmanager
def _refused_as(on_exists: Callable[[CheckpointExistsError], BaseException] | None) -> Iterator[None]:
    """Raise what ``on_exists`` makes of a create-only commit's refusal (see ``Checkpoint._write_with``)."""
    try:
        yield
    except CheckpointExistsError as exc:
        if on_exists is None or (refusal := on_exists(exc)) is exc:
            raise
        raise refusal from exc


def _assert_trackable(obj: Any, name: str) -> Trackable:
    if not isinstance(obj, Trackable):
        # An object with a state_dict() but no load_state_dict() is not Stateful: its state dict can be given.
        hint = (
            f"; it has a state_dict() but no load_state_dict(): pass {name}={name}.state_dict()"
            if callable(getattr(obj, "state_dict", None))
            else ""
        )
        kinds = (
            "an object derived from trackpoint.Trackable, whose dependencies become the checkpoint's top level"
            if name == "root"
            else "an object derived from trackpoint.Trackable, a numeric numpy value, a Python bool/int/float, a "
            "torch tensor, a JAX array, an object with state_dict() and load_state_dict(), or a list/dict/tuple or "
            "registered JAX pytree node of them; NoDependency(value) keeps any value unsaved"
        )
        raise TrackableError(
            f"`Checkpoint` was expecting {name} to be a trackable object ({kinds}), got "
            f"{type(obj).__name__}: {obj!r:.80}{hint}"
        )
    return obj


#: The public attributes of every Checkpoint (methods, ``save_counter``): no dependency may take one of these names.
_OWN_NAMES: Final = frozenset(name for name in dir(Checkpoint) if not name.startswith("_"))
