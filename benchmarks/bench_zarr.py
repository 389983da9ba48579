"""Save/restore throughput and peak memory of the Zarr backend, next to the bundle backend and raw disk.

Workloads (shared with ``bench_bundle.py`` through ``_common.py``): ``mixed``
(1 GiB of float32 tensors, log-uniform 1 KiB..64 MiB) and ``small`` (20,000
float32 tensors of 1-16 KiB, about 170 MB). Measured in the same run, each in a
fresh child process, reads cold (files fsynced and dropped from the page cache):

* ``raw``: the bytes written sequentially to one file + fsync, read back into
  preallocated arrays;
* ``bundle``: ``BundleBackend.save`` / ``read_many`` into preallocated arrays;
* ``zarr_zstd``: the Zarr backend with its defaults (zstd level 3, CRC32C);
* ``zarr_none``: the Zarr backend with ``compressor="none"`` (CRC32C kept).

The tensors are random, so compression gains little here; it is the cost of
compressing that is measured. Run:
``python benchmarks/bench_zarr.py [--case mixed|small|all] [--repeat 3] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    GiB,
    MiB,
    child_result,
    evict,
    make_arrays,
    mixed_sizes,
    raw_cold_read,
    raw_write_fsync,
    run_child,
    small_sizes,
    timed,
)

from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, StorageBackend, WriteItem

#: name -> (backend options, or None for raw disk)
BACKENDS: dict[str, CheckpointOptions | None] = {
    "raw": None,
    "bundle": CheckpointOptions(backend="bundle"),
    "zarr_zstd": CheckpointOptions(backend="zarr"),
    "zarr_none": CheckpointOptions(backend="zarr", backend_options={"compressor": "none"}),
}


def _sizes(case: str) -> list[int]:
    return mixed_sizes(GiB) if case == "mixed" else small_sizes(20_000)


def _key(i: int) -> str:
    return f"model/layer{i:05d}/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def _empty_like_sizes(sizes: list[int]) -> list[np.ndarray[Any, Any]]:
    return [np.empty((n // 4, 4) if n % 4 == 0 else n, dtype=np.float32) for n in sizes]


def _files(root: Path) -> list[str]:
    return [str(Path(d) / f) for d, _, fs in os.walk(root) for f in fs]


def _disk_bytes(root: Path) -> int:
    return sum(os.path.getsize(p) for p in _files(root))


def child(name: str, op: str, case: str, directory: str) -> None:
    """One measurement (``op`` is ``save`` or ``restore``) in this fresh process."""
    sizes = _sizes(case)
    work = Path(directory) / name
    work.mkdir(parents=True, exist_ok=True)
    opts = BACKENDS[name]
    backend: StorageBackend | None = None if opts is None else open_backend(str(work), opts)
    prefix = str(work / "ckpt-1")
    extra: dict[str, Any] = {}
    if op == "save":
        arrays = make_arrays(sizes)
        if backend is None:
            t = timed(lambda: raw_write_fsync(str(work / "raw.bin"), arrays))
        else:
            items = [WriteItem(_key(i), a) for i, a in enumerate(arrays)]
            t = timed(lambda: backend.save(prefix, items, opts))
        extra = {"disk_bytes": _disk_bytes(work), "objects": len(_files(work))}
    else:
        evict(_files(work))
        outs = _empty_like_sizes(sizes)
        if backend is None:
            t = timed(lambda: raw_cold_read(str(work / "raw.bin"), outs))
        else:

            def restore() -> None:
                assert backend is not None
                with backend.open_reader(prefix) as reader:
                    reader.read_many([(_key(i), o) for i, o in enumerate(outs)])

            t = timed(restore)
            assert np.array_equal(outs[0], make_arrays(sizes[:1])[0])
    child_result(name=name, op=op, seconds=t, nbytes=4 * sum(sizes), tensors=len(sizes), **extra)


def run_case(case: str, directory: Path, repeat: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Interleaved rounds of every measurement; best time and worst memory per (backend, op)."""
    work = directory / case
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for round_ in range(repeat):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        names = list(BACKENDS)
        if round_ % 2:
            names.reverse()  # no measurement always runs right after the same neighbour's I/O
        for op in ("save", "restore"):
            for name in names:
                r = run_child(__file__, name, op, case, str(work))
                best = results.setdefault((name, op), dict(r, runs=[]))
                best["runs"].append(r["seconds"])
                best["seconds"] = min(best["seconds"], r["seconds"])
                best["peak_rss"] = max(best["peak_rss"], r["peak_rss"])
    shutil.rmtree(work, ignore_errors=True)
    return results


def report(case: str, results: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Print a table with ratios to raw disk."""
    first = results[("raw", "save")]
    nbytes = first["nbytes"]
    print(f"\n== {case}: {first['tensors']} float32 tensors, {nbytes / MiB:.0f} MiB, best of {len(first['runs'])} ==")
    print(f"{'measurement':<20}{'seconds':>9}{'MiB/s':>9}{'vs raw':>8}{'peak RSS MiB':>14}"
          f"{'on disk MiB':>13}{'objects':>9}  all runs")  # fmt: skip
    for op in ("save", "restore"):
        base = results[("raw", op)]["seconds"]
        for name in BACKENDS:
            r = results[(name, op)]
            save = results[(name, "save")]
            runs = " ".join(f"{x:.2f}" for x in r["runs"])
            print(f"{name + ' ' + op:<20}{r['seconds']:>9.3f}{nbytes / MiB / r['seconds']:>9.0f}"
                  f"{r['seconds'] / base:>8.2f}{r['peak_rss'] / MiB:>14.0f}"
                  f"{save['disk_bytes'] / MiB:>13.0f}{save['objects']:>9}  {runs}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("mixed", "small", "all"), default="all")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best time counts")
    parser.add_argument("--dir", default=None, help="scratch directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--child", nargs=4, metavar=("NAME", "OP", "CASE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="trackpoint-bench-zarr-"))
    cases = ("small", "mixed") if args.case == "all" else (args.case,)
    for case in cases:
        report(case, run_case(case, base, args.repeat))
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
