"""The storage contract: what trackpoint's core needs from a storage backend.

The core (trackables, the object graph, restore) never touches storage. The
:class:`~trackpoint.Checkpoint` facade, the manager and the readers talk to
storage only through :class:`StorageBackend` and :class:`CheckpointReader`,
defined here next to the code that consumes them. Backends (built-in or
third-party) implement them; :mod:`trackpoint.plugins` finds the backend for a
URL.

The save protocol
-----------------
Every writer of a checkpoint goes through the same explicit steps:
:meth:`StorageBackend.save`, :func:`trackpoint.convert`, a multi-process save
and third-party code alike. So several threads (now) and several worker
processes (later) can write one checkpoint, and each backend commits in the
way its store makes atomic:

1. ``begin(prefix, save_id, overwrite=...)`` -- :meth:`StorageBackend.begin`,
   called once per save by the process that will commit, before any shard is
   written. It refuses an existing checkpoint when ``overwrite`` is false and
   prepares the prefix otherwise (a store whose data objects take their final
   names at once deletes the old checkpoint here). ``save_id`` is unique to
   the save; the caller plans *shards*, each a list of :class:`WriteItem`
   named by a :class:`ShardSpec` (``shard_id`` of ``num_shards``, ``save_id``);
2. ``write_shard`` -- :meth:`StorageBackend.write_shard` writes one shard and
   returns a :class:`ShardResult`, a small serializable manifest. Shards are
   independent and may run concurrently, in threads or in other processes;
3. ``commit`` -- :meth:`StorageBackend.commit` merges the manifests into one
   checkpoint and makes it visible in a single step (a rename where the store
   has an atomic one, a create-only write of the index where it has not);
4. ``abort`` -- on failure after ``begin``, :meth:`StorageBackend.abort`
   removes what the save wrote.

``overwrite`` means the same in ``begin``, ``commit`` and ``save``: whether a
checkpoint committed at the prefix may be replaced. Its default is ``True``
in all three, as TensorFlow's saves overwrite; pass ``overwrite=False`` to get
:class:`~trackpoint.errors.CheckpointExistsError` instead. Pass the same value
to ``begin`` and ``commit`` of one save. It concerns committed checkpoints
only: what saves that never committed left at the prefix (a crashed save's
leftovers) blocks neither kind of save, so ``CheckpointManager``, which
commits numbers that are not its own with ``overwrite=False``, saves again
the number a killed save was writing.

Until ``commit`` returns, nothing new is visible: :meth:`StorageBackend.exists`
is false for a fresh prefix, :meth:`StorageBackend.list_checkpoints` omits it
and :meth:`StorageBackend.open_reader` raises :class:`CheckpointNotFoundError`.
A failed or interrupted save never damages another checkpoint (an overwrite
on a store without atomic rename may lose the checkpoint it replaces; such a
backend documents it).

:meth:`StorageBackend.save` runs steps 1-4 in one process on top of the
primitives; backends need not override it, and the built-in ones do not.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import uuid
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias

import numpy as np

from trackpoint._slices import TensorSlice, assemble, check_coverage, split_rows
from trackpoint.errors import (
    ArgumentTypeError,
    CheckpointExistsError,
    CheckpointKeyError,
    DTypeMismatchError,
    InvalidArgumentError,
    ShapeMismatchError,
)

if TYPE_CHECKING:
    from trackpoint.distributed import Coordinator

__all__ = [
    "ANY_VERSION",
    "MUST_NOT_EXIST",
    "OBJECT_GRAPH_KEY",
    "AnyVersion",
    "Capabilities",
    "CheckpointOptions",
    "CheckpointReader",
    "MustNotExist",
    "ShardResult",
    "ShardSpec",
    "StorageBackend",
    "TensorInfo",
    "TensorSlice",
    "VersionCondition",
    "VersionedBytes",
    "WriteItem",
    "assemble_slices",
    "check_coverage",
    "plan_shards",
    "shard_progress",
    "split_large",
    "version_condition",
]

#: Key under which the serialized ``TrackableObjectGraph`` is stored.
OBJECT_GRAPH_KEY: Final = "_CHECKPOINTABLE_OBJECT_GRAPH"


class AnyVersion:
    """Type of :data:`ANY_VERSION`: a write without a precondition. There is one instance."""

    _instance: ClassVar[AnyVersion | None] = None

    def __new__(cls) -> AnyVersion:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ANY_VERSION"

    def __reduce__(self) -> str:
        # Pickled (sent to another process) it stays the one instance.
        return "ANY_VERSION"


class MustNotExist:
    """Type of :data:`MUST_NOT_EXIST`: a write that fails if the file exists. There is one instance."""

    _instance: ClassVar[MustNotExist | None] = None

    def __new__(cls) -> MustNotExist:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MUST_NOT_EXIST"

    def __reduce__(self) -> str:
        return "MUST_NOT_EXIST"


#: Pass as ``if_version`` to :meth:`StorageBackend.write_file` to overwrite
#: whatever is there, without a precondition (the default).
ANY_VERSION: Final = AnyVersion()

#: Pass as ``if_version`` to :meth:`StorageBackend.write_file` to create the
#: file only if it does not exist yet (0.1 spelled this ``if_version=None``).
MUST_NOT_EXIST: Final = MustNotExist()

#: What ``if_version`` of :meth:`StorageBackend.write_file` accepts: a version
#: token (compare-and-swap), :data:`ANY_VERSION` or :data:`MUST_NOT_EXIST`.
VersionCondition: TypeAlias = str | AnyVersion | MustNotExist

# The 0.1 name of AnyVersion, for code that imported the private type.
_AnyVersion = AnyVersion


# Set while trackpoint itself passes the 0.1 spelling None to a backend (see _legacy_create_only).
_LEGACY_NONE: ContextVar[bool] = ContextVar("trackpoint_legacy_none", default=False)


@contextlib.contextmanager
def _legacy_create_only() -> Iterator[None]:
    """Internal: trackpoint's own create-only writes still pass ``None``, without a warning.

    ``None`` is the one spelling every backend understands for one more release: those written for
    0.1 know nothing else, current ones translate it with :func:`version_condition`. The warning is
    for callers, who can change; here the caller is trackpoint.
    """
    token = _LEGACY_NONE.set(True)
    try:
        yield
    finally:
        _LEGACY_NONE.reset(token)


def version_condition(if_version: VersionCondition | None) -> VersionCondition:
    """``if_version`` with the deprecated ``None`` replaced by :data:`MUST_NOT_EXIST`.

    Implementations of :meth:`StorageBackend.write_file` and
    ``FileLayer.write_versioned`` call it first, so that callers still passing
    ``None`` get a :class:`DeprecationWarning` naming the new spelling and
    the implementation sees only the three documented values. Backends must
    accept ``None`` this release: trackpoint's own state-file updates still
    pass it (quietly), so that backends written for 0.1 keep working.

    Raises
    ------
    TypeError
        ``if_version`` is none of the accepted values.
    """
    if if_version is None:
        if _LEGACY_NONE.get():
            return MUST_NOT_EXIST
        warnings.warn(
            "if_version=None is deprecated; pass if_version=MUST_NOT_EXIST (from trackpoint.storage) for a "
            "create-only write",
            DeprecationWarning,
            stacklevel=3,
        )
        return MUST_NOT_EXIST
    if isinstance(if_version, (str, AnyVersion, MustNotExist)):
        return if_version
    raise TypeError(
        f"if_version must be a version token (str), ANY_VERSION or MUST_NOT_EXIST, got {type(if_version).__name__}"
    )


def _option_mapping(name: str, value: object) -> dict[str, Any]:
    """``CheckpointOptions.<name>`` as a dict of its own; ``None`` is empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(
            f"CheckpointOptions.{name} must be a mapping of option names to values (or None), "
            f"got {type(value).__name__}"
        )
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ArgumentTypeError(
            f"CheckpointOptions.{name} takes option names as str keys, got {bad[0]!r} ({type(bad[0]).__name__})"
        )
    return dict(value)


