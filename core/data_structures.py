"""Trackable wrappers for lists, dicts and tuples, and the numpy values they hold.

``AutoTrackable`` wraps a ``list``/``dict``/``tuple`` assigned to an
attribute so that trackables inside it become dependencies, named by list
index or dict key, as ``tensorflow/python/trackable/data_structures.py`` does.
Nested containers are wrapped recursively. Wrappers compare equal to the plain
container they hold; :class:`NoDependency` opts a value out of wrapping and
tracking.

What is saved (the rule, also in ``docs/concepts.md``):

* a :class:`~trackpoint.Trackable` becomes a dependency;
* a numeric numpy value (an ``ndarray`` or a numpy scalar such as
  ``np.float32(1.0)``; bool, int, float, complex or bfloat16 elements) is
  saved as a variable in the same place would be (key
  ``<path>/.ATTRIBUTES/VARIABLE_VALUE``, so TensorFlow reads it into a
  ``tf.Variable`` and the other way round). The container (or attribute)
  keeps the numpy value itself; a writeable array is restored in place, a
  numpy scalar or read-only array is replaced by the restored value of the
  same type. This holds for ``AutoTrackable`` attributes too;
* a torch tensor is saved as a numpy value in its place would be; the holder
  keeps the tensor, and a restore writes into its memory (through a numpy
  view, or with ``copy_`` for a tensor numpy cannot share, on another device
  say, whose value is then read again at each save). torch is never
  imported here: a tensor exists only once the caller imported it;
* a JAX array is saved as a numpy value would be (gathered shard by shard at
  each save) and replaced on restore by a new JAX array on the sharding of
  the old one; a ``jax.ShapeDtypeStruct`` is a place to restore into. A
  list, dict or tuple holding JAX arrays is wrapped as a copy of its
  containers, so the user's pytree stays plain; the dict and list wrappers
  are registered as JAX pytree nodes (once jax is imported), flattened as
  dicts and lists and rebuilt as plain ones;
* a node of a registered JAX pytree type that is not a dict, list or tuple
  (a ``jax.tree_util.register_dataclass`` dataclass, a class registered with
  ``register_pytree_node`` or ``register_pytree_with_keys``) is saved as a
  tuple is, its children named by their key-path entries; its holder keeps a
  copy rebuilt by the type's own unflatten, and what that copy holds is what
  is saved and restored (see :class:`_PytreeValue`);
* a dict's saved entries are named by their keys: a str key as it is, an int
  key by its decimal string;
* ``None`` is kept, with nothing to save;
* a numpy value of another dtype (strings, objects, dates, structured) or a
  masked array raises :class:`TrackableError` when it is assigned;
* an object with ``state_dict()`` and ``load_state_dict()`` that is not a
  trackable (a torch module or optimizer) is saved through its state dict by
  a :class:`~trackpoint.stateful.StatefulValue` node; the holder keeps the
  object (see ``trackpoint.stateful``);
* a torch optimizer's state dict given as a dict (``{"state": ..., "param_groups": ...}``, anywhere in a
  ``Checkpoint``'s containers or an ``AutoTrackable``'s attribute) is wrapped as a copy of its containers
  (same tensors), so that a save changes neither it nor the optimizer, whose per-parameter dicts it holds.
  The copy follows the containers given: a save saves what they hold then (after a step, or an edit). A
  restore fills them, as PyTorch's ``dcp.load`` does: its tensors in place, and what it replaces (Python
  numbers, tuples) is written into them too; the state of a parameter its ``state`` lacks (an optimizer that
  has not stepped yet) is made and filled (see :meth:`_DictWrapper._dependency_requested`); a list of tensors
  given shorter than the one saved (LBFGS's history) takes the saved length, an LBFGS history given longer is
  cut to it, and LBFGS's ``al`` takes the restored ``history_size`` (see :func:`restoring`). A list or dict
  holding torch state dicts (``{"model": net.state_dict(), "optim": opt.state_dict()}``, see
  :func:`_holds_torch_state`) is wrapped as such a copy too, so that wrapping never changes the user's dicts;
* Python numbers (``bool``, ``int``, ``float``) given to a ``Checkpoint``,
  directly or in its containers ("strict" containers), are saved as scalars
  (``bool``, ``int64``, ``float64``) and replaced on restore by a Python
  number of the same type;
* other plain Python values (strings, ``None``, functions, other objects),
  and numbers elsewhere, are configuration: never saved, as in TensorFlow. A
  ``Checkpoint`` refuses them, directly or in its containers, so that nothing
  handed to a checkpoint is skipped silently;
* containers of other kinds (a ``dict`` or ``list`` subclass, ``UserDict``,
  ``MappingProxyType``, ``ChainMap``, a ``set``, a ``deque``, another
  ``Mapping`` or collection, a dataclass instance, a ``SimpleNamespace``) are
  not tracked, so they are configuration too, unless they hold something
  saved: one holding a trackable, a numeric array or a stateful object (looked
  for inside such containers and the plain ones in them, breadth-first, up to
  ``_SCAN_ITEMS`` items) raises :class:`TrackableError` when it is assigned,
  naming where, instead of being left out of every checkpoint. The attributes
  of other objects are not looked into;
* ``NoDependency(value)`` keeps any value unsaved, everywhere.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import copy
import dataclasses
import itertools
import logging
import operator
import sys
import threading
import types
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Generic, SupportsIndex, TypeVar

import numpy as np

from trackpoint import dtypes
from trackpoint._array_values import (
    PYTHON_NUMBERS,
    _NumpyValue,
    is_array_value,
    is_jax_array,
    is_jax_shape,
    is_numpy_value,
)
from trackpoint.errors import NameConflictError, TrackableError
from trackpoint.stateful import (
    _LBFGS_LISTS,
    StatefulValue,
    _is_int_text,
    given_param_groups,
    has_lbfgs_param_groups,
    is_stateful,
    optimizer_param_numbers,
    optimizer_state_entry,
    pad_lbfgs_al,
    param_groups_mismatch,
    stateful_node,
)
from trackpoint.trackable import Trackable

__all__ = [
    "ListWrapper",
    "NoDependency",
    "TrackableDataStructure",
    "is_array_value",
    "is_numpy_value",
    "sticky_attribute_assignment",
    "wrap_or_unwrap",
]

T = TypeVar("T")

_log = logging.getLogger("trackpoint")

_MISSING: Any = object()


class NoDependency(Generic[T]):
    """Assign ``NoDependency(value)`` to store ``value`` without tracking, wrapping or saving it."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def _wrap(value: Any, name: str, strict: bool, where: str) -> Any:
    """The value a container or attribute stores for ``value`` placed under ``name``.

    Lists and dicts are wrapped around the object given (the wrapper and the
    original share their contents, as in TensorFlow); a tuple that holds
    something saved becomes a :class:`_TupleValue` node (its holder keeps
    ``node.current()``, a real tuple, and saves the node), and so does a node
    of a registered JAX pytree type (a :class:`_PytreeValue`: a dataclass
    registered with ``jax.tree_util.register_dataclass``, say); a numpy value
    is checked and returned as is (its holder saves it through a
    :class:`_NumpyValue` node).

    Raises
    ------
    TrackableError
        ``value`` is a numpy value that cannot be saved; ``strict`` is set
        and ``value`` would not be saved; ``value`` is not tracked but holds
        something that would be saved (see :func:`_refuse_hidden_state`); or
        its containers are nested too deeply to wrap.
    """
    if isinstance(value, NoDependency):
        return value.value
    if isinstance(value, Trackable):
        return value
    kind = type(value)
    container = _is_container(value)
    # The cheap checks first: is_pytree_node costs more, for each of possibly 10^5 arrays.
    if not container and is_array_value(value):
        _NumpyValue(value, name, where)  # checks that it can be saved
        _show_wrappers_to_jax()  # wrappers made before jax was imported may hold JAX arrays from now on
        return value
    if container or (kind not in _NOTHING_INSIDE and is_pytree_node(value) and not is_stateful(value)):
        # The outermost call turns Python's RecursionError, from containers nested too deeply to wrap, into a
        # TrackableError naming where. (Caught, not prevented by a depth limit: how deep Python can go depends
        # on how deep the caller's stack already is. Here, not in a helper: a frame more per level of nesting
        # would lower the depth that can be wrapped; and only for containers, the values that recurse.)
        outermost = not _WRAPPING.ids
        try:
            # A torch optimizer's state dict, wherever it sits in what was given (unless in a copy made already),
            # in a checkpoint's containers or any other (an AutoTrackable's attribute): its dicts are the
            # optimizer's own wherever they are given. Its per-parameter dicts are the optimizer's own (LBFGS
            # keeps lists in them, which a wrapper would replace), and a save must not change them; a restore
            # writes what it replaces into them too (see TrackableDataStructure._restored_in_source).
            state_dict = _saves_strings(value)
            if state_dict and (id(value) not in _COPYING.sources or not _COPYING.state_dict):
                with _copying(state_dict=True):
                    # A copy made already, with the containers around it (see below), is wrapped as one.
                    copied_already = id(value) in _COPYING.sources
                    return _wrap(value if copied_already else _copy_containers(value), name, strict, where)
            if not _COPYING.depth and ("jax" in sys.modules or "torch" in sys.modules):
                # A pytree of JAX arrays: the wrappers go around copies of its containers (same arrays), so the
                # user's pytree stays plain. JAX compares container types, and a wrapper where a dict was would
                # fail the user's next tree_map over it and a plain tree. A list or dict holding torch state
                # dicts (`{"model": net.state_dict(), "optim": opt.state_dict()}`, torch.save's layout) is
                # copied too, and the copies follow it as a state dict's do: wrapped in place, it would hold
                # wrappers where the user's state dicts were (their types, their identity, `torch.load`). The
                # outermost container is looked through once: the containers inside are wrapped within this
                # call, and need no look of their own. (`copied` tells assign_attribute about the JAX tree.)
                jax = "jax" in sys.modules and _holds_jax(value)
                torch = not jax and "torch" in sys.modules and _holds_torch_state(value)
                with _copying(state_dict=False, follow=torch):
                    _COPYING.copied = jax
                    return _wrap(_copy_containers(value) if jax or torch else value, name, strict, where)
            if kind is dict or kind is collections.OrderedDict or kind is list:
                with _wrapping(value, where):
                    if kind is list:
                        return ListWrapper(value, strict=strict, _where=where)
                    return _DictWrapper(value, strict=strict, _where=where)
            if container:
                if strict or _should_wrap_tuple(value):
                    with _wrapping(value, where):
                        return _TupleValue(value, strict, where)
            elif strict or _should_wrap_tuple(_node_children(value)):
                with _wrapping(value, where):
                    return _PytreeValue(value, strict, where)
        except RecursionError as exc:
            if not outermost:
                raise
            # The finally blocks of the _wrapping context managers can fail to run at the recursion limit,
            # leaving ids of containers no longer being wrapped; at the outermost call no container is.
            _WRAPPING.ids.clear()
            raise TrackableError(_too_deep_message(where, exc)) from exc
    if is_stateful(value):
        return value  # saved through its state dict by a node its holder makes
    if strict and (kind in PYTHON_NUMBERS or (kind is str and _STRINGS.saved)):
        _NumpyValue(value, name, where)  # checks that it can be saved (an int beyond int64 cannot)
        return value
    if strict:
        if value is not None:  # None holds nothing to save (an empty subtree, to JAX)
            raise TrackableError(_unsaved_message(value, where))
    elif kind not in _NOTHING_INSIDE and kind not in _OPAQUE:
        # Not tracked: configuration, unless it holds state a plain dict, list or tuple would have saved.
        _refuse_hidden_state(value, where)
    return value


class _Strings(threading.local):
    """Whether the container whose contents this thread wraps saves Python strings (see :func:`_saves_strings`)."""

    saved = False


_STRINGS = _Strings()


def _saves_strings(value: Any) -> bool:
    """Whether ``value``, a dict given to be saved, is a torch optimizer's state dict: its strings are saved.

    An optimizer built from ``named_parameters()`` holds its parameters' names in each param group
    (``param_names``, a list of str), which ``load_state_dict`` takes back: given as a dict, such a state
    dict is saved whole, each str as a 0-d string value (restored as a str), as ``state_dict()`` would have
    it. Elsewhere a checkpoint's containers refuse strings (configuration, in TensorFlow's rule), which
    :func:`_unsaved_message` says how to save.
    """
    return type(value) is dict and len(value) == 2 and "state" in value and "param_groups" in value


def _strings_saved(saved: bool, make: Callable[[], T]) -> T:
    """``make()``, wrapping the containers it makes as ones that save Python strings where ``saved``."""
    outer = _STRINGS.saved
    _STRINGS.saved = saved
    try:
        return make()
    finally:
        _STRINGS.saved = outer


class _Copying(threading.local):
    """What the wrapping of a copied pytree (see _wrap) in this thread knows.

    Thread-local, not arguments: the copies are wrapped through the wrappers' constructors, which other
    code calls too.
    """

    depth = 0
    #: Whether the outermost value wrapped last was a pytree of JAX arrays, wrapped as a copy.
    copied = False
    #: Whether the value being copied is a torch optimizer's state dict (see _saves_strings), not a pytree.
    state_dict = False
    #: Whether the value being copied holds torch state dicts (see _holds_torch_state): its copies follow it.
    follow = False
    #: The user's container each copy was made from, by the copy's id.
    sources: dict[int, Any]

    def __init__(self) -> None:
        self.sources = {}


_COPYING = _Copying()


@contextlib.contextmanager
def _copying(state_dict: bool, follow: bool = False) -> Iterator[None]:
    """Wrap copies made by :func:`_copy_containers` in this thread, each wrapper keeping its copy's source.

    ``state_dict`` tells that the copies are of a torch optimizer's state dict (see :func:`_saves_strings`),
    ``follow`` that they are of a list or dict holding torch state dicts (see :func:`_holds_torch_state`): the
    wrappers of either follow their sources (see :meth:`TrackableDataStructure._check_source`).
    """
    outer = _COPYING.state_dict, _COPYING.follow
    _COPYING.depth += 1
    _COPYING.state_dict = state_dict
    _COPYING.follow = follow or (state_dict and _COPYING.follow)
    try:
        yield
    finally:
        _COPYING.depth -= 1
        _COPYING.state_dict, _COPYING.follow = outer
        if not _COPYING.depth:
            _COPYING.sources.clear()


class _Restoring(threading.local):
    """Whether this thread runs a restore, or looks at the graph for one's status (see :func:`restoring`)."""

    depth = 0
    #: The plain trees (see _PlainTree) a restore replaced something in, by id: rebuilt when it ends.
    stale: dict[int, _PlainTree]
    #: The torch optimizer state dicts given as dicts (the user's, see _saves_strings) a restore met, by id:
    #: LBFGS's ``al`` in them is given its ``history_size`` places when it ends (see pad_lbfgs_al).
    state_dicts: dict[int, dict[Any, Any]]

    #: The LBFGS per-parameter dicts (copies, see _DictWrapper._entries_missing_from) a restore planned, by id:
    #: each with the names of its history lists the checkpoint holds, and its restore uid before the restore.
    histories: dict[int, tuple[_DictWrapper, list[str], int]]
    #: The lists in a torch optimizer's state dict given as a dict that a restore planned, by id: each with the
    #: length of the list the checkpoint holds there (None where its entries are not a list's positions).
    lengths: dict[int, tuple[ListWrapper, int | None]]
    #: The param groups of those state dicts as given (see given_param_groups), by id, before the restore wrote
    #: into them: the per-parameter state it makes must be of the same parameters (see _dependency_requested).
    groups: dict[int, list[tuple[list[Any], list[Any] | None]] | None]

    def __init__(self) -> None:
        self.stale = {}
        self.groups = {}
        self.state_dicts = {}
        self.histories = {}
        self.lengths = {}


_RESTORING = _Restoring()


@contextlib.contextmanager
def restoring() -> Iterator[None]:
    """Run a restore, or a look at the graph for its status, in this thread.

    The refusals of a save do not apply: a pytree of JAX arrays changed in place since it was given is
    restored into as it was given (what the checkpoint tracks), the restore replacing its arrays, and
    listing the graph is no save. When the outermost restore ends, the attributes holding a plain tree it
    replaced something in are rebuilt (see :class:`_PlainTree`), so that they stay in the instance's
    ``__dict__`` (``vars()``, ``copy``, pickling see them); after a restore that raised, at their first read.
    Then too each ``al`` of a torch ``LBFGS`` state dict given as a dict that it met takes the places of the
    ``history_size`` restored with it, as the optimizer itself restored does (see
    :func:`~trackpoint.stateful.pad_lbfgs_al`): the restore fills only the places the checkpoint holds values
    for, and the param group's ``history_size``, which ``load_state_dict`` then gives the optimizer, may be
    larger than the ``al`` given. Before that, each list of an ``LBFGS`` history given longer than the one the
    checkpoint holds is cut to the saved length (see :meth:`_DictWrapper._take_saved_history`), so that the
    history restored is the saved one whole, as the optimizer itself restored takes it.
    """
    state = _RESTORING
    state.depth += 1
    ended = False
    try:
        yield
        ended = True
    finally:
        state.depth -= 1
        if not state.depth:
            trees, state.stale = state.stale, {}
            state_dicts, state.state_dicts = state.state_dicts, {}
            histories, state.histories = state.histories, {}
            lengths, state.lengths = state.lengths, {}
            state.groups = {}
            if ended:
                for tree in trees.values():
                    tree.rebuild()
                for wrapper, names, before in histories.values():
                    wrapper._take_saved_history(names, before, lengths)
                for state_dict in state_dicts.values():
                    pad_lbfgs_al(state_dict)


