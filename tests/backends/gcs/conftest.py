"""The GCS tests' ``store``: the session's fake-gcs-server with a fresh bucket.

``make_files``, ``files``, ``proxy`` and ``proxied`` (tests/servers.py) build
GCS file layers on it, directly or behind a fault proxy.
"""

from __future__ import annotations

import pytest

from servers import ObjectStore, object_store


@pytest.fixture
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """GCS on fake-gcs-server, with a fresh bucket."""
    return object_store(request, "gcs")