def _option_flag(name: str, value: object) -> bool:
    """``CheckpointOptions.<name>``, a switch, as a ``bool`` (numpy's ``bool_``, ``None``, 0 and 1 count as one)."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)  # TensorFlow takes a switch by its truth; 0 and 1 come from configs and flags
    # Refused rather than taken for its truth: enable_async="no" would turn async saves on.
    raise ArgumentTypeError(
        f"CheckpointOptions.{name} must be True or False (or None, 0, 1), got {value!r} ({type(value).__name__})"
    )


def _option_count(name: str, value: object, *, minimum: int, meaning: str) -> int | None:
    """``CheckpointOptions.<name>``, a count of at least ``minimum`` (0 or 1), as an ``int``; ``None`` stays.

    numpy integers count as ints (they are stored as ``int``); ``bool`` does not.
    """
    if value is None:
        return None
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError  # an int to Python, but max_shard_bytes=True is a mistake
        number = operator.index(value)  # type: ignore[arg-type]  # refused below when it has no __index__
    except TypeError:
        raise ArgumentTypeError(
            f"CheckpointOptions.{name} must be an int or None, got {type(value).__name__} ({value!r}): {meaning}"
        ) from None
    if number < minimum:
        bound = "positive" if minimum == 1 else "a non-negative int"
        raise InvalidArgumentError(f"CheckpointOptions.{name} must be {bound}, got {number}: {meaning}")
    return number


#: What each count of :class:`CheckpointOptions` means, for the messages refusing a value.
_COUNTS: Final = {
    "max_shard_bytes": "the most bytes of one data shard, or None for the backend's default",
    "num_writers": "how many shards are written in parallel, or None for the backend's default",
}


def _options_argument(options: object, call: str | None) -> CheckpointOptions | None:
    """``options`` as given to ``call``, refused unless it is a :class:`CheckpointOptions` or ``None``.

    Public calls check their ``options`` argument first, so that a wrong value is refused by name
    before anything is read or written (a dict would otherwise fail deep inside, as an ``AttributeError``).
    ``call`` is ``None`` where the public call is not known (backend selection checks again for all).

    Raises
    ------
    ArgumentTypeError
        ``options`` is of another type; for a mapping, the message shows how to make options of it.
    """
    if options is None or isinstance(options, CheckpointOptions):
        return options
    raise ArgumentTypeError(_options_refusal(options, call))


def _options_refusal(options: object, call: str | None) -> str:
    """Why ``options`` given to ``call`` (``None``: a call not known here) is refused; see :func:`_options_argument`."""
    hint = (
        # The mapping's values may be credentials (storage_options): only its keys are shown.
        f"; to use a mapping of fields ({', '.join(map(repr, list(options)[:6]))}), pass "
        "trackpoint.CheckpointOptions(**options)"
        if isinstance(options, Mapping)
        else ""
    )
    where = f"{call}: " if call else ""
    return f"{where}options must be a trackpoint.CheckpointOptions or None, got {type(options).__name__}{hint}"


@dataclass(frozen=True, slots=True)
class CheckpointOptions:
    """Options for one save or restore; a frozen value object.

    Parameters
    ----------
    backend
        Name of the storage backend to use (``"bundle"``, ``"zarr"``, ``"s3"``,
        ``"gcs"``, ``"memory"`` or a plugin's name). ``None`` lets the URL
        scheme and the ``TRACKPOINT_BACKEND`` environment variable decide; see
        :doc:`/backends/index` for the precedence.
    storage_options
        Passed to the backend's store (for fsspec stores: ``endpoint_url``,
        ``key``/``secret``, ``token``, ...). Never logged or put in messages.
        A mapping with string keys, copied when the options are made;
        ``None`` counts as empty.
    backend_options
        Tuning read by one backend only (e.g. Zarr's ``compressor`` or
        ``chunk_bytes``); the core passes it through untouched. A mapping with
        string keys, copied when the options are made; ``None`` counts as
        empty.
    max_shard_bytes
        Upper bound on the bytes of one data shard; ``None`` for the backend's
        default. A single tensor larger than the bound gets a shard of its own.
    num_writers
        How many shards are written in parallel; ``None`` for the backend's
        default (one per CPU, capped).
    experimental_io_device
        TensorFlow's device for checkpoint I/O. Accepted so that TensorFlow
        code ports unchanged; it has no effect on numpy (there is no device).
    experimental_enable_async_checkpoint, enable_async
        TensorFlow's asynchronous save (either spelling): ``Checkpoint.save``,
        ``Checkpoint.write`` and ``CheckpointManager.save`` return once a
        consistent snapshot of every value is taken, and the write, commit,
        state-file update and retention go on in a background thread;
        ``sync()`` waits for them. Values of Variables are
        not copied: a variable assigned before its value was written gets a
        new buffer (copy-on-write). A failure is raised by the next ``save``,
        ``sync()`` or restore of the same object. See :doc:`/async`.
    async_memory_bytes
        Budget, in bytes, of the extra memory one async save may hold: the
        copies of values that are not variables, made when ``save`` is
        called, and the new buffers of variables assigned while it writes.
        An assignment that would exceed it waits for the save to finish
        writing instead; a save whose copies alone would exceed it is
        written synchronously. ``None`` means 2 GiB
        (``trackpoint._async.DEFAULT_ASYNC_MEMORY_BYTES``); ``0`` never copies.
    async_when_busy
        What a save does while this object's previous async save is still
        being written: ``"wait"`` (the default) for it to finish, ``"raise"``
        :class:`SaveInProgressError`. At most one save per object is in
        flight.
    experimental_write_callbacks
        TensorFlow's write callbacks: functions called, in order, after each
        save or write has committed (``Checkpoint.save``/``write``,
        ``CheckpointManager.save``, ``Saver.save``, :func:`trackpoint.convert`),
        with the committed path if they take an argument and with none if
        they take none (a callback that can take neither is a ``TypeError``
        here). They run before ``Checkpoint.save`` updates the state file and
        before ``CheckpointManager`` applies retention, as in TensorFlow; an
        exception from one propagates to the caller of the save (the
        checkpoint stays committed). For an asynchronous save they run in the
        writer thread. Stored as a tuple; not part of equality, so options
        that differ only in callbacks share one held backend.
    experimental_skip_slot_variables
        TensorFlow's switch to skip optimizer slot variables. Only the default
        (``False``) is implemented; ``True`` raises :class:`UnsupportedOptionError`.
    experimental_sharding_callback
        TensorFlow's callback deciding the shards. Not implemented (``None``
        only); bound shard sizes with ``max_shard_bytes`` instead.
    coordinator
        A :class:`trackpoint.distributed.Coordinator` when several processes
        save or restore one checkpoint together: every rank then makes the
        same call with the same path, each writes its share, one commits, and
        all get the same outcome (see ``docs/distributed.md``). ``None`` (the
        default) for a process on its own.
    progress
        Progress bar on stderr for this save or restore: ``None`` (default)
        draws one on a terminal for sizes of at least
        :data:`trackpoint.observe.PROGRESS_MIN_BYTES`, ``True`` for any size
        (still only on a terminal), ``False`` never. ``TRACKPOINT_PROGRESS=0``
        turns bars off everywhere. Needs the ``progress`` extra (tqdm). Not
        part of equality.
    """

    backend: str | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    max_shard_bytes: int | None = None
    num_writers: int | None = None
    experimental_io_device: str | None = None
    experimental_enable_async_checkpoint: bool = False
    experimental_write_callbacks: Sequence[Callable[..., Any]] | None = field(default=None, compare=False)
    enable_async: bool = False
    experimental_skip_slot_variables: bool = False
    experimental_sharding_callback: Any = None
    coordinator: Coordinator | None = None
    progress: bool | None = field(default=None, compare=False)
    async_memory_bytes: int | None = None
    async_when_busy: str = "wait"

    def __post_init__(self) -> None:
        # Every refusal is an InvalidArgumentError (a ValueError) or an ArgumentTypeError (a TypeError too),
        # raised here, when the options are made, rather than by the first save that uses them.
        for name in ("storage_options", "backend_options"):
            # A copy: the caller's dict may change later, these options may not (they key held backends).
            object.__setattr__(self, name, _option_mapping(name, getattr(self, name)))
        for name in ("experimental_enable_async_checkpoint", "enable_async", "experimental_skip_slot_variables"):
            object.__setattr__(self, name, _option_flag(name, getattr(self, name)))
        unsupported = [
            name
            for name, value in (
                ("experimental_skip_slot_variables", self.experimental_skip_slot_variables),
                ("experimental_sharding_callback", self.experimental_sharding_callback is not None),
            )
            if value
        ]
        if unsupported:
            from trackpoint.errors import UnsupportedOptionError

            raise UnsupportedOptionError(
                f"CheckpointOptions({', '.join(f'{n}=...' for n in unsupported)}): trackpoint accepts TensorFlow's "
                "field but does not implement a non-default value of it yet; leave it at its default (for shard "
                "sizes use max_shard_bytes)"
            )
        if self.experimental_write_callbacks is not None:
            given = self.experimental_write_callbacks
            if callable(given) or isinstance(given, (str, bytes)) or not hasattr(given, "__iter__"):
                hint = f"; for one callback pass [{getattr(given, '__name__', 'callback')}]" if callable(given) else ""
                raise ArgumentTypeError(
                    "CheckpointOptions.experimental_write_callbacks must be a sequence (a list or tuple) of "
                    f"functions, or None, got {type(given).__name__}{hint}"
                )
            callbacks = tuple(given)
            from trackpoint.observe import callback_arity

            for callback in callbacks:
                callback_arity(callback)  # raises ArgumentTypeError for one that cannot be called
            # A tuple: the caller's list may change later, these options may not.
            object.__setattr__(self, "experimental_write_callbacks", callbacks)
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ArgumentTypeError(f"CheckpointOptions.progress must be True, False or None, got {self.progress!r}")
        for name in ("backend", "experimental_io_device"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ArgumentTypeError(
                    f"CheckpointOptions.{name} must be a str or None, got {value!r} ({type(value).__name__})"
                )
        if self.backend is not None and self.backend.startswith(("/job:", "/device:", "/cpu:", "/gpu:")):
            # TensorFlow's first positional field is experimental_io_device; trackpoint's is backend.
            raise InvalidArgumentError(
                f"CheckpointOptions(backend={self.backend!r}): that is a device name, as TensorFlow's "
                "CheckpointOptions takes it first (experimental_io_device); trackpoint's first field is the "
                f"backend, so pass it by keyword: CheckpointOptions(experimental_io_device={self.backend!r})"
            )
        for name in ("max_shard_bytes", "num_writers"):
            count = _option_count(name, getattr(self, name), minimum=1, meaning=_COUNTS[name])
            object.__setattr__(self, name, count)
        if self.coordinator is not None:
            from trackpoint.distributed import Coordinator

            if not isinstance(self.coordinator, Coordinator):
                raise ArgumentTypeError(
                    "CheckpointOptions.coordinator must be a trackpoint.distributed.Coordinator (rank, world_size, "
                    f"timeout, barrier, all_gather, broadcast) or None, got {type(self.coordinator).__name__}"
                )
        from trackpoint import _async

        _async.check_options(self)

    def __repr__(self) -> str:
        # storage_options may carry credentials: show only their names.
        so = "{" + ", ".join(f"{k!r}: ..." for k in self.storage_options) + "}"
        return (
            f"CheckpointOptions(backend={self.backend!r}, storage_options={so}, "
            f"backend_options={dict(self.backend_options)!r}, max_shard_bytes={self.max_shard_bytes!r}, "
            f"num_writers={self.num_writers!r}"
            + ("" if self.coordinator is None else f", coordinator={self.coordinator!r}")
            + ")"
        )


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend's store can do, declared by the backend (never guessed from a URL).

    Parameters
    ----------
    atomic_rename
        Renaming a file is atomic (POSIX file systems). Commit by rename.
    conditional_create
        A write can be made to fail if the object exists (S3 ``If-None-Match``,
        GCS ``ifGenerationMatch=0``, ``O_EXCL``). Commit by create-only write.
    ranged_reads
        Part of an object can be read without reading all of it.
    parallel_writes
        Several shards may be written concurrently.
    listing_consistent
        A committed object shows up in listings immediately.
    """

    atomic_rename: bool = False
    conditional_create: bool = False
    ranged_reads: bool = True
    parallel_writes: bool = True
    listing_consistent: bool = True


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Dtype and shape of one stored tensor.

    Variable-length strings use ``numpy.dtype(object)`` holding ``bytes``.
    """

    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of a numeric tensor (0 for strings, whose size is data dependent)."""
        return 0 if self.dtype.kind == "O" else self.size * self.dtype.itemsize


