"""Restore semantics: matching a saved object graph to live objects, and load statuses.

Mirrors ``tensorflow/python/checkpoint/restore.py`` and the status classes of
``checkpoint.py``:

* the saved graph is matched to objects from the root (node 0) along named
  edges; values are applied at once to objects that exist;
* values for children that do not exist yet are queued on their parent
  (``_deferred_dependencies``) and applied when the child is tracked;
* every restore has an increasing uid; an object remembers the uid of the
  restore that last wrote it, so the latest restore wins and an object reached
  twice (a diamond) is restored once;
* slot variables are matched through the optimizer and variable nodes, in
  whatever order those objects appear.

Each restore step first *plans*: walks the graph, checks dtypes and shapes of
everything it will write, and only then *applies*. A mismatch therefore raises
before any object changes, as do two different values for one array (one array
or variable held in two places, tied weights, also across the steps of a
restore on creation), compared while planning from values read once. (An I/O
failure while reading can still leave the values read so far in place.)

The status assertions must also find objects created after the restore, which
takes a walk of the live graph. A restore of the whole graph that matched every
live object, all of them of classes with the default children and no slots,
records that instead; while no dependency changes anywhere
(:func:`~trackpoint.trackable.dependency_changes`), the assertions know the
graph is still that one and compare counts kept while matching.

The reader is used only through the :class:`~trackpoint.storage.CheckpointReader`
interface; this module performs no I/O of its own.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import logging
import sys
import weakref
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Optional

import numpy as np

from trackpoint import _array_values, _gc, dtypes
from trackpoint._array_values import _same_values
from trackpoint._suggest import with_hints
from trackpoint.data_structures import TrackableDataStructure, restoring
from trackpoint.errors import (
    AssignmentError,
    DTypeMismatchError,
    InvalidCheckpointError,
    MatchError,
    ShapeMismatchError,
    TrackableError,
)
from trackpoint.graph import ObjectGraphView, has_slots, list_objects, node_names, proto_node_names
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.trackable import (
    DEPENDENCIES_ATTRIBUTE,
    VARIABLE_VALUE_KEY,
    SaveableObject,
    Trackable,
    TrackableReference,
    _VariableSaveable,
    dependency_changes,
    has_default_children,
    make_saveable,
    next_uid,
    uses_saveables_class,
)
from trackpoint.variables import Variable

if TYPE_CHECKING:
    from types import FrameType

    from trackpoint._array_values import _NumpyValue
    from trackpoint._slices import TensorSlice
    from trackpoint.storage import CheckpointReader, TensorInfo

__all__ = [
    "CheckpointLoadStatus",
    "CheckpointPosition",
    "InitializationOnlyStatus",
    "LoadStatus",
    "NameBasedSaverStatus",
    "RestoreCoordinator",
    "restore_by_name",
]

logger = logging.getLogger("trackpoint")


class _SlotVariableRestoration(NamedTuple):
    """A slot value waiting for its variable to be matched."""

    optimizer_id: int
    slot_variable_id: int
    slot_name: str


class _DeferredSlotVariableRestoration(NamedTuple):
    """A slot value whose variable is matched but whose optimizer is not yet."""

    original_variable: Trackable
    slot_variable_id: int
    slot_name: str


@dataclass
class _Unrestored:
    """What the end-of-life warning reports; holds no reference to the coordinator."""

    save_path: str
    proto: pb.TrackableObjectGraph
    #: The coordinator's per-node flags and matches (shared, not copied).
    holds_attributes: bytearray
    matched: list[weakref.ref[Trackable] | None]
    unused_attributes: dict[int, list[str]]
    #: How to silence the warning, worded for the call that restored (see :func:`_how_to_silence`).
    silence: str = ""
    expect_partial: bool = False


#: How to silence the end-of-life warning, by the public call that made the restore.
_SILENCE: Final = {
    "Checkpoint.restore": "call expect_partial() on the status Checkpoint.restore returned "
    "(checkpoint.restore(path).expect_partial())",
    "Checkpoint.read": "call expect_partial() on the status Checkpoint.read returned "
    "(checkpoint.read(path).expect_partial())",
    "TrackableSaver.restore": "call expect_partial() on the status the saver's restore returned "
    "(saver.restore(path).expect_partial())",
    "CheckpointManager.restore_or_initialize": "restore with "
    "checkpoint.restore(manager.latest_checkpoint).expect_partial() instead of "
    "CheckpointManager.restore_or_initialize, which returns no status to call expect_partial() on",
}


def _how_to_silence() -> str:
    """How to silence the end-of-life warning of the restore being made, worded for the public call making it.

    The outermost of the calls of :data:`_SILENCE` on this thread's stack decides (``restore_or_initialize``
    calls ``Checkpoint.restore``, which calls ``read``), so that the callers need not say who they are. A walk
    of the stack once per restore, not per value.
    """
    advice = "call expect_partial() on the status the restore returned"
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        advice = _SILENCE.get(frame.f_code.co_qualname, advice)
        frame = frame.f_back
    return advice


def _warn_unrestored(report: _Unrestored) -> None:
    """Log one warning listing checkpoint values that were never used."""
    if report.expect_partial:
        return
    matched = report.matched
    unresolved_ids = [i for i, holds in enumerate(report.holds_attributes) if holds and matched[i] is None]
    if not unresolved_ids and not report.unused_attributes:
        return
    # Names only for the message: building them walks the whole saved graph.
    names = proto_node_names(report.proto)
    unresolved = [names.get(i, str(i)) for i in unresolved_ids]
    unused = [f"{names.get(i, str(i))}: {', '.join(attrs)}" for i, attrs in sorted(report.unused_attributes.items())]
    lines = [
        f"A restore of {report.save_path!r} is being deleted with unrestored values. To silence this warning, "
        f"{report.silence}."
    ]
    lines += [f"Unresolved object in checkpoint: {name}" for name in unresolved]
    lines += [f"Unused attribute in checkpoint (object: attribute): {item}" for item in unused]
    logger.warning("\n".join(lines))


def _node_attributes(node: pb.TrackableObjectGraph.TrackableObject) -> tuple[tuple[str, str], ...]:
    """``(name, checkpoint key)`` of each attribute of a saved node."""
    attributes = node.attributes
    if not attributes:
        return ()
    if len(attributes) == 1:  # a variable; a comprehension costs a frame of its own, for each of 10^5
        attribute = attributes[0]
        return ((attribute.name, attribute.checkpoint_key),)
    return tuple([(a.name, a.checkpoint_key) for a in attributes])


class RestoreCoordinator:
    """The state of one ``restore()`` call: which saved nodes matched which objects.

    Parameters
    ----------
    object_graph_proto
        The checkpoint's object graph.
    reader
        An open reader of the checkpoint; closed when the coordinator is
        collected (deferred restores keep it alive until then).
    view
        The live object graph being restored.
    save_path
        The checkpoint path, for messages.
    """

    def __init__(
        self,
        object_graph_proto: pb.TrackableObjectGraph,
        reader: CheckpointReader,
        view: ObjectGraphView,
        save_path: str,
    ) -> None:
        self.object_graph_proto = object_graph_proto
        # The saved nodes are read from the parsed message where a restore reaches them, once each
        # (copies of the graph as Python tuples cost 0.4 s and 80 MB more than the message for 200,000 nodes).
        self.nodes = object_graph_proto.nodes
        self.reader = reader
        self.view = view
        self.save_path = save_path
        self.restore_uid = next_uid()
        count = len(self.nodes)
        # Weak references: deferred restores reference the coordinator, so strong references to objects
        # here would keep whole models alive. Plain weakref.ref rather than WeakValueDictionary, whose
        # Python-level get and set cost a microsecond or two each, for each of possibly 10^5 objects; one
        # ref per object serves both containers (CPython hands out the same ref for the same object).
        #: The object matched to each saved node, by node id.
        self.matched: list[weakref.ref[Trackable] | None] = [None] * count
        #: The same objects by ``id``, to tell whether an object is matched.
        self.matched_objects: dict[int, weakref.ref[Trackable]] = {}
        #: Objects seen by this restore that no node matched (other paths to a matched node, live objects
        #: recorded by the status assertions), by ``id``.
        self.unmatched_seen: dict[int, weakref.ref[Trackable]] = {}
        self.unused_attributes: dict[int, list[str]] = {}
        #: Objects matched to a node that holds only some of their values as children (see _Plan.partly),
        #: with the names of the others, by node id.
        self.partly_filled: dict[int, tuple[weakref.ref[Trackable], list[str]]] = {}
        self.slot_restorations: dict[int, list[_SlotVariableRestoration]] = {}
        self.deferred_slot_restorations: dict[int, list[_DeferredSlotVariableRestoration]] = {}
        # Which nodes hold attributes, and how many of them are matched: the status assertions compare
        # the counts instead of looking at every node again.
        self.holds_attributes = bytearray(count)
        self.matched_with_attributes = 0
        with _gc.paused():
            holds = self.holds_attributes
            for node_id, node in enumerate(self.nodes):
                if node.attributes:
                    holds[node_id] = 1
                slot_variables = node.slot_variables
                for ref in slot_variables if slot_variables else ():
                    self.slot_restorations.setdefault(ref.original_variable_node_id, []).append(
                        _SlotVariableRestoration(node_id, ref.slot_variable_node_id, ref.slot_name)
                    )
        self.nodes_with_attributes = holds.count(1)
        # When the whole graph was matched (see `settle`): the count of dependency changes then, and the
        # view's attached dependencies.
        self.settled_at: int | None = None
        self.settled_attached: tuple[TrackableReference, ...] = ()
        #: Whether a step of this restore was applied: any later one (a restore on creation) may attach an array
        #: written by an earlier one in another place (see :meth:`earlier_arrays`).
        self.applied = False
        #: The array nodes steps of this restore matched, by memory, and by identity those of a memory that
        #: another node of another identity has (see :meth:`earlier_node`); ``None`` until a later step meets
        #: an array.
        self.arrays: dict[int, weakref.ref[_NumpyValue]] | None = None
        self.identities: dict[Hashable, weakref.ref[_NumpyValue]] = {}
        #: The saved nodes with values each object was matched to, by ``id`` of its weak reference (the one in
        #: :attr:`matched`); ``None`` until a step meets an object an earlier step restored (see
        #: :meth:`nodes_with_values_of`), then kept up to date by each step applied.
        self.valued_nodes: dict[int, list[int]] | None = None
        self._report = _Unrestored(
            save_path, object_graph_proto, holds, self.matched, self.unused_attributes, _how_to_silence()
        )
        weakref.finalize(self, _warn_unrestored, self._report)
        weakref.finalize(self, reader.close)

    def nodes_with_values_of(self, ref: weakref.ref[Trackable]) -> list[int]:
        """The saved nodes with values matched to ``ref``'s object (an entry may be stale: check
        ``matched[node] is ref``).

        Only an object an earlier step restored met again (a restore on creation of an array attached in two
        places) asks: the map is built at the first such question, in one pass over the matched nodes, and kept
        from then on, so that a step meeting many of them is linear, and steps that meet none pay nothing.
        """
        valued = self.valued_nodes
        if valued is None:
            valued = self.valued_nodes = {}
            holds = self.holds_attributes
            for proto_id, matched in enumerate(self.matched):
                if matched is not None and holds[proto_id]:
                    valued.setdefault(id(matched), []).append(proto_id)
        return valued.get(id(ref), [])

    @property
    def expect_partial(self) -> bool:
        """Whether unused values are expected (silences the end-of-life warning)."""
        return self._report.expect_partial

    @expect_partial.setter
    def expect_partial(self, value: bool) -> None:
        self._report.expect_partial = value

    def info(self, key: str) -> TensorInfo:
        """Dtype and shape of ``key``.

        Raises
        ------
        InvalidCheckpointError
            The checkpoint holds no tensor ``key``.
        """
        try:
            return self.reader.info(key)
        except KeyError as exc:  # CheckpointKeyError, as the reader contract says
            raise self.missing(key) from exc

    def missing(self, key: str) -> InvalidCheckpointError:
        """The error for a key the object graph names and the checkpoint lacks."""
        return InvalidCheckpointError(
            f"the object graph of {self.save_path!r} refers to {key!r}, which the checkpoint does not "
            "contain; the checkpoint is damaged or was written incompletely"
        )

    def node_attributes(self, proto_id: int) -> tuple[tuple[str, str], ...]:
        """``(name, checkpoint key)`` of each attribute of saved node ``proto_id``."""
        return _node_attributes(self.nodes[proto_id])

    @property
    def object_by_proto_id(self) -> dict[int, Trackable]:
        """The matched objects still alive, by saved node id (a new dict on each access)."""
        found = {}
        for proto_id, ref in enumerate(self.matched):
            if ref is not None and (obj := ref()) is not None:
                found[proto_id] = obj
        return found

    def matched_object(self, proto_id: int) -> Trackable | None:
        """The live object matched to saved node ``proto_id``, or ``None``."""
        ref = self.matched[proto_id]
        return None if ref is None else ref()

    def settle(self, changes: int) -> None:
        """Every object of the live graph is matched, and stays so while ``changes`` is :func:`dependency_changes`.

        Only for graphs whose objects all have the default children and no
        slots: their children change only through counted dependency changes.
        """
        self.settled_at = changes
        self.settled_attached = tuple(self.view.attached_dependencies)

    def is_settled(self) -> bool:
        """Whether every object of the live graph is still matched, known without walking it (see :meth:`settle`)."""
        return self.settled_at == dependency_changes() and _same_edges(
            self.view.attached_dependencies, self.settled_attached
        )

    def added(self, obj: Trackable, changes: int) -> None:
        """``obj`` was added to the live graph, the one dependency change since ``changes``.

        The graph stays settled if it was, when ``obj`` is matched and has no
        children: ``Checkpoint.restore`` creates its ``save_counter`` after
        the restore, which restores it on creation.
        """
        cls = type(obj)
        attached = self.view.attached_dependencies
        if (
            self.settled_at == changes
            and dependency_changes() == changes + 1
            # Attached to the root (Checkpoint(root=...)), or tracked by an object of the graph.
            and (
                _same_edges(attached, self.settled_attached)
                or (bool(attached) and attached[-1].ref is obj and _same_edges(attached[:-1], self.settled_attached))
            )
            and _is_simple(cls)
            and DEPENDENCIES_ATTRIBUTE not in obj.__dict__
            and self.is_matched(obj)
        ):
            self.settle(changes + 1)

    def earlier_arrays(self) -> dict[int, weakref.ref[_NumpyValue]]:
        """The array nodes earlier steps of this restore matched, by memory (:meth:`_NumpyValue.memory`), weakly.

        A restore on creation is a step of its own for each object attached: one array attached in a second
        place (``ckpt.b = x`` after ``ckpt.a = x``) is the array an earlier step wrote, which must not take a
        second value silently (see :meth:`earlier_node`). Built on first need, from the nodes matched so far,
        so that restores whose later steps meet no array (the ``save_counter`` a ``Checkpoint`` creates after
        its restore) pay nothing; each later step then adds its own (see :meth:`keep_arrays`).
        """
        arrays = self.arrays
        if arrays is None:
            arrays = self.arrays = {}
            array_node = _array_values._NumpyValue
            firsts: dict[int, _NumpyValue] = {}
            identities: dict[Hashable, _NumpyValue] = {}
            for ref in self.matched:
                node = None if ref is None else ref()
                if isinstance(node, array_node) and (memory := node.memory()) is not None:
                    first = firsts.setdefault(memory, node)
                    if first is not node:  # views of one memory, each its own array: both kept by identity
                        _array_values.first_node(node, first, identities)
            self.keep_arrays(firsts, identities)
        return arrays

    def earlier_node(self, node: _NumpyValue, memory: int) -> _NumpyValue | None:
        """The node of ``node``'s array (its identity, :meth:`_NumpyValue.identity`) an earlier step matched, alive.

        ``memory`` is ``node``'s; see :meth:`earlier_arrays`.
        """
        ref = self.earlier_arrays().get(memory)
        identity = None if ref is None else node.identity()
        if ref is None or identity is None:
            return None
        first = ref()
        if first is not None and first is not node:
            found = first.identity()
            if found == identity:
                return first
            if found is not None:
                # Findable by identity once a node of another identity takes its memory's place (keep_arrays).
                kept = self.identities.get(found)
                if kept is None or kept() is None:
                    self.identities[found] = ref
        kept = self.identities.get(identity)
        earlier = None if kept is None else kept()
        if earlier is None or earlier is node or earlier.identity() != identity:
            return None
        return earlier

    def keep_arrays(self, arrays: Mapping[int, _NumpyValue], identities: Mapping[Hashable, _NumpyValue]) -> None:
        """Add the array nodes a step matched, by memory and identity, to :meth:`earlier_arrays` (once built)."""
        if self.arrays is None:
            return
        # At C speed: a step may hold 10^5 arrays. A node replaces an earlier one of another identity of its
        # memory, which earlier_node has kept by identity when it met the two.
        ref = weakref.ref
        self.arrays.update(zip(arrays.keys(), map(ref, arrays.values()), strict=True))
        self.identities.update(zip(identities.keys(), map(ref, identities.values()), strict=True))

    def is_matched(self, obj: Trackable) -> bool:
        """Whether some saved node is matched to ``obj``."""
        ref = self.matched_objects.get(id(obj))
        return ref is not None and ref() is obj

    def remember(self, obj: Trackable) -> None:
        """Record ``obj`` as seen by this restore (for the status assertions)."""
        ref = self.unmatched_seen.get(id(obj))
        if (ref is None or ref() is not obj) and not self.is_matched(obj):
            self.unmatched_seen[id(obj)] = weakref.ref(obj)

    def python_objects(self) -> list[Trackable]:
        """Objects seen by this restore that are still alive, the matched ones first."""
        refs = [*self.matched_objects.values(), *self.unmatched_seen.values()]
        return [o for o in (r() for r in refs) if o is not None]


def _is_simple(cls: type[Trackable]) -> bool:
    """Whether objects of ``cls`` have the default children and no slots: their children change only through
    counted dependency changes (see :meth:`RestoreCoordinator.settle`)."""
    return has_default_children(cls) and not has_slots(cls)


def _same_edges(now: Sequence[TrackableReference], then: Sequence[TrackableReference]) -> bool:
    """Whether two lists of edges name the same objects (by identity: a Variable's ``==`` is elementwise)."""
    return len(now) == len(then) and all(a.name == b.name and a.ref is b.ref for a, b in zip(now, then, strict=True))


def _has_checkpoint_values(node: pb.TrackableObjectGraph.TrackableObject) -> bool:
    """Whether a saved node or a descendant holds values (older graphs lack the field)."""
    if node.HasField("has_checkpoint_values"):
        return node.has_checkpoint_values.value
    return bool(node.children or node.attributes or node.slot_variables or node.HasField("registered_saver"))


class CheckpointPosition:
    """One node of a saved object graph within one restore."""

    __slots__ = ("coordinator", "proto_id")

    def __init__(self, coordinator: RestoreCoordinator, proto_id: int) -> None:
        self.coordinator = coordinator
        self.proto_id = proto_id

    @property
    def restore_uid(self) -> int:
        """Uid of the restore this position belongs to."""
        return self.coordinator.restore_uid

    @property
    def object_proto(self) -> pb.TrackableObjectGraph.TrackableObject:
        """The saved node."""
        return self.coordinator.nodes[self.proto_id]

    def has_checkpoint_values(self) -> bool:
        """Whether the node or a descendant holds values (older graphs lack the field)."""
        return _has_checkpoint_values(self.object_proto)

    def is_simple_variable(self) -> bool:
        """A plain variable: exactly one ``VARIABLE_VALUE`` attribute and no children."""
        node = self.object_proto
        attributes = node.attributes
        return len(attributes) == 1 and attributes[0].name == VARIABLE_VALUE_KEY and not node.children

    def tensor_info(self) -> TensorInfo:
        """Dtype and shape of a simple variable's saved value."""
        return self.coordinator.info(self.object_proto.attributes[0].checkpoint_key)

    def restore(self, trackable: Trackable) -> None:
        """Match ``trackable`` to this node and restore it and its subtree.

        Raises
        ------
        AssignmentError
            A value does not fit its object; nothing was changed.
        """
        _Plan(self.coordinator).run(self.proto_id, trackable)

    def __repr__(self) -> str:
        return f"<CheckpointPosition node={self.proto_id} of {self.coordinator.save_path!r}>"


class _Traits(NamedTuple):
    """What a restore asks of each class once, instead of of each of possibly 10^5 objects."""

    #: Restores through saveables (a walk of its method resolution order).
    saveables: bool
    #: Finds a dependency by name as :class:`Trackable` does: a get from its children.
    default_lookup: bool
    #: Has the default children and no slots (see :attr:`_Plan.settled`).
    simple: bool
    #: The class's ``_entries_missing_from(self, names)``: which of an object's entries a node of children
    #: lacks (an object holding values saved as children, see :meth:`_Plan._plan_values`), or ``None``.
    #: Looked up on the class: on an instance, a name it lacks costs an ``AutoTrackable`` a ``__getattr__``.
    missing_from: Callable[[Trackable, Sequence[str]], list[str]] | None
    #: The class's ``_restore_skips(self, names)``: which of a saved node's child names the walk does not match
    #: to the object (a namedtuple restored from a namedtuple skips the positions: matched by field name
    #: alone), or ``None`` (every name is looked up). Asked only of objects matched to a node with children.
    skips: Callable[[Trackable, Sequence[str]], Collection[str]] | None


def _traits(cls: type[Trackable]) -> _Traits:
    return _Traits(
        saveables=uses_saveables_class(cls),
        default_lookup=cls._lookup_dependency is Trackable._lookup_dependency,
        simple=_is_simple(cls),
        missing_from=getattr(cls, "_entries_missing_from", None),
        skips=getattr(cls, "_restore_skips", None),
    )


#: An array offered to read a value into, or ``None``.
_Buffer = Optional["np.ndarray[Any, Any]"]


def _mismatched(errors: list[AssignmentError]) -> AssignmentError:
    """One error for every value that does not fit its object: the first's class, each one's message."""
    if len(errors) == 1:
        return errors[0]
    kinds = {type(e) for e in errors}
    cls = type(errors[0]) if len(kinds) == 1 else AssignmentError
    shown = errors[:20]
    more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    listed = "\n  ".join(str(e) for e in shown)
    return cls(
        f"{len(errors)} values of the checkpoint do not fit their objects (nothing was restored):\n  {listed}{more}"
    )


@dataclass
class _Plan:
    """Everything one restore step will do, computed (and validated) before doing it."""

    coordinator: RestoreCoordinator
    # Parallel lists rather than a tuple per entry: a restore of 10^5 objects would otherwise hand the
    # cyclic collector 10^5 more containers to scan while the values are read.
    #: Saved node ids and the objects matched to them.
    bound_ids: list[int] = field(default_factory=list)
    bound: list[Trackable] = field(default_factory=list)
    tentative: dict[int, Trackable] = field(default_factory=dict)
    #: Objects whose values this step restores (their restore uid is set when it is applied).
    planned_objects: list[Trackable] = field(default_factory=list)
    #: Per attribute to read: its object, attribute name and checkpoint key.
    attribute_objects: list[Trackable] = field(default_factory=list)
    attribute_names: list[str] = field(default_factory=list)
    attribute_keys: list[str] = field(default_factory=list)
    #: The saved node each object's values are planned from, by the object's ``id``.
    planned: dict[int, int] = field(default_factory=dict)
    unused: list[tuple[int, str]] = field(default_factory=list)
    #: Objects holding values matched to a node of children only, and the entries of theirs it lacks.
    partly: list[tuple[int, Trackable, list[str]]] = field(default_factory=list)
    deferred: list[tuple[Trackable, str, CheckpointPosition]] = field(default_factory=list)
    #: Objects reached through another path to a node matched already (seen, not bound).
    conflicting: list[Trackable] = field(default_factory=list)
    saveables: list[SaveableObject] = field(default_factory=list)
    traits: dict[type, _Traits] = field(default_factory=dict)
    attribute_name: dict[str, str] = field(default_factory=dict)
    #: Values that do not fit their objects (dtype, shape), all reported together before anything is written.
    mismatches: list[AssignmentError] = field(default_factory=list)
    #: The saved node and the object of each mismatch, to name the object where the walk found it.
    mismatched_at: list[tuple[int, Trackable]] = field(default_factory=list)
    #: Template nodes whose values are cast into an integer dtype: read and checked to fit before the others.
    casts: list[_NumpyValue] = field(default_factory=list)
    #: The node standing for each array held in several places: the first met of each array memory, and
    #: among those sharing one, of each array (see :func:`_array_values.first_node`); one target, read once.
    arrays: dict[int, _NumpyValue] = field(default_factory=dict)
    identities: dict[Hashable, _NumpyValue] = field(default_factory=dict)
    #: The other nodes of those arrays, each with the node standing for it and the value that one holds now:
    #: they take what the restore gives it.
    aliases: list[tuple[_NumpyValue, _NumpyValue, Any]] = field(default_factory=list)
    #: Variables matched to two saved nodes (one array held in two places, saved before as two values): the
    #: variable, the node its values are planned from (or were restored from by an earlier step of the
    #: restore, see :meth:`_restored_before`), the other node. Both must hold the same values.
    twice: list[tuple[Trackable, int, int]] = field(default_factory=list)
    #: Values read while planning, by checkpoint key, to compare values the checkpoint holds for one array
    #: (see :meth:`_read_early`): :meth:`apply` takes them instead of reading them again.
    preread: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    #: Arrays matched to a saved node already matched to another array (saved from one array held in both
    #: places, restored into two): each gets the node's value too.
    copies: list[Trackable] = field(default_factory=list)
    #: Whether this step restores the whole graph from its root.
    whole_graph: bool = False
    #: Set by :meth:`walk` of the whole graph: every object of the live graph was matched, and all of them
    #: have default children and no slots, so that the graph stays this one while no dependency changes.
    settled: bool = False

    def run(self, proto_id: int, trackable: Trackable) -> None:
        """Plan from one matched pair, then apply; record a settled whole graph with the coordinator."""
        changes = dependency_changes()
        # A restore walks containers a save would refuse (changed in place), and rebuilds when it ends the
        # plain trees of JAX arrays it replaced something in (see restoring).
        with restoring():
            with _gc.paused(), _array_values.planned_casts(self.casts):
                self.walk(proto_id, trackable)
            if self.mismatches:
                raise _mismatched(self._located())
            self.planned_objects = order_restores(self.planned_objects, self.traits)
            self._check_values()
            self.apply()
        # Dependencies tracked while this step ran (a restore that creates a dependency it was asked for)
        # were not walked.
        if self.settled and dependency_changes() == changes:
            self.coordinator.settle(changes)

    def _located(self) -> list[AssignmentError]:
        """The mismatches, each message starting with the path of its object in the program, as the walk found it.

        A checkpoint key names the first path TensorFlow met to a value (Keras' kernels are saved under the
        optimizer's ``_trainable_variables``), and a variable's message its ``name``, not the object of the
        program being restored: the path through the nodes this restore matched names that one. Other objects
        (a torch module's state) name their place themselves. Only on the error path: it walks the saved graph.
        """
        if not any(isinstance(obj, Variable) for _, obj in self.mismatched_at):
            return self.mismatches
        coordinator = self.coordinator
        tentative = self.tentative
        names = _saved_paths(coordinator, lambda i: i in tentative or coordinator.matched_object(i) is not None)
        own: dict[int, str] | None = None
        for exc, (proto_id, obj) in zip(self.mismatches, self.mismatched_at, strict=True):
            if isinstance(obj, Variable) and exc.args:
                if tentative.get(proto_id, coordinator.matched_object(proto_id)) is obj:
                    where = names.get(proto_id, str(proto_id))
                else:
                    # Another holder of an array saved once (see bind): the node is named after the first.
                    if own is None:
                        own = node_names(coordinator.view)
                    where = own.get(id(obj), names.get(proto_id, str(proto_id)))
                exc.args = (f"{where}: {exc.args[0]}", *exc.args[1:])
        return self.mismatches

    def bind(self, proto_id: int, trackable: Trackable) -> bool:
        """Tentatively match a node to an object; ``False`` if already matched."""
        trackable._maybe_initialize_trackable()
        # Explicit None checks: an empty container wrapper is falsy.
        ref = self.coordinator.matched[proto_id]
        current = None if ref is None else ref()
        if current is None:
            current = self.tentative.get(proto_id)
        if current is None:
            self.tentative[proto_id] = trackable
            self.bound_ids.append(proto_id)
            self.bound.append(trackable)
            return True
        if current is not trackable:
            if isinstance(trackable, _array_values._NumpyValue) and isinstance(current, _array_values._NumpyValue):
                # Two arrays where the checkpoint holds one (saved from one array held in both places): each
                # gets its value, as a restore into the two separately would give them.
                self.copies.append(trackable)
                self._plan_values(
                    proto_id, self.coordinator.nodes[proto_id], trackable, self._traits_of(type(trackable))
                )
                return False
            self.conflicting.append(trackable)
            logger.warning(
                "Inconsistent references when loading %r: node %d of the saved graph is already matched to %r, "
                "so %r reached through another path is not restored from it.",
                self.coordinator.save_path,
                proto_id,
                current,
                trackable,
            )
        return False

    def walk(self, proto_id: int, trackable: Trackable) -> None:
        """Breadth-first over saved nodes and live objects together, from one matched pair."""
        coordinator = self.coordinator
        view = coordinator.view
        nodes = coordinator.nodes
        slots = coordinator.slot_restorations
        traits_of = self.traits
        class_traits = self._traits_of
        bind = self.bind
        plan_values = self._plan_values
        arrays = self.arrays
        array_node, unknown = _array_values._NumpyValue, _array_values.UNKNOWN
        # A later step of the restore (a restore on creation) may meet an array an earlier step matched.
        later = coordinator.applied
        earlier: dict[int, Any] | None = None
        if later and isinstance(trackable, array_node):
            trackable = self._earlier_node(trackable, proto_id)
        # Whether every live object is matched so far (see `settled`), with the children of each matched
        # object, checked at the end against the matched objects.
        settled = self.whole_graph
        parents: list[dict[str, Trackable]] = []
        queue = collections.deque([(proto_id, trackable)] if bind(proto_id, trackable) else [])
        push = queue.append
        while queue:
            proto_id, trackable = queue.popleft()
            node = nodes[proto_id]
            cls = type(trackable)
            traits = traits_of.get(cls) or class_traits(cls)
            plan_values(proto_id, node, trackable, traits)
            if slots and proto_id in slots:
                self._check_slots(proto_id, trackable)
            settled = settled and traits.simple
            edges: Sequence[pb.TrackableObjectGraph.TrackableObject.ObjectReference] = node.children
            if not edges:
                if settled and (trackable is view.root or DEPENDENCIES_ATTRIBUTE in trackable.__dict__):
                    settled = False  # it may have live children the checkpoint does not know
                continue
            children = view.children(trackable)
            if settled:
                parents.append(children)
            default_lookup = traits.default_lookup
            if traits.skips is not None:
                # Names left unmatched are not deferred either: the node they lead to is reached under another
                # name, or reported as unresolved by the status assertions.
                skipped = traits.skips(trackable, [edge.local_name for edge in edges])
                if skipped:
                    edges = [edge for edge in edges if edge.local_name not in skipped]
            for edge in edges:
                name = edge.local_name
                # A default lookup is a get from the children at hand (and the root's attached ones are
                # among those); anything else asks the object, as TensorFlow does.
                local = children.get(name) if default_lookup else view.lookup(trackable, name, children)
                if local is None:
                    position = CheckpointPosition(coordinator, edge.node_id)
                    if position.has_checkpoint_values():
                        self.deferred.append((trackable, name, position))
                else:
                    child_id = edge.node_id
                    if isinstance(local, array_node):
                        # Inline, the common case (an array met once): the walk meets 10^5 of them.
                        memory = local._memory_found
                        if memory is unknown:
                            memory = local.memory()
                        if memory is not None and (first := arrays.setdefault(memory, local)) is not local:
                            local = self._one_node(local, first, child_id)
                        elif later and memory is not None:
                            if earlier is None:
                                earlier = coordinator.earlier_arrays()
                            if memory in earlier:
                                local = self._earlier_node(local, child_id)
                    if bind(child_id, local):
                        push((child_id, local))
        if settled:
            matched = set(map(id, self.bound))
            settled = all(matched.issuperset(map(id, children.values())) for children in parents)
        self.settled = settled

    def _traits_of(self, cls: type[Trackable]) -> _Traits:
        traits = self.traits.get(cls)
        if traits is None:
            traits = self.traits[cls] = _traits(cls)
        return traits

    def _plan_values(
        self, proto_id: int, node: pb.TrackableObjectGraph.TrackableObject, trackable: Trackable, traits: _Traits
    ) -> None:
        planned = self.planned
        first = planned.get(id(trackable))
        if first is not None:
            # Planned through another path already. From another saved node with values: one variable (an
            # array held in two places, say) of which the checkpoint holds two values, checked to be equal.
            if first != proto_id and node.attributes and isinstance(trackable, Variable):
                self.twice.append((trackable, first, proto_id))
            return
        # bind() initialized the trackable, so its uid attribute exists.
        if self.coordinator.restore_uid <= trackable._self_update_uid:
            # A newer restore wrote it, and wins. Or this one did, in an earlier step: from another saved node
            # with values, that is one variable (one array) the checkpoint holds two values for.
            if (
                trackable._self_update_uid == self.coordinator.restore_uid
                and node.attributes
                and isinstance(trackable, Variable)
            ):
                self._restored_before(proto_id, trackable)
            return
        planned[id(trackable)] = proto_id
        if traits.saveables:
            self._plan_saveables(proto_id, node, trackable)
            return
        self.planned_objects.append(trackable)
        attributes = node.attributes
        if not attributes:
            # An object that only groups others (most nodes with children), or one holding values saved as
            # children (a state dict given as a dict, `model=net.state_dict()`), restored entry by entry: it
            # says which of its entries the node lacks, which would otherwise keep their values unnoticed.
            missing_from = traits.missing_from
            if missing_from is not None and node.children:
                missing = missing_from(trackable, [child.local_name for child in node.children])
                if missing:
                    self.partly.append((proto_id, trackable, missing))
            return
        names = trackable._checkpoint_attribute_names()
        infos: dict[str, TensorInfo] = {}
        keys: dict[str, str] = {}
        info = self.coordinator.reader.info
        canonical = self.attribute_name
        for attribute in attributes:
            # One string per attribute name, kept until the values are read: the message hands out a new
            # one on each access (200,000 copies of "VARIABLE_VALUE" are 12 MB).
            name = attribute.name
            name = canonical.setdefault(name, name)
            if name not in names:
                self.unused.append((proto_id, name))
                continue
            key = keys[name] = attribute.checkpoint_key
            try:
                infos[name] = info(key)
            except KeyError as exc:  # CheckpointKeyError, as the reader contract says
                raise self.coordinator.missing(key) from exc
            self.attribute_objects.append(trackable)
            self.attribute_names.append(name)
            self.attribute_keys.append(key)
        if keys:
            try:
                trackable._check_restore_tensors(infos, keys)
            except (DTypeMismatchError, ShapeMismatchError) as exc:
                self.mismatches.append(exc)  # the others are checked too, to be reported at once
                self.mismatched_at.append((proto_id, trackable))

    def _one_node(self, node: _NumpyValue, first: _NumpyValue, proto_id: int) -> _NumpyValue:
        """The node standing for ``node``'s array in this restore, where ``node`` meets saved node ``proto_id``.

        An array held in several places is one target, as it is one node when saved (see
        :meth:`ObjectGraphView.walk`): the first of its nodes met, read into once, so that two reads never
        write into its memory at once; every holder gets what the restore gives it (see
        :meth:`_NumpyValue._take_restored`). A value a restore replaces rather than writes into (a JAX
        array, a read-only array) is no one target for two saved values: each holder gets its own.

        ``first`` is the first node met of the array's memory (see :meth:`_NumpyValue.memory`).
        """
        first = _array_values.first_node(node, first, self.identities)
        if first is node:
            return node
        ref = self.coordinator.matched[proto_id]
        same = (ref is not None and ref() is first) or self.tentative.get(proto_id) is first
        if not same and not node._writes_in_place():
            return node
        self.aliases.append((node, first, first.current()))
        return first

    def _earlier_node(self, node: _NumpyValue, proto_id: int) -> _NumpyValue:
        """The node of ``node``'s array where an earlier step of this restore matched it, else ``node``.

        A restore on creation is a step of its own for each object attached: an array attached in a second
        place (``ckpt.b = x`` after ``ckpt.a = x`` was restored) is the one target it is within a step (see
        :meth:`_one_node`), so that the node it meets here is compared with the one it got its value from
        (see :meth:`_restored_before`) instead of writing a second value into it.
        """
        memory = node.memory()
        if memory is None:
            return node
        self.arrays.setdefault(memory, node)
        earlier = self.coordinator.earlier_node(node, memory)
        if earlier is None or not node._writes_in_place():
            return node  # a value a restore replaces (a JAX array) gets a new one in each place, nothing is written
        self.arrays[memory] = earlier
        found = self._one_node(node, earlier, proto_id)
        if found is not node:
            # Matched, for the status: the walks of the live graph may meet this holder first.
            self.copies.append(node)
        return found

    def _restored_before(self, proto_id: int, trackable: Variable) -> None:
        """``trackable`` met at saved node ``proto_id``, already restored by this restore: from which node?

        An earlier step (a restore on creation) restored it from another saved node with values: one
        variable, or one array attached in two places, that the checkpoint holds two values for, compared
        before anything is written (see :meth:`_check_twice`) as within one step. Only on this path, rare: the
        node is found through :meth:`RestoreCoordinator.nodes_with_values_of`, not kept for every object.
        """
        coordinator = self.coordinator
        ref = coordinator.matched_objects.get(id(trackable))
        if ref is None or ref() is not trackable:
            return
        matched = coordinator.matched
        # The reference of a node whose object died, matched again, is dropped and its id may be reused: only
        # the nodes still matched to this object count. The first of them, as the values are compared to it.
        firsts = [
            first for first in coordinator.nodes_with_values_of(ref) if first != proto_id and matched[first] is ref
        ]
        if firsts:
            self.twice.append((trackable, min(firsts), proto_id))

    def _check_values(self) -> None:
        """Refuse values of the checkpoint that contradict each other, before anything is written.

        Each value compared is read once, now: :meth:`apply` takes it instead of reading it again (see
        :meth:`_read_early`). Besides the variables matched to two saved nodes (see :meth:`_check_twice`), a
        class may check values of its own objects: a static ``_check_planned_values(objects, read)``, asked
        once per class met with the objects planned, where ``read(keys)`` gives the values of checkpoint keys
        (``trackpoint.stateful``: a torch module's tied weights, which the checkpoint holds under two keys).

        Raises
        ------
        TrackableError
            The checkpoint holds two different values for one array; nothing was written.
        """
        if self.twice:
            self._check_twice()
        for check in dict.fromkeys(getattr(cls, "_check_planned_values", None) for cls in self.traits):
            if check is not None:
                check(self.planned_objects, self._read_early)

    def _read_early(self, keys: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
        """The values of checkpoint ``keys``, read while planning (each once) and kept for :meth:`apply`."""
        preread = self.preread
        todo = [key for key in dict.fromkeys(keys) if key not in preread]
        if todo:
            values = read_requests(self.coordinator.reader, [(key, None) for key in todo], {})
            preread.update(zip(todo, values, strict=True))
        return {key: preread[key] for key in keys}

    def _check_twice(self) -> None:
        """Refuse a variable that two saved nodes holding different values are matched to; nothing is written.

        One array held in two places was saved as two values by older versions (and a tree of them may have
        been edited in one place since). Equal values restore as one; different ones would leave the
        variable holding whichever came last, so the restore stops before writing anything. The same holds
        for an array (or variable) attached in a second place after a restore on creation gave it the value
        of the first: this step writes nothing, and it keeps that value.

        Raises
        ------
        TrackableError
            Two saved nodes matched to one variable hold different values.
        """
        coordinator = self.coordinator
        differ: list[tuple[Trackable, int, int]] = []
        compared: list[tuple[Trackable, int, int, list[tuple[str, str]]]] = []
        for trackable, first, other in self.twice:
            keys = [dict(coordinator.node_attributes(first)), dict(coordinator.node_attributes(other))]
            if keys[0].keys() != keys[1].keys():
                differ.append((trackable, first, other))
                continue
            pairs = [(keys[0][name], keys[1][name]) for name in keys[0]]
            infos = [(coordinator.info(a), coordinator.info(b)) for a, b in pairs]
            if any(a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape) for a, b in infos):
                differ.append((trackable, first, other))
            else:
                compared.append((trackable, first, other, pairs))
        values = self._read_early([key for *_, pairs in compared for pair in pairs for key in pair])
        differ += [
            (trackable, first, other)
            for trackable, first, other, pairs in compared
            if not all(_same_values(values[a], values[b]) for a, b in pairs)
        ]
        if not differ:
            return
        names = proto_node_names(coordinator.object_graph_proto)
        lines = "\n".join(
            f"  {trackable!r}: {names.get(first, str(first))} and {names.get(other, str(other))}"
            for trackable, first, other in differ
        )
        if any(coordinator.matched[first] is not None for _, first, _ in differ):
            done = (
                "Nothing was written by this part of the restore (the restore on creation of what was attached "
                "last); the array keeps the value it got from the first path."
            )
        else:
            done = "Nothing was restored."
        raise TrackableError(
            f"cannot restore {coordinator.save_path!r}: the checkpoint holds two different values for one array "
            "(or variable) held here in two places, reached by the two paths named below; a restore would give "
            f"it one of them and drop the other. {done} Hold two separate arrays there (a copy in one "
            "place, np.array(value)) to restore both values, or restore a checkpoint saved from one array "
            f"held in both places:\n{lines}"
        )

    def _plan_saveables(
        self, proto_id: int, node: pb.TrackableObjectGraph.TrackableObject, trackable: Trackable
    ) -> None:
        """Plan a restore through ``_gather_saveables_for_checkpoint`` (TensorFlow 1 style).

        Each matching attribute's factory is called with the attribute's
        saved checkpoint key; the values of its specs are read back and passed
        to ``saveable.restore``. Spec dtypes (and a Variable's shape) are
        checked first.
        """
        factories = trackable._gather_saveables_for_checkpoint()
        for name, key in _node_attributes(node):
            if name not in factories:
                self.unused.append((proto_id, name))
                continue
            saveable = make_saveable(trackable, name, factories[name], key)
            for spec in saveable.specs:
                info = self.coordinator.info(spec.name)
                if isinstance(saveable, _VariableSaveable):
                    saveable.variable._check_restore_tensors(
                        {VARIABLE_VALUE_KEY: info}, {VARIABLE_VALUE_KEY: spec.name}
                    )
                elif spec.dtype is not None and info.dtype != spec.dtype:
                    raise DTypeMismatchError(
                        f"cannot restore {spec.name!r} into saveable {name!r} of {type(trackable).__name__}: "
                        f"the checkpoint holds dtype {info.dtype}, the spec has dtype {spec.dtype}"
                    )
            self.saveables.append(saveable)
        self.planned_objects.append(trackable)

    def _check_slots(self, proto_id: int, trackable: Trackable) -> None:
        """Slot values must have their variable's dtype and shape."""
        if not isinstance(trackable, Variable):
            return
        nodes = self.coordinator.nodes
        for slot in self.coordinator.slot_restorations.get(proto_id, []):
            attributes = nodes[slot.slot_variable_id].attributes
            if len(attributes) != 1:
                continue
            key = attributes[0].checkpoint_key
            info = self.coordinator.info(key)
            if info.dtype != trackable.dtype:
                raise DTypeMismatchError(
                    f"cannot restore slot {slot.slot_name!r} ({key!r}) for Variable {trackable.name!r}: the "
                    f"checkpoint holds dtype {info.dtype}, the variable has dtype {trackable.dtype}"
                )
            sliced = trackable.save_slice_info
            if tuple(info.shape) != (trackable.shape if sliced is None else sliced.full_shape):
                raise ShapeMismatchError(
                    f"cannot restore slot {slot.slot_name!r} ({key!r}) for Variable {trackable.name!r}: the "
                    f"checkpoint holds shape {tuple(info.shape)}, the variable has shape {trackable.shape}"
                )

    def apply(self) -> None:
        """Commit the plan: bind nodes, read values, queue deferred restores, then slots."""
        coordinator = self.coordinator
        with _gc.paused():
            matched = coordinator.matched
            matched_objects = coordinator.matched_objects
            holds = coordinator.holds_attributes
            ref = weakref.ref
            with_attributes = 0
            for proto_id, trackable in zip(self.bound_ids, self.bound, strict=True):
                if matched[proto_id] is None:  # else a node whose object died, matched again
                    with_attributes += holds[proto_id]
                matched[proto_id] = matched_objects[id(trackable)] = ref(trackable)
            coordinator.matched_with_attributes += with_attributes
            valued = coordinator.valued_nodes
            if valued is not None:
                # Kept up to date once built (see RestoreCoordinator.nodes_with_values_of).
                for proto_id in self.bound_ids:
                    if holds[proto_id]:
                        valued.setdefault(id(matched[proto_id]), []).append(proto_id)
            for trackable in self.conflicting:
                coordinator.remember(trackable)
            for proto_id, name in self.unused:
                attrs = coordinator.unused_attributes.setdefault(proto_id, [])
                if name not in attrs:
                    attrs.append(name)
            for proto_id, trackable, missing in self.partly:
                coordinator.partly_filled[proto_id] = (ref(trackable), missing)
            for trackable in self.copies:
                matched_objects[id(trackable)] = ref(trackable)
            # For later steps, once one has met an array (see RestoreCoordinator.earlier_arrays).
            if self.arrays and coordinator.arrays is not None:
                coordinator.keep_arrays(self.arrays, self.identities)
            coordinator.applied = True
            requests, buffers, parts = self._requests()
        # Outside the pause: a read may wait on a network or a hung store for long.
        results = self._read(requests, parts)
        with _gc.paused():
            self._apply_values(results, buffers)
            for alias, node, then in self.aliases:
                alias._take_restored(node, then)
        for parent, name, position in self.deferred:
            parent._deferred_dependencies.setdefault(name, []).append(position)
        for parent, name, _ in self.deferred:
            if parent._lookup_dependency(name) is None:
                parent._dependency_requested(name)
        if coordinator.slot_restorations or coordinator.deferred_slot_restorations:
            for proto_id, trackable in zip(self.bound_ids, self.bound, strict=True):
                _queue_slot_variables(CheckpointPosition(coordinator, proto_id), trackable)

    def _requests(
        self,
    ) -> tuple[list[tuple[str, _Buffer]], list[_Buffer], dict[int, TensorSlice]]:
        """What to read: planned attributes (into their buffers where offered), then saveable specs.

        The second result is the buffer offered for each planned attribute (or ``None``); the third maps
        the position of each request for a slice of its tensor (an object holding part of a partitioned
        value) to that slice.
        """
        requests: list[tuple[str, _Buffer]] = []
        buffers: list[_Buffer] = []
        parts: dict[int, TensorSlice] = {}
        for trackable, name, key in zip(self.attribute_objects, self.attribute_names, self.attribute_keys, strict=True):
            buffer = trackable._restore_buffer(name)
            part = trackable._restore_slice(name)
            if part is not None:
                parts[len(requests)] = part
            requests.append((key, buffer))
            buffers.append(buffer)
        requests.extend((spec.name, None) for saveable in self.saveables for spec in saveable.specs)
        return requests, buffers, parts

    def _read(self, requests: list[tuple[str, _Buffer]], parts: dict[int, TensorSlice]) -> list[np.ndarray[Any, Any]]:
        """Read ``requests``; the values cast into a template's integer dtype first, checked to fit.

        Those are checked before any other value is read (some are read in place, into their objects), so a
        value that does not fit its template leaves every object as it was. A value read while planning (see
        :meth:`_read_early`) is taken as read, once, not read again.
        """
        reader = self.coordinator.reader
        preread = self.preread
        if not self.casts and not preread:
            return read_requests(reader, requests, parts)
        results: list[np.ndarray[Any, Any] | None] = [None] * len(requests)

        def read(positions: list[int]) -> None:
            positions = [i for i in positions if results[i] is None]
            found = {j: parts[i] for j, i in enumerate(positions) if i in parts}
            for i, value in zip(positions, read_requests(reader, [requests[i] for i in positions], found), strict=True):
                results[i] = value

        if preread:
            for i, (key, _) in enumerate(requests):
                # Whole values only (a slice is read as one); each once: another request of the key reads it.
                if i not in parts and (value := preread.pop(key, None)) is not None:
                    results[i] = value
        if self.casts:
            casts = {id(node): node for node in self.casts}
            first = [i for i, trackable in enumerate(self.attribute_objects) if id(trackable) in casts]
            read(first)
            errors: list[AssignmentError] = []
            for i in first:
                value = results[i]
                assert value is not None
                try:
                    casts[id(self.attribute_objects[i])]._check_fits(value)
                except DTypeMismatchError as exc:
                    errors.append(exc)  # the others are checked too, to be reported at once
            if errors:
                raise _mismatched(errors)
        read(list(range(len(requests))))
        return results  # type: ignore[return-value]  # every position was read

    def _apply_values(self, results: list[np.ndarray[Any, Any]], buffers: list[_Buffer]) -> None:
        spec_start = len(buffers)
        collected: dict[int, dict[str, np.ndarray[Any, Any]]] = {}
        objects, names = self.attribute_objects, self.attribute_names
        for i in range(spec_start):
            result = results[i]
            # The list lets go of each value: an object that replaces what it holds (a JAX array) copies
            # the value elsewhere, and the read copy is freed as soon as that object is done with it.
            results[i] = None  # type: ignore[call-overload]
            buffer = buffers[i]
            if buffer is not None and result is buffer:
                continue  # read in place
            collected.setdefault(id(objects[i]), {})[names[i]] = result
        uid = self.coordinator.restore_uid
        for trackable in self.planned_objects:
            tensors = collected.pop(id(trackable), None)
            if tensors:
                trackable._restore_from_tensors(tensors)
            # Set directly: the _update_uid property costs two calls, for each of possibly 10^5 objects.
            object.__setattr__(trackable, "_self_update_uid", uid)
        position = spec_start
        for saveable in self.saveables:
            count = len(saveable.specs)
            saveable.restore(list(results[position : position + count]), None)
            position += count


#: Added to an exception raised while values were being read into their destinations: the checks that can
#: run before reading (graph, keys, dtypes, shapes) leave every object as it was, but in-place reads cannot be
#: undone without a second copy of the model, which restores avoid.
PARTIAL_RESTORE_NOTE: Final = (
    "The restore stopped while reading values. Arrays restored in place (variables, writeable numpy arrays) may "
    "already hold some of the checkpoint's values, and the one being read may hold partly written or corrupted "
    "bytes; everything else is as it was. Restore again, from this or another checkpoint, before using them."
)


def order_restores(objects: list[Trackable], classes: Iterable[type] | None = None) -> list[Trackable]:
    """The objects a restore planned, in the order to apply their values; refuses what cannot be restored.

    A class may order how its planned objects are applied, or refuse the plan before anything is written:
    a static ``_order_restores(objects) -> objects`` (torch modules filled on 'meta' before the optimizers
    whose state torch places by their parameters, see ``trackpoint.stateful``). Each distinct ordering is
    asked once. Every restore that applies values to objects (``Checkpoint.restore``, ``FrozenSaver.restore``)
    goes through this, after checking every value and before writing any.

    Parameters
    ----------
    objects
        The objects planned, in the order of the restore's walk.
    classes
        The classes of the objects the restore met (those of ``objects`` at least); by default those of
        ``objects``.

    Returns
    -------
    list
        The same objects, in the order to apply them.

    Raises
    ------
    AssignmentError
        A class refused the plan (see its ``_order_restores``); nothing has been written.
    """
    met = dict.fromkeys(map(type, objects)) if classes is None else classes
    for order in dict.fromkeys(getattr(cls, "_order_restores", None) for cls in met):
        if order is not None:
            objects = order(objects)
    return objects


@contextlib.contextmanager
def partial_restore_noted(in_place: Callable[[], bool]) -> Iterator[None]:
    """Reads into their destinations: an exception leaving the block gets :data:`PARTIAL_RESTORE_NOTE` (once).

    ``in_place`` is asked only on failure: whether some value was being read
    into an object's own array (else nothing can have changed).
    """
    try:
        yield
    except BaseException as exc:
        if in_place() and PARTIAL_RESTORE_NOTE not in getattr(exc, "__notes__", ()):
            exc.add_note(PARTIAL_RESTORE_NOTE)
        raise


def read_requests(
    reader: CheckpointReader,
    requests: list[tuple[str, np.ndarray[Any, Any] | None]],
    parts: dict[int, TensorSlice],
) -> list[np.ndarray[Any, Any]]:
    """Read ``requests``, whole tensors in one batch and the slices in ``parts`` by :meth:`read_slice`.

    Shared by object-based restores and the name-based :class:`~trackpoint.Saver`; not exported.
    """
    with partial_restore_noted(lambda: any(out is not None for _, out in requests)):
        if not parts:
            return reader.read_many(requests) if requests else []
        results: list[np.ndarray[Any, Any] | None] = [None] * len(requests)
        whole = [i for i in range(len(requests)) if i not in parts]
        if whole:
            for i, value in zip(whole, reader.read_many([requests[i] for i in whole]), strict=True):
                results[i] = value

        def read(i: int) -> None:
            key, out = requests[i]
            part = parts[i]
            results[i] = reader.read_slice(key, part.offset, part.shape, out)

        if len(parts) == 1:
            read(next(iter(parts)))
        else:
            # Each slice is its own set of ranged reads: on an object store the round trips overlap.
            with ThreadPoolExecutor(max_workers=min(8, len(parts)), thread_name_prefix="trackpoint-read") as ex:
                for f in [ex.submit(read, i) for i in parts]:
                    f.result()
        return [r for r in results if r is not None]


def _queue_slot_variables(position: CheckpointPosition, trackable: Trackable) -> None:
    """Create or restore slot variables once their optimizer and variable are both matched."""
    coordinator = position.coordinator
    # ``trackable`` is an optimizer whose slot values waited for it.
    for waiting in coordinator.deferred_slot_restorations.pop(position.proto_id, []):
        _create_slot(trackable, waiting.original_variable, waiting.slot_variable_id, waiting.slot_name, coordinator)
    # ``trackable`` is a variable with slots in some optimizer.
    for slot in coordinator.slot_restorations.pop(position.proto_id, []):
        optimizer = coordinator.matched_object(slot.optimizer_id)
        if optimizer is None:
            coordinator.deferred_slot_restorations.setdefault(slot.optimizer_id, []).append(
                _DeferredSlotVariableRestoration(trackable, slot.slot_variable_id, slot.slot_name)
            )
        else:
            _create_slot(optimizer, trackable, slot.slot_variable_id, slot.slot_name, coordinator)


def _create_slot(
    optimizer: Trackable, variable: Trackable, slot_id: int, slot_name: str, coordinator: RestoreCoordinator
) -> None:
    hook: Callable[..., Any] | None = getattr(optimizer, "_create_or_restore_slot_variable", None)
    if hook is not None:
        hook(slot_variable_position=CheckpointPosition(coordinator, slot_id), slot_name=slot_name, variable=variable)


def restore_root(coordinator: RestoreCoordinator) -> None:
    """Restore the whole graph of ``coordinator.view`` from node 0.

    When it raises, the caller gets the error and never a status to call ``expect_partial()`` on, so
    the end-of-life warning about unused values, which would only repeat the failure, wrongly, is off.
    """
    try:
        _Plan(coordinator, whole_graph=True).run(0, coordinator.view.root)
    except BaseException:
        coordinator.expect_partial = True
        raise


# --------------------------------------------------------------------- statuses
class LoadStatus(abc.ABC):
    """What every load status offers; returned by ``Checkpoint.restore``/``read``."""

    @abc.abstractmethod
    def assert_consumed(self) -> LoadStatus:
        """Raise :class:`MatchError` unless every value and every object matched."""

    @abc.abstractmethod
    def assert_existing_objects_matched(self) -> LoadStatus:
        """Raise :class:`MatchError` if an existing object got no value."""

    @abc.abstractmethod
    def assert_nontrivial_match(self) -> LoadStatus:
        """Raise :class:`MatchError` if nothing but the root matched."""

    def run_restore_ops(self, session: Any = None) -> None:  # noqa: B027 - a no-op that subclasses may keep
        """Kept for TensorFlow compatibility: values are applied eagerly, nothing to run.

        ``session`` (TensorFlow 1's ``sess``) is accepted and ignored, as eager TensorFlow ignores it.
        """

    def initialize_or_restore(self, session: Any = None) -> None:  # noqa: B027 - a no-op that subclasses may keep
        """Kept for TensorFlow compatibility: variables are initialized or restored eagerly.

        ``session`` (TensorFlow 1's ``sess``) is accepted and ignored, as eager TensorFlow ignores it.
        """

    def expect_partial(self) -> LoadStatus:
        """Silence the warning about unused checkpoint values; returns ``self``."""
        return self


#: At most this many objects or values are listed in one message; the others are counted.
_SHOWN: Final = 20


def _bounded(lines: Iterable[str], count: int, what: str) -> list[str]:
    """The first :data:`_SHOWN` of ``count`` lines, then how many more ``what`` there are."""
    shown = [line for line, _ in zip(lines, range(_SHOWN), strict=False)]
    return shown + ([f"  ... and {count - len(shown)} more {what}"] if count > len(shown) else [])


def _describe(obj: object) -> str:
    """An object for a message, without its values (a Variable's repr holds every one), in 100 characters."""
    if isinstance(obj, Variable) and type(obj).__repr__ is Variable.__repr__:  # not a subclass's own repr
        return obj._describe()
    text = repr(obj)
    return text if len(text) <= 100 else f"{text[:97]}..."


def _describe_objects(objects: list[Trackable], names: dict[int, str]) -> str:
    lines = (f"  {names.get(id(o), '(not reachable from the root)')}: {_describe(o)}" for o in objects)
    return "\n".join(_bounded(lines, len(objects), "objects"))


def _saved_paths(coordinator: RestoreCoordinator, taken: Callable[[int], bool]) -> dict[int, str]:
    """Readable paths of the saved nodes (as :func:`proto_node_names`), by where the program's objects lead to them.

    The nodes ``taken`` are named along the nodes taken from the root, as the restore's walk reached them; the
    others from the nearest of those, the deepest first, so that a node saved under several paths is named
    under the objects the program holds (Keras saves a layer's kernel under the optimizer's
    ``_trainable_variables`` and under the model: restoring a model alone, it is the model's path). The dict
    lists the nodes nearest to the program's objects first. For messages only: it walks the whole saved graph.
    """
    nodes = coordinator.nodes
    names = {0: "(root)"}
    depth = {0: 0}

    def spread(queue: list[int], into: Callable[[int], bool]) -> None:
        """Name the nodes met breadth-first from those of ``queue`` (it grows) that ``into`` accepts."""
        for node_id in queue:
            for child in nodes[node_id].children:
                child_id = child.node_id
                if child_id not in names and into(child_id):
                    names[child_id] = f"{names[node_id]}.{child.local_name}"
                    depth[child_id] = depth[node_id] + 1
                    queue.append(child_id)

    reached = [0]
    spread(reached, taken)
    # The others from the nearest node named, the deepest first (a stable sort keeps the order they were met).
    spread(sorted(reached, key=lambda i: -depth[i]), lambda _: True)
    for node_id, name in proto_node_names(coordinator.object_graph_proto).items():
        names.setdefault(node_id, name)  # slot variables, reached through no edge
    return names


def _unresolved_ids(coordinator: RestoreCoordinator) -> list[int]:
    """The saved nodes holding values that no live object took."""
    matched = coordinator.matched
    return [
        i
        for i, holds in enumerate(coordinator.holds_attributes)
        if holds and ((ref := matched[i]) is None or ref() is None)
    ]


def _saved_value(coordinator: RestoreCoordinator, proto_id: int) -> str:
    """What saved node ``proto_id`` holds, for a message: a variable's shape, dtype and key, else its keys."""
    attributes = coordinator.node_attributes(proto_id)
    if len(attributes) == 1 and attributes[0][0] == VARIABLE_VALUE_KEY:
        key = attributes[0][1]
        try:
            info = coordinator.reader.info(key)
        except KeyError:  # CheckpointKeyError: a damaged checkpoint, which a restore of it reports
            return repr(key)
        return f"shape={tuple(info.shape)} dtype={dtypes._name(info.dtype)} ({key!r})"
    return ", ".join(repr(key) for _, key in attributes)


def _unmatched_report(coordinator: RestoreCoordinator, view: ObjectGraphView, unmatched: list[Trackable]) -> str:
    """The objects no value was found for, where their names part from the checkpoint's, and its values left.

    Written for a program that mirrors another's model (a Keras model ported to trackpoint objects): a
    misspelled attribute leaves every object under it unmatched, and the names the checkpoint has at the
    nearest object that did match (among them the one meant) say what to rename.
    """
    with restoring():  # as in _record_live_objects
        names = node_names(view)
        walk = view.walk()
    lines = [_describe_objects(unmatched, names)]
    proto_of = {
        id(obj): i for i, ref in enumerate(coordinator.matched) if ref is not None and (obj := ref()) is not None
    }
    nodes = coordinator.nodes
    parted: list[str] = []
    seen: set[tuple[int, str]] = set()
    for obj in unmatched:
        node = walk.node_ids.get(id(obj), 0)
        edge = ""
        # Up to the nearest object the restore matched: ``edge`` is the name under it that the checkpoint lacks.
        while node > 0 and id(walk.objects[node]) not in proto_of:
            node, edge = walk.parents[node]
        proto_id = proto_of.get(id(walk.objects[node]))
        if proto_id is None or not edge or (proto_id, edge) in seen:
            continue
        seen.add((proto_id, edge))
        children = nodes[proto_id].children
        if any(child.local_name == edge for child in children):
            continue  # the checkpoint has the name: another object took its value (logged when it did)
        # Each node once, under its first name: a namedtuple's element is saved under its field name and its
        # position, and a namedtuple restoring takes field names only (see _TupleValue._restore_skips).
        first_names: dict[int, str] = {}
        for child in children:
            first_names.setdefault(child.node_id, child.local_name)
        left = [
            name
            for node_id, name in first_names.items()
            if coordinator.matched_object(node_id) is None and _has_checkpoint_values(nodes[node_id])
        ]
        there = (
            f"; it has {', '.join(map(repr, left[:10]))}{', ...' if len(left) > 10 else ''} there, which no object took"
            if left
            else "; nothing it holds there is left for it"
        )
        where = names.get(id(walk.objects[node]), "(root)")
        parted.append(f"  at {where}: the checkpoint has no {with_hints([edge], left, quote=True)}{there}")
        if edge == "save_counter" and node == 0:
            parted += _save_counter_hint(coordinator, walk.objects[0])
    if parted:
        lines += ["Where the program's names part from the checkpoint's:", *parted]
    unresolved = _unresolved_ids(coordinator)
    if unresolved:
        saved = _saved_paths(coordinator, lambda i: coordinator.matched_object(i) is not None)
        nearest = {node_id: n for n, node_id in enumerate(saved)}
        unresolved.sort(key=nearest.__getitem__)
        lines.append(f"The checkpoint's values that no object took ({len(unresolved)}):")
        values = (f"  {saved.get(i, str(i))}: {_saved_value(coordinator, i)}" for i in unresolved)
        lines += _bounded(values, len(unresolved), "values")
    return "\n".join(lines)


_NOT_A_CHECKPOINT: Final = object()


def _save_counter_hint(coordinator: RestoreCoordinator, root: Trackable) -> list[str]:
    """Why a ``Checkpoint``'s ``save_counter`` found nothing in the checkpoint: who made the counter, what to do."""
    # Only a Checkpoint (or a subclass) has the record, as a class default; asked for by name because
    # trackpoint.checkpoint imports this module, and a pure module imports no such layer above it.
    made_for = getattr(type(root), "_self_counter_made_for", _NOT_A_CHECKPOINT)
    if made_for is _NOT_A_CHECKPOINT:
        return []
    made_for = root.__dict__.get("_self_counter_made_for")
    written = "a checkpoint written with write(), TensorFlow's write() or Keras' save_weights() holds no save_counter"
    if made_for is not None and made_for() is coordinator:
        # The one mismatch no program change causes: this restore() made the counter, as TensorFlow's does.
        return [f"    ({written}, which restore() creates: read it with read(), which creates none)"]
    return [
        f"    ({written}; this save_counter is the program's own, from an earlier save() (or restore(), or "
        "ckpt.save_counter), and keeps its value; call status.expect_partial() instead of "
        "assert_consumed() to accept a checkpoint without one)"
    ]


def _has_attributes(obj: Trackable) -> bool:
    return bool(obj._checkpoint_attribute_names())


class CheckpointLoadStatus(LoadStatus):
    """The status of an object-based restore (``tf.train.Checkpoint`` semantics).

    Parameters
    ----------
    coordinator
        The restore's bookkeeping.
    view
        The live graph that was restored.
    """

    def __init__(self, coordinator: RestoreCoordinator, view: ObjectGraphView) -> None:
        self._checkpoint = coordinator
        self._view = view
        # The view may be the only path to the root; keep it alive with the status.
        self._root = view.root

    def _record_live_objects(self) -> None:
        """Record every unmatched object of the live graph (empty containers aside) as seen by this restore.

        Objects created since the restore are among them: that is why the assertions walk the graph, unless
        it is known to be the one the restore matched whole (no dependency changed since).
        """
        checkpoint = self._checkpoint
        if checkpoint.is_settled():
            return
        matched = checkpoint.matched_objects
        seen = checkpoint.unmatched_seen
        # Per class, whether it is a container wrapper: an isinstance check against that abstract class
        # costs about a microsecond, for each of possibly 10^5 objects.
        structures: dict[type, bool] = {}
        # A look at the graph, no save: a tree of JAX arrays changed in place since it was given is listed.
        with restoring():
            for obj in list_objects(self._view):
                ref = matched.get(id(obj))
                if ref is not None and ref() is obj:
                    continue
                cls = type(obj)
                structure = structures.get(cls)
                if structure is None:
                    structure = structures[cls] = issubclass(cls, TrackableDataStructure)
                if structure and not obj._trackable_children():
                    continue  # empty containers have nothing to match
                ref = seen.get(id(obj))
                if ref is None or ref() is not obj:
                    seen[id(obj)] = weakref.ref(obj)

    def _unmatched_python_objects(self) -> list[Trackable]:
        self._record_live_objects()
        checkpoint = self._checkpoint
        is_matched = checkpoint.is_matched
        return [
            o
            for r in checkpoint.unmatched_seen.values()
            if (o := r()) is not None and not is_matched(o) and _has_attributes(o)
        ]

    def _stale_and_unresolved(self) -> tuple[list[tuple[int, Trackable]], int]:
        """Matched objects with values older than this restore; how many saved nodes with attributes lack one."""
        checkpoint = self._checkpoint
        uid = checkpoint.restore_uid
        holds = checkpoint.holds_attributes
        stale = []
        died = 0
        # Matched objects were initialized by the restore, so their uid attribute exists.
        for i, ref in enumerate(checkpoint.matched):
            if ref is not None:
                obj = ref()
                if obj is None:
                    died += holds[i]
                elif obj._self_update_uid < uid:
                    stale.append((i, obj))
        return stale, checkpoint.nodes_with_attributes - checkpoint.matched_with_attributes + died

    @_gc.paused()
    def assert_consumed(self) -> CheckpointLoadStatus:
        """Every value in the checkpoint found an object, and every object a value.

        Raises
        ------
        MatchError
            Listing the unmatched objects, the checkpoint nodes (with their keys)
            that found no object, pending slot variables, or unused attributes.
        """
        unresolved_count = self._assert_existing_objects_matched()
        checkpoint = self._checkpoint
        pending = [s.slot_variable_id for slots in checkpoint.slot_restorations.values() for s in slots] + [
            d.slot_variable_id for slots in checkpoint.deferred_slot_restorations.values() for d in slots
        ]
        if not unresolved_count and not pending and not checkpoint.unused_attributes:
            return self
        # Node names only for messages: building them walks the whole saved graph.
        names = proto_node_names(checkpoint.object_graph_proto)
        if unresolved_count:
            unresolved = _unresolved_ids(checkpoint)
            # Named where the program's objects lead to them (see _saved_paths), as the program would hold them.
            saved = _saved_paths(checkpoint, lambda i: checkpoint.matched_object(i) is not None)
            found = (
                f"  Unresolved object in checkpoint {saved.get(i, str(i))}: "
                f"{', '.join(key for _, key in checkpoint.node_attributes(i))}"
                for i in unresolved
            )
            lines = _bounded(found, len(unresolved), "objects")
            raise MatchError(
                f"Unresolved objects in checkpoint {checkpoint.save_path!r} (values with no matching Python object; "
                "create the objects, or use expect_partial()/assert_existing_objects_matched() for a partial "
                "restore):\n" + "\n".join(lines)
            )
        if pending:
            lines = [f"  {names.get(i, str(i))}" for i in pending]
            raise MatchError(f"Unresolved slot restorations in {checkpoint.save_path!r}:\n" + "\n".join(lines))
        lines = [
            f"  {names.get(i, str(i))} ({_describe(checkpoint.matched_object(i))}): {', '.join(attrs)}"
            for i, attrs in sorted(checkpoint.unused_attributes.items())
        ]
        raise MatchError(
            "Unused attributes in these objects (the attributes exist in the checkpoint but were not restored; "
            f"checkpoint {checkpoint.save_path!r}):\n" + "\n".join(lines)
        )

    @_gc.paused()
    def assert_existing_objects_matched(self) -> CheckpointLoadStatus:
        """Every existing object with state got a value from this checkpoint (or a later one).

        Raises
        ------
        MatchError
            Listing each unmatched object by path.
        """
        self._assert_existing_objects_matched()
        return self

    def _assert_existing_objects_matched(self) -> int:
        """:meth:`assert_existing_objects_matched`; returns how many saved nodes with attributes lack an object."""
        checkpoint = self._checkpoint
        stale, unresolved = self._stale_and_unresolved()
        if stale:
            proto_names = proto_node_names(checkpoint.object_graph_proto)
            lines = [f"  {proto_names.get(i, str(i))}: {_describe(obj)}" for i, obj in stale]
            raise MatchError(
                f"Objects matched to {checkpoint.save_path!r} but not assigned a value from checkpoint:\n"
                + "\n".join(lines)
            )
        partly = [
            (i, obj, missing) for i, (ref, missing) in checkpoint.partly_filled.items() if (obj := ref()) is not None
        ]
        if partly:
            proto_names = proto_node_names(checkpoint.object_graph_proto)
            lines = [f"  {proto_names.get(i, str(i))}: {', '.join(missing)}" for i, _, missing in partly]
            raise MatchError(
                f"Objects matched to {checkpoint.save_path!r} that got only some of their values: the checkpoint "
                "holds their state dict's entries one by one (it was saved from the state dict given as a dict, "
                "such as model=net.state_dict()) and lacks these, which kept the values they had:\n" + "\n".join(lines)
            )
        unmatched = self._unmatched_python_objects()
        if unmatched:
            raise MatchError(
                f"Found {len(unmatched)} Python objects that were not bound to checkpointed values, likely due to "
                f"changes in the Python program (checkpoint {checkpoint.save_path!r}):\n"
                + _unmatched_report(checkpoint, self._view, unmatched)
            )
        return unresolved

    @_gc.paused()
    def assert_nontrivial_match(self) -> CheckpointLoadStatus:
        """Something besides the root object matched.

        Raises
        ------
        MatchError
            Only the root matched; lists the objects without values.
        """
        self._record_live_objects()
        if len(self._checkpoint.object_by_proto_id) <= 1:
            unmatched = self._unmatched_python_objects()
            if unmatched:
                raise MatchError(
                    f"Nothing except the root object matched a checkpointed value in {self._checkpoint.save_path!r}. "
                    "Typically this means that the checkpoint does not match the Python program. The following "
                    "objects have no matching checkpointed value:\n"
                    + _unmatched_report(self._checkpoint, self._view, unmatched)
                )
            raise MatchError(
                f"Nothing to load from {self._checkpoint.save_path!r}. No dependencies have been added to "
                f"{self._view.root!r} yet."
            )
        return self

    def expect_partial(self) -> CheckpointLoadStatus:
        """Silence the warning about unused checkpoint values; returns ``self``."""
        self._checkpoint.expect_partial = True
        return self

    def _added(self, obj: Trackable, changes: int) -> None:
        """``obj`` joined the restored graph (see :meth:`RestoreCoordinator.added`)."""
        self._checkpoint.added(obj, changes)


_NO_CHECKPOINT = "No checkpoint specified (save_path=None); nothing is being restored."


class InitializationOnlyStatus(LoadStatus):
    """Returned by ``restore(None)``: nothing is restored, every assertion fails."""

    def __init__(self, view: ObjectGraphView, restore_uid: int) -> None:
        self._view = view
        self._root = view.root
        self._restore_uid = restore_uid

    def assert_consumed(self) -> InitializationOnlyStatus:
        """Always fails: :class:`MatchError`."""
        raise MatchError(_NO_CHECKPOINT)

    def assert_existing_objects_matched(self) -> InitializationOnlyStatus:
        """Always fails: :class:`MatchError`."""
        raise MatchError(_NO_CHECKPOINT)

    def assert_nontrivial_match(self) -> InitializationOnlyStatus:
        """Always fails: :class:`MatchError`."""
        raise MatchError(_NO_CHECKPOINT)

    def run_restore_ops(self, session: Any = None) -> None:
        """Always fails, as in TensorFlow: :class:`MatchError` (an ``AssertionError``); there is nothing to restore.

        Use :meth:`initialize_or_restore`, which works with or without a checkpoint.
        """
        raise MatchError(
            "No checkpoint specified, so no restore ops are available (save_path=None to Saver.restore). "
            "Call initialize_or_restore() instead, which also works without a checkpoint."
        )


_NAME_BASED_ADVICE: Final = (
    "Restoring a name-based tf.train.Saver checkpoint using the object-based restore API. This mode uses global "
    "names to match variables, and so is somewhat fragile. Prefer re-encoding training checkpoints in the "
    "object-based format: run save() on the object-based saver (the same one this message is coming from) and "
    "use that checkpoint in the future."
)
_name_based_advice_given = False


class NameBasedSaverStatus(LoadStatus):
    """Status of a restore from a checkpoint without an object graph (matching by ``Variable.name``).

    Objects that exist at restore time are restored at once; variables
    attached to them later are restored when they are tracked. The first one
    created in a process logs TensorFlow's advice to re-encode the checkpoint
    with ``save()`` (a warning on the ``trackpoint`` logger).
    """

    def __init__(self, restore: _NameBasedRestore, view: ObjectGraphView) -> None:
        global _name_based_advice_given
        if not _name_based_advice_given:
            # Once per process, as TensorFlow's deprecation notice on this class.
            _name_based_advice_given = True
            logger.warning(_NAME_BASED_ADVICE)
        self._restore = restore
        self._view = view
        self._root = view.root
        self._optionally_restored: list[Trackable] = []

    def add_to_optionally_restored(self, obj: Trackable) -> None:
        """Exclude ``obj`` from the assertions (e.g. a ``save_counter`` the checkpoint lacks)."""
        self._optionally_restored.append(obj)

    def _optional(self, obj: Trackable) -> bool:
        return any(obj is o for o in self._optionally_restored)

    def assert_consumed(self) -> NameBasedSaverStatus:
        """Every object's variables were found by name.

        Raises
        ------
        MatchError
            Listing the objects and names that were not found.
        """
        with restoring():  # as CheckpointLoadStatus._record_live_objects
            names = node_names(self._view)
            objects = list_objects(self._view)
        missing = [
            f"  {names.get(id(obj), repr(obj))}: {', '.join(attrs)}"
            for obj, attrs in ((ref(), attrs) for ref, attrs in self._restore.unused_attributes)
            if obj is not None and not self._optional(obj)
        ]
        if missing:
            raise MatchError(
                f"Some objects had attributes which were not restored from the name-based checkpoint "
                f"{self._restore.save_path!r}:\n" + "\n".join(missing)
            )
        stale = [obj for obj in objects if obj._update_uid < self._restore.restore_uid and not self._optional(obj)]
        if stale:
            raise MatchError(
                f"Objects not restored from the name-based checkpoint {self._restore.save_path!r} (not reachable "
                "from the restored objects when they were created):\n" + _describe_objects(stale, names)
            )
        return self

    def assert_existing_objects_matched(self) -> NameBasedSaverStatus:
        """Same as :meth:`assert_consumed` (a name-based checkpoint has no object information)."""
        return self.assert_consumed()

    def assert_nontrivial_match(self) -> NameBasedSaverStatus:
        """Same as :meth:`assert_consumed` (a name-based checkpoint has no object information)."""
        return self.assert_consumed()


class _NameBasedRestore:
    """A restore from a checkpoint without an object graph: values are matched by ``Variable.name``.

    It stays attached to every object it visited, so that dependencies added
    to them later are restored too; the reader stays open while it is.
    """

    def __init__(self, reader: CheckpointReader, save_path: str) -> None:
        self.reader = reader
        self.save_path = save_path
        self.restore_uid = next_uid()
        self.keys = frozenset(reader.keys())
        self.unused_attributes: list[tuple[weakref.ref[Trackable], list[str]]] = []
        weakref.finalize(self, reader.close)

    def is_simple_variable(self) -> bool:
        # Restore-on-create needs an object graph; by-name values are assigned after creation.
        return False

    def tensor_info(self) -> TensorInfo:
        raise InvalidCheckpointError(f"{self.save_path!r} has no object graph: values are matched by name")

    def restore(self, trackable: Trackable) -> None:
        """Restore every not-yet-restored variable under ``trackable`` whose name is a key.

        All dtypes and shapes are checked before any variable is written.
        """
        with restoring():  # as a restore by the object graph (see _Plan.run)
            self._restore(trackable)

    def _restore(self, trackable: Trackable) -> None:
        todo: list[tuple[Variable, str]] = []
        touched: list[Trackable] = []
        for obj in list_objects(ObjectGraphView(trackable)):
            obj._maybe_initialize_trackable()
            restores = obj._name_based_restores
            if not any(r is self for r in restores):
                restores.append(self)
            if obj._update_uid >= self.restore_uid:
                continue
            touched.append(obj)
            if isinstance(obj, Variable):
                # A slice of a partitioned variable is saved under the whole tensor's name (TensorFlow 1).
                sliced = obj.save_slice_info
                name = sliced.full_name if sliced is not None and sliced.full_name else obj.name
                if name in self.keys:
                    info = self.reader.info(name)
                    obj._check_restore_tensors({VARIABLE_VALUE_KEY: info}, {VARIABLE_VALUE_KEY: name})
                    todo.append((obj, name))
                else:
                    self.unused_attributes.append((weakref.ref(obj), [name]))
            elif _has_attributes(obj):
                self.unused_attributes.append((weakref.ref(obj), list(obj._checkpoint_attribute_names())))
        parts = {
            i: part for i, (var, _) in enumerate(todo) if (part := var._restore_slice(VARIABLE_VALUE_KEY)) is not None
        }
        results = read_requests(
            self.reader, [(key, var._restore_buffer(VARIABLE_VALUE_KEY)) for var, key in todo], parts
        )
        for (var, _), result in zip(todo, results, strict=True):
            if result is not var._restore_buffer(VARIABLE_VALUE_KEY):
                var._restore_from_tensors({VARIABLE_VALUE_KEY: result})
        for obj in touched:
            obj._update_uid = self.restore_uid


def restore_by_name(reader: CheckpointReader, view: ObjectGraphView, save_path: str) -> NameBasedSaverStatus:
    """Restore the graph of ``view`` from a checkpoint without an object graph, by variable name.

    Variables attached later to any object of the graph are restored when
    they are tracked.
    """
    by_name = _NameBasedRestore(reader, save_path)
    by_name.restore(view.root)
    for ref in view.attached_dependencies:
        by_name.restore(ref.ref)
    return NameBasedSaverStatus(by_name, view)
