"""What the inherited object-store layer makes of AzureStore's client calls, against Azurite.

Retries, recognising a retried write of its own, streaming uploads as staged blocks, parallel ranged
reads and error translation are written once in ``trackpoint.backends.stores.ObjectStore``; these tests
check that the Azure calls plug into them as S3's and GCS's do. Faults come from a proxy between the
store and Azurite (``tests/faultproxy.py``): error answers, and replies lost after Azurite applied a write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from azurite import Azurite
from faultproxy import FaultProxy, Rule
from trackpoint.backends.stores import TransferOptions
from trackpoint.errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    StoragePermissionError,
    TransientStorageError,
)
from trackpoint.storage import ANY_VERSION, MUST_NOT_EXIST
from trackpoint_azure.store import AzureStore, service_client

pytestmark = pytest.mark.azure

PART = 64 << 10
FAST = {"retries": 2, "retry_base_delay": 0.01, "retry_max_delay": 0.02, "request_timeout": 10.0}


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://{azurite.host}:{azurite.port}") as p:
        yield p


@pytest.fixture
def layer(azurite: Azurite, proxy: FaultProxy) -> Iterator[AzureStore]:
    """An AzureStore that reaches Azurite through the proxy, with 64 KiB parts and quick retries."""
    opts = {"account_url": f"{proxy.url}/{azurite.account_name}", "account_name": azurite.account_name}
    opts["account_key"] = azurite.account_key
    transfer = TransferOptions.from_backend_options({**FAST, "part_size": PART}, min_part_size=1)
    store = AzureStore(service_client(opts, timeout=10.0), transfer)
    yield store
    store.close()


def _raw(layer: AzureStore, container: str, name: str) -> bytes:
    data: bytes = layer.service.get_blob_client(container, name).download_blob().readall()
    return data


def test_a_large_file_streams_as_staged_blocks_committed_create_only(
    layer: AzureStore, azurite_container: str, proxy: FaultProxy
) -> None:
    payload = bytes(range(256)) * 1200  # 300 KiB: four full 64 KiB blocks and a short one
    with layer.open_sink(f"az://{azurite_container}/run/ckpt.data", create_only=True) as sink:
        for i in range(0, len(payload), 7000):
            sink.write(payload[i : i + 7000])
        assert layer.size(f"az://{azurite_container}/run/ckpt.data") is None  # invisible until committed
    assert _raw(layer, azurite_container, "run/ckpt.data") == payload
    committed, uncommitted = layer.service.get_blob_client(azurite_container, "run/ckpt.data").get_block_list("all")
    assert [b.size for b in committed] == [PART] * 4 + [len(payload) - 4 * PART]
    assert uncommitted == []
    assert proxy.count("PUT", r"comp=block&") == 5 and proxy.count("PUT", r"comp=blocklist") == 1


def test_a_block_and_a_checksum_are_one_put_blob(layer: AzureStore, azurite_container: str, proxy: FaultProxy) -> None:
    """A full block with a few bytes behind it (a Zarr chunk and its CRC-32C) is not staged as two blocks."""
    payload = bytes(range(256)) * (PART // 256) + b"crc!"
    with layer.open_sink(f"az://{azurite_container}/run/chunk", create_only=True) as sink:
        sink.write(payload[:PART])
        sink.write(payload[PART:])
    assert _raw(layer, azurite_container, "run/chunk") == payload
    assert proxy.count("PUT", r"comp=block") == 0 and proxy.count("PUT", r"/run/chunk$") == 1


def test_a_create_only_upload_onto_an_existing_blob_fails_and_keeps_it(
    layer: AzureStore, azurite_container: str
) -> None:
    url = f"az://{azurite_container}/run/ckpt.index"
    layer.put(url, b"theirs")
    with pytest.raises(CheckpointExistsError, match=r"azure: 'az://.*/run/ckpt.index' already exists"):
        layer.put(url, b"mine", create_only=True)
    with pytest.raises(CheckpointExistsError, match="already exists"):
        with layer.open_sink(url, create_only=True) as sink:
            sink.write(b"x" * (3 * PART))  # staged blocks; refused at the commit
    assert _raw(layer, azurite_container, "run/ckpt.index") == b"theirs"


def test_compare_and_swap_of_a_small_file(layer: AzureStore, azurite_container: str) -> None:
    url = f"az://{azurite_container}/run/checkpoint"
    first = layer.write_versioned(url, b"v1", if_version=MUST_NOT_EXIST)
    with pytest.raises(ConcurrentModificationError, match="exists already"):
        layer.write_versioned(url, b"v0", if_version=MUST_NOT_EXIST)
    current = layer.read_versioned(url)
    assert current is not None and (current.data, current.version) == (b"v1", first)
    second = layer.write_versioned(url, b"v2", if_version=first)
    with pytest.raises(ConcurrentModificationError, match="changed since version"):
        layer.write_versioned(url, b"v3", if_version=first)
    assert layer.read(url) == b"v2" and second != first
    assert layer.write_versioned(url, b"v4", if_version=ANY_VERSION) != second


def test_transient_answers_are_retried(layer: AzureStore, azurite_container: str, proxy: FaultProxy) -> None:
    proxy.add(Rule("PUT", r"/run/a\.index", status=503, times=2))
    layer.put(f"az://{azurite_container}/run/a.index", b"data", create_only=True)
    assert proxy.count("PUT", r"/run/a\.index") == 3
    assert _raw(layer, azurite_container, "run/a.index") == b"data"
    proxy.add(Rule("GET", r"/run/a\.index", status=500, times=10))
    with pytest.raises(TransientStorageError, match=r"azure: .*'az://.*/run/a.index' still failed after 3 attempts"):
        layer.read(f"az://{azurite_container}/run/a.index")


def test_a_lost_reply_to_a_create_only_put_is_recognised_as_our_own_write(
    layer: AzureStore, azurite_container: str, proxy: FaultProxy
) -> None:
    # Azurite creates the blob, the reply never arrives; the retry meets 409 BlobAlreadyExists,
    # and the write id in the blob's metadata shows that the blob is ours.
    proxy.add(Rule("PUT", r"/run/b\.index", action="drop_after_forward"))
    layer.put(f"az://{azurite_container}/run/b.index", b"ours", create_only=True)
    assert proxy.count("PUT", r"/run/b\.index") == 2
    assert _raw(layer, azurite_container, "run/b.index") == b"ours"


def test_a_lost_reply_to_a_create_only_block_commit_is_recognised_too(
    layer: AzureStore, azurite_container: str, proxy: FaultProxy
) -> None:
    proxy.add(Rule("PUT", r"/run/c\.data\?comp=blocklist", action="drop_after_forward"))
    payload = b"y" * (2 * PART + 5)
    with layer.open_sink(f"az://{azurite_container}/run/c.data", create_only=True) as sink:
        sink.write(payload)
    assert proxy.count("PUT", r"comp=blocklist") == 2
    assert _raw(layer, azurite_container, "run/c.data") == payload


def test_refusals_and_missing_containers_become_trackpoint_errors(
    layer: AzureStore, azurite_container: str, proxy: FaultProxy
) -> None:
    with pytest.raises(
        CheckpointNotFoundError, match=r"azure: .*'az://no-such-container/x/'.*container does not exist"
    ):
        layer.listdir("az://no-such-container/x")
    assert layer.size("az://no-such-container/x") is None
    proxy.add(Rule("GET", r"comp=list", status=403, times=10, body=b""))
    with pytest.raises(StoragePermissionError, match=rf"azure: .*'az://{azurite_container}/run/.*refused"):
        layer.listdir(f"az://{azurite_container}/run")


def test_nearby_ranges_stream_into_their_buffers_with_one_request(
    layer: AzureStore, azurite_container: str, proxy: FaultProxy
) -> None:
    payload = bytes(range(256)) * 1600  # 400 KiB
    url = f"az://{azurite_container}/run/v"
    layer.put(url, payload)
    outs = [bytearray(1000), bytearray(70_000), bytearray(5), bytearray(200_000)]
    at = [10, 2000, 72_003, 100_000]
    calls = 0
    vectored = layer.object_get_range_vectored

    def counted(*args: Any) -> None:
        nonlocal calls
        calls += 1
        vectored(*args)

    layer.object_get_range_vectored = counted  # type: ignore[method-assign]
    proxy.clear()
    layer.read_ranges(url, [(o, memoryview(b)) for o, b in zip(at, outs, strict=True)])
    assert calls == 1 and proxy.count("GET") == 1
    assert [bytes(b) for b in outs] == [payload[o : o + len(b)] for o, b in zip(at, outs, strict=True)]


def test_ranged_reads_fill_the_callers_buffers(layer: AzureStore, azurite_container: str, proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 1600  # 400 KiB
    layer.put(f"az://{azurite_container}/r.data", payload)
    a, b, c = bytearray(100), bytearray(50), bytearray(30_000)
    proxy.clear()
    ranges = [(10, memoryview(a)), (200, memoryview(b)), (350_000, memoryview(c))]
    layer.read_ranges(f"az://{azurite_container}/r.data", ranges)
    assert (a, b, c) == (payload[10:110], payload[200:250], payload[350_000:380_000])
    # The two nearby ranges share one request; the third, over 256 KiB (coalesce_gap) away, gets its own.
    assert proxy.count("GET", r"/r\.data") == 2
