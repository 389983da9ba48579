"""Create-only writes and compare-and-swap on S3 and GCS are enforced by the server.

moto answers 412 to ``If-None-Match``/``If-Match``; fake-gcs-server enforces
``ifGenerationMatch`` on single-request (``uploadType=multipart``) uploads, which
is what the commit point (the small ``.index``) and the ``checkpoint`` state
file use. The large-object cases differ per store and live in
tests/backends/s3 and tests/backends/gcs.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from servers import ObjectStore
from trackpoint.backends.stores import ObjectStore as StoreLayer
from trackpoint.errors import CheckpointExistsError, ConcurrentModificationError
from trackpoint.storage import ANY_VERSION, MUST_NOT_EXIST

pytestmark = [pytest.mark.timeout(60)]


def test_create_only_put_refuses_existing(files: StoreLayer, store: ObjectStore) -> None:
    files.put(f"{store.bucket}/ckpt.index", b"first", create_only=True)
    with pytest.raises(
        CheckpointExistsError, match=rf"{store.name}: '{store.scheme}tp-[0-9a-f]+/ckpt.index' already exists"
    ):
        files.put(f"{store.bucket}/ckpt.index", b"second", create_only=True)
    assert files.read(f"{store.bucket}/ckpt.index") == b"first"


def test_versioned_compare_and_swap(files: StoreLayer, store: ObjectStore) -> None:
    path = f"{store.bucket}/checkpoint"
    assert files.read_versioned(path) is None
    v1 = files.write_versioned(path, b"one", if_version=MUST_NOT_EXIST)
    with pytest.raises(ConcurrentModificationError, match=rf"'{store.scheme}tp-[0-9a-f]+/checkpoint' exists already"):
        files.write_versioned(path, b"other", if_version=MUST_NOT_EXIST)
    current = files.read_versioned(path)
    assert current is not None and current.data == b"one" and current.version == v1
    v2 = files.write_versioned(path, b"two", if_version=v1)
    assert v2 != v1
    with pytest.raises(ConcurrentModificationError, match=r"changed since version .* re-read it and retry"):
        files.write_versioned(path, b"stale", if_version=v1)
    files.write_versioned(path, b"forced", if_version=ANY_VERSION)
    assert files.read(path) == b"forced"


def test_racing_create_only_writers_exactly_one_wins(make_files: Any, store: ObjectStore) -> None:
    writers = [make_files() for _ in range(6)]
    barrier = threading.Barrier(len(writers))
    outcome: list[str] = [""] * len(writers)

    def run(i: int) -> None:
        barrier.wait()
        try:
            writers[i].put(f"{store.bucket}/race.index", f"writer {i}".encode(), create_only=True)
            outcome[i] = "won"
        except CheckpointExistsError:
            outcome[i] = "lost"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome) == ["lost"] * 5 + ["won"]
    winner = outcome.index("won")
    assert writers[0].read(f"{store.bucket}/race.index") == f"writer {winner}".encode()


def test_racing_state_file_updates_lose_no_update(make_files: Any, store: ObjectStore) -> None:
    """Read-modify-write loops with CAS: every increment survives."""
    path = f"{store.bucket}/counter"
    make_files().write_versioned(path, b"0", if_version=MUST_NOT_EXIST)

    def bump(files: StoreLayer) -> None:
        for _ in range(5):
            while True:
                cur = files.read_versioned(path)
                assert cur is not None
                try:
                    files.write_versioned(path, str(int(cur.data) + 1).encode(), if_version=cur.version)
                    break
                except ConcurrentModificationError:
                    continue

    threads = [threading.Thread(target=bump, args=(make_files(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert make_files().read(path) == b"20"


def test_compare_and_swap_on_deleted_file_is_a_conflict(files: StoreLayer, store: ObjectStore) -> None:
    path = f"{store.bucket}/checkpoint"
    v = files.write_versioned(path, b"1", if_version=MUST_NOT_EXIST)
    files.delete([path])
    with pytest.raises(ConcurrentModificationError, match="changed since version"):
        files.write_versioned(path, b"2", if_version=v)
    assert files.read_versioned(path) is None
