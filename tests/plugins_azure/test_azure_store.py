"""AzureStore's client calls against Azurite: one request each, the pieces a safe commit is built from.

The calls are tested one by one here (what they send, what the service answers, how :meth:`classify`
reads it); tests/plugins_azure/test_azure_layer.py tests what the inherited object-store layer makes
of them.
"""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from azurite import Azurite
from trackpoint.backends.stores import Condition
from trackpoint.errors import DataLossError
from trackpoint_azure.store import WRITE_ID_KEY, AzureStore, service_client

pytestmark = pytest.mark.azure

CREATE_ONLY = Condition.create_only()


def _raw(store: AzureStore, container: str, name: str) -> bytes:
    """Read a blob through the SDK directly, bypassing the code under test."""
    data: bytes = store.service.get_blob_client(container, name).download_blob().readall()
    return data


def _put(store: AzureStore, container: str, name: str, data: bytes, cond: Condition = Condition.NONE) -> str:
    return store.object_put(container, name, memoryview(data), cond, "w-" + name)


# ---------------------------------------------------------------- conditional writes
def test_create_only_put_creates_then_refuses(store: AzureStore, azurite_container: str) -> None:
    etag = _put(store, azurite_container, "run/ckpt.index", b"first", CREATE_ONLY)
    with pytest.raises(ResourceExistsError, match="already exists") as info:
        _put(store, azurite_container, "run/ckpt.index", b"second", CREATE_ONLY)
    assert store.classify(info.value) == "precondition"  # 409 BlobAlreadyExists, not 412
    stat = store.object_stat(azurite_container, "run/ckpt.index")
    assert stat is not None and stat.version == etag
    assert _raw(store, azurite_container, "run/ckpt.index") == b"first"


def test_put_on_a_version_replaces_only_that_version(store: AzureStore, azurite_container: str) -> None:
    old = _put(store, azurite_container, "state", b"v1")
    new = _put(store, azurite_container, "state", b"v2", Condition.if_version(old))
    assert new != old
    with pytest.raises(ResourceModifiedError, match="condition") as info:
        _put(store, azurite_container, "state", b"v3", Condition.if_version(old))
    assert store.classify(info.value) == "precondition"
    assert _raw(store, azurite_container, "state") == b"v2"


def test_put_on_the_version_of_a_deleted_blob_is_refused(store: AzureStore, azurite_container: str) -> None:
    etag = _put(store, azurite_container, "state", b"v1")
    store.object_delete(azurite_container, ["state"])
    with pytest.raises(ResourceModifiedError) as info:
        _put(store, azurite_container, "state", b"v2", Condition.if_version(etag))
    assert store.classify(info.value) == "precondition"  # 412 (S3 answers 404 here)
    assert (info.value.status_code, info.value.error_code) == (412, "ConditionNotMet")
    assert store.object_stat(azurite_container, "state") is None


def test_put_overwrites_and_records_the_write_id(store: AzureStore, azurite_container: str) -> None:
    store.object_put(azurite_container, "f", memoryview(b"one"), Condition.NONE, "first")
    etag = store.object_put(azurite_container, "f", memoryview(b"three"), Condition.NONE, "second")
    stat = store.object_stat(azurite_container, "f")
    assert stat is not None
    assert (stat.size, stat.version, stat.write_id) == (5, etag, "second")
    metadata = store.service.get_blob_client(azurite_container, "f").get_blob_properties().metadata
    assert metadata == {WRITE_ID_KEY: "second"}  # "-" is not allowed in Azure metadata names


# ---------------------------------------------------------------- reads
def test_get_returns_the_bytes_with_their_etag(store: AzureStore, azurite_container: str) -> None:
    etag = _put(store, azurite_container, "a/b", b"payload")
    got = store.object_get(azurite_container, "a/b")
    assert got is not None and (got.data, got.version) == (b"payload", etag)
    assert store.object_get(azurite_container, "a/missing") is None
    assert store.object_stat(azurite_container, "a/missing") is None


