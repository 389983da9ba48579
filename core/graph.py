"""The object graph: traversal, naming, and the ``TrackableObjectGraph`` proto.

Saving walks the trackables breadth-first from the root (node 0), children in
dependency order, then appends optimizer slot variables; every node records its
children, its saved attributes and their checkpoint keys. Key and path rules
follow TensorFlow (``trackable_utils.py``, ``graph_view.py``, ``save_util.py``,
``util.py``), so graphs and keys are interchangeable with it. No storage code
is imported here.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trackpoint import dtypes
from trackpoint.errors import TrackableError
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.python_state import PythonState
from trackpoint.trackable import Trackable, TrackableReference, make_saveable, uses_saveables
from trackpoint.variables import Variable

__all__ = [
    "OBJECT_ATTRIBUTES_NAME",
    "OPTIMIZER_SLOT_NAME",
    "ObjectGraphView",
    "SerializedGraph",
    "attribute_key",
    "escape_local_name",
    "list_objects",
    "node_names",
    "object_path",
    "proto_node_names",
    "saved_array",
    "serialize_object_graph",
    "slot_variable_path",
]

#: Path element between an object's path and its attribute names.
OBJECT_ATTRIBUTES_NAME = ".ATTRIBUTES"
#: Path element marking a slot variable's path.
OPTIMIZER_SLOT_NAME = ".OPTIMIZER_SLOT"
# Attribute name TensorFlow maps to an empty key suffix.
_SERIALIZE_TO_TENSORS_NAME = ".TENSORS"


def escape_local_name(name: str) -> str:
    """Escape one path element: ``.`` -> ``..`` first, then ``/`` -> ``.S``."""
    return name.replace(".", "..").replace("/", ".S")


def object_path(path: Sequence[TrackableReference]) -> str:
    """The escaped object path of a chain of edges from the root (``""`` for the root)."""
    return "/".join(escape_local_name(ref.name) for ref in path)


def attribute_key(path: str, attribute: str) -> str:
    """Checkpoint key of ``attribute`` of the object at ``path``."""
    suffix = "" if attribute == _SERIALIZE_TO_TENSORS_NAME else escape_local_name(attribute)
    return f"{path}/{OBJECT_ATTRIBUTES_NAME}/{suffix}"


def slot_variable_path(variable_path: str, optimizer_path: str, slot_name: str) -> str:
    """Object path of the slot ``slot_name`` of a variable in an optimizer."""
    return f"{variable_path}/{OPTIMIZER_SLOT_NAME}/{optimizer_path}/{escape_local_name(slot_name)}"


class ObjectGraphView:
    """The graph reachable from ``root``, plus dependencies attached to the root.

    ``attached_dependencies`` are extra children of the root that the root
    object does not itself track (``Checkpoint(root=model, opt=opt)``).
    """

    def __init__(self, root: Trackable, attached_dependencies: Sequence[TrackableReference] | None = None) -> None:
        self.root = root
        self.attached_dependencies: list[TrackableReference] = list(attached_dependencies or [])

    def children(self, obj: Trackable) -> dict[str, Trackable]:
        """Named children of ``obj`` in dependency order.

        Raises
        ------
        TrackableError
            An overridden ``_trackable_children`` returned a child that is not
            a trackable, or a name that is not a string.
        """
        obj._maybe_initialize_trackable()
        children = obj._trackable_children()
        for name, child in children.items():
            if not isinstance(name, str) or not isinstance(child, Trackable):
                raise TrackableError(
                    f"{type(obj).__name__}._trackable_children() returned {name!r}: {type(child).__name__}; "
                    "children must be Trackable objects named by str"
                )
        if obj is self.root and self.attached_dependencies:
            children = dict(children)
            for ref in self.attached_dependencies:
                children[ref.name] = ref.ref
        return children

    def lookup(self, obj: Trackable, name: str, children: dict[str, Trackable] | None = None) -> Trackable | None:
        """The child ``name`` of ``obj`` (attached dependencies included for the root).

        ``children`` is :meth:`children` of ``obj`` when the caller has it;
        it is passed to ``_lookup_dependency`` as TensorFlow's
        ``cached_dependencies``, so children an object only declares through
        an overridden ``_checkpoint_dependencies``/``_trackable_children``
        are found too.
        """
        if obj is self.root:
            for ref in self.attached_dependencies:
                if ref.name == name:
                    return ref.ref
        obj._maybe_initialize_trackable()
        return obj._lookup_dependency(name, children)

    def breadth_first(self) -> tuple[list[Trackable], dict[int, tuple[TrackableReference, ...]]]:
        """Objects in BFS order and, by ``id``, the first path reaching each."""
        order: list[Trackable] = []
        paths: dict[int, tuple[TrackableReference, ...]] = {id(self.root): ()}
        queue = collections.deque([self.root])
        while queue:
            current = queue.popleft()
            order.append(current)
            for name, child in self.children(current).items():
                if id(child) not in paths:
                    paths[id(child)] = (*paths[id(current)], TrackableReference(name, child))
                    queue.append(child)
        return order, paths


@dataclass(frozen=True, slots=True)
class _Slot:
    optimizer: int
    variable: int
    name: str
    slot: Trackable


def _slot_variables(objects: Sequence[Trackable]) -> list[_Slot]:
    """Slot variables of every optimizer in ``objects``, in TensorFlow's order."""
    index = {id(o): i for i, o in enumerate(objects)}
    found: list[_Slot] = []
    for opt_id, obj in enumerate(objects):
        get_names = getattr(type(obj), "get_slot_names", None)
        get_slot = getattr(type(obj), "get_slot", None)
        if not callable(get_names) or not callable(get_slot):
            continue
        for slot_name in get_names(obj):
            for var_id, original in enumerate(objects):
                try:
                    slot = get_slot(obj, original, slot_name)
                except (KeyError, AttributeError, TypeError):
                    slot = None
                if slot is None:
                    continue
                if not isinstance(slot, Trackable):
                    raise TrackableError(f"slot {slot_name!r} of {type(obj).__name__} is not trackable")
                if slot._trackable_children():
                    raise TrackableError(
                        f"slot {slot_name!r} of {type(obj).__name__} has dependencies; only plain variables "
                        "can be saved as slot variables"
                    )
                if id(slot) in index:
                    raise TrackableError(
                        f"slot {slot_name!r} of {type(obj).__name__} is also a dependency of another object; "
                        "a slot variable cannot be re-used that way"
                    )
                found.append(_Slot(opt_id, var_id, slot_name, slot))
    return found


