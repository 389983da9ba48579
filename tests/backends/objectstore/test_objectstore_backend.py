"""The ``s3`` and ``gcs`` backends end to end.

trackpoint.Checkpoint on a bucket: commits, failures, crashes, races, portability.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from faultproxy import FaultProxy, Rule, kill_when_fired
from servers import ObjectStore
from trackpoint.errors import BackendError, CheckpointExistsError, ConcurrentModificationError, TransientStorageError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, ShardSpec, StorageBackend, WriteItem

pytestmark = [pytest.mark.timeout(90)]

FAST = {"retries": 2, "retry_base_delay": 0.01, "retry_max_delay": 0.05}


def _opts(storage_options: dict[str, Any], endpoint: str | None = None, **backend_options: Any) -> CheckpointOptions:
    so = dict(storage_options)
    if endpoint is not None:
        so["endpoint_url"] = endpoint
    return CheckpointOptions(storage_options=so, backend_options={**FAST, **backend_options})


def _backend(store: ObjectStore, url: str, opts: CheckpointOptions) -> StorageBackend:
    backend = open_backend(url, opts)
    assert backend.name == store.name
    return backend


def _items(n: int = 3, seed: int = 0) -> list[WriteItem]:
    rng = np.random.default_rng(seed)
    return [WriteItem(f"layer{i}/kernel", rng.standard_normal((64, 32)).astype(np.float32)) for i in range(n)]


def _assert_restores(backend: StorageBackend, prefix: str, items: list[WriteItem]) -> None:
    with backend.open_reader(prefix) as reader:
        assert list(reader.keys()) == sorted(it.key for it in items)
        for it in items:
            np.testing.assert_array_equal(reader.read(it.key), it.array)


def test_checkpoint_save_restore_latest(store: ObjectStore) -> None:
    opts = _opts(store.storage_options)
    w = tp.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    step = tp.Variable(np.int64(7))
    ckpt = tp.Checkpoint(w=w, step=step)
    first = ckpt.save(f"{store.bucket}/run/ckpt", opts)
    w.assign(w.numpy() * 10)
    second = ckpt.save(f"{store.bucket}/run/ckpt", opts)
    assert (first, second) == (f"{store.bucket}/run/ckpt-1", f"{store.bucket}/run/ckpt-2")
    assert tp.latest_checkpoint(f"{store.bucket}/run", opts) == second

    w2 = tp.Variable(np.zeros((2, 3), np.float32))
    step2 = tp.Variable(np.int64(0))
    tp.Checkpoint(w=w2, step=step2).restore(tp.latest_checkpoint(f"{store.bucket}/run", opts), opts).assert_consumed()
    np.testing.assert_array_equal(w2.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3) * 10)
    assert int(step2.numpy()) == 7


def test_the_bundle_chosen_by_name_saves_to_the_bucket(store: ObjectStore) -> None:
    """``backend="bundle"`` with a bucket URL is the TensorBundle on that store, read back by the URL alone."""
    named = dataclasses.replace(_opts(store.storage_options), backend="bundle")
    w = tp.Variable(np.arange(6, dtype=np.float32))
    path = tp.Checkpoint(w=w).write(f"{store.bucket}/named/ckpt", named)
    names = sorted(p.rsplit("/", 1)[1] for p in store.raw.ls(f"{store.root}/named"))
    assert names == ["ckpt.data-00000-of-00001", "ckpt.index"]
    w2 = tp.Variable(np.zeros(6, np.float32))
    tp.Checkpoint(w=w2).read(path, _opts(store.storage_options)).assert_consumed()
    np.testing.assert_array_equal(w2.numpy(), w.numpy())


def test_bundle_layout_and_commit_point(store: ObjectStore) -> None:
    opts = _opts(store.storage_options)
    backend = _backend(store, f"{store.bucket}/run/ckpt-1", opts)
    backend.save(f"{store.bucket}/run/ckpt-1", _items(), CheckpointOptions(num_writers=2))
    names = sorted(p.rsplit("/", 1)[1] for p in store.raw.ls(f"{store.root}/run"))
    assert names == ["ckpt-1.data-00000-of-00002", "ckpt-1.data-00001-of-00002", "ckpt-1.index"]
    assert backend.list_checkpoints(f"{store.bucket}/run") == [f"{store.bucket}/run/ckpt-1"]
    backend.delete(f"{store.bucket}/run/ckpt-1")
    assert not backend.exists(f"{store.bucket}/run/ckpt-1")
    assert store.raw.find(f"{store.root}/run") == []


def test_failed_commit_leaves_nothing_visible_and_previous_restores(store: ObjectStore, proxy: FaultProxy) -> None:
    opts = _opts(store.storage_options, proxy.url)
    backend = _backend(store, f"{store.bucket}/run/ckpt-1", opts)
    good = _items(seed=1)
    backend.save(f"{store.bucket}/run/ckpt-1", good)
    proxy.add(store.upload_rule(r"run/ckpt-2\.index", status=503, times=1000))
    with pytest.raises(
        TransientStorageError,
        match=rf"{store.name}: writing '{store.scheme}tp-[0-9a-f]+/run/ckpt-2.index' still failed",
    ):
        backend.save(f"{store.bucket}/run/ckpt-2", _items(seed=2))
    assert not backend.exists(f"{store.bucket}/run/ckpt-2")
    assert backend.list_checkpoints(f"{store.bucket}/run") == [f"{store.bucket}/run/ckpt-1"]
    _assert_restores(backend, f"{store.bucket}/run/ckpt-1", good)
    # abort removed what the failed save wrote
    assert not [p for p in store.raw.find(f"{store.root}/run") if "/ckpt-2" in p]


# Data objects: failed uploads and a truncated read, each matched as its store's API sends them.
_TRANSIENT_FAULTS: dict[str, Callable[[], list[Rule]]] = {
    "s3": lambda: [Rule("PUT", r"\.data-", status=503, times=2), Rule("GET", r"\.data-", action="truncate")],
    "gcs": lambda: [
        Rule("POST", r"uploadType=multipart", body_match=rb'"ckpt\.data-', status=503, times=2),
        Rule("GET", r"ckpt\.data-.*alt=media", action="truncate"),
    ],
}


def test_transient_faults_during_save_and_restore_are_absorbed(store: ObjectStore, proxy: FaultProxy) -> None:
    opts = _opts(store.storage_options, proxy.url, retries=4)
    backend = _backend(store, f"{store.bucket}/ckpt", opts)
    for rule in _TRANSIENT_FAULTS[store.name]():
        proxy.add(rule)
    proxy.add(store.upload_rule(r"ckpt\.index", action="drop_after_forward"))
    items = _items(5)
    backend.save(f"{store.bucket}/ckpt", items)
    _assert_restores(backend, f"{store.bucket}/ckpt", items)
    assert all(r.fired for r in proxy._rules)


def _race(backends: list[StorageBackend], prefix: str, items: list[list[WriteItem]], writers: int) -> list[str]:
    barrier = threading.Barrier(len(backends))
    results = [""] * len(backends)

    def run(i: int) -> None:
        barrier.wait()
        try:
            backends[i].save(prefix, items[i], CheckpointOptions(num_writers=writers), overwrite=False)
            results[i] = "won"
        except (CheckpointExistsError, ConcurrentModificationError) as exc:
            results[i] = type(exc).__name__

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(backends))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r in ("won", "CheckpointExistsError", "ConcurrentModificationError") for r in results), results
    return results


def test_racing_single_shard_saves_have_exactly_one_winner(store: ObjectStore) -> None:
    """Four writers save one prefix at once: one commits, the others fail cleanly.

    The data objects are created (create-only) under their final names, so a
    loser usually fails already writing data (``ConcurrentModificationError``
    from the bundle format), otherwise at the index (``CheckpointExistsError``).
    """
    prefix = f"{store.bucket}/race/ckpt"
    backends = [_backend(store, prefix, _opts(store.storage_options)) for _ in range(4)]
    items = [_items(seed=i) for i in range(4)]
    results = _race(backends, prefix, items, writers=1)
    assert results.count("won") == 1, results
    _assert_restores(backends[0], prefix, items[results.index("won")])


def test_racing_multi_shard_saves_have_at_most_one_winner(store: ObjectStore) -> None:
    """With several data objects per save, two writers can each win one object and both fail.

    Never two winners, never a mixed checkpoint; all losers clean up, so a
    retry of the save succeeds.
    """
    prefix = f"{store.bucket}/race/ckpt"
    backends = [_backend(store, prefix, _opts(store.storage_options)) for _ in range(3)]
    items = [_items(n=4, seed=i) for i in range(3)]
    results = _race(backends, prefix, items, writers=2)
    assert results.count("won") <= 1, results
    if "won" in results:
        _assert_restores(backends[0], prefix, items[results.index("won")])
    else:
        assert not backends[0].exists(prefix)
        backends[0].save(prefix, items[0], overwrite=False)
        _assert_restores(backends[0], prefix, items[0])


def test_commit_race_after_data_is_written(store: ObjectStore) -> None:
    """Two saves of one prefix whose data objects do not collide race only on the index."""
    prefix = f"{store.bucket}/race2/ckpt"
    a, b = _backend(store, prefix, _opts(store.storage_options)), _backend(store, prefix, _opts(store.storage_options))
    items_a, items_b = _items(seed=1), _items(seed=2)
    # Different shard counts give different data object names, so both writes succeed.
    shards_a = [a.write_shard(prefix, ShardSpec(0, 1, "a" * 32), items_a)]
    shards_b = [b.write_shard(prefix, ShardSpec(i, 3, "b" * 32), [items_b[i]]) for i in range(3)]
    a.commit(prefix, shards_a, overwrite=False)
    with pytest.raises(CheckpointExistsError, match=r"race2/ckpt"):
        b.commit(prefix, shards_b, overwrite=False)
    b.abort(prefix, "b" * 32)
    _assert_restores(a, prefix, items_a)


_CRASH_WRITER = textwrap.dedent(
    """
    import json, sys, numpy as np
    from trackpoint.plugins import open_backend
    from trackpoint.storage import CheckpointOptions, WriteItem
    storage_options, prefix = json.loads(sys.argv[1]), sys.argv[2]
    opts = CheckpointOptions(storage_options=storage_options, backend_options={"request_timeout": 120})
    items = [WriteItem(f"t{i}", np.full(50_000, i, np.float32)) for i in range(8)]
    open_backend(prefix, opts).save(prefix, items, CheckpointOptions(num_writers=2))
    """
)


def test_writer_killed_mid_save_leaves_nothing_visible_and_cleanup_removes_leftovers(
    store: ObjectStore, proxy: FaultProxy
) -> None:
    prefix = f"{store.bucket}/crash/ckpt-1"
    # The commit (the merged index) hangs, so the writer is killed with all data written.
    commit = proxy.add(store.upload_rule(r"crash/ckpt-1\.index", action="stall", delay=60))
    env = {**os.environ, **store.child_env}
    storage_options = json.dumps({**store.storage_options, "endpoint_url": proxy.url})
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_WRITER, storage_options, prefix], env=env)
    kill_when_fired(proc, commit, "the commit")
    backend = _backend(store, prefix, _opts(store.storage_options))
    leftovers = store.raw.ls(f"{store.root}/crash")
    assert leftovers, "the killed writer should have left data objects behind"
    assert not backend.exists(prefix)
    assert backend.list_checkpoints(f"{store.bucket}/crash") == []
    assert tp.latest_checkpoint(f"{store.bucket}/crash", _opts(store.storage_options)) is None
    # Seconds-old leftovers could be a running save's, so the default keeps them; the crash is known here.
    assert backend.cleanup(f"{store.bucket}/crash") == []
    removed = backend.cleanup(f"{store.bucket}/crash", min_age=0)
    assert sorted(r.rsplit("/", 1)[1] for r in removed) == sorted(p.rsplit("/", 1)[1] for p in leftovers)
    assert store.raw.find(f"{store.root}/crash") == []


def test_many_small_tensors_take_few_requests(store: ObjectStore, proxy: FaultProxy) -> None:
    backend = _backend(store, f"{store.bucket}/small", _opts(store.storage_options, proxy.url))
    items = [WriteItem(f"bias/{i:04d}", np.full(16, i, np.float32)) for i in range(1000)]
    backend.save(f"{store.bucket}/small", items, CheckpointOptions(num_writers=2))
    writes = proxy.count("PUT") + proxy.count("POST")
    assert writes <= 10, f"1,000 small tensors took {writes} write requests"
    proxy.clear()
    with backend.open_reader(f"{store.bucket}/small") as reader:
        got = reader.read_many([(it.key, None) for it in items])
    assert all(np.array_equal(g, it.array) for g, it in zip(got, items, strict=True))
    reads = proxy.count("GET")
    assert reads <= 10, f"reading 1,000 small tensors took {reads} GET requests"


def test_commit_checks_every_shard_in_one_round_of_requests(store: ObjectStore, proxy: FaultProxy) -> None:
    """The commit's checks of each shard's marker and data object go out together.

    Asked one by one they were three round trips per shard (markers, data
    sizes, markers again after the index write): seconds for a save of many
    processes on a cloud store, where a round trip takes tens of milliseconds.
    """
    prefix = f"{store.bucket}/many/ckpt"
    backend = _backend(store, prefix, _opts(store.storage_options, proxy.url))
    items = _items(n=6)
    shards = [backend.write_shard(prefix, ShardSpec(i, 6, "c" * 32), [items[i]]) for i in range(6)]
    stat = "HEAD" if store.name == "s3" else "GET"  # GCS reads an object's metadata with a GET
    proxy.clear()
    proxy.add(Rule(stat, r"\.(part|data)-", action="delay", delay=1.0, times=1000))
    started = time.monotonic()
    backend.commit(prefix, shards)
    took = time.monotonic() - started
    assert proxy.count(stat, r"\.(part|data)-") == 18  # 6 markers and 6 data objects, then the 6 markers
    # All 12 of the first round are in flight together, unless a loaded machine was slow to send the last
    # one within the second the first is held; asked one by one it is 1, and S3's old pool of 10 capped it.
    assert proxy.peak_in_flight(stat, r"\.(part|data)-") >= 11
    assert took < 18 * 1.0, f"the commit's 18 checks of 1 s each took {took:.1f} s: asked one by one"
    _assert_restores(backend, prefix, items)


def test_begin_lists_once_and_reads_the_index_only_if_listed(store: ObjectStore, proxy: FaultProxy) -> None:
    """A save's first step is one listing on a new prefix, a listing and the index's read on a committed one."""
    prefix = f"{store.bucket}/begin/ckpt"
    backend = _backend(store, prefix, _opts(store.storage_options, proxy.url))
    proxy.clear()
    backend.begin(prefix, "d" * 32)
    assert [(s.method, bool(re.search(store.list_request, s.target))) for s in proxy.requests] == [("GET", True)]
    backend.save(prefix, _items())
    # A crashed save's data object (no marker, not named by the index) is still found by that one listing.
    stray = f"{store.root}/begin/ckpt.data-00000-of-00007"
    store.raw.pipe(stray, b"x")
    proxy.clear()
    backend.begin(prefix, "e" * 32)
    reads = [s for s in proxy.requests if s.method == "GET"]
    assert len(reads) == 2 and re.search(store.list_request, reads[0].target), reads
    assert not store.raw.exists(stray)
    _assert_restores(backend, prefix, _items())


def test_delete_removes_index_then_data_in_three_requests(store: ObjectStore, proxy: FaultProxy) -> None:
    """What a manager's retention costs per checkpoint: the index, one listing, the data objects together."""
    prefix = f"{store.bucket}/del/ckpt-1"
    backend = _backend(store, prefix, _opts(store.storage_options, proxy.url))
    backend.save(prefix, _items(), CheckpointOptions(num_writers=2))
    store.raw.pipe(f"{store.root}/del/ckpt-1.data-00000-of-00009", b"x")  # a crashed save's leftover
    store.raw.pipe(f"{store.root}/del/ckpt-10.index", b"other")  # another prefix's, which stays
    proxy.clear()
    backend.delete(prefix)
    listings = [s for s in proxy.requests if re.search(store.list_request, s.target)]
    assert len(listings) == 1
    # S3 deletes a batch in one request; GCS one request per object, all sent together.
    assert len(proxy.requests) == (3 if store.name == "s3" else 5), proxy.requests
    assert [p.rsplit("/", 1)[1] for p in store.raw.ls(f"{store.root}/del")] == ["ckpt-10.index"]


