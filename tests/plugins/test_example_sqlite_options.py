"""The example sqlite plugin's ``storage_options`` (``timeout``), declared with ``StorageOptions``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

pytest.importorskip("trackpoint_example_sqlite")

from trackpoint import plugins
from trackpoint.errors import BackendOptionError, StorageError
from trackpoint.storage import CheckpointOptions


@pytest.fixture
def sqlite_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD")  # the plugin is found by its entry point
    monkeypatch.delenv("TRACKPOINT_SQLITE_TIMEOUT", raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[str]:
    """A database another connection holds the write lock of, as a concurrent writer would."""
    db = tmp_path / "store.sqlite"
    url = f"sqlite://{db}/run"
    plugins.open_backend(url).write_file(f"{url}/state", b"0")  # creates the database
    with closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        yield url
        other.execute("ROLLBACK")


def _seconds_to_fail(url: str, options: CheckpointOptions) -> float:
    backend = plugins.open_backend(url, options)
    start = time.monotonic()
    with pytest.raises(StorageError, match="database is locked"):
        backend.write_file(f"{url}/state", b"1")
    return time.monotonic() - start


@pytest.mark.usefixtures("sqlite_plugin")
def test_the_timeout_option_bounds_the_wait_for_a_lock(locked: str) -> None:
    # Without the option a writer waits 30 s for the lock; the option was dropped unread before.
    assert _seconds_to_fail(locked, CheckpointOptions(storage_options={"timeout": 0.2})) < 5


@pytest.mark.usefixtures("sqlite_plugin")
def test_the_timeout_comes_from_the_environment_when_not_given(locked: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKPOINT_SQLITE_TIMEOUT", "0.2")
    assert _seconds_to_fail(locked, CheckpointOptions()) < 5


@pytest.mark.usefixtures("sqlite_plugin")
@pytest.mark.parametrize(
    ("storage_options", "message"),
    [
        ({"timout": 1}, r"^sqlite: unknown storage_options 'timout' \(did you mean 'timeout'\?\); the sqlite store"),
        (
            {"timeout": 0},
            (
                r"^sqlite: storage_options\['timeout'\] is refused: must be a positive number of seconds "
                r"\(got float 0"
            ),
        ),
        ({"timeout": "5"}, r"^sqlite: storage_options\['timeout'\] is refused: must be a float \(got str '5'\)"),
    ],
)
def test_a_wrong_option_fails_when_the_backend_is_opened(
    tmp_path: Path, storage_options: dict[str, object], message: str
) -> None:
    with pytest.raises(BackendOptionError, match=message):
        plugins.open_backend(
            f"sqlite://{tmp_path}/store.sqlite/run", CheckpointOptions(storage_options=storage_options)
        )
    assert not (tmp_path / "store.sqlite").exists()  # refused before anything was written


@pytest.mark.usefixtures("sqlite_plugin")
def test_an_unusable_environment_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKPOINT_SQLITE_TIMEOUT", "soon")
    with pytest.raises(
        BackendOptionError,
        match=(
            r"^sqlite: storage_options\['timeout'\] \(from the environment variable TRACKPOINT_SQLITE_TIMEOUT\) "
            "is refused"
        ),
    ):
        plugins.open_backend(f"sqlite://{tmp_path}/store.sqlite/run")
