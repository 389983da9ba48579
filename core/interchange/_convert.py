"""The pieces :func:`trackpoint.convert` assembles: a checkpoint reader over a flat file, a tensor
selection, and the export of a checkpoint reader to a flat file."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import numpy as np

from trackpoint import _paths, _resolve
from trackpoint.errors import CheckpointKeyError, InvalidCheckpointError
from trackpoint.interchange._files import FlatFile, open_file, write_npz, write_safetensors
from trackpoint.interchange._names import graph_from_names, path_names, prune_graph
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, CheckpointReader, StorageBackend, TensorInfo

__all__ = ["FlatReader", "Progress", "Selected", "export", "open_source", "read_graph"]

#: ``progress(done_bytes, total_bytes)``, called as tensors are copied.
Progress = Callable[[int, int], None]

# Metadata written into trackpoint's exports (all values are strings, as safetensors requires).
META_KEYS: Final = "trackpoint.keys"
META_GRAPH: Final = "trackpoint.object_graph"
META_VERSION: Final = "trackpoint.format"

_GRAPH_INFO: Final = TensorInfo(np.dtype(object), ())


def _graph_array(graph: pb.TrackableObjectGraph) -> np.ndarray[Any, Any]:
    out = np.empty((), dtype=object)
    out[()] = graph.SerializeToString()
    return out


def read_graph(reader: CheckpointReader) -> pb.TrackableObjectGraph | None:
    """The object graph of ``reader``'s checkpoint, ``None`` when it has none (name-based)."""
    if not reader.has(OBJECT_GRAPH_KEY):
        return None
    raw = np.asarray(reader.read(OBJECT_GRAPH_KEY), dtype=object).reshape(-1)[0]
    graph = pb.TrackableObjectGraph()
    try:
        graph.ParseFromString(bytes(raw))
    except Exception as exc:
        raise InvalidCheckpointError(f"the object graph of {reader.prefix!r} cannot be parsed: {exc}") from exc
    return graph


class FlatReader(CheckpointReader):
    """A flat file read as a checkpoint: tensors under checkpoint keys, plus an object graph.

    The keys and graph are the ones recorded in the file's metadata when it is trackpoint's own
    export of exactly these tensors; otherwise they follow the tensor names
    (:func:`~trackpoint.interchange.graph_from_names`).
    """

    def __init__(self, path: str, fmt: str, *, separator: str = "/") -> None:
        self.prefix = path
        self._file: FlatFile = open_file(_paths.strip_file_scheme(path), fmt)
        try:
            self._graph, by_name = self._structure(separator)
        except BaseException:
            self._file.close()
            raise
        self._names = {key: name for name, key in by_name.items()}

    def _structure(self, separator: str) -> tuple[pb.TrackableObjectGraph | None, dict[str, str]]:
        names = self._file.names()
        meta = self._file.metadata()
        if META_KEYS in meta:
            try:
                recorded = json.loads(meta[META_KEYS])
                graph_bytes = base64.b64decode(meta.get(META_GRAPH, ""), validate=True)
            except (ValueError, binascii.Error) as exc:
                raise InvalidCheckpointError(
                    f"{self.prefix!r}: trackpoint's metadata in the file is damaged ({exc})"
                ) from exc
            if isinstance(recorded, dict) and set(recorded) == set(names):
                graph = None
                if graph_bytes:
                    graph = pb.TrackableObjectGraph()
                    graph.ParseFromString(graph_bytes)
                return graph, {str(n): str(k) for n, k in recorded.items()}
        graph, keys = graph_from_names(names, separator=separator)
        return graph, keys

    def keys(self) -> list[str]:
        # docstring inherited
        return sorted([*self._names, *([OBJECT_GRAPH_KEY] if self._graph is not None else [])])

    def _name(self, key: str) -> str:
        try:
            return self._names[key]
        except KeyError:
            raise CheckpointKeyError(f"{self.prefix!r} has no tensor under key {key!r}") from None

    def info(self, key: str) -> TensorInfo:
        # docstring inherited
        if key == OBJECT_GRAPH_KEY and self._graph is not None:
            return _GRAPH_INFO
        return self._file.info(self._name(key))

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        if key == OBJECT_GRAPH_KEY and self._graph is not None:
            return _graph_array(self._graph)
        return self._file.read(self._name(key), out)

    def close(self) -> None:
        # docstring inherited
        self._file.close()


def open_source(path: str, options: CheckpointOptions | None = None) -> tuple[str, str, CheckpointReader]:
    """``(prefix, format, reader)`` for a checkpoint prefix or directory, or a flat file.

    ``format`` is ``"safetensors"`` or ``"npz"`` for a file, else the name of the backend holding the
    checkpoint.
    """
    from trackpoint.interchange import file_format

    fmt = file_format(path)
    if fmt is not None:
        return path, fmt, FlatReader(path, fmt)
    store = _resolve.open_store(path, options)
    try:
        prefix, reader = _resolve.open_checkpoint(path, store)
        holder = _resolve.holder(store, prefix)
        name = holder.name if holder is not None else store.name
    except BaseException:
        store.close()
        raise
    return prefix, name, _Owning(reader, store)


