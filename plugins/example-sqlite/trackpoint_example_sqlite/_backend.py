"""The ``sqlite`` backend: tensors as rows, commit as one transaction.

Layout of the database (created on first write):

``tensor(path, save_id, shard, key, dtype, shape, lengths, data, crc)``
    Every tensor written by every save. Rows of a save stay invisible until
    its ``checkpoint`` row names that ``save_id``.
``checkpoint(path, dir, save_id, num_tensors)``
    One row per committed checkpoint: the commit point. Commit inserts it
    (and drops the rows of the save it replaces) in one transaction.
``file(path, data, version)`` and ``counter(name, value)``
    Small files with a version drawn from a counter that never repeats.

Paths inside the database are ``/``-separated and normalised; URLs are
``sqlite://<database file>/<path>`` (see :func:`split_url`).
"""

from __future__ import annotations

import json
import posixpath
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from trackpoint.dtypes import as_dtype, is_string
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
    UnsupportedDTypeError,
)
from trackpoint.plugins import StorageOptions, option
from trackpoint.storage import (
    ANY_VERSION,
    MUST_NOT_EXIST,
    CheckpointOptions,
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

__all__ = ["SqliteBackend", "SqliteOptions", "split_url"]

SCHEME: Final = "sqlite://"
DB_SUFFIXES: Final = (".sqlite", ".sqlite3", ".db")
#: Stored in the dtype column of string tensors (numeric ones store their numpy name).
_STRING: Final = "string"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tensor (
    path TEXT NOT NULL, save_id TEXT NOT NULL, shard INTEGER NOT NULL, key TEXT NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, lengths BLOB NOT NULL, data BLOB NOT NULL, crc INTEGER NOT NULL,
    PRIMARY KEY (path, save_id, shard, key)
);
CREATE INDEX IF NOT EXISTS tensor_by_key ON tensor (path, save_id, key);
CREATE TABLE IF NOT EXISTS checkpoint (
    path TEXT PRIMARY KEY, dir TEXT NOT NULL, save_id TEXT NOT NULL, num_tensors INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoint_by_dir ON checkpoint (dir);
CREATE TABLE IF NOT EXISTS file (path TEXT PRIMARY KEY, data BLOB NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES ('file', 0);
"""


def _positive(seconds: float) -> float:
    if not seconds > 0:  # also refuses NaN
        raise ValueError("must be a positive number of seconds")
    return seconds


class SqliteOptions(StorageOptions, store="sqlite"):
    """The ``storage_options`` of the ``sqlite`` backend (names, types, defaults and environment checked by the base).

    Parameters
    ----------
    timeout
        Seconds a connection waits for another connection's lock before the operation fails with
        ``StorageError`` (``TRACKPOINT_SQLITE_TIMEOUT`` when not given; 30 by default).
    """

    timeout: float = option(default=30.0, env="TRACKPOINT_SQLITE_TIMEOUT", check=_positive)


def split_url(url: str) -> tuple[str, str]:
    """``(database file, path inside it)`` of a ``sqlite://`` URL.

    The database file is the first path component ending in ``.sqlite``,
    ``.sqlite3`` or ``.db``: ``sqlite:///data/runs.sqlite/exp1/ckpt-3`` is the
    checkpoint ``exp1/ckpt-3`` in ``/data/runs.sqlite``.
    """
    if not url.startswith(SCHEME):
        raise BackendError(f"sqlite: {url!r} is not a sqlite:// URL")
    parts = url[len(SCHEME) :].split("/")
    for i, part in enumerate(parts):
        if part.endswith(DB_SUFFIXES):
            db = "/".join(parts[: i + 1])
            inner = posixpath.normpath("/".join(parts[i + 1 :]) or ".")
            if inner == ".":
                inner = ""
            if inner.startswith(".."):
                raise BackendError(f"sqlite: {url!r} points outside its database file")
            return db, inner
    raise BackendError(
        f"sqlite: {url!r} names no database file; write sqlite:///abs/path/<name>.sqlite/<checkpoint path> "
        f"(the file name must end in one of {', '.join(DB_SUFFIXES)})"
    )


def _url(db: str, inner: str) -> str:
    return f"{SCHEME}{db}/{inner}" if inner else f"{SCHEME}{db}"


# ---------------------------------------------------------------- tensor rows
@dataclass(frozen=True, slots=True)
class _Row:
    key: str
    dtype: str
    shape: str
    lengths: bytes
    data: bytes
    crc: int


def _encode(key: str, array: np.ndarray[Any, Any]) -> _Row:
    a = np.asarray(array)
    try:
        dtype = as_dtype(a.dtype)  # trackpoint's dtype policy: native byte order, strings as objects
    except UnsupportedDTypeError as exc:
        raise UnsupportedDTypeError(f"sqlite: tensor {key!r}: {exc}") from exc
    if is_string(dtype):
        elems: list[bytes] = []
        for idx, x in np.ndenumerate(a):
            if isinstance(x, str):
                x = x.encode("utf-8")
            if not isinstance(x, (bytes, bytearray, memoryview)):
                raise UnsupportedDTypeError(
                    f"sqlite: string tensor {key!r} holds {type(x).__name__} at {idx}; only bytes or str can be stored"
                )
            elems.append(bytes(x))
        lengths = np.array([len(e) for e in elems], dtype="<u8").tobytes()
        name, data = _STRING, b"".join(elems)
    else:
        name, lengths = dtype.name, b""
        data = np.ascontiguousarray(a, dtype=dtype.newbyteorder("<")).tobytes()
    return _Row(key, name, json.dumps(list(a.shape)), lengths, data, zlib.crc32(data, zlib.crc32(lengths)))


def _decode(
    where: str, dtype_name: str, shape_text: str, lengths: bytes, data: bytes, crc: int
) -> np.ndarray[Any, Any]:
    if zlib.crc32(data, zlib.crc32(lengths)) != crc:
        raise DataLossError(f"{where} fails its CRC-32 check; the database is damaged, restore another checkpoint")
    info = _info(where, dtype_name, shape_text)
    if info.dtype.kind != "O":
        if len(data) != info.nbytes:
            raise DataLossError(f"{where} holds {len(data)} bytes, its shape and dtype need {info.nbytes}")
        return np.frombuffer(data, dtype=info.dtype.newbyteorder("<")).astype(info.dtype).reshape(info.shape)
    sizes = np.frombuffer(lengths, dtype="<u8")
    if sizes.size != info.size or int(sizes.sum()) != len(data):
        raise DataLossError(f"{where}: string lengths do not match the stored data")
    out = np.empty(info.size, dtype=object)
    pos = 0
    for i, n in enumerate(sizes.tolist()):
        out[i] = data[pos : pos + n]
        pos += n
    return out.reshape(info.shape)


def _info(where: str, dtype_name: str, shape_text: str) -> TensorInfo:
    try:
        dtype = np.dtype(object) if dtype_name == _STRING else as_dtype(dtype_name)
        shape = tuple(int(d) for d in json.loads(shape_text))
    except (KeyError, ValueError, TypeError) as exc:  # UnsupportedDTypeError is a TypeError
        raise InvalidCheckpointError(
            f"{where} has an unreadable dtype or shape; it was not written by trackpoint"
        ) from exc
    return TensorInfo(dtype, shape)


# ---------------------------------------------------------------- connections
_init_lock = threading.Lock()


@contextmanager
def _errors(where: str) -> Iterator[None]:
    """Translate sqlite3 errors into trackpoint errors naming ``where``."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StorageError(f"sqlite: {where} failed: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        # "file is not a database", "database disk image is malformed"
        raise InvalidCheckpointError(f"sqlite: {where}: the database file is damaged or not SQLite ({exc})") from exc


def _connect(db: str, where: str, timeout: float) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), so a
    # commit is exactly the statements between BEGIN and COMMIT.
    with _errors(where):
        conn = sqlite3.connect(db, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            # user_version marks an initialised file; checked per connection
            # (not cached per path) so a deleted and re-created file works.
            # Initialisation is serialised: switching to WAL needs an exclusive
            # lock, and SQLite reports "database is locked" at once, without
            # waiting, when two connections race for it.
            with _init_lock:
                if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                    # WAL lets an open reader keep its snapshot while others commit.
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA + "PRAGMA user_version = 1;")
        except BaseException:
            conn.close()
            raise
    return conn


@contextmanager
def _transaction(db: str, where: str, timeout: float) -> Iterator[sqlite3.Connection]:
    conn = _connect(db, where, timeout)
    try:
        with _errors(where):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
    finally:
        conn.close()


@contextmanager
def _query(db: str, where: str, timeout: float) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection, or ``None`` when the database file does not exist (nothing is stored)."""
    if not Path(db).is_file():
        yield None
        return
    conn = _connect(db, where, timeout)
    try:
        with _errors(where):
            yield conn
    finally:
        conn.close()


# ---------------------------------------------------------------- reader
class _Reader(CheckpointReader):
    def __init__(self, prefix: str, db: str, inner: str, timeout: float) -> None:
        self.prefix = prefix
        self._where = f"checkpoint {prefix!r}"
        self._lock = threading.Lock()
        self._conn = _connect(db, self._where, timeout)
        try:
            with _errors(self._where):
                # A read transaction pins a WAL snapshot: this reader keeps
                # seeing the checkpoint it opened even if it is overwritten.
                self._conn.execute("BEGIN")
                row = self._conn.execute(
                    "SELECT save_id, num_tensors FROM checkpoint WHERE path = ?", (inner,)
                ).fetchone()
                if row is None:
                    raise CheckpointNotFoundError(f"sqlite: no checkpoint is committed at {prefix!r}")
                self._save_id, expected = str(row[0]), int(row[1])
                self._path = inner
                rows = self._conn.execute(
                    "SELECT key, dtype, shape FROM tensor WHERE path = ? AND save_id = ?", (inner, self._save_id)
                ).fetchall()
        except BaseException:
            self._conn.close()
            raise
        self._infos = {str(k): (str(d), str(s)) for k, d, s in rows}
        if len(self._infos) != expected:
            self._conn.close()
            raise DataLossError(
                f"sqlite: checkpoint {prefix!r} lists {expected} tensors but {len(self._infos)} rows remain"
            )
        self._keys = sorted(self._infos)

    def keys(self) -> list[str]:
        return list(self._keys)

    def info(self, key: str) -> TensorInfo:
        if key not in self._infos:
            raise CheckpointKeyError(f"sqlite: checkpoint {self.prefix!r} has no tensor {key!r}")
        return _info(f"sqlite: tensor {key!r} of {self.prefix!r}", *self._infos[key])

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        info = self.info(key)
        if out is not None and info.dtype.kind != "O":
            if out.dtype != info.dtype:
                raise DTypeMismatchError(f"sqlite: cannot read {key!r} ({info.dtype}) into dtype {out.dtype}")
            if out.shape != info.shape:
                raise ShapeMismatchError(f"sqlite: cannot read {key!r} {info.shape} into shape {out.shape}")
        where = f"sqlite: tensor {key!r} of {self.prefix!r}"
        with self._lock, _errors(where):
            row = self._conn.execute(
                "SELECT dtype, shape, lengths, data, crc FROM tensor WHERE path = ? AND save_id = ? AND key = ?",
                (self._path, self._save_id, key),
            ).fetchone()
        if row is None:
            raise DataLossError(f"{where} is listed but its row is gone")
        array = _decode(where, str(row[0]), str(row[1]), bytes(row[2]), bytes(row[3]), int(row[4]))
        if out is None or array.dtype.kind == "O":
            return array
        np.copyto(out, array)
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# ---------------------------------------------------------------- backend
class SqliteBackend(StorageBackend):
    """Checkpoints and small files as rows of SQLite database files."""

    name = "sqlite"

    def __init__(self, options: SqliteOptions | None = None) -> None:
        from trackpoint_example_sqlite import CAPABILITIES

        self.capabilities = CAPABILITIES
        self.options = options if options is not None else SqliteOptions()

    @classmethod
    def for_url(cls, url: str, options: CheckpointOptions) -> SqliteBackend:
        """The factory: checks ``url`` and the storage options, so that a mistake fails when the backend is opened."""
        split_url(url)
        return cls(SqliteOptions.from_storage_options(options.storage_options))

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        # docstring inherited
        db, inner = split_url(prefix)
        rows: dict[str, _Row] = {}
        for it in items:  # encode first: a bad item fails before the database is touched
            if it.key in rows:
                raise InvalidCheckpointError(
                    f"sqlite: tensor {it.key!r} appears twice in shard {spec.shard_id} of {prefix!r}"
                )
            rows[it.key] = _encode(it.key, it.array)
        with _transaction(db, f"writing shard {spec.shard_id} of {prefix!r}", self.options.timeout) as conn:
            conn.execute(
                "DELETE FROM tensor WHERE path = ? AND save_id = ? AND shard = ?", (inner, spec.save_id, spec.shard_id)
            )
            conn.executemany(
                "INSERT INTO tensor VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (inner, spec.save_id, spec.shard_id, r.key, r.dtype, r.shape, r.lengths, r.data, r.crc)
                    for r in rows.values()
                ],
            )
        return ShardResult(spec, tuple(rows), sum(len(r.data) + len(r.lengths) for r in rows.values()))

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        # docstring inherited
        db, inner = split_url(prefix)
        seen: set[str] = set()
        for r in shards:
            dup = seen.intersection(r.keys)
            if dup:
                raise InvalidCheckpointError(
                    f"sqlite: tensor {sorted(dup)[0]!r} appears in two shards of {prefix!r}; each key must be "
                    "written by exactly one shard"
                )
            seen.update(r.keys)
        specs = [r.spec for r in shards]
        if (
            not specs
            or len({(s.save_id, s.num_shards) for s in specs}) != 1
            or sorted(s.shard_id for s in specs) != list(range(specs[0].num_shards))
        ):
            # A manifest lost on its way here must not commit a partial checkpoint.
            got = sorted((s.save_id, s.shard_id, s.num_shards) for s in specs)
            raise InvalidCheckpointError(
                f"sqlite: cannot commit {prefix!r}: expected every shard of one save exactly once, "
                f"got (save, shard, of) {got}"
            )
        save_id = specs[0].save_id
        with _transaction(db, f"committing {prefix!r}", self.options.timeout) as conn:
            old = conn.execute("SELECT save_id FROM checkpoint WHERE path = ?", (inner,)).fetchone()
            if old is not None and not overwrite:
                raise CheckpointExistsError(
                    f"sqlite: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
                )
            for r in shards:
                (count,) = conn.execute(
                    "SELECT COUNT(*) FROM tensor WHERE path = ? AND save_id = ? AND shard = ?",
                    (inner, save_id, r.spec.shard_id),
                ).fetchone()
                if count != len(r.keys):
                    raise CheckpointNotFoundError(
                        f"sqlite: shard {r.spec.shard_id} of save {save_id} for {prefix!r} has {count} of its "
                        f"{len(r.keys)} tensors; write it again before committing"
                    )
            if old is not None:
                conn.execute("DELETE FROM tensor WHERE path = ? AND save_id = ?", (inner, old[0]))
            conn.execute(
                "INSERT OR REPLACE INTO checkpoint VALUES (?, ?, ?, ?)",
                (inner, posixpath.dirname(inner), save_id, len(seen)),
            )

    def abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        db, inner = split_url(prefix)
        if not Path(db).is_file():
            return
        with _transaction(db, f"aborting save {save_id} of {prefix!r}", self.options.timeout) as conn:
            # Never the rows of a committed checkpoint, even if it is this save.
            conn.execute(
                "DELETE FROM tensor WHERE path = ? AND save_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM checkpoint WHERE path = ? AND save_id = ?)",
                (inner, save_id, inner, save_id),
            )

    def open_reader(self, prefix: str) -> CheckpointReader:
        # docstring inherited
        db, inner = split_url(prefix)
        if not Path(db).is_file():
            raise CheckpointNotFoundError(f"sqlite: no checkpoint is committed at {prefix!r} (no database {db!r})")
        return _Reader(prefix, db, inner, self.options.timeout)

    def exists(self, prefix: str) -> bool:
        # docstring inherited
        db, inner = split_url(prefix)
        with _query(db, f"looking up {prefix!r}", self.options.timeout) as conn:
            return (
                conn is not None
                and conn.execute("SELECT 1 FROM checkpoint WHERE path = ?", (inner,)).fetchone() is not None
            )

    def delete(self, prefix: str) -> None:
        # docstring inherited
        db, inner = split_url(prefix)
        if not Path(db).is_file():
            return
        with _transaction(db, f"deleting {prefix!r}", self.options.timeout) as conn:
            row = conn.execute("SELECT save_id FROM checkpoint WHERE path = ?", (inner,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM checkpoint WHERE path = ?", (inner,))
                conn.execute("DELETE FROM tensor WHERE path = ? AND save_id = ?", (inner, row[0]))

    def list_checkpoints(self, directory: str) -> list[str]:
        # docstring inherited
        db, inner = split_url(directory)
        with _query(db, f"listing {directory!r}", self.options.timeout) as conn:
            if conn is None:
                return []
            rows = conn.execute("SELECT path FROM checkpoint WHERE dir = ?", (inner,)).fetchall()
        return sorted(_url(db, str(p)) for (p,) in rows)

    def read_file(self, path: str) -> VersionedBytes | None:
        # docstring inherited
        db, inner = split_url(path)
        with _query(db, f"reading {path!r}", self.options.timeout) as conn:
            row = (
                None
                if conn is None
                else conn.execute("SELECT data, version FROM file WHERE path = ?", (inner,)).fetchone()
            )
        return None if row is None else VersionedBytes(bytes(row[0]), str(row[1]))

    def write_file(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        # docstring inherited
        # version_condition turns the deprecated 0.1 spelling None into MUST_NOT_EXIST, with a warning.
        if_version = version_condition(if_version)
        db, inner = split_url(path)
        with _transaction(db, f"writing {path!r}", self.options.timeout) as conn:
            row = conn.execute("SELECT version FROM file WHERE path = ?", (inner,)).fetchone()
            if if_version is MUST_NOT_EXIST and row is not None:
                raise ConcurrentModificationError(f"sqlite: {path!r} exists already (create-only write)")
            if isinstance(if_version, str) and (row is None or str(row[0]) != if_version):
                raise ConcurrentModificationError(
                    f"sqlite: {path!r} changed since version {if_version} was read; re-read it and retry"
                )
            # Versions come from a counter, never from the row, so a file that
            # is deleted and written again cannot reuse an old version.
            conn.execute("UPDATE counter SET value = value + 1 WHERE name = 'file'")
            (version,) = conn.execute("SELECT value FROM counter WHERE name = 'file'").fetchone()
            conn.execute("INSERT OR REPLACE INTO file VALUES (?, ?, ?)", (inner, bytes(data), version))
        return str(version)

    def delete_file(self, path: str) -> None:
        # docstring inherited
        db, inner = split_url(path)
        if Path(db).is_file():
            with _transaction(db, f"deleting {path!r}", self.options.timeout) as conn:
                conn.execute("DELETE FROM file WHERE path = ?", (inner,))