@dataclass(frozen=True, slots=True)
class SerializedGraph:
    """What one save writes: the graph proto, its nodes and the tensors in write order."""

    proto: pb.TrackableObjectGraph
    nodes: tuple[Trackable, ...]
    tensors: tuple[tuple[str, np.ndarray[Any, Any]], ...]


def _has_values(proto: pb.TrackableObjectGraph) -> list[bool]:
    """Per node: holds values itself or through any descendant."""
    n = len(proto.nodes)
    parents: list[list[int]] = [[] for _ in range(n)]
    for i, node in enumerate(proto.nodes):
        for child in node.children:
            parents[child.node_id].append(i)
    has = [bool(node.attributes or node.slot_variables or node.HasField("registered_saver")) for node in proto.nodes]
    queue = collections.deque(i for i in range(n) if has[i])
    while queue:
        for parent in parents[queue.popleft()]:
            if not has[parent]:
                has[parent] = True
                queue.append(parent)
    return has


def serialize_object_graph(view: ObjectGraphView) -> SerializedGraph:
    """Build the object graph proto and collect the tensors to save.

    Tensors come in TensorFlow's order: by node (BFS nodes, then slot
    variables), with :class:`~trackpoint.PythonState` values after all others.
    The object graph tensor itself is added by the caller, last.
    """
    objects, paths = view.breadth_first()
    names = {id(o): object_path(paths[id(o)]) for o in objects}
    slots = _slot_variables(objects)
    node_ids = {id(o): i for i, o in enumerate(objects)}
    nodes: list[Trackable] = list(objects)
    proto = pb.TrackableObjectGraph()
    for obj in objects:
        node = proto.nodes.add()
        for name, child in view.children(obj).items():
            node.children.add(node_id=node_ids[id(child)], local_name=name)
    for slot in slots:
        slot_id = len(nodes)
        nodes.append(slot.slot)
        node_ids[id(slot.slot)] = slot_id
        names[id(slot.slot)] = slot_variable_path(
            names[id(objects[slot.variable])], names[id(objects[slot.optimizer])], slot.name
        )
        proto.nodes.add()
        proto.nodes[slot.optimizer].slot_variables.add(
            original_variable_node_id=slot.variable, slot_name=slot.name, slot_variable_node_id=slot_id
        )
    regular: list[tuple[str, np.ndarray[Any, Any]]] = []
    python_state: list[tuple[str, np.ndarray[Any, Any]]] = []
    owners: dict[str, str] = {}

    def add(sink: list[tuple[str, np.ndarray[Any, Any]]], key: str, value: Any, where: str) -> None:
        # Two values under one key would make one of them unreadable: refuse.
        if key in owners:
            raise TrackableError(f"{where} and {owners[key]} both save a value under the checkpoint key {key!r}")
        owners[key] = where
        sink.append((key, saved_array(value, where)))

    for node_id, obj in enumerate(nodes):
        path = names[id(obj)]
        full_name = obj.name if isinstance(obj, Variable) else ""
        sink = python_state if isinstance(obj, PythonState) else regular
        readable = f"{type(obj).__name__} at {path or '(root)'!r}"
        if uses_saveables(obj):
            # TensorFlow 1 style: one graph attribute per entry, one tensor per spec.
            for attr, factory in obj._gather_saveables_for_checkpoint().items():
                key = attribute_key(path, attr)
                saveable = make_saveable(obj, attr, factory, key)
                proto.nodes[node_id].attributes.add(name=attr, full_name=full_name, checkpoint_key=key)
                for spec in saveable.specs:
                    add(sink, spec.name, spec.tensor, f"{readable}, saveable {attr!r}")
            continue
        for attr, value in obj._serialize_to_tensors().items():
            key = attribute_key(path, attr)
            proto.nodes[node_id].attributes.add(name=attr, full_name=full_name, checkpoint_key=key)
            add(sink, key, value, f"{readable}, attribute {attr!r}")
    for node, has in zip(proto.nodes, _has_values(proto), strict=True):
        node.has_checkpoint_values.value = has
    return SerializedGraph(proto, tuple(nodes), tuple(regular + python_state))


