"""Fixtures of the S3 file-layer tests: layers on the session's moto server, directly or behind a fault proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from faultproxy import FaultProxy

from trackpoint.backends.s3 import S3Files, create_files
from trackpoint.storage import CheckpointOptions

#: Fast retries so fault tests take milliseconds, not the production backoff.
FAST_RETRIES: dict[str, Any] = {"retries": 4, "retry_base_delay": 0.01, "retry_max_delay": 0.05, "request_timeout": 10.0}


@pytest.fixture
def make_files(s3_storage_options: dict[str, Any]) -> Iterator[Callable[..., S3Files]]:
    """``make_files(endpoint_url=None, **backend_options)`` -> a fresh :class:`S3Files`."""
    made: list[S3Files] = []

    def make(endpoint_url: str | None = None, **backend_options: Any) -> S3Files:
        so = dict(s3_storage_options)
        if endpoint_url is not None:
            so["endpoint_url"] = endpoint_url
        files = create_files(CheckpointOptions(storage_options=so, backend_options={**FAST_RETRIES, **backend_options}))
        made.append(files)
        return files

    yield make
    for f in made:
        f.close()


@pytest.fixture
def files(make_files: Callable[..., S3Files]) -> S3Files:
    """An S3 file layer on the moto server."""
    return make_files()


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the moto server (no rules yet)."""
    with FaultProxy(s3_endpoint) as p:
        yield p


@pytest.fixture
def proxied(make_files: Callable[..., S3Files], proxy: FaultProxy) -> S3Files:
    """An S3 file layer that talks to moto through :func:`proxy`."""
    return make_files(endpoint_url=proxy.url)