class _Wrapping(threading.local):
    """The containers whose wrappers this thread is building (by id), to refuse one that holds itself."""

    def __init__(self) -> None:
        self.ids: set[int] = set()


_WRAPPING = _Wrapping()


@contextlib.contextmanager
def _wrapping(value: Any, where: str) -> Iterator[None]:
    """Mark ``value`` as being wrapped while its wrapper wraps what it holds.

    A container that holds itself (directly or through other containers) would be wrapped without end:
    the checkpoint's graph of containers is a tree of copies' wrappers, not a graph of the user's objects.
    """
    ids = _WRAPPING.ids
    if id(value) in ids:
        raise TrackableError(
            f"{where} is a {type(value).__name__} that also holds it (a container that holds itself): a "
            "checkpoint saves containers as a tree and cannot save a cycle of lists, dicts or tuples. Hold "
            "the inner reference through a trackable object (cycles between trackables are saved) or "
            "NoDependency(value)."
        )
    ids.add(id(value))
    try:
        yield
    finally:
        ids.discard(id(value))


def _is_container(value: Any) -> bool:
    """Whether ``value`` is a plain container: a dict, list or tuple, which is wrapped and tracked."""
    kind = type(value)
    return kind is dict or kind is collections.OrderedDict or kind is list or isinstance(value, tuple)


def _holds_jax(value: Any) -> bool:
    """Whether ``value``, a list, dict or tuple, holds a JAX array somewhere inside its containers."""
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue  # a container holding itself
        seen.add(id(item))
        kind = type(item)
        if kind is dict or kind is collections.OrderedDict:
            pending.extend(item.values())
        elif kind is list or isinstance(item, tuple):
            pending.extend(item)
        elif is_jax_array(item) or is_jax_shape(item):
            return True
        elif kind not in _NOTHING_INSIDE and not is_array_value(item) and is_pytree_node(item):
            pending.extend(_node_children(item))
    return False


def _holds_torch_state(value: Any) -> bool:
    """Whether ``value``, a list, dict or tuple, holds torch state dicts: a torch optimizer's state dict (see
    :func:`_saves_strings`) or a torch tensor in a container inside it (``{"model": net.state_dict()}``).

    Wrapped in place, such a container would hold wrappers where those containers were. One holding tensors
    itself only (``net.state_dict()``) is not changed by its wrapper: it is wrapped in place, as TensorFlow does.
    """
    # The outermost container's own leaves tell nothing (a tensor there is a flat state dict's): only the
    # containers among them are looked into, so a flat state dict of many tensors costs one type check each.
    if type(value) is dict or type(value) is collections.OrderedDict:
        outer: Iterable[Any] = value.values()
    elif type(value) is list or isinstance(value, tuple):
        outer = value
    else:
        return False  # a pytree node of another kind: its children are its own to give
    pending = [(child, 1) for child in outer if type(child) in _STATE_CONTAINERS or isinstance(child, tuple)]
    seen = {id(value)}
    while pending:
        item, depth = pending.pop()
        if id(item) in seen:
            continue  # a container holding itself
        seen.add(id(item))
        kind = type(item)
        if kind is dict or kind is collections.OrderedDict:
            if _saves_strings(item):
                return True
            pending.extend((child, depth + 1) for child in item.values())
        elif kind is list or isinstance(item, tuple):
            pending.extend((child, depth + 1) for child in item)
        elif depth > 1 and dtypes._is_torch_tensor(item):
            return True
    return False


#: The containers :func:`_holds_torch_state` looks into (tuples, namedtuples included, by isinstance).
_STATE_CONTAINERS: Final = frozenset({dict, collections.OrderedDict, list})


def _copy_containers(value: Any, made: dict[int, Any] | None = None) -> Any:
    """``value`` with new lists, dicts and tuples around the same leaves (each copy's source recorded)."""
    made = {} if made is None else made
    if id(value) in made:
        return made[id(value)]  # a container held twice (or by itself) stays one container
    kind = type(value)
    if kind is dict or kind is collections.OrderedDict:
        copied: Any = kind()
        made[id(value)] = copied
        for key, item in value.items():
            copied[key] = _copy_containers(item, made)
    elif kind is list:
        copied = []
        made[id(value)] = copied
        copied.extend(_copy_containers(item, made) for item in value)
    elif isinstance(value, tuple):
        items = [_copy_containers(item, made) for item in value]
        if kind is tuple:
            return tuple(items)
        try:
            return kind(*items) if _fields(kind) else kind(items)
        except TypeError:
            return value  # a tuple type that cannot be rebuilt (TensorFlow's rule: it is not saved either)
    elif kind not in _NOTHING_INSIDE and not is_array_value(value) and is_pytree_node(value):
        pairs, treedef = _flatten_node(value)
        children = [child for _, child in pairs]
        # Rebuilt as JAX rebuilds it (tree_map does the same): the node's own unflatten, with its static fields.
        # Always, even around the same leaves: the node may be mutable, and the user's must stay the user's.
        copied = treedef.unflatten([_copy_containers(child, made) for child in children])
        made[id(value)] = copied
    else:
        return value
    _COPYING.sources[id(copied)] = value
    return copied


def _should_wrap_tuple(values: tuple[Any, ...]) -> bool:
    """Whether a tuple holds anything saved (TensorFlow leaves other tuples unwrapped)."""
    for value in values:
        if isinstance(value, (NoDependency, Trackable)) or is_array_value(value) or is_stateful(value):
            return True
        if type(value) in (dict, collections.OrderedDict, list):
            return True
        if isinstance(value, tuple):
            if _should_wrap_tuple(value):
                return True
        elif type(value) not in _NOTHING_INSIDE and is_pytree_node(value) and _should_wrap_tuple(_node_children(value)):
            return True
    return False


def _is_saved_kind(value: Any) -> bool:
    """Whether a container element is saved when tracked (a trackable, a numpy value, a tuple of them)."""
    if type(value) in _NOTHING_INSIDE:
        return False
    return (
        isinstance(value, Trackable)
        or is_array_value(value)
        or is_stateful(value)
        or (isinstance(value, tuple) and _should_wrap_tuple(value))
        or (is_pytree_node(value) and _should_wrap_tuple(_node_children(value)))
    )


def _unsaved_message(value: Any, where: str) -> str:
    # A string as a numpy value is refused too (numpy's string dtypes are not saved from containers).
    how = (
        "Save a string as trackpoint.Variable(value, dtype=trackpoint.string)"
        if isinstance(value, (str, bytes))
        else "Save it as a numpy value (np.asarray(value)) or a trackpoint.Variable"
    )
    return (
        f"{where} is {dtypes._describe_typed(value)}, which a checkpoint does not save: only trackables, numeric "
        "numpy values, Python bool/int/float, torch tensors, JAX arrays, objects with state_dict() and "
        f"load_state_dict(), and lists/dicts/tuples of them are saved. {how}, or pass NoDependency(value) to keep "
        "it unsaved."
    )


#: Types of values that hold nothing a checkpoint saves: the scan of untracked values skips them at once.
_NOTHING_INSIDE: frozenset[type] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        bytearray,
        memoryview,
        range,
        slice,
        type(Ellipsis),
        type,
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.ModuleType,
    }
)

# How far the scan of an untracked value (see _find_hidden_state) looks. It runs at every assignment of such
# a value, so it must stay cheap whatever the value is: a vocabulary Counter with a million entries, a config
# dataclass tree, a dataset held as a deque. 1,000 items cost well under a millisecond for values of plain
# data (a few type checks each) and a few milliseconds at worst (objects whose attribute lookups are slow),
# while the containers that hide state (blocks, heads, EMA copies, a queue of modules) hold it within their
# first few items: the scan is breadth-first, so every item at one level is looked at before any level below.
# Beyond the bound the value is taken for configuration, as it was before the scan existed.
#: Items (values of mappings, elements of collections, fields) the scan looks at, in all, at most.
_SCAN_ITEMS = 1_000
#: Levels of containers below the value the scan looks into (the value itself is level 0).
_SCAN_DEPTH = 16


#: Types whose values the scan found nothing to look into, by their type alone (not containers, not dataclasses):
#: an assignment of one skips the scan. Bounded, since classes can be made at run time without end.
_OPAQUE: set[type] = set()
_OPAQUE_LIMIT = 4096

#: Containers that hold their contents weakly: nothing in them is lost by not saving them.
_WEAK_CONTAINERS = (weakref.WeakSet, weakref.WeakValueDictionary, weakref.WeakKeyDictionary)


def _plain_tuple(value: tuple[Any, ...], depth: int) -> bool:
    """Whether ``value`` holds only values with nothing inside, in tuples of such down to ``depth`` levels."""
    for item in value:
        kind = type(item)
        if kind in _NOTHING_INSIDE:
            continue
        if kind is tuple and depth > 1 and _plain_tuple(item, depth - 1):
            continue
        return False
    return True


def _is_saved_state(value: Any) -> bool:
    """Whether ``value``, found inside an untracked value, would be saved if a plain container held it.

    numpy scalars are left out: inside an untracked container (a set of labels, a config's learning rate)
    they are configuration far more often than state.
    """
    if isinstance(value, Trackable):
        return True
    if isinstance(value, np.ndarray):
        # Only numeric values count: strings or objects in a plain container are refused, not saved.
        return value.dtype.kind in "biufc" or dtypes._ml_kind(value.dtype) is not None
    if isinstance(value, np.generic):
        return False
    return is_array_value(value) or is_stateful(value)


#: How the path of an item reads: under a key (``['a']``), a position (``[0]``), an attribute (``.a``), or as
#: an element of an unordered collection (which has no name for it).
_KEY, _INDEX, _ATTRIBUTE, _ELEMENT = "key", "index", "attribute", "element"


def _contents(value: Any) -> tuple[str, Iterable[tuple[Any, Any]]] | None:
    """What the scan looks at in ``value``: how the items' paths read and ``(key, item)`` pairs; ``None``: nothing.

    Plain containers (dict, list, tuple), mappings, other collections, dataclass instances and
    ``SimpleNamespace`` objects are looked into. Other objects are not: their attributes are the user's
    business, as in TensorFlow, which looks into nothing but its tracked containers. Neither are
    arrays of other libraries (anything with ``__array__``): iterating one makes a new array per row.
    """
    kind = type(value)
    if kind is dict or kind is collections.OrderedDict:
        return _KEY, value.items()
    if kind is list:
        return _INDEX, enumerate(value)
    if isinstance(value, tuple):
        fields = _fields(kind)
        return (_ATTRIBUTE, zip(fields, value, strict=False)) if fields else (_INDEX, enumerate(value))
    if kind in _NOTHING_INSIDE:
        return None
    if hasattr(kind, "__dataclass_fields__") and not isinstance(value, type):  # a dataclass instance
        return _ATTRIBUTE, ((field.name, getattr(value, field.name, None)) for field in dataclasses.fields(value))
    if isinstance(value, types.SimpleNamespace):
        return _ATTRIBUTE, vars(value).items()
    if isinstance(value, type):
        return None  # a class
    if not hasattr(kind, "__iter__") or issubclass(kind, (str, bytes, bytearray)) or hasattr(kind, "__array__"):
        # Not iterable (no mapping or collection: most objects leave here, cheaply), text, an array: by type.
        if len(_OPAQUE) < _OPAQUE_LIMIT:
            _OPAQUE.add(kind)
        return None
    if isinstance(value, _WEAK_CONTAINERS):
        return None  # holds its contents weakly: a checkpoint that left them out loses nothing
    if isinstance(value, collections.ChainMap):
        # Its items() first merges the keys of all its maps: look at the maps themselves, lazily.
        return _ATTRIBUTE, ((f"maps[{index}]", inner) for index, inner in enumerate(value.maps))
    if isinstance(value, Mapping):
        return _KEY, value.items()
    if isinstance(value, Sequence):  # a deque too, a list subclass, a UserList
        return _INDEX, enumerate(value)
    if isinstance(value, Collection):  # a set, a frozenset, a dict view
        return _ELEMENT, zip(itertools.repeat(None), value)
    return None


#: A path below the scanned value: ``(parent path, how the step reads, key)``; ``None`` is the value itself.
_Path = tuple[Any, str, Any] | None


def _path_text(where: str, path: _Path) -> str:
    """``where`` followed by the steps of ``path``, as Python would reach the item (``Model.blocks['a'].w``)."""
    steps: list[tuple[str, Any]] = []
    while path is not None:
        path, how, key = path
        steps.append((how, key))
    steps.reverse()
    text = where
    for position, (how, key) in enumerate(steps):
        if how == _KEY:
            text += f"[{key!r}]"
        elif how == _INDEX:
            text += f"[{key}]"
        elif how == _ATTRIBUTE:
            text += f".{key}"
        else:
            text = f"an element of {text}" if position == len(steps) - 1 else f"(an element of {text})"
    return text


def _find_hidden_state(value: Any) -> tuple[_Path, Any, _Path, Any] | None:
    """The first value a checkpoint would save found inside the untracked ``value``, breadth-first.

    Returns ``(path of the item, item, path of the untracked container holding it, that container)`` (the
    outermost one that is not a plain dict, list or tuple: the one to change), or ``None`` when nothing
    was found within ``_SCAN_ITEMS`` items and ``_SCAN_DEPTH`` levels. Each container is looked into
    once, so a container that holds itself ends the scan too. A container whose contents cannot be read
    (its iteration or a lookup raises) is not looked into further: it is the user's object.
    """
    budget = _SCAN_ITEMS
    # By id, holding each container: an id stays unique only while its object lives (a lazy mapping may
    # make its values when they are read).
    seen = {id(value): value}
    try:
        found = _contents(value)
    except Exception:  # noqa: BLE001 -- unreadable, so not looked into (see above)
        return None
    if found is None:
        return None
    # (container's path, how its items' paths read, its (key, item) pairs, its depth, the untracked container
    # above it or itself, as (path, container), or None while only plain containers were passed through)
    pending: collections.deque[tuple[_Path, str, Iterable[tuple[Any, Any]], int, tuple[_Path, Any] | None]]
    pending = collections.deque([(None, found[0], found[1], 0, None if _is_container(value) else (None, value))])
    while pending:
        path, how, items, depth, untracked = pending.popleft()
        if budget <= 0:
            return None
        try:
            for key, item in itertools.islice(items, budget):  # no item past the bound is even read
                budget -= 1
                item_kind = type(item)
                if item_kind in _NOTHING_INSIDE or item_kind is NoDependency:
                    continue  # NoDependency: kept unsaved on purpose, not looked into
                if _is_saved_state(item):
                    if untracked is None:  # not reached through _wrap (a plain container there is tracked)
                        untracked = (None, value)
                    return (path, how, key), item, untracked[0], untracked[1]
                if depth + 1 >= _SCAN_DEPTH or id(item) in seen:
                    continue
                inner = _contents(item)
                if inner is not None:
                    seen[id(item)] = item
                    item_path = (path, how, key)
                    holder = untracked if untracked is not None or _is_container(item) else (item_path, item)
                    pending.append((item_path, inner[0], inner[1], depth + 1, holder))
        except Exception:  # noqa: BLE001 -- unreadable contents (a lazy mapping failing, a set changed meanwhile)
            continue
    return None


def _refuse_hidden_state(value: Any, where: str) -> None:
    """Refuse ``value``, which is not tracked, if it holds something a checkpoint would save.

    A dict subclass, a set, a dataclass and the like are configuration to ``AutoTrackable`` (TensorFlow's
    rule for what it does not track), so a trackable or an array inside one would be left out of every
    checkpoint without a word: restoring would leave it as it was and ``assert_consumed()`` would pass.

    Raises
    ------
    TrackableError
        ``value`` holds a trackable, a numeric array or a ``Stateful`` object (see :func:`_find_hidden_state`
        for how far it is looked into).
    """
    if type(value) is tuple and _plain_tuple(value, 3):
        return  # the commonest value that falls through (a shape, pairs of options): no need to start a scan
    found = _find_hidden_state(value)
    if found is None:
        return
    item_path, item, holder_path, holder = found
    holder_where = _path_text(where, holder_path)
    kind = type(holder).__name__
    if dataclasses.is_dataclass(holder):
        fix = (
            f"Make {kind} a subclass of trackpoint.AutoTrackable (its fields become tracked attributes) or hold "
            "the values in a plain dict"
        )
    else:
        if isinstance(holder, Mapping):
            instead = "a plain dict instead (e.g. dict(value))"
        elif isinstance(holder, Sequence):
            instead = "a plain list or tuple instead (e.g. list(value))"
        elif isinstance(holder, types.SimpleNamespace):
            instead = "a plain dict instead (e.g. dict(vars(value)))"
        else:  # a set, or another collection with no names for its elements
            instead = "a plain list instead, in an order that is the same in every run (a set's order is not)"
        fix = f"Use {instead}, hold the values in a trackable"
    raise TrackableError(
        f"{_path_text(where, item_path)} is {dtypes._describe_typed(item)}, held by {holder_where} (type {kind}), "
        "which trackpoint does not track (it tracks trackables and plain dicts, lists and tuples): it would not "
        f"be saved, and a restore would leave it as it is. {fix}, or wrap it in trackpoint.NoDependency(value) to "
        "keep it unsaved deliberately."
    )


