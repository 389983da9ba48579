"""The S3 tests' ``store``: the session's moto server with a fresh bucket.

``make_files``, ``files``, ``proxy`` and ``proxied`` (tests/servers.py) build
S3 file layers on it, directly or behind a fault proxy.
"""

from __future__ import annotations

import pytest

from servers import ObjectStore, object_store


@pytest.fixture
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """S3 on moto, with a fresh bucket."""
    return object_store(request, "s3")
