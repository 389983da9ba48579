"""Checking that a checkpoint is intact: :func:`verify`.

Everything goes through the storage contract, so every backend is checked the same way and each
checks what its format can: opening a reader checks the index (the bundle's SSTable block checksums,
Zarr's root checksum), and reading a tensor checks its data (the bundle's CRC-32C per tensor, Zarr's
``crc32c`` codec per chunk, the memory backend's CRC per record, an ``.npz`` member's zip CRC-32, the
CRC-32C trackpoint's safetensors exports record per tensor). A quick check stops after the structure:
the index, every tensor's dtype and shape, and the object graph against the stored keys.

A tensor no checksum covers (any safetensors file trackpoint did not write) is read whole but is not
called intact: a changed bit there reads back as a valid value. The report lists such tensors as
:attr:`VerifyReport.unverified`, and its :attr:`~VerifyReport.ok` is then false.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trackpoint._batches import batched
from trackpoint.errors import BackendError, CheckpointError, CheckpointNotFoundError, InvalidPathError
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, CheckpointReader

__all__ = ["Problem", "VerifyReport", "verify"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing :func:`verify` found wrong.

    Parameters
    ----------
    key
        The tensor concerned, ``None`` for the checkpoint as a whole (its index, its object graph).
    error
        Name of the trackpoint exception class that reported it (``"DataLossError"``).
    message
        The exception's message: what failed and where (the damaged file, the offset).
    """

    key: str | None
    error: str
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify` checked and found.

    Parameters
    ----------
    path
        The path as given.
    prefix
        The checkpoint checked (a directory's latest checkpoint when ``path`` is a directory), or
        ``None`` when none could be opened.
    backend
        Name of the backend that holds it (``"safetensors"`` or ``"npz"`` for a file).
    tensors
        How many tensors were checked (the object graph, also checked, not counted).
    nbytes
        Bytes of numeric tensor data read (0 for a quick check).
    quick
        Whether only the structure was checked.
    problems
        Everything found wrong; empty when the checkpoint is intact.
    unverified
        Keys of the tensors read without error but without a checksum to check their bytes against (every
        tensor of a safetensors file trackpoint did not write): they may hold changed values. Empty for a
        quick check, which reads no data.
    """

    path: str
    prefix: str | None
    backend: str | None
    tensors: int
    nbytes: int
    quick: bool
    problems: tuple[Problem, ...]
    unverified: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the checkpoint is intact: no problem found, and every tensor read was checked by a checksum.

        False for a file that reads without error but stores no checksums (:attr:`unverified`): nothing
        says its values are the ones written.
        """
        return not self.problems and not self.unverified


def _graph_problems(reader: CheckpointReader, keys: set[str]) -> list[Problem]:
    from trackpoint.interchange._convert import read_graph

    try:
        graph = read_graph(reader)
    except CheckpointError as exc:
        return [Problem(OBJECT_GRAPH_KEY, type(exc).__name__, str(exc))]
    if graph is None:
        return []
    found: list[Problem] = []
    n = len(graph.nodes)
    for node_id, node in enumerate(graph.nodes):
        refs = [c.node_id for c in node.children]
        refs += [i for s in node.slot_variables for i in (s.original_variable_node_id, s.slot_variable_node_id)]
        for ref in refs:
            if not 0 <= ref < n:
                found.append(
                    Problem(
                        OBJECT_GRAPH_KEY,
                        "InvalidCheckpointError",
                        f"object graph node {node_id} refers to node {ref}, but the graph has {n} nodes",
                    )
                )
        for attr in node.attributes:
            if attr.checkpoint_key not in keys:
                found.append(
                    Problem(
                        attr.checkpoint_key,
                        "InvalidCheckpointError",
                        f"the object graph names tensor {attr.checkpoint_key!r} (node {node_id}, attribute "
                        f"{attr.name!r}), which the checkpoint does not store",
                    )
                )
    return found


def verify(
    path: str | os.PathLike[str],
    *,
    quick: bool = False,
    options: CheckpointOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check the checkpoint at ``path``: every byte and every checksum, or (``quick``) its structure.

    Parameters
    ----------
    path
        A checkpoint prefix, or a directory (its latest checkpoint), on any backend; or a
        ``.safetensors`` / ``.npz`` file (its header or archive, and every tensor's bytes; ``.npz``
        members have their zip CRC-32 checked, safetensors tensors the CRC-32C trackpoint's exports record).
    quick
        Check only the structure: the index opens, every tensor's dtype and shape can be read, and
        every tensor the object graph names is stored. No tensor data is read.
    options
        Selects and configures the backend, as for a restore.
    progress
        Called as ``progress(done_bytes, total_bytes)`` while tensors are read.

    Returns
    -------
    VerifyReport
        What was checked, and every problem found (each damaged tensor separately, and each
        once: an unreadable object graph is one problem). Damage is reported, never raised. Tensors
        read whole that no checksum covers (a safetensors file trackpoint did not write; trackpoint's
        exports record a CRC-32C of every tensor) are listed in ``unverified``, and the report is then
        not ``ok``, though nothing was found wrong.

    Raises
    ------
    CheckpointNotFoundError
        Nothing is committed at ``path``.
    BackendError
        No backend can be opened for ``path``.
    """
    from trackpoint.interchange._convert import FlatReader, open_source

    text = os.fspath(path)
    try:
        prefix, backend, reader = open_source(text, options)
    except (CheckpointNotFoundError, BackendError, InvalidPathError):
        raise  # nothing to check: not a verdict on a checkpoint
    except CheckpointError as exc:
        return VerifyReport(text, None, None, 0, 0, quick, (Problem(None, type(exc).__name__, str(exc)),))
    problems: list[Problem] = []
    unverified: list[str] = []
    done = 0
    with reader:
        keys = list(reader.keys())
        infos = {}
        for key in keys:
            try:
                infos[key] = reader.info(key)
            except CheckpointError as exc:
                problems.append(Problem(key, type(exc).__name__, str(exc)))
        # Each tensor is reported once. The graph's check reads the object graph's tensor (its checksum
        # included), so the loop below does not read it again; a graph tensor whose info could not be read
        # is reported already, and its check would only fail on it a second time.
        if OBJECT_GRAPH_KEY in infos or OBJECT_GRAPH_KEY not in keys:
            problems += _graph_problems(reader, set(keys))
        if not quick:
            total = sum(info.nbytes for info in infos.values())
            graph = infos.get(OBJECT_GRAPH_KEY)
            done = 0 if graph is None else graph.nbytes  # read by the graph's check above
            tensors = [(key, info) for key, info in infos.items() if key != OBJECT_GRAPH_KEY]
            for batch in batched(tensors, lambda entry: entry[1].nbytes):
                # One read_many per batch; only a batch that fails is read again tensor by tensor, to name
                # each damaged one.
                outs = [None if info.dtype.kind == "O" else np.empty(info.shape, info.dtype) for _, info in batch]
                failed: dict[str, CheckpointError] = {}
                try:
                    reader.read_many([(key, out) for (key, _), out in zip(batch, outs, strict=True)])
                except CheckpointError:
                    for (key, _), out in zip(batch, outs, strict=True):
                        try:
                            reader.read(key, out)
                        except CheckpointError as exc:
                            failed[key] = exc
                for key, info in batch:
                    error = failed.get(key)
                    if error is not None:
                        problems.append(Problem(key, type(error).__name__, str(error)))
                    elif isinstance(reader, FlatReader) and not reader.checksummed(key):
                        # Read without error is all that can be said of bytes no checksum covers.
                        unverified.append(key)
                    done += info.nbytes
                if progress is not None:
                    progress(done, total)
            if progress is not None and not tensors:
                progress(done, total)
    counted = len([k for k in keys if k != OBJECT_GRAPH_KEY])
    return VerifyReport(text, prefix, backend, counted, done, quick, tuple(problems), tuple(unverified))
