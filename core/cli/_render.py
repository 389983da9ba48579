"""Printing for the command line: tables, the object-graph tree, sizes and progress bars."""

from __future__ import annotations

import collections
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

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


def tree(graph: pb.TrackableObjectGraph, infos: dict[str, TensorInfo]) -> list[str]:
    """The object graph as lines of a tree of named edges from ``(root)``.

    A node reached again along another edge (a shared object) is shown once and referred to
    afterwards; slot variables are listed under their optimizer, naming the variable they belong to.
    """
    seen: dict[int, str] = {0: ""}
    queue = collections.deque([0])
    while queue:  # breadth first, as TensorFlow names paths
        node_id = queue.popleft()
        for child in graph.nodes[node_id].children:
            if child.node_id not in seen and 0 <= child.node_id < len(graph.nodes):
                seen[child.node_id] = f"{seen[node_id]}/{child.local_name}".lstrip("/")
                queue.append(child.node_id)
    lines = ["(root)"]
    shown: set[int] = {0}

    def values(node: pb.TrackableObject.TrackableObject) -> list[str]:  # type: ignore[name-defined]
        out = []
        for attr in node.attributes:
            info = infos.get(attr.checkpoint_key)
            what = f"{dtype_name(info)} {shape_text(info.shape)}" if info is not None else "missing"
            out.append(what if attr.name == "VARIABLE_VALUE" else f".{attr.name}: {what}")
        return out

    def walk(node_id: int, indent: str) -> None:
        node = graph.nodes[node_id]
        entries: list[tuple[str, int | None, str]] = []
        for child in node.children:
            entries.append((child.local_name, child.node_id, ""))
        for slot in node.slot_variables:
            owner = seen.get(slot.original_variable_node_id, f"node {slot.original_variable_node_id}")
            entries.append((f"{slot.slot_name} (slot for {owner})", slot.slot_variable_node_id, "slot"))
        for i, (label, target, _) in enumerate(entries):
            last = i == len(entries) - 1
            branch, more = ("└── ", "    ") if last else ("├── ", "│   ")
            if target is None or not 0 <= target < len(graph.nodes):
                lines.append(f"{indent}{branch}{label}  -> missing node {target}")
                continue
            if target in shown:
                lines.append(f"{indent}{branch}{label}  -> {seen.get(target, f'node {target}')} (shared)")
                continue
            shown.add(target)
            vals = values(graph.nodes[target])
            lines.append(f"{indent}{branch}{label}" + (f"  {', '.join(vals)}" if vals else ""))
            walk(target, indent + more)

    walk(0, "")
    return lines


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
