"""Printing for the command line: tables, the object-graph tree, sizes and progress bars."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import numpy as np

from trackpoint._units import human_bytes
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.storage import TensorInfo

__all__ = ["dtype_name", "human_bytes", "metrics_text", "plural", "progress", "shorten", "table", "tree"]


def plural(n: int, word: str) -> str:
    """``1 tensor``, ``0 tensors``, ``2 tensors``: ``n`` and the (regular) noun that agrees with it."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def shorten(text: str, width: int = 100) -> str:
    """``text`` on one line, cut to ``width`` characters (ending in ``...`` where cut)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3].rstrip() + "..."


def metrics_text(metrics: Any, width: int = 200) -> str:
    """The metrics stored with a checkpoint on one line: their JSON (``none`` without), cut to ``width``."""
    if metrics is None:
        return "none"
    text = metrics if isinstance(metrics, str) else json.dumps(metrics, sort_keys=True)
    return shorten(text, width)


def dtype_name(info: TensorInfo) -> str:
    """``float32``, or ``string`` for trackpoint's variable-length strings."""
    return "string" if info.dtype.kind == "O" else str(info.dtype)


def shape_text(shape: Sequence[int]) -> str:
    """``[3, 2]``; ``[]`` for a scalar."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def table(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO, *, right: Sequence[int] = ()) -> None:
    """Print ``rows`` as aligned columns under ``header``; column indexes in ``right`` align right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    print(line(header), file=out)
    for row in rows:
        print(line(row), file=out)


#: How many characters of a value the tree shows on an entry's line (a long string, a long list of numbers).
VALUE_WIDTH = 60
#: How deeply the tree draws a nested value; deeper containers are summarised on one line.
VALUE_DEPTH = 32


@dataclasses.dataclass(slots=True)
class _Entry:
    """One line of the tree: a label, what is there, and the entries under it."""

    label: str
    text: str = ""
    children: list[_Entry] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class _Array:
    """Where a saved state dict holds an array: shown as the tensor's dtype and shape (``text``)."""

    text: str


def _plain(value: Any) -> bool:
    """Whether ``value`` is a plain value (a number, string, ``None``, ...) or an empty container."""
    return not isinstance(value, (dict, list, tuple, _Array)) or (not isinstance(value, _Array) and not value)


def _inline(value: Any, width: int = VALUE_WIDTH) -> str | None:
    """What the line of an entry holding ``value`` shows; ``None`` for a container drawn entry by entry.

    An array by its dtype and shape; a plain value as Python writes it (``0.001``, ``True``, ``'adam'``);
    a list or tuple of plain values on the line too (``[0, 1, 2, 3]``, ``(0.9, 0.999)``). Cut to ``width``
    characters: a list by whole items, saying how many it has.
    """
    if isinstance(value, _Array):
        return value.text
    if _plain(value):
        return shorten(repr(value), width)
    if isinstance(value, dict) or not all(_plain(v) for v in value):
        return None
    text = repr(tuple(value)) if isinstance(value, tuple) else repr(list(value))
    if len(text) <= width:
        return text
    tail = f", ... ({len(value)} items){text[-1]}"
    shown = text[0]
    for item in value:
        part = ("" if shown == text[0] else ", ") + repr(item)
        if len(shown) + len(part) + len(tail) > width:
            break
        shown += part
    return shown + tail if shown != text[0] else f"{text[0]}... ({len(value)} items){text[-1]}"


def _value_entries(value: Any, depth: int = 0) -> list[_Entry]:
    """The entries of a nested value: a dict's items by key, a list's or tuple's by ``[index]``.

    Containers nested deeper than :data:`VALUE_DEPTH` are summarised on their entry's line (``{...} (3
    items)``): a crafted value must not run the drawing out of stack.
    """
    items = value.items() if isinstance(value, dict) else ((f"[{i}]", v) for i, v in enumerate(value))
    out = []
    for key, item in items:
        line = _inline(item)
        if line is None and depth >= VALUE_DEPTH:
            line = f"{'{...}' if isinstance(item, dict) else '[...]'} ({plural(len(item), 'item')})"
        out.append(_Entry(str(key), line or "", [] if line is not None else _value_entries(item, depth + 1)))
    return out


