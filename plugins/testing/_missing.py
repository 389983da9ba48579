"""A location that does not exist (an object store's bucket): a configuration mistake, never an empty directory.

A URL naming a bucket that does not exist is a typo or a missing set-up step.
Listing it as an empty directory would make ``latest_checkpoint`` answer
"nothing saved yet" and a training run start over; so reads, listings and
saves there raise :class:`~trackpoint.errors.CheckpointNotFoundError`, which
names the location. A store whose ``classify`` calls the service's "no such
bucket" answer ``"other"`` raises a plain ``StorageError`` instead, and passes
every test that never leaves the harness's bucket. These tests run where the
harness names such a location (:meth:`BackendTestBase.missing_location`), and
are skipped elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

from trackpoint.errors import CheckpointNotFoundError, StorageError
from trackpoint.plugins.testing._base import BackendTestBase
from trackpoint.storage import StorageBackend

__all__ = ["MissingLocation"]

#: What a store that does not report a missing location as not found must change.
_ADVICE = (
    "a store must report a location that does not exist as not found (on an ObjectStore: classify must return "
    '"not_found" for the answer of the service to a missing bucket, such as NoSuchBucket or a 404)'
)


@contextlib.contextmanager
def _not_found(call: str, where: str) -> Iterator[None]:
    """Expect the block, ``call`` in the missing location ``where``, to raise ``CheckpointNotFoundError``."""
    try:
        yield
    except CheckpointNotFoundError:
        return
    except StorageError as exc:
        # Without its traceback or its chain: the message quotes it, and says what to change.
        raise pytest.fail.Exception(
            f"{call} in {where!r}, a location that does not exist, raised {type(exc).__name__} ({exc}) instead of "
            f"CheckpointNotFoundError: {_ADVICE}",
            pytrace=False,
        ) from None
    pytest.fail(
        f"{call} in {where!r}, a location that does not exist, returned instead of raising "
        f"CheckpointNotFoundError: {_ADVICE}"
    )


class MissingLocation(BackendTestBase):
    """Reads, listings and writes in a location that does not exist raise ``CheckpointNotFoundError``."""

    def _missing(self, backend: StorageBackend, base_url: str) -> str:
        where = self.missing_location(base_url)
        if where is None:
            pytest.skip(
                f"{type(self).__name__}.missing_location returns None: the harness names no location that does "
                "not exist (see BackendTestBase.missing_location)"
            )
        return where

    def test_reads_in_a_missing_location_raise_not_found(self, backend: StorageBackend, base_url: str) -> None:
        directory = self._missing(backend, base_url)
        prefix = self.url(backend, directory, "ckpt-1")
        # A metadata question may answer a missing location as a missing object (S3's HEAD cannot tell).
        assert not backend.exists(prefix), f"exists({prefix!r}) is true in a location that does not exist"
        with _not_found(f"open_reader({prefix!r})", directory):
            backend.open_reader(prefix)
        # Not []: "no checkpoint yet" would have a run start over from scratch on a misspelt bucket.
        with _not_found(f"list_checkpoints({directory!r})", directory):
            backend.list_checkpoints(directory)

    def test_writes_in_a_missing_location_raise_not_found(self, backend: StorageBackend, base_url: str) -> None:
        directory = self._missing(backend, base_url)
        prefix = self.url(backend, directory, "ckpt-1")
        with _not_found(f"a save of {prefix!r}", directory):
            self.save(backend, prefix, {"w": np.arange(4, dtype=np.float32)}, num_writers=1)
        state = self.url(backend, directory, "checkpoint")
        with _not_found(f"write_file({state!r})", directory):
            backend.write_file(state, b"state")
        assert not backend.exists(prefix), f"a save into a location that does not exist committed {prefix!r}"
