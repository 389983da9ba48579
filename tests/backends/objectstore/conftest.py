"""Every test here runs once per object store: ``store`` is S3 (moto) or GCS (fake-gcs-server).

``make_files``, ``files``, ``proxy`` and ``proxied`` (tests/servers.py) follow
the store. Each parameter carries its store's marker, so ``-m s3`` or
``-m "not gcs"`` select these tests as they select the store-specific ones.
"""

from __future__ import annotations

import pytest

from servers import ObjectStore, object_store


@pytest.fixture(params=[pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """S3 or GCS, each with a fresh bucket."""
    return object_store(request, request.param)
