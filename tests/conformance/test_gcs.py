"""The shipped conformance kit against the ``gcs`` backend on a local fake-gcs-server."""

from __future__ import annotations

from typing import ClassVar

import pytest

from servers import ObjectStoreConformance
from trackpoint.plugins.testing import BackendConformance

pytestmark = [pytest.mark.gcs, pytest.mark.timeout(120)]


class TestGCS(ObjectStoreConformance, BackendConformance):
    """Bundle format over GCSFiles; the backdoor is an independent gcsfs client."""

    store_name: ClassVar[str] = "gcs"
    part_size: ClassVar[int] = 4 * 2**20  # a multiple of the 256 KiB resumable chunk