@dataclass(frozen=True, slots=True, init=False)
class WriteItem:
    """One tensor, or one slice of a tensor, to save under ``key``.

    ``array`` is read while the shard is written and must not be mutated until
    :meth:`StorageBackend.write_shard` returns. String tensors are object
    arrays of ``bytes`` (``str`` elements are encoded as UTF-8).

    ``array`` may be made when it is read: a ``Checkpoint`` saving a JAX array
    hands over an item (a subclass) that gathers the array's host copy from
    its devices then, so that the copy lives only while the backend holds it.
    Read ``array`` when writing the item, keep no reference to it afterwards,
    and plan with :attr:`nbytes`, which is known without reading it: a backend
    doing so holds about one such copy per writer at a time; one reading
    every ``array`` up front and keeping them holds them all, as when every
    item held its array.

    ``slice``, when given, says that ``array`` is that part of the tensor
    ``key`` (``array.shape == slice.shape``). Items with slices of one key may
    come from several shards, written by several processes; the commit merges
    them into one tensor and refuses slices that overlap or leave a gap. Only
    backends with :attr:`StorageBackend.supports_slices` accept them in
    :meth:`StorageBackend.write_shard`; :meth:`StorageBackend.save` assembles
    them for the others.

    Raises
    ------
    ShapeMismatchError
        ``array`` does not have the slice's shape.
    """

    key: str
    array: np.ndarray[Any, Any]
    slice: TensorSlice | None = None

    def __init__(self, key: str, array: np.ndarray[Any, Any], slice: TensorSlice | None = None) -> None:  # noqa: A002  # the field's name
        # A save builds one item per tensor (10^5 of them for some models): the fields are set through
        # their slot descriptors, a third of the cost of the generated __init__'s object.__setattr__ calls.
        _set_key(self, key)
        _set_array(self, array)
        _set_slice(self, slice)
        if slice is not None and tuple(array.shape) != slice.shape:
            raise ShapeMismatchError(
                f"WriteItem {key!r}: the array has shape {tuple(array.shape)}, its slice "
                f"{slice.spec!r} has shape {slice.shape}"
            )

    @property
    def nbytes(self) -> int:
        """Bytes this item occupies (estimated for strings)."""
        if self.array.dtype.kind == "O":
            return sum(len(x) if isinstance(x, (bytes, str)) else 8 for x in self.array.flat) + 4
        return int(self.array.nbytes)


