"""Inspecting checkpoints: ``load_checkpoint``, ``list_variables``, ``object_metadata``.

The TensorFlow equivalents are ``tf.train.load_checkpoint``,
``tf.train.list_variables`` and ``tf.train.CheckpointView``'s graph. All I/O
goes through the storage contract.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np

from trackpoint import _resolve
from trackpoint.errors import InvalidCheckpointError
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, CheckpointReader

__all__ = ["TensorReader", "list_variables", "load_checkpoint", "object_metadata"]


class TensorReader:
    """Read access to one checkpoint with TensorFlow's ``CheckpointReader`` methods.

    Wraps a backend's :class:`~trackpoint.storage.CheckpointReader`; close it
    with :meth:`close` or use it as a context manager. Closing it also closes
    the backend :func:`load_checkpoint` opened for it (a reader that is
    garbage collected unclosed is closed then).
    """

    def __init__(self, reader: CheckpointReader) -> None:
        self._reader = reader

    @property
    def prefix(self) -> str:
        """The checkpoint being read."""
        return self._reader.prefix

    def get_tensor(self, name: str) -> Any:
        """The tensor ``name``: an ndarray, or ``bytes`` for a scalar string.

        Raises
        ------
        CheckpointKeyError
            No such tensor.
        """
        value = self._reader.read(name)
        if value.dtype == np.dtype(object) and value.ndim == 0:
            return value[()]
        return value

    def get_slice(self, name: str, offset: Sequence[int], shape: Sequence[int]) -> Any:
        """The part ``offset .. offset + shape`` of the tensor ``name``, reading only what overlaps it.

        The checkpoint may hold the tensor whole or as slices of any
        partitioning (see :meth:`trackpoint.storage.CheckpointReader.read_slice`).
        What it returns is what :meth:`get_tensor` returns: an ndarray, or
        ``bytes`` for a scalar string (whose only part is the whole).

        Raises
        ------
        CheckpointKeyError
            No such tensor.
        ValueError
            The part does not lie inside the tensor.
        """
        value = self._reader.read_slice(name, offset, shape)
        if value.dtype == np.dtype(object) and value.ndim == 0:
            return value[()]
        return value

    def has_tensor(self, name: str) -> bool:
        """Whether the checkpoint holds ``name``."""
        return self._reader.has(name)

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        """``{key: shape}`` for every tensor."""
        return {key: list(self._reader.info(key).shape) for key in self._reader.keys()}

    def get_variable_to_dtype_map(self) -> dict[str, np.dtype[Any]]:
        """``{key: dtype}`` for every tensor (``numpy.dtype(object)`` for strings)."""
        return {key: self._reader.info(key).dtype for key in self._reader.keys()}

    def close(self) -> None:
        """Release the underlying reader."""
        self._reader.close()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def load_checkpoint(path: str | os.PathLike[str], options: CheckpointOptions | None = None) -> TensorReader:
    """A reader for the checkpoint at ``path``: a prefix, or a directory (its latest checkpoint).

    A committed prefix wins over a directory of the same name. Without a
    backend chosen in ``options``, a checkpoint of any format stored at
    ``path`` is found (see :func:`trackpoint.plugins.detect_backends`).

    Raises
    ------
    CheckpointNotFoundError
        No checkpoint there; the message says a prefix (``dir/ckpt-1``) or a
        directory holding checkpoints is wanted.
    """
    # The reader keeps the one backend it reads through open until it is closed.
    backends = _resolve.Backends()
    try:
        return TensorReader(backends.open_checkpoint(os.fspath(path), options)[1])
    finally:
        backends.close()


def list_variables(
    path: str | os.PathLike[str], options: CheckpointOptions | None = None
) -> list[tuple[str, list[int]]]:
    """Sorted ``(key, shape)`` pairs of every tensor in the checkpoint (``path`` as for :func:`load_checkpoint`)."""
    with load_checkpoint(path, options) as reader:
        return sorted(reader.get_variable_to_shape_map().items())


def object_metadata(path: str | os.PathLike[str], options: CheckpointOptions | None = None) -> pb.TrackableObjectGraph:
    """The checkpoint's ``TrackableObjectGraph`` proto (``path`` as for :func:`load_checkpoint`).

    Raises
    ------
    InvalidCheckpointError
        The checkpoint has no object graph (a name-based checkpoint).
    """
    with load_checkpoint(path, options) as reader:
        if not reader.has_tensor(OBJECT_GRAPH_KEY):
            raise InvalidCheckpointError(
                f"The specified checkpoint {reader.prefix!r} does not appear to be object-based (saved with "
                f"trackpoint.Checkpoint or tf.train.Checkpoint): it has no {OBJECT_GRAPH_KEY!r} tensor. "
                "Use load_checkpoint() to read its tensors by name."
            )
        raw = reader.get_tensor(OBJECT_GRAPH_KEY)
    proto = pb.TrackableObjectGraph()
    try:
        proto.ParseFromString(bytes(raw))
    except Exception as exc:
        raise InvalidCheckpointError(f"the object graph in {os.fspath(path)!r} cannot be parsed: {exc}") from exc
    return proto