def test_stat_has_the_modification_time(store: AzureStore, azurite_container: str) -> None:
    import time

    before = time.time()
    _put(store, azurite_container, "m", b"1")
    stat = store.object_stat(azurite_container, "m")
    assert stat is not None and stat.mtime is not None
    # Last-Modified has whole seconds, truncated.
    assert before - 1.0 <= stat.mtime <= time.time()


def test_ranged_reads_fill_the_buffer_or_report_data_loss(store: AzureStore, azurite_container: str) -> None:
    _put(store, azurite_container, "r", bytes(range(100)))
    out = bytearray(10)
    store.object_get_range(azurite_container, "r", 42, memoryview(out))
    assert out == bytes(range(42, 52))
    # Azure answers a range that runs past the end with the bytes that exist.
    with pytest.raises(DataLossError, match=r"azure: 'az://.*/r' ends at 100, before 105"):
        store.object_get_range(azurite_container, "r", 95, memoryview(bytearray(10)))
    with pytest.raises(HttpResponseError, match="range specified is invalid") as info:
        store.object_get_range(azurite_container, "r", 500, memoryview(bytearray(4)))
    assert store.classify(info.value) == "range"
    with pytest.raises(ResourceNotFoundError) as missing:
        store.object_get_range(azurite_container, "nothing", 0, memoryview(bytearray(4)))
    assert store.classify(missing.value) == "not_found"


# ---------------------------------------------------------------- listing and deletion
def test_list_direct_children_and_find_at_any_depth(store: AzureStore, azurite_container: str) -> None:
    for name in ["d/a", "d/b", "d/sub/c", "dd", "e"]:
        _put(store, azurite_container, name, b"1")
    assert sorted(store.object_list(azurite_container, "d/")) == ["d/a", "d/b"]
    assert sorted(store.object_list(azurite_container, "")) == ["dd", "e"]
    assert store.object_list(azurite_container, "nothing/") == []
    assert sorted(store.object_find(azurite_container, "d/")) == ["d/a", "d/b", "d/sub/c"]


def test_listing_a_missing_container_is_not_found(store: AzureStore) -> None:
    with pytest.raises(ResourceNotFoundError, match="container does not exist") as info:
        store.object_list("no-such-container", "")
    assert store.classify(info.value) == "not_found"


def test_delete_in_batches_ignores_missing_blobs(store: AzureStore, azurite_container: str) -> None:
    names = [f"x{i:03d}" for i in range(300)]  # more than one Blob Batch request (256)
    for name in [*names, "keep"]:
        _put(store, azurite_container, name, b"1")
    store.object_delete(azurite_container, ["gone", *names, "also-gone"])
    assert store.object_list(azurite_container, "") == ["keep"]
    store.object_delete(azurite_container, [])


def test_a_refused_deletion_raises(store: AzureStore, azurite_container: str) -> None:
    _put(store, azurite_container, "snap", b"1")
    # A blob with snapshots cannot be deleted alone (409 SnapshotsPresent).
    store.service.get_blob_client(azurite_container, "snap").create_snapshot()
    with pytest.raises(HttpResponseError, match=r"deleting 1 blobs in '.*' failed with HTTP \[409\]") as info:
        store.object_delete(azurite_container, ["gone", "snap"])
    assert store.classify(info.value) == "other"


# ---------------------------------------------------------------- staged (block) uploads
def test_staged_upload_commits_blocks_in_part_order(store: AzureStore, azurite_container: str) -> None:
    up = store.upload_begin(azurite_container, "big", CREATE_ONLY, "w")
    parts = {n: store.upload_part(up, n, n * 1000, memoryview(bytes([n]) * 1000), None) for n in (2, 0, 1)}
    last = store.upload_part(up, 3, 3000, memoryview(b""), 3000)  # an empty last part sends nothing
    assert last is None
    assert store.object_stat(azurite_container, "big") is None  # staged blocks are invisible
    etag = store.upload_finish(up, [parts[0], parts[1], parts[2], last], 3000)
    assert _raw(store, azurite_container, "big") == b"\0" * 1000 + b"\1" * 1000 + b"\2" * 1000
    stat = store.object_stat(azurite_container, "big")
    assert stat is not None and (stat.version, stat.write_id, stat.size) == (etag, "w", 3000)