# The member descriptors of WriteItem's slots.
_set_key = vars(WriteItem)["key"].__set__
_set_array = vars(WriteItem)["array"].__set__
_set_slice = vars(WriteItem)["slice"].__set__
_get_array = vars(WriteItem)["array"].__get__


class _LazyItem(WriteItem):
    """A :class:`WriteItem` whose array is made when it is read (see there): ``make()``, each time it is needed.

    Built with a placeholder of the array's dtype and shape (which holds no
    memory: ``np.broadcast_to(np.zeros((), dtype), shape)``) and ``make``.
    While a reader holds the array made, reading ``array`` again gives that
    one; once nothing does, it is freed, and the next read makes it again:
    ``make`` must give the same values each time (the host copy of an
    immutable JAX array). :attr:`nbytes` is the placeholder's.

    Setting ``array`` (``object.__setattr__``, as an async save does to items
    it owns) or :func:`dataclasses.replace` gives a plain item; pickling and
    :meth:`take` make the array.
    """

    __slots__ = ("_held", "_make", "_nbytes")

    #: What makes the array, ``None`` once ``array`` was set (a plain item then).
    _make: Callable[[], np.ndarray[Any, Any]] | None
    #: The array last made, while something else holds it.
    _held: weakref.ref[np.ndarray[Any, Any]] | None
    #: Bytes of the array; -1 for strings (their size is their content's).
    _nbytes: int

    def __init__(
        self,
        key: str,
        array: np.ndarray[Any, Any],
        slice: TensorSlice | None = None,  # noqa: A002  # the field's name
        *,
        make: Callable[[], np.ndarray[Any, Any]] | None = None,
    ) -> None:
        super().__init__(key, array, slice)
        _set_make(self, make)
        _set_held(self, None)
        _set_nbytes(self, -1 if array.dtype.kind == "O" else int(array.nbytes))

    @property
    def array(self) -> np.ndarray[Any, Any]:
        """The array: the one a reader still holds, else made now."""
        make = self._make
        if make is None:
            return _get_array(self, WriteItem)  # type: ignore[no-any-return]
        held = self._held
        value = held() if held is not None else None
        if value is None:
            value = make()
            _set_held(self, weakref.ref(value))
        return value

    @array.setter
    def array(self, value: np.ndarray[Any, Any]) -> None:
        _set_array(self, value)
        _set_make(self, None)
        _set_held(self, None)
        _set_nbytes(self, -1 if value.dtype.kind == "O" else int(value.nbytes))

    @property
    def nbytes(self) -> int:
        """Bytes this item occupies (estimated for strings), without making the array."""
        return self._nbytes if self._nbytes >= 0 else WriteItem.nbytes.__get__(self)

    @property
    def lazy(self) -> bool:
        """Whether ``array`` is still made when read (not set since)."""
        return self._make is not None

    def take(self) -> WriteItem:
        """A plain item holding the array, made now; this item keeps the placeholder only.

        After it, this item refers to nothing ``make`` held (a JAX array: its device memory is the
        program's to free) and holds no values: only the new item is to be written.
        """
        taken = WriteItem(self.key, self.array, self.slice)
        object.__setattr__(self, "array", _get_array(self, WriteItem))  # the setter: frozen for others
        return taken

    def __reduce__(self) -> tuple[Any, ...]:
        return (WriteItem, (self.key, self.array, self.slice))

    def __repr__(self) -> str:
        placeholder = _get_array(self, WriteItem)
        if self._make is None:
            return f"WriteItem(key={self.key!r}, array={placeholder!r}, slice={self.slice!r})"
        return (
            f"WriteItem(key={self.key!r}, array=<made when read: shape {placeholder.shape}, dtype "
            f"{placeholder.dtype}>, slice={self.slice!r})"
        )


_set_make = vars(_LazyItem)["_make"].__set__
_set_held = vars(_LazyItem)["_held"].__set__
_set_nbytes = vars(_LazyItem)["_nbytes"].__set__


