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
import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trackpoint import _gc, dtypes
from trackpoint._array_values import PYTHON_NUMBERS, PYTHON_NUMBERS_KEY, UNKNOWN, _NumpyValue, first_node
from trackpoint._graph_wire import NodeEncoder, encode_graph
from trackpoint._slices import TensorSlice
from trackpoint.errors import CheckpointError, TrackableError, UnsupportedDTypeError
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.python_state import PythonState
from trackpoint.trackable import (
    DEPENDENCIES_ATTRIBUTE,
    Trackable,
    TrackableReference,
    has_default_children,
    make_saveable,
    serialized_refusal,
    uses_saveables,
)
from trackpoint.variables import Variable

__all__ = [
    "OBJECT_ATTRIBUTES_NAME",
    "OPTIMIZER_SLOT_NAME",
    "GraphWalk",
    "ObjectGraphView",
    "SerializedGraph",
    "attribute_key",
    "escape_local_name",
    "has_slots",
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
    return f"{path}/{OBJECT_ATTRIBUTES_NAME}/{_attribute_suffix(attribute)}"


def _attribute_suffix(attribute: str) -> str:
    return "" if attribute == _SERIALIZE_TO_TENSORS_NAME else escape_local_name(attribute)


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

    def walk(self) -> GraphWalk:
        """Every object reachable from the root, breadth-first, with its children and first parent.

        One call of :meth:`children` per object: saving, restore checks and
        listings all start from this walk, so its cost per object is what a
        graph of many variables pays.

        An array held in several places (one object, or views provably of the
        same values: see :meth:`_NumpyValue.identity`) is one node, as a
        variable reached by several paths is: its holders each have a node
        for it, and the first one met stands for all of them (``node_ids``
        maps the others to it, and they are not among ``objects``).
        """
        root = self.root
        objects: list[Trackable] = [root]
        node_ids: dict[int, int] = {id(root): 0}
        parents: list[tuple[int, str]] = [(-1, "")]
        children_of: list[dict[str, Trackable]] = []
        children_fn = self.children
        # Per class, whether its children are the default ones (its tracked dependencies): an object of
        # such a class that never tracked anything has none, known without the two calls that would
        # build its empty dict. Most objects of a large graph are such variables.
        plain_types: dict[type, bool] = {}
        # The first node met of each array memory, and among those sharing one, of each array (see first_node).
        arrays: dict[int, _NumpyValue] = {}
        identities: dict[Hashable, _NumpyValue] = {}
        # The list grows while it is iterated: that is the breadth-first queue.
        for current, obj in enumerate(objects):
            cls = type(obj)
            plain = plain_types.get(cls)
            if plain is None:
                plain = plain_types[cls] = has_default_children(cls)
            if plain and current and DEPENDENCIES_ATTRIBUTE not in obj.__dict__:
                children_of.append({})
                continue
            children = children_fn(obj)
            children_of.append(children)
            for name, child in children.items():
                if id(child) not in node_ids:
                    if isinstance(child, _NumpyValue):
                        memory = child._memory_found
                        if memory is UNKNOWN:
                            memory = child.memory()
                        if memory is not None:
                            first = arrays.setdefault(memory, child)
                            if first is not child and (first := first_node(child, first, identities)) is not child:
                                node_ids[id(child)] = node_ids[id(first)]
                                continue
                    node_ids[id(child)] = len(objects)
                    objects.append(child)
                    parents.append((current, name))
        return GraphWalk(objects, children_of, parents, node_ids)

    def breadth_first(self) -> tuple[list[Trackable], dict[int, tuple[TrackableReference, ...]]]:
        """Objects in BFS order and, by ``id``, the first path reaching each."""
        walk = self.walk()
        refs: list[tuple[TrackableReference, ...]] = []
        for obj, (parent, name) in zip(walk.objects, walk.parents, strict=True):
            refs.append(() if parent < 0 else (*refs[parent], TrackableReference(name, obj)))
        return walk.objects, {id(obj): path for obj, path in zip(walk.objects, refs, strict=True)}


@dataclass(frozen=True, slots=True)
class GraphWalk:
    """The result of :meth:`ObjectGraphView.walk`; lists are indexed by node id (BFS position).

    ``parents[i]`` is ``(parent node id, edge name)`` of the first path reaching
    node ``i`` (``(-1, "")`` for the root); ``node_ids`` maps ``id(object)`` to
    its node id, also for a child that is not a node itself: the node of an
    array another node saves (see :meth:`ObjectGraphView.walk`).
    """

    objects: list[Trackable]
    children: list[dict[str, Trackable]]
    parents: list[tuple[int, str]]
    node_ids: dict[int, int]

    def paths(self) -> list[str]:
        """The escaped object path of every node (``""`` for the root), built along the first parents."""
        paths = [""]
        escapes: dict[str, str] = {}  # edge names repeat (``kernel``, ``bias``): escape each once
        for parent, name in self.parents[1:]:
            escaped = escapes.get(name)
            if escaped is None:
                escaped = escapes[name] = escape_local_name(name)
            base = paths[parent]
            paths.append(f"{base}/{escaped}" if base else escaped)
        return paths


@dataclass(frozen=True, slots=True)
class _Slot:
    optimizer: int
    variable: int
    name: str
    slot: Trackable


def has_slots(cls: type) -> bool:
    """Whether objects of ``cls`` hold slot variables: they have ``get_slot_names`` and ``get_slot``, as optimizers."""
    return callable(getattr(cls, "get_slot_names", None)) and callable(getattr(cls, "get_slot", None))


def _slot_variables(objects: Sequence[Trackable]) -> list[_Slot]:
    """Slot variables of every optimizer in ``objects``, in TensorFlow's order."""
    found: list[_Slot] = []
    # Whether each class is an optimizer (has both methods): most graphs have one, among 10^5 objects.
    optimizer_types: dict[type, bool] = {}
    index: dict[int, int] | None = None
    for opt_id, obj in enumerate(objects):
        cls = type(obj)
        is_optimizer = optimizer_types.get(cls)
        if is_optimizer is None:
            is_optimizer = optimizer_types[cls] = has_slots(cls)
        if not is_optimizer:
            continue
        get_names = cls.get_slot_names  # type: ignore[attr-defined]
        get_slot = cls.get_slot  # type: ignore[attr-defined]
        if index is None:
            index = {id(o): i for i, o in enumerate(objects)}
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
    """What one save writes: the serialized graph proto, its nodes and the tensors in write order."""

    data: bytes
    nodes: tuple[Trackable, ...]
    tensors: tuple[tuple[str, np.ndarray[Any, Any]], ...]
    #: Per tensor, the slice of the tensor under its key that the array holds (``None``: all of it).
    #: Several tensors may share a key when each holds a slice of it.
    slices: tuple[TensorSlice | None, ...] = ()

    @property
    def proto(self) -> pb.TrackableObjectGraph:
        """The graph as a parsed proto (parsed on each access)."""
        proto = pb.TrackableObjectGraph()
        proto.ParseFromString(self.data)
        return proto


def _has_values(has: list[bool], children: list[list[int]]) -> list[bool]:
    """Per node: holds values itself (``has``) or through any descendant."""
    out = list(has)
    # Children mostly come after their parents (breadth-first ids), so the first backward pass settles
    # nearly everything; edges to earlier nodes (cycles, shared objects) may need further passes.
    changed = True
    while changed:
        changed = False
        for node in range(len(out) - 1, -1, -1):
            if not out[node] and children[node]:
                for child in children[node]:
                    if out[child]:
                        out[node] = changed = True
                        break
    return out


@_gc.paused()
def serialize_object_graph(view: ObjectGraphView) -> SerializedGraph:
    """Build the object graph proto and collect the tensors to save.

    Tensors come in TensorFlow's order: by node (BFS nodes, then slot
    variables), with :class:`~trackpoint.PythonState` values after all others,
    then the types of the Python numbers saved, if any (a string tensor outside
    the object graph, see ``PYTHON_NUMBERS_KEY``). The object graph tensor
    itself is added by the caller, last.
    """
    walk = view.walk()
    objects = walk.objects
    slots = _slot_variables(objects)
    node_ids = walk.node_ids
    nodes: list[Trackable] = list(objects)
    paths = walk.paths()
    encoder = NodeEncoder()
    # Per node: its encoded children, attributes and slot variable references (b"" for none), and the
    # ids of its children. Most nodes of a large graph are variables without children.
    node_children: list[bytes] = []
    child_ids: list[list[int]] = []
    no_ids: list[int] = []
    encode_child = encoder.child
    for children in walk.children:
        if children:
            ids = [node_ids[id(child)] for child in children.values()]
            child_ids.append(ids)
            node_children.append(b"".join([encode_child(i, name) for name, i in zip(children, ids, strict=True)]))
        else:
            child_ids.append(no_ids)
            node_children.append(b"")
    node_slots: dict[int, list[bytes]] = {}
    for slot in slots:
        slot_id = len(nodes)
        nodes.append(slot.slot)
        paths.append(slot_variable_path(paths[slot.variable], paths[slot.optimizer], slot.name))
        node_children.append(b"")
        child_ids.append(no_ids)
        node_slots.setdefault(slot.optimizer, []).append(encoder.slot_variable(slot.variable, slot.name, slot_id))
    node_attributes: list[bytes] = [b""] * len(nodes)
    has = [False] * len(nodes)
    for optimizer in node_slots:
        has[optimizer] = True
    regular: list[tuple[str, np.ndarray[Any, Any]]] = []
    python_state: list[tuple[str, np.ndarray[Any, Any]]] = []
    # The slice each sliced array holds, by the array's identity in the lists above.
    sliced: dict[int, TensorSlice] = {}
    # Which node saved each key, and which attribute or saveable: two values under one key would make one
    # unreadable. Messages are formatted only when raised.
    owners: dict[str, tuple[int, str, str]] = {}

    def describe(node_id: int, kind: str, attr: str) -> str:
        path = paths[node_id]
        return f"{type(nodes[node_id]).__name__} at {path or '(root)'!r}, {kind} {attr!r}"

    def clash(key: str, node_id: int, kind: str, attr: str) -> TrackableError:
        return TrackableError(
            f"{describe(node_id, kind, attr)} and {describe(*owners[key])} both save a value under the checkpoint "
            f"key {key!r}"
        )

    # The key suffix ("/.ATTRIBUTES/<name>") of each attribute name (most graphs use one or two names).
    suffixes: dict[str, str] = {}
    # Per class: whether it saves through saveables (a walk of its method resolution order), is a
    # Variable (saved with its name), is Python state (saved after the others) and may hold a Python number.
    # Asked once per class.
    kinds: dict[type, tuple[bool, bool, bool, bool]] = {}
    # {checkpoint key: "int" | "float" | "bool"} of the Python numbers saved (see PYTHON_NUMBERS_KEY).
    numbers: dict[str, str] = {}
    encode_attribute = encoder.attribute
    for node_id, obj in enumerate(nodes):
        path = paths[node_id]
        cls = type(obj)
        kind = kinds.get(cls)
        if kind is None:
            kind = kinds[cls] = (
                uses_saveables(obj),
                isinstance(obj, Variable),
                isinstance(obj, PythonState),
                isinstance(obj, _NumpyValue),
            )
        saves_saveables, is_variable, is_state, is_value = kind
        full_name = obj.name if is_variable else ""  # type: ignore[attr-defined]  # a Variable (kinds)
        sink = python_state if is_state else regular
        if saves_saveables:
            # TensorFlow 1 style: one graph attribute per entry, one tensor per spec.
            encoded = []
            for attr, factory in obj._gather_saveables_for_checkpoint().items():
                key = attribute_key(path, attr)
                saveable = make_saveable(obj, attr, factory, key)
                encoded.append(encode_attribute(attr, full_name, key))
                for spec in saveable.specs:
                    if spec.name in owners:
                        raise clash(spec.name, node_id, "saveable", attr)
                    owners[spec.name] = (node_id, "saveable", attr)
                    sink.append((spec.name, saved_array(spec.tensor, describe(node_id, "saveable", attr))))
            if encoded:
                node_attributes[node_id] = b"".join(encoded)
                has[node_id] = True
            continue
        tensors = obj._serialize_to_tensors()
        # One type check per object (the save path meets 10^5 of them): None, a list or any other type
        # would otherwise save nothing or fail deep inside with an AttributeError.
        if type(tensors) is not dict and not isinstance(tensors, Mapping):
            raise serialized_refusal(obj, tensors, f" of the object at {path or '(root)'!r}")
        if not tensors:
            continue
        has[node_id] = True
        encoded = []
        for attr, value in tensors.items():
            suffix = suffixes.get(attr)
            if suffix is None:
                # A name met for the first time (a handful per save): only these are checked.
                if not isinstance(attr, str):
                    raise serialized_refusal(obj, tensors, f" of the object at {path or '(root)'!r}")
                suffix = suffixes[attr] = f"/{OBJECT_ATTRIBUTES_NAME}/{_attribute_suffix(attr)}"
            key = path + suffix
            encoded.append(encode_attribute(attr, full_name, key))
            if key in owners:
                raise clash(key, node_id, "attribute", attr)
            owners[key] = (node_id, "attribute", attr)
            if isinstance(value, np.ndarray):
                sink.append((key, value))
            elif isinstance(value, Mapping):
                # TensorFlow's form for slices of a larger tensor: {slice spec: value}.
                where = describe(node_id, "attribute", attr)
                for spec, part in value.items():
                    try:
                        array = saved_array(part, where)
                        piece = _parse_spec(spec, array, where)
                    except (TrackableError, UnsupportedDTypeError) as exc:
                        if isinstance(exc, UnsupportedDTypeError) and not isinstance(part, Mapping):
                            raise  # a slice of a dtype no checkpoint holds: that is what is wrong
                        raise _not_slices(obj, attr, exc) from exc
                    entry = (key, array)
                    if piece is not None:
                        sliced[id(entry)] = piece
                    sink.append(entry)
            else:
                sink.append((key, saved_array(value, describe(node_id, "attribute", attr))))
        node_attributes[node_id] = encoded[0] if len(encoded) == 1 else b"".join(encoded)
        if is_value and obj._python in PYTHON_NUMBERS:  # type: ignore[attr-defined]  # a _NumpyValue (kinds)
            # Its one attribute, VARIABLE_VALUE.
            numbers[key] = obj._python.__name__  # type: ignore[attr-defined]
    if numbers:
        if PYTHON_NUMBERS_KEY in owners:
            node_id, kind_name, attr = owners[PYTHON_NUMBERS_KEY]
            raise TrackableError(
                f"{describe(node_id, kind_name, attr)} saves a value under the checkpoint key {PYTHON_NUMBERS_KEY!r}, "
                "which trackpoint keeps for the types of the Python numbers a checkpoint holds: give it another name"
            )
        types = np.empty((), dtype=object)
        types[()] = json.dumps(numbers, sort_keys=True, separators=(",", ":")).encode()
        python_state.append((PYTHON_NUMBERS_KEY, types))  # last: after every value
    encode_node = encoder.node
    slot_fields = [b""] * len(nodes)
    for optimizer, references in node_slots.items():
        slot_fields[optimizer] = b"".join(references)
    data = encode_graph(
        list(map(encode_node, node_children, node_attributes, slot_fields, _has_values(has, child_ids)))
    )
    written = tuple(regular + python_state)
    slices = tuple(sliced.get(id(t)) for t in written) if sliced else ()
    return SerializedGraph(data, tuple(nodes), written, slices)


def _not_slices(obj: Trackable, attr: str, exc: CheckpointError) -> TrackableError:
    """The refusal of a dict value of ``_serialize_to_tensors`` that is no ``{slice_spec: array}`` (nested state)."""
    return TrackableError(
        f"{type(obj).__name__}._serialize_to_tensors() returned a dict for the attribute {attr!r}, which is read as "
        "TensorFlow's {slice_spec: array} form (the slices of a larger tensor this object holds), and it is not "
        f"one: {exc}. To save nested values, return one attribute per array (e.g. {{'{attr}.x': array}}), not "
        "nested dicts"
    )


def _parse_spec(spec: object, array: np.ndarray[Any, Any], where: str) -> TensorSlice | None:
    """The slice a ``{spec: value}`` entry of ``_serialize_to_tensors`` holds; ``None`` for the whole tensor."""
    if not isinstance(spec, str):
        raise TrackableError(f"{where}: slice specs must be strings, got {spec!r}")
    if not spec.strip():
        return None
    try:
        piece = TensorSlice.from_spec(spec)
    except ValueError as exc:
        raise TrackableError(f"{where}: {exc}") from None
    if piece.shape != array.shape:
        raise TrackableError(f"{where}: the slice {spec!r} has shape {piece.shape}, its value has shape {array.shape}")
    return None if piece.is_full else piece


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
    objects = view.walk().objects
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
