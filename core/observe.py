"""Events of saves, restores and deletes, and what listens to them: plugins, the log and progress bars.

Every save and restore of trackpoint's API reports what it does through one
object of this module: :func:`save_events` returns a :class:`SaveEvents`
(started, progress, committed or failed), :func:`restore_events` a
:class:`RestoreEvents`. Every delete of a committed checkpoint (retention,
``CheckpointManager.delete``, ``remove_checkpoint``) goes through
:func:`delete_checkpoint`, which reports it, done or failed, as one event.
Three kinds of listeners receive them:

* plugins implementing the event hooks of :mod:`trackpoint.plugins.hookspecs`
  (``trackpoint_save_started`` ... ``trackpoint_checkpoint_deleted``), loaded as
  entry points or registered with :func:`trackpoint.plugins.register`;
* the ``"trackpoint"`` logger: one INFO line per save, restore and delete
  (path, bytes, seconds, throughput), DEBUG lines for the start and progress,
  a WARNING for a retention delete that failed (its caller gets no exception);
* a tqdm progress bar on stderr, when stderr is a terminal, tqdm is installed
  (the ``progress`` extra), the save or restore is at least
  :data:`PROGRESS_MIN_BYTES`, and neither ``CheckpointOptions(progress=False)``
  nor ``TRACKPOINT_PROGRESS=0`` turned it off.

When none of them listens (no event hook implemented, the logger below INFO,
no terminal), :func:`save_events` and :func:`restore_events` return a shared
do-nothing object after a few attribute checks: nothing is counted, timed or
formatted, so events cost nothing measurable on a save of 20,000 tensors.
:func:`delete_checkpoint` then only reads the clock around the delete (so that
a failure can still be logged with its duration) and names no backend.

A failing listener never fails a save or restore: its exception is logged at
WARNING on the ``"trackpoint"`` logger and the other listeners still run.

Backends report bytes as they write them through :func:`shard_progress`
(re-exported by :mod:`trackpoint.storage`); for a backend that does not, a
shard's bytes are reported when its ``write_shard`` returns.

The module also runs TensorFlow's write callbacks
(``CheckpointOptions.experimental_write_callbacks``): :func:`run_write_callbacks`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from trackpoint import _async
from trackpoint._units import human_bytes
from trackpoint.errors import ArgumentTypeError
from trackpoint.storage import (
    _SAVE_EVENTS,
    _SHARD_PROGRESS,
    CheckpointReader,
    TensorInfo,
    _ForwardingReader,
    shard_progress,
)

if TYPE_CHECKING:
    from trackpoint.storage import CheckpointOptions, ShardResult, ShardSpec, StorageBackend, WriteItem

__all__ = [
    "DELETE_REASONS",
    "ENV_PROGRESS",
    "EVENT_HOOKS",
    "PROGRESS_INTERVAL",
    "PROGRESS_MIN_BYTES",
    "RestoreEvents",
    "SaveEvents",
    "callback_arity",
    "delete_checkpoint",
    "restore_events",
    "run_write_callbacks",
    "save_events",
    "shard_progress",
    "write_shard",
]

_log = logging.getLogger("trackpoint")

#: Environment variable: ``0`` (or ``false``, ``no``, ``off``) turns progress bars off.
ENV_PROGRESS: Final = "TRACKPOINT_PROGRESS"
#: Saves and restores smaller than this show no progress bar unless ``CheckpointOptions(progress=True)``.
PROGRESS_MIN_BYTES: Final = 64 * 2**20
#: Seconds between two progress events of one save or restore (the last one is always sent).
PROGRESS_INTERVAL: float = 0.1
#: Bytes read between two progress reports of a restore: ``read_many`` is split into batches of this size.
_READ_BATCH: Final = 64 * 2**20

#: The event hooks of :mod:`trackpoint.plugins.hookspecs`, in the order they are documented.
EVENT_HOOKS: Final = (
    "trackpoint_save_started",
    "trackpoint_save_progress",
    "trackpoint_save_committed",
    "trackpoint_save_failed",
    "trackpoint_restore_started",
    "trackpoint_restore_progress",
    "trackpoint_restore_finished",
    "trackpoint_restore_failed",
    "trackpoint_checkpoint_deleted",
)

#: The ``reason`` of ``trackpoint_checkpoint_deleted``: why a committed checkpoint is deleted.
DELETE_REASONS: Final = ("retention", "delete")

# The plugin manager's hook relay while some plugin implements an event hook,
# else None. Set by the plugin host (trackpoint.plugins.manager) whenever its
# plugins change, so that this module never imports pluggy itself.
_relay: Any = None


def _set_relay(relay: Any) -> None:
    """Internal: called by the plugin host with its hook relay, or ``None`` when no plugin observes."""
    global _relay
    _relay = relay


# ------------------------------------------------------------------ listeners
class _Listener:
    """Receives the events of one save or restore; the methods are named after the hooks."""

    name = ""

    def event(self, hook: str, fields: dict[str, Any]) -> None:
        raise NotImplementedError


class _Plugins(_Listener):
    """Forwards events to every plugin implementing the hook, one implementation at a time."""

    name = "plugins"

    def __init__(self, relay: Any) -> None:
        self._relay = relay

    def event(self, hook: str, fields: dict[str, Any]) -> None:
        caller = getattr(self._relay, hook)
        # pluggy calls implementations last-registered first; so do we. Each is
        # called on its own (not through the relay) so that one failing
        # observer neither fails the save nor silences the others.
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(*[fields[arg] for arg in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - an observer's failure is reported, never raised
                _log.warning(
                    "trackpoint observer %r failed in %s for %s (the %s goes on): %s: %s",
                    impl.plugin_name,
                    hook,
                    fields["path"],
                    _operation(hook),
                    type(exc).__name__,
                    exc,
                )


def _operation(hook: str) -> str:
    """What an event hook reports on: ``"save"``, ``"restore"`` or ``"delete"`` (for messages)."""
    return "save" if "_save_" in hook else "restore" if "_restore_" in hook else "delete"


def _rate(nbytes: int, seconds: float) -> str:
    return f"{human_bytes(nbytes / seconds)}/s" if seconds > 0 else "-"


class _Log(_Listener):
    """One INFO line per save and restore on the ``"trackpoint"`` logger; DEBUG for the rest."""

    name = "log"

    def event(self, hook: str, f: dict[str, Any]) -> None:
        if hook == "trackpoint_save_committed":
            blocking = f" (blocked the caller {f['blocking_seconds']:.3f} s)" if f["is_async"] else ""
            _log.info(
                "saved %s (%d tensors, %s) in %.3f s, %s%s",
                f["path"],
                f["num_tensors"],
                human_bytes(f["nbytes"]),
                f["seconds"],
                _rate(f["nbytes"], f["seconds"]),
                blocking,
            )
        elif hook == "trackpoint_restore_finished":
            # A value restored on creation, after the restore call: DEBUG (they can be many, one each).
            _log.log(
                logging.DEBUG if f.get("on_creation") else logging.INFO,
                "restored %s (%d tensors, %s) in %.3f s, %s%s",
                f["path"],
                f["num_tensors"],
                human_bytes(f["nbytes"]),
                f["seconds"],
                _rate(f["nbytes"], f["seconds"]),
                " on creation" if f.get("on_creation") else "",
            )
        elif hook == "trackpoint_checkpoint_deleted" and f["error"] is None:
            _log.info("deleted %s (%s) in %.3f s", f["path"], f["reason"], f["seconds"])
        elif hook == "trackpoint_checkpoint_deleted" and f["reason"] == "retention":
            # WARNING: retention swallows the error (the checkpoint stays listed and the
            # next save retries), so this line is all a caller without observers learns.
            _log.warning("could not delete old checkpoint %s (the next save retries): %s", f["path"], f["error"])
        elif hook in ("trackpoint_save_failed", "trackpoint_restore_failed", "trackpoint_checkpoint_deleted"):
            # INFO, not WARNING: the caller gets the exception and decides whether
            # it is a problem (a restore that finds a mismatch may be expected).
            _log.info(
                "%s of %s failed after %.3f s: %s: %s",
                _operation(hook),
                f["path"],
                f["seconds"],
                type(f["error"]).__name__,
                f["error"],
            )
        elif not _log.isEnabledFor(logging.DEBUG):
            return
        elif hook == "trackpoint_save_started":
            _log.debug(
                "saving %s with backend %r (%s): %d tensors, %s%s",
                f["path"],
                f["backend"],
                f["operation"],
                f["num_tensors"],
                human_bytes(f["total_bytes"]),
                ", asynchronously" if f["is_async"] else "",
            )
        elif hook == "trackpoint_restore_started":
            _log.debug(
                "restoring %s with backend %r (%s): %d tensors, %s stored",
                f["path"],
                f["backend"],
                f["operation"],
                f["num_tensors"],
                human_bytes(f["total_bytes"]),
            )
        elif hook == "trackpoint_save_progress":
            _log.debug(
                "saving %s: %s of %s written", f["path"], human_bytes(f["written_bytes"]), human_bytes(f["total_bytes"])
            )
        elif hook == "trackpoint_restore_progress":
            _log.debug(
                "restoring %s: %s of %s read", f["path"], human_bytes(f["read_bytes"]), human_bytes(f["total_bytes"])
            )


class _Bar(_Listener):
    """A tqdm bar on stderr for one save or restore."""

    name = "progress bar"

    def __init__(self, tqdm: Any, verb: str) -> None:
        self._tqdm = tqdm
        self._verb = verb
        self._bar: Any = None

    def event(self, hook: str, f: dict[str, Any]) -> None:
        if hook.endswith("_started"):
            self._bar = self._tqdm(
                total=f["total_bytes"],
                desc=f"{self._verb} {_short(f['path'])}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
                file=sys.stderr,
            )
        elif self._bar is None:
            return
        elif hook.endswith("_progress"):
            done = f["written_bytes"] if "written_bytes" in f else f["read_bytes"]
            # A string tensor's estimate may be low: let the total grow rather than overflow.
            if done > self._bar.total:
                self._bar.total = done
            self._bar.update(done - self._bar.n)
        else:
            self._bar.close()
            self._bar = None


def _short(path: str) -> str:
    """The last two components of a path, enough to tell saves apart on one line."""
    parts = path.rstrip("/").rsplit("/", 2)
    return "/".join(parts[-2:]) if len(parts) > 1 else path


_tqdm_class: Any = None


def _tqdm() -> Any:
    """``tqdm.tqdm``, or ``None`` when the ``progress`` extra is not installed (imported on first use)."""
    global _tqdm_class
    if _tqdm_class is None:
        try:
            from tqdm import tqdm
        except ImportError:
            _tqdm_class = False
        else:
            _tqdm_class = tqdm
    return _tqdm_class or None


def _bar_wanted(progress: bool | None) -> bool:
    """Whether a bar may be drawn (its size is checked later): not turned off, and stderr is a terminal."""
    if progress is False:
        return False
    if os.environ.get(ENV_PROGRESS, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def _notify(listeners: Sequence[_Listener], hook: str, fields: dict[str, Any]) -> None:
    """Give every listener the event; one that fails is logged and the others still get it."""
    for listener in listeners:
        try:
            listener.event(hook, fields)
        except Exception as exc:  # noqa: BLE001 - a listener's failure never fails the operation
            _log.warning(
                "trackpoint %s failed in %s for %s: %s: %s",
                listener.name,
                hook,
                fields["path"],
                type(exc).__name__,
                exc,
            )


def _listeners(progress: bool | None, total: Callable[[], int], verb: str) -> list[_Listener] | None:
    """The listeners of one save or restore, or ``None`` when nobody listens (the cheap path)."""
    relay = _relay
    log = _log.isEnabledFor(logging.INFO)
    bar = _bar_wanted(progress)
    if relay is None and not log and not bar:
        return None
    found: list[_Listener] = []
    if relay is not None:
        found.append(_Plugins(relay))
    if log:
        found.append(_Log())
    if bar and (progress is True or total() >= PROGRESS_MIN_BYTES):
        tqdm = _tqdm()
        if tqdm is not None:
            found.append(_Bar(tqdm, verb))
    return found or None


# ------------------------------------------------------------------ events
class _Events:
    """What :class:`SaveEvents` and :class:`RestoreEvents` share: listeners, the clock, throttled progress."""

    _PREFIX = ""
    _DONE_FIELD = ""

    def __init__(
        self,
        listeners: list[_Listener],
        fields: dict[str, Any],
        started: float,
    ) -> None:
        self._listeners = listeners
        self._fields = fields
        self._started = started
        self._lock = threading.Lock()
        self._done = 0
        self._last = 0.0
        self._open = True

    def _emit(self, hook: str, extra: dict[str, Any]) -> None:
        _notify(self._listeners, hook, {**self._fields, **extra})

    @property
    def seconds(self) -> float:
        """Seconds since the operation started."""
        return time.perf_counter() - self._started

    def progress(self, nbytes: int) -> None:
        """Count ``nbytes`` more bytes done; send a progress event if the last one is old enough.

        Thread-safe: shards written in parallel report here concurrently.
        """
        if nbytes <= 0:
            return
        with self._lock:
            if not self._open:
                return
            self._done += nbytes
            now = time.perf_counter()
            if now - self._last < PROGRESS_INTERVAL and self._done < self._fields["total_bytes"]:
                return
            self._last = now
            self._emit(
                f"trackpoint_{self._PREFIX}_progress", {self._DONE_FIELD: self._done, "seconds": now - self._started}
            )

    def _finish(self, hook: str, extra: dict[str, Any]) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            self._emit(hook, {"seconds": self.seconds, **extra})


class SaveEvents(_Events):
    """The events of one save: started (on creation), progress, then committed or failed.

    Made by :func:`save_events`. ``committed`` and ``failed`` may be called
    from another thread than the one that created the object (the writer
    thread of an asynchronous save); only the first of them counts.

    Attributes
    ----------
    blocking_seconds
        Seconds the caller of an asynchronous save was blocked, set by the
        save when its call returns. ``None`` (a synchronous save) reports the
        whole duration as blocking.
    """

    _PREFIX = "save"
    _DONE_FIELD = "written_bytes"

    def __init__(self, listeners: list[_Listener], fields: dict[str, Any], started: float) -> None:
        super().__init__(listeners, fields, started)
        self.blocking_seconds: float | None = None
        self._emit("trackpoint_save_started", {})

    def _blocking(self, seconds: float) -> float:
        return seconds if self.blocking_seconds is None else self.blocking_seconds

    def committed(self) -> None:
        """Report the commit: the checkpoint is visible."""
        seconds = self.seconds
        self._finish(
            "trackpoint_save_committed",
            {"nbytes": self._fields["total_bytes"], "seconds": seconds, "blocking_seconds": self._blocking(seconds)},
        )

    def failed(self, error: BaseException) -> None:
        """Report the failure ``error`` (the save was aborted)."""
        seconds = self.seconds
        self._finish(
            "trackpoint_save_failed", {"error": error, "seconds": seconds, "blocking_seconds": self._blocking(seconds)}
        )

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Within the block, ``StorageBackend.save`` reports the bytes it writes here."""
        token = _SAVE_EVENTS.set(self)
        try:
            yield
        finally:
            _SAVE_EVENTS.reset(token)

    def run(self, write: Callable[[], object]) -> None:
        """Call ``write`` (which writes and commits) within :meth:`writing`, then report commit or failure."""
        try:
            with self.writing():
                write()
        except BaseException as exc:
            self.failed(exc)
            raise
        self.committed()


