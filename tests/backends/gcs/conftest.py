"""Fixtures of the GCS file-layer tests: layers on the session's fake-gcs-server, directly or behind a fault proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from faultproxy import FaultProxy

from trackpoint.backends.gcs import GCSFiles, create_files
from trackpoint.storage import CheckpointOptions

#: Fast retries so fault tests take milliseconds, not the production backoff.
FAST_RETRIES: dict[str, Any] = {"retries": 4, "retry_base_delay": 0.01, "retry_max_delay": 0.05, "request_timeout": 10.0}


@pytest.fixture
def make_files(gcs_storage_options: dict[str, Any]) -> Iterator[Callable[..., GCSFiles]]:
    """``make_files(endpoint_url=None, **backend_options)`` -> a fresh :class:`GCSFiles`."""
    made: list[GCSFiles] = []

    def make(endpoint_url: str | None = None, **backend_options: Any) -> GCSFiles:
        so = dict(gcs_storage_options)
        if endpoint_url is not None:
            so["endpoint_url"] = endpoint_url
        files = create_files(CheckpointOptions(storage_options=so, backend_options={**FAST_RETRIES, **backend_options}))
        made.append(files)
        return files

    yield make
    for f in made:
        f.close()


@pytest.fixture
def files(make_files: Callable[..., GCSFiles]) -> GCSFiles:
    """A GCS file layer on the fake-gcs-server."""
    return make_files()


@pytest.fixture
def proxy(gcs_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the fake-gcs-server (no rules yet)."""
    with FaultProxy(gcs_endpoint) as p:
        yield p


@pytest.fixture
def proxied(make_files: Callable[..., GCSFiles], proxy: FaultProxy) -> GCSFiles:
    """A GCS file layer that talks to moto through :func:`proxy`."""
    return make_files(endpoint_url=proxy.url)