def test_create_only_upload_refuses_an_existing_blob(store: AzureStore, azurite_container: str) -> None:
    _put(store, azurite_container, "big", b"theirs")
    up = store.upload_begin(azurite_container, "big", CREATE_ONLY, "w")
    part = store.upload_part(up, 0, 0, memoryview(b"mine"), 4)
    with pytest.raises(ResourceExistsError) as info:
        store.upload_finish(up, [part], 4)
    assert store.classify(info.value) == "precondition"
    assert _raw(store, azurite_container, "big") == b"theirs"


def test_upload_on_a_version_checks_the_etag_at_the_commit(store: AzureStore, azurite_container: str) -> None:
    old = _put(store, azurite_container, "big", b"v1")
    _put(store, azurite_container, "big", b"v2")
    up = store.upload_begin(azurite_container, "big", Condition.if_version(old), "w")
    part = store.upload_part(up, 0, 0, memoryview(b"v3"), 2)
    with pytest.raises(ResourceModifiedError) as info:
        store.upload_finish(up, [part], 2)
    assert store.classify(info.value) == "precondition"
    assert _raw(store, azurite_container, "big") == b"v2"


def test_concurrent_uploads_to_one_blob_keep_their_own_blocks(store: AzureStore, azurite_container: str) -> None:
    a = store.upload_begin(azurite_container, "big", Condition.NONE, "a")
    b = store.upload_begin(azurite_container, "big", Condition.NONE, "b")
    a0 = store.upload_part(a, 0, 0, memoryview(b"from A"), 6)
    b0 = store.upload_part(b, 0, 0, memoryview(b"from B"), 6)
    assert a0 != b0
    store.upload_finish(b, [b0], 6)
    assert _raw(store, azurite_container, "big") == b"from B"
    # B's commit discarded A's uncommitted blocks: A cannot commit stale or mixed data.
    with pytest.raises(HttpResponseError, match="block list is invalid") as info:
        store.upload_finish(a, [a0], 6)
    assert store.classify(info.value) == "other"
    assert _raw(store, azurite_container, "big") == b"from B"


# ---------------------------------------------------------------- errors and URLs
def test_wrong_key_is_a_permission_error(azurite: Azurite, azurite_container: str) -> None:
    wrong = "A" * 4 + azurite.account_key[4:]
    opts = {"account_url": azurite.account_url, "account_name": azurite.account_name, "account_key": wrong}
    store = AzureStore(service_client(opts))
    with pytest.raises(HttpResponseError) as info:
        store.object_get(azurite_container, "x")
    assert store.classify(info.value) == "permission"


def test_unreachable_endpoint_is_transient(azurite: Azurite) -> None:
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/{azurite.account_name}"
    opts = {"account_url": url, "account_name": azurite.account_name, "account_key": azurite.account_key}
    store = AzureStore(service_client(opts, timeout=2.0))
    with pytest.raises(Exception) as info:
        store.object_stat("c", "x")
    assert store.classify(info.value) == "transient"
    assert store.classify(ValueError("not from the store")) == "other"
    assert store.classify(HttpResponseError("no status")) == "other"


def test_urls_name_container_and_blob(store: AzureStore) -> None:
    assert store.split("az://bucket/run/ckpt-1.index") == ("bucket", "run/ckpt-1.index")
    assert store.split("abfs://bucket/run/") == ("bucket", "run/")
    assert store.url("bucket", "run/x") == "az://bucket/run/x"
