"""Arrays held by containers and attributes (numpy values, torch tensors, JAX arrays), saved as variables.

The holder (a list, dict or tuple wrapper, an ``AutoTrackable`` attribute, a
state dict) keeps the array itself; a :class:`_NumpyValue` node of the object
graph saves it and restores into it (see ``trackpoint.data_structures`` for
the rule of what is saved).

A JAX array spread over several processes (not fully addressable, not fully
replicated: a multi-host ``jax.Array``) is a partitioned value: each process
saves the distinct shards it holds the first copy of (``replica_id == 0``) as
slices of the whole array, which a coordinated save merges into one tensor,
and a restore reads only the part of the stored tensor its own devices need
(see :func:`_spread_sharding`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from trackpoint import dtypes
from trackpoint._slices import TensorSlice
from trackpoint.errors import DTypeMismatchError, ShapeMismatchError, TrackableError, UnsupportedDTypeError
from trackpoint.trackable import VARIABLE_VALUE_KEY
from trackpoint.variables import Variable

if TYPE_CHECKING:
    from trackpoint.storage import TensorInfo

__all__ = [
    "PYTHON_NUMBERS",
    "PYTHON_NUMBERS_KEY",
    "is_array_value",
    "is_dtensor",
    "is_jax_array",
    "is_jax_shape",
    "is_numpy_value",
]

#: What :attr:`_NumpyValue._memory_found` holds until :meth:`_NumpyValue.memory` is first asked (and
#: ``_identity_found`` until :meth:`_NumpyValue.identity` is).
UNKNOWN: Any = object()
#: Python numbers saved where a checkpoint's own containers hold them, with the dtype each is saved as.
PYTHON_NUMBERS: dict[type, type[np.generic]] = {bool: np.bool_, int: np.int64, float: np.float64}
#: Checkpoint key of the types of the Python numbers a checkpoint holds: a string scalar, the JSON object
#: ``{checkpoint key: "int" | "float" | "bool"}``, written only when there are some. What tells a reader that has
#: no object to restore into (:func:`trackpoint.load_tree`) a saved ``7`` from a saved ``np.int64(7)``: both are
#: a 0-d ``int64`` tensor. Outside the object graph, whose ``full_name`` stays the name TensorFlow's name-based
#: restores look up, and which no restore (trackpoint's or TensorFlow's) reads.
PYTHON_NUMBERS_KEY: Final = "_TRACKPOINT_PYTHON_NUMBERS"
#: The dtype kinds a saved value may have to be restored into a Python number (or str) of each type.
_PYTHON_KINDS = {bool: "b", int: "iu", float: "f", str: "O"}
#: The kinds a restore casts between for a ``jax.ShapeDtypeStruct`` template, by numpy's dtype kind (ml_dtypes'
#: floats have kind "V", or "f" for some: see :func:`_cast_kind`).
_CAST_KINDS = {"b": "bool", "i": "integer", "u": "integer", "f": "floating-point", "c": "complex"}


def is_numpy_value(value: Any) -> bool:
    """Whether ``value`` is a numpy array or numpy scalar (``np.str_``/``np.bytes_`` count as strings)."""
    return isinstance(value, (np.ndarray, np.generic)) and not isinstance(value, (str, bytes))


def is_dtensor(value: Any) -> bool:
    """Whether ``value`` is a ``torch.distributed.tensor.DTensor`` (FSDP2's and tensor parallelism's tensors).

    torch is never imported to check: a DTensor exists only once its module is.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(value, module.DTensor)


def is_jax_array(value: Any) -> bool:
    """Whether ``value`` is a JAX array (jax is never imported to check: an array exists only once it is)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(value, getattr(jax, "Array", ()))


def is_jax_shape(value: Any) -> bool:
    """Whether ``value`` is a ``jax.ShapeDtypeStruct``: a place a restore fills with a new JAX array."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(value, getattr(jax, "ShapeDtypeStruct", ()))


#: The types found to be numpy values or torch tensors by :func:`is_array_value`: what a type is never changes,
#: and the check by name through a tensor's classes costs a microsecond, asked several times of each of
#: possibly 10^5 values at each save and restore.
_ARRAY_TYPES: set[type] = set()


def is_array_value(value: Any) -> bool:
    """Whether ``value`` is saved as an array where it is held: a numpy value, a torch tensor, a JAX array.

    A ``jax.ShapeDtypeStruct`` counts too: it stands for the JAX array a restore puts in its place.
    """
    kind = type(value)
    if kind in _ARRAY_TYPES:
        return True
    if is_numpy_value(value) or dtypes._is_torch_tensor(value):
        _ARRAY_TYPES.add(kind)
        return True
    return is_jax_array(value) or is_jax_shape(value)


