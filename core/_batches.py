"""Tensors read in batches with ``read_many``, by readers that go through a whole checkpoint (verify, diff).

A backend reads the adjacent tensors of one ``read_many`` together: one ranged request on an object store,
not one per tensor. A batch's values are held at once, so a batch is bounded in bytes and in count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final, TypeVar

#: A batch holds at most this many bytes (a larger tensor is a batch of its own) and this many tensors.
BATCH_BYTES: Final = 64 << 20
BATCH_TENSORS: Final = 4096

T = TypeVar("T")


def batched(items: Iterable[T], nbytes: Callable[[T], int]) -> Iterator[list[T]]:
    """``items`` in consecutive batches of at most :data:`BATCH_BYTES` (by ``nbytes``) or :data:`BATCH_TENSORS`."""
    batch: list[T] = []
    size = 0
    for item in items:
        batch.append(item)
        size += nbytes(item)
        if size >= BATCH_BYTES or len(batch) >= BATCH_TENSORS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
