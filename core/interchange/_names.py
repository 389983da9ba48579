"""Tensor names of flat files <-> checkpoint keys and object graphs.

A checkpoint names a tensor by its key (``model/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE``) and says
which object it belongs to in its object graph. A flat file (safetensors, ``.npz``) has nothing but
names, so both directions go through one naming rule, its *object-graph path*:

* a variable's value is named by the path of named edges from the root, ``model/layer/kernel``;
* another attribute of an object is ``<path>/.ATTRIBUTES/<attribute>``
  (``state/.ATTRIBUTES/py_state`` for a :class:`~trackpoint.PythonState`);
* a slot variable is ``<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot name>``, the order
  TensorFlow's keys use (``model/kernel/.OPTIMIZER_SLOT/optimizer/momentum``).

Local names are used unescaped, joined by the separator (``/`` unless chosen otherwise), so the rule
is reversible: :func:`graph_from_names` builds the object graph those names describe, and
``Checkpoint(...).restore`` then matches the tensors by path.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

from trackpoint.errors import InvalidCheckpointError, NameConflictError
from trackpoint.graph import (
    OBJECT_ATTRIBUTES_NAME,
    OPTIMIZER_SLOT_NAME,
    attribute_key,
    escape_local_name,
    slot_variable_path,
)
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.storage import OBJECT_GRAPH_KEY

__all__ = [
    "VARIABLE_VALUE",
    "graph_from_names",
    "key_at_path",
    "path_names",
    "pattern_paths",
    "prune_graph",
    "tensor_paths",
]

#: Attribute name of a variable's value.
VARIABLE_VALUE = "VARIABLE_VALUE"


def _node_paths(graph: pb.TrackableObjectGraph) -> dict[int, list[str]]:
    """Local-name path of every node: breadth first along children (TensorFlow's choice), then slots."""
    paths: dict[int, list[str]] = {0: []}
    queue = collections.deque([0])
    while queue:
        node_id = queue.popleft()
        for child in graph.nodes[node_id].children:
            if child.node_id not in paths and 0 <= child.node_id < len(graph.nodes):
                paths[child.node_id] = [*paths[node_id], child.local_name]
                queue.append(child.node_id)
    # Slot variables are reached through their optimizer, not along children.
    for node_id, node in enumerate(graph.nodes):
        if node_id not in paths:
            continue
        for ref in node.slot_variables:
            var_path = paths.get(ref.original_variable_node_id)
            if var_path is not None and ref.slot_variable_node_id not in paths:
                paths[ref.slot_variable_node_id] = [*var_path, OPTIMIZER_SLOT_NAME, *paths[node_id], ref.slot_name]
    return paths


def _key_parts(graph: pb.TrackableObjectGraph) -> dict[str, list[str]]:
    """The local names along the object-graph path of every checkpoint key ``graph`` names, ``{key: parts}``."""
    parts: dict[str, list[str]] = {}
    for node_id, path in _node_paths(graph).items():
        for attr in graph.nodes[node_id].attributes:
            here = path if attr.name == VARIABLE_VALUE else [*path, OBJECT_ATTRIBUTES_NAME, attr.name]
            parts.setdefault(attr.checkpoint_key, here)
    return parts


def _unnameable(parts: Sequence[str], separator: str) -> str | None:
    """The first local name of ``parts`` that is empty or holds ``separator`` (joined, it would not split back)."""
    return next((p for p in parts if separator in p or not p), None)


def path_names(graph: pb.TrackableObjectGraph | None, keys: Iterable[str], *, separator: str = "/") -> dict[str, str]:
    """The object-graph path name of every key (see the module docstring), ``{key: name}``.

    Keys that no attribute of ``graph`` names (all of them when ``graph`` is ``None``, a name-based
    checkpoint) keep their key as their name. The object graph's own key is left out. Only the paths of
    ``keys`` are checked: a tensor left out may have a local name no path can hold.

    Raises
    ------
    NameConflictError
        A local name on the path of one of ``keys`` is empty or holds the separator, or two keys would
        get one name; the message suggests keeping the raw keys instead.
    """
    wanted = [k for k in keys if k != OBJECT_GRAPH_KEY]
    parts = _key_parts(graph) if graph is not None else {}
    names: dict[str, str] = {}
    for key in wanted:
        here = parts.get(key)
        if here is None:
            names[key] = key
            continue
        bad = _unnameable(here, separator)
        if bad is not None:
            raise NameConflictError(
                f"tensor {key!r}: the local name {bad!r} on its object-graph path is empty or holds the separator "
                f"{separator!r}, so the path cannot name it; export with names='keys' (--keep-keys), choose "
                "another separator (--separator), or leave the tensor out with an exclude pattern (--exclude)"
            )
        names[key] = separator.join(here)
    seen: dict[str, str] = {}
    for key, name in names.items():
        other = seen.setdefault(name, key)
        if other != key:
            raise NameConflictError(
                f"tensors {other!r} and {key!r} would both be named {name!r}; export with names='keys' "
                "(--keep-keys), or leave one out with an exclude pattern"
            )
    return names


def tensor_paths(
    graph: pb.TrackableObjectGraph | None, keys: Iterable[str], *, separator: str = "/"
) -> dict[str, str | None]:
    """Each key's path name as :func:`path_names` gives it, or ``None`` where it would refuse that key.

    ``None`` marks a tensor whose path holds a local name that is empty or contains the separator, and
    every tensor of a group that would share one name: one such tensor leaves the others' paths as they are.
    """
    wanted = [k for k in keys if k != OBJECT_GRAPH_KEY]
    parts = _key_parts(graph) if graph is not None else {}
    names: dict[str, str | None] = {}
    for key in wanted:
        here = parts.get(key)
        names[key] = key if here is None else None if _unnameable(here, separator) else separator.join(here)
    holders = collections.Counter(name for name in names.values() if name is not None)
    return {key: None if name is None or holders[name] > 1 else name for key, name in names.items()}


def pattern_paths(
    graph: pb.TrackableObjectGraph | None, keys: Iterable[str], *, separator: str = "/"
) -> dict[str, str]:
    """Each key's object-graph path for include/exclude patterns to match, ``{key: path}``.

    The local names are joined whatever they hold: a pattern only selects, so a path that could not name
    a tensor in a file (``model/params/dense/kernel`` for the local name ``dense/kernel``) still matches
    as the user would write it. Keys that ``graph`` does not name are their own path.
    """
    parts = _key_parts(graph) if graph is not None else {}
    return {key: separator.join(parts[key]) if key in parts else key for key in keys if key != OBJECT_GRAPH_KEY}


def key_at_path(graph: pb.TrackableObjectGraph, path: str, *, separator: str = "/") -> str | None:
    """The checkpoint key an object-graph path names, through any of the object's paths; ``None`` if none.

    :func:`path_names` gives each tensor one path, the first breadth-first; an object reached by several
    edges (``model.alias = model.shared``) has more, and each of them names its tensors too:
    ``model/alias`` is ``model/shared``'s value, ``model/alias/.ATTRIBUTES/name`` its attribute ``name``.
    An object's path alone names its ``VARIABLE_VALUE``, or its only attribute (``PythonState``).
    """
    parts = path.split(separator)
    node = 0
    for i, part in enumerate(parts):
        if part == OBJECT_ATTRIBUTES_NAME and i == len(parts) - 2:
            wanted = parts[-1]
            break
        child = next((c.node_id for c in graph.nodes[node].children if c.local_name == part), None)
        if child is None or not 0 <= child < len(graph.nodes):
            return None
        node = child
    else:
        attributes = graph.nodes[node].attributes
        # An object's value; or its one attribute of another name (a PythonState's py_state).
        only = attributes[0].checkpoint_key if len(attributes) == 1 else None
        return next((a.checkpoint_key for a in attributes if a.name == VARIABLE_VALUE), only)
    return next((a.checkpoint_key for a in graph.nodes[node].attributes if a.name == wanted), None)


def prune_graph(graph: pb.TrackableObjectGraph, keep: Iterable[str]) -> pb.TrackableObjectGraph:
    """A copy of ``graph`` whose attributes name only the checkpoint keys in ``keep``."""
    kept = set(keep)
    out = pb.TrackableObjectGraph()
    out.CopyFrom(graph)
    for node in out.nodes:
        attrs = [a for a in node.attributes if a.checkpoint_key in kept]
        del node.attributes[:]
        node.attributes.extend(attrs)
    return out


class _Builder:
    def __init__(self) -> None:
        self.graph = pb.TrackableObjectGraph()
        self.graph.nodes.add()
        self._ids: dict[tuple[str, ...], int] = {(): 0}

    def node(self, path: Sequence[str]) -> int:
        key = tuple(path)
        found = self._ids.get(key)
        if found is not None:
            return found
        parent = self.node(path[:-1])
        node_id = len(self.graph.nodes)
        self.graph.nodes.add()
        self.graph.nodes[parent].children.add(node_id=node_id, local_name=path[-1])
        self._ids[key] = node_id
        return node_id

    def attribute(self, node_id: int, name: str, full_name: str, key: str) -> None:
        self.graph.nodes[node_id].attributes.add(name=name, full_name=full_name, checkpoint_key=key)


def graph_from_names(names: Sequence[str], *, separator: str = "/") -> tuple[pb.TrackableObjectGraph, dict[str, str]]:
    """The object graph that tensor names describe, and the checkpoint key of each name.

    Parameters
    ----------
    names
        Tensor names as in a flat file, following the naming rule of this module.
    separator
        What separates the local names of a path (``"."`` for ``layers.0.weight``).

    Returns
    -------
    tuple
        The ``TrackableObjectGraph`` and ``{name: checkpoint key}``; keys are the ones TensorFlow
        would give the same objects.

    Raises
    ------
    InvalidCheckpointError
        A name has an empty local name (``a//b``, a leading or trailing separator) or a misplaced
        ``.ATTRIBUTES`` / ``.OPTIMIZER_SLOT`` element.
    """
    builder = _Builder()
    keys: dict[str, str] = {}
    slots: list[tuple[str, list[str], list[str], str]] = []
    for name in names:
        parts = name.split(separator)
        if any(not p for p in parts):
            raise InvalidCheckpointError(
                f"tensor name {name!r} has an empty element between separators {separator!r}; rename it, or "
                "choose the separator its names use"
            )
        if OPTIMIZER_SLOT_NAME in parts:
            at = parts.index(OPTIMIZER_SLOT_NAME)
            var_path, rest = parts[:at], parts[at + 1 :]
            if not var_path or len(rest) < 2 or OPTIMIZER_SLOT_NAME in rest or OBJECT_ATTRIBUTES_NAME in parts:
                raise InvalidCheckpointError(
                    f"tensor name {name!r}: a slot variable is named <variable path>/{OPTIMIZER_SLOT_NAME}/"
                    "<optimizer path>/<slot name>"
                )
            slots.append((name, var_path, rest[:-1], rest[-1]))
            continue
        if OBJECT_ATTRIBUTES_NAME in parts:
            at = parts.index(OBJECT_ATTRIBUTES_NAME)
            if at != len(parts) - 2 or at == 0:
                raise InvalidCheckpointError(
                    f"tensor name {name!r}: an attribute is named <object path>/{OBJECT_ATTRIBUTES_NAME}/<attribute>"
                )
            path, attr = parts[:at], parts[-1]
        else:
            path, attr = parts, VARIABLE_VALUE
        key = attribute_key("/".join(escape_local_name(p) for p in path), attr)
        builder.attribute(builder.node(path), attr, name, key)
        keys[name] = key
    # Slots after every plain name, so their variables and optimizers exist as ordinary nodes.
    for name, var_path, opt_path, slot_name in slots:
        var_id, opt_id = builder.node(var_path), builder.node(opt_path)
        slot_id = len(builder.graph.nodes)
        builder.graph.nodes.add()
        builder.graph.nodes[opt_id].slot_variables.add(
            original_variable_node_id=var_id, slot_name=slot_name, slot_variable_node_id=slot_id
        )
        escaped = ["/".join(escape_local_name(p) for p in path) for path in (var_path, opt_path)]
        key = attribute_key(slot_variable_path(escaped[0], escaped[1], slot_name), VARIABLE_VALUE)
        builder.attribute(slot_id, VARIABLE_VALUE, name, key)
        keys[name] = key
    _mark_values(builder.graph)
    return builder.graph, keys


def _mark_values(graph: pb.TrackableObjectGraph) -> None:
    """Set ``has_checkpoint_values``: a node holds values itself or through a descendant."""
    parents: list[list[int]] = [[] for _ in graph.nodes]
    for i, node in enumerate(graph.nodes):
        for child in node.children:
            parents[child.node_id].append(i)
    has = [bool(node.attributes or node.slot_variables) for node in graph.nodes]
    queue = collections.deque(i for i, h in enumerate(has) if h)
    while queue:
        for parent in parents[queue.popleft()]:
            if not has[parent]:
                has[parent] = True
                queue.append(parent)
    for node, value in zip(graph.nodes, has, strict=True):
        node.has_checkpoint_values.value = value


def mapping_is_whole(mapping: Mapping[str, str], names: Iterable[str]) -> bool:
    """Whether ``mapping`` (name -> key, from a file's metadata) covers exactly ``names``."""
    return set(mapping) == set(names)
