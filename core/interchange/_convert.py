"""The pieces :func:`trackpoint.convert` assembles: a checkpoint reader over a flat file, a tensor
selection, and the export of a checkpoint reader to a flat file."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import numpy as np

from trackpoint import _paths, _resolve
from trackpoint._crc32c import crc32c
from trackpoint.errors import CheckpointKeyError, DataLossError, InvalidArgumentError, InvalidCheckpointError
from trackpoint.interchange._files import FlatFile, open_file, write_npz, write_safetensors
from trackpoint.interchange._names import graph_from_names, path_names, pattern_paths, prune_graph
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.storage import (
    OBJECT_GRAPH_KEY,
    CheckpointOptions,
    CheckpointReader,
    StorageBackend,
    TensorInfo,
    _ForwardingReader,
)

__all__ = ["FlatReader", "Progress", "Selected", "check_separator", "export", "open_source", "read_graph"]

#: ``progress(done_bytes, total_bytes)``, called as tensors are copied.
Progress = Callable[[int, int], None]

# Metadata written into trackpoint's exports (all values are strings, as safetensors requires).
META_KEYS: Final = "trackpoint.keys"
META_GRAPH: Final = "trackpoint.object_graph"
META_VERSION: Final = "trackpoint.format"
#: In safetensors exports, which have no checksums of their own: a JSON object, ``{"tensors": {name: CRC-32C
#: of the tensor's bytes as stored, little-endian in C order}, "metadata": {entry: CRC-32C of the UTF-8 text
#: of each other trackpoint.* entry}}``. ``.npz`` exports need none: zip keeps a CRC-32 of every member.
META_CRC: Final = "trackpoint.crc32c"
#: In safetensors exports, which hold no strings: the string tensors (a torch module's ``.STATE_DICT``, a
#: manager's metrics), a JSON object ``{key: {"shape": [...], "values": [base64 of each element, C order]}}``.
META_STRINGS: Final = "trackpoint.strings"

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


def _string_entry(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """A string tensor as :data:`META_STRINGS` records it."""
    values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1).tolist()]
    return {"shape": list(array.shape), "values": [base64.b64encode(v).decode("ascii") for v in values]}


def stored_crc32c(array: np.ndarray[Any, Any]) -> int:
    """CRC-32C of ``array``'s bytes as a flat file stores them: in C order, little-endian (as in :data:`META_CRC`)."""
    data = array if array.flags.c_contiguous else array.copy(order="C")
    if data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and sys.byteorder == "big"):
        data = data.byteswap()  # same dtype, swapped bytes: those the file holds
    return int(crc32c(data.reshape(-1).view(np.uint8)))


def _text_crc32c(text: str) -> int:
    return int(crc32c(text.encode("utf-8")))


def check_separator(separator: object, where: str) -> str:
    """``separator`` when it can split tensor names into local names: a non-empty string.

    Raises
    ------
    InvalidArgumentError
        ``separator`` is empty or not a string (``where`` says what it was given for).
    """
    if not isinstance(separator, str) or not separator:
        raise InvalidArgumentError(
            f"{where}: separator must be a non-empty string that separates the local names in tensor names "
            f"('/', '.'), got {separator!r}"
        )
    return separator


