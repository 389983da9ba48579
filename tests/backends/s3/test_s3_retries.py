"""Transient S3 failures are retried with bounded backoff; permanent ones are translated, naming bucket and key.

S3's error codes, multipart parts and option checks are here; timeouts and lost
replies to PUTs are in tests/backends/objectstore/test_objectstore_retries.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from faultproxy import FaultProxy, Rule
from trackpoint.backends.stores.s3 import S3Files
from trackpoint.errors import (
    BackendError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)

pytestmark = [pytest.mark.s3, pytest.mark.timeout(60)]

MiB = 1 << 20


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (429, "TooManyRequests"), (409, "ConditionalRequestConflict")],
)
def test_transient_status_is_retried(
    proxied: S3Files, proxy: FaultProxy, s3_bucket: str, status: int, code: str
) -> None:
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
    rule = proxy.add(Rule("PUT", r"/x\.bin", status=status, body=body, times=3))
    proxied.put(f"{s3_bucket}/x.bin", b"payload", create_only=True)
    assert rule.fired == 3
    assert proxied.read(f"{s3_bucket}/x.bin") == b"payload"


def test_retries_exhausted_is_transient_error_naming_object(
    proxied: S3Files, proxy: FaultProxy, s3_bucket: str
) -> None:
    proxy.add(Rule("GET", r"/doomed", status=503, times=100))
    proxied.put(f"{s3_bucket}/doomed", b"1")
    with pytest.raises(
        TransientStorageError, match=r"s3: reading 's3://tp-[0-9a-f]+/doomed' still failed after 5 attempts"
    ) as info:
        proxied.read_into(f"{s3_bucket}/doomed", 0, memoryview(bytearray(1)))
    assert "testing" not in str(info.value)  # never the credentials
    assert info.value.__cause__ is not None


def test_retry_count_is_configurable(make_files: Any, proxy: FaultProxy, s3_bucket: str) -> None:
    files = make_files(endpoint_url=proxy.url, retries=1)
    rule = proxy.add(Rule("HEAD", r"/y", status=503, times=100))
    with pytest.raises(TransientStorageError, match="after 2 attempts"):
        files.size(f"{s3_bucket}/y")
    assert rule.fired == 2


def test_dropped_connections_are_retried(proxied: S3Files, proxy: FaultProxy, s3_bucket: str) -> None:
    proxy.add(Rule("PUT", r"/z", action="drop", times=2))
    proxy.add(Rule("GET", r"/z", action="drop", times=2))
    proxied.put(f"{s3_bucket}/z", b"survives")
    assert proxied.read(f"{s3_bucket}/z") == b"survives"


def test_truncated_body_is_retried_not_returned(proxied: S3Files, proxy: FaultProxy, s3_bucket: str) -> None:
    data = os.urandom(MiB)
    proxied.put(f"{s3_bucket}/t", data)
    rule = proxy.add(Rule("GET", r"/t", action="truncate"))
    out = bytearray(len(data))
    proxied.read_into(f"{s3_bucket}/t", 0, memoryview(out))
    assert rule.fired == 1
    assert out == data


def test_lost_reply_to_own_multipart_completion_is_success(make_files: Any, proxy: FaultProxy, s3_bucket: str) -> None:
    files = make_files(endpoint_url=proxy.url, part_size=5 * MiB)
    data = os.urandom(6 * MiB)
    proxy.add(Rule("POST", r"/big\?uploadId=", action="drop_after_forward"))
    files.put(f"{s3_bucket}/big", data, create_only=True)
    assert files.read(f"{s3_bucket}/big") == data


def test_failed_multipart_part_aborts_upload(make_files: Any, proxy: FaultProxy, s3_bucket: str, s3_raw: Any) -> None:
    files = make_files(endpoint_url=proxy.url, part_size=5 * MiB, retries=1)
    proxy.add(Rule("PUT", r"partNumber=2", status=503, times=100))
    with pytest.raises(TransientStorageError, match=r"uploading part 1 of 's3://tp-[0-9a-f]+/p'"):
        files.put(f"{s3_bucket}/p", os.urandom(11 * MiB), create_only=True)
    assert files.size(f"{s3_bucket}/p") is None
    assert not s3_raw.call_s3("list_multipart_uploads", Bucket=s3_bucket[5:]).get("Uploads")


def test_access_denied_is_permission_error(proxied: S3Files, proxy: FaultProxy, s3_bucket: str) -> None:
    body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    rule = proxy.add(Rule("PUT", r"/secret", status=403, body=body, times=100))
    with pytest.raises(
        StoragePermissionError, match=r"s3: writing 's3://tp-[0-9a-f]+/secret' was refused .*check the credentials"
    ):
        proxied.put(f"{s3_bucket}/secret", b"1")
    assert rule.fired == 1  # not retried


def test_other_client_errors_are_storage_errors(proxied: S3Files, proxy: FaultProxy, s3_bucket: str) -> None:
    body = b"<Error><Code>InvalidRequest</Code><Message>nope</Message></Error>"
    proxy.add(Rule("PUT", r"/bad", status=400, body=body))
    with pytest.raises(StorageError, match=r"s3: writing 's3://tp-[0-9a-f]+/bad' failed \(InvalidRequest: .*nope"):
        proxied.put(f"{s3_bucket}/bad", b"1")


def test_unreachable_endpoint_is_transient(make_files: Any) -> None:
    from servers import free_port

    files = make_files(endpoint_url=f"http://127.0.0.1:{free_port()}", retries=2)
    with pytest.raises(
        TransientStorageError, match=r"s3: reading metadata of 's3://bucket-x/k' still failed after 3 attempts"
    ):
        files.size("s3://bucket-x/k")


def test_invalid_backend_options_are_rejected(make_files: Any) -> None:
    with pytest.raises(BackendError, match=r"backend_options\['part_size'\] must be at least 5242880"):
        make_files(part_size=1024)
    with pytest.raises(BackendError, match=r"backend_options\['retries'\] must be a non-negative integer"):
        make_files(retries=-1)
    with pytest.raises(BackendError, match=r"backend_options\['request_timeout'\] must be a positive number"):
        make_files(request_timeout=0)


def test_foreign_or_bucketless_urls_are_rejected(files: S3Files) -> None:
    with pytest.raises(BackendError, match=r"s3 cannot address 'gs://b/k': expected a s3:// URL"):
        files.size("gs://b/k")
    with pytest.raises(BackendError, match=r"'s3://' names no bucket"):
        files.size("s3://")
