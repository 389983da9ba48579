"""An in-process backend for tests and notebooks: ``memory://name/ckpt``.

Checkpoints live in a process-wide store until the process ends (or
:func:`clear` is called). It honours the whole storage contract (staged shards,
atomic commit, conditional small-file writes), so it is a faithful stand-in
for a real store in unit tests. It is an extra, never a substitute for the
real backends' own tests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trackpoint import _paths
from trackpoint.errors import (
    CheckpointExistsError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DTypeMismatchError,
    ShapeMismatchError,
    UnsupportedDTypeError,
)
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import (
    ANY_VERSION,
    Capabilities,
    CheckpointOptions,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    TensorInfo,
    VersionedBytes,
    WriteItem,
    _AnyVersion,
)

__all__ = ["MemoryBackend", "clear"]


@dataclass
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    committed: dict[str, dict[str, np.ndarray[Any, Any]]] = field(default_factory=dict)
    pending: dict[tuple[str, str, int], dict[str, np.ndarray[Any, Any]]] = field(default_factory=dict)
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    counter: int = 0


_STORE = _Store()


def clear() -> None:
    """Forget every checkpoint and file held in memory."""
    with _STORE.lock:
        _STORE.committed.clear()
        _STORE.pending.clear()
        _STORE.files.clear()


def _norm(path: str) -> str:
    s, rest = _paths.split_scheme(path)
    if s not in ("", "memory"):
        raise ValueError(f"memory backend cannot store {path!r}: use a memory:// URL")
    return "memory://" + rest.strip("/")


def _copy(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = np.asarray(array)
    if a.dtype.kind == "O":
        out = np.empty(a.shape, dtype=object)
        for idx, x in np.ndenumerate(a):
            if isinstance(x, str):
                x = x.encode("utf-8")
            if not isinstance(x, (bytes, bytearray, memoryview)):
                raise UnsupportedDTypeError(
                    f"object arrays may only hold bytes or str, found {type(x).__name__} at {idx}"
                )
            out[idx] = bytes(x)
        return out
    if a.dtype.hasobject or a.dtype.kind in "V":
        raise UnsupportedDTypeError(f"dtype {a.dtype} cannot be stored in a checkpoint")
    return np.array(a, copy=True, order="C")


class _Reader(CheckpointReader):
    def __init__(self, prefix: str, tensors: dict[str, np.ndarray[Any, Any]]) -> None:
        self.prefix = prefix
        self._tensors = tensors

    def keys(self) -> list[str]:
        return sorted(self._tensors)

    def _get(self, key: str) -> np.ndarray[Any, Any]:
        try:
            return self._tensors[key]
        except KeyError:
            raise CheckpointKeyError(f"checkpoint {self.prefix!r} has no tensor {key!r}") from None

    def info(self, key: str) -> TensorInfo:
        a = self._get(key)
        return TensorInfo(a.dtype, tuple(a.shape))

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        a = self._get(key)
        if a.dtype.kind == "O" or out is None:
            return a.copy()
        if out.dtype != a.dtype:
            raise DTypeMismatchError(f"cannot read {key!r} ({a.dtype}) into an array of dtype {out.dtype}")
        if out.shape != a.shape:
            raise ShapeMismatchError(f"cannot read {key!r} {a.shape} into an array of shape {out.shape}")
        np.copyto(out, a)
        return out


class MemoryBackend(StorageBackend):
    """Process-local storage honouring the full contract."""

    name = "memory"
    capabilities = Capabilities(
        atomic_rename=True, conditional_create=True, ranged_reads=True, parallel_writes=True
    )

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        p = _norm(prefix)
        tensors = {it.key: _copy(it.array) for it in items}
        with _STORE.lock:
            _STORE.pending[(p, spec.save_id, spec.shard_id)] = tensors
        return ShardResult(spec, tuple(tensors), sum(it.nbytes for it in items))

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = False) -> None:
        p = _norm(prefix)
        merged: dict[str, np.ndarray[Any, Any]] = {}
        with _STORE.lock:
            if p in _STORE.committed and not overwrite:
                raise CheckpointExistsError(f"memory: a checkpoint is already committed at {prefix!r}")
            for r in shards:
                piece = _STORE.pending.get((p, r.spec.save_id, r.spec.shard_id))
                if piece is None:
                    raise CheckpointNotFoundError(
                        f"memory: shard {r.spec.shard_id} of save {r.spec.save_id} for {prefix!r} was never written"
                    )
                dup = merged.keys() & piece.keys()
                if dup:
                    raise ValueError(f"memory: tensor {sorted(dup)[0]!r} appears in two shards of {prefix!r}")
                merged.update(piece)
            for r in shards:
                _STORE.pending.pop((p, r.spec.save_id, r.spec.shard_id), None)
            _STORE.committed[p] = merged

    def abort(self, prefix: str, save_id: str) -> None:
        p = _norm(prefix)
        with _STORE.lock:
            for k in [k for k in _STORE.pending if k[0] == p and k[1] == save_id]:
                del _STORE.pending[k]

    def open_reader(self, prefix: str) -> CheckpointReader:
        p = _norm(prefix)
        with _STORE.lock:
            tensors = _STORE.committed.get(p)
        if tensors is None:
            raise CheckpointNotFoundError(f"memory: no checkpoint is committed at {prefix!r}")
        return _Reader(prefix, tensors)

    def exists(self, prefix: str) -> bool:
        with _STORE.lock:
            return _norm(prefix) in _STORE.committed

    def delete(self, prefix: str) -> None:
        with _STORE.lock:
            _STORE.committed.pop(_norm(prefix), None)

    def list_checkpoints(self, directory: str) -> list[str]:
        d = _norm(directory)
        with _STORE.lock:
            return sorted(p for p in _STORE.committed if _paths.dirname(p) == d)

    def read_file(self, path: str) -> VersionedBytes | None:
        with _STORE.lock:
            entry = _STORE.files.get(_norm(path))
        return None if entry is None else VersionedBytes(entry[0], str(entry[1]))

    def write_file(self, path: str, data: bytes, *, if_version: str | _AnyVersion | None = ANY_VERSION) -> str:
        p = _norm(path)
        with _STORE.lock:
            current = _STORE.files.get(p)
            if if_version is None and current is not None:
                raise ConcurrentModificationError(f"memory: {path!r} exists already (create-only write)")
            if isinstance(if_version, str) and (current is None or str(current[1]) != if_version):
                raise ConcurrentModificationError(
                    f"memory: {path!r} changed since version {if_version} was read; re-read and retry"
                )
            _STORE.counter += 1
            _STORE.files[p] = (bytes(data), _STORE.counter)
            return str(_STORE.counter)

    def delete_file(self, path: str) -> None:
        with _STORE.lock:
            _STORE.files.pop(_norm(path), None)

    def dirname(self, path: str) -> str:
        return _paths.dirname(_norm(path))

    def join(self, directory: str, name: str) -> str:
        return _paths.join(_norm(directory), name)


def _create(url: str, options: CheckpointOptions) -> MemoryBackend:
    return MemoryBackend()


@hookimpl
def trackpoint_register_backends(register: Any) -> None:
    """Register the ``memory`` backend for ``memory://`` URLs."""
    register(
        BackendSpec(
            name="memory",
            factory=_create,
            schemes=("memory",),
            description="in-process store for tests and notebooks",
            capabilities=MemoryBackend.capabilities,
        )
    )