class FlatReader(CheckpointReader):
    """A flat file read as a checkpoint: tensors under checkpoint keys, plus an object graph.

    The keys and graph are the ones recorded in the file's metadata when it is trackpoint's own
    export of exactly these tensors; otherwise they follow the tensor names
    (:func:`~trackpoint.interchange.graph_from_names`). Reading a tensor checks what the file can be
    checked against (:meth:`checksummed`): an ``.npz`` member's zip CRC-32, or the CRC-32C trackpoint's
    safetensors exports record of every tensor.
    """

    def __init__(self, path: str, fmt: str, *, separator: str = "/") -> None:
        check_separator(separator, f"reading {path!r}")
        self.prefix = path
        self._fmt = fmt
        self._file: FlatFile = open_file(_paths.strip_file_scheme(path), fmt)
        #: CRC-32C of each tensor name (safetensors exports of trackpoint); none for other files.
        self._crcs: dict[str, int] = {}
        #: Whether the file's tensors are the ones trackpoint's metadata describes (see _structure).
        self._described = False
        try:
            self._graph, by_name = self._structure(separator)
            self._names = {key: name for name, key in by_name.items()}
            #: String tensors carried in the metadata (safetensors exports of trackpoint), by key.
            self._strings = self._string_tensors()
        except BaseException:
            self._file.close()
            raise

    def _string_tensors(self) -> dict[str, np.ndarray[Any, Any]]:
        """The string tensors of :data:`META_STRINGS` (checked by :data:`META_CRC` with the other entries).

        Raises
        ------
        InvalidCheckpointError
            The record cannot be read, or names a key a tensor of the file has too.
        """
        meta = self._file.metadata()
        # Only with the tensors the metadata describes: an edited file is read by its names alone.
        raw = meta.get(META_STRINGS) if self._described else None
        if raw is None:
            return {}
        found: dict[str, np.ndarray[Any, Any]] = {}
        try:
            for key, entry in json.loads(raw).items():
                shape = tuple(int(d) for d in entry["shape"])
                values = [base64.b64decode(v, validate=True) for v in entry["values"]]
                array = np.empty(len(values), dtype=object)
                array[:] = values
                found[str(key)] = array.reshape(shape)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, RecursionError) as exc:
            raise InvalidCheckpointError(
                f"{self.prefix!r}: trackpoint's metadata entry {META_STRINGS!r} is damaged ({exc}); use an intact "
                "copy of the file (or export it again from its checkpoint)"
            ) from exc
        clash = sorted(set(found) & set(self._names))
        if clash or OBJECT_GRAPH_KEY in found:
            raise InvalidCheckpointError(
                f"{self.prefix!r}: trackpoint's metadata entry {META_STRINGS!r} is damaged: it records "
                f"{(clash or [OBJECT_GRAPH_KEY])[0]!r}, which is a tensor of the file already"
            )
        return found

    def _structure(self, separator: str) -> tuple[pb.TrackableObjectGraph | None, dict[str, str]]:
        names = self._file.names()
        meta = self._file.metadata()
        if META_KEYS in meta:
            # Before the metadata is parsed: a flipped bit there would otherwise name tensors wrongly.
            crcs = self._checksums(meta)
            try:
                recorded = json.loads(meta[META_KEYS])
                graph_bytes = base64.b64decode(meta.get(META_GRAPH, ""), validate=True)
            except (ValueError, binascii.Error, RecursionError) as exc:
                raise InvalidCheckpointError(
                    f"{self.prefix!r}: trackpoint's metadata in the file is damaged ({exc})"
                ) from exc
            if isinstance(recorded, dict) and set(recorded) == set(names):
                self._check_keys(recorded)
                graph = None
                if graph_bytes:
                    graph = pb.TrackableObjectGraph()
                    try:
                        graph.ParseFromString(graph_bytes)
                    except Exception as exc:  # protobuf's DecodeError, whose module differs by implementation
                        raise InvalidCheckpointError(
                            f"{self.prefix!r}: the object graph in trackpoint's metadata cannot be parsed ({exc})"
                        ) from exc
                # Only for the very tensors the metadata describes: a file another program rewrote with more
                # tensors (its metadata copied along) is read by its names, and unchecked, as any other file.
                self._crcs = crcs
                self._described = True
                return graph, dict(recorded)
        graph, keys = graph_from_names(names, separator=separator)
        return graph, keys

    def _check_keys(self, recorded: dict[str, Any]) -> None:
        """Refuse a :data:`META_KEYS` record that does not give each tensor a key of its own.

        Read as it is, a key that is not a string would become one (``1`` the key ``"1"``), and two tensors
        recorded under one key would silently become one tensor.

        Raises
        ------
        InvalidCheckpointError
            A key is not a string, is the object graph's, or is recorded for two tensors.
        """
        seen: dict[str, str] = {}
        for name, key in recorded.items():
            problem = None
            if not isinstance(key, str):
                problem = f"the key {key!r} of tensor {name!r} is not a string"
            elif key == OBJECT_GRAPH_KEY:
                problem = f"tensor {name!r} is recorded under the object graph's key {key!r}"
            elif key in seen:
                problem = f"tensors {seen[key]!r} and {name!r} are both recorded under the key {key!r}"
            if problem is not None:
                raise InvalidCheckpointError(
                    f"{self.prefix!r}: trackpoint's metadata entry {META_KEYS!r} is damaged: {problem}; use an "
                    "intact copy of the file (or export it again from its checkpoint)"
                )
            seen[key] = name

    def _checksums(self, meta: Mapping[str, str]) -> dict[str, int]:
        """The tensors' CRC-32C of :data:`META_CRC` (empty without it), once the metadata entries match theirs.

        Raises
        ------
        DataLossError
            The record cannot be read, or a metadata entry does not match its CRC-32C.
        """
        raw = meta.get(META_CRC)
        if raw is None:
            return {}
        try:
            record = json.loads(raw)
            entries, tensors = record["metadata"], record["tensors"]
            if not all(isinstance(d, dict) and all(type(c) is int for c in d.values()) for d in (entries, tensors)):
                raise TypeError("its checksums are not integers by name")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise DataLossError(
                f"{self.prefix!r}: the record of checksums in trackpoint's metadata ({META_CRC!r}) is damaged "
                f"({exc}); export the file again from its checkpoint"
            ) from exc
        for entry, expected in entries.items():
            text = meta.get(entry)
            if text is None or _text_crc32c(text) != expected:
                raise DataLossError(
                    f"{self.prefix!r}: CRC-32C mismatch for trackpoint's metadata entry {entry!r} in the file's "
                    "header: the file is corrupted; export it again from its checkpoint"
                )
        return {str(name): crc for name, crc in tensors.items()}

    def checksummed(self, key: str) -> bool:
        """Whether reading the tensor ``key`` checks its bytes against a checksum the file stores.

        Every ``.npz`` member has its zip CRC-32; a safetensors file has checksums only when it is an
        export of trackpoint that records them (:data:`META_CRC`).
        """
        return self._fmt == "npz" or self._name(key) in self._crcs

    def keys(self) -> list[str]:
        # docstring inherited
        return sorted([*self._names, *self._strings, *([OBJECT_GRAPH_KEY] if self._graph is not None else [])])

    def _name(self, key: str) -> str:
        try:
            return self._names[key]
        except KeyError:
            raise CheckpointKeyError(f"{self.prefix!r} has no tensor under key {key!r}") from None

    def info(self, key: str) -> TensorInfo:
        # docstring inherited
        if key == OBJECT_GRAPH_KEY and self._graph is not None:
            return _GRAPH_INFO
        strings = self._strings.get(key)
        if strings is not None:
            return TensorInfo(strings.dtype, strings.shape)
        return self._file.info(self._name(key))

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        if key == OBJECT_GRAPH_KEY and self._graph is not None:
            return _graph_array(self._graph)
        strings = self._strings.get(key)
        if strings is not None:
            if out is not None:
                out[...] = strings
                return out
            return strings.copy()
        name = self._name(key)
        array = self._file.read(name, out)
        expected = self._crcs.get(name)
        if expected is not None and stored_crc32c(array) != expected:
            raise DataLossError(
                f"{self._fmt}: CRC-32C mismatch for tensor {name!r} (key {key!r}, {array.nbytes} bytes) in "
                f"{self.prefix!r}: the data is corrupted, or another program changed the tensor and kept "
                "trackpoint's metadata; export the file again from its checkpoint"
            )
        return array

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