class _NoEvents(SaveEvents):
    """The shared do-nothing events of an operation nobody listens to."""

    def __init__(self) -> None:  # no listeners, no start event
        self.blocking_seconds = None

    def progress(self, nbytes: int) -> None:
        return None

    def committed(self) -> None:
        return None

    def failed(self, error: BaseException) -> None:
        return None

    def finished(self, num_tensors: int | None = None) -> None:
        return None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        yield

    def run(self, write: Callable[[], object]) -> None:
        write()

    def wrap(self, reader: CheckpointReader) -> CheckpointReader:
        return reader


_NO_EVENTS: Final = _NoEvents()


def save_events(
    path: str,
    *,
    operation: str,
    backend: str,
    items: Sequence[WriteItem] | None = None,
    total_bytes: int | None = None,
    num_tensors: int | None = None,
    options: CheckpointOptions | None = None,
    is_async: bool = False,
    started: float | None = None,
) -> SaveEvents:
    """Start reporting a save of ``path``: fires ``trackpoint_save_started`` when somebody listens.

    Parameters
    ----------
    path
        The checkpoint prefix (or file) written.
    operation
        ``"checkpoint"``, ``"saver"`` or ``"convert"`` (see the hook reference).
    backend
        The writing backend's name.
    items
        The tensors written; sizes and count are taken from them, only when somebody listens.
    total_bytes, num_tensors
        Instead of ``items``, when the caller knows them.
    options
        The save's options; ``options.progress`` controls the bar.
    is_async
        An asynchronous save (its caller sets :attr:`SaveEvents.blocking_seconds`).
    started
        ``time.perf_counter()`` when the save was called, if earlier than now.

    Returns
    -------
    SaveEvents
        A shared object whose methods do nothing when nobody listens.
    """
    progress = getattr(options, "progress", None)

    def total() -> int:
        nonlocal total_bytes
        if total_bytes is None:
            total_bytes = sum(it.nbytes for it in items) if items is not None else 0
        return total_bytes

    verb = "convert" if operation == "convert" else "save"
    listeners = _listeners(progress, total, verb)
    if listeners is None:
        if not is_async:
            return _NO_EVENTS
        # An async save is always observed, by itself: the shards' reports release its pinned
        # values as they are written (trackpoint._async.items_passed).
        listeners = []
    fields = {
        "path": path,
        "operation": operation,
        "backend": backend,
        "total_bytes": total(),
        "num_tensors": num_tensors if num_tensors is not None else len(items or ()),
        "is_async": is_async,
    }
    return SaveEvents(listeners, fields, time.perf_counter() if started is None else started)


