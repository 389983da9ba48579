"""Asynchronous saves: a consistent snapshot when ``save`` is called, written by a background thread.

An async save (``CheckpointOptions(enable_async=True)``) splits a save in two:

* **the snapshot**, in the caller's thread. The object graph is serialized as
  for a synchronous save. Each value owned by a :class:`~trackpoint.Variable`
  is *pinned*, not copied: the writer gets a view of the variable's live
  buffer. Other values (``PythonState``, numpy attributes, what adapters
  return) are copied, unless nothing but the save can reach them: an array
  ``_serialize_to_tensors`` made for the save, or the host copy the node of
  a torch tensor numpy cannot share (on a GPU) made of it, which the node
  only keeps. One memory saved under several keys (tied weights) is copied
  once. A JAX array is immutable but not safe to hold either: a jitted
  function the program calls next may donate it, which deletes it. Its item
  makes its host copy when read (``storage._LazyItem``; a synchronous save
  gathers each array as the backend writes it), and the snapshot reads it:
  gathered before ``save`` returns, charged like a copy, and the save keeps
  no reference to the JAX array.
* **the write**, in a thread: the same save driver a synchronous save runs
  (the ``write`` callable the caller hands over), then the caller's
  follow-up (state file, retention) after the commit. The thread runs at the
  program's priority by default; on Linux :data:`NICENESS_ENV` can make it
  (and the threads it starts) nicer, so the program's work goes first and the
  write takes longer.

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

Warm buffers. A new buffer straight from the allocator is fresh memory: the
kernel faults in and zeroes each of its pages on first write, which costs
several times a copy (far more on a machine short of memory). So the buffers a
save no longer needs (the old values of the variables that swapped) are not
freed but kept in the saver's pool, and the next save's writes take a buffer of
the same dtype and shape from there: a training loop that saves every few steps
and assigns every variable meanwhile writes into warm memory only.

Memory. Each save has a byte budget (``async_memory_bytes``): the copies made
at snapshot time (what the program could change in place, and the host copies
of JAX arrays; other host copies the serialization makes anyway, as for a
synchronous save, do not count), the buffers given to writes while it is in
flight, and the warm buffers its saver keeps count against it. A write whose new buffer would
exceed it first frees kept buffers of other shapes, then waits for the writer
instead of allocating; a snapshot whose copies alone would exceed it is written
synchronously, which needs no copies. A value's pin and charged bytes are
released as soon as the backend reports it written (:func:`items_passed`):
the old buffer goes to the pool as far as the budget allows, a copy is freed.
The rest is released when the write (data and commit) has finished, before the
follow-up.

Failures. A save's exception is kept and raised by the next ``save``,
``sync()`` or restore of the object that started it. One never raised is
reported on stderr at interpreter exit, and the exit status is made non-zero
unless it is already (see :func:`_report_at_exit`).
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import mmap
import os
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeGuard

import numpy as np

from trackpoint import _signal_safe
from trackpoint.errors import ArgumentTypeError, InvalidArgumentError, SaveInProgressError, UnsupportedOptionError

if TYPE_CHECKING:
    # Not at run time: CheckpointOptions.__post_init__ imports this module while
    # trackpoint.storage is still being imported.
    from trackpoint.storage import CheckpointOptions, WriteItem
    from trackpoint.trackable import Trackable
    from trackpoint.variables import Variable

__all__ = ["DEFAULT_ASYNC_MEMORY_BYTES", "AsyncSaver", "enabled", "storage_options_of", "writable_buffer"]

#: Byte budget of one async save when ``CheckpointOptions.async_memory_bytes`` is ``None``.
DEFAULT_ASYNC_MEMORY_BYTES: Final = 2 * 1024**3

#: Niceness the writer thread of an async save adds to the main thread's (Linux): none, the program's priority.
#: A lower priority (10 was the default once) made a loop that saves every step 0.40x as fast as with
#: synchronous saves on a loaded 2-CPU machine: other processes won the CPUs and the next save waited for
#: the write. At the program's priority: 0.96x.
WRITER_NICENESS: Final = 0
#: Environment variable: the niceness to add instead of :data:`WRITER_NICENESS` (0 to 19; 0 keeps the priority).
NICENESS_ENV: Final = "TRACKPOINT_ASYNC_NICENESS"

_WHEN_BUSY: Final = ("wait", "raise")

# One lock for every pin and budget: held for bookkeeping only, never during I/O or copies of values.
_lock = threading.Lock()
_changed = threading.Condition(_lock)

# Reference counts tell whether a buffer is shared (module docstring); only CPython's are exact.
_EXACT_REFCOUNTS: Final = sys.implementation.name == "cpython"
# References to a pinned buffer that writable_buffer itself accounts for: the variable's
# attribute, the pin's view (through its memoryview or its base, see _writer_view),
# writable_buffer's local name and getrefcount's argument.
_OWN_REFERENCES: Final = 4
# How often a waiting write looks again whether the buffer is still shared.
_POLL_SECONDS: Final = 0.002
# References to an array an item alone holds: the WriteItem and getrefcount's argument.
_ITEM_ONLY_REFERENCES: Final = 2


def enabled(options: CheckpointOptions | None) -> TypeGuard[CheckpointOptions]:
    """Whether ``options`` ask for an asynchronous save (TensorFlow's two spellings).

    Raises
    ------
    ArgumentTypeError
        ``options`` is no ``CheckpointOptions`` (a dict, say): public calls refuse it by name first, this
        catches the others (``CheckpointManager.save``) before anything is written.
    """
    if options is None:
        return False
    try:
        return bool(options.enable_async or options.experimental_enable_async_checkpoint)
    except AttributeError:
        from trackpoint.storage import _options_refusal

        raise ArgumentTypeError(_options_refusal(options, None)) from None


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
    """Validate the async fields of ``options`` (called by ``CheckpointOptions.__post_init__``).

    Raises
    ------
    ArgumentTypeError
        ``async_memory_bytes`` is no int, or ``async_when_busy`` no str.
    InvalidArgumentError
        ``async_memory_bytes`` is negative, or ``async_when_busy`` names no policy.
    """
    from trackpoint.storage import _option_count

    budget = _option_count(
        "async_memory_bytes",
        options.async_memory_bytes,
        minimum=0,
        meaning=f"the bytes of copies one async save may hold, None for the default of {DEFAULT_ASYNC_MEMORY_BYTES} "
        "bytes, 0 to never copy",
    )
    object.__setattr__(options, "async_memory_bytes", budget)
    policy = options.async_when_busy
    if not isinstance(policy, str):
        raise ArgumentTypeError(
            f"CheckpointOptions.async_when_busy must be one of {', '.join(map(repr, _WHEN_BUSY))} (a str), "
            f"got {policy!r} ({type(policy).__name__})"
        )
    if policy not in _WHEN_BUSY:
        raise InvalidArgumentError(
            f"CheckpointOptions.async_when_busy must be one of {', '.join(map(repr, _WHEN_BUSY))}: 'wait' for "
            f"the save in flight to finish, 'raise' SaveInProgressError; got {policy!r}"
        )


class _Pin:
    """A variable's buffer that one or more in-flight saves still have to write."""

    __slots__ = ("buffer_id", "saves", "variable", "view")

    def __init__(self, variable: Variable, buffer: np.ndarray[Any, Any]) -> None:
        self.variable = variable
        # Which buffer (valid while ``view`` keeps it alive); not a reference, which would count.
        self.buffer_id = id(buffer)
        self.view: np.ndarray[Any, Any] | None = _writer_view(buffer)
        self.saves: list[_Save] = []

    def holds(self, buffer: np.ndarray[Any, Any]) -> bool:
        return self.view is not None and self.buffer_id == id(buffer)


def _writer_view(buffer: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The array the writer reads ``buffer`` through; it adds exactly one reference to ``buffer``.

    A reshape of an array built on a ``memoryview`` of the buffer: numpy bases
    every view the writer derives from it (byte views, reshapes) on that array,
    not on the buffer, so the buffer's reference count shows the program's views only and
    a write never waits because the writer is reading that value just then.
    Object arrays and dtypes the buffer protocol cannot carry (datetimes) get a
    plain view, based on the buffer: their writes wait while the writer holds
    a view of its own (see :func:`writable_buffer`).
    """
    if not buffer.dtype.hasobject and buffer.flags.c_contiguous and buffer.nbytes:
        try:
            raw = memoryview(buffer).cast("B")  # type: ignore[arg-type]  # numpy arrays export buffers
            return np.frombuffer(raw, dtype=buffer.dtype).reshape(buffer.shape)
        except (TypeError, ValueError, BufferError):
            pass
    return buffer.view()


def _pool_key(buffer: np.ndarray[Any, Any]) -> tuple[Any, ...] | None:
    """What a pooled buffer must match to replace ``buffer``; ``None`` when it is never pooled.

    Object arrays (strings) hold references, not bytes, and gain nothing from warm pages.
    """
    if buffer.dtype.hasobject or not buffer.nbytes:
        return None
    return (buffer.dtype, buffer.shape, buffer.strides)


class _BufferPool:
    """Warm buffers of one saver, for the copy-on-write writes of its next saves (see the module docstring).

    Guarded by the module's ``_lock``. Bytes kept here count against the
    budget of the saver's saves.
    """

    __slots__ = ("buffers", "generation", "nbytes")

    def __init__(self) -> None:
        # Oldest first: trimming frees the buffers unused for longest.
        self.buffers: dict[tuple[Any, ...], list[np.ndarray[Any, Any]]] = {}
        #: Bytes of the buffers here plus those being warmed up for here (reserved).
        self.nbytes = 0
        #: Bumped by clear(): a buffer warmed up for an earlier generation is not kept.
        self.generation = 0

    def take(self, key: tuple[Any, ...] | None) -> np.ndarray[Any, Any] | None:
        found = self.buffers.get(key) if key is not None else None
        if not found:
            return None
        buffer = found.pop()
        if not found:
            del self.buffers[key]  # type: ignore[arg-type]
        self.nbytes -= int(buffer.nbytes)
        return buffer

    def put(self, buffer: np.ndarray[Any, Any], key: tuple[Any, ...], *, reserved: bool = False) -> None:
        self.buffers.setdefault(key, []).append(buffer)
        if not reserved:
            self.nbytes += int(buffer.nbytes)

    def missing(self, keys: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Of ``keys`` (one per buffer wanted), those this pool holds no buffer for."""
        have = {key: len(found) for key, found in self.buffers.items()}
        out = []
        for key in keys:
            if have.get(key, 0):
                have[key] -= 1
            else:
                out.append(key)
        return out

    def trim(self, limit: int) -> None:
        """Free buffers, oldest shapes first, until at most ``limit`` bytes are kept."""
        while self.nbytes > max(0, limit) and self.buffers:
            key = next(iter(self.buffers))
            found = self.buffers[key]
            self.nbytes -= int(found.pop().nbytes)
            if not found:
                del self.buffers[key]

    def clear(self) -> None:
        self.buffers = {}
        self.nbytes = 0
        self.generation += 1


class _Save:
    """One save in flight: its pins, its budget, its outcome."""

    def __init__(
        self, description: str, budget: int, pool: _BufferPool | None = None, prefix: str | None = None
    ) -> None:
        self.description = description
        #: The checkpoint prefix it writes, when the caller named it (see :func:`writing`).
        self.prefix = prefix
        self.budget = budget
        #: Where the buffers it no longer needs go, and its writes' new buffers come from.
        self.pool = _BufferPool() if pool is None else pool
        #: Extra bytes held now: copies made at snapshot time plus buffers given to writes.
        self.held = 0
        #: The most ``held`` ever was (tests and benchmarks read it).
        self.peak = 0
        #: Writes that got a new buffer (of which ``warm`` from the pool), and writes that waited.
        self.swaps = 0
        self.warm = 0
        self.waits = 0
        self.pins: list[_Pin] = []
        #: ids of its items still registered in ``_passing``.
        self.passing: list[int] = []
        #: Passed items whose memory the backend still held when they were reported (items_passed).
        self.deferred: list[tuple[WriteItem, _Pin | None]] = []
        #: Copies made at snapshot time that several items hold (one memory under several keys), by id:
        #: how many of those items still hold it. Charged once, released with the last of them.
        self.shared: dict[int, int] = {}
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def charge(self, nbytes: int) -> None:
        self.held += nbytes
        self.peak = max(self.peak, self.held)


# Saves running now, and failed saves whose error nobody has been given yet (reported at exit).
_running: set[_Save] = set()
# The pinned items of the saves running now, by id (the WriteItem objects live as long as the
# save), for items_passed. Entries go when the value is passed or the save released.
_passing: dict[int, tuple[_Save, _Pin | None]] = {}
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
            unshared = _EXACT_REFCOUNTS and buf.flags.owndata and sys.getrefcount(buf) <= _OWN_REFERENCES
            del buf
            if unshared:
                target = _new_buffer(variable._value, pin.saves)
                if target is not None:
                    variable._pin = None
                    return target
            if not waited:
                waited = True
                for save in pin.saves:
                    save.waits += 1
            # Woken when a save releases its pins; polled meanwhile because, for the values
            # _writer_view cannot hide, a reference the writer holds only while it writes this
            # value also looks like a view, and is gone once that value is written.
            _changed.wait(_POLL_SECONDS)


def _new_buffer(value: np.ndarray[Any, Any], saves: Sequence[_Save]) -> np.ndarray[Any, Any] | None:
    """A buffer like ``value`` for a write while ``saves`` pin it, charged to each; ``None`` if over a budget.

    A warm one from a pool of ``saves`` when there is one; otherwise a new one,
    after freeing pooled buffers of other shapes if that makes it fit. Called
    with ``_lock`` held.
    """
    nbytes = int(value.nbytes)
    key = _pool_key(value)
    target: np.ndarray[Any, Any] | None = None
    source: _BufferPool | None = None
    for save in saves:
        target = save.pool.take(key)
        if target is not None:
            source = save.pool
            break
    # Taken from a pool, the buffer moves from the pool's bytes to the save's: the sum stays.
    for save in saves:
        if save.held + save.pool.nbytes + nbytes > save.budget:
            save.pool.trim(save.budget - save.held - nbytes)
            if save.held + save.pool.nbytes + nbytes > save.budget:
                if target is not None and source is not None:
                    source.put(target, key)  # type: ignore[arg-type]
                return None
    for save in saves:
        save.charge(nbytes)
        save.swaps += 1
        save.warm += target is not None
    return np.empty_like(value) if target is None else target


def _torch_host_copies(nodes: Sequence[Trackable]) -> dict[int, Any]:
    """The torch tensors of ``nodes`` whose serialization copies them to the host, by the id of that copy.

    A torch tensor held as an attribute or in a container is saved through a numpy array: a view of
    its memory for a CPU tensor, which the program can change in place, but a host copy made by the
    serialization itself for one numpy cannot share (on a GPU, or with a lazy conjugation). The node
    keeps that copy as its ``_value`` until the next save, and nothing writes to it: the program
    changes the tensor, not the copy. So it needs no second copy, and none is charged to the budget.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    from trackpoint._array_values import _NumpyValue

    out: dict[int, Any] = {}
    for node in nodes:
        if isinstance(node, _NumpyValue) and node._tensor is not None and not node._shared:
            out[id(node._value)] = node
    return out


def _host_copy(array: np.ndarray[Any, Any], host_copies: dict[int, Any]) -> bool:
    """Whether ``array`` is the host copy the node of a torch tensor made of it (see :func:`_torch_host_copies`).

    The caller has checked that only the item and the node's ``_value`` refer to ``array``.
    """
    node = host_copies.get(id(array))
    if node is None or node._value is not array:
        return False
    if array.base is not None:
        # A view: of the torch tensor the copy was made into (``Tensor.numpy()``), which only the view
        # holds; of anything else (another array, which others may hold), it is no private copy.
        base = array
        while isinstance(base.base, np.ndarray):
            base = base.base
        if not type(base.base).__module__.startswith("torch"):
            return False
    # Not the memory of the tensor itself (a CPU tensor's, shared with numpy), whatever the node thought.
    return not _in_tensor_memory(array, node._tensor)


def _in_tensor_memory(array: np.ndarray[Any, Any], tensor: Any) -> bool:
    """Whether ``array``'s bytes may lie in the memory of the torch ``tensor`` (``True`` when it cannot tell)."""
    try:
        if tensor.device.type != "cpu":
            return False  # numpy cannot see device memory: the array is a copy on the host
        storage = tensor.untyped_storage()
        low = int(storage.data_ptr())
        high = low + int(storage.nbytes())
    except Exception:  # noqa: BLE001 - torch fails its own ways; a shared value is copied, the safe side
        return True
    start, end = _byte_bounds(array)
    return start < high and low < end


def _byte_bounds(array: np.ndarray[Any, Any]) -> tuple[int, int]:
    """The first byte of ``array`` and one past its last (none for an empty array)."""
    if not array.size:
        start = int(array.__array_interface__["data"][0])
        return start, start
    # numpy 2 moved byte_bounds from the top level (numpy 1.26) to numpy.lib.array_utils.
    bounds = getattr(np, "byte_bounds", None) or np.lib.array_utils.byte_bounds
    start, end = bounds(array)
    return int(start), int(end)


def _memory_key(array: np.ndarray[Any, Any]) -> tuple[Any, ...] | None:
    """What two arrays holding the same bytes have alike: address, dtype, shape and strides; ``None`` for objects."""
    if array.dtype.hasobject or not array.nbytes:
        return None
    return (int(array.__array_interface__["data"][0]), array.dtype, array.shape, array.strides)


def _busy_ranks(options: CheckpointOptions, busy: bool) -> list[int]:
    """With a coordinator, the ranks whose previous save is still being written (``busy`` is this rank's).

    Ranks of a coordinated save must skip the same saves, or they fall an operation apart. Each rank's
    save ends a little after rank 0's (they read its outcome), so whether to refuse is decided by all of
    them: every rank refuses when any rank is busy. Every rank takes part, busy or not.
    """
    coordinator = options.coordinator
    if coordinator is None or coordinator.world_size == 1:
        return []
    from trackpoint.distributed._driver import collective, operation

    with operation(coordinator, "busy-check"):
        flags = collective(
            lambda: coordinator.all_gather(b"1" if busy else b"0"),
            "checking for saves in flight (async_when_busy='raise')",
            "busy flags",
            coordinator.rank,
        )
    return [rank for rank, flag in enumerate(flags) if flag == b"1"]


class AsyncSaver:
    """The async saves of one object (a ``Checkpoint``): at most one in flight, failures kept until raised."""

    def __init__(self) -> None:
        self._current: _Save | None = None
        self._warned_sync = False  # a save over the budget was written synchronously, and said so
        # Warm buffers for the copy-on-write writes of the next saves (module docstring).
        self._pool = _BufferPool()

    @property
    def pooled_bytes(self) -> int:
        """Bytes of warm buffers kept for the next saves (counted against their budget)."""
        return self._pool.nbytes

    @_signal_safe.guarded
    def free(self) -> None:
        """Free the warm buffers kept for later saves (``Checkpoint.close``); a save in flight keeps its own."""
        with _lock:
            self._pool.clear()

    @property
    def last(self) -> _Save | None:
        """The most recent save started (running or finished), for its figures."""
        return self._current

    def busy(self) -> bool:
        """Whether a save is being written now."""
        return self._current is not None and not self._current.done.is_set()

    @_signal_safe.guarded
    def begin(self, options: CheckpointOptions | None) -> None:
        """Before a save: wait for the one in flight (or refuse, by option), then raise its failure.

        Raises
        ------
        SaveInProgressError
            A save is in flight and ``options.async_when_busy`` is ``"raise"``.
        """
        if options is not None and options.async_when_busy == "raise":
            busy = self.busy()
            others = _busy_ranks(options, busy)
            if busy:
                assert self._current is not None
                what = f"{self._current.description} is still being written"
            elif others:
                what = f"the previous coordinated save is still being written by rank(s) {', '.join(map(str, others))}"
            if busy or others:
                raise SaveInProgressError(
                    f"{what} and this save was asked not to wait (CheckpointOptions(async_when_busy='raise')); "
                    "call sync() first, or save with async_when_busy='wait'"
                )
        self.sync("the next save")
        if enabled(options):
            # A bad environment variable fails the save here, before its events start or a save counter
            # moves: a save that started is followed by exactly one of committed and failed.
            writer_niceness()

    @_signal_safe.guarded
    def wait(self) -> None:
        """Wait for the save in flight, leaving a failure to be raised later (by :meth:`sync` or at exit)."""
        save = self._current
        if save is not None and save.thread is not threading.current_thread():
            save.done.wait()

    @_signal_safe.guarded
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

    @_signal_safe.guarded
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
        prefix: str | None = None,
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
            "the async save of '<path>'", for messages.
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
        prefix
            The checkpoint written, for :func:`writing`.

        The caller has called :meth:`begin`: nothing of this object is in flight.
        """
        from trackpoint.storage import WriteItem, _LazyItem
        from trackpoint.variables import Variable

        writer_niceness()  # a bad environment variable fails the save here, before anything is pinned
        budget = DEFAULT_ASYNC_MEMORY_BYTES if options.async_memory_bytes is None else options.async_memory_bytes
        # The program assigned values the last save had not written yet: it will likely do so
        # again, so buffers for this save's values are warmed up while it writes.
        warm_up = self._current is not None and self._current.swaps > 0
        save = _Save(description, budget, self._pool, prefix)
        # Variables whose own serialization hands over their buffer, which only assign* and restores
        # write. (Not the holder of a numpy attribute: its array is the user's, writable in place.)
        buffers = {
            id(node._value): node
            for node in nodes
            if isinstance(node, Variable) and type(node)._serialize_to_tensors is Variable._serialize_to_tensors
        }
        host_copies = _torch_host_copies(nodes)
        snapshot: list[WriteItem] = []
        to_copy: list[int] = []
        pinned: list[tuple[int, Variable]] = []
        copy_bytes = 0
        # JAX arrays, gathered from their devices below (their items make the host copy when read).
        to_gather: list[tuple[int, _LazyItem]] = []
        gather_bytes = 0
        # Items whose arrays are the same memory (a torch module's tied weights: one tensor under two
        # names) share one copy, counted once.
        copied: set[tuple[Any, ...]] = set()
        for index, item in enumerate(items):
            if type(item) is not WriteItem and isinstance(item, _LazyItem) and item.lazy:
                # Immutable, but deleted when the program donates it to a jitted function, which it may
                # do as soon as save returns: its host copy is made now and counts like a copy.
                to_gather.append((index, item))
                gather_bytes += item.nbytes
                snapshot.append(item)
                continue
            owner = buffers.get(id(item.array))
            if owner is not None and owner._value is item.array:
                pinned.append((index, owner))
            elif not (
                _EXACT_REFCOUNTS and item.array.flags.owndata and sys.getrefcount(item.array) <= _ITEM_ONLY_REFERENCES
            ) and not (
                # A torch tensor's host copy, which its node keeps too (see _torch_host_copies).
                _EXACT_REFCOUNTS
                and sys.getrefcount(item.array) <= _ITEM_ONLY_REFERENCES + 1
                and _host_copy(item.array, host_copies)
            ):
                # Reachable from elsewhere (a numpy attribute, a CPU torch tensor's memory, a custom
                # trackable's array): the program may change it in place, so it is copied now.
                to_copy.append(index)
                key = _memory_key(item.array)
                if key is None or key not in copied:
                    copy_bytes += item.nbytes
                if key is not None:
                    copied.add(key)
            snapshot.append(item)
        if copy_bytes + gather_bytes > budget:
            # The copies alone would exceed the budget: a synchronous save needs none (its backend
            # gathers each JAX array when it writes it, and lets it go after).
            if not self._warned_sync:
                # Once per object: the caller asked for a save in the background and blocks instead.
                self._warned_sync = True
                self._warn_sync(description, copy_bytes, gather_bytes, budget)
            write(list(items))
            if then is not None:
                then()
            return
        with _lock:
            # A smaller budget than the last save's, or copies to make: keep only what fits.
            self._pool.trim(budget - copy_bytes - gather_bytes)
        copies: dict[tuple[Any, ...], np.ndarray[Any, Any]] = {}
        for index in to_copy:
            item = snapshot[index]
            key = _memory_key(item.array)
            copy = copies.get(key) if key is not None else None
            if copy is None:
                copy = item.array.copy()
                if key is not None:
                    copies[key] = copy
            else:
                # Released when the last item holding it is written (see _release_early).
                save.shared[id(copy)] = save.shared.get(id(copy), 1) + 1
            snapshot[index] = replace(item, array=copy)
        del copies
        gathered = [index for index, _ in to_gather]
        for index, lazy in to_gather:
            # The lazy item (still in the caller's list) lets go of the JAX array: the program frees it.
            snapshot[index] = lazy.take()
        save.charge(copy_bytes + gather_bytes)
        with _lock:
            for index, variable in pinned:
                pin = variable._pin
                if pin is None or not pin.holds(variable._value):
                    pin = _Pin(variable, variable._value)
                    variable._pin = pin
                pin.saves.append(save)
                save.pins.append(pin)
                assert pin.view is not None
                item = replace(snapshot[index], array=pin.view)
                snapshot[index] = item
                _passing[id(item)] = (save, pin)
                save.passing.append(id(item))
            for index in (*to_copy, *gathered):
                # Released when written (items_passed).
                _passing[id(snapshot[index])] = (save, None)
                save.passing.append(id(snapshot[index]))
            _running.add(save)
            wanted: list[tuple[Any, ...]] = []
            if warm_up:
                keys = [key for _, variable in pinned if (key := _pool_key(variable._value)) is not None]
                wanted = self._pool.missing(keys)
        _register_exit_hooks()
        self._current = save
        if ready is not None:
            # The snapshot is taken: the caller's blocking part ends here.
            ready()
        try:
            _submit(lambda: _run(save, snapshot, write, then), save)
        except BaseException:
            _release(save)
            with _lock:
                _running.discard(save)
            save.done.set()
            raise
        if wanted:
            _submit(lambda: _warm_up(save, wanted))

    @staticmethod
    def _warn_sync(description: str, copy_bytes: int, gather_bytes: int, budget: int) -> None:
        """Say that ``description`` is written synchronously: its copies exceed the ``budget``, and what to do."""
        from trackpoint._units import human_bytes

        what = []
        advice = ["raise CheckpointOptions(async_memory_bytes=...) to save in the background"]
        if gather_bytes:
            what.append(f"{human_bytes(gather_bytes)} of JAX arrays to gather from their devices")
        if copy_bytes:
            what.append(
                f"{human_bytes(copy_bytes)} of numpy arrays and CPU torch tensors the program can change in "
                "place, outside trackpoint Variables"
            )
            advice.append("hold the largest of these numpy values in trackpoint Variables, which are not copied")
        logging.getLogger("trackpoint").warning(
            "%s: the values it must copy before it returns (%s) exceed async_memory_bytes (%s), so it is "
            "written synchronously, and so is every such save of this object (said once); %s",
            description,
            " and ".join(what),
            human_bytes(budget),
            ", or ".join(advice),
        )


class _Worker(threading.Thread):
    """A thread that runs the jobs handed to it (writes, warm-ups), reused by later saves.

    Starting a thread makes the caller wait until the new thread runs, which
    on a busy machine costs milliseconds of the caller's blocking time; an
    idle worker only has to be woken. A daemon: the saves in flight are waited
    for at exit by :func:`wait_all`, and an idle worker must not keep the
    interpreter alive. Workers idle for :data:`_IDLE_SECONDS` end.
    """

    def __init__(self, niceness: int) -> None:
        super().__init__(name="trackpoint-async", daemon=True)
        self.niceness = niceness
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self) -> None:
        _lower_priority(self.niceness)
        while True:
            try:
                job = self.jobs.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with _lock:
                    if self in _idle:
                        _idle.remove(self)
                        return
                continue  # taken by a save just now: its job is on the way
            try:
                job()
            finally:
                with _lock:
                    _idle.append(self)


# Workers waiting for a job; the most recently idle one is taken first (its stack is warm).
_idle: list[_Worker] = []
_IDLE_SECONDS: Final = 60.0


def _submit(job: Callable[[], None], save: _Save | None = None) -> None:
    """Run ``job`` in an idle worker, or a new one; it is ``save``'s writer (set before the job can end)."""
    with _lock:
        worker = _idle.pop() if _idle else None
    if worker is None:
        worker = _Worker(writer_niceness())
        worker.start()
    if save is not None:
        save.thread = worker
    worker.jobs.put(job)


def _forget_workers() -> None:
    # In a forked child the workers do not exist: jobs handed to them would never run.
    _idle.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def _warm_up(save: _Save, wanted: Sequence[tuple[Any, ...]]) -> None:
    """Put a buffer of each of ``wanted`` in ``save``'s pool, its pages faulted in, while the budget allows.

    Runs beside the writer. The bytes are reserved in the pool before the
    buffer is allocated, so the budget holds at every moment.
    """
    pool = save.pool
    page = mmap.PAGESIZE
    for key in wanted:
        dtype, shape, strides = key
        nbytes = int(dtype.itemsize * math.prod(shape))
        with _lock:
            if save.held + pool.nbytes + nbytes > save.budget:
                continue
            pool.nbytes += nbytes
            generation = pool.generation
        buffer: np.ndarray[Any, Any] | None = None
        try:
            buffer = np.empty(shape, dtype)
            if buffer.strides == strides:
                # One byte per page makes the kernel fault in (and zero) every page now.
                np.ndarray((nbytes,), np.uint8, buffer=buffer)[::page] = 0
            else:
                buffer = None
        except MemoryError:
            buffer = None
        with _lock:
            if pool.generation != generation:
                continue  # freed meanwhile (Checkpoint.close): keep nothing, the reservation went with it
            if buffer is None:
                pool.nbytes -= nbytes
            else:
                pool.put(buffer, key, reserved=True)


def items_passed(items: Sequence[WriteItem]) -> None:
    """The writer will not read ``items`` again: the values it pinned for them are the program's again.

    Called by :mod:`trackpoint.observe` when a backend reports an item written
    (:func:`~trackpoint.storage.shard_progress`) and when a shard is written. A
    pinned variable no other save needs is unpinned, so a write waiting for the
    writer (a view alive, the budget reached) goes ahead, in place, without
    waiting for the rest of the save. The extra memory the save holds for a
    passed item is released at once, so that writes waiting for the budget
    can take new buffers: the old buffer of a variable that moved to a new
    one goes to the pool (or is freed), a copy made at snapshot time is
    freed (see :func:`_release_early`). Memory the backend still refers to
    when it reports a value is tried again when the shard is reported
    written, then at the end of the save. Items of no async save are ignored.
    """
    global _deferred_items
    if not _passing and not _deferred_items:  # no async save in flight: the common case costs no lock
        return
    with _signal_safe.section, _changed:
        # The backend reported these items after it let go of the earlier ones (or the shard ended).
        passed = _retry_deferred()
        for item in items:
            entry = _passing.pop(id(item), None)
            if entry is None:
                continue
            save, pin = entry
            passed = True
            if pin is not None:
                if save not in pin.saves:
                    continue
                if pin.variable._pin is pin or len(pin.saves) > 1:
                    # The variable still lives in the pinned buffer (no memory was added for it),
                    # or another save still has to write the old one.
                    pin.saves.remove(save)
                    if not pin.saves and pin.variable._pin is pin:
                        pin.variable._pin = None
                    continue
            if not _release_early(save, pin, item):
                # The backend still holds the array (the bundle reports a value before the next one
                # replaces it in its loop): tried again at its next report, at the end of the shard,
                # else at the end of the save.
                save.deferred.append((item, pin))
                _deferred_items += 1
        if passed:
            _changed.notify_all()


# How many items wait in the ``deferred`` lists of the saves running now.
_deferred_items = 0


def _retry_deferred() -> bool:
    """Try again to release the memory of the deferred items of the running saves; whether any was."""
    global _deferred_items
    released = False
    if _deferred_items:
        for save in _running:
            still = [(item, pin) for item, pin in save.deferred if not _release_early(save, pin, item)]
            released |= len(still) < len(save.deferred)
            _deferred_items -= len(save.deferred) - len(still)
            save.deferred = still
    return released


def _release_early(save: _Save, pin: _Pin | None, item: WriteItem) -> bool:
    """Release the memory ``save`` holds for the passed ``item``; ``False`` if something else still holds it.

    ``pin`` is ``None`` for a copy made at snapshot time (freed), else the pin
    of a variable that moved to a new buffer while ``save`` alone still needed
    the old one (pooled or freed by :func:`_retire`). The writer's and the
    backend's lists keep their items until the save ends, and with them the
    arrays: so the item is made to refer to no memory first, keeping its
    dtype, shape and ``nbytes`` (what is left to read of a written item, for
    the index and progress counts): a read-only broadcast of one zero. Object
    arrays (strings: their ``nbytes`` is their content) stay charged until the
    save ends. Called with ``_lock`` held.
    """
    array = item.array
    if array.dtype.hasobject or not array.nbytes or not _EXACT_REFCOUNTS:
        return True  # nothing released early: charged until the save ends
    nbytes = int(array.nbytes)
    # Other items holding the same copy (pin is None for copies), not yet released.
    others = save.shared.get(id(array), 1) - 1 if pin is None else 0
    # References besides the item's: this name and getrefcount's argument, and the pin's.
    if sys.getrefcount(array) > (3 if pin is None else 4) + others or (pin is not None and array is not pin.view):
        return False
    # WriteItem is frozen for the program and the backends; the save made this one and owns it.
    object.__setattr__(item, "array", np.broadcast_to(np.zeros((), array.dtype), array.shape))
    if others:
        save.shared[id(array)] = others
        return True  # the copy stays, charged once, until the last item holding it is released
    save.shared.pop(id(array), None)
    del array  # a copy is freed here
    save.held -= nbytes
    if pin is not None:
        pin.saves.remove(save)
        if not _retire(pin, save):
            save.held += nbytes  # someone else refers to the old buffer: charged until the save ends
    return True


def _release(save: _Save) -> None:
    """The save no longer needs its pins and copies: unpin, uncharge, pool old buffers, wake waiting writes."""
    global _deferred_items
    with _changed:
        for key in save.passing:
            _passing.pop(key, None)
        save.passing = []
        _deferred_items -= len(save.deferred)
        save.deferred = []
        save.shared = {}
        save.held = 0
        for pin in save.pins:
            if save in pin.saves:
                pin.saves.remove(save)
            if not pin.saves:
                if pin.variable._pin is pin:
                    pin.variable._pin = None
                _retire(pin, save)
        save.pins = []
        _changed.notify_all()


def _retire(pin: _Pin, save: _Save) -> bool:
    """No save needs ``pin`` any more: keep its buffer in ``save``'s pool if the variable moved off it.

    Only when nothing but the pin refers to it (no backend kept the array, the
    program took no view of it): a pooled buffer is overwritten by a later
    write. Returns whether the buffer is released (pooled, or freed on
    return); ``False`` when something else still refers to it, or it is the
    variable's own.
    """
    view = pin.view
    if view is None or not _EXACT_REFCOUNTS:
        return False
    # References counted below: pin.view, the local name and getrefcount's argument; for the links
    # of _writer_view's chain (view -> array on a memoryview -> memoryview -> buffer, or view ->
    # buffer), the link before each. More: a backend still holds the array; the pin stays for a
    # later try (the end of the save).
    if sys.getrefcount(view) > 3:
        return False
    holder = view.base
    if isinstance(holder, np.ndarray) and isinstance(holder.base, memoryview):
        if sys.getrefcount(holder) > 3 or sys.getrefcount(holder.base) > 2:
            return False
        buffer = holder.base.obj
    else:
        buffer = holder
    pin.view = None
    del view, holder  # frees the array and its memoryview: nothing of the writer's is left
    if not isinstance(buffer, np.ndarray) or buffer is pin.variable._value or sys.getrefcount(buffer) > 2:
        return False
    key = _pool_key(buffer)
    if key is not None and save.held + save.pool.nbytes + buffer.nbytes <= save.budget:
        save.pool.put(buffer, key)
    return True


def writer_niceness() -> int:
    """The niceness the writer adds: :data:`NICENESS_ENV` when set to an integer 0..19, else :data:`WRITER_NICENESS`.

    Raises
    ------
    ValueError
        The environment variable holds something else (the message names it).
    """
    raw = os.environ.get(NICENESS_ENV, "").strip()
    if not raw:
        return WRITER_NICENESS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ValueError(
            f"{NICENESS_ENV}={raw!r}: expected an integer from 0 (the writer keeps the program's priority) to 19"
        )
    return value


def _lower_priority(niceness: int) -> None:
    """Make this thread (and threads it starts, which inherit it) ``niceness`` nicer than the main thread.

    Asked for with :data:`NICENESS_ENV`: the writer competes with the program
    for the CPUs, and a program that would rather have its own work (the
    assignments a save must not hold up) win, at the price of a longer write,
    sets it. Where threads have no priority of their own (not Linux) or it
    cannot be changed, nothing happens.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return
    try:
        me = threading.get_native_id()
        # Relative to the main thread (its id is the process id), not to whichever thread started
        # this one: a worker started from another worker must not end up twice as nice.
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + niceness)
        if os.getpriority(os.PRIO_PROCESS, me) < target:
            os.setpriority(os.PRIO_PROCESS, me, target)
    except OSError:
        pass


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
            # The worker goes on to other saves' jobs: this save has no thread any more.
            save.thread = None
        save.done.set()


def writing(prefix: str) -> bool:
    """Whether an async save of this process is writing the checkpoint ``prefix`` now (not yet committed)."""
    with _lock:
        return any(save.prefix == prefix and not save.done.is_set() for save in _running)


@_signal_safe.guarded
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
    _record_exit_statuses()


# What the program passed to sys.exit, last call last (see _record_exit_statuses).
_exit_statuses: list[object] = []


def _record_exit_statuses() -> None:
    """Wrap ``sys.exit`` so that :func:`_report_at_exit` knows the status the program chose.

    Nothing else tells an exit handler: the interpreter keeps the status of a
    ``SystemExit`` to itself. The wrapper records the argument and calls the
    real ``sys.exit``; installed at the first async save, once.
    """
    original = sys.exit
    if getattr(original, "_trackpoint_records_status", False):
        return

    def recording_exit(status: Any = None, /) -> NoReturn:
        if threading.current_thread() is threading.main_thread():
            # Elsewhere sys.exit ends only its thread, never the program: its status is not the program's.
            _exit_statuses[:] = [status]
        original(status)

    functools.update_wrapper(recording_exit, original)
    recording_exit._trackpoint_records_status = True  # type: ignore[attr-defined]
    setattr(sys, "exit", recording_exit)  # noqa: B010 - the type checker refuses assigning to sys.exit


def _program_status() -> int:
    """The exit status the program is ending with, as far as trackpoint can tell (0 when it cannot).

    An uncaught exception (the interpreter set ``sys.last_value``) means 1; a
    ``sys.exit(status)`` (recorded by :func:`_record_exit_statuses`) means
    what the interpreter makes of ``status``: ``None`` is 0, an int itself,
    anything else 1. A ``SystemExit`` raised directly goes unseen, and so does
    one the program caught: its recorded status is taken as the program's.
    ``sys.exit`` in another thread ends that thread only and is not recorded.
    """
    if getattr(sys, "last_exc", None) is not None or getattr(sys, "last_value", None) is not None:
        return 1
    if not _exit_statuses:
        return 0
    status = _exit_statuses[-1]
    if status is None:
        return 0
    return status if isinstance(status, int) else 1


@_signal_safe.guarded
def _report_at_exit() -> None:
    """At interpreter exit: wait for saves; report failures nobody was given; make the exit status non-zero.

    A failure whose error was raised to the program (by ``save``, ``sync()`` or
    a restore) is the program's to handle and is not reported again. For the
    others, the error and its traceback go to stderr. Then, if the program is
    ending with a non-zero status anyway (an uncaught exception, a
    ``sys.exit(3)``), that status stands and the interpreter exits as usual.
    Otherwise the status must become 1, and an exit handler can do that only
    with ``os._exit(1)``: standard streams and logging handlers are flushed
    first, and since this handler is registered when trackpoint is imported
    (exit handlers run last registered first), only handlers registered
    before that import are skipped.
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
    if _program_status() != 0:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    os._exit(1)


# Registered now, not at the first async save: exit handlers run last registered first, and
# _report_at_exit may end the process, skipping those that have not run yet.
atexit.register(_report_at_exit)


def refuse(options: CheckpointOptions | None, what: str) -> None:
    """Raise :class:`UnsupportedOptionError` when ``options`` ask for an async save ``what`` cannot do."""
    if enabled(options):
        raise UnsupportedOptionError(
            f"{what} saves synchronously; CheckpointOptions(enable_async=True) is supported by Checkpoint.save, "
            "Checkpoint.write and CheckpointManager.save"
        )