def test_zarr_on_a_bucket_takes_the_stores_retry_options(store: ObjectStore, proxy: FaultProxy) -> None:
    """``backend_options`` hold the format's options and, on S3 and GCS, the store's, which reach the store."""
    so = {**store.storage_options, "endpoint_url": proxy.url}
    prefix = f"{store.bucket}/zr/ckpt"
    w = tp.Variable(np.arange(6, dtype=np.float32))
    for retries in (0, 2):
        proxy.clear()
        proxy.add(store.any_upload_rule(r"zarr\.json", status=503, times=1))
        opts = CheckpointOptions(
            backend="zarr",
            storage_options=so,
            backend_options={"retries": retries, "retry_base_delay": 0.01, "chunk_bytes": 2**20},
        )
        if retries == 0:
            with pytest.raises(TransientStorageError):
                tp.Checkpoint(w=w).write(prefix, opts)
        else:
            tp.Checkpoint(w=w).write(prefix, opts)
    assert tp.load_checkpoint(prefix, _opts(store.storage_options)).get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE").size == 6


@pytest.mark.parametrize("backend", [None, "zarr"])
def test_a_misspelt_backend_option_is_refused(store: ObjectStore, backend: str | None) -> None:
    opts = CheckpointOptions(backend=backend, storage_options=store.storage_options, backend_options={"retires": 3})
    typo = r"unknown backend option\(s\) retires( \(did you mean retries\?\))?; valid options: .*retries"
    with pytest.raises(BackendError, match=typo):
        tp.Checkpoint(w=tp.Variable(1.0)).write(f"{store.bucket}/typo/ckpt", opts)
    assert store.raw.find(f"{store.root}/typo") == []