# ------------------------------------------------------------------ restores
class RestoreEvents(_Events):
    """The events of one restore: started (on creation), progress, then finished or failed.

    Made by :func:`restore_events`. Reads are counted through the reader
    :meth:`wrap` returns.
    """

    _PREFIX = "restore"
    _DONE_FIELD = "read_bytes"

    def __init__(self, listeners: list[_Listener], fields: dict[str, Any], started: float) -> None:
        super().__init__(listeners, fields, started)
        self._tensors = 0
        self._emit("trackpoint_restore_started", {})

    def _read(self, tensors: int, nbytes: int, seconds: float = 0.0) -> None:
        with self._lock:
            if self._open:
                self._tensors += tensors
            else:
                # After the call returned: a value restored when it was created (restore on
                # creation) is reported as a restore of its own.
                self._restored_on_creation(tensors, nbytes, seconds)
                return
        self.progress(nbytes)

    def _restored_on_creation(self, tensors: int, nbytes: int, seconds: float) -> None:
        """Fire a started/finished pair for what a restore on creation read (``self._lock`` held).

        The checkpoint's path, operation and backend; the tensors and bytes of
        that read. Progress bars are left out (a bar per created value would be
        noise) and the log writes the line at DEBUG, not INFO.
        """
        fields = {**self._fields, "total_bytes": nbytes, "num_tensors": tensors, "on_creation": True}
        listeners = [listener for listener in self._listeners if not isinstance(listener, _Bar)]
        for hook, extra in (
            ("trackpoint_restore_started", {"seconds": 0.0}),
            ("trackpoint_restore_finished", {"seconds": seconds, "nbytes": nbytes}),
        ):
            _notify(listeners, hook, {**fields, **extra})

    def finished(self, num_tensors: int | None = None) -> None:
        """Report the end of the restore call."""
        self._finish(
            "trackpoint_restore_finished",
            {"nbytes": self._done, "num_tensors": self._tensors if num_tensors is None else num_tensors},
        )

    def failed(self, error: BaseException) -> None:
        """Report the failure ``error``."""
        self._finish("trackpoint_restore_failed", {"error": error})

    def wrap(self, reader: CheckpointReader) -> CheckpointReader:
        """``reader``, counting what is read through it while the restore runs."""
        return _CountingReader(reader, self)


