"""Save and restore through the ``s3`` backend vs plain s3fs moving the same bytes, on a fresh local moto server.

Usage::

    python benchmarks/bench_s3.py            # 1 GiB mixed float32 workload, 2 repetitions
    python benchmarks/bench_s3.py --gib 0.25 --reps 1

The workload mixes a few large tensors, many medium ones and thousands of
small ones (float32). The baseline writes the very same bytes, laid out as
the backend's data objects, with ``s3fs.S3FileSystem.pipe`` (concurrent
uploads, multipart for large objects) and reads them back with ``cat``. Both
run against the same server in the same process, alternating, best of
``--reps``. A fresh moto server is started because its memory grows with
every upload. Loopback numbers measure client overhead against a local
server; they say nothing about real S3 throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from servers import make_s3_fs, start_moto, stop_process
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, WriteItem

MiB = 1 << 20


def workload(total_bytes: int) -> list[WriteItem]:
    """Float32 tensors: half the bytes in 4 large ones, 40 % in medium ones, 10 % in 4 KiB ones."""
    rng = np.random.default_rng(0)
    items: list[WriteItem] = []
    large = total_bytes // 2 // 4 // 4  # elements per large tensor
    for i in range(4):
        items.append(WriteItem(f"large/{i}", rng.standard_normal(large, dtype=np.float32)))
    medium_elems = 2 * MiB // 4
    for i in range(int(total_bytes * 0.4) // (2 * MiB)):
        items.append(WriteItem(f"medium/{i:04d}", rng.standard_normal(medium_elems, dtype=np.float32)))
    for i in range(int(total_bytes * 0.1) // 4096):
        items.append(WriteItem(f"small/{i:05d}", rng.standard_normal(1024, dtype=np.float32)))
    return items


def best(reps: int, fn: Callable[[], None], reset: Callable[[], None]) -> float:
    times = []
    for _ in range(reps):
        reset()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=1.0, help="workload size in GiB (default 1)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions, best is reported (default 2)")
    ap.add_argument(
        "--option",
        action="append",
        default=[],
        type=lambda kv: (kv.split("=")[0], int(kv.split("=")[1])),
        help="integer backend option for the s3 backend, e.g. --option part_size=67108864 (repeatable)",
    )
    args = ap.parse_args()

    items = workload(int(args.gib * 1024 * MiB))
    nbytes = sum(it.nbytes for it in items)
    url, proc = start_moto()
    try:
        so: dict[str, Any] = {"endpoint_url": url, "key": "testing", "secret": "testing"}
        raw = make_s3_fs(so)
        raw.mkdir("bench")
        opts = CheckpointOptions(storage_options=so, backend_options=dict(args.option))
        backend = open_backend("s3://bench/ckpt", opts)
        prefix = "s3://bench/tp/ckpt"

        def clear() -> None:
            if raw.exists("bench/tp"):
                raw.rm("bench/tp", recursive=True)
            if raw.exists("bench/base"):
                raw.rm("bench/base", recursive=True)

        def tp_save() -> None:
            backend.save(prefix, items, opts)

        outs = [np.empty_like(it.array) for it in items]

        def tp_restore() -> None:
            with backend.open_reader(prefix) as reader:
                reader.read_many([(it.key, out) for it, out in zip(items, outs, strict=True)])

        # Baseline: the same data objects as the backend writes, as plain bytes.
        tp_save()
        data_objects = sorted(p for p in raw.ls("bench/tp") if ".data-" in p)
        sizes = [raw.size(p) for p in data_objects]
        blobs: dict[str, bytes] = {}
        offset = 0
        flat = b"".join(np.ascontiguousarray(it.array).tobytes() for it in items)
        for i, n in enumerate(sizes):
            blobs[f"bench/base/obj-{i}"] = flat[offset : offset + n]
            offset += n
        del flat

        def base_save() -> None:
            raw.pipe(blobs)

        def base_restore() -> None:
            raw.cat(list(blobs))

        def keep_tp() -> None:
            if not backend.exists(prefix):
                tp_save()

        def keep_base() -> None:
            if not raw.exists(next(iter(blobs))):
                base_save()

        results = {
            "save": (best(args.reps, tp_save, clear), best(args.reps, base_save, clear)),
        }
        clear()
        tp_save()
        base_save()
        results["restore"] = (best(args.reps, tp_restore, keep_tp), best(args.reps, base_restore, keep_base))
        for it, out in zip(items, outs, strict=True):
            assert np.array_equal(it.array, out), f"{it.key} differs after restore"

        print(f"workload: {len(items)} float32 tensors, {nbytes / MiB:.0f} MiB in {len(data_objects)} data objects")
        print(f"{'':8} {'trackpoint s3':>14} {'s3fs baseline':>14} {'ratio':>6}")
        for name, (tp_s, base_s) in results.items():
            print(
                f"{name:8} {tp_s:9.2f} s {nbytes / MiB / tp_s:4.0f}M {base_s:7.2f} s {nbytes / MiB / base_s:4.0f}M"
                f" {tp_s / base_s:5.2f}x"
            )
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()
