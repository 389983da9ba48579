"""The shipped conformance kit against the ``gcs`` backend on a local fake-gcs-server."""

from __future__ import annotations

from typing import ClassVar

import pytest

from servers import ObjectStoreConformance
from trackpoint.plugins.testing import BackendConformance, ObjectStoreBackdoors

pytestmark = [pytest.mark.gcs, pytest.mark.timeout(120)]


class TestGCS(ObjectStoreConformance, ObjectStoreBackdoors, BackendConformance):
    """Bundle format over GCSFiles.

    The backdoors are an independent gcsfs client (``ObjectStoreConformance``, before the kit's
    ``ObjectStoreBackdoors``, whose own would share trackpoint's client calls with the backend under test);
    ``reopen`` and ``missing_location`` (a bucket nobody created) come from ``ObjectStoreBackdoors``.
    """

    store_name: ClassVar[str] = "gcs"
    part_size: ClassVar[int] = 4 * 2**20  # a multiple of the 256 KiB resumable chunk