class _NumpyValue(Variable):
    """A numpy value held by a container or an ``AutoTrackable`` attribute, saved as a Variable.

    The holder keeps the numpy value; this node of the object graph saves
    it. A writeable array is shared, so in-place updates are saved and
    restores write into it; numpy scalars, read-only arrays and JAX arrays
    (immutable) are replaced on restore by a value of the same kind, a JAX
    array on the sharding of the one it replaces (``on_replace`` tells the
    holder, and :meth:`current` is the value to hold).

    A restore checks the dtype strictly, as TensorFlow's does, except into
    a node made for a ``jax.ShapeDtypeStruct`` template: the values are cast
    into the template's dtype (as Orbax casts), within a kind only, and a
    value the dtype cannot hold (an integer out of its range, a finite float
    it would make inf or NaN) is refused.

    A JAX array or template whose sharding spreads it over several processes
    is saved as the slices of the whole array this process writes (see
    :func:`_spread_slices`) and restored by reading the block of the whole
    array this process's devices need (see :meth:`_restore_slice`).
    """

    #: Whether a restore casts into the dtype (a node made for a ``jax.ShapeDtypeStruct``; set by ``__init__``).
    _casts = False
    #: The checkpoint key of the value a restore casts into this template's dtype (see :meth:`_check_cast`).
    _cast_key: str | None = None
    #: The values :meth:`_check_fits` found to fit before the restore gave any value, which :meth:`_cast` then
    #: casts without checking them again: a weak reference, so that a restore refused for another value does
    #: not leave them alive (nor their id to be taken by other values).
    _fits_checked: weakref.ref[np.ndarray[Any, Any]] | None = None
    #: A template's sharding, over the concrete mesh of an ``AbstractMesh`` it named (see :func:`_concrete_sharding`);
    #: ``None`` for a template without one, and for any other value (set by ``__init__``).
    _template_sharding: Any = None
    #: The sharding of a JAX array (or template) spread over several processes, else ``None`` (set by ``__init__``).
    _spread: Any = None
    #: For a spread value: the block of the whole array a restore reads, and per addressable device the part of
    #: that block it takes (computed at the first restore: a value that is only saved never needs it).
    _spread_reads: tuple[TensorSlice, list[tuple[Any, tuple[slice, ...]]]] | None = None
    #: For a typed PRNG key array or template: its implementation (what ``jax.random.key_impl`` names), which
    #: a restore wraps the saved key data with; else ``None`` (set by ``__init__``).
    _key_impl: Any = None
    #: What :meth:`memory` found for the value held now (``UNKNOWN`` until asked: walks read it directly,
    #: for each of possibly 10^5 values at each save and restore).
    _memory_found: int | None = None
    #: What :meth:`identity` found for the value held now (``UNKNOWN`` until asked).
    _identity_found: Hashable | None = None
    #: A numpy array's shape, strides and dtype when :meth:`identity` was found: valid while they are the same.
    _identity_layout: tuple[Any, ...] = ()

    def __init__(self, value: Any, name: str, where: str, on_replace: Callable[[Any], None] | None = None) -> None:
        self._maybe_initialize_trackable()
        # A torch tensor is saved through a numpy view of its memory (a copy for a tensor that numpy cannot
        # share, one on a GPU say: read again at each save, written back by a restore). The holder keeps the
        # tensor, which a restore never replaces.
        self._current: Any = value
        self._tensor: Any = None
        self._shared = True
        # For a torch tensor: the tensor (sharing its memory) whose numpy view ``_value`` is, and its dtype. The
        # holder's tensor may be pointed at other memory since (``.data = other``, ``set_()``): see _moved.
        self._viewed: Any = None
        self._torch_dtype: Any = None
        # For a Python number: its type, which a restore gives back (an int stays an int).
        self._python: type | None = None
        # Made for a jax.ShapeDtypeStruct: a restore casts into the template's dtype, as Orbax's does, also
        # after a first restore replaced the template (the dtype is still the one the template asked for).
        self._casts = False
        self._spread = None
        self._spread_reads = None
        self._key_impl = None
        self._template_sharding = None
        self._memory_found = self._identity_found = UNKNOWN
        python = PYTHON_NUMBERS.get(type(value))
        if python is not None:
            self._python = type(value)
            value = _python_number_array(value, np.dtype(python), where)
        elif type(value) is str:
            # Where a checkpoint's container saves strings: a 0-d string value, as a Variable holds one. Any
            # str is kept whole (surrogateescape: a str decoded from bytes that are no UTF-8 is saved as them).
            self._python = str
            value = np.array(value.encode("utf-8", "surrogateescape"), dtype=object)
        if dtypes._is_torch_tensor(value):
            self._tensor = value
            self._torch_dtype = value.dtype
            try:
                viewed = value.detach()
                array = dtypes._torch_to_numpy(viewed)
            except Exception as exc:  # torch fails its own ways (TypeError, RuntimeError, ValueError)
                if is_dtensor(value):
                    # Only a module's or optimizer's own state dict knows its DTensors' places among the ranks.
                    raise TrackableError(
                        f"{where}: a DTensor (FSDP2, tensor parallelism) is saved as this rank's part of the whole "
                        "tensor only through the object that holds it: give the module or optimizer itself "
                        "(tp.Checkpoint(model=net, optimizer=opt)), not its state_dict() or a dict of its tensors"
                    ) from exc
                raise TrackableError(
                    f"{where}: the torch tensor of dtype {value.dtype} cannot be saved ({exc}); convert it, or "
                    "assign NoDependency(value) to keep it unsaved"
                ) from exc
            self._shared = array.size == 0 or (
                value.device.type == "cpu" and array.__array_interface__["data"][0] == value.data_ptr()
            )
            if self._shared:
                # Kept only where the view pins that memory anyway: a copy (a GPU tensor's) must not keep the
                # device memory the tensor is pointed away from alive.
                self._viewed = viewed
            value = array
        elif is_jax_shape(value):
            shape = tuple(value.shape)
            try:
                dtype = np.dtype(value.dtype)
            except TypeError as exc:  # a typed PRNG key template (jax.eval_shape of jax.random.key) has no numpy dtype
                # Restored from its key data, never cast: another dtype of key data would be other keys.
                self._key_impl, dtype, shape = _key_layout(value, where, exc)
            else:
                self._casts = True
            sharding = getattr(value, "sharding", None)
            if sharding is not None:
                sharding = self._template_sharding = _concrete_sharding(sharding, tuple(value.shape), where)
                self._spread = _spread_sharding(sharding, tuple(value.shape), where, "restore into")
                if self._spread is not None and self._key_impl is not None:
                    _refuse_spread_key(value, where)
            _TEMPLATES[0] += 1
            weakref.finalize(self, _template_gone)
            value = _placeholder(dtype, shape)
        elif is_jax_array(value):
            # Nothing is read from the devices here: a save gathers the shards (see _jax_to_numpy), and
            # np.asarray would make JAX keep a host copy of the array for as long as the array lives.
            _check_jax(value, where)
            if not value.is_fully_addressable and not value.is_fully_replicated:
                self._spread = _spread_sharding(value.sharding, tuple(value.shape), where, "save or restore into")
            shape = tuple(value.shape)
            try:
                dtype = np.dtype(value.dtype)
            except TypeError as exc:  # a typed PRNG key array has no numpy dtype: it is saved as its key data
                self._key_impl, dtype, shape = _key_layout(value, where, exc)
                if self._spread is not None:
                    _refuse_spread_key(value, where)
            value = _placeholder(dtype, shape)
        if isinstance(value, np.ma.MaskedArray):
            raise TrackableError(
                f"{where}: a masked array cannot be saved (its mask would be lost); save .data and .mask as "
                "two arrays, or assign NoDependency(value) to keep it unsaved"
            )
        try:
            saved = dtypes.as_dtype(value.dtype)
        except UnsupportedDTypeError as exc:
            raise TrackableError(
                f"{where}: a {self._kind()} of dtype {value.dtype} cannot be saved ({exc}); convert it, or assign "
                "NoDependency(value) to keep it unsaved"
            ) from exc
        if dtypes.is_string(saved) and self._python is not str:
            raise TrackableError(
                f"{where}: numpy values of dtype {value.dtype} are not saved from containers or attributes; save "
                "strings in a trackpoint.Variable(value, dtype=trackpoint.string), or assign NoDependency(value) "
                "to keep them unsaved"
            )
        self._name = name
        self._where: str = where
        self._trainable = False
        self._saved_dtype = saved
        self._on_replace = on_replace
        self._value = value if isinstance(value, np.ndarray) else np.asarray(value)

    def current(self) -> Any:
        """The value the holder should hold (the restored one after a replacing restore)."""
        return self._current

    def identity(self) -> Hashable | None:
        """What makes this node's value provably the value of another node; ``None`` if nothing does.

        One array held in several places (the same object, or views of the same memory with the same
        dtype, shape and strides: :func:`_identity` says which) is one value, which the
        object graph saves as one node reached by several edges, as TensorFlow saves a variable, and a
        restore reads once (see :func:`first_node`). Only arrays are: numbers (Python's, numpy scalars)
        are values that equal ones may share an object for (``np.True_``), and a ``jax.ShapeDtypeStruct``
        is a template, each place of it restored into a new array. Asked only of values whose memory another
        node's shares: computed at each walk for a torch tensor (``.data =`` and ``set_()`` point the same
        object at other memory) and for a numpy array whose shape, strides or dtype were set in place since;
        else kept (numpy moves no array's memory that another array refers to, and a JAX array is immutable).
        """
        current = self._current
        if self._tensor is not None:
            return _identity(current)
        found = self._identity_found
        if isinstance(current, np.ndarray):
            layout = (current.shape, current.strides, current.dtype)
            if found is UNKNOWN or layout != self._identity_layout:
                found = self._identity_found = _identity(current)
                self._identity_layout = layout
        elif found is UNKNOWN:
            found = self._identity_found = _identity(current) if is_jax_array(current) else None
        return found

    def memory(self) -> int | None:
        """A number the nodes of one array share (so may others): what the walks look up first, cheaply.

        The numpy array (or the object) at the end of a numpy value's chain of bases, a torch tensor's data
        address, a JAX array itself; ``None`` where :meth:`identity` is ``None`` for sure. Only nodes of the
        same number can be of one array, which :meth:`identity` then tells (see :func:`first_node`): it costs
        microseconds, this a fraction of one, once per value held.
        """
        found = self._memory_found
        if found is UNKNOWN:
            current = self._current
            if self._python is not None:
                found = None
            elif isinstance(current, np.ndarray):
                found = _memory(current, "numpy")
            elif self._tensor is not None:
                # Any tensor's address, subclasses' too (unlike _memory's rule for state dicts): their identity
                # is None, so they stay nodes of their own either way, and this asks no type.
                try:
                    found = current.data_ptr()
                except Exception:  # noqa: BLE001 -- a tensor without memory of its own (a subclass's): never one
                    found = None
            else:
                found = id(current) if is_jax_array(current) else None
            self._memory_found = found
        return found

    def _take_restored(self, source: _NumpyValue, then: Any) -> None:
        """Hold what a restore gave ``source``, the node of this same value elsewhere, which held ``then``.

        A restore reads the value once, into ``source``. Written in place, it is in this node's memory
        too. Where it replaced the value (a JAX array, a numpy scalar, a read-only array), a holder of
        that same object gets the one replacement (told through ``on_replace``), so that the holders
        still hold one value, saved as one node; another array over the same memory gets the values.
        """
        if source._current is then:
            return  # written in place, or not restored
        if self._current is then:
            self._current = source._current
            self._value = source._value
            self._memory_found, self._identity_found = source._memory_found, source._identity_found
            if self._on_replace is not None:
                self._on_replace(self._current)
        else:
            self._restore_from_tensors({VARIABLE_VALUE_KEY: source._value})

    def _moved(self, tensor: Any) -> bool:
        """Whether the torch ``tensor`` held was pointed at other memory, or another layout, since it was viewed.

        torch code re-points a tensor in place (``t.data = other``, ``t.set_(other)``: tied weights,
        ``module.weight.data = ...``), keeping the object: the view ``_value`` would still be of the old
        memory. One call tells (the same storage, offset, sizes and strides as the tensor viewed, which the view
        keeps alive, so that no other tensor can have its memory), and the dtype the rest, for the view of a CPU
        tensor; a copy (a GPU tensor's, read again at each save) is of the tensor held, only its shape and dtype
        can be out of date.
        """
        if tensor.dtype is not self._torch_dtype:
            return True
        viewed = self._viewed
        if viewed is None:
            return bool(tensor.shape != self._value.shape)
        return not tensor.is_set_to(viewed)

    def _view_again(self) -> None:
        """View the torch tensor held as it is now (see :meth:`_moved`): as a node made for it now would."""
        _NumpyValue.__init__(self, self._current, self._name, self._where, self._on_replace)

    def _writes_in_place(self) -> bool:
        """Whether a restore writes into the memory of the value held (else it replaces the value)."""
        return self._tensor is not None or self._in_place()

    def _in_place(self) -> bool:
        if self._tensor is not None:
            return self._shared
        return isinstance(self._current, np.ndarray) and bool(self._value.flags.writeable)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype the value is saved with (native byte order)."""
        return self._saved_dtype

    def _serialize_to_tensors(self) -> dict[str, Any]:
        tensor = self._tensor
        if tensor is not None:
            # First, and on its own: the common case of a torch model (10^4 tensors in a dict, say).
            if self._moved(tensor):
                self._view_again()
            if not self._shared:
                self._value = dtypes._torch_to_numpy(tensor)  # the tensor as it is now, not at tracking
            value = self._value
            if value.dtype != self._saved_dtype or not value.flags.c_contiguous:
                value = np.ascontiguousarray(value, dtype=self._saved_dtype)
            return {VARIABLE_VALUE_KEY: value}
        value = self._value
        if self._python is not None and value.dtype != self._saved_dtype:
            value = _python_number_array(self._current, self._saved_dtype, self._where)
        if is_jax_array(self._current):
            array = self._current
            saved = _SAVED_JAX.arrays
            deferred = None
            if saved is not None:
                saved.append((self, array))
                deferred = _SAVED_JAX.deferred
            if self._key_impl is not None:
                # A typed PRNG key array is saved as its key data (uint32, the implementation's trailing dims),
                # as Orbax saves it: an array on the keys' devices, gathered like any other.
                _check_jax(array, self._where)
                array = sys.modules["jax"].random.key_data(array)
            if self._spread is not None:
                # TensorFlow's form for slices of a larger tensor: a coordinated save merges every process's.
                return {VARIABLE_VALUE_KEY: _spread_slices(array, self._saved_dtype, self._where, deferred)}
            if deferred is not None:
                # Gathered when written (see saved_jax); a deleted array is refused now, by the save call.
                _check_jax(array, self._where)
                return {VARIABLE_VALUE_KEY: _defer(deferred, array, self._saved_dtype, self._where)}
            value = _jax_to_numpy(array, self._where)
        elif is_jax_shape(self._current):
            raise TrackableError(
                f"{self._where} is a jax.ShapeDtypeStruct, which holds no values to save: restore into it first "
                "(the restore puts a JAX array in its place), or assign the array"
            )
        if value.dtype != self._saved_dtype or not value.flags.c_contiguous:
            value = np.ascontiguousarray(value, dtype=self._saved_dtype)
        return {VARIABLE_VALUE_KEY: value}

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        info = infos.get(VARIABLE_VALUE_KEY)
        if info is None:
            return
        tensor = self._tensor
        if tensor is not None and self._moved(tensor):
            self._view_again()  # read into the tensor's memory now (see _moved), checked against its shape now
        key = where[VARIABLE_VALUE_KEY]
        if self._key_impl is not None:
            self._check_key_data(info, key)
            return
        python = self._python
        if python is not None:
            # A Python number takes any value of its kind (an int a TensorFlow int32 step, say).
            if info.dtype.kind not in _PYTHON_KINDS[python] or tuple(info.shape) != ():
                raise DTypeMismatchError(
                    f"cannot restore {key!r} into the Python {python.__name__} {self._name!r}: the checkpoint holds "
                    f"{dtypes._name(info.dtype)} of shape {tuple(info.shape)}, not a scalar of that kind"
                )
            return
        if info.dtype != self._saved_dtype:
            if not self._casts:
                raise DTypeMismatchError(
                    f"cannot restore {key!r} into the {self._kind()} {self._name!r}: the checkpoint holds dtype "
                    f"{dtypes._name(info.dtype)}, the value has dtype {self._saved_dtype}{self._strict_hint()}"
                )
            self._check_cast(info.dtype, key)
        if tuple(info.shape) != self._value.shape:
            whole = ""
            if self._spread is not None:
                whole = (
                    " (the whole shape of the array spread over several processes, of which this process holds "
                    "part: every process's template or array must have the checkpoint's whole shape)"
                )
            raise ShapeMismatchError(
                f"cannot restore {key!r} into the {self._kind()} {self._name!r}: the checkpoint holds shape "
                f"{tuple(info.shape)}, the value has shape {self._value.shape}{whole}"
            )

    def _check_key_data(self, info: TensorInfo, key: str) -> None:
        """Refuse key data that this typed PRNG key array or template's implementation cannot wrap.

        The data's shape is the keys' shape followed by the implementation's key shape, so a checkpoint of
        another implementation (rbg's data of shape (4,) for threefry2x32's (2,)) is refused here, before
        anything is restored, rather than wrapped into other keys. The dtype is never cast.

        Raises
        ------
        DTypeMismatchError
            The checkpoint holds another dtype than uint32.
        ShapeMismatchError
            The checkpoint holds data of another shape (keys of another implementation, or another number).
        """
        keys = tuple(self._current.shape)
        impl = self._key_impl
        need = tuple(self._value.shape)
        what = (
            f"cannot restore {key!r} into the typed PRNG keys {self._name!r} ({self._where}: shape {keys}, "
            f"implementation {impl})"
        )
        if info.dtype != self._saved_dtype:
            raise DTypeMismatchError(
                f"{what}: the checkpoint holds dtype {dtypes._name(info.dtype)}, and keys are restored from their "
                f"{dtypes._name(self._saved_dtype)} key data only (never cast: other data would be other keys). "
                "Restore it into a template of the checkpoint's dtype instead "
                "(tp.load_checkpoint(path).get_variable_to_dtype_map() lists them)"
            )
        if tuple(info.shape) != need:
            raise ShapeMismatchError(
                f"{what}: the checkpoint holds key data of shape {tuple(info.shape)}, these keys need key data of "
                f"shape {need} (the keys' shape followed by the implementation's key shape {need[len(keys) :]}). "
                "It was saved from keys of another implementation or shape: give a template of the keys it was "
                "saved from (jax.random.key(0, impl=...) names the implementation; threefry2x32's key data has "
                "shape (2,), rbg's and unsafe_rbg's (4,)). Nothing was restored"
            )

    def _strict_hint(self) -> str:
        """What to do about a dtype that differs, where a template would have cast it: for a JAX array."""
        if not is_jax_array(self._current):
            return ""
        return (
            "; a restore into an existing JAX array keeps its dtype, as TensorFlow's restores do: restore into a "
            "jax.ShapeDtypeStruct template (jax.eval_shape(...)) to have the values cast to the template's dtype"
        )

    def _check_cast(self, saved: np.dtype[Any], key: str) -> None:
        """Refuse a cast into this template's dtype across kinds; remember ``key`` for the values' own check.

        Raises
        ------
        DTypeMismatchError
            ``saved`` and the template's dtype are of different kinds (an integer into a float, a float into a
            bool): such a cast changes the values' meaning, not only their precision.
        """
        target = self._saved_dtype
        into, of = _cast_kind(target), _cast_kind(saved)
        if into is None or into != of:
            raise DTypeMismatchError(
                f"cannot restore {key!r} into the {self._kind()} {self._name!r} ({self._where}): the checkpoint "
                f"holds dtype {dtypes._name(saved)}, the template has dtype {dtypes._name(target)}. A restore casts "
                "into a template's dtype only within a kind (integers to integers, int4 and the other sub-byte "
                "integers included, floats to floats, bfloat16 and the float8 types included, complex to complex, "
                "bool to bool); give the template a dtype of the "
                "checkpoint's kind (tp.load_checkpoint(path).get_variable_to_dtype_map() lists them), and convert "
                "after the restore"
            )
        self._cast_key = key
        planned = _PLANNED_CASTS.nodes
        if planned is not None and _may_not_fit(saved, target):
            planned.append(self)  # its values are checked to fit before the restore gives any object its value

    def _cast(self, restored: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """``restored`` cast into the template's ``dtype``: refused for values the dtype cannot hold.

        Raises
        ------
        DTypeMismatchError
            An integer value lies outside the range of ``dtype``, or a finite value beyond the largest
            finite one of a float ``dtype``. A restore planned with :func:`planned_casts` checked that before
            any value was given to its object; otherwise (a restore by names) the values given before this
            one keep their restored values.
        """
        checked, self._fits_checked = self._fits_checked, None
        if checked is None or checked() is not restored:
            self._refuse_unfit(restored, dtype, applying=True)
        return np.asarray(restored, dtype=dtype)

    def _check_fits(
        self, restored: np.ndarray[Any, Any], dtype: np.dtype[Any] | None = None, applying: bool = False
    ) -> None:
        """Refuse values ``restored`` that the template's ``dtype`` (its own by default) cannot hold.

        Checked before the restore gives any value (:func:`planned_casts`), the same values are not checked
        again when they are cast (:meth:`_cast`): one pass over them, not two.

        Raises
        ------
        DTypeMismatchError
            A value the dtype cannot hold (see :meth:`_refuse_unfit`).
        """
        self._refuse_unfit(restored, dtype, applying)
        self._fits_checked = None if applying else weakref.ref(restored)

    def _refuse_unfit(self, restored: np.ndarray[Any, Any], dtype: np.dtype[Any] | None, applying: bool) -> None:
        """Refuse values ``restored`` that the template's ``dtype`` (its own by default) cannot hold.

        Integers must lie within the integer dtype's range; a finite float (or complex) value must stay
        finite in the float dtype: beyond its largest finite value a cast gives inf (float16) or NaN
        (float8_e4m3fn, which has no inf). inf is refused too by a dtype without inf, where it would become
        NaN. Values that underflow to zero or a subnormal lose precision only, as any narrowing cast does, and
        NaN, and inf in a dtype that has it, stay so: both are accepted.

        Raises
        ------
        DTypeMismatchError
            A value the dtype cannot hold.
        """
        dtype = self._value.dtype if dtype is None else dtype
        if restored.dtype == dtype or not restored.size or not _may_not_fit(restored.dtype, dtype):
            return
        kind = _cast_kind(dtype)
        if kind == "integer":
            bounds = dtypes._iinfo(dtype)
            low, high = int(bounds.min), int(bounds.max)
            outside = (restored < low) | (restored > high)
            if not outside.any():
                return
            bad = restored[outside]
            if low == 0 and bool((bad < 0).all()):
                why = (
                    f"The template's dtype {dtypes._name(dtype)} is unsigned and these values are negative: give "
                    f"the template a signed integer dtype{_wide_enough(restored.dtype, 'signed')}"
                )
            else:
                why = f"Give the template a wider integer dtype{_wide_enough(restored.dtype, 'integer')}"
            problem = "do not fit in it"
        else:
            overflow = _overflows(restored, dtype)
            if overflow is None:
                return
            bad = restored[overflow]
            infinite = np.isinf(bad)
            largest = f"its largest finite value {_largest(dtype):g}"
            kind_name = "complex" if kind == "complex" else "float"
            if bool(infinite.all()):
                # Only into a dtype without inf (float8_e4m3fn): elsewhere inf stays inf.
                problem = f"are inf, which it cannot hold: {dtypes._name(dtype)} has no inf (they would become NaN)"
                why = f"Give the template a float dtype that has inf{_wide_enough(restored.dtype, 'float')}"
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    became = np.asarray(bad[~infinite], dtype=dtype)
                into = (
                    "NaN" if bool(np.isnan(became).all()) else "inf" if bool(np.isinf(became).all()) else "inf or NaN"
                )
                problem = f"are finite but would become {into} in it, beyond {largest}"
                if bool(infinite.any()):
                    problem = (
                        f"are finite but beyond {largest}, or inf, which it has no inf for: they would become NaN in it"
                    )
                why = f"Give the template a {kind_name} dtype of a wider range{_wide_enough(restored.dtype, 'float')}"
        # The values as their own dtype prints them (1e+30, not float32's digits as a Python float).
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DTypeMismatchError(
            f"cannot restore {self._cast_key!r} into the {self._kind()} {self._name!r} ({self._where}) of "
            f"dtype {dtypes._name(dtype)}: the checkpoint holds {dtypes._name(restored.dtype)} values that "
            f"{problem} ({bad.size} of {restored.size}: {shown}). {why}"
            + (
                "; the restore stopped here, so values given to their objects before this one are restored "
                "and the others are not: restore again once the template fits"
                if applying
                else "; nothing was restored"
            )
        )

    def _restore_slice(self, attribute: str) -> TensorSlice | None:
        # docstring inherited
        if self._spread is None or attribute != VARIABLE_VALUE_KEY:
            return None
        block = self._spread_layout()[0]
        return None if block.is_full else block

    def _spread_layout(self) -> tuple[TensorSlice, list[tuple[Any, tuple[slice, ...]]]]:
        """The block of the whole array this process reads, and what each of its devices takes from it.

        The block is the smallest one holding every shard of this process's devices: exactly their union
        when they lie side by side (a process's rows of a mesh, as meshes built from ``jax.devices()`` place
        them), more when they do not.
        """
        layout = self._spread_reads
        if layout is None:
            layout = self._spread_reads = _spread_reads(self._spread, self._value.shape)
        return layout

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        value = self._value
        if (
            attribute == VARIABLE_VALUE_KEY
            and self._in_place()
            and value.flags.c_contiguous
            and value.dtype == self._saved_dtype
        ):
            return value
        return None

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if VARIABLE_VALUE_KEY not in tensors:
            return
        restored = tensors[VARIABLE_VALUE_KEY]
        if self._in_place():
            np.copyto(self._value, restored)
            return
        if self._tensor is not None:
            _copy_into_tensor(self._tensor, restored)
            return
        original_dtype = self._value.dtype
        if is_jax_array(self._current) or is_jax_shape(self._current):
            if restored.dtype != original_dtype and self._casts:
                array = self._cast(restored, original_dtype)
            else:
                array = np.asarray(restored, dtype=original_dtype)
            if self._key_impl is not None:
                # The keys of the template's implementation, moved onto its sharding (the default device for
                # a template without one); the shapes were checked (see _check_key_data).
                jax = sys.modules["jax"]
                keys = jax.random.wrap_key_data(array, impl=self._key_impl)
                replacement: Any = jax.device_put(keys, self._sharding())
            elif self._spread is not None:
                replacement = self._assemble(array)
            else:
                # A ShapeDtypeStruct without a sharding: the default device, as jnp.asarray would place it.
                replacement = sys.modules["jax"].device_put(_weak_like(self._current, array), self._sharding())
            # The host copy is not kept: the JAX array is the value now.
            self._value = _placeholder(array.dtype, self._value.shape)
        elif isinstance(self._current, np.ndarray):
            replacement = np.array(restored, dtype=original_dtype)
            replacement.flags.writeable = False  # it replaces a read-only array
            self._value = replacement
        elif self._python is not None:
            # From the saved value itself: a uint64 beyond int64 stays exact (and a later save refuses it).
            item: Any = np.asarray(restored)[()]
            replacement = item.decode("utf-8", "surrogateescape") if self._python is str else self._python(item)
            self._value = np.asarray(restored)
        else:
            array = np.array(restored, dtype=original_dtype)
            replacement = array[()]
            self._value = array
        self._current = replacement
        self._memory_found = self._identity_found = UNKNOWN
        if self._on_replace is not None:
            self._on_replace(replacement)

    def _assemble(self, values: np.ndarray[Any, Any]) -> Any:
        """The JAX array on the spread sharding, from ``values``: the block read, or the whole array (``assign``).

        Each addressable device gets its part as an array of its own; ``make_array_from_single_device_arrays``
        joins them into the global array, as every process does with its own devices' parts.
        """
        jax = sys.modules["jax"]
        block, parts = self._spread_layout()
        shape = tuple(self._value.shape)
        if values.shape != block.shape:
            # The whole array (an assign): each device's part lies at its place in the whole.
            parts = [
                (device, tuple(slice(p.start + o, p.stop + o) for p, o in zip(part, block.offset, strict=True)))
                for device, part in parts
            ]
        arrays = [jax.device_put(values[part], device) for device, part in parts]
        return jax.make_array_from_single_device_arrays(shape, self._spread, arrays)

    def assign(self, value: Any) -> Variable:
        # docstring inherited
        tensor = self._tensor
        if tensor is not None and self._moved(tensor):
            self._view_again()
        self._restore_from_tensors({VARIABLE_VALUE_KEY: self._converted(value, "assign")})
        return self

    def _sharding(self) -> Any:
        """Where a restore puts the JAX array: the template's sharding (concrete), the replaced array's, or none."""
        if is_jax_shape(self._current):
            return self._template_sharding
        return getattr(self._current, "sharding", None)

    def _kind(self) -> str:
        if self._python is not None:
            return f"Python {self._python.__name__}"
        if self._tensor is not None:
            return "torch tensor"
        if is_jax_shape(self._current):
            return "jax.ShapeDtypeStruct"
        if self._key_impl is not None:
            return "JAX PRNG key array"
        return "JAX array" if is_jax_array(self._current) else "numpy value"

    def __repr__(self) -> str:
        return f"<{self._kind()} {self._name!r} shape={self.shape} dtype={self._value.dtype}>"


def first_node(node: _NumpyValue, first: _NumpyValue, identities: dict[Hashable, _NumpyValue]) -> _NumpyValue:
    """The first node a walk met of ``node``'s array: ``node`` itself, or a node of the same array met before.

    ``first`` is the first node met of the same :meth:`~_NumpyValue.memory`; ``identities`` holds the first
    node met of each identity among such nodes, for the walk (views of other parts of one array's memory
    share its memory number, and are arrays of their own).
    """
    found = first.identity()
    if found is not None:
        identities.setdefault(found, first)
    identity = node.identity()
    return node if identity is None else identities.setdefault(identity, node)


def _is_meta(value: Any) -> bool:
    """Whether ``value`` is a torch tensor on the 'meta' device: a shape and dtype without memory."""
    return getattr(value, "is_meta", False) is True


def _memory(value: Any, kind: str) -> int | None:
    """A cheap key that entries of one array share (so may others); ``None`` where :func:`_identity` is ``None``.

    ``kind`` is the structure's kind of the array (``"torch"``, ``"numpy"``, ...). Only entries of one key can be
    one array, which :func:`_identity` then tells: it costs microseconds, this a fraction of one, and most
    entries of a state dict share their memory with no other.
    """
    if kind == "torch":
        torch = sys.modules["torch"]
        # Equal identities have equal storage address, offset and dtype: the same data address.
        return value.data_ptr() if type(value) in (torch.Tensor, torch.nn.Parameter) else None
    if kind == "numpy":
        base = value
        while isinstance(base.base, np.ndarray):
            base = base.base
        # The memory's owner: equal views of one buffer have it in common (see _NumpyValue.memory).
        return id(base if base.base is None else base.base)
    return id(value)


def _identity(value: Any) -> Hashable | None:
    """What makes two arrays provably one array; ``None`` for an array never merged with another.

    One rule for the entries of a state dict (``trackpoint.stateful``) and the arrays of an object graph
    (:meth:`_NumpyValue.identity`), so that both save one array once.

    A module with tied weights (``lm_head.weight = embed.weight``) gives the one Parameter under two keys, as
    two detached tensors over the same memory: saved once, it is restored as one. Only what must hold the same
    values is merged: a plain torch tensor (CPU or not) at the same storage address, offset, shape, strides and
    dtype, with the same conjugate and negative bits (a ``conj()`` view shares all the rest); a numpy array at
    the same address with the same dtype, shape and strides; any other array only as the very same object.
    Views that differ in any of those (``w[1:]``, ``w.t()``) are saved each on its own, as are empty tensors
    (whose address tells nothing), tensors on 'meta' (no memory), DTensors (saved as slices) and tensor
    subclasses (whose storage may not be their values).
    """
    if isinstance(value, np.ndarray):  # first: a walk asks this of each of many views of one buffer
        if not value.size:
            return None
        return (value.ctypes.data, value.dtype, value.shape, value.strides)
    if _is_meta(value) or is_dtensor(value):
        return None
    if dtypes._is_torch_tensor(value):
        torch = sys.modules["torch"]
        if type(value) not in (torch.Tensor, torch.nn.Parameter) or value.layout != torch.strided:
            return None
        if value.is_quantized or value.is_nested or value.numel() == 0:
            return None
        return (
            str(value.device),
            value.dtype,
            value.untyped_storage().data_ptr(),
            value.storage_offset(),
            tuple(value.shape),
            value.stride(),
            value.is_conj(),
            value.is_neg(),
        )
    return ("object", id(value))  # the state dict holds it while it is flattened: no other object has this id


def _same_values(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    """Whether two values read from a checkpoint are the same: the same bytes (NaNs too), or equal strings."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b)) if a.dtype.kind == "O" else a.tobytes() == b.tobytes()