def restore_events(
    path: str,
    reader: CheckpointReader,
    *,
    operation: str,
    backend: str | Callable[[], str],
    options: CheckpointOptions | None = None,
    started: float | None = None,
) -> RestoreEvents:
    """Start reporting a restore from the open ``reader``: fires ``trackpoint_restore_started`` when somebody listens.

    ``backend`` is the reading backend's name, or a function giving it (called
    only when somebody listens: finding out may cost a request).

    Returns
    -------
    RestoreEvents
        A shared object whose methods do nothing (and whose ``wrap`` returns
        the reader itself) when nobody listens.
    """
    progress = getattr(options, "progress", None)
    infos: list[TensorInfo] = []

    def total() -> int:
        if not infos:
            infos.extend(reader.info(key) for key in reader.keys())
        return sum(info.nbytes for info in infos)

    listeners = _listeners(progress, total, "restore")
    if listeners is None:
        return _NO_EVENTS  # type: ignore[return-value]  # the null object serves both kinds
    fields = {
        "path": path,
        "operation": operation,
        "backend": backend if isinstance(backend, str) else backend(),
        "total_bytes": total(),
        "num_tensors": len(infos),
    }
    return RestoreEvents(listeners, fields, time.perf_counter() if started is None else started)


def _nbytes(array: np.ndarray[Any, Any]) -> int:
    return 0 if array.dtype.kind == "O" else int(array.nbytes)


