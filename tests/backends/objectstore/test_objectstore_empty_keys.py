"""A path naming only a bucket is no object: the S3 and GCS file layers refuse it for writes and deletes.

A checkpoint prefix of only a bucket (``s3://bucket``) has its files named by appending to it
(``s3://bucket-1.index``): each would be the empty key of another bucket. The store refuses such a path
whatever the backend's spec declares; a bare bucket still lists as the directory it is. A read of it finds
nothing, as one of a missing object does (an empty key cannot exist): looking for ``s3://bucket`` as a
checkpoint (its index ``s3://bucket.index``) then goes on to the directory, so a bucket's root holding
checkpoints is read as a run (it was reported damaged, its reads refused).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from servers import ObjectStore
from trackpoint.backends.stores import ObjectStore as StoreLayer
from trackpoint.errors import CheckpointNotFoundError, InvalidArgumentError

pytestmark = [pytest.mark.timeout(60)]


def _refused(path: str, what: str) -> Any:
    return pytest.raises(
        InvalidArgumentError,
        match=rf"cannot {what} {re.escape(repr(path))}: it names the bucket '[^']+', not a checkpoint prefix.*"
        r"give a prefix inside a bucket, such as \w+://<bucket>/run/ckpt$",
    )


def test_a_bare_bucket_is_refused_as_an_object(files: StoreLayer, store: ObjectStore) -> None:
    for path in (store.bucket, f"{store.bucket}/"):
        with _refused(path, "write"):
            files.put(path, b"x")
        with _refused(path, "write"):
            files.write_versioned(path, b"x")
        with _refused(path, "write"):
            files.open_sink(path, create_only=True)
        with _refused(path, "delete"):
            files.delete([path])
    assert store.raw.find(store.root) == []


def test_a_bare_bucket_reads_as_a_missing_object(files: StoreLayer, store: ObjectStore) -> None:
    files.put(f"{store.bucket}/a", b"xy")
    for path in (store.bucket, f"{store.bucket}/", f"{store.bucket}.index"):
        with pytest.raises(CheckpointNotFoundError, match=rf"{re.escape(repr(path))} does not exist$"):
            files.read(path)
        with pytest.raises(CheckpointNotFoundError, match=rf"{re.escape(repr(path))} does not exist$"):
            files.read_ranges(path, [(0, memoryview(bytearray(1)))])
        assert files.read_versioned(path) is None
        assert files.size(path) is None
        assert files.sizes([f"{store.bucket}/a", path, f"{store.bucket}/a"]) == [2, None, 2]
    assert [p.removeprefix(store.root) for p in store.raw.find(store.root)] == ["/a"]


def test_a_bucket_root_holding_checkpoints_is_read_as_a_run(store: ObjectStore) -> None:
    import trackpoint as tp

    options = tp.CheckpointOptions(storage_options=store.storage_options)
    manager = tp.CheckpointManager(tp.Checkpoint(w=tp.Variable(np.arange(3.0))), store.bucket, None, options=options)
    manager.save()
    newest = manager.save()
    assert newest == f"{store.bucket}/ckpt-2"
    for root in (store.bucket, f"{store.bucket}/"):
        tree = tp.load_tree(root, options=options)
        np.testing.assert_array_equal(tree["w"], np.arange(3.0))
        assert int(tree["save_counter"]) == 2
        assert tp.load_variable(root, "w/.ATTRIBUTES/VARIABLE_VALUE", options=options).tolist() == [0.0, 1.0, 2.0]
        assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" in dict(tp.list_variables(root, options=options))


def test_a_bare_bucket_lists_as_a_directory(files: StoreLayer, store: ObjectStore) -> None:
    files.put(f"{store.bucket}/top.bin", b"x")
    files.put(f"{store.bucket}/run/a.bin", b"y")
    for root in (store.bucket, f"{store.bucket}/"):
        assert files.listdir(root) == ["top.bin"]
        assert files.find(root) == [f"{store.bucket}/run/a.bin", f"{store.bucket}/top.bin"]
    assert files.modified(store.bucket) is None  # a directory has no time of its own
    files.rmtree(store.bucket)
    assert files.find(store.bucket) == []


def test_checkpoints_directly_in_a_bucket_s_root_keep_working(store: ObjectStore) -> None:
    import trackpoint as tp

    options = tp.CheckpointOptions(storage_options=store.storage_options)
    ckpt = tp.Checkpoint(w=tp.Variable(np.arange(3.0)))
    saved = ckpt.save(f"{store.bucket}/ckpt", options=options)
    assert saved == f"{store.bucket}/ckpt-1"
    assert tp.latest_checkpoint(store.bucket, options=options) == saved
    assert tp.latest_checkpoint(f"{store.bucket}/", options=options) == saved