def _copy_into_tensor(tensor: Any, values: np.ndarray[Any, Any]) -> None:
    """Write ``values`` into a torch tensor whose memory numpy cannot share (on another device, say)."""
    with sys.modules["torch"].no_grad():
        tensor.copy_(dtypes._numpy_to_torch(values))


class _PlannedCasts(threading.local):
    """The template nodes whose values a restore being planned in this thread casts into an integer dtype."""

    nodes: list[_NumpyValue] | None = None


_PLANNED_CASTS = _PlannedCasts()


@contextlib.contextmanager
def planned_casts(nodes: list[_NumpyValue]) -> Iterator[None]:
    """Collect into ``nodes`` each template node whose dtype check, within the block, planned a narrowing cast.

    Whether such a value fits its template's dtype (an integer its range, a finite float its largest finite
    value) is known only once it is read: the restore checks those
    values (:meth:`_NumpyValue._check_fits`) before it gives any object its value, so that a refused cast
    leaves everything as it was. Other values pay nothing for it.
    """
    outer = _PLANNED_CASTS.nodes
    _PLANNED_CASTS.nodes = nodes
    try:
        yield
    finally:
        _PLANNED_CASTS.nodes = outer


#: How many nodes made for ``jax.ShapeDtypeStruct`` templates are alive: a restore asks which of them got no
#: value only when some exist (a list, changed in place by the nodes' finalizers).
_TEMPLATES: list[int] = [0]