class _Owning(_ForwardingReader):
    """A reader that closes the backend it reads through when it is closed."""

    def __init__(self, reader: CheckpointReader, store: StorageBackend) -> None:
        self.prefix = reader.prefix
        self._reader, self._store = reader, store

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
    object-graph path or its checkpoint key. No include pattern selects every tensor; exclude
    patterns then drop some.

    Attributes
    ----------
    names
        ``{key: name}`` of the selected tensors: their object-graph path names (:func:`path_names`) when
        ``with_names``, else their keys.
    graph
        The object graph, keeping the attributes of the selected tensors only; ``None`` when ``reader``
        has none.
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
        check_separator(separator, f"selecting tensors of {reader.prefix!r}")
        self.prefix = reader.prefix
        self._reader = reader
        graph = read_graph(reader)
        keys = [k for k in reader.keys() if k != OBJECT_GRAPH_KEY]
        kept = keys
        if include or exclude:
            # Patterns match the path however its local names read, so selecting never refuses a tensor whose
            # local name holds the separator: only naming a file's tensors by path (with_names) needs paths
            # that split back into their local names.
            paths = pattern_paths(graph, keys, separator=separator)
            kept = [
                key
                for key in keys
                if (not include or _matches(include, paths[key], key)) and not _matches(exclude, paths[key], key)
            ]
        if (include or exclude) and not kept:
            raise CheckpointKeyError(
                f"no tensor of {reader.prefix!r} is selected by include {list(include)} and exclude {list(exclude)}; "
                "patterns match the object-graph path (model/layer/kernel) or the checkpoint key"
            )
        # Path names of the selected tensors only: a tensor whose path cannot name it can be left out.
        self.names = path_names(graph, kept, separator=separator) if with_names else {k: k for k in kept}
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
        raise InvalidArgumentError(
            f"export of {reader.prefix!r} to {path!r}: names must be 'paths' or 'keys', got {names!r}"
        )
    keys = [k for k in reader.keys() if k != OBJECT_GRAPH_KEY]
    strings: list[str] = []
    if fmt == "safetensors":
        # safetensors holds no strings: the string tensors (a torch module's .STATE_DICT, a manager's metrics)
        # go into the metadata, so that the file is the whole checkpoint and other readers see its numbers.
        kinds = {k: reader.info(k).dtype.kind for k in keys}
        strings = [k for k in keys if kinds[k] == "O"]
        keys = [k for k in keys if kinds[k] != "O"]
    out_names = {k: (reader.names[k] if names == "paths" else k) for k in keys}
    metadata = {
        META_VERSION: "1",
        META_KEYS: json.dumps({out_names[k]: k for k in keys}, sort_keys=True),
        META_GRAPH: "" if reader.graph is None else base64.b64encode(reader.graph.SerializeToString()).decode(),
    }
    if strings:
        metadata[META_STRINGS] = json.dumps({k: _string_entry(reader.read(k)) for k in strings}, sort_keys=True)
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
        # The package writes from a complete mapping, so every tensor is in memory anyway: read them all,
        # then record their checksums, which the format has none of, ahead of the data.
        arrays = list(tensors())
        sums = {name: stored_crc32c(array) for name, array in arrays if array.dtype.kind != "O"}
        metadata[META_CRC] = json.dumps(
            {"metadata": {k: _text_crc32c(v) for k, v in metadata.items()}, "tensors": sums}, sort_keys=True
        )
        write_safetensors(local, arrays, metadata, overwrite=overwrite)
        del arrays
    else:
        write_npz(local, tensors(), metadata, overwrite=overwrite)
