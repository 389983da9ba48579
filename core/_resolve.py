"""The one seam between the core and backend discovery.

The core asks for "the backend for this URL and these options" here and
nowhere else. Discovery itself (entry points, hooks, precedence) lives in
:mod:`trackpoint.plugins`, imported on first use so that ``import trackpoint``
stays fast and imports no storage library.

Writing goes to one backend, the one :func:`open_backend` selects. Reading
may need several: a checkpoint saved with ``CheckpointOptions(backend="zarr")``
at a plain path is a Zarr group where ``bundle`` is the default. Unless the
caller chose a backend explicitly, :func:`open_store` therefore returns a
:class:`StoreView` over every backend that may hold checkpoints at the URL
(:func:`trackpoint.plugins.detect_backends`): the selected backend is asked
first and the others only when it has nothing (a prefix), or all of them (a
directory listing). So the path ``save()`` returns restores as it is, and the
common case costs nothing extra: the others are not even opened.

Backends are opened once per location and held. :class:`Backends` is what a
``Checkpoint``, ``Saver`` or reader holds: one backend per directory and
options, opened on first use (so backend selection and the
``trackpoint_configure_backend`` hook run once, not per call) and closed by
its owner's ``close()``, or by a finalizer when the owner is garbage
collected. A reader opened through it keeps its backend open until the
reader is closed, so closing the owner never breaks a restore that is still
applying values to objects created later.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Final

from trackpoint import _paths, observe
from trackpoint.errors import CheckpointError, CheckpointExistsError, CheckpointNotFoundError, ForeignCheckpointError
from trackpoint.storage import (
    ANY_VERSION,
    CheckpointOptions,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    VersionCondition,
    VersionedBytes,
    WriteItem,
    _ForwardingReader,
    _options_argument,
)

__all__ = [
    "Backends",
    "StoreView",
    "hidden",
    "holder",
    "holder_name",
    "open_backend",
    "open_checkpoint",
    "open_store",
    "writer",
]

_log = logging.getLogger("trackpoint")

#: Prefixes already reported as committed in two formats (warned once per process).
_warned_twice: set[str] = set()
_warned_lock = threading.Lock()


def open_backend(path: str, options: CheckpointOptions | None = None) -> StorageBackend:
    """The storage backend that serves ``path`` under ``options``: the one a save writes with.

    Raises
    ------
    UnknownBackendError
        No backend is registered for the requested name or the URL's scheme.
    BackendUnavailableError
        The backend's optional dependency is missing (the message names the extra).
    InvalidPathError
        ``path`` holds a character no store accepts (a NUL byte).
    """
    from trackpoint.plugins import open_backend as _open  # lazy: keeps import light

    return _open(_paths.check(path), _options_argument(options, None))


def open_store(path: str, options: CheckpointOptions | None = None) -> StorageBackend:
    """A backend for reading at ``path``: every format stored there is found.

    With a backend chosen explicitly (``CheckpointOptions(backend=...)`` or
    ``TRACKPOINT_BACKEND``), or where only one backend can store checkpoints
    (``memory://``, ``zarr+s3://``, ``sqlite://``), this is the backend
    :func:`open_backend` returns. Otherwise it is a :class:`StoreView`.
    Writes through either go to the selected backend.
    """
    from trackpoint.plugins.manager import _open_detected

    # One run of the selection precedence gives the writer and the formats to ask.
    primary, names = _open_detected(_paths.check(path), _options_argument(options, None))
    if len(names) <= 1:
        return primary
    return StoreView(path, primary, [n for n in names[1:] if n != primary.name], options)


def hidden(path: str, options: CheckpointOptions | None, store: StorageBackend) -> tuple[str, StoreView] | None:
    """The formats a backend chosen explicitly hides at ``path``: how it was chosen, and a view over the others.

    A backend chosen by ``CheckpointOptions(backend=...)`` or ``TRACKPOINT_BACKEND`` is the only one its
    readers ask (see :func:`open_store`), so checkpoints another format committed at ``path`` are invisible to
    them: a run saved as bundles and restarted with ``TRACKPOINT_BACKEND=zarr`` would look like no run at all.
    The view holds the backends a reader choosing none would ask there besides the chosen one (the URL's own,
    then those plugins name; :func:`trackpoint.plugins.detect_backends`), opened as that reader opens them:
    the first now, the others when the view reaches them.

    Parameters
    ----------
    path
        A directory (or prefix).
    options
        The caller's options.
    store
        What :func:`open_store` returned for ``path`` and ``options``. A :class:`StoreView` means nothing was
        chosen: it already reads every format, and nothing is asked or opened (the common case costs nothing).

    Returns
    -------
    tuple of str and StoreView, or None
        Where the choice came from, for messages (``"the TRACKPOINT_BACKEND environment variable"``), and the
        view, which the caller closes; ``None`` when no backend was chosen or no other can store checkpoints
        at ``path`` (a ``memory://`` or ``zarr+s3://`` URL).

    Raises
    ------
    CheckpointError
        Discovery failed (a plugin's ``trackpoint_detect_backends``), or the first other backend could not be
        opened.
    """
    if isinstance(store, StoreView):
        return None
    from trackpoint.plugins.manager import ENV_BACKEND, _get_host

    if not ((options is not None and options.backend) or os.environ.get(ENV_BACKEND, "").strip()):
        return None  # a URL only one backend can store checkpoints at: not even the selection hooks are asked
    opts = _options_argument(options, None) or CheckpointOptions()
    host = _get_host()
    selection = host._select(_paths.check(path), opts)
    storage = CheckpointOptions(storage_options=dict(opts.storage_options))
    # Detection as for a reader that chose nothing, with the chosen backend in the place the precedence would give
    # (first): the others follow in the order that reader asks them.
    names = host._detect_from(selection._replace(explicit=False), path, storage)
    others = [name for name in names if name != selection.name]
    if not others:
        return None
    first = open_backend(path, dataclasses.replace(storage, backend=others[0]))
    return selection.source, StoreView(path, first, others[1:], storage)


def shadow(prefix: str, options: CheckpointOptions | None, writer: StorageBackend) -> StorageBackend | None:
    """Before ``writer`` saves ``prefix``: the backend of another format holding a checkpoint there, if any.

    Readers given no backend (``restore``, ``inspect``, ``tp.latest_checkpoint`` without options) ask the
    backend the URL's scheme (or ``TRACKPOINT_BACKEND``) selects first. A save whose options chose another
    format (``backend="zarr"`` on a local path) next to a checkpoint of that format at the same prefix would
    be hidden behind it: those readers would read the old checkpoint, even where both formats are committed
    already. Call before the save; ``None`` when no backend was chosen, the writer is the one readers ask
    first, it cannot be opened or asked, it holds nothing at ``prefix``, or the writer sees the same
    checkpoint (a backend writing the same format). The caller closes what is returned.
    """
    if options is None or options.backend is None:
        return None  # the writer is the backend readers select
    from trackpoint.plugins import select_backend

    storage = CheckpointOptions(storage_options=dict(options.storage_options))
    try:
        name = select_backend(prefix, storage)
        if name == writer.name:
            return None
        other = open_backend(prefix, dataclasses.replace(storage, backend=name))
    except CheckpointError:
        return None  # no backend, or one not installed: no reader asks it first either
    try:
        if other.exists(prefix) and (not writer.exists(prefix) or _two_commits(prefix, other, writer)):
            return other
    except CheckpointError as exc:
        # Only a format the caller did not choose could not be asked: its failure must not fail the save.
        _log.debug("%s: could not ask backend %r whether it holds a checkpoint there: %s", prefix, other.name, exc)
    other.close()
    return None


def _two_commits(prefix: str, one: StorageBackend, other: StorageBackend) -> bool:
    """Whether ``one`` and ``other``, which both see a checkpoint at ``prefix``, see two different ones.

    A backend wrapping another's format sees that format's commit point (the same time); two formats
    committed there have commit points of their own. A store that cannot tell (``None``) is taken to see one.
    """
    a, b = one.modified(prefix), other.modified(prefix)
    return a is not None and b is not None and a != b


def refuse_shadow(prefix: str, options: CheckpointOptions | None, writer: StorageBackend, call: str) -> None:
    """Refuse a save at ``prefix`` that a checkpoint of another format there would hide (see :func:`shadow`).

    Raises
    ------
    CheckpointExistsError
        That checkpoint exists; nothing was written.
    """
    other = shadow(prefix, options, writer)
    if other is None:
        return
    name = other.name
    other.close()
    raise CheckpointExistsError(
        f"{call} refused to write the {writer.name} checkpoint {prefix!r}: a {name} checkpoint is committed there, "
        f"and readers without options read the {name} one first, so they would read the old checkpoint instead "
        f"of this one. Save at another prefix, or delete it first (tp.remove_checkpoint({prefix!r})); nothing "
        "was written",
        url=prefix,
    )


def retire(prefix: str, other: StorageBackend | None, writer: StorageBackend) -> None:
    """After ``writer`` committed ``prefix``: delete the checkpoint :func:`shadow` found there, and close ``other``.

    The save replaced the checkpoint at ``prefix`` on purpose (``overwrite``); left in place, the other
    format's would be read instead. The delete fires ``trackpoint_checkpoint_deleted`` (reason ``"delete"``);
    a failed one is logged, never raised: the new checkpoint is committed.
    """
    if other is None:
        return
    try:
        _log.info("%s: replacing the %s checkpoint there by the new %s one", prefix, other.name, writer.name)
        # Reported like any delete of a committed checkpoint (reason "delete": the save was asked to overwrite).
        observe.delete_checkpoint(other, prefix, reason="delete", backend=other.name)
    except CheckpointError as exc:
        _log.warning(
            "%s: the new %s checkpoint is committed, but the %s checkpoint it replaces could not be deleted, and "
            "readers without options read it first: delete it (tp.remove_checkpoint with backend=%r): %s",
            prefix,
            writer.name,
            other.name,
            other.name,
            exc,
        )
    finally:
        other.close()


def holder(backend: StorageBackend, prefix: str) -> StorageBackend | None:
    """The backend that holds a committed checkpoint at ``prefix``, ``None`` if none does.

    ``backend`` is what :func:`open_store` returned; for a :class:`StoreView`
    the selected backend is asked first and the others only after a miss.
    """
    if isinstance(backend, StoreView):
        return backend.locate(prefix)
    return backend if backend.exists(prefix) else None


def holder_name(backend: StorageBackend, prefix: str) -> str:
    """The name of the backend holding the checkpoint ``prefix`` (one request), else of the one that writes there."""
    return (holder(backend, prefix) or writer(backend)).name


def writer(backend: StorageBackend) -> StorageBackend:
    """The backend that writes for ``backend`` (the selected one of a :class:`StoreView`)."""
    return backend.primary if isinstance(backend, StoreView) else backend


def open_checkpoint(path: str, store: StorageBackend) -> tuple[str, CheckpointReader]:
    """The prefix ``path`` names and a reader for it: ``path`` itself, or a directory's latest checkpoint.

    A committed prefix wins over a directory of the same name, and a
    SavedModel directory (one holding the checkpoint ``variables/variables``)
    over a directory's latest checkpoint. Every reader
    of the core (``Checkpoint.restore``/``read``, ``load_checkpoint``,
    ``list_variables``, ``object_metadata``) resolves its path here, so they
    all accept the same paths.

    Parameters
    ----------
    path
        A prefix or a directory.
    store
        What :func:`open_store` returned for ``path`` or for its directory;
        the caller owns (and closes) it. The reader reads through it.

    Raises
    ------
    CheckpointNotFoundError
        Nothing is committed at ``path`` and it is no directory holding
        checkpoints; the message says that a prefix is wanted (``dir/ckpt-1``).
    ForeignCheckpointError
        (a ``CheckpointNotFoundError``) Another library's checkpoint or weights file is at ``path`` (Orbax,
        PyTorch DCP, Keras, ``torch.save``, a SavedModel without its variables): the message says which and
        what to do.
    """
    from trackpoint.state import _latest_in

    missing: CheckpointNotFoundError | None = None
    if not path.endswith("/"):  # "run/" names a directory, never a prefix
        try:
            return path, store.open_reader(path)
        except CheckpointNotFoundError as exc:
            missing = exc
    # A SavedModel directory: its variables are the checkpoint ``variables/variables``
    # (TensorFlow's Checkpoint.restore reads it from the directory too).
    variables = _paths.join(_paths.join(path, "variables"), "variables")
    if holder(store, variables) is not None:
        missing = None  # a kept exception would hold this frame in a reference cycle
        return variables, store.open_reader(variables)
    latest = _latest_in(store, path)
    if latest is None:
        # A file of a checkpoint passed for its prefix (``run/ckpt-1.index``), as a file browser offers it.
        of = _CHECKPOINT_FILE.match(path)
        if of is not None and holder(store, of.group(1)) is not None:
            missing = None  # not chained here, and a kept exception would hold this frame in a cycle
            raise CheckpointNotFoundError(
                f"no checkpoint at {path!r}: it is a file of the checkpoint {of.group(1)!r}; pass that prefix, "
                "without the file's suffix",
                url=path,
            )
        from trackpoint import _foreign

        foreign = _foreign.describe(path, store)
        if foreign is not None:
            missing = None  # not chained: what is there is the answer, and a kept exception would hold this frame
            raise ForeignCheckpointError(f"no checkpoint at {path!r}: {foreign}", found=foreign, url=path)
        why = "it names a directory" if missing is None else f"nothing is committed at that prefix ({missing})"
        raise CheckpointNotFoundError(
            f"no checkpoint at {path!r}: {why}, and it is not a directory holding checkpoints. Pass a checkpoint "
            "prefix, the path save() returned (note the -N suffix, as in 'run/ckpt-1'), a directory that holds "
            "checkpoints to use its latest one, or a SavedModel directory to use its variables/variables.",
            url=path,
        ) from missing
    missing = None  # a kept exception would hold this frame in a reference cycle
    return latest, store.open_reader(latest)


#: A bundle checkpoint's index or data file: the prefix, then the suffix the bundle adds.
_CHECKPOINT_FILE: Final = re.compile(r"^(.+)\.(?:index|data-\d{5,}-of-\d{5,})$")

#: Locations a :class:`Backends` keeps open at once; the least recently used
#: one without an open reader is closed when another is needed.
MAX_HELD: Final = 8


@dataclasses.dataclass(eq=False)
class _Held:
    """One location's backend and how many open readers use it."""

    location: str
    options: CheckpointOptions
    store: StorageBackend
    readers: int = 0


class _Pool:
    """The state of a :class:`Backends`, apart from it so its finalizer can reach it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: OrderedDict[int, _Held] = OrderedDict()
        self.closed = False
        self.opened = 0

    def close(self) -> None:
        """Close every backend no reader uses; the rest close with their last reader."""
        with self.lock:
            self.closed = True
            idle = [h for h in self.held.values() if h.readers == 0]
            for h in idle:
                del self.held[id(h)]
        _close_all(idle)

    def release(self, held: _Held) -> None:
        with self.lock:
            held.readers -= 1
            done = self.closed and held.readers == 0 and self.held.pop(id(held), None) is not None
        if done:
            _close_all([held])


def _close_all(held: Sequence[_Held]) -> None:
    for h in held:
        try:
            h.store.close()
        except Exception as exc:  # noqa: BLE001 - closing must go on for the others, and never fail a caller
            _log.warning("closing the %r backend of %s failed: %s", h.store.name, h.location or ".", exc)


class Backends:
    """The backends one object holds: one per location (directory and options), for the holder's lifetime.

    The first use of a location opens its backend with :func:`open_store`
    (selection, detection and the configure hook run then, once); later
    uses get the same instance. :meth:`close` closes them; a finalizer does
    it when the holder is garbage collected without closing. A reader from
    :meth:`open_checkpoint` keeps its backend open until the reader is
    closed, whatever happens to the holder. At most :data:`MAX_HELD`
    locations stay open; the least recently used one without open readers
    is closed to make room.
    """

    def __init__(self) -> None:
        self._pool = _Pool()
        self._finalizer = weakref.finalize(self, self._pool.close)

    def _acquire(self, path: str, options: CheckpointOptions | None, *, reader: bool) -> _Held:
        location = _paths.dirname(path)
        opts = options or CheckpointOptions()
        pool = self._pool
        with pool.lock:
            if pool.closed:
                # A closed holder is used again: open afresh, as a new holder would.
                pool.closed = False
            same = [h for h in pool.held.values() if h.options == opts]
            # ``path`` may itself be a directory used before (``restore(run)`` after ``save("run/ckpt")``).
            found = next((h for h in same if h.location == location), None) or next(
                (h for h in same if h.location == path), None
            )
            if found is not None:
                pool.held.move_to_end(id(found))
                found.readers += reader
                return found
        # Opened outside the lock: plugin code (a configure hook) may be slow.
        store = open_store(path, options)
        evicted: list[_Held] = []
        with pool.lock:
            held = _Held(location, opts, store, readers=int(reader))
            pool.held[id(held)] = held
            pool.opened += 1
            idle = [h for h in pool.held.values() if h.readers == 0 and h is not held]
            while len(pool.held) > MAX_HELD and idle:
                victim = idle.pop(0)
                del pool.held[id(victim)]
                evicted.append(victim)
        _close_all(evicted)
        return held

    def store(self, path: str, options: CheckpointOptions | None = None) -> StorageBackend:
        """The backend for the location of ``path`` (its directory) under ``options``, opened on first use.

        What :func:`open_store` returns: reads find every format stored
        there; :func:`writer` gives the backend that writes.
        """
        return self._acquire(path, options, reader=False).store

    def open_checkpoint(self, path: str, options: CheckpointOptions | None = None) -> tuple[str, CheckpointReader]:
        """:func:`open_checkpoint` through the held backend of ``path``'s location; else a ``.safetensors``/``.npz``.

        The reader keeps that backend open until it is closed. A path at which nothing is committed but that
        names a flat file is read as ``tp.convert`` imports it (its object graph from trackpoint's metadata,
        or from its tensor names), so every reader of the core takes such files.
        """
        held = self._acquire(path, options, reader=True)
        try:
            found, reader = open_checkpoint(path, held.store)
        except CheckpointNotFoundError:
            self._pool.release(held)
            from trackpoint.interchange import file_format

            if file_format(path) is None:
                raise
        except BaseException:
            self._pool.release(held)
            raise
        else:
            return found, _HeldReader(reader, self._pool, held)
        from trackpoint.interchange._convert import open_source

        prefix, _, flat = open_source(path, options)
        return prefix, flat

    def close(self) -> None:
        """Close every held backend (one still used by an open reader when that reader closes)."""
        self._pool.close()

    def __repr__(self) -> str:
        return f"<Backends holding {len(self._pool.held)} of {self._pool.opened} opened>"


def _release(reader: CheckpointReader, pool: _Pool, held: _Held) -> None:
    try:
        reader.close()
    finally:
        pool.release(held)


class _HeldReader(_ForwardingReader):
    """A reader that keeps its backend (and the :class:`Backends` state) alive until it is closed."""

    def __init__(self, reader: CheckpointReader, pool: _Pool, held: _Held) -> None:
        self.prefix = reader.prefix
        self._reader = reader
        # The inner reader's own method, without this wrapper's frame: a restore asks once per tensor.
        self.info = reader.info  # type: ignore[method-assign]
        # Also run when the reader is collected unclosed; runs once either way.
        self._release = weakref.finalize(self, _release, reader, pool, held)

    def close(self) -> None:
        # docstring inherited; the backend is released once, after its reader.
        self._release()

    def __repr__(self) -> str:
        return f"<reader of {self.prefix!r} through {self._reader!r}>"


class StoreView(StorageBackend):
    """The backends that may store checkpoints at one URL, read as one.

    Parameters
    ----------
    url
        The path or URL the view was opened for (a prefix or a directory).
    primary
        The backend the selection precedence gives for ``url``: it writes,
        holds the ``checkpoint`` state file and is asked first.
    others
        Names of the other backends to ask, in order (see
        :func:`trackpoint.plugins.detect_backends`). Each is opened on first
        need with the caller's ``storage_options`` and no ``backend_options``
        (those were meant for the selected backend).
    options
        The caller's options.

    Notes
    -----
    A prefix committed in two formats is read from the first backend in this
    order that has it (the selected one first), listed once, and logged as a
    warning once per process. :meth:`delete` removes it from every format.
    """

    def __init__(
        self, url: str, primary: StorageBackend, others: Sequence[str], options: CheckpointOptions | None
    ) -> None:
        self.name = primary.name
        self.capabilities = primary.capabilities
        self.supports_slices = primary.supports_slices
        self.splits_large_tensors = primary.splits_large_tensors
        self._url = url
        self._primary = primary
        self._names = list(others)
        storage = options.storage_options if options is not None else {}
        self._options = CheckpointOptions(storage_options=storage)
        self._opened: dict[str, StorageBackend] = {}
        self._lock = threading.Lock()

    @property
    def primary(self) -> StorageBackend:
        """The selected backend: writes and small files go to it."""
        return self._primary

    @property
    def names(self) -> list[str]:
        """Every backend asked, in order (the selected one first)."""
        return [self._primary.name, *self._names]

    def _others(self) -> Iterator[StorageBackend]:
        for name in self._names:
            with self._lock:
                backend = self._opened.get(name)
                if backend is None:
                    backend = open_backend(self._url, dataclasses.replace(self._options, backend=name))
                    self._opened[name] = backend
            yield backend

    def backends(self) -> Iterator[StorageBackend]:
        """Every backend of the view, in order, each opened when reached."""
        yield self._primary
        yield from self._others()

    def locate(self, prefix: str) -> StorageBackend | None:
        """The first backend, in order, with a checkpoint committed at ``prefix``."""
        for backend in self.backends():
            if backend.exists(prefix):
                return backend
        return None

    # ------------------------------------------------------------------ writing
    def begin(self, prefix: str, save_id: str, *, overwrite: bool = True) -> None:
        # docstring inherited; the selected backend may prepare the prefix its own way.
        self._primary.begin(prefix, save_id, overwrite=overwrite)

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        # docstring inherited
        return self._primary.write_shard(prefix, spec, items)

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        # docstring inherited
        self._primary.commit(prefix, shards, overwrite=overwrite)

    def abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        self._primary.abort(prefix, save_id)

    def save(
        self,
        prefix: str,
        items: Sequence[WriteItem],
        options: CheckpointOptions | None = None,
        *,
        overwrite: bool = True,
    ) -> None:
        # docstring inherited; the selected backend may have its own save.
        self._primary.save(prefix, items, options, overwrite=overwrite)

    # ------------------------------------------------------------------ reading
    def open_reader(self, prefix: str) -> CheckpointReader:
        # docstring inherited. The selected backend is tried directly: in the
        # common case this costs what a plain backend costs, one read.
        try:
            return self._primary.open_reader(prefix)
        except CheckpointNotFoundError as missing:
            for backend in self._others():
                if backend.exists(prefix):
                    return backend.open_reader(prefix)
            raise CheckpointNotFoundError(
                f"{missing}; no other format is committed there either (asked {', '.join(self._names)})"
            ) from missing

    # ---------------------------------------------------------------- namespace
    def exists(self, prefix: str) -> bool:
        # docstring inherited
        return self.locate(prefix) is not None

    def modified(self, prefix: str) -> float | None:
        # docstring inherited: the time of the format that holds ``prefix``.
        backend = self.locate(prefix)
        return None if backend is None else backend.modified(prefix)

    def delete(self, prefix: str) -> None:
        # docstring inherited. The selected backend deletes unconditionally (it
        # also finishes an interrupted delete); the others only what they have.
        self._primary.delete(prefix)
        for backend in self._others():
            if backend.exists(prefix):
                backend.delete(prefix)

    def list_checkpoints(self, directory: str) -> list[str]:
        # docstring inherited: the union over every format, each prefix once.
        found: dict[str, str] = {}
        for backend in self.backends():
            for prefix in backend.list_checkpoints(directory):
                first = found.setdefault(prefix, backend.name)
                if first != backend.name:
                    _warn_twice(prefix, first, backend.name)
        return sorted(found)

    def cleanup(self, directory: str, *, min_age: float | None = None) -> list[str]:
        """Remove leftovers of crashed saves of every format in ``directory``.

        ``min_age=None`` keeps each backend's own default age guard.
        """
        removed: list[str] = []
        for backend in self.backends():
            removed += backend.cleanup(directory) if min_age is None else backend.cleanup(directory, min_age=min_age)
        return sorted(removed)

    def leftovers(self, directory: str) -> list[str]:
        # docstring inherited: the union over every format.
        return sorted({path for backend in self.backends() for path in backend.leftovers(directory)})

    # ------------------------------------------------------------- small files
    def read_file(self, path: str) -> VersionedBytes | None:
        # docstring inherited
        return self._primary.read_file(path)

    def write_file(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        # docstring inherited
        return self._primary.write_file(path, data, if_version=if_version)

    def delete_file(self, path: str) -> None:
        # docstring inherited
        self._primary.delete_file(path)

    def dirname(self, path: str) -> str:
        # docstring inherited
        return self._primary.dirname(path)

    def join(self, directory: str, name: str) -> str:
        # docstring inherited
        return self._primary.join(directory, name)

    def close(self) -> None:
        # docstring inherited
        with self._lock:
            opened = list(self._opened.values())
            self._opened.clear()
        for backend in [self._primary, *opened]:
            backend.close()

    def __repr__(self) -> str:
        return f"<StoreView {'+'.join(self.names)} at {self._url!r}>"


def _warn_twice(prefix: str, first: str, second: str) -> None:
    with _warned_lock:
        if prefix in _warned_twice:
            return
        _warned_twice.add(prefix)
    _log.warning(
        "checkpoint %s is committed in two formats, by backend %r and by backend %r; readers without "
        "CheckpointOptions(backend=...) use %r's. Delete one of them, or read the other with "
        "CheckpointOptions(backend=%r)",
        prefix,
        first,
        second,
        first,
        second,
    )