def _template_gone() -> None:
    _TEMPLATES[0] -= 1


def placeholders_exist() -> bool:
    """Whether any node made for a ``jax.ShapeDtypeStruct`` template is alive (a cheap test before a walk)."""
    return _TEMPLATES[0] > 0


def is_placeholder_node(obj: object) -> bool:
    """Whether ``obj`` is the node of a template that still holds no value (no restore replaced it)."""
    return isinstance(obj, _NumpyValue) and is_jax_shape(obj._current)


def _cast_kind(dtype: np.dtype[Any]) -> str | None:
    """The kind a template restore casts within: ``"integer"``, ``"floating-point"``, ...; ``None`` for strings.

    ml_dtypes' floats (bfloat16, the float8 types) are floating-point whatever numpy's kind for them says.
    """
    if dtypes.is_ml_dtype(dtype):
        if dtypes._is_ml_float(dtype):
            return "floating-point"
        # int4, uint4 and the other sub-byte integers (numpy's kind for them is "V"); the other floats
        # (float8_e3m4, the float6 and float4 types: kind "V") are no kind a template casts within.
        if dtypes._ml_kind(dtype) == "i":
            return "integer"
    return _CAST_KINDS.get(dtype.kind)


def _may_not_fit(saved: np.dtype[Any], target: np.dtype[Any]) -> bool:
    """Whether some values of the dtype ``saved`` may not fit a template of the dtype ``target`` (of its kind).

    Integers into a narrower range, floats and complex numbers into a smaller largest finite value: only
    those casts check the values, a widening one (float16 into float32, uint8 into int32) costs nothing.
    """
    kind = _cast_kind(target)
    if kind != _cast_kind(saved):
        return False  # refused before any value is read (_check_cast)
    if kind == "integer":
        have, fit = dtypes._iinfo(saved), dtypes._iinfo(target)
        return bool(int(have.min) < int(fit.min) or int(have.max) > int(fit.max))
    if kind in ("floating-point", "complex"):
        limit, largest = _largest(target), _largest(saved)
        # Or inf, which a dtype without it (float8_e4m3fn) cannot hold.
        return limit is not None and (largest is None or largest > limit or (_has_inf(saved) and not _has_inf(target)))
    return False


