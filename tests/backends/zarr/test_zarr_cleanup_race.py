"""One Zarr save's commit and one ``cleanup(directory, min_age=0)`` interleaved at every store operation.

As for the bundle backend (``tests/backends/bundle/test_bundle_cleanup_race.py``):
``cleanup`` cannot tell a running save from a crashed one, so ``min_age=0``
may remove a running save's staged arrays. It must never leave a committed
checkpoint without its data: whatever the interleaving, either the commit
fails with a trackpoint error and the prefix holds what it held (the replaced
checkpoint, if any, reads back whole), or the commit succeeds and the new
checkpoint reads back whole.

The cleanup runs in this process, where the backend would never touch a save
with a call running (``_commit._is_active``): the tests switch that off, which
makes it the cleanup of another process. The interleavings are enumerated with
:mod:`interleave`: on the local disk every plan with up to two turn changes
(rename strategy with and without an atomic exchange, and the create strategy
on a local disk declared like an object store), on S3 (moto) every plan with
one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from interleave import FIRST, NEW, OLD, Interleaving, Race, interleavings, scratch_directory
from trackpoint.backends.stores import FileLayer, LocalFiles
from trackpoint.backends.stores.local import exchange_directories
from trackpoint.backends.zarr import ZarrBackend, ZarrOptions, _commit
from trackpoint.errors import DataLossError
from trackpoint.plugins import open_backend
from trackpoint.storage import Capabilities, CheckpointOptions, ShardSpec, StorageBackend, WriteItem

#: The local disk declared like an object store: the create strategy.
OBJECT_STORE_CAPS = Capabilities(atomic_rename=False, conditional_create=True)
STATES = [pytest.param(False, id="new-prefix"), pytest.param(True, id="overwrite")]


def _items(value: float) -> list[WriteItem]:
    # One packed tensor and one array of its own (chunks of 4 KiB): a save of several objects.
    return [
        WriteItem("small", np.full(30, value, np.float32)),
        WriteItem("large", np.full(3000, value + 1, np.float32)),
    ]


def _reads_whole(backend: StorageBackend, prefix: str, value: float) -> None:
    with backend.open_reader(prefix) as r:
        assert sorted(r.keys()) == ["large", "small"]
        np.testing.assert_array_equal(r.read("small"), np.full(30, value, np.float32))
        np.testing.assert_array_equal(r.read("large"), np.full(3000, value + 1, np.float32))


def _backend(files: FileLayer, *, exchange: bool) -> ZarrBackend:
    swap = None
    if exchange and files.capabilities.atomic_rename:
        step = files._step if isinstance(files, Interleaving) else lambda: None

        def swap(a: str, b: str) -> bool:
            step()  # the swap is an operation on the store like the others
            return exchange_directories(a, b)

    return ZarrBackend(files, ZarrOptions(chunk_bytes=4096, pack_bytes=1024), exchange=swap)


def _race(
    make: Callable[[], FileLayer],
    directory: str,
    *,
    committed: bool,
    shards: int,
    exchange: bool,
    writes_in_race: bool = False,
) -> Race:
    """One Zarr save of ``<directory>/ckpt`` and one cleanup of ``directory`` (see :class:`interleave.Race`)."""
    return Race(
        make,
        directory,
        backend=lambda files: _backend(files, exchange=exchange),
        items=_items,
        reads_whole=_reads_whole,
        committed=committed,
        shards=shards,
        writes_in_race=writes_in_race,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    with scratch_directory(tmp_path) as directory:
        yield directory


#: The three commit strategies on a local disk: atomic exchange, two renames, and the object stores' one.
STRATEGIES = pytest.mark.parametrize(
    ("caps", "exchange"),
    [
        pytest.param(None, True, id="rename-exchange"),
        pytest.param(None, False, id="rename-two-renames"),
        pytest.param(OBJECT_STORE_CAPS, False, id="create"),
    ],
)


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cleanup as another process runs it: no save of this process counts as running."""
    monkeypatch.setattr(_commit, "_is_active", lambda save_id: False)


@pytest.mark.usefixtures("elsewhere")
@STRATEGIES
@pytest.mark.parametrize("first", FIRST)
@pytest.mark.parametrize("committed", STATES)
@pytest.mark.parametrize("shards", [1, 2])
def test_local_commit_and_cleanup_never_publish_missing_data(
    scratch: Path, caps: Capabilities | None, exchange: bool, first: str, committed: bool, shards: int
) -> None:
    def new_case(name: str) -> Race:
        return _race(
            lambda: LocalFiles(capabilities=caps),
            str(scratch / name),
            committed=committed,
            shards=shards,
            exchange=exchange,
        )

    assert interleavings(new_case, first, switches=2) > 5


