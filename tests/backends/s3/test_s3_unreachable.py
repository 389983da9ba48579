"""A save to an S3 server that stops answering fails within its deadlines, clean-up included.

The fault proxy plays a server stopped with SIGSTOP mid-save: from the first
upload part on, every request is held without an answer. The data request
gives up after ``retry_deadline`` (plus at most one ``request_timeout``); the
clean-up after it (aborting the multipart upload, removing the save's objects)
must then take at most the clean-up budget, not another full deadline per step.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from faultproxy import FaultProxy, Rule
from trackpoint.errors import TransientStorageError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, WriteItem

pytestmark = [pytest.mark.s3, pytest.mark.timeout(60)]

MiB = 1 << 20


@dataclass
class _Outage(Rule):
    """Every request from the first upload part on is held unanswered: the server stopped."""

    since: float | None = field(default=None, init=False)

    def matches(self, method: str, target: str, body: bytes) -> bool:
        if self.since is None and "partNumber=" in target:
            self.since = time.monotonic()
        return self.since is not None


def test_save_to_a_server_that_stops_answering_fails_within_its_deadlines(
    s3_storage_options: dict[str, Any], s3_bucket: str, proxy: FaultProxy
) -> None:
    request_timeout, retry_deadline = 2.0, 4.0
    # The default clean-up budget: the request timeout, at most 10 s.
    budget = min(request_timeout, 10.0)
    options = CheckpointOptions(
        storage_options={**s3_storage_options, "endpoint_url": proxy.url},
        backend_options={
            "request_timeout": request_timeout,
            "retry_deadline": retry_deadline,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
            "part_size": 5 * MiB,
        },
    )
    prefix = f"{s3_bucket}/run/ckpt-1"
    backend = open_backend(prefix, options)
    outage = proxy.add(_Outage(None, "", action="stall", delay=120, times=10**9))
    # One 12 MiB data object: a multipart upload of three 5 MiB parts at most.
    items = [WriteItem("w", np.arange(3 * MiB, dtype=np.float32))]
    try:
        with pytest.raises(TransientStorageError) as caught:
            backend.save(prefix, items, CheckpointOptions(num_writers=1))
        ended = time.monotonic()
    finally:
        backend.close()
    assert outage.since is not None, "the save never reached its upload"
    total = ended - outage.since
    message = str(caught.value)
    assert re.search(r"s3: uploading part \d+ of 's3://tp-[0-9a-f]+/run/ckpt-1\.data-00000-of-00001'", message), message
    gave_up = float(re.search(r"still failed after \d+ attempts in ([\d.]+) s", message).group(1))  # type: ignore[union-attr]
    assert gave_up <= retry_deadline + request_timeout + 0.5, message
    # The clean-up after the failure takes at most its budget: not a deadline per step (the multipart
    # abort, then the listing of the save's objects), as it did before (about 10 s here).
    assert total <= gave_up + budget + 1.5, (total, gave_up, message)
    # The documented bound of a failing save.
    assert total <= retry_deadline + request_timeout + budget + 1.5, (total, message)
    # What the clean-up could not remove is said, with what to do about it.
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "cleaning up after this failure also failed" in notes, notes
    assert "cleanup" in notes, notes
