"""Commit strategies are objects chosen from a store's declared capabilities, on any FileLayer."""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend, _commit
from trackpoint.backends.bundle._commit import CommitStrategy, CreateCommit, RenameCommit, choose_strategy
from trackpoint.backends.stores import FileLayer, FileSink, LocalFiles
from trackpoint.errors import BackendError
from trackpoint.storage import ANY_VERSION, Capabilities, CheckpointOptions, VersionedBytes, WriteItem

BUNDLE = Path(__file__).resolve().parents[3] / "backends" / "bundle"


class _Forwarding(FileLayer):
    """A store that is not LocalFiles (nor a subclass): its capabilities are all the bundle sees."""

    store_name = "forwarding"

    def __init__(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities
        self._to = LocalFiles(capabilities=capabilities)

    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        return self._to.open_sink(path, create_only=create_only)

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        self._to.read_into(path, offset, out)

    def size(self, path: str) -> int | None:
        return self._to.size(path)

    def listdir(self, directory: str) -> list[str]:
        return self._to.listdir(directory)

    def delete(self, paths: Sequence[str]) -> None:
        self._to.delete(paths)

    def read_versioned(self, path: str) -> VersionedBytes | None:
        return self._to.read_versioned(path)

    def write_versioned(self, path: str, data: bytes, *, if_version: object = ANY_VERSION) -> str:
        return self._to.write_versioned(path, data, if_version=if_version)  # type: ignore[arg-type]

    def rename(self, src: str, dst: str) -> None:
        self._to.rename(src, dst)

    def makedirs(self, directory: str) -> None:
        self._to.makedirs(directory)

    def remove_dir(self, directory: str) -> None:
        self._to.remove_dir(directory)


@pytest.mark.parametrize(
    ("caps", "strategy"),
    [
        (Capabilities(atomic_rename=True, conditional_create=True), RenameCommit),
        (Capabilities(atomic_rename=True), RenameCommit),
        (Capabilities(conditional_create=True), CreateCommit),
    ],
)
def test_strategy_is_chosen_from_declared_capabilities(
    caps: Capabilities, strategy: type[CommitStrategy], tmp_path: Path
) -> None:
    files = _Forwarding(caps)
    chosen = choose_strategy(files)
    assert type(chosen) is strategy and chosen.files is files
    backend = BundleBackend(files)
    assert f"({strategy.name} commit)" in repr(backend)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, [WriteItem("w", np.arange(5, dtype=np.int16))])
    with backend.open_reader(prefix) as r:
        np.testing.assert_array_equal(r.read("w"), np.arange(5, dtype=np.int16))


def test_a_store_without_atomic_commit_is_refused() -> None:
    with pytest.raises(BackendError, match="'forwarding' has neither atomic rename nor conditional create"):
        choose_strategy(_Forwarding(Capabilities()))


def test_writer_threads_asking_first_share_one_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The strategy is chosen on first use, and a strategy keeps a save's state (what it created, for
    # abort): threads that ask at the same moment must get the same one.
    def slow(files: FileLayer) -> CommitStrategy:
        time.sleep(0.05)  # widens the window in which a second choice could happen
        return choose_strategy(files)

    monkeypatch.setattr(_commit, "choose_strategy", slow)
    backend = BundleBackend(LocalFiles(capabilities=Capabilities(conditional_create=True)))
    start = threading.Barrier(6)

    def first_use(_: int) -> CommitStrategy:
        start.wait()
        return backend._strategy

    with ThreadPoolExecutor(6) as pool:
        chosen = list(pool.map(first_use, range(6)))
    assert type(chosen[0]) is CreateCommit and all(s is chosen[0] for s in chosen)


def test_no_module_of_the_format_exceeds_600_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in BUNDLE.glob("*.py")}
    assert "_commit.py" in sizes and "_reader.py" in sizes and "_writer.py" in sizes
    assert max(sizes.values()) < 600, sizes


def test_the_commit_strategy_is_never_chosen_by_store_type_or_flag() -> None:
    stores = {"FileLayer", "LocalFiles", "FsspecFiles", "ObjectStore", "S3Files", "GCSFiles"}
    for path in BUNDLE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                named |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                assert not named & stores, f"{path.name}:{node.lineno} checks the store's type"
            if isinstance(node, ast.Attribute) and node.attr == "_rename":
                raise AssertionError(f"{path.name}:{node.lineno} branches on a strategy flag")


class _Recording(LocalFiles):
    """Local files that remember the name of every file written (from any thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        self.written.append(path)  # list.append is atomic: writer threads call this
        return super().open_sink(path, create_only=create_only)


@pytest.mark.parametrize("shards", [1, 3])
def test_a_rename_save_writes_piece_indexes_only_when_one_is_the_final_index(tmp_path: Path, shards: int) -> None:
    files = _Recording()
    backend = BundleBackend(files)
    prefix = str(tmp_path / "ckpt")
    items = [WriteItem(f"w{i}", np.full(40_000, float(i))) for i in range(3)]
    backend.save(prefix, items, CheckpointOptions(max_shard_bytes=None if shards == 1 else 400_000, num_writers=shards))
    names = [Path(p).name for p in files.written]
    assert sum(".data-" in n for n in names) == shards
    pieces = [n for n in names if n.startswith("part-") and n.endswith(".index")]
    # One shard: its piece index, renamed over ckpt.index. Several: the index merged from their manifests.
    assert len(pieces) == (shards == 1)
    assert sum(n.startswith("merged-") for n in names) == (shards > 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        *(f"ckpt.data-{i:05d}-of-{shards:05d}" for i in range(shards)),
        "ckpt.index",
    ]
    with backend.open_reader(prefix) as reader:
        assert [float(reader.read(f"w{i}")[-1]) for i in range(3)] == [0.0, 1.0, 2.0]