class _CountingReader(_ForwardingReader):
    """A reader that reports the bytes read through it to a restore's events."""

    def __init__(self, reader: CheckpointReader, events: RestoreEvents) -> None:
        self._reader = reader
        self._events = events
        self.prefix = reader.prefix

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        started = time.perf_counter()
        array = self._reader.read(key, out)
        self._events._read(1, _nbytes(array), time.perf_counter() - started)
        return array

    def read_slice(
        self,
        key: str,
        offset: Sequence[int],
        shape: Sequence[int],
        out: np.ndarray[Any, Any] | None = None,
    ) -> np.ndarray[Any, Any]:
        started = time.perf_counter()
        array = self._reader.read_slice(key, offset, shape, out)
        self._events._read(1, _nbytes(array), time.perf_counter() - started)
        return array

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        # In batches, so progress moves during one big read_many; a batch stays
        # large enough that backends still coalesce and parallelize within it.
        results: list[np.ndarray[Any, Any]] = []
        batch: list[tuple[str, np.ndarray[Any, Any] | None]] = []
        held = 0
        for request in requests:
            batch.append(request)
            out = request[1]
            held += 0 if out is None else _nbytes(out)
            if held >= _READ_BATCH:
                results += self._read_batch(batch)
                batch, held = [], 0
        if batch:
            results += self._read_batch(batch)
        return results

    def _read_batch(self, batch: list[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        started = time.perf_counter()
        arrays = self._reader.read_many(batch)
        self._events._read(len(arrays), sum(_nbytes(a) for a in arrays), time.perf_counter() - started)
        return arrays

    def close(self) -> None:
        self._reader.close()

    def __getattr__(self, name: str) -> Any:
        # Anything else a particular reader offers (a backend's extras) is its own.
        return getattr(self._reader, name)


# ------------------------------------------------------------------ deletes
def delete_checkpoint(
    store: StorageBackend, prefix: str, *, reason: str, backend: str | Callable[[], str] | None = None
) -> None:
    """``store.delete(prefix)``, reported by ``trackpoint_checkpoint_deleted``, done or failed.

    The one way trackpoint deletes a committed checkpoint, so that every
    delete is observable and logged in one place.

    Parameters
    ----------
    store
        The backend (or store view) that deletes.
    prefix
        The committed checkpoint's prefix.
    reason
        One of :data:`DELETE_REASONS`.
    backend
        The name of the backend that holds the checkpoint, or a function giving
        it (called, before the delete, only when somebody listens: finding out
        may cost a request); ``None`` for ``store.name``.

    Raises
    ------
    BaseException
        Whatever the delete raised, after the event reported it.
    """
    listeners = _listeners(False, lambda: 0, "delete")  # never a progress bar
    # Named while the checkpoint is still there to be found.
    name = None if listeners is None else _backend_name(store, backend)
    started = time.perf_counter()
    try:
        store.delete(prefix)
    except BaseException as exc:
        fields = {
            "path": prefix,
            "backend": store.name if name is None else name,
            "reason": reason,
            "error": exc,
            "seconds": time.perf_counter() - started,
        }
        # The log hears of every failure, also below INFO: a failed retention delete is a WARNING.
        others = [listener for listener in listeners or () if not isinstance(listener, _Log)]
        _notify([*others, _Log()], "trackpoint_checkpoint_deleted", fields)
        raise
    if listeners is not None:
        fields = {
            "path": prefix,
            "backend": name,
            "reason": reason,
            "error": None,
            "seconds": time.perf_counter() - started,
        }
        _notify(listeners, "trackpoint_checkpoint_deleted", fields)


def _backend_name(store: StorageBackend, backend: str | Callable[[], str] | None) -> str:
    if backend is None or isinstance(backend, str):
        return backend or store.name
    try:
        return backend()
    except Exception:  # noqa: BLE001 - naming the backend is no reason to skip (or fail) the delete
        return store.name


# ------------------------------------------------------------------ shard progress
def current_save() -> SaveEvents | None:
    """The events of the observed save running in this context (set by :meth:`SaveEvents.writing`), if any."""
    events: SaveEvents | None = _SAVE_EVENTS.get()
    return events


class _ShardReporter:
    __slots__ = ("events", "reported")

    def __init__(self, events: SaveEvents) -> None:
        self.events = events
        self.reported = 0

    def __call__(self, nbytes: int, item: WriteItem | None = None) -> None:
        self.reported += nbytes
        if item is not None:
            # The backend is done with the value: an async save that pinned it lets it go.
            _async.items_passed((item,))
        self.events.progress(nbytes)


def write_shard(
    events: SaveEvents,
    write: Callable[[str, ShardSpec, Sequence[WriteItem]], ShardResult],
    prefix: str,
    spec: ShardSpec,
    items: Sequence[WriteItem],
) -> ShardResult:
    """``write(prefix, spec, items)`` with :func:`shard_progress` set for it, then the rest of its bytes reported.

    Runs in whichever thread writes the shard (a pool thread of
    :meth:`StorageBackend.save <trackpoint.storage.StorageBackend.save>`).
    """
    reporter = _ShardReporter(events)
    token = _SHARD_PROGRESS.set(reporter)
    try:
        result = write(prefix, spec, items)
    finally:
        _SHARD_PROGRESS.reset(token)
    # Written: the commit reads no values, so an async save's pins on them can go now.
    _async.items_passed(items)
    rest = sum(it.nbytes for it in items) - reporter.reported
    if rest > 0:
        events.progress(rest)
    return result


# ------------------------------------------------------------------ write callbacks
def callback_arity(callback: Callable[..., Any]) -> int:
    """How a write callback is called: with the path (1) or with nothing (0), as TensorFlow decides.

    TensorFlow passes ``save_path`` to a callback that takes one parameter and
    nothing to one that takes none. Here a callback that can be called with
    one positional argument gets the path, else one that can be called with
    none gets nothing.

    Raises
    ------
    ArgumentTypeError
        (a ``TypeError``) ``callback`` is not callable, or can be called
        neither with the path nor without arguments (the message names it).
    """
    if not callable(callback):
        raise ArgumentTypeError(
            f"CheckpointOptions(experimental_write_callbacks=...) holds {callback!r}, which is not callable; "
            "pass functions taking the checkpoint path, or no argument"
        )
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return 1  # a builtin without a signature: TensorFlow's common case is one argument
    for arity, args in ((1, ("path",)), (0, ())):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return arity
    raise ArgumentTypeError(
        f"CheckpointOptions(experimental_write_callbacks=...): the callback {callback!r} takes {signature}; it "
        "must accept the checkpoint path as its only argument, or no argument (TensorFlow allows 0 or 1 parameters)"
    )


def run_write_callbacks(options: CheckpointOptions | None, path: str) -> None:
    """Call the write callbacks of ``options`` in order, each with ``path`` or nothing (see :func:`callback_arity`).

    An exception from a callback propagates to the caller of the save, as in
    TensorFlow; the callbacks after it are not called. The checkpoint is
    committed by then and stays.
    """
    callbacks = getattr(options, "experimental_write_callbacks", None)
    if not callbacks:
        return
    for callback in callbacks:
        if callback_arity(callback):
            callback(path)
        else:
            callback()