def _as_stored(item: WriteItem) -> np.ndarray[Any, Any]:
    """The array ``item`` holds, without making one made when read: then a placeholder of its dtype and shape.

    For planning from dtypes and shapes (a coordinated save's), where reading ``array`` would gather every
    JAX array's host copy, including those of values another rank writes.
    """
    return _get_array(item, WriteItem)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """Names one shard of one save.

    ``save_id`` is unique per save, so leftovers of a crashed save can never be
    mistaken for pieces of a new one.
    """

    shard_id: int
    num_shards: int
    save_id: str

    def __post_init__(self) -> None:
        if not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard_id {self.shard_id} is outside 0..{self.num_shards - 1}")


@dataclass(frozen=True, slots=True)
class ShardResult:
    """The manifest of one written shard, as returned by :meth:`StorageBackend.write_shard`.

    ``payload`` is backend-defined bytes (for the bundle backend: the shard's
    index entries). It is plain data, so manifests can be gathered from other
    processes (e.g. with ``torch.distributed``) and committed by one of them.
    """

    spec: ShardSpec
    keys: tuple[str, ...]
    nbytes: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class VersionedBytes:
    """Contents of a small file and an opaque version token for conditional writes."""

    data: bytes
    version: str


class CheckpointReader(ABC):
    """Read access to one committed checkpoint.

    Readers may hold open files or connections; close them with :meth:`close`
    or use the reader as a context manager. A reader must stay usable for as
    long as it is open even if a newer checkpoint is written elsewhere, since
    deferred restores read from it when objects are created later.
    """

    #: The checkpoint prefix (URL) this reader reads.
    prefix: str

    @abstractmethod
    def keys(self) -> Sequence[str]:
        """All tensor keys in the checkpoint, sorted, sliced pieces hidden."""

    @abstractmethod
    def info(self, key: str) -> TensorInfo:
        """Dtype and full shape of ``key``; raises :class:`CheckpointKeyError` if absent."""

    @abstractmethod
    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """Read the tensor under ``key``, verifying its checksum where the format has one.

        Parameters
        ----------
        key
            A key from :meth:`keys`.
        out
            Optional destination with exactly the stored dtype and shape,
            C-contiguous and writeable. Numeric data is read straight into it
            (no intermediate copy) and ``out`` is returned. Ignored for strings.

        Raises
        ------
        CheckpointKeyError
            No such key.
        DataLossError
            The stored bytes are truncated or fail their checksum. When ``out``
            was given it may then hold partial data.
        """

    def read_slice(
        self,
        key: str,
        offset: Sequence[int],
        shape: Sequence[int],
        out: np.ndarray[Any, Any] | None = None,
    ) -> np.ndarray[Any, Any]:
        """Read the part ``offset`` .. ``offset + shape`` of the tensor under ``key``.

        The checkpoint may hold the tensor whole or as slices of any
        partitioning (written by any number of processes); only what overlaps
        the requested part is needed.

        Parameters
        ----------
        key
            A key from :meth:`keys`.
        offset, shape
            The part to read, per dimension of the stored tensor.
        out
            Optional destination of the stored dtype and of ``shape``,
            C-contiguous and writeable; filled and returned. Ignored for strings.

        Raises
        ------
        CheckpointKeyError
            No such key.
        ValueError
            The part does not lie inside the stored tensor.
        ShapeMismatchError, DTypeMismatchError
            ``out`` does not fit.
        DataLossError
            The stored bytes are truncated or corrupted.

        Notes for implementers
        ----------------------
        The default reads the whole tensor and copies the part out. Backends
        whose store reads byte ranges override it to read only the bytes that
        overlap the part (the bundle and Zarr backends do).
        """
        info = self.info(key)
        part = TensorSlice(info.shape, tuple(offset), tuple(shape))
        whole = self.read(key)[part.index]
        return _deliver(key, whole, out)

    def has(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        try:
            self.info(key)
        except CheckpointKeyError:
            return False
        return True

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        """Read several tensors; backends override this to coalesce or parallelize I/O.

        The default reads one after another with :meth:`read`.
        """
        return [self.read(key, out) for key, out in requests]

    def close(self) -> None:  # noqa: B027 - optional hook, most readers hold nothing
        """Release files and connections. Reading after close is an error."""

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


class _ForwardingReader(CheckpointReader):
    """A reader that hands every read to the reader it wraps, ``_reader``; subclasses add what they hold.

    ``read_slice`` and ``read_many`` are forwarded too: the defaults would read whole tensors one by one
    where the wrapped reader reads only the bytes asked for, or many at once.
    """

    _reader: CheckpointReader

    def keys(self) -> Sequence[str]:
        # docstring inherited
        return self._reader.keys()

    def info(self, key: str) -> TensorInfo:
        # docstring inherited
        return self._reader.info(key)

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        return self._reader.read(key, out)

    def has(self, key: str) -> bool:
        # docstring inherited
        return self._reader.has(key)

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        # docstring inherited
        return self._reader.read_many(requests)

    def read_slice(
        self,
        key: str,
        offset: Sequence[int],
        shape: Sequence[int],
        out: np.ndarray[Any, Any] | None = None,
    ) -> np.ndarray[Any, Any]:
        # docstring inherited
        return self._reader.read_slice(key, offset, shape, out)


def ranged(reader: CheckpointReader) -> bool:
    """Whether ``reader.read_slice`` reads only the part asked for, or (the default) the whole tensor each time.

    A reader that wraps another (:class:`_ForwardingReader`) forwards ``read_slice``: the reader at the end
    decides.
    """
    while isinstance(reader, _ForwardingReader):
        reader = reader._reader
    return type(reader).read_slice is not CheckpointReader.read_slice


# Set by trackpoint.observe while an observed save runs in this context: its
# events (SaveEvents), and the byte reporter of the shard being written.
_SAVE_EVENTS: ContextVar[Any] = ContextVar("trackpoint_save_events", default=None)
_SHARD_PROGRESS: ContextVar[Callable[..., None] | None] = ContextVar("trackpoint_shard_progress", default=None)


def shard_progress() -> Callable[..., None] | None:
    """The byte reporter of the shard being written, or ``None`` when nobody watches this save.

    For backends: call it in :meth:`StorageBackend.write_shard` with the
    bytes of each tensor once they are written, so observers and progress
    bars (:mod:`trackpoint.observe`) move per tensor rather than per shard.
    Fetch it once per shard; when it is ``None``, the common case, skip the
    calls::

        report = shard_progress()
        for item in items:
            ...  # write the tensor
            if report is not None:
                report(item.array.nbytes, item)

    The second argument, the :class:`WriteItem` itself, is optional; passing
    it says that the backend will not read ``item.array`` again in this save,
    which lets an asynchronous save release that value at once (a write to
    the variable waiting for the writer goes ahead) rather than when the shard
    is written. Pass it only after the last read of the array.

    Optional: the bytes a backend does not report are reported for it when
    ``write_shard`` returns, never twice.
    """
    return _SHARD_PROGRESS.get()


def _deliver(key: str, value: np.ndarray[Any, Any], out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
    """``value`` copied into ``out`` (checked) when one is given and it is numeric, else ``value``."""
    if out is None or value.dtype.kind == "O":
        return np.ascontiguousarray(value) if value.ndim else value.copy()
    if out.dtype != value.dtype:
        raise DTypeMismatchError(f"cannot read {key!r} ({value.dtype}) into an array of dtype {out.dtype}")
    if tuple(out.shape) != tuple(value.shape):
        raise ShapeMismatchError(
            f"cannot read a part of {key!r} of shape {value.shape} into an array of shape {out.shape}"
        )
    np.copyto(out, value)
    return out


def _default_writers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def split_large(items: Sequence[WriteItem], max_shard_bytes: int | None) -> list[WriteItem]:
    """``items`` with every numeric tensor larger than ``max_shard_bytes`` cut into slices that fit.

    TensorFlow's ``MaxShardSizePolicy`` for one process: a large tensor is cut
    along its first dimension into slices of at most ``max_shard_bytes``
    (whole rows; a single row larger than the bound stays one slice), so
    :func:`plan_shards` can put each in a data file of bounded size. An item
    that already is a slice is cut within its slice. Strings, scalars and
    tensors with one row stay whole. Use it only for a backend with
    :attr:`StorageBackend.supports_slices`.
    """
    if max_shard_bytes is None:
        return list(items)
    out: list[WriteItem] = []
    for it in items:
        if it.nbytes <= max_shard_bytes:
            # Without reading the array, which may be made when read (see WriteItem).
            out.append(it)
            continue
        arr = it.array
        if arr.dtype.kind == "O" or arr.ndim == 0 or arr.shape[0] <= 1:
            out.append(it)
            continue
        base = it.slice or TensorSlice.full(arr.shape)
        row_bytes = arr.nbytes // arr.shape[0]
        for piece in split_rows(arr.shape, row_bytes, max_shard_bytes):
            rows = slice(piece.offset[0], piece.offset[0] + piece.shape[0])
            offset = (base.offset[0] + piece.offset[0], *base.offset[1:])
            out.append(WriteItem(it.key, arr[rows], TensorSlice(base.full_shape, offset, piece.shape)))
    return out


def assemble_slices(items: Sequence[WriteItem], *, where: str = "save") -> list[WriteItem]:
    """``items`` with the slices of each key assembled into one whole tensor, for backends without slices.

    The assembled item takes the place of the key's first slice. A slice that
    is the whole tensor is passed on as a plain item.

    Raises
    ------
    TrackableError
        The slices of a key overlap, leave a gap, or disagree on dtype or full shape.
    """
    if not any(it.slice is not None for it in items):
        return list(items)
    groups: dict[str, list[WriteItem]] = {}
    for it in items:
        if it.slice is not None:
            groups.setdefault(it.key, []).append(it)
    out: list[WriteItem] = []
    for it in items:
        if it.slice is None:
            out.append(it)
            continue
        group = groups.pop(it.key, None)
        if group is None:
            continue  # assembled at the key's first slice
        pieces = [(g.slice, g.array) for g in group if g.slice is not None]
        out.append(WriteItem(it.key, assemble(it.key, pieces, where)))
    return out


def plan_shards(
    items: Sequence[WriteItem],
    *,
    max_shard_bytes: int | None,
    num_writers: int,
) -> list[list[WriteItem]]:
    """Split ``items`` into shards, keeping their order.

    Items are cut into at most ``num_writers`` contiguous runs of similar byte
    size (so parallel writers finish together), and a run is cut again wherever
    it would exceed ``max_shard_bytes``. Order is preserved because data files
    list tensors in call order, which is part of byte-compatibility with
    TensorFlow for single-shard saves. An item larger than ``max_shard_bytes``
    gets a shard of its own; no shard is ever empty unless ``items`` is.
    """
    return _group(items, [it.nbytes for it in items], max_shard_bytes, num_writers)


def _group(
    items: Sequence[WriteItem], sizes: Sequence[int], max_shard_bytes: int | None, num_writers: int
) -> list[list[WriteItem]]:
    """:func:`plan_shards` of ``items`` whose sizes are ``sizes``."""
    if not items:
        return [[]]
    return [[items[i] for i in group] for group in _plan_sizes(sizes, max_shard_bytes, num_writers)]


def _plan_sizes(sizes: Sequence[int], max_shard_bytes: int | None, num_writers: int) -> list[list[int]]:
    """:func:`plan_shards` on sizes alone: the indexes of each shard (``[]`` for no sizes).

    A coordinated save plans every rank's shards from the sizes the ranks
    exchanged, so all ranks number the shards alike without another round.
    """
    share = sum(sizes) / max(1, num_writers)
    shards: list[list[int]] = []
    acc = 0
    for i, n in enumerate(sizes):
        if shards and shards[-1]:
            overflow = max_shard_bytes is not None and acc + n > max_shard_bytes
            # This shard already holds its fair share: hand the rest to the next writer.
            balanced = len(shards) < num_writers and acc >= share
            if overflow or balanced:
                shards.append([])
                acc = 0
        elif not shards:
            shards.append([])
        shards[-1].append(i)
        acc += n
    return shards


class StorageBackend(ABC):
    """A place checkpoints are written to and read from.

    Subclasses implement the abstract primitives; :meth:`begin`,
    :meth:`save`, :meth:`cleanup`, :meth:`dirname` and :meth:`join` have
    defaults built on them. An instance
    is created per URL/options by the backend's factory (see
    :mod:`trackpoint.plugins`) and must be safe to use from several threads.

    Paths are strings: plain local paths or URLs (``s3://bucket/dir/ckpt-1``).
    A checkpoint is addressed by its *prefix*, as in TensorFlow.
    """

    #: Registered backend name. The plugin host sets it on every backend its
    #: factory returns (:func:`trackpoint.plugins.open_backend`), so factories
    #: need not; ``""`` for a backend constructed directly.
    name: str = ""
    #: Defaults for :meth:`save` when it is called without options
    #: (``max_shard_bytes``, ``num_writers``); a backend or its factory may set them.
    save_defaults: CheckpointOptions = CheckpointOptions()
    #: What the store can do; drives commit strategy and conformance-test skips.
    capabilities: Capabilities = Capabilities()
    #: Whether :meth:`write_shard` accepts :class:`WriteItem` slices and :meth:`commit`
    #: merges the slices of one key from all shards into one tensor (checking that
    #: they tile it). Without it, :meth:`save` assembles slices in the process and
    #: refuses to split large tensors; a multi-process save of slices needs it.
    supports_slices: bool = False
    #: Whether :meth:`save` cuts tensors larger than ``max_shard_bytes`` into slices
    #: (:func:`split_large`) so each data file stays within the bound, as TensorFlow's
    #: ``MaxShardSizePolicy`` does; needs :attr:`supports_slices`. Formats that chunk
    #: large tensors anyway (Zarr) leave it off.
    splits_large_tensors: bool = False
    #: Bytes a :meth:`save` without ``num_writers`` needs per writer before it adds
    #: another one. Each shard costs a data file, its index entries' merge and its
    #: syncs; where one writer already moves bytes as fast as the store takes them
    #: (a local disk's page cache), a second one pays off only for large saves.
    #: ``0`` (the default) gives every save one writer per CPU.
    min_bytes_per_writer: int = 0

    # ------------------------------------------------------------------ writing
    def begin(self, prefix: str, save_id: str, *, overwrite: bool = True) -> None:
        """Start the save ``save_id`` of the checkpoint ``prefix``: step 1 of the save protocol.

        Called once per save, before any :meth:`write_shard` of it, by the
        process that will call :meth:`commit` (or :meth:`abort`).

        Parameters
        ----------
        prefix
            The checkpoint to be written.
        save_id
            The id every :class:`ShardSpec` of this save carries.
        overwrite
            Whether a checkpoint already committed at ``prefix`` may be
            replaced; pass the same value to :meth:`commit`.

        Raises
        ------
        CheckpointExistsError
            ``overwrite`` is false and a checkpoint is committed at ``prefix``.
            Nothing was changed.

        Notes for implementers
        ----------------------
        The default raises :class:`CheckpointExistsError` when ``overwrite``
        is false and :meth:`exists` is true, and otherwise does nothing: right
        for stores that keep a new save's data apart from the committed
        checkpoint until :meth:`commit`. Override it when a save must prepare
        the prefix first: to create directories and report an unwritable
        location before any data is written, or to clear what belongs to no
        committed checkpoint (leftovers of crashed saves whose names would
        block :meth:`write_shard`, as the bundle format does on object stores,
        with either ``overwrite``). ``begin`` must never remove or change the committed checkpoint, also
        with ``overwrite=True``: only :meth:`commit` replaces it, so a save
        that fails or is aborted leaves the old checkpoint readable. It must
        leave nothing visible that :meth:`abort` of ``save_id`` or a later
        ``begin`` could not remove.
        """
        if not overwrite and self.exists(prefix):
            raise CheckpointExistsError(
                f"{self.name or type(self).__name__}: a checkpoint is already committed at {prefix!r}; "
                "pass overwrite=True to replace it or choose another prefix"
            )

    @abstractmethod
    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        """Write one shard of the checkpoint ``prefix``; invisible until :meth:`commit`.

        Parameters
        ----------
        prefix
            The checkpoint being written.
        spec
            Which shard this is. Every shard of one save shares ``save_id`` and
            ``num_shards``.
        items
            The tensors, in the order they should be laid out.

        Returns
        -------
        ShardResult
            A manifest to hand to :meth:`commit` (possibly from another process).

        Notes for implementers
        ----------------------
        Must not modify any committed checkpoint, including one already at
        ``prefix``, and must not write outside the area that belongs to
        ``prefix`` whatever the keys contain. It may rely on :meth:`begin`
        having run for ``spec.save_id`` (in this process or another).
        """

    @abstractmethod
    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        """Merge ``shards`` into one checkpoint at ``prefix`` and make it visible atomically.

        Parameters
        ----------
        prefix
            The checkpoint to publish.
        shards
            Every shard's manifest, each exactly once, in ``shard_id`` order.
        overwrite
            Whether a checkpoint already committed at ``prefix`` may be replaced
            (the same value as given to :meth:`begin`). When false,
            :class:`CheckpointExistsError` is raised and the existing checkpoint
            is left as it was: the check in ``begin`` cannot see a checkpoint
            that another writer commits while this save is writing.

        Raises
        ------
        CheckpointExistsError
            ``prefix`` is committed already (or another writer committed it
            first) and ``overwrite`` is false.

        Notes for implementers
        ----------------------
        Raise only while the checkpoint is not committed, and then leave
        nothing of this save visible (take back a commit point already
        written). Once the commit point is passed the save has succeeded:
        a failure of what follows (deleting staging files, markers, the
        replaced checkpoint's data) is logged as a warning naming what was
        left and what removes it, never raised (``docs/writing-a-backend.md``,
        "After the commit point").
        """

    @abstractmethod
    def abort(self, prefix: str, save_id: str) -> None:
        """Best-effort removal of everything the save ``save_id`` wrote for ``prefix``.

        Never touches committed checkpoints. Must not raise for missing pieces.
        """

    # ------------------------------------------------------------------ reading
    @abstractmethod
    def open_reader(self, prefix: str) -> CheckpointReader:
        """Open the committed checkpoint ``prefix``.

        Raises
        ------
        CheckpointNotFoundError
            Nothing is committed at ``prefix``.
        InvalidCheckpointError
            Something is there but it is not a checkpoint this backend reads.
        """

    # ---------------------------------------------------------------- namespace
    @abstractmethod
    def exists(self, prefix: str) -> bool:
        """Whether a committed checkpoint exists at ``prefix``."""

    @abstractmethod
    def delete(self, prefix: str) -> None:
        """Delete every file/object of the checkpoint ``prefix`` (all shards).

        The commit point is removed first, so an interrupted delete leaves an
        invisible remainder rather than a broken visible checkpoint; calling
        ``delete`` again finishes the job. Deleting a missing checkpoint is not
        an error.
        """

    @abstractmethod
    def list_checkpoints(self, directory: str) -> list[str]:
        """Prefixes of the committed checkpoints directly inside ``directory``, sorted."""

    def modified(self, prefix: str) -> float | None:
        """When the checkpoint ``prefix`` was committed, as a POSIX timestamp; ``None`` if unknown.

        Feeds :func:`trackpoint.get_checkpoint_mtimes` and
        ``Saver.recover_last_checkpoints`` (TensorFlow reads the files'
        modification times there).

        Returns
        -------
        float or None
            Seconds since the epoch of the commit point's last modification;
            ``None`` when nothing is committed at ``prefix`` or the store
            cannot tell.

        Notes for implementers
        ----------------------
        The default returns ``None`` ("cannot tell"); callers then fall back
        (``recover_last_checkpoints`` stamps the current time). Return the
        modification time of the object written last by :meth:`commit`.
        """
        return None

    def cleanup(self, directory: str, *, min_age: float = 600.0) -> list[str]:
        """Remove leftovers of crashed saves in ``directory``; return what was removed.

        Parameters
        ----------
        directory
            Where to look (not recursively).
        min_age
            Seconds. Only leftovers whose newest piece was modified at least
            this long ago are removed, because a save that is still running
            (possibly in another process) keeps writing its pieces and looks
            exactly like a crashed one. ``0`` removes every leftover: use it
            only with a single writer that knows the previous save crashed.

        Returns
        -------
        list of str
            Paths removed.

        Notes for implementers
        ----------------------
        The default removes nothing. A leftover is only safe to remove when no
        save is still writing it: honour ``min_age`` (a leftover of unknown
        age counts as young unless ``min_age`` is 0), or use a save-id or
        owner check where the store offers one.
        """
        return []

    def leftovers(self, directory: str) -> list[str]:
        """Leftovers of saves that never committed in ``directory``, whatever their age; nothing is removed.

        What :meth:`cleanup` with ``min_age=0`` would remove, for display (``trackpoint ls --all``).
        A save still running in another process shows up here too: its pieces look the same.

        Notes for implementers
        ----------------------
        The default lists nothing ("cannot tell"). Backends whose :meth:`cleanup` finds leftovers
        should list the same paths here. Both name them under ``directory`` as the caller wrote it
        (``zarr+s3://b/run/...``, not the store's ``s3://b/run/...``), so that each can be given back.
        """
        return []

    # ------------------------------------------------------------- small files
    @abstractmethod
    def read_file(self, path: str) -> VersionedBytes | None:
        """Read a small file (e.g. the ``checkpoint`` state file); ``None`` if absent."""

    @abstractmethod
    def write_file(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        """Replace the small file ``path`` atomically; return its new version token.

        Parameters
        ----------
        path
            File to write.
        data
            Complete new contents. Readers see the old or the new contents,
            never a mixture.
        if_version
            :data:`ANY_VERSION` writes unconditionally; :data:`MUST_NOT_EXIST`
            requires that the file does not exist; a version token from
            :meth:`read_file` requires that the file is still at that version.
            ``None`` is the deprecated 0.1 spelling of :data:`MUST_NOT_EXIST`:
            implementations pass ``if_version`` through
            :func:`version_condition`, which warns and translates it.

        Raises
        ------
        ConcurrentModificationError
            The precondition failed: another writer got there first.
        """

    @abstractmethod
    def delete_file(self, path: str) -> None:
        """Delete a small file; missing files are not an error."""

    # ---------------------------------------------------------------- defaults
    def save(
        self,
        prefix: str,
        items: Sequence[WriteItem],
        options: CheckpointOptions | None = None,
        *,
        overwrite: bool = True,
    ) -> None:
        """Write and commit a whole checkpoint from one process.

        Runs the save protocol: :meth:`begin`, then the shards planned with
        :func:`plan_shards` through :meth:`write_shard` (concurrently when
        :attr:`Capabilities.parallel_writes`), then :meth:`commit`, and
        :meth:`abort` on failure so nothing of a failed save stays visible.

        Parameters
        ----------
        prefix
            The checkpoint to write.
        items
            The tensors.
        options
            ``max_shard_bytes`` and ``num_writers``; :attr:`save_defaults` when ``None``.
            Without ``num_writers``, one writer per CPU, fewer for a save of
            less than :attr:`min_bytes_per_writer` per writer.
        overwrite
            Whether a checkpoint already committed at ``prefix`` may be replaced
            (see :meth:`begin` and :meth:`commit`).
        """
        opts = options or self.save_defaults
        if options is not None:
            # Per-save backend_options: this save runs on the backend they tune.
            target = self.with_options(options)
            if target is not self:
                target.save(prefix, items, replace(options, backend_options={}), overwrite=overwrite)
                return
        writers = opts.num_writers or (_default_writers() if self.capabilities.parallel_writes else 1)
        if not self.capabilities.parallel_writes:
            writers = 1
        if self.supports_slices:
            if self.splits_large_tensors:
                items = split_large(items, opts.max_shard_bytes)
        else:
            items = assemble_slices(items, where=f"{self.name or type(self).__name__}: save of {prefix!r}")
        sizes = [it.nbytes for it in items]
        if opts.num_writers is None and self.min_bytes_per_writer > 0:
            writers = max(1, min(writers, sum(sizes) // self.min_bytes_per_writer))
        groups = _group(items, sizes, opts.max_shard_bytes, writers)
        save_id = uuid.uuid4().hex
        specs = [ShardSpec(i, len(groups), save_id) for i in range(len(groups))]
        write: Callable[[str, ShardSpec, Sequence[WriteItem]], ShardResult] = self.write_shard
        events = _SAVE_EVENTS.get()
        if events is not None:
            # Observed (trackpoint.observe): each shard reports its bytes as it goes.
            from trackpoint.observe import write_shard

            write = functools.partial(write_shard, events, self.write_shard)
        # Outside the try: a refused begin wrote nothing this save could abort.
        self.begin(prefix, save_id, overwrite=overwrite)
        try:
            if len(groups) == 1:
                results = [write(prefix, specs[0], groups[0])]
            else:
                with ThreadPoolExecutor(
                    max_workers=min(writers, len(groups)), thread_name_prefix="trackpoint-write"
                ) as ex:
                    futures = [ex.submit(write, prefix, s, g) for s, g in zip(specs, groups, strict=True)]
                    results = [f.result() for f in futures]
            self.commit(prefix, results, overwrite=overwrite)
        except BaseException as exc:
            try:
                self.abort(prefix, save_id)
            except Exception as cleanup:  # noqa: BLE001 - the original error is the one to raise
                # The failure that stopped the save is the real cause; a cleanup that
                # failed too (often for the same reason: a missing bucket) is only noted.
                exc.add_note(f"cleaning up after this failure also failed: {type(cleanup).__name__}: {cleanup}")
            raise

    def with_options(self, options: CheckpointOptions) -> StorageBackend:
        """This backend tuned by ``options.backend_options`` for one :meth:`save`.

        Returns
        -------
        StorageBackend
            ``self`` by default (backend options are taken when the backend is
            created). A backend whose tuning may change per save returns a
            configured copy on the same store; :meth:`save` runs the save
            protocol on it.
        """
        return self

    def dirname(self, path: str) -> str:
        """Directory part of ``path`` (URL-aware)."""
        from trackpoint import _paths

        return _paths.dirname(path)

    def join(self, directory: str, name: str) -> str:
        """``name`` inside ``directory`` (URL-aware)."""
        from trackpoint import _paths

        return _paths.join(directory, name)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:  # noqa: B027 - optional hook, a backend over local files may hold nothing
        """Release what the backend holds: clients, connections, thread pools, open files.

        Called once by whoever opened the backend, when done with it: the
        core holds one backend per location for the lifetime of a
        ``Checkpoint``, ``CheckpointManager``, ``Saver`` or reader and closes it
        then (see :mod:`trackpoint._resolve`). The default does nothing.

        Notes for implementers
        ----------------------
        Override it when the backend holds anything that outlives a call: a
        format closes its store (its ``FileLayer``), a database backend its
        connection. Make it idempotent (a second call does nothing) and let it
        not raise for a backend that was never used. Readers from
        :meth:`open_reader` are closed by the core before the backend that
        opened them. After ``close`` the backend is not used again.
        """

    def __enter__(self) -> StorageBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