def _state_dict_value(structure: Any, arrays: Callable[[str], str]) -> Any:
    """The state dict a saved ``.STATE_DICT`` structure describes, with an :class:`_Array` for each array.

    The structure's own format (see :mod:`trackpoint.stateful`): ``{"dict": [[key, item], ...]}``,
    ``{"list": [...]}``, ``{"tuple": [...]}``, ``{"array": name, ...}``, ``{"bytes": hex}``, or a plain JSON
    value. A mapping's ``"metadata"`` (torch's ``_metadata``: module versions) is left out.
    """
    if not isinstance(structure, dict):
        return structure
    if "array" in structure:
        return _Array(arrays(str(structure["array"])))
    if "bytes" in structure:
        return bytes.fromhex(structure["bytes"])
    if "dict" in structure:
        return {key: _state_dict_value(item, arrays) for key, item in structure["dict"]}
    if "list" in structure:
        return [_state_dict_value(item, arrays) for item in structure["list"]]
    return tuple(_state_dict_value(item, arrays) for item in structure["tuple"])


def tree(
    graph: pb.TrackableObjectGraph,
    infos: dict[str, TensorInfo],
    read: Callable[[str], Any] | None = None,
) -> list[str]:
    """The object graph as lines of a tree of named edges from ``(root)``, one entry per line.

    A node reached along several edges (a shared object) is drawn once, at the path TensorFlow names
    it by (the first breadth first, as its checkpoint keys have it), and the other edges point there;
    slot variables are listed under their optimizer, naming the variable they belong to.
    An object's attributes other than its value are listed under it (``.name``). Where ``read`` is given
    (``read(key)``: the value of a scalar string tensor), the state dict of an object saved through
    one (a torch module, optimizer or scheduler) is drawn as that state dict nests, its arrays by dtype
    and shape and its plain values as Python writes them, and a ``PythonState`` holding JSON as that JSON
    nests; long values are cut to :data:`VALUE_WIDTH` characters.
    """
    from trackpoint.errors import CheckpointError
    from trackpoint.stateful import STATE_DICT_STRUCTURE, parse_structure
    from trackpoint.trackable import VARIABLE_VALUE_KEY

    seen: dict[int, str] = {0: ""}
    # The edge (parent, name) along which each node got its path: it is drawn there, where its keys put it.
    named_by: dict[int, tuple[int, str]] = {}
    queue = collections.deque([0])
    while queue:  # breadth first, as TensorFlow names paths
        node_id = queue.popleft()
        for child in graph.nodes[node_id].children:
            if child.node_id not in seen and 0 <= child.node_id < len(graph.nodes):
                seen[child.node_id] = f"{seen[node_id]}/{child.local_name}".lstrip("/")
                named_by[child.node_id] = (node_id, child.local_name)
                queue.append(child.node_id)
    shown: set[int] = {0}

    def what(key: str) -> str:
        info = infos.get(key)
        return f"{dtype_name(info)} {shape_text(info.shape)}" if info is not None else "missing"

    def string(key: str) -> str | None:
        """The scalar string tensor ``key`` as text (``None`` when it cannot be read or is no scalar string)."""
        info = infos.get(key)
        if read is None or info is None or info.dtype.kind != "O" or tuple(info.shape) != ():
            return None
        try:
            raw = np.asarray(read(key), dtype=object)[()]
        except (CheckpointError, OSError, ValueError):
            return None  # the tree still shows the tensor, by its dtype and shape
        return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)

    def state_dict(by_name: dict[str, str]) -> list[_Entry] | None:
        """The entries of the state dict whose ``.STATE_DICT`` structure ``by_name`` holds; ``None`` if unreadable."""
        key = by_name[STATE_DICT_STRUCTURE]
        saved = string(key)
        if saved is None:
            return None
        used = {STATE_DICT_STRUCTURE}

        def array(name: str) -> str:
            used.add(name)
            return what(by_name[name]) if name in by_name else "missing"

        try:
            state = _state_dict_value(parse_structure(saved, key), array)
        except (CheckpointError, RecursionError, LookupError, TypeError, ValueError):
            return None  # damaged, or a structure no restore would take: its attributes are listed as they are
        entries = _value_entries(state) if isinstance(state, (dict, list, tuple)) else []
        return entries + [_Entry(f".{n}", what(k)) for n, k in by_name.items() if n not in used]

    def own(node: pb.TrackableObject.TrackableObject) -> tuple[str, list[_Entry]]:  # type: ignore[name-defined]
        """What the node's line says, and the entries of its attributes."""
        by_name = {attr.name: attr.checkpoint_key for attr in node.attributes}
        text = what(by_name.pop(VARIABLE_VALUE_KEY)) if VARIABLE_VALUE_KEY in by_name else ""
        if STATE_DICT_STRUCTURE in by_name:
            found = state_dict(by_name)
            if found is not None:
                return text or "state dict", found
        elif len(by_name) == 1 and not text:
            ((name, key),) = by_name.items()
            value = string(key)
            if value is not None:
                # A PythonState: its text, or the JSON it holds drawn as that JSON nests.
                try:
                    parsed = json.loads(value)
                except (ValueError, RecursionError):
                    parsed = None
                if isinstance(parsed, (dict, list)) and parsed:
                    return f".{name}: JSON", _value_entries(parsed)
                return f".{name}: {_inline(value)}", []
        return text, [_Entry(f".{name}", what(key)) for name, key in by_name.items()]

    def entries(node_id: int) -> list[_Entry]:
        node = graph.nodes[node_id]
        found: list[_Entry] = []
        # (label, target, edge): edge is the (parent, name) a child is reached by, None for a slot.
        targets: list[tuple[str, int, tuple[int, str] | None]] = [
            (child.local_name, child.node_id, (node_id, child.local_name)) for child in node.children
        ]
        for slot in node.slot_variables:
            owner = seen.get(slot.original_variable_node_id, f"node {slot.original_variable_node_id}")
            targets.append((f"{slot.slot_name} (slot for {owner})", slot.slot_variable_node_id, None))
        for label, target, edge in targets:
            if not 0 <= target < len(graph.nodes):
                found.append(_Entry(label, f"-> missing node {target}"))
            elif target in shown or named_by.get(target, edge) != edge:
                # Drawn (or to be drawn) along the edge that named it, so the arrow shows where it is.
                found.append(_Entry(label, f"-> {seen.get(target, f'node {target}')} (shared)"))
            else:
                shown.add(target)
                text, attributes = own(graph.nodes[target])
                found.append(_Entry(label, text, attributes + entries(target)))
        return found

    lines = ["(root)"]
    _, root_attributes = own(graph.nodes[0])
    _draw(root_attributes + entries(0), "", lines)
    return lines


def _draw(entries: Sequence[_Entry], indent: str, lines: list[str]) -> None:
    for i, entry in enumerate(entries):
        branch, more = ("└── ", "    ") if i == len(entries) - 1 else ("├── ", "│   ")
        lines.append(f"{indent}{branch}{entry.label}" + (f"  {entry.text}" if entry.text else ""))
        _draw(entry.children, indent + more, lines)


@contextlib.contextmanager
def progress(description: str, *, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done_bytes, total_bytes)`` callback drawing a tqdm bar on stderr, or ``None``.

    A bar is drawn only when ``enabled``, stderr is a terminal and tqdm is installed: piped output and
    logs stay clean, and tqdm stays optional.
    """
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    bar: Any = tqdm(desc=description, unit="B", unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