@pytest.mark.s3
@pytest.mark.usefixtures("elsewhere")
@pytest.mark.parametrize("first", FIRST)
@pytest.mark.parametrize("committed", STATES)
def test_s3_commit_and_cleanup_never_publish_missing_data(
    s3_bucket: str, s3_storage_options: dict[str, Any], first: str, committed: bool
) -> None:
    options = CheckpointOptions(backend="zarr", storage_options=s3_storage_options)

    def make() -> FileLayer:
        backend = open_backend(f"{s3_bucket}/race/ckpt", options)
        assert isinstance(backend, ZarrBackend)
        return backend.files

    def new_case(name: str) -> Race:
        return _race(make, f"{s3_bucket}/race/{name}", committed=committed, shards=2, exchange=False)

    assert interleavings(new_case, first, switches=1) > 3


class _Killed(BaseException):
    """A process killed at that point: no handler of the commit runs."""


@pytest.mark.usefixtures("elsewhere")
def test_a_root_whose_save_still_has_markers_keeps_the_replaced_data_until_a_later_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(LocalFiles(capabilities=OBJECT_STORE_CAPS), exchange=False)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, _items(OLD))
    (old,) = [p.name for p in (tmp_path / "ckpt.zarr").iterdir() if p.name.startswith("v-")]
    # An overwrite killed between its root write and its check of the markers.
    checks: list[str] = []
    check = _commit.CreateCommit._check_markers

    def killed_at_the_second_check(self: _commit.CreateCommit, *args: Any) -> None:
        checks.append("check")
        if len(checks) == 2:
            raise _Killed
        check(self, *args)

    monkeypatch.setattr(_commit.CreateCommit, "_check_markers", killed_at_the_second_check)
    shard = backend.write_shard(prefix, ShardSpec(0, 1, "s"), _items(NEW))
    with pytest.raises(_Killed):
        backend.commit(prefix, [shard])
    _reads_whole(backend, prefix, NEW)
    # Had its commit been running, a failed check would put the old root back: the old data stays for now.
    assert backend.cleanup(str(tmp_path), min_age=0) == []
    assert not (tmp_path / "ckpt.zarr/v-s/.trackpoint-shard-00000").exists()
    assert backend.cleanup(str(tmp_path), min_age=0) == [str(tmp_path / "ckpt.zarr" / old)]
    _reads_whole(backend, prefix, NEW)


@pytest.mark.usefixtures("elsewhere")
def test_a_crash_between_the_renames_of_an_overwrite_leaves_the_replaced_group_to_recover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = LocalFiles()
    backend = _backend(files, exchange=False)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, _items(OLD))
    shard = backend.write_shard(prefix, ShardSpec(0, 1, "s"), _items(NEW))
    rename = LocalFiles.rename

    def killed_before_the_second_rename(self: LocalFiles, src: str, dst: str) -> None:
        if src.endswith(".tmp-s"):
            raise _Killed
        rename(self, src, dst)

    monkeypatch.setattr(LocalFiles, "rename", killed_before_the_second_rename)
    with pytest.raises(_Killed):
        backend.commit(prefix, [shard])
    monkeypatch.undo()
    aside = tmp_path / "ckpt.zarr.tmp-s-replaced"
    assert aside.is_dir() and not backend.exists(prefix)
    # The prefix's last checkpoint: cleanup renames it back (and removes the dead save's group).
    assert backend.cleanup(str(tmp_path), min_age=0) == [str(tmp_path / "ckpt.zarr.tmp-s"), str(aside)]
    _reads_whole(backend, prefix, OLD)
    # Once a checkpoint is committed at the prefix again, a replaced group left over is removed.
    backend.save(prefix, _items(NEW))
    (tmp_path / "ckpt.zarr.tmp-x-replaced").mkdir()
    assert backend.cleanup(str(tmp_path), min_age=0) == [str(tmp_path / "ckpt.zarr.tmp-x-replaced")]


@pytest.mark.usefixtures("elsewhere")
@pytest.mark.parametrize("caps", [pytest.param(None, id="rename"), pytest.param(OBJECT_STORE_CAPS, id="create")])
def test_a_cleanup_between_two_shard_writes_makes_the_commit_fail(tmp_path: Path, caps: Capabilities | None) -> None:
    backend = _backend(LocalFiles(capabilities=caps), exchange=False)
    prefix = str(tmp_path / "ckpt")
    backend.begin(prefix, "s")
    small, large = _items(NEW)
    first = backend.write_shard(prefix, ShardSpec(0, 2, "s"), [small])
    assert backend.cleanup(str(tmp_path), min_age=0) != []  # the save's first shard, as if crashed
    # The second shard writes its data (and, on a local disk, the save's temporary group) afresh.
    second = backend.write_shard(prefix, ShardSpec(1, 2, "s"), [large])
    with pytest.raises(DataLossError, match=r"staged arrays of save s .* were removed while it was committing"):
        backend.commit(prefix, [first, second])
    assert not backend.exists(prefix)