def _too_deep_message(where: str, exc: RecursionError) -> str:
    """Why wrapping the value placed at ``where`` reached Python's recursion limit, and where."""
    # The traceback's frames of _wrap are the levels of containers reached; the last one's `where` names the
    # deepest. Read only on failure, so wrapping keeps no count of its own.
    levels, deepest = 0, where
    trace = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code is _wrap.__code__:
            levels += 1
            deepest = trace.tb_frame.f_locals.get("where", deepest)
        trace = trace.tb_next
    if len(deepest) > 160:
        deepest = f"{deepest[:100]}...{deepest[-50:]}"
    # Fewer levels: the limit was reached looking through nested tuples, before any was wrapped.
    at = f" {levels} levels of containers down, at {deepest}" if levels > 1 else ""
    return (
        f"{where} nests lists, dicts or tuples too deeply to be wrapped: wrapping reached Python's recursion limit "
        f"({sys.getrecursionlimit()}){at}. A checkpoint saves every level of containers as an object of its "
        "graph: keep deep data in fewer levels (a numpy array, a flat dict with composite keys), or assign "
        "trackpoint.NoDependency(value) to keep it unsaved."
    )


def wrap_or_unwrap(value: Any) -> Any:
    """Wrap containers in their trackable counterpart; unwrap :class:`NoDependency`.

    Lists and dicts are wrapped around the object given (edits through either
    are seen by both); tuples only when they hold something saved. Numpy
    values are returned unchanged: they are saved by the container or
    attribute that holds them.
    """
    if isinstance(value, NoDependency):
        return value.value
    if isinstance(value, Trackable) or is_array_value(value) or is_stateful(value):
        return value
    wrapped = _wrap(value, "", False, "a value")
    return wrapped.current() if isinstance(wrapped, (_TupleValue, _PytreeValue)) else wrapped


def _gone() -> None:
    """What a setter whose owner was gone when it was rebuilt holds instead of a weak reference."""
    return None


class _AttributeSetter:
    """Puts a replacing restore's value back on the attribute (holds the owner weakly)."""

    __slots__ = ("name", "owner")

    def __init__(self, owner: Trackable | None, name: str) -> None:
        self.owner: Callable[[], Trackable | None] = _gone if owner is None else weakref.ref(owner)
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        # A weak reference cannot be pickled: the owner goes by a strong one (the owner is pickled anyway,
        # it holds this setter) and the rebuilt setter holds it weakly again.
        return (_AttributeSetter, (self.owner(), self.name))

    def __call__(self, value: Any) -> None:
        owner = self.owner()
        if owner is not None:
            tree = _plain_tree_of(owner, self.name)
            if tree is not None:
                tree.stale()  # the plain tree is rebuilt when next read, once however many leaves were replaced
                return
            # Not through AutoTrackable.__setattr__: the dependency stays the same node.
            object.__setattr__(owner, self.name, value)


#: The owner's attribute holding each :class:`_PlainTree`, by attribute name.
_PLAIN_TREES: Final = "_self_plain_trees"


def _plain_tree_of(owner: Trackable, name: str) -> _PlainTree | None:
    trees = owner.__dict__.get(_PLAIN_TREES)
    return None if trees is None else trees.get(name)


class _PlainTree:
    """An attribute holding a pytree of JAX arrays: the owner keeps a plain tree, the checkpoint its wrappers.

    JAX compares container types, so a tree read from the attribute must be the user's kind of tree (plain
    dicts, lists, tuples and nodes), interchangeable with the one given: ``tree_map(f, plain, ckpt.params)``
    and optax's ``tx.update(grads, ckpt.state.opt_state)`` need that. The checkpoint tracks the wrappers of
    a copy of the containers (see :func:`_wrap`); the attribute holds the plain tree of the same leaves. A
    restore that replaces a leaf calls :meth:`stale`, which takes the attribute out of the owner's
    ``__dict__`` until the restore ends and rebuilds it (see :func:`restoring`), once however many leaves
    were replaced; read before (during the restore, or after one that raised), it is found missing
    (``AutoTrackable.__getattr__``) and rebuilt then. Reads cost nothing more than any attribute's.
    """

    __slots__ = ("name", "node", "owner")

    def __init__(self, owner: Trackable | None, name: str, node: TrackableDataStructure | None) -> None:
        # Both weakly: the owner tracks the node, and the node's wrappers hold this record, which must not make
        # them a reference cycle (the arrays would wait for the cycle collector to be freed).
        self.owner: Callable[[], Trackable | None] = _gone if owner is None else weakref.ref(owner)
        self.name = name
        self.node: Callable[[], TrackableDataStructure | None] = _gone if node is None else weakref.ref(node)

    def __reduce__(self) -> tuple[Any, ...]:
        # As _AttributeSetter's: pickled with strong references, rebuilt with weak ones.
        return (_PlainTree, (self.owner(), self.name, self.node()))

    def stale(self) -> None:
        """A restore replaced something in the tree: the owner's plain tree is out of date.

        It leaves the owner's ``__dict__`` at once (a read while the restore runs rebuilds it) and is rebuilt
        when the restore ends: once, however many leaves were replaced.
        """
        owner = self.owner()
        if owner is not None and _plain_tree_of(owner, self.name) is self:
            owner.__dict__.pop(self.name, None)
            if _RESTORING.depth:
                _RESTORING.stale[id(self)] = self

    def rebuild(self) -> None:
        """Put the plain tree back on the owner if it is still out of date (see :meth:`stale`)."""
        owner = self.owner()
        if (
            owner is not None
            and self.name not in owner.__dict__
            and _plain_tree_of(owner, self.name) is self
            and self.node() is not None
        ):
            object.__setattr__(owner, self.name, self.plain())

    def plain(self) -> Any:
        """The plain tree of what the checkpoint holds now (the containers given, where they still match)."""
        node = self.node()
        return _plain_copy(node.current() if isinstance(node, (_TupleValue, _PytreeValue)) else node, node)

    def watch(self) -> None:
        """Have every list and dict wrapper in the tree report a restore that replaces what it holds."""
        pending: list[Any] = [self.node()]
        while pending:
            item = pending.pop()
            if isinstance(item, _DictWrapper):
                item._self_plain = self
                children: Iterable[tuple[Any, Any]] = item._self_storage.items()
            elif isinstance(item, ListWrapper):
                item._self_plain = self
                children = enumerate(item._self_storage)
            elif isinstance(item, _PytreeValue):
                children = enumerate(item._self_children)
            elif isinstance(item, _TupleValue):
                children = enumerate(item.current())
            else:
                continue
            nodes = item._self_nodes
            for key, child in children:
                found = nodes.get(key)
                pending.append(found if isinstance(found, (_TupleValue, _PytreeValue)) else child)


def _plain_copy(held: Any, node: Any) -> Any:
    """The plain tree of ``held``, what a wrapper's holder keeps, saved by ``node`` (``held`` itself or its node).

    A container the user gave (or a plain one built earlier) is reused while it holds exactly the plain
    children; else a new one is built and recorded as the wrapper's source in its place, so that a save
    refuses a change made to it in place, as it refuses one made to the tree given (see ``_check_source``).
    """
    if isinstance(held, (_DictWrapper, ListWrapper)):
        nodes = held._self_nodes
        if isinstance(held, _DictWrapper):
            storage = held._self_storage
            items = [(key, _plain_copy(value, nodes.get(key))) for key, value in storage.items()]
            source = held.__dict__.get("_self_source")
            if source is not None and _same_items(source[0], items):
                return source[0]
            plain: Any = type(storage)(items)
            snapshot: Any = dict(plain)  # a dict's record is a dict (see _remember_source)
        else:
            values = [_plain_copy(value, nodes.get(index)) for index, value in enumerate(held._self_storage)]
            source = held.__dict__.get("_self_source")
            if source is not None and len(source[0]) == len(values) and all(map(operator.is_, source[0], values)):
                return source[0]
            plain = values
            snapshot = list(values)
        # The new container is what the attribute reads as from now on (the one given, changed in place, is
        # what a restore replaced): a save refuses a change made to it.
        held._self_source = (plain, snapshot)
        return plain
    if isinstance(node, _TupleValue) and node.current() is held:
        children = [_plain_copy(value, node._self_nodes.get(index)) for index, value in enumerate(held)]
        if all(map(operator.is_, children, held)):
            return held
        return tuple.__new__(type(held), children)  # as _TupleValue rebuilds it, without a custom __new__
    if isinstance(node, _PytreeValue) and node.current() is held:
        node._settle()
        children = [_plain_copy(value, node._self_nodes.get(index)) for index, value in enumerate(node._self_children)]
        # By their leaves and structure, not by identity: a flatten may build its children anew each time.
        if _same_leaves(_node_children(held), children):
            return held  # it holds plain children already: the node the checkpoint holds and restores into
        given = node._self_given
        source = None if given is None else given[0]()
        if source is not None and _same_leaves(_node_children(source), children):
            return source
        rebuilt = node._self_treedef.unflatten(children)
        if not _same_leaves(_node_children(rebuilt), children):
            # Its unflatten copies or converts leaves: only the node the checkpoint holds shows what a restore
            # writes into them, and holds what a save writes.
            return held
        if source is None:  # else the user's node stays the one whose changes a save refuses
            node._self_given = (_held_ref(rebuilt), [_record(child, False) for child in children])
        return rebuilt
    return held


def _same_items(source: dict[Any, Any], items: list[tuple[Any, Any]]) -> bool:
    """Whether the dict ``source`` holds exactly ``items``, in order, the very values."""
    return len(source) == len(items) and all(
        a[0] == b[0] and a[1] is b[1] for a, b in zip(source.items(), items, strict=True)
    )


def _same_leaves(now: Sequence[Any], children: list[Any]) -> bool:
    """Whether ``now`` holds the very leaves of ``children`` in an equal structure."""
    leaves, structure = _tree_flatten(list(now))
    return _same_tree(leaves, structure, _tree_flatten(children))


def assign_attribute(
    trackable: Trackable, name: str, value: Any, strict: bool = False, plain_trees: bool = False
) -> tuple[Any, bool]:
    """Track ``value`` on ``trackable`` as ``name`` if it is saved; return what to store and whether it is tracked.

    Trackables (and wrapped containers) are tracked as themselves; numpy
    values through a saved node while the attribute keeps the numpy value. A
    waiting restore is applied at once, so the value returned may be the
    restored one. With ``plain_trees`` (the owner's class rebuilds a missing
    attribute with :func:`read_plain_tree`), a pytree of JAX arrays is stored
    as a plain tree, its wrappers tracked (see :class:`_PlainTree`).

    Raises
    ------
    TrackableError
        ``value`` is a numpy value that cannot be saved; ``strict`` is set
        and ``value`` is not saved (and not :class:`NoDependency`); or
        ``value`` is a container that is not tracked (a ``dict`` subclass, a
        ``set``, a dataclass, ...) holding something that would be saved.
    """
    where = f"{type(trackable).__name__}.{name}"
    trees = trackable.__dict__.get(_PLAIN_TREES)
    if trees is not None:
        trees.pop(name, None)
    if isinstance(value, NoDependency):
        return value.value, False
    if is_array_value(value) or (strict and type(value) in PYTHON_NUMBERS):
        node = _NumpyValue(value, name, where, on_replace=_AttributeSetter(trackable, name))
        trackable._track_trackable(node, name=name, overwrite=True)
        return node.current(), True
    if is_stateful(value):
        trackable._track_trackable(stateful_node(value, where), name=name, overwrite=True)
        return value, True
    _COPYING.copied = False
    stored = _wrap(value, name, strict, where)
    if (
        plain_trees
        and _COPYING.copied
        and isinstance(stored, TrackableDataStructure)
        # A name the class defines would show the class's value while the attribute is out of date.
        and not hasattr(type(trackable), name)
    ):
        tree = _PlainTree(trackable, name, stored)
        tree.watch()
        trackable.__dict__.setdefault(_PLAIN_TREES, {})[name] = tree
        if isinstance(stored, (_TupleValue, _PytreeValue)):
            stored._on_replace = _AttributeSetter(trackable, name)
        trackable._track_trackable(stored, name=name, overwrite=True)  # may apply a waiting restore
        return tree.plain(), True
    if isinstance(stored, (_TupleValue, _PytreeValue)):
        stored._on_replace = _AttributeSetter(trackable, name)
        trackable._track_trackable(stored, name=name, overwrite=True)
        return stored.current(), True
    if isinstance(stored, Trackable):
        trackable._track_trackable(stored, name=name, overwrite=True)
        return stored, True
    return stored, False


def read_plain_tree(owner: Trackable, name: str) -> Any:
    """The attribute ``name`` of ``owner`` that holds a pytree of JAX arrays, rebuilt after a restore changed it.

    Raises
    ------
    AttributeError
        ``owner`` has no such attribute.
    """
    tree = _plain_tree_of(owner, name)
    if tree is None or tree.node() is None:
        raise AttributeError(f"{type(owner).__name__!r} object has no attribute {name!r}", name=name, obj=owner)
    value = tree.plain()
    object.__setattr__(owner, name, value)
    return value


def sticky_attribute_assignment(trackable: Trackable, name: str, value: Any) -> Any:
    """Track ``value`` on ``trackable`` as ``name`` if it is saved (see :func:`assign_attribute`).

    Returns the value to store: the wrapper, the numpy value, or the
    unwrapped ``NoDependency`` value.
    """
    return assign_attribute(trackable, name, value)[0]


def _index_of(name: str, length: int) -> int | None:
    """The list position a dependency name stands for (canonical decimal only), or ``None``."""
    if not name.isdigit() or str(int(name)) != name or int(name) >= length:
        return None
    return int(name)


#: Python numbers a checkpoint's containers save (as scalars), compared by value.
_NUMBERS: Final = (bool, int, float)