class _Owning(CheckpointReader):
    """A reader that closes the backend it reads through when it is closed."""

    def __init__(self, reader: CheckpointReader, store: StorageBackend) -> None:
        self.prefix = reader.prefix
        self._reader, self._store = reader, store

    def keys(self) -> Sequence[str]:
        # docstring inherited
        return self._reader.keys()

    def info(self, key: str) -> TensorInfo:
        # docstring inherited
        return self._reader.info(key)

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        return self._reader.read(key, out)

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        # docstring inherited
        return self._reader.read_many(requests)

    def close(self) -> None:
        # docstring inherited
        try:
            self._reader.close()
        finally:
            self._store.close()


def _matches(patterns: Sequence[str], *candidates: str) -> bool:
    return any(fnmatch.fnmatchcase(c, p) for p in patterns for c in candidates)


class Selected(CheckpointReader):
    """The tensors of ``reader`` that the include/exclude patterns select, with the object graph pruned.

    A pattern (``fnmatch``: ``*`` also matches ``/``) selects a tensor when it matches the tensor's
    object-graph path name or its checkpoint key. No include pattern selects every tensor; exclude
    patterns then drop some.
    """

    def __init__(
        self,
        reader: CheckpointReader,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        separator: str = "/",
        with_names: bool = False,
    ) -> None:
        self.prefix = reader.prefix
        self._reader = reader
        graph = read_graph(reader)
        keys = [k for k in reader.keys() if k != OBJECT_GRAPH_KEY]
        # Path names are computed only when used: a checkpoint whose local names hold the separator
        # still copies between stores unfiltered.
        needed = with_names or bool(include or exclude)
        self.names = path_names(graph, keys, separator=separator) if needed else {k: k for k in keys}
        kept = [
            key
            for key, name in self.names.items()
            if (not include or _matches(include, name, key)) and not _matches(exclude, name, key)
        ]
        if (include or exclude) and not kept:
            raise CheckpointKeyError(
                f"no tensor of {reader.prefix!r} is selected by include {list(include)} and exclude {list(exclude)}; "
                "patterns match the object-graph path (model/layer/kernel) or the checkpoint key"
            )
        self._kept = set(kept)
        self.graph = graph if graph is None or not (include or exclude) else prune_graph(graph, self._kept)

    def keys(self) -> list[str]:
        # docstring inherited
        return sorted([*self._kept, *([OBJECT_GRAPH_KEY] if self.graph is not None else [])])

    def _check(self, key: str) -> None:
        if key not in self._kept and not (key == OBJECT_GRAPH_KEY and self.graph is not None):
            raise CheckpointKeyError(f"{self.prefix!r}: tensor {key!r} is not selected")

    def info(self, key: str) -> TensorInfo:
        # docstring inherited
        self._check(key)
        return self._reader.info(key)

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        self._check(key)
        if key == OBJECT_GRAPH_KEY and self.graph is not None:
            return _graph_array(self.graph)
        return self._reader.read(key, out)

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        # docstring inherited; the wrapped reader's own read_many keeps its coalesced I/O.
        for key, _ in requests:
            self._check(key)
        graph_at = [i for i, (key, _) in enumerate(requests) if key == OBJECT_GRAPH_KEY]
        rest = [r for r in requests if r[0] != OBJECT_GRAPH_KEY]
        arrays = self._reader.read_many(rest)
        for i in graph_at:
            assert self.graph is not None
            arrays.insert(i, _graph_array(self.graph))
        return arrays

    def close(self) -> None:
        # docstring inherited
        self._reader.close()


def total_bytes(reader: CheckpointReader) -> int:
    """Bytes of the numeric tensors of ``reader`` (what progress counts)."""
    return sum(reader.info(k).nbytes for k in reader.keys() if k != OBJECT_GRAPH_KEY)


def export(
    reader: Selected,
    path: str,
    fmt: str,
    *,
    names: str,
    overwrite: bool,
    progress: Progress | None = None,
) -> None:
    """Write the selected tensors of ``reader`` to the flat file ``path``.

    ``names`` is ``"paths"`` (object-graph paths) or ``"keys"`` (checkpoint keys). The keys and the
    (pruned) object graph go into the file's metadata, so importing the file gives back this checkpoint.
    """
    if names not in ("paths", "keys"):
        raise ValueError(f"names must be 'paths' or 'keys', got {names!r}")
    keys = [k for k in reader.keys() if k != OBJECT_GRAPH_KEY]
    out_names = {k: (reader.names[k] if names == "paths" else k) for k in keys}
    metadata = {
        META_VERSION: "1",
        META_KEYS: json.dumps({out_names[k]: k for k in keys}, sort_keys=True),
        META_GRAPH: "" if reader.graph is None else base64.b64encode(reader.graph.SerializeToString()).decode(),
    }
    total = total_bytes(reader)

    def tensors() -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
        done = 0
        for key in keys:
            array = reader.read(key)
            yield out_names[key], array
            done += reader.info(key).nbytes
            if progress is not None:
                progress(done, total)

    local = _paths.strip_file_scheme(path)
    if fmt == "safetensors":
        write_safetensors(local, tensors(), metadata, overwrite=overwrite)
    else:
        write_npz(local, tensors(), metadata, overwrite=overwrite)
