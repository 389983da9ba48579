"""The bundle backend: TensorFlow's TensorBundle layout over any :class:`FileLayer`.

Two commit strategies, chosen from the store's declared capabilities:

* **rename** (``atomic_rename``; local disks). Each shard is written as a
  complete one-shard bundle ``<prefix>_temp/part-<save_id>-iiiii-of-NNNNN``
  (data file fsynced, piece index beside it). ``commit`` merges the pieces the
  way TensorFlow's ``MergeV2Checkpoints`` does, from the shard manifests and
  without re-reading data: data files are renamed to
  ``<prefix>.data-iiiii-of-NNNNN``, the merged index is written inside the
  ``_temp`` directory and renamed to ``<prefix>.index`` last, the directory is
  fsynced and the ``_temp`` directory removed.
* **create** (``conditional_create`` without atomic rename; object stores).
  Data objects are written once, create-only, under their final names; a
  per-shard piece index ``<prefix>.part-iiiii-of-NNNNN.<save_id>.piece`` is
  the only other temporary object (not ``.index``: only a committed
  checkpoint ends in ``.index``; 0.1's ``.index``-named pieces are still
  recognised, so ``delete`` and ``cleanup`` remove them). It is created (empty) before the shard's
  data and is the save's ownership marker: an overwriting save removes every
  marker before any data object. ``commit`` is one create-only write of
  ``<prefix>.index`` between two checks that the save's markers still exist
  (the index is retracted if the second fails), after which the pieces are
  deleted.

In both, ``<prefix>.index`` is the commit point: it is written last, and
removed first by ``delete`` and by an overwriting save.
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from trackpoint.backends.bundle._codec import (
    Entry,
    decode_entry,
    decode_header,
    decode_strings,
    encode_entry,
    encode_header,
    encode_strings,
)
from trackpoint.backends.bundle._crc import crc32c, extend, mask, unmask
from trackpoint.backends.bundle._dtypes import DT_STRING, READABLE, dtype_from_tf, tf_from_dtype
from trackpoint.backends.bundle._ordered_code import encode_slice_key
from trackpoint.backends.bundle._sstable import build_table, read_table
from trackpoint.backends.bundle._varint import decode_varint, encode_varint
from trackpoint.backends.files import FileLayer
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
    StorageError,
    TrackableError,
)
from trackpoint.storage import (
    ANY_VERSION,
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

__all__ = ["BundleBackend", "data_filename"]

#: Tensors below this size are gathered into one buffer so a shard of many
#: small tensors costs few write calls.
_SMALL: Final = 64 * 1024
_BATCH: Final = 1024 * 1024
#: Large tensors are checksummed and written in chunks that are still cache-warm.
_CHUNK: Final = 4 * 1024 * 1024
#: A header claiming more shards than this is treated as corrupt.
_MAX_SHARDS: Final = 1 << 24
_PAYLOAD_MAGIC: Final = b"TPBUNDLE1\n"
_SAVE_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DATA_RE: Final = re.compile(r"^(?P<base>.+)\.data-\d{5,}-of-\d{5,}$")
#: A piece index of the create strategy: ``.piece`` since 0.2; 0.1 wrote ``.index``, and
#: leftovers of that name are still recognised so delete and cleanup remove them.
_PART_RE: Final = re.compile(r"^(?P<base>.+)\.part-\d{5,}-of-\d{5,}\.(?P<save_id>[A-Za-z0-9_-]+)\.(?:piece|index)$")
_PIECE_SUFFIX: Final = ".piece"
#: Temporary file of a LocalFiles sink killed before it was published.
_SINK_TEMP_RE: Final = re.compile(r"^\.(?P<name>.+)\.tmp-[0-9a-f]{32}$")
#: Leftovers younger than this may belong to a save that is still running.
_MIN_AGE: Final = 600.0


def data_filename(prefix: str, shard_id: int, num_shards: int) -> str:
    """TensorFlow's data file name: ``<prefix>.data-%05d-of-%05d``."""
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def _piece_save_id(name: str) -> str | None:
    """The save id in the name of a piece index (either naming), ``None`` for other names."""
    m = _PART_RE.match(name)
    return None if m is None else m.group("save_id")


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _encode_payload(entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    out = bytearray(_PAYLOAD_MAGIC)
    for k, v in entries:
        out += encode_varint(len(k))
        out += k
        out += encode_varint(len(v))
        out += v
    return bytes(out)


def _decode_payload(payload: bytes, where: str) -> list[tuple[bytes, bytes]]:
    if not payload.startswith(_PAYLOAD_MAGIC):
        raise InvalidCheckpointError(f"{where}: shard manifest was not produced by the bundle backend")
    view = memoryview(payload)
    pos = len(_PAYLOAD_MAGIC)
    out = []
    while pos < len(payload):
        n, pos = decode_varint(view, pos, where)
        k = payload[pos : pos + n]
        pos += n
        n, pos = decode_varint(view, pos, where)
        v = payload[pos : pos + n]
        pos += n
        if pos > len(payload):
            raise InvalidCheckpointError(f"{where}: shard manifest is truncated")
        out.append((k, v))
    return out


def _byte_view(a: np.ndarray[Any, Any]) -> memoryview:
    """The bytes of a C-contiguous array, without copying (any dtype, ml_dtypes included)."""
    return a.reshape(-1).view(np.uint8).data


def _little_endian(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # Bundles written here are little-endian; only foreign-order arrays are converted.
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return a if a.flags.c_contiguous else np.array(a, order="C")


@dataclass(frozen=True, slots=True)
class _Stored:
    """One readable entry: decoded proto plus its numpy dtype.

    ``problem`` says why no numpy array can hold the tensor (``None`` if one
    can); such entries stay listed and fail on ``info`` and ``read``.
    """

    entry: Entry
    dtype: np.dtype[Any]
    swap: bool
    name: bytes
    problem: str | None = None


#: numpy's limits on an array (``NPY_MAXDIMS`` and ``NPY_MAX_INTP`` bytes).
_MAX_RANK: Final = 64
_MAX_ARRAY_BYTES: Final = sys.maxsize


def _unholdable(shape: tuple[int, ...], dtype: np.dtype[Any]) -> str | None:
    """Why numpy cannot create an array of ``shape`` and ``dtype``, or ``None`` when it can.

    The size checks of an entry compare element counts with byte counts, so a
    zero dimension makes any other dimensions pass them (``[0, 2**40, 2**40]``
    holds no element). numpy still multiplies the non-zero dimensions and the
    item size and refuses the shape, with a plain ValueError at allocation.
    """
    if len(shape) > _MAX_RANK:
        return f"has {len(shape)} dimensions; numpy arrays hold at most {_MAX_RANK}"
    nbytes = dtype.itemsize
    for d in shape:
        if d:
            nbytes *= d
    if nbytes > _MAX_ARRAY_BYTES:
        return f"has shape {shape} of {dtype}, which no numpy array can hold (over 2**63 bytes addressed)"
    return None


class BundleBackend(StorageBackend):
    """TensorFlow TensorBundle checkpoints on a :class:`~trackpoint.backends.files.FileLayer`.

    Parameters
    ----------
    files
        The store. Its ``capabilities`` choose the commit strategy: atomic
        rename (local disks) or create-only writes (object stores).
    options
        Defaults for :meth:`save` when it is called without options
        (``max_shard_bytes``, ``num_writers``).

    Raises
    ------
    BackendError
        The store offers neither atomic rename nor conditional create, so no
        save could be committed atomically.
    """

    name = "bundle"

    def __init__(self, files: FileLayer, *, options: CheckpointOptions | None = None) -> None:
        caps = files.capabilities
        if not (caps.atomic_rename or caps.conditional_create):
            raise BackendError(
                f"bundle: store {files.store_name!r} has neither atomic rename nor conditional create, "
                "so checkpoints cannot be committed atomically; use a store that supports one of them"
            )
        self.files = files
        self.save_defaults = options or CheckpointOptions()
        self.capabilities = caps
        self._rename = caps.atomic_rename
        self._lock = threading.Lock()
        # Objects created by each save of the create strategy, so abort removes only those.
        self._created: dict[str, list[str]] = {}
        # Piece indexes of one-shard saves written by this process, by (prefix, save_id).
        self._single: dict[tuple[str, str], bytes] = {}

    @property
    def options(self) -> CheckpointOptions:
        """The defaults for :meth:`save` given to the constructor (:attr:`save_defaults`)."""
        return self.save_defaults

    # ------------------------------------------------------------------ naming
    def _index(self, prefix: str) -> str:
        return prefix + ".index"

    def _temp_dir(self, prefix: str) -> str:
        return prefix + "_temp"

    def _piece(self, prefix: str, spec: ShardSpec) -> str:
        return self.files.join(
            self._temp_dir(prefix), f"part-{spec.save_id}-{spec.shard_id:05d}-of-{spec.num_shards:05d}"
        )

    def _part_index(self, prefix: str, spec: ShardSpec) -> str:
        # Not ".index": only a committed checkpoint may end in .index, since tools
        # (TensorFlow's readers among them) take every *.index for a bundle.
        return f"{prefix}.part-{spec.shard_id:05d}-of-{spec.num_shards:05d}.{spec.save_id}{_PIECE_SUFFIX}"

    @staticmethod
    def _check_prefix(prefix: str) -> None:
        if not prefix or prefix.endswith("/") or not _basename(prefix):
            raise InvalidCheckpointError(f"bundle: {prefix!r} is not a checkpoint prefix (it names a directory)")

    # ------------------------------------------------------------------ writing
    def begin(self, prefix: str, save_id: str, *, overwrite: bool = True) -> None:
        """Start a save (see :meth:`StorageBackend.begin`).

        With ``overwrite=False`` an existing checkpoint is reported before
        anything is written. The prefix's directory is created here, so an
        unwritable location fails before any data is written. With
        ``overwrite=True`` on the create strategy everything at ``prefix``
        (the old checkpoint, index first, and leftovers of crashed saves) is
        deleted, since data objects are written create-only under their final
        names. A save of the same prefix still running elsewhere loses its
        ownership markers first, so it fails with ConcurrentModificationError
        instead of committing.
        """
        self._check_prefix(prefix)
        self._check_save_id(save_id)
        if not overwrite and self.files.exists(self._index(prefix)):
            raise CheckpointExistsError(
                f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True or choose another prefix"
            )
        self.files.makedirs(self.files.dirname(prefix))
        if overwrite and not self._rename:
            # New data objects take their final names create-only, so whatever
            # is at this prefix (a committed checkpoint, leftovers of a crashed
            # save) must go first; delete() removes the index before the data.
            self.delete(prefix)

    @staticmethod
    def _check_save_id(save_id: str) -> None:
        if not _SAVE_ID.match(save_id):
            raise TrackableError(f"bundle: save_id {save_id!r} must be 1-64 letters, digits, '-' or '_'")

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        # docstring inherited
        self._check_prefix(prefix)
        self._check_save_id(spec.save_id)
        marker = ""
        if self._rename:
            piece = self._piece(prefix, spec)
            self.files.makedirs(self._temp_dir(prefix))
            data_path = data_filename(piece, 0, 1)
        else:
            self.files.makedirs(self.files.dirname(prefix))
            data_path = data_filename(prefix, spec.shard_id, spec.num_shards)
            marker = self._claim(prefix, spec)
        rows = self._write_data(prefix, data_path, items, create_only=not self._rename, save_id=spec.save_id)
        nbytes = rows[-1][3] + rows[-1][4] if rows else 0
        rows.sort(key=lambda r: r[0])
        for a, b in itertools.pairwise(rows):
            if a[0] == b[0]:
                raise TrackableError(f"bundle: tensor key {a[0].decode('utf-8', 'replace')!r} is saved twice")
        # The piece index makes each shard a valid one-shard bundle of its own.
        piece_entries = [(k, encode_entry(dt, shp, 0, off, size, crc)) for k, dt, shp, off, size, crc in rows]
        piece_table = build_table([(b"", encode_header(1)), *piece_entries])
        if self._rename:
            self.files.put(self._index(piece), piece_table)
        else:
            self._publish_part(prefix, spec, marker, piece_table)
        if spec.num_shards == 1:
            # A one-shard save's piece index already is the final index; commit reuses it.
            with self._lock:
                self._single[(prefix, spec.save_id)] = piece_table
        # Shard 0's entries are the same bytes in the piece and in the merged index.
        merged_entries = (
            piece_entries
            if spec.shard_id == 0
            else [(k, encode_entry(dt, shp, spec.shard_id, off, size, crc)) for k, dt, shp, off, size, crc in rows]
        )
        payload = _encode_payload(merged_entries)
        keys = tuple(r[0].decode("utf-8", "surrogateescape") for r in rows)
        return ShardResult(spec, keys, nbytes, payload)

    def _claim(self, prefix: str, spec: ShardSpec) -> str:
        """Create this shard's (empty) piece index before its data; return its version.

        The piece index is the save's ownership marker: an overwriting save
        deletes it before it deletes or rewrites any data object, so as long as
        the marker exists the data objects of this shard are still this save's.
        """
        part = self._part_index(prefix, spec)
        try:
            version = self.files.write_versioned(part, b"", if_version=None)
        except (CheckpointExistsError, ConcurrentModificationError) as exc:
            raise ConcurrentModificationError(
                f"bundle: piece index {part!r} of {prefix!r} exists already, so save_id {spec.save_id!r} is in "
                "use by another save; give every save a fresh save_id"
            ) from exc
        self._remember(spec.save_id, part)
        return version

    def _publish_part(self, prefix: str, spec: ShardSpec, marker: str, piece_table: bytes) -> None:
        """Replace the marker by the piece index, only if the marker is still the one this save wrote."""
        part = self._part_index(prefix, spec)
        try:
            # Conditional, not blind: a blind write would resurrect a marker that an
            # overwriting save deleted, and commit would then accept its data objects.
            self.files.write_versioned(part, piece_table, if_version=marker)
        except (ConcurrentModificationError, CheckpointNotFoundError) as exc:
            raise ConcurrentModificationError(
                f"bundle: another save replaced the objects of {prefix!r} while this save was writing shard "
                f"{spec.shard_id} ({part!r} was removed); this save was not committed, retry it"
            ) from exc

    def _remember(self, save_id: str, path: str) -> None:
        with self._lock:
            self._created.setdefault(save_id, []).append(path)

    def _write_data(
        self, prefix: str, path: str, items: Sequence[WriteItem], *, create_only: bool, save_id: str
    ) -> list[tuple[bytes, int, tuple[int, ...], int, int, int]]:
        """Stream ``items`` into one data file; return ``(key, dtype, shape, offset, size, crc)`` rows."""
        rows: list[tuple[bytes, int, tuple[int, ...], int, int, int]] = []
        sink = self.files.open_sink(path, create_only=create_only)
        try:
            batch = bytearray()
            offset = 0
            for it in items:
                if not isinstance(it.key, str) or not it.key:
                    raise TrackableError(f"bundle: tensor keys must be non-empty strings, got {it.key!r}")
                key = it.key.encode("utf-8", "surrogateescape")
                if key[0] == 0:
                    # Keys starting with a NUL byte are reserved for slices of partitioned tensors.
                    raise TrackableError(f"bundle: tensor key {it.key!r} starts with a NUL character")
                arr = np.asarray(it.array)
                if arr.dtype.kind == "O":
                    data, crc = encode_strings(arr, it.key)
                    rows.append((key, DT_STRING, arr.shape, offset, len(data), crc))
                    batch += data
                    offset += len(data)
                else:
                    dt = tf_from_dtype(arr.dtype, it.key)
                    arr = _little_endian(arr)
                    view = _byte_view(arr)
                    size = len(view)
                    if size < _SMALL:
                        crc = crc32c(view)
                        batch += view
                    else:
                        if batch:
                            sink.write(batch)
                            batch = bytearray()
                        crc = 0
                        for start in range(0, size, _CHUNK):
                            chunk = view[start : start + _CHUNK]
                            crc = extend(crc, chunk)
                            sink.write(chunk)
                    rows.append((key, dt, arr.shape, offset, size, mask(crc)))
                    offset += size
                if len(batch) >= _BATCH:
                    sink.write(batch)
                    batch = bytearray()
            if batch:
                sink.write(batch)
        except BaseException:
            sink.abort()
            raise
        try:
            sink.close()
        except CheckpointExistsError as exc:
            raise self._data_conflict(prefix, path) from exc
        if create_only:
            self._remember(save_id, path)
        return rows

    def _data_conflict(self, prefix: str, path: str) -> StorageError | CheckpointExistsError:
        if self.files.exists(self._index(prefix)):
            return CheckpointExistsError(
                f"bundle: another writer committed a checkpoint at {prefix!r} while this save was writing "
                f"{path!r}; pass overwrite=True to replace it"
            )
        return ConcurrentModificationError(
            f"bundle: objects of an uncommitted save exist at {prefix!r} (a concurrent save or a crashed one; "
            f"{path!r} is already there); if that save crashed, call cleanup(directory) (with min_age=0 right after "
            "the crash) or save with overwrite=True"
        )

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        # docstring inherited
        self._check_prefix(prefix)
        n = len(shards)
        if not n or any(
            r.spec.shard_id != i or r.spec.num_shards != n or r.spec.save_id != shards[0].spec.save_id
            for i, r in enumerate(shards)
        ):
            raise InvalidCheckpointError(
                f"bundle: commit of {prefix!r} needs every shard of one save exactly once, in shard_id order"
            )
        save_id = shards[0].spec.save_id
        with self._lock:
            single = self._single.pop((prefix, save_id), None)
        table: bytes | None
        if n == 1 and self._rename:
            table = None  # the piece index on disk is renamed into place
        elif n == 1 and single is not None:
            table = single
        else:
            table = self._merge(prefix, shards)
        directory = self.files.dirname(prefix)
        if self._rename:
            self._commit_rename(prefix, shards, table, overwrite)
        else:
            self._commit_create(prefix, shards, table, overwrite)
        self.files.sync_dir(directory)
        with self._lock:
            created = self._created.pop(save_id, [])
        if not self._rename:
            # Piece indexes of every shard, also those written by other processes.
            parts = {self._part_index(prefix, r.spec) for r in shards}
            parts.update(p for p in created if _PART_RE.match(_basename(p)))
            self.files.delete(sorted(parts))
        self._remove_temp(prefix, save_id, min_age=_MIN_AGE)

    @staticmethod
    def _merge(prefix: str, shards: Sequence[ShardResult]) -> bytes:
        """The merged index of ``shards`` built from their manifests (no data is read)."""
        entries: list[tuple[bytes, bytes]] = []
        for r in shards:
            entries.extend(_decode_payload(r.payload, f"bundle: shard {r.spec.shard_id} of {prefix!r}"))
        entries.sort(key=lambda e: e[0])
        for a, b in itertools.pairwise(entries):
            if a[0] == b[0]:
                raise TrackableError(
                    f"bundle: tensor {a[0].decode('utf-8', 'replace')!r} appears in two shards of {prefix!r}"
                )
        return build_table([(b"", encode_header(len(shards))), *entries])

    def _commit_rename(self, prefix: str, shards: Sequence[ShardResult], table: bytes | None, overwrite: bool) -> None:
        index = self._index(prefix)
        directory = self.files.dirname(prefix)
        if self.files.exists(index):
            if not overwrite:
                raise CheckpointExistsError(
                    f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
                )
            # Remove the commit point before any data is replaced, so no reader
            # ever pairs the old index with new data files.
            self.files.delete([index])
            self.files.sync_dir(directory)
        # Data files of the old checkpoint (or of a save that crashed mid-commit)
        # may use another shard count; none of them is referenced any more.
        self.files.delete(self._data_files(prefix))
        n = len(shards)
        for r in shards:
            piece = self._piece(prefix, r.spec)
            src = data_filename(piece, 0, 1)
            size = self.files.size(src)
            if size != r.nbytes:
                raise DataLossError(
                    f"bundle: data of shard {r.spec.shard_id} for {prefix!r} is missing or has {size} bytes "
                    f"instead of {r.nbytes} ({src!r})"
                )
            self.files.rename(src, data_filename(prefix, r.spec.shard_id, n))
        if table is None:
            # One shard: its fsynced piece index has exactly the bytes of the final index.
            tmp = self._index(self._piece(prefix, shards[0].spec))
        else:
            tmp = self.files.join(self._temp_dir(prefix), f"merged-{shards[0].spec.save_id}.index")
            self.files.put(tmp, table)
        if self.files.exists(index) and not overwrite:
            # Another save committed while this one was renaming; it may have
            # replaced our data, so report instead of publishing a mixture.
            raise CheckpointExistsError(
                f"bundle: another save committed {prefix!r} concurrently; this save was not committed"
            )
        self.files.rename(tmp, index)

    def _commit_create(self, prefix: str, shards: Sequence[ShardResult], table: bytes | None, overwrite: bool) -> None:
        if table is None:
            table = self._merge(prefix, shards)
        index = self._index(prefix)
        n = len(shards)
        if not overwrite and self.files.exists(index):
            # The clearer error first; the create-only write below still decides races.
            raise CheckpointExistsError(
                f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
            )
        parts = [self._part_index(prefix, r.spec) for r in shards]
        # Markers first: if one is gone, the data objects may be another save's
        # by now, and their sizes would not tell (same model, same sizes).
        self._check_owned(prefix, parts, "before")
        for r in shards:
            path = data_filename(prefix, r.spec.shard_id, n)
            size = self.files.size(path)
            if size != r.nbytes:
                raise DataLossError(
                    f"bundle: data object {path!r} of {prefix!r} is missing or has {size} bytes instead of "
                    f"{r.nbytes}; the save cannot be committed"
                )
        if overwrite and self.files.exists(index):
            self.files.delete([index])
        try:
            # A versioned create-only write: the version lets a retraction
            # below remove this save's index and never another save's.
            version = self.files.write_versioned(index, table, if_version=None)
        except (CheckpointExistsError, ConcurrentModificationError) as exc:
            raise CheckpointExistsError(
                f"bundle: another writer committed {prefix!r} first; this save was not committed"
                + ("" if overwrite else " (pass overwrite=True to replace it)")
            ) from exc
        try:
            self._check_owned(prefix, parts, "after")
        except ConcurrentModificationError:
            # Another save took the prefix over between the check above and the
            # index write: its delete may have run before our index existed, so
            # retract it. Until then readers may see it; CRCs make that DataLossError.
            current = self.files.read_versioned(index)
            if current is not None and current.version == version:
                self.files.delete([index])
            raise

    def _check_owned(self, prefix: str, parts: Sequence[str], when: str) -> None:
        """Raise ConcurrentModificationError if a piece index (ownership marker) of this save is gone."""
        for part in parts:
            if not self.files.exists(part):
                raise ConcurrentModificationError(
                    f"bundle: another save replaced the objects of {prefix!r} while this save was committing "
                    f"({part!r} was removed {when} the index was written); this save was not committed"
                )

    def _listed(self, prefix: str, pattern: re.Pattern[str]) -> list[str]:
        """Paths in ``prefix``'s directory whose name matches ``pattern`` for this prefix."""
        directory = self.files.dirname(prefix)
        base = _basename(prefix)
        out = []
        for name in self.files.listdir(directory):
            m = pattern.match(name)
            if m is not None and m.group("base") == base:
                out.append(self.files.join(directory, name))
        return out

    def _data_files(self, prefix: str) -> list[str]:
        return self._listed(prefix, _DATA_RE)

    def _part_files(self, prefix: str, save_id: str | None = None) -> list[str]:
        pieces = self._listed(prefix, _PART_RE)
        if save_id is None:
            return pieces
        return [p for p in pieces if _piece_save_id(_basename(p)) == save_id]

    def _remove_temp(self, prefix: str, save_id: str, *, min_age: float | None = None) -> None:
        """Remove the ``_temp`` pieces of ``save_id``, and with ``min_age`` also other saves' old ones.

        Pieces of other saves younger than ``min_age`` seconds (or of unknown
        age) are kept: they may belong to a save of this prefix that is still
        running. The directory itself goes only once it is empty.
        """
        if not self._rename:
            return
        temp = self._temp_dir(prefix)
        now = time.time()
        doomed = []
        for name in self.files.listdir(temp):
            path = self.files.join(temp, name)
            own = name.startswith((f"part-{save_id}-", f"merged-{save_id}."))
            if own or (min_age is not None and self._old_enough([path], now, min_age)):
                doomed.append(path)
        self.files.delete(doomed)
        self.files.remove_dir(temp)

    def _old_enough(self, paths: Sequence[str], now: float, min_age: float) -> bool:
        """Whether the newest of ``paths`` was modified at least ``min_age`` seconds ago.

        An unknown (or vanished) modification time counts as young unless
        ``min_age`` is 0: removing a running save's pieces is worse than
        keeping a crashed one's.
        """
        if min_age <= 0:
            return True
        newest = -1.0
        for path in paths:
            t = self.files.modified(path)
            if t is None:
                return False
            newest = max(newest, t)
        return now - newest >= min_age

    def abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        if not _SAVE_ID.match(save_id):
            return
        with self._lock:
            self._single.pop((prefix, save_id), None)
        if self._rename:
            self._remove_temp(prefix, save_id)
            return
        with self._lock:
            created = self._created.pop(save_id, [])
        pieces = self._part_files(prefix, save_id)
        markers = [p for p in created if _PART_RE.match(_basename(p))]
        if any(not self.files.exists(p) for p in markers):
            # Another save took this prefix over (its overwrite removed our
            # markers first); the data objects there may be its own by now.
            self.files.delete(sorted(set(markers) | set(pieces)))
            return
        committed = self.files.exists(self._index(prefix))
        # A listed piece index with content names a data object its save
        # created (possibly in another process): the content is written only
        # after the create-only data write succeeded. An empty one is a bare
        # marker whose data write may have failed against another save's object.
        # Such data objects are never referenced by a committed index, because
        # create-only writes kept them unique.
        derived = (
            []
            if committed
            else [
                re.sub(r"\.part-(\d+-of-\d+)\.[^.]+\.(?:piece|index)$", r".data-\1", p)
                for p in pieces
                if self.files.size(p)
            ]
        )
        self.files.delete(sorted(set(created) | set(pieces) | set(derived)))

    # ------------------------------------------------------------------ reading
    def open_reader(self, prefix: str) -> CheckpointReader:
        # docstring inherited
        self._check_prefix(prefix)
        index = self._index(prefix)
        try:
            data = self.files.read(index)
        except CheckpointNotFoundError as exc:
            raise CheckpointNotFoundError(
                f"bundle: no checkpoint is committed at {prefix!r} ({index!r} does not exist)"
            ) from exc
        return _BundleReader(self.files, prefix, data)

    # ---------------------------------------------------------------- namespace
    def exists(self, prefix: str) -> bool:
        # docstring inherited
        return self.files.exists(self._index(prefix))

    def delete(self, prefix: str) -> None:
        # docstring inherited
        self._check_prefix(prefix)
        index = self._index(prefix)
        self.files.delete([index])
        self.files.sync_dir(self.files.dirname(prefix))
        # Piece indexes go before data objects: they are the ownership markers
        # of running saves, whose commits then refuse instead of indexing data
        # that is about to be replaced. The index is removed once more because
        # such a save may have created it after the first removal and before
        # its markers went.
        self.files.delete(self._part_files(prefix))
        self.files.delete([index])
        self.files.sync_dir(self.files.dirname(prefix))
        self.files.delete(self._data_files(prefix))
        temp = self._temp_dir(prefix)
        self.files.delete([self.files.join(temp, n) for n in self.files.listdir(temp)])
        self.files.remove_dir(temp)

    def list_checkpoints(self, directory: str) -> list[str]:
        # docstring inherited
        out = []
        for name in self.files.listdir(directory):
            if name.endswith(".index") and len(name) > 6 and not _PART_RE.match(name) and not name.startswith("."):
                out.append(self.files.join(directory, name[: -len(".index")]))
        return sorted(out)

    def cleanup(self, directory: str, *, min_age: float = _MIN_AGE) -> list[str]:
        """Remove old leftovers of saves that never committed in ``directory``; return them.

        Leftovers are data objects and piece indexes whose prefix has no index,
        piece indexes of committed prefixes, ``<prefix>_temp`` directories, and
        the hidden temporary files (``.<name>.tmp-<hex>``) that a killed
        :class:`~trackpoint.backends.local.LocalFiles` sink leaves for data and
        index files. They are grouped by checkpoint prefix, and a group is
        removed only when its newest piece was modified at least ``min_age``
        seconds ago: a running save keeps writing, so a young group may belong
        to a save in another process. A group whose age the store cannot tell
        is kept unless ``min_age`` is 0, which removes every leftover (for a
        single writer that knows the previous one crashed).
        """
        names = self.files.listdir(directory)
        committed = {n[: -len(".index")] for n in names if n.endswith(".index") and not _PART_RE.match(n)}
        # Per prefix: the files to delete, and the _temp directory to remove after them.
        groups: dict[str, list[str]] = {}
        temps: dict[str, str] = {}
        for name in names:
            path = self.files.join(directory, name)
            base = self._leftover_base(name, committed)
            if base is not None:
                groups.setdefault(base, []).append(path)
            elif name.endswith("_temp") and self._rename:
                base = name[: -len("_temp")]
                temps[base] = path
                inner = [self.files.join(path, n) for n in self.files.listdir(path)]
                groups.setdefault(base, []).extend(inner)
        now = time.time()
        removed: list[str] = []
        for base in sorted(groups.keys() | temps.keys()):
            files = groups.get(base, [])
            temp = temps.get(base)
            # The directory's own time counts too: creating or removing a
            # piece inside it updates it, even when the piece is gone by now.
            if not self._old_enough([*files, *([temp] if temp else [])], now, min_age):
                continue
            self.files.delete(files)
            removed.extend(files)
            if temp is not None:
                self.files.remove_dir(temp)
                removed.append(temp)
        return removed

    @staticmethod
    def _leftover_base(name: str, committed: set[str]) -> str | None:
        """The prefix (base name) a top-level leftover belongs to, ``None`` if ``name`` is none."""
        t = _SINK_TEMP_RE.match(name)
        if t is not None:
            inner = t.group("name")
            m = _DATA_RE.match(inner) or _PART_RE.match(inner)
            if m is not None:
                return m.group("base")
            return inner[: -len(".index")] if inner.endswith(".index") else None
        m = _PART_RE.match(name)
        if m is not None:
            return m.group("base")
        m = _DATA_RE.match(name)
        if m is not None and m.group("base") not in committed:
            return m.group("base")
        return None

    # ------------------------------------------------------------- small files
    def read_file(self, path: str) -> VersionedBytes | None:
        # docstring inherited
        return self.files.read_versioned(path)

    def write_file(self, path: str, data: bytes, *, if_version: str | _AnyVersion | None = ANY_VERSION) -> str:
        # docstring inherited
        self.files.makedirs(self.files.dirname(path))
        return self.files.write_versioned(path, data, if_version=if_version)

    def delete_file(self, path: str) -> None:
        # docstring inherited
        self.files.delete([path])

    def dirname(self, path: str) -> str:
        # docstring inherited
        return self.files.dirname(path)

    def join(self, directory: str, name: str) -> str:
        # docstring inherited
        return self.files.join(directory, name)

    def close(self) -> None:
        # docstring inherited
        self.files.close()

    def __repr__(self) -> str:
        strategy = "rename" if self._rename else "create-only"
        return f"<BundleBackend on {self.files.store_name} ({strategy} commit)>"


class _BundleReader(CheckpointReader):
    """A parsed ``.index`` and lazy access to the data files."""

    def __init__(self, files: FileLayer, prefix: str, index_bytes: bytes) -> None:
        self.prefix = prefix
        self._files = files
        self._where = prefix + ".index"
        self._closed = False
        table = read_table(index_bytes, self._where)
        if not table or table[0][0] != b"":
            raise DataLossError(f"{self._where}: the bundle header entry is missing")
        header = decode_header(table[0][1], self._where)
        if header.num_shards > _MAX_SHARDS or (header.num_shards == 0 and len(table) > 1):
            raise DataLossError(f"{self._where}: the header claims an implausible {header.num_shards} data shards")
        self._num_shards = header.num_shards
        self._entries: dict[str, _Stored] = {}
        self._slices: dict[bytes, _Stored] = {}
        self._sizes: dict[int, int] = {}
        self._paths: dict[int, str] = {}
        self._size_lock = threading.Lock()
        types: dict[int, tuple[np.dtype[Any], bool]] = {}
        for key, value in table[1:]:
            where = f"{self._where}: entry {key!r}"
            e = decode_entry(value, where)
            kind = types.get(e.dtype)
            if kind is None:
                # Unreadable types (resource, variant) stay listed and fail only when read.
                kind = (
                    dtype_from_tf(e.dtype, header.big_endian, where)
                    if e.dtype in READABLE
                    else (np.dtype(np.uint8), False)
                )
                types[e.dtype] = kind
            dtype, swap = kind
            if e.dtype == DT_STRING and not e.slices:
                count = 1
                for d in e.shape:
                    count *= d
                # Every string takes at least one length byte: this bounds the
                # element array allocated before the bytes are checked.
                if count and count + 4 > e.size:
                    raise DataLossError(f"{where}: {e.size} bytes cannot hold {count} strings")
            if not e.slices:
                if e.shard_id >= self._num_shards:
                    raise DataLossError(f"{where}: shard_id {e.shard_id} is not below num_shards {self._num_shards}")
                if e.dtype in READABLE and e.dtype != DT_STRING:
                    count = 1
                    for d in e.shape:
                        count *= d
                    if count * dtype.itemsize != e.size:
                        raise DataLossError(
                            f"{where}: shape {e.shape} of {dtype} needs {count * dtype.itemsize} bytes "
                            f"but the entry records {e.size}"
                        )
            # Strings are object arrays: one pointer per element.
            holder = np.dtype(object) if e.dtype == DT_STRING else dtype
            stored = _Stored(e, dtype, swap, key, _unholdable(e.shape, holder))
            if key[:1] == b"\x00":
                self._slices[key] = stored
            else:
                self._entries[key.decode("utf-8", "surrogateescape")] = stored
        self._keys = sorted(self._entries)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"bundle: reader of {self.prefix!r} is closed")

    def keys(self) -> list[str]:
        # docstring inherited
        return list(self._keys)

    def _get(self, key: str) -> _Stored:
        self._check_open()
        try:
            return self._entries[key]
        except KeyError:
            raise CheckpointKeyError(f"bundle: checkpoint {self.prefix!r} has no tensor {key!r}") from None

    def info(self, key: str) -> TensorInfo:
        # docstring inherited
        s = self._get(key)
        self._readable(key, s)
        return TensorInfo(s.dtype, s.entry.shape)

    def _readable(self, key: str, s: _Stored) -> None:
        if s.entry.dtype not in READABLE:
            dtype_from_tf(s.entry.dtype, False, f"{self._where}: tensor {key!r}")
        if s.problem is not None:
            raise InvalidCheckpointError(f"{self._where}: tensor {key!r} {s.problem}")

    def _data_path(self, shard_id: int) -> str:
        path = self._paths.get(shard_id)
        if path is None:
            path = self._paths[shard_id] = data_filename(self.prefix, shard_id, self._num_shards)
        return path

    def _check_range(self, key: str, e: Entry) -> str:
        """The data file of ``e``, after checking the entry lies inside it (before any allocation)."""
        path = self._data_path(e.shard_id)
        # Sizes are only ever added, and dict reads are atomic, so the lock guards the fill alone.
        size = self._sizes.get(e.shard_id)
        if size is None:
            got = self._files.size(path)
            if got is None:
                raise DataLossError(f"bundle: data file {path!r} of {self.prefix!r} is missing (needed by {key!r})")
            size = got
            with self._size_lock:
                self._sizes[e.shard_id] = size
        if e.offset + e.size > size:
            raise DataLossError(
                f"bundle: tensor {key!r} at offset {e.offset} (+{e.size} bytes) lies beyond the end of "
                f"{path!r} ({size} bytes): the file is truncated"
            )
        return path

    def _prepare(self, key: str, s: _Stored, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        if out is None:
            return np.empty(s.entry.shape, dtype=s.dtype)
        if out.dtype != s.dtype:
            raise DTypeMismatchError(f"bundle: cannot read {key!r} ({s.dtype}) into an array of dtype {out.dtype}")
        if tuple(out.shape) != s.entry.shape:
            raise ShapeMismatchError(
                f"bundle: cannot read {key!r} of shape {s.entry.shape} into an array of shape {out.shape}"
            )
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ShapeMismatchError(f"bundle: the destination for {key!r} must be C-contiguous and writeable")
        return out

    def _verify(self, key: str, s: _Stored, view: memoryview, out: np.ndarray[Any, Any]) -> None:
        if crc32c(view) != unmask(s.entry.crc32c):
            raise DataLossError(
                f"bundle: CRC-32C mismatch for tensor {key!r} in {self._data_path(s.entry.shard_id)!r} at offset "
                f"{s.entry.offset} ({s.entry.size} bytes): the data is corrupted"
            )
        if s.swap:
            out.reshape(-1).view(f"u{s.dtype.itemsize}").byteswap(inplace=True)

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        s = self._get(key)
        self._readable(key, s)
        if s.entry.slices:
            return self._assemble(key, s, out)
        return self._read_plain(key, s, out)

    def _read_plain(self, key: str, s: _Stored, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        e = s.entry
        path = self._check_range(key, e)
        if e.dtype == DT_STRING:
            buf = bytearray(e.size)
            if e.size:
                self._fill(path, [(e.offset, memoryview(buf))])
            return decode_strings(
                bytes(buf), e.shape, e.crc32c, s.dtype.byteorder == ">", f"bundle: tensor {key!r} in {path!r}"
            )
        dest = self._prepare(key, s, out)
        view = _byte_view(dest)
        if len(view):
            self._fill(path, [(e.offset, view)])
        self._verify(key, s, view, dest)
        return dest

    def _fill(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        try:
            self._files.read_ranges(path, ranges)
        except CheckpointNotFoundError as exc:
            # The index names this file, so its absence is damage, not a missing checkpoint.
            raise DataLossError(f"bundle: data file {path!r} of {self.prefix!r} is missing") from exc

    def _assemble(self, key: str, s: _Stored, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        """Build a partitioned tensor from its slice entries.

        Every slice is validated (bounds, entry, shape, range in its data file)
        and the slices must cover the tensor before the result is allocated, so
        an index claiming a huge partitioned tensor cannot trigger a huge allocation.
        """
        shape = s.entry.shape
        plan: list[tuple[tuple[slice, ...], _Stored]] = []
        covered = 0
        for extents in s.entry.slices:
            if len(extents) != len(shape):
                raise DataLossError(f"{self._where}: slice {extents} of {key!r} does not match its rank {len(shape)}")
            bounds: list[slice] = []
            for (start, length), dim in zip(extents, shape, strict=False):
                stop = dim if length < 0 else start + length
                if start < 0 or stop > dim or (length >= 0 and start > stop):
                    raise DataLossError(f"{self._where}: slice {extents} lies outside {key!r} of shape {shape}")
                bounds.append(slice(start if length >= 0 else 0, stop))
            piece = self._slices.get(encode_slice_key(s.name, list(extents)))
            if piece is None:
                raise DataLossError(f"{self._where}: slice {extents} of {key!r} has no entry")
            self._readable(key, piece)
            want = tuple(sl.stop - sl.start for sl in bounds)
            if piece.entry.shape != want or piece.entry.dtype != s.entry.dtype:
                raise DataLossError(
                    f"{self._where}: slice {extents} of {key!r} is stored as {piece.entry.shape}, expected {want}"
                )
            self._check_range(key, piece.entry)
            count = 1
            for d in want:
                count *= d
            covered += count
            plan.append((tuple(bounds), piece))
        total = 1
        for d in shape:
            total *= d
        if covered < total:
            raise DataLossError(
                f"{self._where}: the slices of {key!r} hold {covered} of its {total} elements; the tensor is incomplete"
            )
        dest = np.empty(shape, dtype=s.dtype) if s.dtype.kind == "O" else self._prepare(key, s, out)
        for index, piece in plan:
            dest[index] = self._read_plain(key, piece, None)
        return dest

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        """Read several tensors: adjacent ranges are read with one vectored call, data files in parallel."""
        self._check_open()
        results: list[np.ndarray[Any, Any]] = []
        by_shard: dict[int, list[tuple[str, _Stored, np.ndarray[Any, Any], memoryview]]] = {}
        entries = self._entries
        for key, out in requests:
            s = entries.get(key)
            if (
                s is None
                or s.entry.slices
                or s.entry.dtype == DT_STRING
                or s.entry.dtype not in READABLE
                or s.problem is not None
            ):
                # Uncommon cases (and the errors for unknown keys) take the general path.
                results.append(self.read(key, out))
                continue
            e = s.entry
            # Range check before allocating, so an implausible entry never allocates.
            self._check_range(key, e)
            dest = self._prepare(key, s, out)
            results.append(dest)
            by_shard.setdefault(e.shard_id, []).append((key, s, dest, _byte_view(dest)))

        def run(shard_id: int) -> None:
            group = by_shard[shard_id]
            self._fill(self._data_path(shard_id), [(g[1].entry.offset, g[3]) for g in group if len(g[3])])
            for key, s, dest, view in group:
                self._verify(key, s, view, dest)

        if len(by_shard) > 1 and self._files.capabilities.ranged_reads:
            with ThreadPoolExecutor(max_workers=min(8, len(by_shard)), thread_name_prefix="trackpoint-read") as ex:
                for f in [ex.submit(run, sid) for sid in by_shard]:
                    f.result()
        else:
            for sid in by_shard:
                run(sid)
        return results

    def close(self) -> None:
        # docstring inherited
        self._closed = True
