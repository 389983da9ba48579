"""S3 and GCS retry requests that fail transiently, and recognise their own write behind a lost reply.

Each fault is injected on the request that writes the object: ``PUT`` of its
key on S3, the single-request ``uploadType=multipart`` ``POST`` on GCS
(:meth:`servers.ObjectStore.any_upload_rule`). Store-specific error bodies,
statuses and upload protocols are tested in tests/backends/s3 and
tests/backends/gcs.
"""

from __future__ import annotations

from typing import Any

import pytest

from faultproxy import FaultProxy
from servers import ObjectStore
from trackpoint.backends.stores import ObjectStore as StoreLayer
from trackpoint.errors import CheckpointExistsError, ConcurrentModificationError
from trackpoint.storage import MUST_NOT_EXIST

pytestmark = [pytest.mark.timeout(60)]


def test_slow_request_times_out_and_is_retried(make_files: Any, proxy: FaultProxy, store: ObjectStore) -> None:
    files = make_files(endpoint_url=proxy.url, request_timeout=0.5)
    rule = proxy.add(store.any_upload_rule(r"slow", action="delay", delay=2.0))
    files.put(f"{store.bucket}/slow", b"eventually")
    assert rule.fired == 1
    assert files.read(f"{store.bucket}/slow") == b"eventually"


def test_lost_reply_to_own_create_only_write_is_success(
    proxied: StoreLayer, proxy: FaultProxy, store: ObjectStore
) -> None:
    """The write lands but its reply is lost; the retry's 412 is recognised as our own write."""
    rule = proxy.add(store.any_upload_rule(r"ckpt\.index", action="drop_after_forward"))
    proxied.put(f"{store.bucket}/ckpt.index", b"mine", create_only=True)
    assert rule.fired == 1
    assert proxy.count(rule.method, rule.path) == 2  # the retry did reach the server and got 412
    assert proxied.read(f"{store.bucket}/ckpt.index") == b"mine"
    # ... while a genuinely different writer still loses.
    with pytest.raises(CheckpointExistsError):
        proxied.put(f"{store.bucket}/ckpt.index", b"other", create_only=True)


def test_lost_reply_to_own_compare_and_swap_is_success(
    proxied: StoreLayer, proxy: FaultProxy, store: ObjectStore
) -> None:
    path = f"{store.bucket}/checkpoint"
    v1 = proxied.write_versioned(path, b"1", if_version=MUST_NOT_EXIST)
    proxy.add(store.any_upload_rule(r"checkpoint", action="drop_after_forward"))
    v2 = proxied.write_versioned(path, b"2", if_version=v1)
    current = proxied.read_versioned(path)
    assert current is not None and current.data == b"2" and current.version == v2
    with pytest.raises(ConcurrentModificationError):
        proxied.write_versioned(path, b"3", if_version=v1)