def test_checkpoint_copied_to_disk_is_a_local_checkpoint_and_back(store: ObjectStore, tmp_path: Path) -> None:
    opts = _opts(store.storage_options)
    v = tp.Variable(np.linspace(0, 1, 12, dtype=np.float64).reshape(3, 4))
    s = tp.Variable(np.array([b"alpha", b"beta"], dtype=object))
    tp.Checkpoint(v=v, s=s).write(f"{store.bucket}/x/ckpt", opts)
    store.raw.get(f"{store.root}/x/", str(tmp_path / "local") + "/", recursive=True)
    local = tp.load_checkpoint(str(tmp_path / "local" / "ckpt"))
    remote = tp.load_checkpoint(f"{store.bucket}/x/ckpt", opts)
    names = [n for n, _ in tp.list_variables(f"{store.bucket}/x/ckpt", opts)]
    assert names == [n for n, _ in tp.list_variables(str(tmp_path / "local" / "ckpt"))]
    for name in names:
        a, b = np.asarray(local.get_tensor(name)), np.asarray(remote.get_tensor(name))
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tolist() == b.tolist(), name

    # ... and a local checkpoint uploaded byte for byte is a valid checkpoint in the bucket.
    tp.Checkpoint(v=v, s=s).write(str(tmp_path / "disk" / "ckpt"))
    store.raw.put(str(tmp_path / "disk") + "/", f"{store.root}/up/", recursive=True)
    w = tp.Variable(np.zeros((3, 4)))
    t = tp.Variable(np.array([b"", b""], dtype=object))
    tp.Checkpoint(v=w, s=t).read(f"{store.bucket}/up/ckpt", opts).assert_consumed()
    np.testing.assert_array_equal(w.numpy(), v.numpy())
    assert list(t.numpy()) == [b"alpha", b"beta"]


def test_saving_into_a_missing_bucket_reports_the_write_not_the_cleanup(store: ObjectStore) -> None:
    # The save's first requests are cleanup (removing leftovers at the prefix) and its abort is cleanup
    # too; both fail against a missing bucket as well. The error raised must be the write's, naming the
    # bucket; a failed cleanup is only noted.
    bucket = f"no-such-bucket-{os.getpid()}"
    ckpt = tp.Checkpoint(w=tp.Variable(np.arange(3.0)))
    with pytest.raises(tp.errors.CheckpointNotFoundError) as caught:
        ckpt.save(f"{store.scheme}{bucket}/run/ckpt", options=_opts(store.storage_options))
    message = str(caught.value)
    assert re.search(
        rf"{store.name}: writing '{store.scheme}{bucket}/run/ckpt-1\.[^']+' failed: bucket '{bucket}' does not exist",
        message,
    ), message
    assert "create it or correct the URL" in message
    assert "deleting" not in message and "listing" not in message
    assert any(note.startswith("cleaning up after this failure also failed") for note in caught.value.__notes__)
