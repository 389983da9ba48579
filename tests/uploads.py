"""Measuring what an object store's upload holds in memory, for the S3 and GCS store tests."""

from __future__ import annotations

import tracemalloc

from trackpoint.backends.stores import ObjectStore

#: Bodies below this are sent with one ``put``; larger ones through a sink, in parts.
SINK_FROM = 8 << 20


def upload_peak(files: ObjectStore, bucket: str, data: bytes) -> int:
    """Bytes Python allocated at most while ``data`` was uploaded to ``bucket/big``.

    A small object goes up with one ``put``, a larger one through a sink.
    The store's client exists before the measurement (a one-byte ``put``
    first), so what is counted is the upload's own buffers.
    """
    files.put(f"{bucket}/warm", b"x")
    tracemalloc.start()
    try:
        if len(data) < SINK_FROM:
            files.put(f"{bucket}/big", data)
        else:
            with files.open_sink(f"{bucket}/big") as sink:
                sink.write(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
