"""Asynchronous saves: a consistent snapshot when ``save`` is called, written by a background thread.

An async save (``CheckpointOptions(enable_async=True)``) splits a save in two:

* **the snapshot**, in the caller's thread. The object graph is serialized as
  for a synchronous save. Each value owned by a :class:`~trackpoint.Variable`
  is *pinned*, not copied: the writer gets a view of the variable's live
  buffer. Other values (``PythonState``, numpy attributes, what adapters
  return) are copied, unless nothing but the save can reach them (an array
  ``_serialize_to_tensors`` made for the save).
* **the write**, in a thread: the same save driver a synchronous save runs
  (the ``write`` callable the caller hands over), then the caller's
  follow-up (state file, retention) after the commit.

Copy-on-write. Every write to a Variable goes through ``assign``,
``assign_add``, ``assign_sub`` or a restore, and each of them calls
:func:`writable_buffer` first while the variable is pinned. That gives the
write a *new* buffer and leaves the old one, unchanged, to the writer: no copy
at all, the new value is computed straight into fresh memory. This is only
correct when nothing else can see the old buffer, because numpy views taken
from ``Variable.value`` follow later assignments and would stop doing so. A
view holds a reference to the buffer it was taken from (numpy collapses view
chains onto the array owning the memory), so the reference count of the
buffer tells exactly whether one exists; if one does, the write waits for the
writer to be done with the buffer and then goes in place, as without a save.

Memory. Each save has a byte budget (``async_memory_bytes``): the copies made
at snapshot time and the buffers given to writes while it is in flight count
against it. A write whose new buffer would exceed it waits for the writer
instead of allocating; a snapshot whose copies alone would exceed it is
written synchronously, which needs no copies. Pins and charged bytes are
released when the write (data and commit) has finished, before the follow-up.

Failures. A save's exception is kept and raised by the next ``save``,
``sync()`` or restore of the object that started it. One never raised is
reported on stderr at interpreter exit, and the process then ends with exit
status 1 (see :func:`_report_at_exit`).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, TypeGuard

import numpy as np

from trackpoint.errors import SaveInProgressError, UnsupportedOptionError

if TYPE_CHECKING:
    # Not at run time: CheckpointOptions.__post_init__ imports this module while
    # trackpoint.storage is still being imported.
    from trackpoint.storage import CheckpointOptions, WriteItem
    from trackpoint.trackable import Trackable
    from trackpoint.variables import Variable

__all__ = ["DEFAULT_ASYNC_MEMORY_BYTES", "AsyncSaver", "enabled", "storage_options_of", "writable_buffer"]

#: Byte budget of one async save when ``CheckpointOptions.async_memory_bytes`` is ``None``.
DEFAULT_ASYNC_MEMORY_BYTES: Final = 2 * 1024**3

_WHEN_BUSY: Final = ("wait", "raise")

# One lock for every pin and budget: held for bookkeeping only, never during I/O or copies of values.
_lock = threading.Lock()
_changed = threading.Condition(_lock)

# Reference counts tell whether a buffer is shared (module docstring); only CPython's are exact.
_EXACT_REFCOUNTS: Final = sys.implementation.name == "cpython"
# References to a pinned buffer that writable_buffer itself accounts for: the variable's
# attribute, the pin's view (its base), writable_buffer's local name and getrefcount's argument.
_OWN_REFERENCES: Final = 4
# How often a waiting write looks again whether the buffer is still shared.
_POLL_SECONDS: Final = 0.002
# References to an array an item alone holds: the WriteItem and getrefcount's argument.
_ITEM_ONLY_REFERENCES: Final = 2


def enabled(options: CheckpointOptions | None) -> TypeGuard[CheckpointOptions]:
    """Whether ``options`` ask for an asynchronous save (TensorFlow's two spellings)."""
    return options is not None and bool(options.enable_async or options.experimental_enable_async_checkpoint)


def storage_options_of(options: CheckpointOptions | None) -> CheckpointOptions | None:
    """``options`` without the fields that only say *how* a save runs (async, its budget).

    Backends are chosen and held per options; an async save must reach the
    same backend as a synchronous save or a restore with the same storage.
    """
    if options is None or (
        not enabled(options) and options.async_memory_bytes is None and options.async_when_busy == "wait"
    ):
        return options
    return replace(
        options,
        experimental_enable_async_checkpoint=False,
        enable_async=False,
        async_memory_bytes=None,
        async_when_busy="wait",
    )


def check_options(options: CheckpointOptions) -> None:
    """Validate the async fields of ``options`` (called by ``CheckpointOptions.__post_init__``)."""
    budget = options.async_memory_bytes
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise ValueError(
            f"CheckpointOptions.async_memory_bytes must be a non-negative int (bytes) or None for the default "
            f"of {DEFAULT_ASYNC_MEMORY_BYTES} bytes, got {budget!r}"
        )
    if options.async_when_busy not in _WHEN_BUSY:
        raise ValueError(
            f"CheckpointOptions.async_when_busy must be one of {', '.join(map(repr, _WHEN_BUSY))}, "
            f"got {options.async_when_busy!r}"
        )


class _Pin:
    """A variable's buffer that one or more in-flight saves still have to write."""

    __slots__ = ("saves", "variable", "view")

    def __init__(self, variable: Variable, buffer: np.ndarray[Any, Any]) -> None:
        self.variable = variable
        # The writer reads this view. However many places hold it, it adds exactly one
        # reference to the buffer, which _OWN_REFERENCES counts.
        self.view: np.ndarray[Any, Any] | None = buffer.view()
        self.saves: list[_Save] = []


class _Save:
    """One save in flight: its pins, its budget, its outcome."""

    def __init__(self, description: str, budget: int) -> None:
        self.description = description
        self.budget = budget
        #: Extra bytes held now: copies made at snapshot time plus buffers given to writes.
        self.held = 0
        #: The most ``held`` ever was (tests and benchmarks read it).
        self.peak = 0
        #: Writes that got a new buffer, and writes that waited for the writer.
        self.swaps = 0
        self.waits = 0
        self.pins: list[_Pin] = []
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def charge(self, nbytes: int) -> None:
        self.held += nbytes
        self.peak = max(self.peak, self.held)


# Saves running now, and failed saves whose error nobody has been given yet (reported at exit).
_running: set[_Save] = set()
_unreported: dict[int, _Save] = {}
_exit_hooks_registered = False


def writable_buffer(variable: Variable) -> np.ndarray[Any, Any]:
    """The buffer a write to the pinned ``variable`` goes to.

    Either a new, uninitialized buffer (the old one stays with the saves that
    pinned it; the caller computes the new value into it and makes it the
    variable's buffer), or, after waiting for those saves to finish writing,
    the variable's own buffer. Called by :class:`~trackpoint.Variable` before
    every in-place write while ``variable._pin`` is set.

    Raises
    ------
    SaveInProgressError
        Called from the writer thread of a save that pinned ``variable``
        (a write callback assigning a variable it is still writing): waiting
        would never end.
    """
    waited = False
    with _changed:
        while True:
            pin = variable._pin
            if pin is None:
                return variable._value
            me = threading.current_thread()
            if any(save.thread is me for save in pin.saves):
                raise SaveInProgressError(
                    f"Variable {variable.name!r} is assigned from the thread writing {pin.saves[0].description}, "
                    "which still has to write its value; assign it after the save (after sync()), not from "
                    "inside it"
                )
            buf = variable._value
            nbytes = int(buf.nbytes)
            if (
                _EXACT_REFCOUNTS
                and buf.flags.owndata
                and sys.getrefcount(buf) <= _OWN_REFERENCES
                and all(save.held + nbytes <= save.budget for save in pin.saves)
            ):
                for save in pin.saves:
                    save.charge(nbytes)
                    save.swaps += 1
                variable._pin = None
                del buf
                return np.empty_like(variable._value)
            del buf
            if not waited:
                waited = True
                for save in pin.saves:
                    save.waits += 1
            # Woken when a save releases its pins; polled meanwhile because a reference the
            # writer holds only while it writes this value also looks like a view, and is gone
            # once that value is written.
            _changed.wait(_POLL_SECONDS)


class AsyncSaver:
    """The async saves of one object (a ``Checkpoint``): at most one in flight, failures kept until raised."""

    def __init__(self) -> None:
        self._current: _Save | None = None

    @property
    def last(self) -> _Save | None:
        """The most recent save started (running or finished), for its figures."""
        return self._current

    def busy(self) -> bool:
        """Whether a save is being written now."""
        return self._current is not None and not self._current.done.is_set()

    def begin(self, options: CheckpointOptions | None) -> None:
        """Before a save: wait for the one in flight (or refuse, by option), then raise its failure.

        Raises
        ------
        SaveInProgressError
            A save is in flight and ``options.async_when_busy`` is ``"raise"``.
        """
        if options is not None and options.async_when_busy == "raise" and self.busy():
            assert self._current is not None
            raise SaveInProgressError(
                f"{self._current.description} is still being written and this save was asked not to wait "
                "(CheckpointOptions(async_when_busy='raise')); call sync() first, or save with "
                "async_when_busy='wait'"
            )
        self.sync("the next save")

    def wait(self) -> None:
        """Wait for the save in flight, leaving a failure to be raised later (by :meth:`sync` or at exit)."""
        save = self._current
        if save is not None and save.thread is not threading.current_thread():
            save.done.wait()

    def sync(self, by: str = "sync()") -> None:
        """Wait for the save in flight; raise its error if it failed (once: later calls return).

        Raises
        ------
        SaveInProgressError
            Called from the save's own writer thread (a write callback), where
            waiting would never end.
        BaseException
            Whatever the background save raised, with a note saying so.
        """
        save = self._current
        if save is None:
            return
        if save.thread is threading.current_thread():
            raise SaveInProgressError(
                f"{by} was called from the thread writing {save.description}, which would wait for itself; "
                "call it from another thread"
            )
        save.done.wait()
        with _lock:
            failed = _unreported.pop(id(save), None)
        if failed is not None and failed.error is not None:
            error = failed.error
            failed.error = None
            error.add_note(f"raised by {by}: {failed.description} failed in the background")
            raise error

    def start(
        self,
        items: Sequence[WriteItem],
        nodes: Sequence[Trackable],
        description: str,
        options: CheckpointOptions,
        write: Callable[[list[WriteItem]], None],
        then: Callable[[], None] | None = None,
        *,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """Snapshot ``items`` and run ``write`` on them (then ``then``) in a background thread.

        Parameters
        ----------
        items
            What a synchronous save of ``nodes`` would write (from
            ``serialize_object_graph``), object graph included.
        nodes
            The graph's objects; the items that are their variables' buffers
            are pinned instead of copied.
        description
            "async save of '<path>'", for messages.
        options
            The save's options (budget).
        write
            The save driver: writes and commits the items it is given.
        then
            Runs after a successful ``write`` in the same thread (state file,
            retention); its failure is the save's failure.
        ready
            Called once the snapshot is taken, before the thread starts (the
            caller's blocking time ends there).

        The caller has called :meth:`begin`: nothing of this object is in flight.
        """
        from trackpoint.storage import WriteItem
        from trackpoint.variables import Variable

        budget = DEFAULT_ASYNC_MEMORY_BYTES if options.async_memory_bytes is None else options.async_memory_bytes
        save = _Save(description, budget)
        # Variables whose own serialization hands over their buffer, which only assign* and restores
        # write. (Not the holder of a numpy attribute: its array is the user's, writable in place.)
        buffers = {
            id(node._value): node
            for node in nodes
            if isinstance(node, Variable) and type(node)._serialize_to_tensors is Variable._serialize_to_tensors
        }
        snapshot: list[WriteItem] = []
        to_copy: list[int] = []
        pinned: list[tuple[int, Variable]] = []
        copy_bytes = 0
        for index, item in enumerate(items):
            owner = buffers.get(id(item.array))
            if owner is not None and owner._value is item.array:
                pinned.append((index, owner))
            elif not (
                _EXACT_REFCOUNTS and item.array.flags.owndata and sys.getrefcount(item.array) <= _ITEM_ONLY_REFERENCES
            ):
                # Reachable from elsewhere (a numpy attribute, a custom trackable's array): copy now.
                to_copy.append(index)
                copy_bytes += item.nbytes
            snapshot.append(item)
        if copy_bytes > budget:
            # The copies alone would exceed the budget: a synchronous save needs none.
            write(list(items))
            if then is not None:
                then()
            return
        for index in to_copy:
            item = snapshot[index]
            snapshot[index] = WriteItem(item.key, item.array.copy())
        save.charge(copy_bytes)
        with _lock:
            for index, variable in pinned:
                pin = variable._pin
                if pin is None or pin.view is None or pin.view.base is not variable._value:
                    pin = _Pin(variable, variable._value)
                    variable._pin = pin
                pin.saves.append(save)
                save.pins.append(pin)
                assert pin.view is not None
                snapshot[index] = WriteItem(snapshot[index].key, pin.view)
            _running.add(save)
        _register_exit_hooks()
        thread = threading.Thread(
            target=_run, args=(save, snapshot, write, then), name="trackpoint-async-save", daemon=False
        )
        save.thread = thread
        self._current = save
        if ready is not None:
            # The snapshot is taken: the caller's blocking part ends here.
            ready()
        try:
            thread.start()
        except BaseException:
            _release(save)
            with _lock:
                _running.discard(save)
            save.done.set()
            raise


def _release(save: _Save) -> None:
    """The save no longer needs its pins and copies: unpin, uncharge, wake waiting writes."""
    with _changed:
        for pin in save.pins:
            if save in pin.saves:
                pin.saves.remove(save)
            if not pin.saves:
                if pin.variable._pin is pin:
                    pin.variable._pin = None
                pin.view = None
        save.pins = []
        save.held = 0
        _changed.notify_all()


def _run(
    save: _Save, items: list[WriteItem], write: Callable[[list[WriteItem]], None], then: Callable[[], None] | None
) -> None:
    """The writer thread: the save driver, the release of pins, then the follow-up."""
    try:
        try:
            write(items)
        finally:
            # The driver is done with the values: drop the views and copies before waking writes
            # that wait for memory, so the old buffers are really freed.
            items.clear()
            _release(save)
        if then is not None:
            then()
    except BaseException as exc:  # noqa: BLE001 - kept and raised to the caller by sync()/save/restore
        save.error = exc
        with _lock:
            _unreported[id(save)] = save
    finally:
        with _lock:
            _running.discard(save)
        save.done.set()


def wait_all() -> None:
    """Wait for every save in flight in this process."""
    while True:
        with _lock:
            running = [save for save in _running if save.thread is not threading.current_thread()]
        if not running:
            return
        for save in running:
            save.done.wait()


def _register_exit_hooks() -> None:
    global _exit_hooks_registered
    if _exit_hooks_registered:
        return
    _exit_hooks_registered = True
    # Wait for in-flight saves before concurrent.futures stops accepting work (its exit hook
    # runs in threading's shutdown, before atexit), since a save may start a thread pool.
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError("no threading._register_atexit")
        register(wait_all)
    except RuntimeError:
        atexit.register(wait_all)
    atexit.register(_report_at_exit)


def _report_at_exit() -> None:
    """At interpreter exit: wait for saves; report failures nobody was given, and exit with status 1.

    A failure whose error was raised to the program (by ``save``, ``sync()`` or
    a restore) is the program's to handle and is not reported again. For the
    others, the error and its traceback go to stderr; then standard streams and
    logging handlers are flushed and the process ends with ``os._exit(1)``,
    the only way to change the exit status from here (atexit handlers
    registered before trackpoint's are skipped).
    """
    wait_all()
    with _lock:
        failed = [save for save in _unreported.values() if save.error is not None]
        _unreported.clear()
    if not failed:
        return
    for save in failed:
        assert save.error is not None
        print(
            f"trackpoint: {save.description} failed in the background and its error was never raised "
            "(call sync() before exiting to handle it); the checkpoint was not written:",
            file=sys.stderr,
        )
        traceback.print_exception(save.error, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    os._exit(1)


def refuse(options: CheckpointOptions | None, what: str) -> None:
    """Raise :class:`UnsupportedOptionError` when ``options`` ask for an async save ``what`` cannot do."""
    if enabled(options):
        raise UnsupportedOptionError(
            f"{what} saves synchronously; CheckpointOptions(enable_async=True) is supported by Checkpoint.save, "
            "Checkpoint.write and CheckpointManager.save"
        )
