"""Small-file preconditions have public names: ANY_VERSION, MUST_NOT_EXIST; ``None`` still works, with a warning."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.memory import MemoryBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import ConcurrentModificationError
from trackpoint.storage import (
    ANY_VERSION,
    MUST_NOT_EXIST,
    AnyVersion,
    MustNotExist,
    StorageBackend,
    VersionCondition,
    version_condition,
)


def test_sentinels_are_public_singletons_that_survive_pickling() -> None:
    assert AnyVersion() is ANY_VERSION and MustNotExist() is MUST_NOT_EXIST
    assert repr(ANY_VERSION) == "ANY_VERSION" and repr(MUST_NOT_EXIST) == "MUST_NOT_EXIST"
    # A condition travels to another process (a shard writer) as the same object.
    assert pickle.loads(pickle.dumps(MUST_NOT_EXIST)) is MUST_NOT_EXIST
    assert pickle.loads(pickle.dumps(ANY_VERSION)) is ANY_VERSION
    assert isinstance(MUST_NOT_EXIST, VersionCondition) and isinstance("v1", VersionCondition)


def test_version_condition_translates_none_with_a_warning_naming_the_new_spelling() -> None:
    assert version_condition(ANY_VERSION) is ANY_VERSION
    assert version_condition("17") == "17"
    with pytest.warns(DeprecationWarning, match=r"if_version=None is deprecated; pass if_version=MUST_NOT_EXIST"):
        assert version_condition(None) is MUST_NOT_EXIST
    with pytest.raises(TypeError, match="if_version must be a version token .* got int"):
        version_condition(3)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "bundle"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    if request.param == "memory":
        return MemoryBackend()
    return BundleBackend(LocalFiles())


def _path(backend: StorageBackend, tmp_path: Path, name: str) -> str:
    return f"memory://conditions/{tmp_path.name}/{name}" if isinstance(backend, MemoryBackend) else str(tmp_path / name)


def test_must_not_exist_creates_once(backend: StorageBackend, tmp_path: Path) -> None:
    path = _path(backend, tmp_path, "state")
    v = backend.write_file(path, b"one", if_version=MUST_NOT_EXIST)
    with pytest.raises(ConcurrentModificationError, match="exists already"):
        backend.write_file(path, b"two", if_version=MUST_NOT_EXIST)
    got = backend.read_file(path)
    assert got is not None and (got.data, got.version) == (b"one", v)


def test_none_still_means_create_only_and_warns(backend: StorageBackend, tmp_path: Path) -> None:
    path = _path(backend, tmp_path, "legacy")
    with pytest.warns(DeprecationWarning, match="MUST_NOT_EXIST"):
        backend.write_file(path, b"one", if_version=None)
    with pytest.warns(DeprecationWarning, match="MUST_NOT_EXIST"), pytest.raises(ConcurrentModificationError):
        backend.write_file(path, b"two", if_version=None)


def test_trackpoints_own_state_updates_do_not_warn(tmp_path: Path) -> None:
    # The state file's first write is create-only; trackpoint spells it None for 0.1 backends, quietly.
    import warnings

    import numpy as np

    import trackpoint as tp

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        tp.Checkpoint(v=tp.Variable(np.zeros(2))).save(str(tmp_path / "ckpt"))
    assert tp.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-1")
