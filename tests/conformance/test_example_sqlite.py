"""The example third-party plugin (plugins/example-sqlite) passes the whole conformance kit."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

pytest.importorskip("trackpoint_example_sqlite")

from trackpoint.plugins import open_backend
from trackpoint.plugins.testing import BackendConformance
from trackpoint.storage import StorageBackend
from trackpoint_example_sqlite import _backend as sqlite_backend
from trackpoint_example_sqlite._backend import split_url

# Raw objects of the database as paths: committed tensors "<checkpoint>/<key>",
# staged ones "<checkpoint>.staged-<save>-<shard>/<key>", small files "<path>".
_ROWS = """
SELECT t.path, t.save_id, t.shard, t.key, c.save_id IS NOT NULL
FROM tensor t LEFT JOIN checkpoint c ON c.path = t.path AND c.save_id = t.save_id
"""


def _url(db: str, inner: str) -> str:
    return f"sqlite://{db}/{inner}"


class TestSqliteBackend(BackendConformance):
    # SQLite keeps a tensor in one blob: 24 MiB is already past its page
    # cache; the kit's default size works but costs seconds per test.
    huge_tensor_bytes = 6 * 2**20 + 3

    @pytest.fixture
    def backend(self, base_url: str) -> Iterator[StorageBackend]:
        # Through the plugin manager, as users get it: proves the entry point works.
        b = open_backend(base_url)
        assert b.name == "sqlite"
        yield b
        b.close()

    @pytest.fixture
    def base_url(self, tmp_path: Path) -> str:
        self.db = str(tmp_path / "store.sqlite")
        self._deleted: dict[str, tuple[object, ...]] = {}  # rows raw_delete removed, for raw_write to restore
        return _url(self.db, "conformance")

    def _raw(self) -> dict[str, tuple[str, tuple[object, ...]]]:
        """Raw path -> (table, primary key)."""
        out: dict[str, tuple[str, tuple[object, ...]]] = {}
        if not Path(self.db).is_file():
            return out
        with closing(sqlite3.connect(self.db)) as conn:
            for path, save_id, shard, key, committed in conn.execute(_ROWS):
                name = path if committed else f"{path}.staged-{save_id}-{shard}"
                out[_url(self.db, f"{name}/{key}")] = ("tensor", (path, save_id, shard, key))
            for (path,) in conn.execute("SELECT path FROM file"):
                out[_url(self.db, path)] = ("file", (path,))
        return out

    def raw_list(self, directory: str) -> list[str]:
        d = directory.rstrip("/") + "/"
        return sorted(p for p in self._raw() if p.startswith(d))

    def raw_read(self, path: str) -> bytes:
        table, pk = self._raw()[path]
        with closing(sqlite3.connect(self.db)) as conn:
            if table == "file":
                return bytes(conn.execute("SELECT data FROM file WHERE path = ?", pk).fetchone()[0])
            row = conn.execute(
                "SELECT data FROM tensor WHERE path = ? AND save_id = ? AND shard = ? AND key = ?", pk
            ).fetchone()
            return bytes(row[0])

    def raw_write(self, path: str, data: bytes) -> None:
        entry = self._raw().get(path)
        with closing(sqlite3.connect(self.db)) as conn, conn:
            if entry is None:  # the kit restores what it deleted: put the whole row back
                conn.execute("INSERT INTO tensor VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._deleted.pop(path))
            elif entry[0] == "file":
                conn.execute("UPDATE file SET data = ? WHERE path = ?", (data, *entry[1]))
            else:
                conn.execute(
                    "UPDATE tensor SET data = ? WHERE path = ? AND save_id = ? AND shard = ? AND key = ?",
                    (data, *entry[1]),
                )

    def raw_delete(self, path: str) -> None:
        table, pk = self._raw()[path]
        with closing(sqlite3.connect(self.db)) as conn, conn:
            if table == "file":
                conn.execute("DELETE FROM file WHERE path = ?", pk)
                return
            where = "path = ? AND save_id = ? AND shard = ? AND key = ?"
            self._deleted[path] = conn.execute(f"SELECT * FROM tensor WHERE {where}", pk).fetchone()
            conn.execute(f"DELETE FROM tensor WHERE {where}", pk)

    @contextlib.contextmanager
    def intercept_raw_writes(self, backend: StorageBackend, before_each: Callable[[str], None]) -> Iterator[None]:
        # The backend changes the database only in transactions (_transaction: BEGIN IMMEDIATE ... COMMIT),
        # each one atomic: a crash inside one rolls it back, as if it had come before it.
        real = sqlite_backend._transaction

        @contextlib.contextmanager
        def transaction(db: str, where: str, timeout: float) -> Iterator[sqlite3.Connection]:
            before_each(where)
            with real(db, where, timeout) as conn:
                yield conn

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sqlite_backend, "_transaction", transaction)
            yield


@pytest.mark.parametrize(
    ("url", "db", "inner"),
    [
        ("sqlite:///data/runs.sqlite/exp/ckpt-3", "/data/runs.sqlite", "exp/ckpt-3"),
        ("sqlite:///data/runs.db", "/data/runs.db", ""),
        ("sqlite://rel/x.sqlite3/a//b/", "rel/x.sqlite3", "a/b"),
        ("sqlite:///d/x.sqlite/a/../b", "/d/x.sqlite", "b"),
    ],
)
def test_url_form(url: str, db: str, inner: str) -> None:
    assert split_url(url) == (db, inner)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///data/no-database/ckpt", "names no database file"),
        ("sqlite:///d/x.sqlite/../escape", "points outside its database file"),
    ],
)
def test_bad_urls_are_rejected_when_opened(url: str, message: str) -> None:
    from trackpoint.errors import BackendError

    with pytest.raises(BackendError, match=message):
        open_backend(url)


def test_checkpoint_facade_end_to_end(tmp_path: Path) -> None:
    """The third-party backend serves the whole user API: save, latest_checkpoint, restore."""
    import numpy as np

    import trackpoint as tp

    class Model(tp.AutoTrackable):
        def __init__(self, value: np.ndarray) -> None:
            self.w = tp.Variable(value)

    run = f"sqlite://{tmp_path}/runs.sqlite/run1"
    original = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = Model(original)
    ckpt = tp.Checkpoint(model=model)
    first = ckpt.save(f"{run}/ckpt")
    model.w.assign(np.ones((2, 3), np.float32))
    second = ckpt.save(f"{run}/ckpt")
    assert (first, second) == (f"{run}/ckpt-1", f"{run}/ckpt-2")
    assert tp.latest_checkpoint(run) == second

    fresh = Model(np.zeros((2, 3), np.float32))
    tp.Checkpoint(model=fresh).restore(first).assert_consumed()
    np.testing.assert_array_equal(fresh.w.numpy(), original)
    assert (tmp_path / "runs.sqlite").is_file() and not (tmp_path / "run1").exists()
