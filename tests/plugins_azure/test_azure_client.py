"""trackpoint_azure.AzureClient against Azurite: the calls a safe commit is built from."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from trackpoint_azure import AzureClient, classify, split_url

from azurite import Azurite


def _raw(client: AzureClient, container: str, name: str) -> bytes:
    """Read a blob through the SDK directly, bypassing the code under test."""
    data: bytes = client.service.get_blob_client(container, name).download_blob().readall()
    return data


# ---------------------------------------------------------------- conditional writes
def test_put_if_absent_creates_then_refuses(client: AzureClient, azurite_container: str) -> None:
    etag = client.put_if_absent(azurite_container, "run/ckpt.index", b"first")
    with pytest.raises(ResourceExistsError, match="already exists") as info:
        client.put_if_absent(azurite_container, "run/ckpt.index", b"second")
    assert classify(info.value) == "precondition"
    stat = client.stat(azurite_container, "run/ckpt.index")
    assert stat is not None and stat.etag == etag
    assert _raw(client, azurite_container, "run/ckpt.index") == b"first"


def test_put_if_match_replaces_only_the_version_read(client: AzureClient, azurite_container: str) -> None:
    old = client.put(azurite_container, "state", b"v1")
    new = client.put_if_match(azurite_container, "state", b"v2", old)
    assert new != old
    with pytest.raises(ResourceModifiedError, match="condition") as info:
        client.put_if_match(azurite_container, "state", b"v3", old)
    assert classify(info.value) == "precondition"
    assert _raw(client, azurite_container, "state") == b"v2"


def test_put_if_match_on_a_deleted_blob_is_a_failed_precondition(client: AzureClient, azurite_container: str) -> None:
    etag = client.put(azurite_container, "state", b"v1")
    client.delete(azurite_container, ["state"])
    with pytest.raises(ResourceModifiedError) as info:
        client.put_if_match(azurite_container, "state", b"v2", etag)
    assert classify(info.value) == "precondition"
    assert client.stat(azurite_container, "state") is None


def test_put_overwrites_and_records_the_write_id(client: AzureClient, azurite_container: str) -> None:
    client.put(azurite_container, "f", b"one", write_id="w1")
    etag = client.put(azurite_container, "f", b"three", write_id="w2")
    stat = client.stat(azurite_container, "f")
    assert stat is not None
    assert (stat.size, stat.etag, stat.write_id) == (5, etag, "w2")
    client.put(azurite_container, "g", b"x")
    g = client.stat(azurite_container, "g")
    assert g is not None and g.write_id is None


# ---------------------------------------------------------------- reads
def test_get_returns_bytes_with_their_etag(client: AzureClient, azurite_container: str) -> None:
    etag = client.put(azurite_container, "a/b", b"payload")
    assert client.get(azurite_container, "a/b") == (b"payload", etag)
    assert client.get(azurite_container, "a/missing") is None
    assert client.stat(azurite_container, "a/missing") is None


def test_missing_container_is_not_a_missing_blob(client: AzureClient, azurite: Azurite) -> None:
    with pytest.raises(ResourceNotFoundError, match="container does not exist") as info:
        client.stat("no-such-container", "x")
    assert classify(info.value) == "not_found"
    with pytest.raises(ResourceNotFoundError, match="container does not exist"):
        client.get("no-such-container", "x")


def test_ranged_reads_fill_the_buffer(client: AzureClient, azurite_container: str) -> None:
    client.put(azurite_container, "r", bytes(range(100)))
    out = bytearray(10)
    assert client.get_range_into(azurite_container, "r", 42, memoryview(out)) == 10
    assert out == bytes(range(42, 52))
    # A blob that ends early fills only what exists; the caller sees the short count.
    tail = bytearray(10)
    assert client.get_range_into(azurite_container, "r", 95, memoryview(tail)) == 5
    assert tail[:5] == bytes(range(95, 100))
    assert client.get_range_into(azurite_container, "r", 500, memoryview(bytearray(0))) == 0
    with pytest.raises(HttpResponseError, match="range specified is invalid") as info:
        client.get_range_into(azurite_container, "r", 500, memoryview(bytearray(4)))
    assert classify(info.value) == "range"


def test_modified_time_is_the_write_time(client: AzureClient, azurite_container: str) -> None:
    before = time.time()
    client.put(azurite_container, "m", b"1")
    after = time.time()
    modified = client.modified(azurite_container, "m")
    assert modified is not None
    # Last-Modified has whole seconds, truncated.
    assert before - 1.0 <= modified <= after
    assert client.modified(azurite_container, "nothing") is None


# ---------------------------------------------------------------- listing and deletion
def test_list_direct_children_and_recursive(client: AzureClient, azurite_container: str) -> None:
    for name in ["d/a", "d/b", "d/sub/c", "dd", "e"]:
        client.put(azurite_container, name, b"1")
    assert sorted(client.list(azurite_container, "d/")) == ["d/a", "d/b"]
    assert sorted(client.list(azurite_container, "d/", recursive=True)) == ["d/a", "d/b", "d/sub/c"]
    assert sorted(client.list(azurite_container, "")) == ["dd", "e"]
    assert client.list(azurite_container, "nothing/") == []


def test_list_follows_every_page(azurite: Azurite, azurite_container: str) -> None:
    requests: list[str] = []

    def count(response: Any) -> None:
        if "comp=list" in response.http_request.url:
            requests.append(response.http_request.url)

    service = BlobServiceClient.from_connection_string(azurite.connection_string, raw_response_hook=count)
    client = AzureClient(service)
    client.list_page_size = 2
    names = [f"p/{i}" for i in range(7)]
    for name in names:
        client.put(azurite_container, name, b"1")
    requests.clear()
    assert sorted(client.list(azurite_container, "p/")) == names
    assert len(requests) == 4  # 2 + 2 + 2 + 1
    requests.clear()
    assert sorted(client.list(azurite_container, "p/", recursive=True)) == names
    assert len(requests) == 4
    client.close()


def test_delete_in_batches_ignores_missing_blobs(client: AzureClient, azurite_container: str) -> None:
    client.delete_batch_size = 2
    for name in ["x1", "x2", "x3", "keep"]:
        client.put(azurite_container, name, b"1")
    client.delete(azurite_container, ["x1", "gone", "x2", "x3", "also-gone"])
    assert client.list(azurite_container, "") == ["keep"]
    client.delete(azurite_container, [])


def test_a_refused_deletion_raises(client: AzureClient, azurite_container: str) -> None:
    client.put(azurite_container, "snap", b"1")
    # A blob with snapshots cannot be deleted alone (409 SnapshotsPresent).
    client.service.get_blob_client(azurite_container, "snap").create_snapshot()
    with pytest.raises(HttpResponseError, match=f"deleting {azurite_container}/snap failed with HTTP 409") as info:
        client.delete(azurite_container, ["gone", "snap"])
    assert classify(info.value) == "other"


# ---------------------------------------------------------------- staged uploads
def test_staged_upload_commits_blocks_in_list_order(client: AzureClient, azurite_container: str) -> None:
    up = client.begin_upload(azurite_container, "big")
    ids = {n: client.stage_block(up, n, bytes([n]) * 1000) for n in (2, 0, 1)}
    assert client.stat(azurite_container, "big") is None  # staged blocks are invisible
    etag = client.commit_upload(up, [ids[0], ids[1], ids[2]], if_absent=True, write_id="w")
    assert _raw(client, azurite_container, "big") == b"\0" * 1000 + b"\1" * 1000 + b"\2" * 1000
    stat = client.stat(azurite_container, "big")
    assert stat is not None and (stat.etag, stat.write_id, stat.size) == (etag, "w", 3000)


def test_create_only_commit_refuses_an_existing_blob(client: AzureClient, azurite_container: str) -> None:
    client.put(azurite_container, "big", b"theirs")
    up = client.begin_upload(azurite_container, "big")
    block = client.stage_block(up, 0, b"mine")
    with pytest.raises(ResourceExistsError) as info:
        client.commit_upload(up, [block], if_absent=True)
    assert classify(info.value) == "precondition"
    assert _raw(client, azurite_container, "big") == b"theirs"


def test_conditional_commit_checks_the_etag(client: AzureClient, azurite_container: str) -> None:
    old = client.put(azurite_container, "big", b"v1")
    client.put(azurite_container, "big", b"v2")
    up = client.begin_upload(azurite_container, "big")
    block = client.stage_block(up, 0, b"v3")
    with pytest.raises(ResourceModifiedError) as info:
        client.commit_upload(up, [block], if_match=old)
    assert classify(info.value) == "precondition"
    current = client.stat(azurite_container, "big")
    assert current is not None
    client.commit_upload(up, [block], if_match=current.etag)
    assert _raw(client, azurite_container, "big") == b"v3"


def test_concurrent_uploads_to_one_blob_keep_their_own_blocks(client: AzureClient, azurite_container: str) -> None:
    a = client.begin_upload(azurite_container, "big")
    b = client.begin_upload(azurite_container, "big")
    a0 = client.stage_block(a, 0, b"from A")
    b0 = client.stage_block(b, 0, b"from B")
    assert a0 != b0
    client.commit_upload(b, [b0])
    assert _raw(client, azurite_container, "big") == b"from B"
    # B's commit discarded A's uncommitted blocks: A cannot commit stale data.
    with pytest.raises(HttpResponseError, match="block list is invalid") as info:
        client.commit_upload(a, [a0])
    assert classify(info.value) == "other"
    client.abort_upload(a)
    assert _raw(client, azurite_container, "big") == b"from B"


def test_staged_upload_argument_errors(client: AzureClient, azurite_container: str) -> None:
    up = client.begin_upload(azurite_container, "big")
    with pytest.raises(ValueError, match="block 3 of .*/big is empty"):
        client.stage_block(up, 3, b"")
    with pytest.raises(ValueError, match="either create-only .* or conditional"):
        client.commit_upload(up, [], if_absent=True, if_match='"0x1"')


# ---------------------------------------------------------------- errors and URLs
def test_wrong_key_is_a_permission_error(azurite: Azurite, azurite_container: str) -> None:
    wrong = "A" * 4 + azurite.account_key[4:]
    client = AzureClient.from_options(
        {"account_url": azurite.account_url, "account_name": azurite.account_name, "account_key": wrong}
    )
    with pytest.raises(HttpResponseError) as info:
        client.get(azurite_container, "x")
    assert classify(info.value) == "permission"


def test_unreachable_endpoint_is_transient(azurite: Azurite) -> None:
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/{azurite.account_name}"
    client = AzureClient.from_options(
        {"account_url": url, "account_name": azurite.account_name, "account_key": azurite.account_key},
        request_timeout=2.0,
    )
    with pytest.raises(Exception) as info:
        client.stat("c", "x")
    assert classify(info.value) == "transient"
    assert classify(ValueError("not from the store")) == "other"


def test_split_url() -> None:
    assert split_url("az://bucket/run/ckpt-1.index") == ("bucket", "run/ckpt-1.index")
    assert split_url("bucket/run/") == ("bucket", "run/")
    assert split_url("az://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="names no container"):
        split_url("az:///run")
    with pytest.raises(ValueError, match="expected az://<container>/<path>"):
        split_url("s3://bucket/run")
