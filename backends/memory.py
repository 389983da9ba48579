"""An in-process backend for tests and notebooks: ``memory://name/ckpt``.

Checkpoints live in a process-wide store until the process ends (or
:func:`clear` is called). It honours the whole storage contract (staged shards,
atomic commit, conditional small-file writes), so it is a faithful stand-in
for a real store in unit tests. It is an extra, never a substitute for the
real backends' own tests.

Tensors are kept as checksummed byte records, not as live arrays, so that the
conformance kit can corrupt and truncate them through its backdoor exactly as
it does files of the on-disk backends, and so that a checkpoint never aliases
an array the caller still mutates.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from trackpoint import _paths
from trackpoint.dtypes import _encode_strings, as_dtype, is_string
from trackpoint.errors import (
    BackendError,
    CheckpointExistsError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
    DTypeMismatchError,
    InvalidCheckpointError,
    ShapeMismatchError,
    UnsupportedDTypeError,
    UnsupportedOptionError,
)
from trackpoint.storage import (
    ANY_VERSION,
    MUST_NOT_EXIST,
    Capabilities,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    TensorInfo,
    VersionCondition,
    VersionedBytes,
    WriteItem,
    version_condition,
)

__all__ = ["MemoryBackend", "clear"]

#: Name of the string dtype in a record header (numeric dtypes use their numpy name).
_STRING: Final = "string"
_U32: Final = struct.Struct("<I")


@dataclass
class _Committed:
    """One checkpoint: its manifest of keys and one record per tensor."""

    keys: tuple[str, ...]
    records: dict[str, bytes]
    #: POSIX time of the commit.
    committed_at: float = field(default_factory=time.time)


@dataclass
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    committed: dict[str, _Committed] = field(default_factory=dict)
    #: (prefix, save_id, shard_id) -> key -> record
    pending: dict[tuple[str, str, int], dict[str, bytes]] = field(default_factory=dict)
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
        raise BackendError(f"memory backend cannot store {path!r}: use a memory:// URL")
    return "memory://" + rest.strip("/")


def _encode(key: str, array: np.ndarray[Any, Any]) -> bytes:
    """``u32 header length | JSON header | payload | u32 crc32`` for one tensor."""
    a = np.asarray(array)
    try:
        dtype = as_dtype(a.dtype)  # the core's dtype policy: native byte order, strings as objects
    except UnsupportedDTypeError as exc:
        raise UnsupportedDTypeError(f"memory: tensor {key!r}: {exc}") from exc
    if is_string(dtype):
        pieces: list[bytes] = list(_encode_strings(a, f"memory: tensor {key!r}").flat)
        lengths = np.array([len(p) for p in pieces], dtype="<u8")
        name, payload = _STRING, lengths.tobytes() + b"".join(pieces)
    else:
        name = dtype.name
        # Little-endian on every host, so records mean the same everywhere.
        payload = np.ascontiguousarray(a, dtype=dtype.newbyteorder("<")).tobytes()
    header = json.dumps({"dtype": name, "shape": list(a.shape)}).encode()
    body = _U32.pack(len(header)) + header + payload
    return body + _U32.pack(zlib.crc32(body))


@dataclass(frozen=True, slots=True)
class _Decoded:
    info: TensorInfo
    payload: memoryview


def _decode(prefix: str, key: str, record: bytes) -> _Decoded:
    where = f"memory: tensor {key!r} of {prefix!r}"
    if len(record) < 8 or zlib.crc32(record[:-4]) != _U32.unpack_from(record, len(record) - 4)[0]:
        raise DataLossError(f"{where} is truncated or fails its checksum; the checkpoint is damaged, restore another")
    (hlen,) = _U32.unpack_from(record)
    try:
        header = json.loads(record[4 : 4 + hlen])
        name, shape = header["dtype"], tuple(int(d) for d in header["shape"])
        dtype = np.dtype(object) if name == _STRING else as_dtype(name)
    except (ValueError, KeyError, TypeError) as exc:  # UnsupportedDTypeError is a TypeError
        raise InvalidCheckpointError(f"{where} has an unreadable header; it was not written by trackpoint") from exc
    return _Decoded(TensorInfo(dtype, shape), memoryview(record)[4 + hlen : -4])


def _to_array(where: str, d: _Decoded) -> np.ndarray[Any, Any]:
    info, payload = d.info, d.payload
    if info.dtype.kind != "O":
        if len(payload) != info.nbytes:
            raise DataLossError(f"{where}: payload has {len(payload)} bytes, its header promises {info.nbytes}")
        return np.frombuffer(payload, dtype=info.dtype.newbyteorder("<")).astype(info.dtype).reshape(info.shape)
    n = info.size
    if len(payload) < 8 * n:
        raise DataLossError(f"{where}: string lengths are truncated")
    lengths = np.frombuffer(payload[: 8 * n], dtype="<u8")
    if int(lengths.sum()) != len(payload) - 8 * n:
        raise DataLossError(f"{where}: string data does not match its lengths")
    out = np.empty(n, dtype=object)
    pos = 8 * n
    for i, length in enumerate(lengths.tolist()):
        out[i] = bytes(payload[pos : pos + length])
        pos += length
    return out.reshape(info.shape)


class _Reader(CheckpointReader):
    def __init__(self, prefix: str, checkpoint: _Committed) -> None:
        self.prefix = prefix
        # A snapshot of immutable bytes: the reader keeps working after the
        # checkpoint is overwritten or deleted, as the contract requires.
        self._keys = checkpoint.keys
        self._records = dict(checkpoint.records)

    def keys(self) -> list[str]:
        return list(self._keys)

    def _get(self, key: str) -> _Decoded:
        if key not in self._records:
            if key in self._keys:
                raise DataLossError(f"memory: tensor {key!r} of {self.prefix!r} is listed but its data is gone")
            raise CheckpointKeyError(f"memory: checkpoint {self.prefix!r} has no tensor {key!r}")
        return _decode(self.prefix, key, self._records[key])

    def info(self, key: str) -> TensorInfo:
        return self._get(key).info

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        decoded = self._get(key)
        a = _to_array(f"memory: tensor {key!r} of {self.prefix!r}", decoded)
        if a.dtype.kind == "O" or out is None:
            return a  # freshly decoded, owned by the caller
        if out.dtype != a.dtype:
            raise DTypeMismatchError(f"memory: cannot read {key!r} ({a.dtype}) into an array of dtype {out.dtype}")
        if out.shape != a.shape:
            raise ShapeMismatchError(f"memory: cannot read {key!r} {a.shape} into an array of shape {out.shape}")
        np.copyto(out, a)
        return out


def _check_shard_set(prefix: str, shards: Sequence[ShardResult]) -> None:
    """``shards`` are all shards of one save, each once: a lost manifest must not commit a partial checkpoint."""
    specs = [r.spec for r in shards]
    if (
        not specs
        or len({(s.save_id, s.num_shards) for s in specs}) != 1
        or sorted(s.shard_id for s in specs) != list(range(specs[0].num_shards))
    ):
        got = sorted((s.save_id, s.shard_id, s.num_shards) for s in specs)
        raise InvalidCheckpointError(
            f"memory: cannot commit {prefix!r}: expected every shard of one save exactly once, "
            f"got (save, shard, of) {got}"
        )


class MemoryBackend(StorageBackend):
    """Process-local storage honouring the full contract."""

    name = "memory"
    capabilities = Capabilities(atomic_rename=True, conditional_create=True, ranged_reads=True, parallel_writes=True)

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        # docstring inherited
        p = _norm(prefix)
        records: dict[str, bytes] = {}
        for it in items:
            if it.slice is not None:
                # StorageBackend.save assembles slices first; a caller driving the protocol must too.
                raise UnsupportedOptionError(
                    f"memory: tensor {it.key!r} is a slice ({it.slice.spec!r}); this backend stores whole tensors "
                    "only (supports_slices is false): assemble the slices first (trackpoint.storage.assemble_slices)"
                )
            if it.key in records:
                raise InvalidCheckpointError(
                    f"memory: tensor {it.key!r} appears twice in shard {spec.shard_id} of {prefix!r}"
                )
            records[it.key] = _encode(it.key, it.array)
        with _STORE.lock:
            _STORE.pending[(p, spec.save_id, spec.shard_id)] = records
        return ShardResult(spec, tuple(records), sum(it.nbytes for it in items))

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        # docstring inherited
        p = _norm(prefix)
        _check_shard_set(prefix, shards)
        merged: dict[str, bytes] = {}
        with _STORE.lock:
            if p in _STORE.committed and not overwrite:
                raise CheckpointExistsError(
                    f"memory: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
                )
            for r in shards:
                piece = _STORE.pending.get((p, r.spec.save_id, r.spec.shard_id))
                if piece is None:
                    raise CheckpointNotFoundError(
                        f"memory: shard {r.spec.shard_id} of save {r.spec.save_id} for {prefix!r} was never written"
                    )
                dup = merged.keys() & piece.keys()
                if dup:
                    raise InvalidCheckpointError(
                        f"memory: tensor {sorted(dup)[0]!r} appears in two shards of {prefix!r}; each key must be "
                        "written by exactly one shard"
                    )
                merged.update(piece)
            for r in shards:
                _STORE.pending.pop((p, r.spec.save_id, r.spec.shard_id), None)
            _STORE.committed[p] = _Committed(tuple(sorted(merged)), merged)

    def abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        p = _norm(prefix)
        with _STORE.lock:
            for k in [k for k in _STORE.pending if k[0] == p and k[1] == save_id]:
                del _STORE.pending[k]

    def open_reader(self, prefix: str) -> CheckpointReader:
        # docstring inherited
        p = _norm(prefix)
        with _STORE.lock:
            checkpoint = _STORE.committed.get(p)
            if checkpoint is None:
                raise CheckpointNotFoundError(f"memory: no checkpoint is committed at {prefix!r}")
            return _Reader(prefix, checkpoint)

    def exists(self, prefix: str) -> bool:
        # docstring inherited
        with _STORE.lock:
            return _norm(prefix) in _STORE.committed

    def modified(self, prefix: str) -> float | None:
        # docstring inherited
        with _STORE.lock:
            checkpoint = _STORE.committed.get(_norm(prefix))
        return None if checkpoint is None else checkpoint.committed_at

    def delete(self, prefix: str) -> None:
        # docstring inherited
        with _STORE.lock:
            _STORE.committed.pop(_norm(prefix), None)

    def list_checkpoints(self, directory: str) -> list[str]:
        # docstring inherited
        d = _norm(directory)
        with _STORE.lock:
            return sorted(p for p in _STORE.committed if _paths.dirname(p) == d)

    def read_file(self, path: str) -> VersionedBytes | None:
        # docstring inherited
        with _STORE.lock:
            entry = _STORE.files.get(_norm(path))
        return None if entry is None else VersionedBytes(entry[0], str(entry[1]))

    def write_file(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        # docstring inherited
        p = _norm(path)
        if_version = version_condition(if_version)
        with _STORE.lock:
            current = _STORE.files.get(p)
            if if_version is MUST_NOT_EXIST and current is not None:
                raise ConcurrentModificationError(f"memory: {path!r} exists already (create-only write)")
            if isinstance(if_version, str) and (current is None or str(current[1]) != if_version):
                raise ConcurrentModificationError(
                    f"memory: {path!r} changed since version {if_version} was read; re-read and retry"
                )
            _STORE.counter += 1
            _STORE.files[p] = (bytes(data), _STORE.counter)
            return str(_STORE.counter)

    def delete_file(self, path: str) -> None:
        # docstring inherited
        with _STORE.lock:
            _STORE.files.pop(_norm(path), None)

    def dirname(self, path: str) -> str:
        # docstring inherited
        return _paths.dirname(_norm(path))

    def join(self, directory: str, name: str) -> str:
        # docstring inherited
        return _paths.join(_norm(directory), name)
