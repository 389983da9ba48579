"""The ``checkpoint`` state file: format, relative paths, conditional updates, recovery."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trackpoint import state
from trackpoint._resolve import open_backend
from trackpoint.errors import ConcurrentModificationError, InvalidCheckpointError
from trackpoint.storage import ANY_VERSION, StorageBackend, WriteItem

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


@pytest.fixture
def run() -> str:
    return f"memory://state-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def backend(run: str) -> StorageBackend:
    return open_backend(run)


def _commit(backend: StorageBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("x", np.arange(3, dtype=np.float32))])


def test_written_file_is_tensorflow_text_format(backend: StorageBackend, run: str) -> None:
    state.update_checkpoint_state(backend, run, f"{run}/ckpt-1")
    got = backend.read_file(f"{run}/checkpoint")
    assert got is not None
    # Byte-for-byte what tf.train.Checkpoint.save writes (spec section 7).
    assert got.data == b'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'


def test_timestamps_and_preserved_time_round_trip(backend: StorageBackend, run: str) -> None:
    state.update_checkpoint_state(
        backend,
        run,
        f"{run}/ckpt-2",
        all_model_checkpoint_paths=[f"{run}/ckpt-1", f"{run}/ckpt-2"],
        all_model_checkpoint_timestamps=[10.5, 20.25],
        last_preserved_timestamp=3.0,
    )
    st = state.read_checkpoint_state(run)
    assert st is not None
    assert st.model_checkpoint_path == f"{run}/ckpt-2"
    assert list(st.all_model_checkpoint_paths) == [f"{run}/ckpt-1", f"{run}/ckpt-2"]
    assert list(st.all_model_checkpoint_timestamps) == [10.5, 20.25]
    assert st.last_preserved_timestamp == 3.0


def test_model_path_is_appended_when_not_last(backend: StorageBackend, run: str) -> None:
    st = state.update_checkpoint_state(backend, run, f"{run}/ckpt-3", all_model_checkpoint_paths=[f"{run}/ckpt-1"])
    assert list(st.all_model_checkpoint_paths) == ["ckpt-1", "ckpt-3"]


def test_absolute_paths_kept_when_not_relative(backend: StorageBackend, run: str) -> None:
    st = state.update_checkpoint_state(backend, run, f"{run}/ckpt-1", save_relative_paths=False)
    assert st.model_checkpoint_path == f"{run}/ckpt-1"


def test_relative_local_directory_paths_are_relative_to_it(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # TF1 semantics: a cwd-relative prefix inside a relative directory is stored relative to the directory.
    monkeypatch.chdir(tmp_path)
    assert state._to_stored("run/ckpt-1", "run", relative=False) == "ckpt-1"
    assert state._to_stored(str(tmp_path / "run" / "ckpt-1"), "run", relative=True) == "ckpt-1"
    assert state._to_stored("/abs/run/ckpt-1", "/abs/run", relative=False) == "/abs/run/ckpt-1"
    assert state._to_stored("s3://b/run/ckpt-1", "s3://b/run", relative=True) == "ckpt-1"
    assert state._to_stored("s3://b/run/ckpt-1", "s3://b/run", relative=False) == "s3://b/run/ckpt-1"


def test_timestamp_count_mismatch_is_rejected(backend: StorageBackend, run: str) -> None:
    with pytest.raises(InvalidCheckpointError, match=r"has 1 entries but there are 2 checkpoint paths"):
        state.update_checkpoint_state(
            backend,
            run,
            f"{run}/ckpt-2",
            all_model_checkpoint_paths=[f"{run}/ckpt-1", f"{run}/ckpt-2"],
            all_model_checkpoint_timestamps=[1.0],
        )


@pytest.mark.parametrize("relative", [True, False])
def test_save_path_equal_to_state_file_is_rejected(backend: StorageBackend, run: str, relative: bool) -> None:
    with pytest.raises(InvalidCheckpointError, match=r"conflicts with the checkpoint state file"):
        state.update_checkpoint_state(backend, run, f"{run}/checkpoint", save_relative_paths=relative)
    with pytest.raises(InvalidCheckpointError, match=r"latest_filename"):
        state.update_checkpoint_state(backend, run, f"{run}/latest", latest_filename="latest")
    assert backend.read_file(f"{run}/checkpoint") is None


def test_missing_state_file_reads_as_none(run: str, tmp_path: Any) -> None:
    assert state.read_checkpoint_state(run) is None
    assert state.latest_checkpoint(run) is None
    missing = str(tmp_path / "never" / "created")
    assert state.read_checkpoint_state(missing) is None
    assert state.latest_checkpoint(missing) is None


@pytest.mark.parametrize(
    "content",
    [b"this is { not text format", b'all_model_checkpoint_paths: "ckpt-1"\n', b"\xff\xfe"],
    ids=["garbage", "no-model-path", "not-utf8"],
)
def test_unusable_state_file_warns_and_reads_as_none(
    backend: StorageBackend, run: str, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    backend.write_file(f"{run}/checkpoint", content)
    with caplog.at_level(logging.WARNING, logger="trackpoint.state"):
        assert state.read_checkpoint_state(run) is None
    assert "checkpoint state file" in caplog.text
    # A writer can still replace it (its version is known even though it does not parse).
    state.update_checkpoint_state(backend, run, f"{run}/ckpt-1")
    st = state.read_checkpoint_state(run)
    assert st is not None and st.model_checkpoint_path == f"{run}/ckpt-1"


def test_state_file_written_by_tensorflow_parses(backend: StorageBackend, run: str) -> None:
    # As written by tf.train.CheckpointManager (timestamps, preserved time, relative paths).
    text = (
        b'model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-2"\n'
        b'all_model_checkpoint_paths: "ckpt-3"\nall_model_checkpoint_timestamps: 1700000000.5\n'
        b"all_model_checkpoint_timestamps: 1700000100.25\nlast_preserved_timestamp: 1699999999.0\n"
    )
    backend.write_file(f"{run}/checkpoint", text)
    st = state.read_checkpoint_state(run)
    assert st is not None
    assert list(st.all_model_checkpoint_paths) == [f"{run}/ckpt-2", f"{run}/ckpt-3"]
    assert list(st.all_model_checkpoint_timestamps) == [1700000000.5, 1700000100.25]


@pytest.mark.parametrize("case", ["simple", "manager", "tf1_saver", "tf1_saver/sharded"])
def test_tensorflow_state_files_round_trip_byte_for_byte(case: str, backend: StorageBackend, run: str) -> None:
    written_by_tf = (FIXTURES / case / "checkpoint").read_bytes()
    backend.write_file(f"{run}/checkpoint", written_by_tf)
    st = state.read_checkpoint_state(run)
    assert st is not None
    # Rewrite it through update_checkpoint_state with the same content: TF's exact bytes come out.
    state.update_checkpoint_state(
        backend,
        run,
        st.model_checkpoint_path,
        all_model_checkpoint_paths=list(st.all_model_checkpoint_paths),
        all_model_checkpoint_timestamps=list(st.all_model_checkpoint_timestamps) or None,
        last_preserved_timestamp=st.last_preserved_timestamp or None,
    )
    rewritten = backend.read_file(f"{run}/checkpoint")
    assert rewritten is not None and rewritten.data == written_by_tf


def test_latest_checkpoint_returns_committed_state_path(backend: StorageBackend, run: str) -> None:
    _commit(backend, f"{run}/ckpt-1")
    _commit(backend, f"{run}/ckpt-2")
    state.update_checkpoint_state(backend, run, f"{run}/ckpt-1")
    # ckpt-2 exists too but under the same name with a higher number: the state is stale.
    assert state.latest_checkpoint(run) == f"{run}/ckpt-2"
    state.update_checkpoint_state(backend, run, f"{run}/ckpt-2")
    assert state.latest_checkpoint(run) == f"{run}/ckpt-2"


def test_latest_checkpoint_trusts_state_over_known_higher_numbers(backend: StorageBackend, run: str) -> None:
    # ckpt-100 is listed in the state file, so ckpt-7 superseded it on purpose.
    _commit(backend, f"{run}/ckpt-100")
    _commit(backend, f"{run}/ckpt-7")
    state.update_checkpoint_state(
        backend, run, f"{run}/ckpt-7", all_model_checkpoint_paths=[f"{run}/ckpt-100", f"{run}/ckpt-7"]
    )
    assert state.latest_checkpoint(run) == f"{run}/ckpt-7"


def test_latest_checkpoint_never_returns_an_uncommitted_path(backend: StorageBackend, run: str) -> None:
    _commit(backend, f"{run}/ckpt-1")
    state.update_checkpoint_state(backend, run, f"{run}/ckpt-2")  # ckpt-2 never committed
    assert state.latest_checkpoint(run) == f"{run}/ckpt-1"
    backend.delete(f"{run}/ckpt-1")
    assert state.latest_checkpoint(run) is None


def test_latest_checkpoint_without_state_file_lists_by_number(backend: StorageBackend, run: str) -> None:
    for n in (2, 10, 9):
        _commit(backend, f"{run}/ckpt-{n}")
    _commit(backend, f"{run}/unnumbered")
    # Numeric, not lexicographic: 10 > 9.
    assert state.latest_checkpoint(run) == f"{run}/ckpt-10"


def test_latest_checkpoint_of_a_deleted_series_takes_the_newest_other_series_in_one_listing(
    backend: StorageBackend, run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The state file names ckpt-7, since deleted with its whole series: the series committed to last wins,
    # whatever its numbers, and the directory is listed once (each listing is a request on object stores).
    _commit(backend, f"{run}/other-500")
    _commit(backend, f"{run}/eval-3")
    state.update_checkpoint_state(backend, run, f"{run}/ckpt-7")
    listed = backend.list_checkpoints
    calls: list[str] = []
    monkeypatch.setattr(backend, "list_checkpoints", lambda d: calls.append(d) or listed(d))
    assert state._latest_in(backend, run) == f"{run}/eval-3"
    assert calls == [run]
    _commit(backend, f"{run}/ckpt-2")  # the state file's series is back: it wins over a newer commit elsewhere
    _commit(backend, f"{run}/eval-4")
    assert state._latest_in(backend, run) == f"{run}/ckpt-2"


def test_latest_checkpoint_keeps_unnumbered_state_path(backend: StorageBackend, run: str) -> None:
    _commit(backend, f"{run}/model")
    state.update_checkpoint_state(backend, run, f"{run}/model")
    assert state.latest_checkpoint(run) == f"{run}/model"


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        ("ck\\000pt-2", "contains a NUL byte"),
        ("s3://elsewhere/run/ckpt-2", "is on another store than the directory"),
        ("memory://another-run/ckpt-2", None),  # same store, another directory: simply not committed
        ("/abs/local/ckpt-2", "is on another store than the directory"),
    ],
)
def test_latest_checkpoint_falls_back_to_listing_when_the_state_file_names_an_unusable_path(
    backend: StorageBackend, run: str, stored: str, why: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    # docs/format.md: the state file is never trusted blindly; a path it names that cannot be a
    # checkpoint of this directory is recovered from by listing, never raised.
    for n in (1, 3):
        _commit(backend, f"{run}/ckpt-{n}")
    backend.write_file(f"{run}/checkpoint", f'model_checkpoint_path: "{stored}"\n'.encode())
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        assert state.latest_checkpoint(run) == f"{run}/ckpt-3"
    if why is not None:
        assert why in caplog.text and "by listing" in caplog.text


def test_latest_checkpoint_falls_back_on_a_local_directory_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = str(tmp_path)
    local = open_backend(run)
    _commit(local, f"{run}/ckpt-4")
    for stored in ("ckpt\\000-9", "gs://bucket/ckpt-9", "memory://x/ckpt-9", "zarr+s3://b/ckpt-9"):
        (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{stored}"\n')
        with caplog.at_level(logging.WARNING, logger="trackpoint"):
            assert state.latest_checkpoint(run) == f"{run}/ckpt-4"
    assert caplog.text.count("by listing") == 4


def test_checkpoint_number() -> None:
    assert state.checkpoint_number("s3://b/run/ckpt-12") == 12
    assert state.checkpoint_number("/x/model-00000007") == 7
    assert state.checkpoint_number("/x/model") is None
    assert state.checkpoint_number("/x-3/model") is None


class _RacingBackend:
    """Wraps a backend; before the first conditional write, another writer sneaks in."""

    def __init__(self, inner: StorageBackend, intruder: Any) -> None:
        self._inner = inner
        self._intruder = intruder
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write_file(self, path: str, data: bytes, *, if_version: Any = ANY_VERSION) -> str:
        if self._intruder is not None:
            intruder, self._intruder = self._intruder, None
            intruder()
        try:
            return self._inner.write_file(path, data, if_version=if_version)
        except ConcurrentModificationError:
            self.conflicts += 1
            raise


def test_lost_race_merges_other_writers_checkpoint(backend: StorageBackend, run: str) -> None:
    state.update_checkpoint_state(
        backend, run, f"{run}/a-1", all_model_checkpoint_paths=[f"{run}/a-1"], all_model_checkpoint_timestamps=[1.0]
    )

    def other_writer() -> None:
        state.update_checkpoint_state(
            backend,
            run,
            f"{run}/b-1",
            all_model_checkpoint_paths=[f"{run}/a-1", f"{run}/b-1"],
            all_model_checkpoint_timestamps=[1.0, 2.0],
        )

    racing = _RacingBackend(backend, other_writer)
    st = state.update_checkpoint_state(
        racing,  # type: ignore[arg-type]
        run,
        f"{run}/a-2",
        all_model_checkpoint_paths=[f"{run}/a-1", f"{run}/a-2"],
        all_model_checkpoint_timestamps=[1.0, 3.0],
    )
    assert racing.conflicts == 1
    assert list(st.all_model_checkpoint_paths) == ["a-1", "b-1", "a-2"]
    assert list(st.all_model_checkpoint_timestamps) == [1.0, 2.0, 3.0]
    assert st.model_checkpoint_path == "a-2"


def test_lost_race_respects_other_writers_removal(backend: StorageBackend, run: str) -> None:
    state.update_checkpoint_state(backend, run, f"{run}/a-2", all_model_checkpoint_paths=[f"{run}/a-1", f"{run}/a-2"])

    def other_writer() -> None:
        state.update_checkpoint_state(backend, run, f"{run}/a-2")  # drops a-1

    racing = _RacingBackend(backend, other_writer)
    st = state.update_checkpoint_state(
        racing,  # type: ignore[arg-type]
        run,
        f"{run}/a-3",
        all_model_checkpoint_paths=[f"{run}/a-1", f"{run}/a-2", f"{run}/a-3"],
    )
    assert list(st.all_model_checkpoint_paths) == ["a-2", "a-3"]


def test_gives_up_after_bounded_retries(backend: StorageBackend, run: str) -> None:
    class _AlwaysLoses:
        name = "always-loses"

        def read_file(self, path: str) -> Any:
            return backend.read_file(path)

        def write_file(self, path: str, data: bytes, *, if_version: Any = ANY_VERSION) -> str:
            raise ConcurrentModificationError(f"{path!r} changed")

    with pytest.raises(ConcurrentModificationError, match=r"gave up updating the checkpoint state file .* after 16"):
        state.update_checkpoint_state(_AlwaysLoses(), run, f"{run}/ckpt-1")  # type: ignore[arg-type]
