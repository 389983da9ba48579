"""The shipped conformance kit against the ``s3`` backend on a local moto server."""

from __future__ import annotations

from typing import ClassVar

import pytest

from servers import ObjectStoreConformance
from trackpoint.plugins.testing import BackendConformance, ObjectStoreBackdoors

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]


class TestS3(ObjectStoreConformance, ObjectStoreBackdoors, BackendConformance):
    """Bundle format over S3Files.

    The backdoors are an independent s3fs client (``ObjectStoreConformance``, before the kit's
    ``ObjectStoreBackdoors``, whose own would share trackpoint's client calls with the backend under test);
    ``reopen`` and ``missing_location`` (a bucket nobody created) come from ``ObjectStoreBackdoors``.
    """

    store_name: ClassVar[str] = "s3"
    part_size: ClassVar[int] = 5 * 2**20  # S3's smallest part