def saved_array(value: Any, where: str) -> np.ndarray[Any, Any]:
    """The array to write for a value from ``_serialize_to_tensors`` or a saveable's spec.

    Arrays are written as they are; a :class:`~trackpoint.Variable` is written
    as its current value (TensorFlow converts variables to tensors the same
    way); scalars, strings and lists are converted as a ``Variable``'s initial
    value would be (Python floats to float32, as TensorFlow does).

    Raises
    ------
    UnsupportedDTypeError
        The value cannot be stored in a checkpoint.
    """
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Variable):
        return value._value
    return dtypes.convert_initial_value(value, None, where)


def list_objects(view: ObjectGraphView) -> list[Trackable]:
    """Every object of the graph, slot variables included, in node order."""
    objects, _ = view.breadth_first()
    return objects + [s.slot for s in _slot_variables(objects)]


def node_names(view: ObjectGraphView) -> dict[int, str]:
    """Readable names by ``id``: ``(root).model.kernel``, slots as TensorFlow prints them."""
    objects, paths = view.breadth_first()
    names = {id(o): ".".join(("(root)", *(ref.name for ref in paths[id(o)]))) for o in objects}
    for slot in _slot_variables(objects):
        names[id(slot.slot)] = (
            f"{names[id(objects[slot.optimizer])]}'s state '{slot.name}' for {names[id(objects[slot.variable])]}"
        )
    return names


def proto_node_names(proto: pb.TrackableObjectGraph) -> dict[int, str]:
    """Readable names of a saved graph's nodes, by node id (as :func:`node_names`)."""
    names: dict[int, str] = {0: "(root)"}
    queue = collections.deque([0])
    while queue:
        node_id = queue.popleft()
        for child in proto.nodes[node_id].children:
            if child.node_id not in names:
                names[child.node_id] = f"{names[node_id]}.{child.local_name}"
                queue.append(child.node_id)
    for node_id, node in enumerate(proto.nodes):
        for ref in node.slot_variables:
            names[ref.slot_variable_node_id] = (
                f"{names.get(node_id, node_id)}'s state '{ref.slot_name}' for "
                f"{names.get(ref.original_variable_node_id, ref.original_variable_node_id)}"
            )
    return names