def _largest(dtype: np.dtype[Any]) -> float | None:
    """The largest finite value of the float ``dtype`` (of each part of a complex one); ``None`` if unknown."""
    try:
        return float(dtypes._finfo(dtype).max)
    except (TypeError, ValueError):  # no finfo for it: its range is unknown, and its values are not checked
        return None


def _overflows(values: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.ndarray[Any, Any] | None:
    """Which finite ``values`` (a float or complex array) a cast into ``dtype`` makes inf or NaN; ``None``: none.

    Two reductions decide for nearly every array (no value beyond the largest finite one of ``dtype``, NaN
    ignored): no temporary array, no cast. Only then is the cast made, once, to compare.
    """
    limit = _largest(dtype)
    if limit is None:
        return None
    parts = (values.real, values.imag) if values.dtype.kind == "c" else (values,)
    # fmax/fmin skip NaN; they give NaN only for an all-NaN array, which compares as in range.
    if all(not (np.fmax.reduce(p, axis=None) > limit or np.fmin.reduce(p, axis=None) < -limit) for p in parts):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        cast = np.asarray(values, dtype=dtype)
    # inf stays inf, except in a dtype without inf (float8_e4m3fn), where it would become NaN silently.
    bad = (np.isfinite(values) if _has_inf(dtype) else ~np.isnan(values)) & ~np.isfinite(cast)
    return bad if bool(bad.any()) else None


_HAS_INF: dict[np.dtype[Any], bool] = {}


def _has_inf(dtype: np.dtype[Any]) -> bool:
    """Whether the float (or complex) ``dtype`` holds inf: float8_e4m3fn and the other "fn" types do not."""
    has = _HAS_INF.get(dtype)
    if has is None:
        with np.errstate(over="ignore", invalid="ignore"):
            has = bool(np.isinf(np.asarray(np.inf).astype(dtype).astype(np.complex128)))
        _HAS_INF[dtype] = has
    return has


def _wide_enough(saved: np.dtype[Any], kind: str) -> str:
    """What to suggest for a template the values of dtype ``saved`` do not fit: the checkpoint's own dtype."""
    if kind == "signed" and saved.kind != "i":
        return ""
    x64 = saved.itemsize == 8 and saved.kind in "iuf"
    return f", such as the checkpoint's own {dtypes._name(saved)}" + (
        " (64-bit dtypes need jax.config.update('jax_enable_x64', True) before the arrays are made)" if x64 else ""
    )


#: A JAX array whose host copy a save gathers later: the placeholder serialized in its place (kept alive, so
#: its id stays unique), the array (or the single-device array of one shard), and where it is held.
_Deferred = tuple[np.ndarray[Any, Any], Any, str]


class _SavedJax(threading.local):
    """The JAX arrays a save in this thread serializes, while a checkpoint asks for them (see :func:`saved_jax`)."""

    arrays: list[tuple[_NumpyValue, Any]] | None = None
    #: While a save defers the gathering of JAX arrays: what each placeholder stands for, by its id.
    deferred: dict[int, _Deferred] | None = None


_SAVED_JAX = _SavedJax()


@contextlib.contextmanager
def saved_jax(*, defer: bool = False) -> Iterator[tuple[list[tuple[_NumpyValue, Any]], dict[int, _Deferred] | None]]:
    """Collect ``(node, array)`` for each JAX array serialized in this thread within the block.

    The nodes append themselves where they read their array anyway, so a save of numpy values, tensors or
    variables pays nothing for it.

    With ``defer``, JAX arrays are not gathered from their devices: each serializes as a placeholder that
    holds no memory (its dtype and shape), and the second value yielded maps the placeholder's id to
    ``(placeholder, array, where)``: the save writes :func:`host_copy` of ``array`` in its place, made
    when it is written. Only for a save that builds its items so: the placeholders are no values.
    """
    outer = _SAVED_JAX.arrays, _SAVED_JAX.deferred
    arrays: list[tuple[_NumpyValue, Any]] = []
    deferred: dict[int, _Deferred] | None = {} if defer else None
    _SAVED_JAX.arrays, _SAVED_JAX.deferred = arrays, deferred
    try:
        yield arrays, deferred
    finally:
        _SAVED_JAX.arrays, _SAVED_JAX.deferred = outer


def _defer(deferred: dict[int, _Deferred], array: Any, dtype: np.dtype[Any], where: str) -> np.ndarray[Any, Any]:
    """A placeholder for the host copy of the JAX ``array`` (saved as ``dtype``), recorded in ``deferred``."""
    placeholder = _placeholder(dtype, tuple(array.shape))
    deferred[id(placeholder)] = (placeholder, array, where)
    return placeholder


def host_copy(array: Any, dtype: np.dtype[Any], where: str) -> np.ndarray[Any, Any]:
    """The host copy of the JAX ``array`` as ``dtype``, gathered now (for a placeholder of :func:`saved_jax`).

    Raises
    ------
    TrackableError
        The array was deleted meanwhile (donated to a jitted function by another thread, say).
    """
    value = _jax_to_numpy(array, where)
    return value if value.dtype == dtype else value.astype(dtype)


def _placeholder(dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """A read-only array of ``dtype`` and ``shape`` that holds no memory (one element, broadcast)."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def _key_layout(keys: Any, where: str, error: TypeError) -> tuple[Any, np.dtype[Any], tuple[int, ...]]:
    """The implementation of the typed PRNG key array or template ``keys``, and its key data's dtype and shape.

    Found by tracing ``jax.random.key_impl`` and ``jax.random.key_data`` on its shape (no computation, no
    device memory), which a ``jax.ShapeDtypeStruct`` of a key dtype also allows: JAX offers no public
    way from a key dtype to its implementation.

    Raises
    ------
    TrackableError
        ``keys`` has a dtype numpy does not know (``error``) and is no PRNG key array either.
    """
    jax = sys.modules["jax"]
    found: list[Any] = []

    def probe(k: Any) -> Any:
        found.append(jax.random.key_impl(k))
        return jax.random.key_data(k)

    try:
        data = jax.eval_shape(probe, jax.ShapeDtypeStruct(keys.shape, keys.dtype))
    except Exception as exc:  # not a key array: JAX raises its own ways (TypeError, ValueError)
        kind = "jax.ShapeDtypeStruct" if is_jax_shape(keys) else "JAX array"
        raise TrackableError(
            f"{where}: the {kind} of dtype {keys.dtype} cannot be saved or restored into ({error}); convert it, or "
            "assign NoDependency(value) to keep it unsaved"
        ) from exc
    return found[0], np.dtype(data.dtype), tuple(data.shape)


def _refuse_spread_key(keys: Any, where: str) -> None:
    """Refuse a typed PRNG key array (or template) spread over several processes: not supported.

    Raises
    ------
    TrackableError
        Always.
    """
    raise TrackableError(
        f"{where}: the typed PRNG key array of shape {tuple(keys.shape)} is spread over several processes "
        f"(sharding {keys.sharding}), which a checkpoint does not save or restore; replicate it over the "
        "processes (jax.device_put(keys, NamedSharding(mesh, PartitionSpec()))), or save "
        "jax.random.key_data(keys) as a plain array and wrap it again with jax.random.wrap_key_data"
    )


class _DeletedHint(threading.local):
    """Why a JAX array may have been deleted, and what to do, where a caller knows better (see
    :func:`deleted_arrays_hint`); empty for the general advice."""

    text = ""


_DELETED_HINT = _DeletedHint()


@contextlib.contextmanager
def deleted_arrays_hint(text: str) -> Iterator[None]:
    """Within the block, a JAX array refused for being deleted (in this thread) is refused with ``text``.

    For a caller that knows why it meets such arrays, the preemption save: the arrays a checkpoint was given
    before a donating step, in a loop that assigns its state only before its own saves.
    """
    outer = _DELETED_HINT.text
    _DELETED_HINT.text = text
    try:
        yield
    finally:
        _DELETED_HINT.text = outer


def _check_jax(array: Any, where: str) -> None:
    """Refuse a JAX array that holds no values any more."""
    if array.is_deleted():
        raise TrackableError(
            f"{where}: the JAX array was deleted (donated to a jitted function, say)"
            + (_DELETED_HINT.text or "; assign the arrays the function returned before saving")
        )


def _concrete_sharding(sharding: Any, shape: tuple[int, ...], where: str) -> Any:
    """A template's ``sharding`` on concrete devices: itself, or the same over the mesh ``jax.set_mesh`` set.

    ``jax.eval_shape`` of arrays on a mesh with Explicit axes (``jax.make_mesh``'s default since JAX 0.7)
    gives shardings over an ``AbstractMesh``: axis names and sizes, no devices. The mesh the program set
    (``jax.set_mesh(mesh)``) is taken when its abstract form is that mesh; nothing else is guessed (the
    order of the devices along the axes is the program's choice).

    Raises
    ------
    TrackableError
        The sharding is over an ``AbstractMesh`` and no such concrete mesh is set.
    """
    jax = sys.modules["jax"]
    abstract = getattr(jax.sharding, "AbstractMesh", None)
    mesh = getattr(sharding, "mesh", None)
    if abstract is None or not isinstance(mesh, abstract):
        return sharding
    get_mesh = getattr(jax.sharding, "get_mesh", None)
    concrete = get_mesh() if get_mesh is not None else None
    if isinstance(concrete, jax.sharding.Mesh) and not concrete.empty and concrete.abstract_mesh == mesh:
        return jax.sharding.NamedSharding(concrete, sharding.spec, memory_kind=sharding.memory_kind)
    raise TrackableError(
        f"{where}: the jax.ShapeDtypeStruct template of shape {shape} has the sharding {sharding}, over an "
        "AbstractMesh: it names the mesh's axes but no devices, so a restore cannot place the array. "
        "jax.eval_shape(lambda: state) gives such templates for arrays on a mesh with Explicit axes "
        "(jax.make_mesh's default since JAX 0.7). Give templates with concrete shardings: "
        "jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state) of the "
        "arrays, or jax.eval_shape(jax.jit(init, out_shardings=shardings)); or set the mesh first "
        "(jax.set_mesh(mesh), the mesh of those axes), which the template's AbstractMesh is then taken to be"
    )


def _spread_sharding(sharding: Any, shape: tuple[int, ...], where: str, what: str) -> Any:
    """``sharding`` if it spreads an array of ``shape`` over several processes (else ``None``), once checked.

    ``what`` says, for messages, what this process is to do with the array ("restore into").

    An array spread so (not fully addressable, not fully replicated) is a partitioned value: this process
    holds some of its shards. One replicated over the processes is whole in each and saved as a plain value.

    Raises
    ------
    TrackableError
        This process cannot tell which parts of the array its devices hold (a sharding over an
        ``AbstractMesh``, which names no devices), holds none of them (a mesh of other processes' devices
        only, as a pipeline stage's), or a part is not a block of the whole array.
    """
    try:
        if sharding.is_fully_addressable or sharding.is_fully_replicated:
            return None
        indices = sharding.addressable_devices_indices_map(shape)
    except Exception as exc:  # JAX raises its own ways (ValueError, NotImplementedError)
        raise TrackableError(
            f"{where}: this process cannot {what} the JAX array of shape {shape} on the sharding {sharding}: JAX "
            f"cannot tell from it which parts of the array this process's devices hold ({type(exc).__name__}: "
            f"{exc}). Give a sharding over concrete devices that splits the shape evenly, such as "
            "jax.sharding.NamedSharding(jax.sharding.Mesh(devices, axis_names), spec), or assign "
            "NoDependency(value) to keep it unsaved"
        ) from exc
    if not indices:
        # Every process of a coordinated save holds the same objects, and this one has nothing of this array.
        raise TrackableError(
            f"{where}: the JAX sharding {sharding} places the array of shape {shape} on other processes' "
            "devices only, so this process holds no part of it and cannot be part of its save or restore; "
            "give each process only the arrays its devices hold a part of, or place the array on a mesh that "
            "includes a device of every process"
        )
    for index in indices.values():
        if any(part.step not in (None, 1) for part in index):
            raise TrackableError(
                f"{where}: the JAX sharding {sharding} gives this process a part of the array of shape {shape} "
                f"that is not a block of it ({index}), which a checkpoint cannot store as a slice; reshard it "
                "(jax.device_put(array, NamedSharding(mesh, spec))) before saving"
            )
    return sharding


def _block(index: tuple[slice, ...], shape: tuple[int, ...]) -> TensorSlice:
    """The slice of the whole array of ``shape`` that a shard's ``index`` (JAX's tuple of slices) names."""
    bounds = [part.indices(n)[:2] for part, n in zip(index, shape, strict=True)]
    return TensorSlice(shape, tuple(lo for lo, _ in bounds), tuple(hi - lo for lo, hi in bounds))


def _spread_reads(sharding: Any, shape: tuple[int, ...]) -> tuple[TensorSlice, list[tuple[Any, tuple[slice, ...]]]]:
    """What a restore into ``sharding`` reads: see :meth:`_NumpyValue._spread_layout`."""
    indices = sharding.addressable_devices_indices_map(shape)
    blocks = [(device, _block(index, shape)) for device, index in indices.items()]
    low = tuple(min(b.offset[d] for _, b in blocks) for d in range(len(shape)))
    high = tuple(max(b.offset[d] + b.shape[d] for _, b in blocks) for d in range(len(shape)))
    read = TensorSlice(shape, low, tuple(h - lo for lo, h in zip(low, high, strict=True)))
    parts = [
        (device, tuple(slice(o - lo, o - lo + n) for o, n, lo in zip(b.offset, b.shape, low, strict=True)))
        for device, b in blocks
    ]
    return read, parts


def _spread_slices(
    array: Any, dtype: np.dtype[Any], where: str, deferred: dict[int, _Deferred] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """The slices of the whole JAX ``array`` this process saves, by TensorFlow slice spec.

    Each distinct part of the array is saved by exactly one device of the whole job, the one holding its
    copy ``replica_id == 0``: JAX numbers the copies of each part alike in every process, so a part
    replicated over devices or processes is read off one device and written once, and the processes
    write about the bytes of their own parts. Each is read through its own short-lived array, as
    :func:`_jax_to_numpy` reads.

    A process holding no first copy saves one empty slice: a save without a coordinator, whose slices
    must then cover the array alone, is refused as not covering it rather than written without the value.

    With ``deferred`` (see :func:`saved_jax`), each slice is a placeholder for the host copy of its shard,
    gathered later.
    """
    _check_jax(array, where)
    shape = tuple(array.shape)
    slices: dict[str, np.ndarray[Any, Any]] = {}
    for shard in array.addressable_shards:
        if shard.replica_id != 0:
            continue
        if deferred is not None:
            slices[_block(shard.index, shape).spec] = _defer(deferred, shard.data, dtype, where)
            continue
        data = np.asarray(shard.data)
        if data.dtype != dtype or not data.flags.c_contiguous:
            data = np.ascontiguousarray(data, dtype=dtype)
        slices[_block(shard.index, shape).spec] = data
    if not slices:
        empty = (0, *shape[1:])
        slices[TensorSlice(shape, (0,) * len(shape), empty).spec] = np.empty(empty, dtype)
    return slices


def _jax_to_numpy(array: Any, where: str) -> np.ndarray[Any, Any]:
    """The value of a JAX array on the host, gathered shard by shard.

    Each shard is read through its own short-lived array, so the array itself does not keep the host copy
    (``np.asarray`` on it would, for its lifetime). A replicated array is read from one copy; one
    replicated over processes, from this process's. (An array spread over processes is saved by
    :func:`_spread_slices` instead.)
    """
    _check_jax(array, where)
    out = np.empty(array.shape, dtype=np.dtype(array.dtype))
    done: set[tuple[tuple[int | None, int | None, int | None], ...]] = set()
    for shard in array.addressable_shards:
        index = tuple((s.start, s.stop, s.step) for s in shard.index)
        if index in done:
            continue  # another device's copy of the same part
        done.add(index)
        out[shard.index] = np.asarray(shard.data)
    return out


def _weak_like(old: Any, array: np.ndarray[Any, Any]) -> Any:
    """``array``, weakly typed where ``old`` is a weakly typed JAX scalar (a learning rate from a Python float).

    Weak types decide dtype promotion (a weak float32 times a bfloat16 array stays bfloat16), so a restore
    that made the scalar strongly typed would change the computations after it. JAX makes weak arrays only
    from Python scalars; a weakly typed array of another shape is restored strongly typed.
    """
    if not getattr(old, "weak_type", False) or array.shape != ():
        return array
    weak = sys.modules["jax"].numpy.asarray(array.item())
    return weak if weak.dtype == array.dtype else array


def _python_number_array(number: Any, dtype: np.dtype[Any], where: str) -> np.ndarray[Any, Any]:
    """A Python number as the 0-d array it is saved as.

    Raises
    ------
    TrackableError
        An ``int`` that does not fit in int64.
    """
    try:
        return np.asarray(number, dtype=dtype)
    except OverflowError as exc:
        raise TrackableError(
            f"{where} is {number}, which does not fit in int64; save it as a string in a "
            "trackpoint.Variable(str(value), dtype=trackpoint.string), or assign NoDependency(value) to keep it "
            "unsaved"
        ) from exc