def _same_element(a: Any, b: Any) -> bool:
    """Whether a container element is unchanged since the snapshot.

    Saved elements (trackables, numpy values) must be the same object; other
    values may be equal ones, as TensorFlow compares them.
    """
    if a is b:
        return True
    if _is_saved_kind(a) or _is_saved_kind(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 -- any element whose == gives no truth value counts as changed
        return False


class _ElementSetter:
    """Puts a replacing restore's value back into a list or dict (holds the container weakly)."""

    __slots__ = ("container", "key", "old")

    def __init__(self, container: TrackableDataStructure | None, key: Any, old: Any) -> None:
        self.container: Callable[[], TrackableDataStructure | None] = (
            _gone if container is None else weakref.ref(container)
        )
        self.key = key
        self.old = old

    def __reduce__(self) -> tuple[Any, ...]:
        # As _AttributeSetter's: pickled with a strong reference, rebuilt with a weak one.
        return (_ElementSetter, (self.container(), self.key, self.old))

    def __call__(self, value: Any) -> None:
        container = self.container()
        if container is not None:
            container._replace_restored(self.key, self.old, value)
        self.old = value


def _given_value(value: Any) -> Any:
    """What the user's container takes for ``value``, written through a copy that mirrors it (see
    :meth:`TrackableDataStructure._mirrors_source`): the value itself, ``NoDependency``'s value (as a wrapper made
    in place would hold it), or for a wrapper of such a copy (``ck.train["a"] = ck.train["b"]``) the user's
    container it copies."""
    if isinstance(value, NoDependency):
        return value.value
    if isinstance(value, TrackableDataStructure) and value._mirrors_source():
        return value.__dict__["_self_source"][0]
    return value


class TrackableDataStructure(Trackable, metaclass=abc.ABCMeta):
    """Base of the container wrappers: children are computed from the contents.

    A *strict* wrapper (the containers of a ``Checkpoint``) refuses values it
    would not save, so nothing given to a checkpoint is skipped silently;
    containers nested in it are strict too.
    """

    _self_strict: bool
    _self_where: str
    _self_nodes: dict[Any, _NumpyValue | _TupleValue | _PytreeValue | StatefulValue]
    #: The pytree node to rebuild when a restore replaces something held here: set on a pytree node (itself)
    #: and on the lists and dicts inside one that does not hold them itself (see _PytreeValue._watch). Its
    #: leaves' nodes are then _BatchedLeaf nodes.
    _self_batch: _NodeRef
    #: The attribute's plain tree to mark out of date when a restore replaces something held here (set on the
    #: lists and dicts of a pytree of JAX arrays an attribute holds, see _PlainTree).
    _self_plain: _PlainTree
    #: Whether Python strings held here are saved, as 0-d string values (a checkpoint's container in a torch
    #: optimizer's state dict, see :func:`_saves_strings`).
    _self_strings: bool

    def _init_structure(self, strict: bool, where: str | None, kind: str) -> None:
        _show_wrappers_to_jax()
        self._maybe_initialize_trackable()
        self._self_strings = strict and _STRINGS.saved
        self._self_strict = strict
        self._self_where = where if where is not None else f"a {kind}"
        self._self_nodes = {}

    def _remember_source(self, storage: Any) -> None:
        """Keep the user's container this wrapper's storage was copied from (a pytree of JAX arrays), as it was."""
        source = _COPYING.sources.get(id(storage)) if _COPYING.depth else None
        if source is not None:
            self._self_source: tuple[Any, Any] = (source, dict(source) if isinstance(source, dict) else list(source))
            if _COPYING.state_dict or _COPYING.follow:
                self._self_of_state_dict = True  # follows its source, and a restore writes into it
            if _COPYING.state_dict:
                self._self_in_optimizer = True  # inside a torch optimizer's state dict

    def _forget_source(self) -> None:
        """A restore replaced a value here: the copy no longer mirrors the user's container, which is let go.

        Kept, the user's list or dict (a template given to be restored into) would keep the arrays it held
        alive, a second copy of them on the devices, for as long as the checkpoint holds this wrapper.
        """
        self.__dict__.pop("_self_source", None)

    def _restored_in_source(self, key: Any, new: Any) -> None:
        """A restore replaced the value at ``key`` by ``new``: the user's container this wrapper copies learns it.

        A copy of a torch optimizer's state dict writes ``new`` into the user's container, at ``key``: a
        state dict given as a dict is restored into as PyTorch's ``dcp.load(state_dict)`` restores, so that
        ``opt.load_state_dict(state_dict)`` afterwards loads the restored values (its numbers, tuples and
        anything else replaced; its tensors are restored in place, into the very tensors both hold). The
        record of the user's container takes ``new`` too: the restore's own write is no change for the copy
        to follow (see :meth:`_check_source`). A list that became too short since it was followed has no
        place for ``new``: the copy keeps it until it follows the list again. A copy of a pytree of JAX arrays
        lets the user's container go instead (see :meth:`_forget_source`): the plain tree read back after the
        restore is rebuilt from the copy.
        """
        found = self.__dict__.get("_self_source")
        if found is None:
            return
        if not self.__dict__.get("_self_of_state_dict"):
            self._forget_source()
            return
        source, then = found
        if isinstance(source, dict):
            source[key] = new
            if key in then:  # the record is a dict too, in the source's order
                then[key] = new
        elif key < len(source):
            source[key] = new
            if key < len(then):
                then[key] = new

    def _mirrors_source(self) -> bool:
        """Whether a write through this wrapper goes into the user's container too: a copy that follows a list or
        dict holding torch state dicts (see :func:`_holds_torch_state`), outside an optimizer's state dict.

        Such a copy stands for the user's container, which was wrapped in place before copies were made: an edit
        through the checkpoint's wrapper (``ckpt.train["best"] = 0.5``, ``del``, ``append``) is made in the
        user's container as well, with the value given (not its wrapper), and recorded as followed already, so
        that neither the copy nor the user's container loses an edit made through the other. The copies inside
        an optimizer's state dict stand for containers ``opt.state_dict()`` makes anew at each call, and keep
        what is written through them to themselves.
        """
        return (
            "_self_source" in self.__dict__
            and bool(self.__dict__.get("_self_of_state_dict"))
            and not self.__dict__.get("_self_in_optimizer")
        )

    def _store_mirrored(self, key: Any, value: Any) -> tuple[Any, bool]:
        """:meth:`_store` for a write through a copy that mirrors its source (see :meth:`_mirrors_source`): a copy of
        ``value``'s containers is wrapped, following them, as :meth:`_follow` wraps what the source holds, so that
        ``value`` itself, written into the user's container, stays the user's."""
        with _copying(state_dict=False, follow=True):
            return self._store(key, _copy_containers(value))

    def _check_source(self) -> None:
        """Follow the user's container this wrapper copies, or refuse to save a copy whose source changed since.

        A copy of a torch optimizer's state dict follows its source: the user's dict, or the optimizer's own
        per-parameter dict that it holds, changed since it was given (a step, ``group["lr"] = ...``) is copied
        and wrapped again where it changed, so that a save saves what it holds now, as a wrapper around the
        dict itself would, and a restore fills what it holds now. A pytree of JAX arrays is refused instead:
        JAX arrays are replaced, not updated, so a change there is a new tree the user forgot to assign, and
        the plain tree read back after a restore is rebuilt from the copy. Nothing is refused while a restore
        runs (see :func:`restoring`).

        Raises
        ------
        TrackableError
            The list or dict given (one holding JAX arrays, so the checkpoint keeps a copy of its
            containers) was changed after it was given.
        """
        found = self.__dict__.get("_self_source")
        if found is None:
            return
        state_dict = self.__dict__.get("_self_of_state_dict", False)
        if _RESTORING.depth and not state_dict:
            # A restore restores into the copy as it was given, and the tree read back after it is rebuilt
            # from that copy (see restoring).
            return
        source, then = found
        # Compared in C (map), not in a generator: a save or restore of n copies runs this for each.
        if len(source) == len(then) and (
            all(map(operator.is_, source.values(), then.values())) and list(source) == list(then)
            if isinstance(source, dict)
            else all(map(operator.is_, source, then))
        ):
            return
        if state_dict:
            now = list(source.items()) if isinstance(source, dict) else list(source)
            self._follow(now, then)
            self._self_source = (source, dict(source) if isinstance(source, dict) else now)
            return
        raise TrackableError(
            f"Unable to save {self._self_where}: the {type(source).__name__} given there holds JAX arrays, so the "
            "checkpoint keeps a copy of its containers, and it was changed since it was given or read back from "
            "the checkpoint (JAX arrays are replaced, not updated in place). Assign it again before saving, to "
            "save the new values."
        )

    def _follow(self, now: list[Any], then: Any) -> None:
        """Hold a copy of what the source holds ``now``, an element of its contents then (``then``) kept as held.

        The element held for one the source still holds at its place is kept (a list or dict follows its own
        source); anything else is copied (see :func:`_copy_containers`) and wrapped anew. A restore waiting for
        an element is not applied to it: it holds the user's values, which a save saves.
        """
        raise NotImplementedError  # the list and dict wrappers, the only copies of a state dict's containers

    def _element_where(self, key: Any) -> str:
        return f"{self._self_where}[{key!r}]"

    def _store(self, key: Any, value: Any) -> tuple[Any, bool]:
        """What to keep at ``key`` for ``value``, and whether it is tracked (not ``NoDependency``)."""
        if isinstance(value, NoDependency):
            return value.value, False
        # The containers wrapped inside save strings where this one does.
        stored = _strings_saved(
            self._self_strings, lambda: _wrap(value, self._child_name(key), self._self_strict, self._element_where(key))
        )
        if isinstance(stored, (_TupleValue, _PytreeValue)):
            stored._on_replace = _ElementSetter(self, key, stored.current())
            self._self_nodes[key] = stored
            return stored.current(), True
        return stored, True

    def _node_for(self, key: Any, value: Any) -> _NumpyValue | _TupleValue | _PytreeValue | StatefulValue:
        """The saved node of the array, tuple, pytree node or stateful ``value`` at ``key`` (made anew if changed)."""
        node = self._self_nodes.get(key)
        if node is None or node.current() is not value:
            setter = _ElementSetter(self, key, value)
            where = self._element_where(key)
            # Arrays first: the checks for the other kinds cost more, for each of possibly 10^5 values.
            leaf = is_array_value(value) or type(value) in PYTHON_NUMBERS or type(value) is str
            if not leaf and isinstance(value, tuple):
                node = _TupleValue(value, self._self_strict, where, setter)
            elif not leaf and is_stateful(value):
                node = stateful_node(value, where)
            elif not leaf and is_pytree_node(value):
                node = _PytreeValue(value, self._self_strict, where, setter)
            else:
                batch = self.__dict__.get("_self_batch")
                if batch is None:
                    node = _NumpyValue(value, self._child_name(key), where, setter)
                else:
                    node = _BatchedLeaf(value, self._child_name(key), where, setter)
                    node._self_batch = batch
            self._self_nodes[key] = node
        return node

    def _child_name(self, key: Any) -> str:
        """The name of what is held at ``key``, for messages (a field's name, where ``key`` is a position)."""
        return str(key)

    def _dependency(self, key: Any, value: Any) -> Trackable | None:
        """The trackable saved for ``value`` held at ``key``: itself, its node, or ``None``."""
        if isinstance(value, Trackable):
            return value
        if (
            is_array_value(value)
            or is_stateful(value)
            # In a checkpoint's own containers a tuple's Python numbers are saved too; an empty one holds nothing.
            or (isinstance(value, tuple) and ((self._self_strict and len(value) > 0) or _should_wrap_tuple(value)))
            or (self._self_strict and type(value) in PYTHON_NUMBERS)
            or (type(value) is str and self._self_strings)
        ):
            return self._node_for(key, value)
        if type(value) in _NOTHING_INSIDE:
            return None  # configuration (a str, None, a number outside a checkpoint's containers)
        if is_pytree_node(value):
            node = self._self_nodes.get(key)
            if node is not None and node.current() is value:
                return node
            # As a tuple: in a checkpoint's own containers when it holds anything, elsewhere when it holds
            # something saved.
            children = _node_children(value)
            if (self._self_strict and children) or _should_wrap_tuple(children):
                return self._node_for(key, value)
        return None

    def _replace_restored(self, key: Any, old: Any, new: Any) -> None:
        """A restore replaced the numpy value ``old`` held at ``key`` by ``new``."""

    @abc.abstractmethod
    def _items(self) -> Iterable[tuple[Any, Trackable]]:
        """``(name, trackable)`` pairs of the saved contents, in order."""

    def _trackable_children(self) -> dict[str, Trackable]:
        children: dict[str, Trackable] = {}
        mixed = False  # whether a key that is not a str was seen: only then can two keys share a name
        for key, value in self._items():
            if isinstance(key, str):
                name: str | None = key
            else:
                name = _dict_key_name(key)
                mixed = True
            if name is None:
                raise TrackableError(
                    f"Unable to save {self._self_where} (a dictionary wrapper): the wrapped dictionary contains a "
                    "key that is neither a str nor an int which maps to a trackable object or mutable data "
                    f"structure (key {key!r} of type {type(key).__name__}). Use str or int keys for dicts of saved "
                    "values (for an optimizer's or other object's state_dict(), give the object itself: it is saved "
                    "through its state dict); if you don't need this dictionary checkpointed, wrap it in "
                    "NoDependency."
                )
            if mixed and name in children:
                first = next(k for k, _ in self._items() if _dict_key_name(k) == name)
                raise NameConflictError(
                    f"Unable to save or restore {self._self_where}: its keys {first!r} and {key!r} would both be "
                    f"named {name!r} in a checkpoint (an int key is saved and restored as its decimal string, the "
                    "name TensorFlow and load_tree() show). Rename one of them, or keep the dict's keys all str or "
                    "all int."
                )
            children[name] = value
        return children

    def _added(self, key: Any, value: Trackable | None) -> None:
        """Apply restores waiting for ``key`` now that ``value`` sits there."""
        name = _dict_key_name(key)
        if value is not None and name is not None:
            self._handle_deferred_dependencies(name, value)

    def _restored_inside(self) -> None:
        """Tell the pytree node watching this wrapper (see :meth:`_PytreeValue._watch`) that a restore changed it."""
        batch = self.__dict__.get("_self_batch")
        node = None if batch is None else batch()
        if node is not None:
            node._changed()
        tree = self.__dict__.get("_self_plain")
        if tree is not None:
            tree.stale()


_NON_APPEND_MESSAGE = (
    "Unable to save the object {obj} (a list wrapper constructed to track trackable objects). A list element was "
    "replaced (__setitem__, __setslice__), deleted (__delitem__, __delslice__), or moved (sort) (here: {op}). In "
    "order to support restoration on object creation, tracking is exclusively for append-only data structures: a "
    "restore would put saved values into the wrong elements.\n\nIf you don't need this list checkpointed, wrap it "
    "in NoDependency; it will be subsequently ignored. Otherwise build a new list and assign it."
)
_EXTERNAL_MESSAGE = (
    "Unable to save the object {obj} ({made}). The wrapped {kind} "
    "was modified outside the wrapper (its final value was {final}, its value when a checkpoint dependency was "
    "added was {snapshot}), which breaks restoration on object creation.\n\nIf you don't need this {kind} "
    "checkpointed, wrap it in a NoDependency object; it will be subsequently ignored. Otherwise edit it through "
    "the attribute that holds the wrapper, or assign it again."
)


class ListWrapper(TrackableDataStructure, list[Any]):
    """A ``list`` whose trackable elements and numpy values are saved as ``"0"``, ``"1"``, ...

    As in TensorFlow, the wrapper works on the list it was given: edits
    through the wrapper change that list, and the wrapper sees edits made to
    it. It is an instance of ``list`` and behaves as one (``+``, ``*``,
    comparisons, ``sort``, ``copy``, ``json.dumps``, pickling).

    Saved elements are named by position, so only appending (and replacing
    one element by index) keeps the names stable. Once elements were deleted
    or moved while the list held a saved element (``del``, ``insert`` before
    the end, ``pop``, ``remove``, slice assignment, ``sort``, ``reverse``,
    ``clear``, ``*=`` by zero or less), or once the list was changed other
    than through the wrapper, saving and restoring raise
    :class:`TrackableError` (a ``ValueError``): values would go to the wrong
    elements. Lists of plain values can be edited freely.

    Parameters
    ----------
    wrapped_list
        The list to wrap (shared, not copied); other iterables are copied into
        a new list.
    strict
        Refuse elements that would not be saved (plain Python values)
        instead of keeping them unsaved.
    """

    def __init__(self, wrapped_list: Iterable[Any] = (), *, strict: bool = False, _where: str | None = None) -> None:
        self._init_structure(strict, _where, "list")
        if isinstance(wrapped_list, list) and not isinstance(wrapped_list, ListWrapper):
            storage = wrapped_list
        else:
            storage = list(wrapped_list)
        self._self_storage: list[Any] = storage
        # Objects given as NoDependency(x), by id (x kept so the id stays valid).
        self._self_unsaved: dict[int, Any] = {}
        self._self_mutation: str | None = None
        self._self_external = False
        # Wrap everything before changing the caller's list: a refused element leaves it as it was.
        stored = [self._store(index, value) for index, value in enumerate(storage)]
        for index, (value, tracked) in enumerate(stored):
            if storage[index] is not value:
                storage[index] = value
            if not tracked:
                self._self_unsaved[id(value)] = value
        self._self_snapshot: list[Any] | None = list(storage)
        self._remember_source(storage)
        self._mirror()

    def _mirror(self) -> None:
        # The list part of the wrapper holds the same elements, for C code that reads a list
        # subclass's items directly (json, numpy) instead of calling its methods.
        list.__setitem__(self, slice(None), self._self_storage)

    # ------------------------------------------------------------ bookkeeping
    def _dirty(self) -> bool:
        return self._self_mutation is not None or self._self_external

    def _check_external_modification(self) -> None:
        """Notice edits made to the wrapped list other than through the wrapper."""
        if self._dirty():
            return
        storage, snapshot = self._self_storage, self._self_snapshot
        assert snapshot is not None
        if len(storage) == len(snapshot) and (
            all(map(operator.is_, storage, snapshot)) or all(map(_same_element, storage, snapshot))
        ):
            return
        self._self_external = True
        self._mirror()

    def _check_write(self, position: int) -> None:
        """The check a write of one element (at ``position``, ``len`` to append) makes first: O(1), not O(n).

        A change outside the wrapper that the write could hide (one to the length, or to the element it
        replaces) is looked for as :meth:`_check_external_modification` does. A replaced element elsewhere stays
        as it is in the storage, different from the snapshot, which the write updates at ``position`` only:
        the full comparison when the list is saved or restored finds it, and refuses as it would have here.
        Comparing the whole list at each write made filling a list of n elements O(n^2).
        """
        if self._dirty():
            return
        storage, snapshot = self._self_storage, self._self_snapshot
        assert snapshot is not None
        size = len(storage)
        if size == len(snapshot):
            # Appending: the last element, the one most likely edited in place since the previous append.
            at = size - 1 if position >= size else position
            if at < 0 or storage[at] is snapshot[at] or _same_element(storage[at], snapshot[at]):
                return
        self._check_external_modification()

    def _update_snapshot(self) -> None:
        self._mirror()
        if not self._dirty():
            self._self_snapshot = list(self._self_storage)

    def _has_saved_elements(self) -> bool:
        return self._self_mutation is not None or any(map(_is_saved_kind, self._self_storage))

    def _mutated(self, operation: str) -> None:
        """Record a change that renumbers or replaces saved elements (saving is refused from now on)."""
        if self._self_mutation is None and self._has_saved_elements():
            self._self_mutation = operation
        self._self_nodes.clear()  # positions moved; nodes are made again by identity

    def _replace_restored(self, key: Any, old: Any, new: Any) -> None:
        storage = self._self_storage
        if isinstance(key, int) and key < len(storage) and storage[key] is old:
            storage[key] = new
            list.__setitem__(self, key, new)
            snapshot = self._self_snapshot
            if snapshot is not None and key < len(snapshot) and snapshot[key] is old:
                snapshot[key] = new
            self._restored_inside()
            self._restored_in_source(key, new)

    def _follow(self, now: list[Any], then: list[Any]) -> None:
        # docstring inherited
        storage, nodes, given = self._self_storage, self._self_nodes, self._self_unsaved
        # The elements held mirror the source's of then, position by position, unless changed through the wrapper.
        mirrored = self._self_mutation is None and not self._self_external and len(storage) == len(then)
        followed: list[Any] = []
        unsaved: dict[int, Any] = {}
        with _copying(state_dict=self.__dict__.get("_self_in_optimizer", False), follow=True):
            for index, value in enumerate(now):
                if mirrored and index < len(then) and then[index] is value:
                    followed.append(storage[index])
                    if given.get(id(storage[index])) is storage[index]:
                        unsaved[id(storage[index])] = storage[index]  # given as NoDependency: stays unsaved
                    continue
                nodes.pop(index, None)
                stored, tracked = self._store(index, _copy_containers(value))
                followed.append(stored)
                if not tracked:
                    unsaved[id(stored)] = stored
        for index in [index for index in nodes if index >= len(followed)]:
            del nodes[index]
        storage[:] = followed
        self._self_unsaved = unsaved
        self._self_mutation = None
        self._self_external = False
        self._self_snapshot = list(storage)
        self._mirror()

    def _dependency_requested(self, name: str) -> None:
        """A restore holds a tensor for position ``name``, which this copy of a state dict's list lacks: make it.

        The list of an optimizer's per-parameter state given shorter than the one saved (LBFGS's history, given
        from an optimizer that took fewer steps), or holding ``None`` where a value was saved (LBFGS's ``al``),
        takes a tensor of the checkpoint's dtype and shape, on the device of the tensors it holds, which the
        restore fills; the user's list takes it too, so that ``load_state_dict`` loads the whole history. A list
        holding no tensor tells nothing of what was saved there, and is left as it is (the restore's status
        names the value).
        """
        waiting = self._deferred_dependencies.get(name)
        found = self.__dict__.get("_self_source")
        if not waiting or found is None or not self.__dict__.get("_self_in_optimizer"):
            return
        storage = self._self_storage
        index = _index_of(name, len(storage) + 1)
        tensors = [value for value in storage if dtypes._is_torch_tensor(value)]
        if index is None or (index < len(storage) and storage[index] is not None) or not tensors:
            return
        newest = max(waiting, key=lambda position: position.restore_uid)
        if not newest.is_simple_variable():
            return
        info = newest.tensor_info()
        empty = dtypes._numpy_to_torch(np.zeros(tuple(info.shape), np.dtype(info.dtype)))
        tensor = empty.to(tensors[-1].device)
        source, then = found
        mirrored = len(source) == len(then) == len(storage)
        if index == len(storage):
            self.append(tensor)  # which applies the waiting restore, as any append does
        else:
            self[index] = tensor
        if mirrored:
            if index == len(source):
                source.append(tensor)
                then.append(tensor)
            else:
                source[index] = then[index] = tensor

    def _entries_missing_from(self, names: Sequence[str]) -> list[str]:
        """A restore plans this list from a node holding ``names``: a copy in a torch optimizer's state dict
        records the length saved (see :meth:`_DictWrapper._take_saved_history`). Nothing is reported missing."""
        if _RESTORING.depth and self.__dict__.get("_self_in_optimizer"):
            length = len(names) if sorted(names) == sorted(map(str, range(len(names)))) else None
            _RESTORING.lengths[id(self)] = (self, length)
        return []

    def _take_saved_length(self, length: int) -> None:
        """Cut this copy, and the user's list it copies, to the ``length`` a restore found saved (a restore's write:
        no change a save refuses)."""
        storage = self._self_storage
        if length >= len(storage):
            return
        found = self.__dict__.get("_self_source")
        if found is not None:
            source, then = found
            if len(source) == len(then) == len(storage):  # else it changed since: the copy follows it at the next use
                del source[length:]
                del then[length:]
        del storage[length:]
        for index in [index for index in self._self_nodes if index >= length]:
            del self._self_nodes[index]
        if not self._dirty():
            self._self_snapshot = list(storage)
        self._mirror()

    @contextlib.contextmanager
    def _writing(self, position: Any = None) -> Iterator[None]:
        """A write through this wrapper: in a copy that mirrors its source (see :meth:`_mirrors_source`), the
        source's changes are followed first, and the user's list is made to hold, position by position, the
        user's value of each element the copy holds after the write (the value given for an element placed by
        it). Nested writes (``extend`` appends) are one write.

        A write of one element (``position``, an int index, or ``len(self)`` to append) costs O(1), not O(n):
        the source is followed only if it changed where the write could hide it (its length, or the element at
        ``position``, the last one for an append, as :meth:`_check_write` looks), and the write is made in the
        source and its record at ``position`` (or by appending) only. A change elsewhere stays different from
        the record, and is followed at the next save, restore or write there.
        """
        if self.__dict__.get("_self_users") is not None or not self._mirrors_source():
            yield
            return
        storage = self._self_storage
        size = len(storage)
        at = self._source_unchanged_at(position)
        if at is None:
            self._check_source()
        source, then = self.__dict__["_self_source"]
        users: dict[int, Any]
        if at is None:
            # After following, the copy holds an element for each of the source's, at its place.
            users = {id(stored): given for stored, given in zip(storage, then, strict=False)}
        else:
            users = {}
        self._self_users: dict[int, Any] | None = users
        try:
            yield
        finally:
            self._self_users = None
            if at is None:
                source[:] = [users.get(id(stored), stored) for stored in storage]
                self._self_source = (source, list(source))
            elif at < size:
                stored = storage[at]
                if id(stored) in users:
                    source[at] = then[at] = users[id(stored)]
            else:
                for stored in storage[size:]:
                    given = users.get(id(stored), stored)
                    source.append(given)
                    then.append(given)

    def _source_unchanged_at(self, position: Any) -> int | None:
        """The place ``position`` (an int index, or the length to append) of a write, if the user's list this copy
        mirrors is as long as when last recorded and holds the element it held there (the last one, to append):
        O(1), the check of a write of one element (see :meth:`_writing`). Else ``None``."""
        if type(position) is not int:
            return None
        source, then = self.__dict__["_self_source"]
        size = len(self._self_storage)
        if not len(source) == len(then) == size or not -size <= position <= size:
            return None
        at = position % size if position < 0 else position
        last = size - 1 if at == size else at
        return at if last < 0 or source[last] is then[last] else None

    def _place(self, index: int, value: Any) -> tuple[Any, bool]:
        users = self.__dict__.get("_self_users")
        if users is None:
            stored, tracked = self._store(index, value)
        else:
            stored, tracked = self._store_mirrored(index, value)
            # An element held already (`ck.runs.append(ck.runs[0])`) stands for the user's value it stood for.
            users.setdefault(id(stored), _given_value(value))
        if tracked:
            self._self_unsaved.pop(id(stored), None)
        else:
            self._self_unsaved[id(stored)] = stored
        return stored, tracked

    # ------------------------------------------------------------- trackable
    def _items(self) -> Iterable[tuple[Any, Trackable]]:
        unsaved = self._self_unsaved
        for index, value in enumerate(self._self_storage):
            if id(value) in unsaved and unsaved[id(value)] is value:
                continue
            dependency = self._dependency(index, value)
            if dependency is not None:
                yield str(index), dependency

    def _trackable_children(self) -> dict[str, Trackable]:
        self._check_source()
        self._check_external_modification()
        if self._self_mutation is not None:
            raise TrackableError(_NON_APPEND_MESSAGE.format(obj=self, op=self._self_mutation))
        if self._self_external:
            raise TrackableError(
                _EXTERNAL_MESSAGE.format(
                    obj=self,
                    made="a list wrapper constructed to track trackable objects",
                    kind="list",
                    final=self._self_storage,
                    snapshot=self._self_snapshot,
                )
            )
        present = {id(v) for v in self._self_storage}
        for key in [k for k in self._self_unsaved if k not in present]:
            del self._self_unsaved[key]
        return super()._trackable_children()

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        index = _index_of(name, len(self._self_storage))
        if index is None:
            return None
        value = self._self_storage[index]
        if self._self_unsaved.get(id(value)) is value:
            return None
        return self._dependency(index, value)

    # ------------------------------------------------------------ list reads
    def _reading(self, position: Any = _MISSING) -> None:
        """A read through a copy that mirrors its source (see :meth:`_mirrors_source`) follows the source first
        where the read could see its change: at ``position`` (:meth:`_source_unchanged_at`, O(1)), or, for a read
        of the whole list, if its length changed. A read of a stale element would hand out a copy the user's list
        no longer holds, and a write into it would be lost."""
        if not self._mirrors_source() or self.__dict__.get("_self_users") is not None:
            return
        if position is _MISSING:
            source, then = self.__dict__["_self_source"]
            if len(source) == len(then) == len(self._self_storage):
                return
        elif self._source_unchanged_at(position) is not None:
            return
        self._check_source()

    def __getitem__(self, index: Any) -> Any:
        if "_self_source" in self.__dict__:
            self._reading(index)
        return self._self_storage[index]

    def __len__(self) -> int:
        if "_self_source" in self.__dict__:
            self._reading()
        return len(self._self_storage)

    def __iter__(self) -> Iterator[Any]:
        if "_self_source" in self.__dict__:
            self._reading()
        return iter(self._self_storage)

    def __reversed__(self) -> Iterator[Any]:
        if "_self_source" in self.__dict__:
            self._reading()
        backwards: Iterator[Any] = reversed(self._self_storage)
        return backwards

    def __contains__(self, value: object) -> bool:
        if "_self_source" in self.__dict__:
            self._reading()
        return value in self._self_storage

    def count(self, value: Any) -> int:
        return self._self_storage.count(value)

    def index(self, value: Any, start: SupportsIndex = 0, stop: SupportsIndex = sys.maxsize) -> int:
        return self._self_storage.index(value, start, stop)

    def copy(self) -> list[Any]:
        """A new wrapper around a shallow copy of the list (unsaveable if this one is)."""
        copied = ListWrapper(copy.copy(self._self_storage), strict=self._self_strict, _where=self._self_where)
        copied._self_unsaved = dict(self._self_unsaved)
        copied._self_mutation = self._self_mutation
        copied._self_external = self._self_external or self._external_now()
        return copied

    def _external_now(self) -> bool:
        self._check_external_modification()
        return self._self_external

    def __copy__(self) -> list[Any]:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> ListWrapper:
        copied = _strings_saved(
            self._self_strings,
            lambda: ListWrapper(
                copy.deepcopy(self._self_storage, memo), strict=self._self_strict, _where=self._self_where
            ),
        )
        copied._self_mutation = self._self_mutation
        copied._self_external = self._external_now()
        return copied

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (ListWrapper, (self._self_storage,))

    def __sizeof__(self) -> int:
        return super().__sizeof__() + sys.getsizeof(self._self_storage)

    @staticmethod
    def _plain(other: Any) -> Any:
        return other._self_storage if isinstance(other, ListWrapper) else other

    def __eq__(self, other: object) -> bool:
        if "_self_source" in self.__dict__:
            self._reading()
        return bool(self._self_storage == self._plain(other))

    def __ne__(self, other: object) -> bool:
        if "_self_source" in self.__dict__:
            self._reading()
        return bool(self._self_storage != self._plain(other))

    def __lt__(self, other: Any) -> bool:
        return bool(self._self_storage < self._plain(other))

    def __le__(self, other: Any) -> bool:
        return bool(self._self_storage <= self._plain(other))

    def __gt__(self, other: Any) -> bool:
        return bool(self._self_storage > self._plain(other))

    def __ge__(self, other: Any) -> bool:
        return bool(self._self_storage >= self._plain(other))

    def __hash__(self) -> int:  # type: ignore[override]
        raise TypeError("unhashable type: 'ListWrapper'")

    def __add__(self, other: Any) -> Any:
        return self._self_storage + self._plain(other)

    def __radd__(self, other: Any) -> Any:
        return other + self._self_storage

    def __mul__(self, n: SupportsIndex) -> list[Any]:
        return self._self_storage * n

    def __rmul__(self, n: SupportsIndex) -> list[Any]:
        return self._self_storage * n

    def __repr__(self) -> str:
        return f"ListWrapper({self._self_storage!r})"

    # ----------------------------------------------------------- list writes
    def append(self, value: Any) -> None:
        with self._writing(len(self._self_storage)):
            self._check_write(len(self._self_storage))
            storage = self._self_storage
            index = len(storage)
            stored, tracked = self._place(index, value)
            storage.append(stored)
            list.append(self, stored)
            if self._self_snapshot is not None and not self._dirty():
                self._self_snapshot.append(stored)
            if tracked:
                self._added(str(index), self._dependency(index, stored))

    def extend(self, values: Iterable[Any]) -> None:
        with self._writing():
            for value in list(values):
                self.append(value)

    def __iadd__(self, values: Iterable[Any]) -> ListWrapper:  # type: ignore[misc]
        self.extend(values)
        return self

    def __imul__(self, n: SupportsIndex) -> ListWrapper:
        with self._writing():
            times = operator.index(n)
            if times <= 0:
                self._check_external_modification()
                self._mutated(f"*= {times}")
                self._self_storage.clear()
                self._update_snapshot()
                return self
            count = len(self._self_storage)
            for _ in range(times - 1):
                for index in range(count):
                    self.append(self._self_storage[index])
            return self

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._writing(key):
            storage = self._self_storage
            if isinstance(key, slice):
                self._check_external_modification()
                before = list(storage)
                trial = list(storage)
                trial[key] = list(value)  # list's own rules (lengths of extended slices)
                if self._has_saved_elements():
                    self._mutated("slice assignment")
                added = []
                for index, now in enumerate(trial):
                    if index >= len(before) or now is not before[index]:
                        trial[index], tracked = self._place(index, now)
                        if tracked:
                            added.append(index)
                storage[:] = trial
                self._update_snapshot()
                for index in added:
                    self._added(str(index), self._dependency(index, storage[index]))
                return
            position = range(len(storage))[operator.index(key)]
            self._check_write(position)
            # Replacing one element keeps every other name: the new element is saved and
            # restored under the position it was put at, as a reassigned attribute is.
            # (TensorFlow refuses to save after replacing a trackable this way.)
            self._self_nodes.pop(position, None)
            stored, tracked = self._place(position, value)
            storage[position] = stored
            # This position only (O(1)): copying the whole storage into the snapshot would also take in
            # changes made elsewhere outside the wrapper, which _check_write leaves for the save to find.
            snapshot = self._self_snapshot
            if self._dirty() or snapshot is None:
                self._mirror()  # refused already: the list part shows all the list holds, as before
            else:
                list.__setitem__(self, position, stored)
                snapshot[position] = stored
            if tracked:
                self._added(str(position), self._dependency(position, stored))

    def __delitem__(self, key: Any) -> None:
        with self._writing():
            self._check_external_modification()
            self._mutated("__delslice__" if isinstance(key, slice) else "__delitem__")
            del self._self_storage[key]
            self._update_snapshot()

    def insert(self, index: SupportsIndex, value: Any) -> None:
        with self._writing():
            self._check_external_modification()
            storage = self._self_storage
            size = len(storage)
            at = operator.index(index)
            # Where list.insert puts it: negative indices count from the end, both ends clamp.
            position = min(max(0, size + at) if at < 0 else at, size)
            if position == size:
                # Nothing moves: the same as append, so a waiting restore applies and saving stays possible.
                self.append(value)
                return
            stored, _ = self._place(position, value)
            if _is_saved_kind(stored) and self._self_mutation is None:
                self._self_mutation = "insert"
            self._mutated("insert")
            storage.insert(position, stored)
            self._update_snapshot()

    def pop(self, index: SupportsIndex = -1) -> Any:
        with self._writing():
            self._check_external_modification()
            value = self._self_storage[index]  # IndexError before anything is recorded
            self._mutated("pop")
            del self._self_storage[index]
            self._update_snapshot()
            return value

    def remove(self, value: Any) -> None:
        with self._writing():
            self._check_external_modification()
            position = self._self_storage.index(value)
            self._mutated("remove")
            del self._self_storage[position]
            self._update_snapshot()

    def clear(self) -> None:
        with self._writing():
            self._check_external_modification()
            if self._self_storage:
                self._mutated("clear")
            self._self_storage.clear()
            self._update_snapshot()

    def reverse(self) -> None:
        with self._writing():
            self._check_external_modification()
            self._mutated("reverse")
            self._self_storage.reverse()
            self._update_snapshot()

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        with self._writing():
            self._check_external_modification()
            # Refused even when the order does not change, as in TensorFlow: whether a
            # list can be saved must not depend on its values.
            self._mutated("sort")
            self._self_storage.sort(key=key, reverse=reverse)
            self._update_snapshot()


class _DictWrapper(TrackableDataStructure, dict[Any, Any]):
    """A ``dict`` whose trackable values and numpy values are saved under their keys.

    Works on the dict it was given, as in TensorFlow: edits through either
    are seen by both. Keys may be set and deleted freely. A str key is the
    saved name; an int key (JAX trees have them) is saved under its decimal
    string, and a restore finds it by the template's key. Saving refuses a
    key of another type holding a saved value, two keys saved under one name
    (``0`` and ``"0"``), and a dict changed other than through the wrapper.
    """

    #: On the copy of a torch optimizer's state dict's ``state``: that state dict's copy (see _link_optimizer).
    _self_optimizer: weakref.ref[_DictWrapper]
    #: On the copy of one of its per-parameter dicts: the state dict's copy too.
    _self_param_of: weakref.ref[_DictWrapper]
    #: On the copy of an optimizer's state dict: the restore uid its param groups were last compared for with
    #: the checkpoint's, and how they differ (``None``: they match), see _dependency_requested.
    _self_groups_checked: tuple[int, str | None]
    #: On the copy of an optimizer's state dict: the restore uid its parameter numbers (a set; ``None``: not a
    #: state dict as torch makes it) and kind (LBFGS's or not) were last read for, and the dict read, see
    #: _dependency_requested.
    _self_fill: tuple[int, Any, frozenset[int] | None, bool]
    #: On the copy of its ``state``: the restore uid it last followed the user's ``state`` for, making an entry.
    _self_filling: int

    def __init__(self, wrapped_dict: Any = None, *, strict: bool = False, _where: str | None = None) -> None:
        self._init_structure(strict, _where, "dict")
        if strict and _saves_strings(wrapped_dict):
            self._self_strings = True
        if wrapped_dict is None:
            storage: dict[Any, Any] = {}
        elif isinstance(wrapped_dict, dict) and not isinstance(wrapped_dict, _DictWrapper):
            storage = wrapped_dict
        else:
            storage = dict(wrapped_dict)
        self._self_storage: dict[Any, Any] = storage
        self._self_unsaved: set[Any] = set()
        self._self_external = False
        stored = {key: self._store(key, value) for key, value in storage.items()}
        for key, (value, tracked) in stored.items():
            if storage[key] is not value:
                storage[key] = value
            if not tracked:
                self._self_unsaved.add(key)
        self._self_snapshot: dict[Any, Any] | None = dict(storage)
        self._remember_source(storage)
        self._link_optimizer()
        self._mirror()

    def _link_optimizer(self) -> None:
        """In a copy of a torch optimizer's state dict, tell the wrapper of its ``state`` (and that one the wrappers
        of its per-parameter dicts) which state dict they are in (see :meth:`_dependency_requested`)."""
        if not self.__dict__.get("_self_in_optimizer"):
            return
        found = self.__dict__.get("_self_source")
        if found is not None and _saves_strings(found[0]):
            state = self._self_storage.get("state")
            if isinstance(state, _DictWrapper):
                state._self_optimizer = weakref.ref(self)
                state._link_optimizer()
            return
        holder = self.__dict__.get("_self_optimizer")
        if holder is not None:
            for value in self._self_storage.values():
                if isinstance(value, _DictWrapper):
                    value._self_param_of = holder

    def _dependency_requested(self, name: str) -> None:
        """A restore holds the state of parameter ``name``, which this copy of an optimizer's ``state`` lacks: make it.

        The state dict of an optimizer that has not stepped yet (``opt.state_dict()`` in a fresh process) holds
        no per-parameter state: the entry the checkpoint holds is made in the user's ``state`` dict (see
        :func:`~trackpoint.stateful.optimizer_state_entry`: CPU tensors of the saved dtypes and shapes, Python
        numbers of the saved types) and filled by the restore, so that ``opt.load_state_dict`` afterwards loads
        it, as it would load the optimizer's own restored state. Only in a checkpoint's containers, in a state
        dict as torch makes it (see :func:`~trackpoint.stateful.optimizer_param_numbers`), for a parameter
        number of its ``param_groups``, and where the checkpoint tells each value's kind with certainty: else
        nothing is made, and the restore's status names the entry.
        """
        waiting = self._deferred_dependencies.get(name)
        holder_ref = self.__dict__.get("_self_optimizer")
        holder = None if holder_ref is None else holder_ref()
        found = self.__dict__.get("_self_source")
        # Only in a checkpoint's containers: an AutoTrackable's save no Python numbers (configuration), so what
        # the checkpoint holds of a parameter's state there may lack some.
        if not waiting or holder is None or found is None or not self._self_strict or not _is_int_text(name):
            return
        given = holder.__dict__.get("_self_source")
        state_dict, source = (None, None) if given is None else (given[0], found[0])
        if state_dict is None or state_dict.get("state") is not source:
            return
        newest = max(waiting, key=lambda position: position.restore_uid)
        # Once per restore, not per parameter (each walks all parameters): the state dict's parameter numbers
        # and kind. The restore writes none of them: it makes entries under parameter numbers, and writes the
        # saved param groups only where they are the ones given (see below).
        fill = holder.__dict__.get("_self_fill")
        if fill is None or fill[0] != newest.restore_uid or fill[1] is not state_dict:
            numbers = optimizer_param_numbers(state_dict)
            fill = (
                newest.restore_uid,
                state_dict,
                None if numbers is None else frozenset(numbers),
                numbers is not None and has_lbfgs_param_groups(state_dict),
            )
            holder._self_fill = fill
        key = int(name)
        if fill[2] is None or key not in fill[2] or key in source or key in self._self_storage:
            return
        if not hasattr(newest, "coordinator"):
            return
        # Once per restore: the param groups saved must be the ones given, else the entry would be the state of
        # another parameter (of another shape: the next step fails; of the same: wrong moments load silently).
        checked = holder.__dict__.get("_self_groups_checked")
        if checked is None or checked[0] != newest.restore_uid:
            given_groups = _RESTORING.groups.get(id(state_dict), given_param_groups(state_dict))
            checked = (newest.restore_uid, param_groups_mismatch(newest, name, given_groups))
            holder._self_groups_checked = checked
            if checked[1] is not None:
                _log.warning(
                    "Made no per-parameter state in %s for the optimizer state the checkpoint holds: %s, so it "
                    "would be the state of other parameters. The restore's status names the entries left "
                    "unrestored; build the optimizer over the same parameters, in the same param groups and "
                    "order, as the run that saved.",
                    holder._self_where,
                    checked[1],
                )
        if checked[1] is not None:
            return
        entry = optimizer_state_entry(newest, fill[3])
        if entry is None:
            return
        source[key] = entry
        # The user's dict is followed once per restore, at its first entry made; each further one is recorded
        # alone (O(1), not a follow of all the entries) while the dict and its record differ by it only.
        if self.__dict__.get("_self_filling") != newest.restore_uid or not self._record_made(key, entry):
            self._check_source()  # follows the user's dict: a copy of the entry, wrapped
            self._self_filling = newest.restore_uid
        if key in self._self_storage and key not in self._self_unsaved:
            self._added(key, self._dependency(key, self._self_storage[key]))

    def _record_made(self, key: Any, entry: Any) -> bool:
        """Hold a copy of ``entry``, just made at ``key`` in the user's dict this copy follows, as :meth:`_follow`
        would, and record it: only where the dict, its record and this copy held the same keys but ``key`` (else
        ``False``: the caller follows the whole dict)."""
        source, then = self.__dict__["_self_source"]
        storage = self._self_storage
        if self._self_external or key in then or key in storage or not len(source) - 1 == len(then) == len(storage):
            return False
        with _copying(state_dict=self.__dict__.get("_self_in_optimizer", False), follow=True):
            stored, tracked = self._store(key, _copy_containers(entry))
        storage[key] = stored
        then[key] = entry
        if not tracked:
            self._self_unsaved.add(key)
        snapshot = self._self_snapshot
        if snapshot is not None:
            snapshot[key] = stored
        dict.__setitem__(self, key, stored)
        holder = self.__dict__.get("_self_optimizer")
        if holder is not None and isinstance(stored, _DictWrapper):
            stored._self_param_of = holder  # as _link_optimizer links each per-parameter dict
        return True

    def _entries_missing_from(self, names: Sequence[str]) -> list[str]:
        """A restore plans this dict from a node holding ``names``: an LBFGS per-parameter dict (a copy in an
        optimizer's state dict given as a dict) records the history lists it holds (see
        :meth:`_take_saved_history`). Nothing is reported missing: the status names what was not restored."""
        if _RESTORING.depth and self.__dict__.get("_self_param_of") is not None:
            held = [name for name in names if name in _LBFGS_LISTS]
            if held:
                _RESTORING.histories[id(self)] = (self, held, self._self_update_uid)
                for name in held:
                    # Saved, its list holds no entries until its own node's plan records them (see
                    # ListWrapper._entries_missing_from, which a node without children does not call): a list
                    # the checkpoint holds empty is of length 0.
                    history = self._self_storage.get(name)
                    if isinstance(history, ListWrapper):
                        _RESTORING.lengths.setdefault(id(history), (history, 0))
        return []

    def _take_saved_history(
        self, names: list[str], before: int, lengths: Mapping[int, tuple[ListWrapper, int | None]]
    ) -> None:
        """After a restore, cut each list of this LBFGS per-parameter dict's history (``names``) to the length saved.

        A history given longer than the saved one (from an optimizer that took more steps) would keep its extra
        entries, which ``load_state_dict`` would load with the restored ones: the saved history is taken whole,
        as it is where the history given is shorter (see :meth:`ListWrapper._dependency_requested`). ``al`` is
        given its ``history_size`` places afterwards (see :func:`restoring`). Only the lists this restore
        planned (``before``: this dict's restore uid before it), in a state dict of ``LBFGS`` (see
        :func:`~trackpoint.stateful.has_lbfgs_param_groups`: by its param groups' keys, whatever keys its ``state``).
        """
        holder_ref = self.__dict__.get("_self_param_of")
        holder = None if holder_ref is None else holder_ref()
        given = None if holder is None else holder.__dict__.get("_self_source")
        uid = self._self_update_uid
        if given is None or uid == before or not has_lbfgs_param_groups(given[0]):
            return
        for name in names:
            history = self._self_storage.get(name)
            if not isinstance(history, ListWrapper) or history._self_update_uid != uid:
                continue
            # The restore records the length of each list it planned (see _entries_missing_from); a list it did
            # not record is not cut.
            found = lengths.get(id(history))
            if found is not None and found[1] is not None:
                history._take_saved_length(found[1])

    def _mirror(self) -> None:
        # The dict part of the wrapper holds the same items, for C code that reads a dict
        # subclass directly (json) instead of calling its methods.
        dict.clear(self)
        dict.update(self, self._self_storage)

    def _check_external_modification(self) -> None:
        if self._self_external:
            return
        storage, snapshot = self._self_storage, self._self_snapshot
        assert snapshot is not None
        if storage.keys() == snapshot.keys():
            changed = [key for key, value in storage.items() if not _same_element(value, snapshot[key])]
            if not changed:
                return
            if all(type(storage[key]) in _NUMBERS and type(storage[key]) is type(snapshot[key]) for key in changed):
                # A counter kept in the dict the program holds (`state["epoch"] += 1`): a number that replaced
                # a number of its type under the same key creates no object a restore could have been waiting
                # for, so it is taken as if assigned through the wrapper. (Another type would be saved as
                # another dtype, which the next run's dict of the original types could not restore.)
                for key in changed:
                    self._assign(key, storage[key])
                return
        self._self_external = True
        self._mirror()

    def _check_write(self, key: Any) -> None:
        """The check a write of ``key`` makes first: O(1), not O(n) (see :meth:`ListWrapper._check_write`).

        A change outside the wrapper that the write could hide, to the number of keys or to ``key``'s value, is
        looked for as :meth:`_check_external_modification` does (a number counter there is taken as assigned
        before the write). A value replaced under another key stays different from the snapshot, which the
        write updates for ``key`` only: the full comparison when the dict is saved or restored finds it (and
        takes a number counter as assigned, or refuses) as it would have here.
        """
        if self._self_external:
            return
        storage, snapshot = self._self_storage, self._self_snapshot
        assert snapshot is not None
        if len(storage) == len(snapshot):
            now, then = storage.get(key, _MISSING), snapshot.get(key, _MISSING)
            if now is then or (now is not _MISSING and then is not _MISSING and _same_element(now, then)):
                return
        self._check_external_modification()

    def _retyped_numbers(self) -> str:
        """The keys whose number became a number of another type outside the wrapper, for the refusal's message."""
        storage, snapshot = self._self_storage, self._self_snapshot or {}
        changed = [
            f"{key!r} went from {type(snapshot[key]).__name__} to {type(value).__name__}"
            for key, value in storage.items()
            if key in snapshot
            and type(value) in _NUMBERS
            and type(snapshot[key]) in _NUMBERS
            and type(value) is not type(snapshot[key])
        ]
        return ", ".join(changed)

    def _update_snapshot(self, key: Any = _MISSING) -> None:
        """Acknowledge a change made through the wrapper (of ``key`` only, when given)."""
        storage, snapshot = self._self_storage, self._self_snapshot
        if key is _MISSING or snapshot is None:
            self._mirror()
            if not self._self_external:
                self._self_snapshot = dict(storage)
            return
        if key in storage:
            dict.__setitem__(self, key, storage[key])
            if not self._self_external:
                snapshot[key] = storage[key]
        else:
            dict.pop(self, key, None)
            if not self._self_external:
                snapshot.pop(key, None)

    def _replace_restored(self, key: Any, old: Any, new: Any) -> None:
        if self._self_storage.get(key, _MISSING) is old:
            self._self_storage[key] = new
            dict.__setitem__(self, key, new)
            snapshot = self._self_snapshot
            if snapshot is not None and snapshot.get(key, _MISSING) is old:
                snapshot[key] = new
            self._restored_inside()
            self._restored_in_source(key, new)

    def _follow(self, now: list[Any], then: dict[Any, Any]) -> None:
        # docstring inherited
        storage, nodes, unsaved = self._self_storage, self._self_nodes, self._self_unsaved
        before = then
        followed: dict[Any, Any] = {}
        now_unsaved: set[Any] = set()
        with _copying(state_dict=self.__dict__.get("_self_in_optimizer", False), follow=True):
            for key, value in now:
                if not self._self_external and key in storage and before.get(key, _MISSING) is value:
                    followed[key] = storage[key]
                    if key in unsaved:
                        now_unsaved.add(key)  # given as NoDependency: stays unsaved
                    continue
                nodes.pop(key, None)
                followed[key], tracked = self._store(key, _copy_containers(value))
                if not tracked:
                    now_unsaved.add(key)
        for key in [key for key in nodes if key not in followed]:
            del nodes[key]
        storage.clear()
        storage.update(followed)  # in the source's order
        self._self_unsaved = now_unsaved
        self._self_external = False
        self._self_snapshot = dict(storage)
        self._link_optimizer()
        self._mirror()

    def _items(self) -> Iterable[tuple[Any, Trackable]]:
        for key, value in self._self_storage.items():
            if key in self._self_unsaved:
                continue
            dependency = self._dependency(key, value)
            if dependency is not None:
                yield key, dependency

    def _trackable_children(self) -> dict[str, Trackable]:
        self._check_source()
        found = self.__dict__.get("_self_source")
        if _RESTORING.depth and found is not None and _saves_strings(found[0]):
            # A copy of a torch optimizer's state dict, walked by a restore: see restoring.
            _RESTORING.state_dicts[id(found[0])] = found[0]
            if id(found[0]) not in _RESTORING.groups:
                # Its param groups as given, before the restore writes the saved ones into them.
                _RESTORING.groups[id(found[0])] = given_param_groups(found[0])
        self._check_external_modification()
        if self._self_external:
            message = _EXTERNAL_MESSAGE.format(
                obj=self,
                made="a dictionary wrapper constructed automatically on attribute assignment",
                kind="dictionary",
                final=self._self_storage,
                snapshot=self._self_snapshot,
            )
            retyped = self._retyped_numbers()
            if retyped:
                message += (
                    f" Here {retyped}: a number replaced by a number of its type is taken as an edit through the "
                    "wrapper, one of another type is not, since it would be saved as another dtype than the one "
                    "the next run's dict restores into; keep the type (0.0 for a float that starts at 0)"
                )
            raise TrackableError(message)
        return super()._trackable_children()

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        key: Any = name
        value = self._self_storage.get(name, _MISSING)
        if value is _MISSING:
            # An int key is saved under its decimal string (see _dict_key_name).
            key = _int_named(name)
            if key is None:
                return None
            value = self._self_storage.get(key, _MISSING)
            if value is _MISSING:
                return None
        if key in self._self_unsaved:
            return None
        return self._dependency(key, value)

    # ------------------------------------------------------------ dict reads
    def _reading(self, key: Any = _MISSING) -> None:
        """A read through a copy that mirrors its source (see :meth:`_mirrors_source`) follows the source first
        where the read could see its change: at ``key`` (:meth:`_source_unchanged_at`, O(1)), or, for a read of
        the whole dict, if its number of keys changed. A read of a stale value would hand out a copy the user's
        dict no longer holds, and a write into it would be lost."""
        if not self._mirrors_source() or self.__dict__.get("_self_users") is not None:
            return
        if key is _MISSING:
            source, then = self.__dict__["_self_source"]
            if len(source) == len(then) == len(self._self_storage):
                return
        elif self._source_unchanged_at(key):
            return
        self._check_source()

    def __getitem__(self, key: Any) -> Any:
        if "_self_source" in self.__dict__:
            self._reading(key)
        return self._self_storage[key]

    def __len__(self) -> int:
        if "_self_source" in self.__dict__:
            self._reading()
        return len(self._self_storage)

    def __iter__(self) -> Iterator[Any]:
        if "_self_source" in self.__dict__:
            self._reading()
        return iter(self._self_storage)

    def __reversed__(self) -> Iterator[Any]:
        if "_self_source" in self.__dict__:
            self._reading()
        backwards: Iterator[Any] = reversed(self._self_storage)
        return backwards

    def __contains__(self, key: object) -> bool:
        if "_self_source" in self.__dict__:
            self._reading()
        return key in self._self_storage

    def get(self, key: Any, default: Any = None) -> Any:
        if "_self_source" in self.__dict__:
            self._reading(key)
        return self._self_storage.get(key, default)

    def keys(self) -> Any:
        if "_self_source" in self.__dict__:
            self._reading()
        return self._self_storage.keys()

    def values(self) -> Any:
        if "_self_source" in self.__dict__:
            self._reading()
        return self._self_storage.values()

    def items(self) -> Any:
        if "_self_source" in self.__dict__:
            self._reading()
        return self._self_storage.items()

    @staticmethod
    def _plain(other: Any) -> Any:
        return other._self_storage if isinstance(other, _DictWrapper) else other

    def __eq__(self, other: object) -> bool:
        if "_self_source" in self.__dict__:
            self._reading()
        return bool(self._self_storage == self._plain(other))

    def __ne__(self, other: object) -> bool:
        if "_self_source" in self.__dict__:
            self._reading()
        return bool(self._self_storage != self._plain(other))

    def __hash__(self) -> int:  # type: ignore[override]
        raise TypeError("unhashable type: 'DictWrapper'")

    def __or__(self, other: Any) -> Any:
        return dict(self._self_storage) | self._plain(other)

    def __ror__(self, other: Any) -> Any:
        return self._plain(other) | dict(self._self_storage)

    def __ior__(self, other: Any) -> _DictWrapper:
        self.update(other)
        return self

    def __repr__(self) -> str:
        return f"DictWrapper({self._self_storage!r})"

    def __sizeof__(self) -> int:
        return super().__sizeof__() + sys.getsizeof(self._self_storage)

    def copy(self) -> dict[Any, Any]:
        """A new wrapper around a shallow copy of the dict (unsaveable if this one is)."""
        self._check_external_modification()
        copied = _DictWrapper(copy.copy(self._self_storage), strict=self._self_strict, _where=self._self_where)
        copied._self_unsaved = set(self._self_unsaved)
        copied._self_external = self._self_external
        return copied

    def __copy__(self) -> dict[Any, Any]:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> _DictWrapper:
        self._check_external_modification()
        copied = _strings_saved(
            self._self_strings,
            lambda: _DictWrapper(
                copy.deepcopy(self._self_storage, memo), strict=self._self_strict, _where=self._self_where
            ),
        )
        copied._self_external = self._self_external
        return copied

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (_DictWrapper, (self._self_storage,))

    # ----------------------------------------------------------- dict writes
    @contextlib.contextmanager
    def _writing(self, key: Any = _MISSING) -> Iterator[None]:
        """A write through this wrapper: in a copy that mirrors its source (see :meth:`_mirrors_source`), the
        source's changes are followed first, and afterwards the user's dict holds the keys the copy holds, each
        key written by the write holding the value given (see :meth:`_assign`). Nested writes (``update``) are
        one write.

        A write of one ``key`` only (``d[key] = v``, ``del d[key]``, ``pop``, ``setdefault``) costs O(1), not
        O(n): the source is followed only if it changed where the write could hide it (its number of keys, or
        ``key``'s value, see :meth:`_source_unchanged_at`), and the write is made in the source and its record
        at ``key`` only. A change to another key stays different from the record, and is followed at the next
        save, restore or write of that key, as it would have been here (see :meth:`ListWrapper._check_write`).
        """
        if self.__dict__.get("_self_users") is not None or not self._mirrors_source():
            yield
            return
        one = key is not _MISSING and self._source_unchanged_at(key)
        if not one:
            self._check_source()
        source, then = self.__dict__["_self_source"]
        users: dict[Any, Any] = {}
        self._self_users: dict[Any, Any] | None = users
        try:
            yield
        finally:
            self._self_users = None
            storage = self._self_storage
            if one:
                if key not in storage:
                    source.pop(key, None)
                    then.pop(key, None)
                for held, given in users.items():
                    if held in storage:
                        source[held] = then[held] = given
            else:
                for gone in [held for held in source if held not in storage]:
                    del source[gone]
                for held, given in users.items():
                    if held in storage:
                        source[held] = given
                self._self_source = (source, dict(source))

    def _source_unchanged_at(self, key: Any) -> bool:
        """Whether the user's dict this copy mirrors holds as many keys as when last recorded, and ``key``'s value
        then (or lacks ``key`` still): O(1), the check of a write of ``key`` (see :meth:`_writing`)."""
        source, then = self.__dict__["_self_source"]
        return len(source) == len(then) == len(self._self_storage) and source.get(key, _MISSING) is then.get(
            key, _MISSING
        )

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._writing(key):
            self._check_write(key)
            self._assign(key, value)

    def _assign(self, key: Any, value: Any) -> None:
        """``self[key] = value``, the wrapper's own change (checked for external ones by the caller)."""
        users = self.__dict__.get("_self_users")
        if users is None:
            stored, tracked = self._store(key, value)
        else:
            stored, tracked = self._store_mirrored(key, value)
            users[key] = _given_value(value)
        self._self_storage[key] = stored
        self._self_nodes.pop(key, None)
        if tracked:
            self._self_unsaved.discard(key)
        else:
            self._self_unsaved.add(key)
        self._update_snapshot(key)
        self._link_optimizer()
        if tracked:
            self._added(key, self._dependency(key, stored))

    def __delitem__(self, key: Any) -> None:
        with self._writing(key):
            self._check_write(key)
            del self._self_storage[key]
            self._self_nodes.pop(key, None)
            self._self_unsaved.discard(key)
            self._update_snapshot(key)

    def pop(self, key: Any, *default: Any) -> Any:
        with self._writing(key):
            if key not in self._self_storage:
                if default:
                    return default[0]
                raise KeyError(key)
            value = self._self_storage[key]
            del self[key]
            return value

    def popitem(self) -> tuple[Any, Any]:
        with self._writing():
            if not self._self_storage:
                raise KeyError("popitem(): dictionary is empty")
            key = next(reversed(self._self_storage))
            value = self._self_storage[key]
            del self[key]
            return key, value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        with self._writing(key):
            if key not in self._self_storage:
                self[key] = default
            return self._self_storage[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        with self._writing():
            for key, value in dict(*args, **kwargs).items():
                self[key] = value

    def clear(self) -> None:
        with self._writing():
            self._check_external_modification()
            self._self_storage.clear()
            self._self_nodes.clear()
            self._self_unsaved.clear()
            self._update_snapshot()


class _TupleValue(TrackableDataStructure):
    """The saved node of a tuple held by an attribute or a container.

    The holder keeps a real tuple of the original type (a namedtuple stays
    that namedtuple, with nested lists and dicts wrapped and ``NoDependency``
    elements unwrapped), so ``isinstance``, field access, ``json.dumps`` and
    every tuple operation behave as usual; this node saves its elements, by
    index and, for a namedtuple, by field name too (the same object under
    both names, as in TensorFlow). A namedtuple restored from a namedtuple
    is matched by field name only (see :meth:`_restore_skips`). A restore
    that replaces a numpy scalar or read-only array in it gives the holder a
    new tuple holding the restored value.
    """

    _self_value: tuple[Any, ...]
    _on_replace: Callable[[Any], None] | None

    def __init__(
        self, original: tuple[Any, ...], strict: bool, where: str, on_replace: Callable[[Any], None] | None = None
    ) -> None:
        self._init_structure(strict, where, "tuple")
        original_type = type(original)
        fields = _fields(original_type)
        self._self_fields = fields
        self._self_unsaved = frozenset(i for i, v in enumerate(original) if isinstance(v, NoDependency))
        stored = [self._store(index, value)[0] for index, value in enumerate(original)]
        self._self_constructable = True
        held: tuple[Any, ...] = tuple(stored)
        if original_type is not tuple:
            try:
                rebuilt = original_type(**dict(zip(fields, stored, strict=False))) if fields else original_type(stored)
            except TypeError:
                # Its __new__ takes other arguments: it cannot be rebuilt, so it is not saved (TensorFlow's rule).
                self._self_constructable = False
                rebuilt = original
            held = rebuilt if isinstance(rebuilt, tuple) else tuple.__new__(original_type, stored)
        self._self_value = held
        self._on_replace = on_replace

    def current(self) -> tuple[Any, ...]:
        """The tuple the holder should hold (a new one after a replacing restore)."""
        return self._self_value

    def _replace_restored(self, key: Any, old: Any, new: Any) -> None:
        values = list(self._self_value)
        if not isinstance(key, int) or key >= len(values) or values[key] is not old:
            return
        values[key] = new
        # tuple.__new__ rebuilds the same type without running a custom __new__ again.
        self._self_value = tuple.__new__(type(self._self_value), values)
        if self._on_replace is not None:
            self._on_replace(self._self_value)

    def _items(self) -> Iterable[tuple[Any, Trackable]]:
        by_index = []
        for index, value in enumerate(self._self_value):
            if index in self._self_unsaved:
                continue
            dependency = self._dependency(index, value)
            if dependency is not None:
                by_index.append((index, dependency))
        # Namedtuple fields first, then positions, as TensorFlow tracks them.
        fields = self._self_fields
        for index, dependency in by_index:
            if index < len(fields):
                yield fields[index], dependency
        for index, dependency in by_index:
            yield str(index), dependency

    def _trackable_children(self) -> dict[str, Trackable]:
        if not self._self_constructable:
            raise TrackableError(
                f"Unable to save because the namedtuple {self._self_value!r} is not constructable from its "
                f"_fields (i.e. __new__ is overridden). Expected keyword arguments {self._self_fields}. If you do "
                "not need to save this object, consider wrapping it in a custom object that does not inherit from "
                "tuple, or in NoDependency."
            )
        return super()._trackable_children()

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        fields = self._self_fields
        index = fields.index(name) if name in fields else _index_of(name, len(self._self_value))
        if index is None or index in self._self_unsaved:
            return None
        return self._dependency(index, self._self_value[index])

    def _restore_skips(self, names: Sequence[str]) -> frozenset[str]:
        """Of a saved node's child names, those a restore into this tuple does not match: none, or positions.

        A namedtuple saved with its field names, restored into a namedtuple, is matched by field name alone.
        Its positions name the same elements in the saved graph, but the fields of the program restoring may
        be another order or number (a field inserted, removed or renamed between versions): matched too, a
        position would give a field the value saved for another one, silently, or make one array take two
        values. Where either side has no field names (a plain tuple or a list saved, a plain tuple restoring)
        the positions are all there is, and are matched. Asked by the restore walk once per saved node matched
        to a tuple, never for an array. What is saved keeps both names (TensorFlow reads them).
        """
        if not self._self_fields:
            return frozenset()
        positions = frozenset(name for name in names if name.isdigit())
        # Only positions saved: a plain tuple or a list, restored into this namedtuple by position.
        return positions if len(positions) < len(names) else frozenset()

    def __repr__(self) -> str:
        return f"<tuple node {self._self_value!r}>"


def _fields(kind: type) -> tuple[str, ...]:
    """A namedtuple type's field names (``()`` for other types)."""
    fields = getattr(kind, "_fields", ())
    if isinstance(fields, tuple) and all(isinstance(f, str) for f in fields):
        return fields
    return ()


def _dict_key_name(key: Any) -> str | None:
    """The name a dict entry is saved under: a str key itself, an int key's decimal string; ``None`` for others.

    Int keys are common in JAX trees (``{0: ..., 1: ...}`` for layers); the object graph names its edges by
    strings (and TensorFlow reads them), so an int is saved under its canonical decimal form, as Orbax and
    ``torch.distributed.checkpoint`` spell int keys in their flat keys. A ``bool`` is not an int key here:
    ``True`` is ``1`` to a dict but ``"True"`` to ``str``.
    """
    if isinstance(key, str):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return str(int(key))
    return None


def _int_named(name: str) -> int | None:
    """The int key saved as ``name`` if ``name`` is an int's canonical decimal string (``"-3"``, not ``"03"``)."""
    try:
        number = int(name)
    except ValueError:
        return None
    return number if str(number) == name else None


def is_pytree_node(value: Any) -> bool:
    """Whether ``value`` is a node of a registered JAX pytree type that is not a plain dict, list or tuple.

    A dataclass registered with ``jax.tree_util.register_dataclass`` (as flax's ``struct.dataclass`` is), a
    class registered with ``register_pytree_node`` or ``register_pytree_with_keys``. Not ``None`` (an empty
    subtree, kept as it is), a namedtuple (a tuple), a trackable (the checkpoint's own wrappers are registered
    too), or a ``defaultdict``: JAX registers it when it is imported, and whether one is saved must not depend
    on that (it stays a container trackpoint does not track, see :func:`_refuse_hidden_state`). jax is never
    imported to check: a registered type exists only once it is.
    """
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    kind = type(value)
    if (
        kind in _NOTHING_INSIDE
        or kind is dict
        or kind is collections.OrderedDict
        or kind is list
        or kind is collections.defaultdict
        or issubclass(kind, tuple)
        or isinstance(value, Trackable)
    ):
        return False
    tree_util = getattr(jax, "tree_util", None)  # absent while jax is still being imported
    return tree_util is not None and bool(tree_util.is_tree_node(kind))


def _flatten_node(value: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """A pytree node's children one level down, as ``(key-path entry, child)`` pairs, and the treedef that rebuilds it.

    One level, so that the checkpoint's graph has an object per node, as it has one per dict, list and tuple.
    """
    below = False

    def is_leaf(_: Any) -> bool:
        # JAX asks about the node itself first, then about each child: everything below it is a leaf here.
        nonlocal below
        if below:
            return True
        below = True
        return False

    pairs, treedef = sys.modules["jax"].tree_util.tree_flatten_with_path(value, is_leaf=is_leaf)
    return [(path[0], child) for path, child in pairs], treedef


def _node_children(value: Any) -> tuple[Any, ...]:
    """A pytree node's children, one level down."""
    return tuple(child for _, child in _flatten_node(value)[0])


def _entry_name(entry: Any) -> tuple[str, str] | None:
    """The name a pytree node's child is saved under, from its key-path entry, and how its path reads.

    The attribute of a ``GetAttrKey`` (``.params``), the key of a ``DictKey`` (a str, or an int saved as its
    decimal string), the position of a ``SequenceKey`` or ``FlattenedIndexKey`` (a type registered without
    keys); ``None`` for an entry of another kind.
    """
    tree_util = sys.modules["jax"].tree_util
    if isinstance(entry, tree_util.GetAttrKey):
        return str(entry.name), f".{entry.name}"
    if isinstance(entry, tree_util.DictKey):
        name = _dict_key_name(entry.key)
        return None if name is None else (name, f"[{entry.key!r}]")
    if isinstance(entry, tree_util.SequenceKey):
        return str(entry.idx), f"[{entry.idx}]"
    if isinstance(entry, tree_util.FlattenedIndexKey):
        return str(entry.key), f"[{entry.key}]"
    return None


class _NodeRef:
    """A weak reference to the pytree node a structure or leaf node reports to (see :class:`_BatchedLeaf`)."""

    __slots__ = ("node",)

    def __init__(self, node: _PytreeValue | None) -> None:
        self.node: Callable[[], _PytreeValue | None] = _gone if node is None else weakref.ref(node)

    def __reduce__(self) -> tuple[Any, ...]:
        # As _ElementSetter's: pickled with a strong reference, rebuilt with a weak one.
        return (_NodeRef, (self.node(),))

    def __call__(self) -> _PytreeValue | None:
        return self.node()


class _BatchedLeaf(_NumpyValue):
    """The node of a leaf inside a pytree node, whose replacing restore the pytree node waits for.

    A JAX array (a numpy scalar, a number) is replaced on restore, and the pytree node holding it must then
    be rebuilt by its own unflatten: once per leaf would cost n unflattens of n children for a mapping-like
    node (flax's ``FrozenDict``). A restore asks each node it reads into for a buffer
    (:meth:`_restore_buffer`) before it gives any of them its value (:meth:`_restore_from_tensors`): a leaf
    that will be replaced tells its pytree node then, and the node rebuilds when the last leaf it waits for
    has its value (see :meth:`_PytreeValue._arrived`). A replacement it was not told of (an ``assign``)
    rebuilds at once.
    """

    _self_batch: _NodeRef

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        buffer = super()._restore_buffer(attribute)
        if buffer is None and self._tensor is None:  # replaced, not written in place
            node = self._self_batch()
            if node is not None:
                node._self_expected.add(id(self))
        return buffer

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        try:
            super()._restore_from_tensors(tensors)
        finally:
            node = self._self_batch()
            if node is not None:
                node._arrived(self)


def _in_place_kind(value: Any) -> bool:
    """Whether a restore writes into ``value`` itself (a writeable array, a tensor, a variable, a module)."""
    if isinstance(value, np.ndarray):
        return bool(value.flags.writeable)
    return dtypes._is_torch_tensor(value) or isinstance(value, Trackable) or is_stateful(value)


def _tree_flatten(value: Any) -> tuple[list[Any], Any]:
    leaves, structure = sys.modules["jax"].tree_util.tree_flatten(value)
    return list(leaves), structure


def _same_tree(leaves: list[Any], structure: Any, then: tuple[list[Any], Any]) -> bool:
    """Whether ``leaves`` in ``structure`` are the very leaves ``then`` recorded, in an equal structure."""
    if len(leaves) != len(then[0]) or not all(map(operator.is_, leaves, then[0])):
        return False
    try:
        return bool(structure == then[1])
    except Exception:  # noqa: BLE001 -- static data whose == gives no truth value: taken as changed
        return False


def _held_ref(value: Any) -> Callable[[], Any]:
    """A weak reference to ``value`` where it takes one; else ``value`` itself, behind the same call."""
    try:
        return _Weak(value)
    except TypeError:
        return _Held(value)


class _Weak:
    """A weak reference that pickles (as the strong :class:`_Held`, like the setters' references)."""

    __slots__ = ("ref",)

    def __init__(self, value: Any) -> None:
        self.ref = weakref.ref(value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Held, (self.ref(),))

    def __call__(self) -> Any:
        return self.ref()


class _Held:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> Any:
        return self.value


#: How a source node's child was, for :meth:`_PytreeValue._check_source`: a leaf (a reference, weak where it
#: can be), or a plain container: its type, keys (or length), the records of its items and, where the
#: checkpoint's wrapper shares it (a tree without JAX arrays is wrapped in place), the container itself.
_Record = tuple[Any, ...]


def _record(value: Any, shared: bool) -> _Record:
    kind = type(value)
    if kind is dict or kind is collections.OrderedDict or kind is list or kind is tuple:
        items = list(value.values()) if isinstance(value, dict) else list(value)
        keys = tuple(value) if isinstance(value, dict) else len(value)
        return ("c", value if shared else None, kind, keys, [_record(item, shared) for item in items])
    return ("l", _held_ref(value))


def _changed_from_record(value: Any, record: _Record) -> str | None:
    """Where ``value`` differs from what ``record`` saw (``""`` for itself), or ``None`` if nowhere.

    Containers are compared by their contents, not their identity: a flatten may build its children anew
    each time (``lambda m: (({"w": m.w, "b": m.b},), None)``).
    """
    if record[0] == "l":
        return None if record[1]() is value else ""
    _, shared, kind, keys, items = record
    if shared is not None and value is shared:
        return None  # the checkpoint's wrapper shares it: what changes inside is the wrapper's to check
    if type(value) is not kind:
        return ""
    if isinstance(value, dict):
        if tuple(value) != keys:
            return ""
        steps = [f"[{key!r}]" for key in value]
        contents = list(value.values())
    else:
        if len(value) != keys:
            return ""
        steps = [f"[{index}]" for index in range(len(value))]
        contents = list(value)
    for step, item, sub in zip(steps, contents, items, strict=True):
        inside = _changed_from_record(item, sub)
        if inside is not None:
            return step + inside
    return None


class _PytreeValue(TrackableDataStructure):
    """The saved node of a registered JAX pytree node (not a dict, list or tuple) held by an attribute or container.

    A dataclass registered with ``jax.tree_util.register_dataclass`` (a train state; flax's
    ``struct.dataclass``), a class registered with ``register_pytree_node`` or ``register_pytree_with_keys``:
    its children one level down are saved under the names of their key-path entries (see
    :func:`_entry_name`), as a namedtuple's fields are, so keys read ``state/params/w/...``. Static (meta)
    fields are not children: they are not saved, and the node restored keeps its own.

    The holder keeps :meth:`current`: a node of the same type, rebuilt by the type's own unflatten around
    the children as the checkpoint holds them (lists and dicts wrapped). The node given is never changed.

    What is saved and restored is what that node holds (see :meth:`_adopt`): an unflatten that copies or
    converts a leaf (a ``__post_init__`` doing ``np.array(self.w, np.float32)``) holds its own copy, and
    that copy is tracked, restored in place and saved. A restore that replaces a child (a JAX array, a
    tuple, a node inside) rebuilds the node, once per restore (see :class:`_BatchedLeaf`), and gives the
    holder the new one. An unflatten that copies a list or dict child holds other containers: a restore into
    the checkpoint's rebuilds the node, and one that copies or converts arrays inside such a container,
    which a restore would write into unseen, is refused.
    """

    _self_value: Any
    _self_names: tuple[str, ...]
    _self_wheres: tuple[str, ...]
    _self_batch: _NodeRef
    #: Ids of the leaf nodes whose replacing restore is under way (see _BatchedLeaf).
    _self_expected: set[int]
    #: Whether a child was replaced since the node was last rebuilt.
    _self_dirty: bool
    #: The leaves and tree structure of the containers the node holds where the checkpoint tracks others (an
    #: unflatten or flatten that copies them), by position, as they were when the node was rebuilt.
    _self_copies: dict[int, tuple[list[Any], Any]]
    _on_replace: Callable[[Any], None] | None

    def __init__(
        self, original: Any, strict: bool, where: str, on_replace: Callable[[Any], None] | None = None
    ) -> None:
        kind = type(original).__name__
        self._init_structure(strict, where, kind)
        self._self_kind = kind
        pairs, treedef = _flatten_node(original)
        names: list[str] = []
        wheres: list[str] = []
        index_of: dict[str, int] = {}
        for index, (entry, _) in enumerate(pairs):
            named = _entry_name(entry)
            if named is None:
                raise TrackableError(
                    f"{where} is a {kind}, a JAX pytree node whose child {index} has the key-path entry {entry!r}, "
                    "which gives no name to save it under: register the type with jax.tree_util.register_dataclass "
                    "or register_pytree_with_keys giving GetAttrKey, DictKey (str or int keys) or SequenceKey "
                    "entries, or assign NoDependency(value) to keep it unsaved"
                )
            name, step = named
            if name in index_of:
                raise NameConflictError(
                    f"{where} is a {kind}, a JAX pytree node whose children {index_of[name]} and {index} would both "
                    f"be saved as {name!r}: give its children distinct key-path entries"
                )
            index_of[name] = index
            names.append(name)
            wheres.append(where + step)
        self._self_names = tuple(names)
        self._self_index = index_of
        self._self_wheres = tuple(wheres)
        self._self_unsaved = frozenset(i for i, (_, child) in enumerate(pairs) if isinstance(child, NoDependency))
        self._self_treedef = treedef
        self._on_replace = on_replace
        self._self_batch = _NodeRef(self)
        self._self_expected = set()
        self._self_dirty = False
        self._self_copies = {}
        self._self_children = [self._store(index, child)[0] for index, (_, child) in enumerate(pairs)]
        # Always a new node, as a tuple is rebuilt: the holder never holds the user's (maybe mutable) node, so
        # that assigning it again, after a change, is a new assignment.
        self._self_value = self._unflatten()
        self._adopt()
        self._watch()
        # The user's node (the one a copy of a tree holding JAX arrays was made from), as it is now that its
        # lists and dicts are wrapped. Held weakly where it can be, and its leaves too: a node nobody else
        # holds cannot change, and the template's arrays must not outlive a restore that replaced them.
        source = _COPYING.sources.get(id(original), original) if _COPYING.depth else original
        shared = source is original  # not copied: its lists and dicts are the wrappers' own
        self._self_given: tuple[Callable[[], Any], list[_Record]] | None = (
            _held_ref(source),
            [_record(child, shared) for child in _node_children(source)],
        )

    def current(self) -> Any:
        """The node the holder should hold (a new one after a replacing restore)."""
        return self._self_value

    def _unflatten(self) -> Any:
        try:
            return self._self_treedef.unflatten(self._self_children)
        except Exception as exc:  # the type's own unflatten, which can refuse what it is given
            raise TrackableError(
                f"{self._self_where}: the {self._self_kind} could not be rebuilt around the "
                f"checkpoint's containers by its pytree unflatten function ({exc!r}); assign NoDependency(value) "
                "to keep it unsaved"
            ) from exc

    def _copies_refused(self, index: int, what: str) -> TrackableError:
        kind = self._self_kind
        return TrackableError(
            f"{self._self_where}: the {kind}'s pytree unflatten (its constructor or __post_init__) copies or "
            f"converts {what} it is given at {self._element_where(index)}, so a restore, which writes into the "
            f"values the checkpoint tracks, would not reach the {kind} held here, nor would a save see its copies. "
            f"Convert the values before building the {kind} (np.asarray(x, dtype) keeps an array that already has "
            "the dtype where np.array copies it), have it keep the lists and dicts it is given, or assign "
            "NoDependency(value) to keep it unsaved"
        )

    def _adopt(self, saving: bool = False) -> None:
        """Track what the node held by the holder holds, one level down.

        Right after an unflatten (``saving`` false): a leaf the unflatten copied or converted (a
        ``__post_init__`` doing ``np.array(self.w, np.float32)``) is tracked in place of the one given, its
        node, if any, made again around it in place (so that a restore in progress still finds it), so a
        restore writes into what the node holds and a save reads it. A list or dict child the node holds
        a copy of must hold the same arrays and tensors: a restore writes into those (the node is
        rebuilt when one inside is replaced, see :meth:`_watch`).

        When the node is walked (``saving``, a save or a restore): a leaf replaced in the held node (a
        mutable one) is tracked from now on; a list or dict child it holds that changed since the checkpoint
        built it is refused by a save.

        Raises
        ------
        TrackableError
            The node turned a saved leaf into something not saved, copies a variable or stateful object,
            or copies arrays inside a list or dict child; or, at a save, a copied container changed.
        """
        held = _node_children(self._self_value)
        children = self._self_children
        if len(held) != len(children):
            raise TrackableError(
                f"{self._self_where}: the {self._self_kind} rebuilt by its pytree unflatten from "
                f"{len(children)} children flattens into {len(held)}: the checkpoint cannot tell which is which; "
                "assign NoDependency(value) to keep it unsaved"
            )
        copies: dict[int, tuple[list[Any], Any]] = {}
        for index, (now, tracked) in enumerate(zip(held, children, strict=True)):
            if now is tracked:
                continue
            if index in self._self_unsaved:
                children[index] = now
                continue
            node = self._self_nodes.get(index)
            if isinstance(tracked, (ListWrapper, _DictWrapper)) or (
                isinstance(node, (_TupleValue, _PytreeValue)) and node.current() is tracked
            ):
                leaves, structure = _tree_flatten(now)
                if saving:
                    # What the node holds there (a flatten may build it anew each time) is what it held when the
                    # checkpoint built it: the same leaves in the same structure.
                    copy = self._self_copies.get(index)
                    if copy is None or not _same_tree(leaves, structure, copy):
                        if not _RESTORING.depth:
                            raise self._changed_refused(f"at {self._element_where(index)}")
                        # A restore restores into the containers the checkpoint tracks (see restoring); a
                        # save still refuses the change.
                    if copy is not None:
                        copies[index] = copy
                    continue
                inside = set(map(id, leaves))
                if any(id(leaf) not in inside and _in_place_kind(leaf) for leaf in _tree_flatten(tracked)[0]):
                    raise self._copies_refused(index, "the arrays inside the list or dict")
                copies[index] = (leaves, structure)
                continue
            if _in_place_kind(tracked) and not is_array_value(tracked):
                raise self._copies_refused(index, f"the {type(tracked).__name__}")
            name, where, strict = self._child_name(index), self._element_where(index), self._self_strict
            if is_array_value(now) or (strict and type(now) in PYTHON_NUMBERS):
                _wrap(now, name, strict, where)  # checks that it can be saved
            elif (
                is_array_value(tracked)
                or (strict and type(tracked) in PYTHON_NUMBERS)
                or (_wrap(now, name, strict, where) is not now)
            ):
                raise self._copies_refused(index, f"the {type(tracked).__name__} (into a {type(now).__name__})")
            if isinstance(node, _NumpyValue) and node.current() is tracked:
                # The node made again in place: a restore in progress, and the status, know this one.
                _NumpyValue.__init__(node, now, name, where, _ElementSetter(self, index, now))
            children[index] = now
        self._self_copies = copies

    def _changed_refused(self, at: str) -> TrackableError:
        return TrackableError(
            f"Unable to save {self._self_where}: the {self._self_kind} held there was changed {at} since the "
            "checkpoint built it (it holds other lists or dicts, or other values in them), and the checkpoint "
            "saves the ones it tracks. Assign it again before saving, to save the new values."
        )

    def _watch(self) -> None:
        """Have the lists and dicts inside rebuild this node when a restore changes them, if it holds copies.

        Most types' unflatten keeps the children it is given (a registered dataclass does), so a restore
        into a wrapped dict inside is seen through the node. One that copies them (into a frozen mapping,
        say) holds other containers: the node is rebuilt after a restore that replaced something in them
        (their leaves are :class:`_BatchedLeaf` nodes, so once per restore).
        """
        batch = self._self_batch
        pending = [self._self_children[index] for index in self._self_copies]
        while pending:
            item = pending.pop()
            if isinstance(item, (_DictWrapper, ListWrapper)):
                item._self_batch = batch
                pending.extend(item.values() if isinstance(item, _DictWrapper) else item)

    def _changed(self) -> None:
        """A child was replaced (or a list or dict inside changed): rebuild now, or once the restore's leaves are in."""
        self._self_dirty = True
        if not self._self_expected:
            self._rebuild()

    def _arrived(self, leaf: _BatchedLeaf) -> None:
        """A leaf this node waited for has its restored value: rebuild if it was the last one."""
        expected = self._self_expected
        expected.discard(id(leaf))
        if not expected and self._self_dirty:
            self._rebuild()

    def _settle(self) -> None:
        """Before the node is walked, saved or looked into: a rebuild left waiting (a restore that stopped)."""
        if self._self_expected:
            self._self_expected.clear()
        if self._self_dirty:
            self._rebuild()

    def _rebuild(self) -> None:
        self._self_dirty = False
        self._self_value = self._unflatten()
        self._adopt()
        source = self._self_given
        if source is not None and isinstance(source[0], _Held):
            # The template held strongly (a type without weak references): its arrays, replaced now, are let go.
            self._self_given = None
        if self._on_replace is not None:
            self._on_replace(self._self_value)

    def _replace_restored(self, key: Any, old: Any, new: Any) -> None:
        children = self._self_children
        if isinstance(key, int) and key < len(children) and children[key] is old:
            children[key] = new
            self._changed()

    def _check_source(self) -> None:
        """Refuse to save a node whose source the user changed since it was given: the change would not be saved.

        Nothing is checked while a restore runs (see :func:`restoring`).

        Its children are compared with what they were by their leaves and the shape of the lists, dicts
        and tuples holding them, not by the identity of those containers, which a flatten may build anew.

        Raises
        ------
        TrackableError
            The node given (a mutable one) holds other leaves than it did when it was given.
        """
        found = self._self_given
        if found is None or _RESTORING.depth:
            return  # a restore restores into the node as it was given (see restoring)
        ref, records = found
        source = ref()
        if source is None:
            return  # nobody holds the node given any more: nobody can have changed it
        now = _node_children(source)
        at: str | None = ""
        if len(now) == len(records):
            changes = (
                (index, _changed_from_record(child, record))
                for index, (child, record) in enumerate(zip(now, records, strict=True))
            )
            at = next(
                (f" (at {self._element_where(index)}{inside})" for index, inside in changes if inside is not None), None
            )
            if at is None:
                return
        raise TrackableError(
            f"Unable to save {self._self_where}: the {type(source).__name__} given there was changed since it was "
            f"given{at}, and the checkpoint saves the values it was given. Assign it again before saving, to save "
            "the new values."
        )

    def _child_name(self, key: Any) -> str:
        return str(self._self_names[key])

    def _element_where(self, key: Any) -> str:
        return str(self._self_wheres[key])

    def _items(self) -> Iterable[tuple[Any, Trackable]]:
        names = self._self_names
        for index, value in enumerate(self._self_children):
            if index in self._self_unsaved:
                continue
            dependency = self._dependency(index, value)
            if dependency is not None:
                yield names[index], dependency

    def _trackable_children(self) -> dict[str, Trackable]:
        self._settle()
        self._adopt(saving=True)
        self._check_source()
        return super()._trackable_children()

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        self._settle()
        index = self._self_index.get(name)
        if index is None or index in self._self_unsaved:
            return None
        return self._dependency(index, self._self_children[index])

    def __repr__(self) -> str:
        return f"<pytree node {self._self_value!r}>"


#: Whether JAX's pytree functions see the wrappers as dicts and lists (registered once jax is imported).
_jax_sees_wrappers = False
_JAX_LOCK = threading.Lock()


def _show_wrappers_to_jax() -> None:
    """Register the dict and list wrappers as JAX pytree nodes, flattened as dicts and lists are.

    Unregistered, a wrapper is a dict subclass JAX takes for one opaque leaf.
    Unflattening builds plain dicts and lists, so ``jax.tree_util.tree_map(lambda x: x, ckpt.params)``
    gives the restored arrays in containers of the user's own, untracked.
    """
    global _jax_sees_wrappers
    if _jax_sees_wrappers or "jax" not in sys.modules:
        return  # done, or nothing to do until jax is imported
    with _JAX_LOCK:
        if not _jax_sees_wrappers:
            _register_with_jax(sys.modules["jax"].tree_util)
            # Set only once registered: another thread must not take wrappers for registered before then.
            _jax_sees_wrappers = True


def _register_with_jax(tree_util: Any) -> None:

    def dict_keys(wrapper: _DictWrapper) -> tuple[tuple[Any, ...], bool]:
        """The keys in JAX's order for the wrapped mapping, and whether it is an ``OrderedDict``."""
        if type(wrapper._self_storage) is collections.OrderedDict:
            return tuple(wrapper), True  # JAX keeps an OrderedDict's own order
        try:
            return tuple(sorted(wrapper)), False  # as JAX orders a dict's entries
        except TypeError:
            return tuple(wrapper), False

    def flatten_dict_with_keys(wrapper: _DictWrapper) -> tuple[list[tuple[Any, Any]], Any]:
        keys, ordered = dict_keys(wrapper)
        return [(tree_util.DictKey(key), wrapper[key]) for key in keys], (keys, ordered)

    def flatten_dict(wrapper: _DictWrapper) -> tuple[list[Any], Any]:
        keys, ordered = dict_keys(wrapper)
        return [wrapper[key] for key in keys], (keys, ordered)

    def unflatten_dict(aux: Any, values: Any) -> dict[Any, Any]:
        keys, ordered = aux
        kind = collections.OrderedDict if ordered else dict
        return kind(zip(keys, values, strict=True))

    def flatten_list_with_keys(wrapper: ListWrapper) -> tuple[list[tuple[Any, Any]], None]:
        return [(tree_util.SequenceKey(index), value) for index, value in enumerate(wrapper)], None

    def flatten_list(wrapper: ListWrapper) -> tuple[list[Any], None]:
        return list(wrapper), None

    tree_util.register_pytree_with_keys(_DictWrapper, flatten_dict_with_keys, unflatten_dict, flatten_dict)
    tree_util.register_pytree_with_keys(
        ListWrapper, flatten_list_with_keys, lambda _, values: list(values), flatten_list
    )
