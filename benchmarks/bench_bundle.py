"""Save/restore throughput and peak memory of the bundle backend against baselines measured in the same run.

Workloads: ``mixed`` (1 GiB of float32 tensors, log-uniform 1 KiB..64 MiB)
and ``small`` (20,000 float32 tensors of 1-16 KiB, about 170 MB). Each is
written and read through the storage contract (``BundleBackend.save`` and
``reader.read_many`` into preallocated arrays) and compared with

* raw: the same bytes written sequentially to one file + fsync, and read
  back cold into the same preallocated arrays;
* numpy: ``np.save`` per array (then one ``os.sync()``, for parity) and ``np.load``.

Reads are cold: every file is fsynced and dropped from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` first. Each measurement runs in its
own child process; peak memory is that child's RSS high-water mark.

Run: ``python benchmarks/bench_bundle.py [--case mixed|small|all] [--repeat 3] [--dir DIR]``
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

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.storage import WriteItem

#: Targets from the requirements, as ratios to the raw baselines.
TARGETS = {"mixed": {"save": 1.10, "restore": 1.10}, "small": {"save": 3.0, "restore": 3.5}}


def _sizes(case: str) -> list[int]:
    return mixed_sizes(GiB) if case == "mixed" else small_sizes(20_000)


def _key(i: int) -> str:
    return f"model/layer{i:05d}/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def _destinations(sizes: list[int]) -> list[np.ndarray[Any, Any]]:
    """Restore targets as a model's existing variables are: allocated and already touched.

    Touching them outside the timed part keeps first-touch page faults out of
    both the baseline and the backend figures. On these VMs that cost is large
    and erratic (memory handed back to the host by DAMON reclaim is faulted in
    again at host level: up to 2.5 s per GiB was measured for the faults alone),
    and it says nothing about the reader.
    """
    outs = [np.empty((n // 4, 4) if n % 4 == 0 else n, dtype=np.float32) for n in sizes]
    for o in outs:
        o.fill(0)
    return outs


def child(name: str, case: str, directory: str) -> None:
    """One measurement in this (fresh) process."""
    sizes = _sizes(case)
    d = Path(directory)
    prefix = str(d / "bundle" / "ckpt-1")
    backend = BundleBackend(LocalFiles())
    if name.endswith(("write", "save")):
        arrays = make_arrays(sizes)
        if name == "raw_write":
            t = timed(lambda: raw_write_fsync(str(d / "raw.bin"), arrays))
        elif name == "bundle_save":
            items = [WriteItem(_key(i), a) for i, a in enumerate(arrays)]
            t = timed(lambda: backend.save(prefix, items))
        else:
            (d / "npy").mkdir(exist_ok=True)

            def npy_save() -> None:
                for i, a in enumerate(arrays):
                    np.save(d / "npy" / f"{i}.npy", a)
                # One system-wide sync instead of an fsync per file: durable like
                # the others without 20,000 separate flushes.
                os.sync()

            t = timed(npy_save)
    else:
        if name == "raw_read":
            evict([str(d / "raw.bin")])
            outs = _destinations(sizes)
            t = timed(lambda: raw_cold_read(str(d / "raw.bin"), outs))
        elif name == "bundle_restore":
            evict([str(p) for p in (d / "bundle").iterdir()])
            outs = _destinations(sizes)

            def restore() -> None:
                with backend.open_reader(prefix) as r:
                    r.read_many([(_key(i), o) for i, o in enumerate(outs)])

            t = timed(restore)
            # Spot-check correctness against the generator (first tensor only, to keep memory flat).
            assert np.array_equal(outs[0], make_arrays(sizes[:1])[0])
        else:
            paths = [str(d / "npy" / f"{i}.npy") for i in range(len(sizes))]
            evict(paths)
            t = timed(lambda: [np.load(p) for p in paths])
    child_result(name=name, seconds=t, nbytes=4 * sum(sizes), tensors=len(sizes))


def run_case(case: str, directory: Path, repeat: int) -> dict[str, dict[str, Any]]:
    """All measurements of one workload, ``repeat`` interleaved rounds; best time and worst memory per name.

    Rounds interleave the baselines with the backend (in alternating order) so
    that background load on a shared disk hits both alike; the best of the
    rounds is the figure least disturbed by it.
    """
    work = directory / case
    results: dict[str, dict[str, Any]] = {}
    for round_ in range(repeat):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        writes = ["raw_write", "bundle_save", "npy_save"]
        reads = ["raw_read", "bundle_restore", "npy_load"]
        if round_ % 2:
            # Alternate the order so no measurement always runs right after another one's I/O.
            writes.reverse()
            reads.reverse()
        for name in writes + reads:
            r = run_child(__file__, name, case, str(work))
            best = results.setdefault(name, dict(r, runs=[]))
            best["runs"].append(r["seconds"])
            best["seconds"] = min(best["seconds"], r["seconds"])
            best["peak_rss"] = max(best["peak_rss"], r["peak_rss"])
    shutil.rmtree(work, ignore_errors=True)
    return results


def report(case: str, results: dict[str, dict[str, Any]]) -> bool:
    """Print figures and ratios; return whether the targets are met."""
    nbytes = results["raw_write"]["nbytes"]
    rounds = len(results["raw_write"]["runs"])
    print(
        f"\n== {case}: {results['raw_write']['tensors']} float32 tensors, {nbytes / MiB:.0f} MiB, best of {rounds} =="
    )
    print(f"{'measurement':<16}{'seconds':>9}{'MiB/s':>9}{'vs raw':>8}{'peak RSS MiB':>14}{'vs model':>10}  all runs")
    ok = True
    for name, base in (
        ("raw_write", "raw_write"),
        ("bundle_save", "raw_write"),
        ("npy_save", "raw_write"),
        ("raw_read", "raw_read"),
        ("bundle_restore", "raw_read"),
        ("npy_load", "raw_read"),
    ):
        r = results[name]
        ratio = r["seconds"] / results[base]["seconds"]
        mem = r["peak_rss"] / nbytes
        runs = " ".join(f"{x:.2f}" for x in r["runs"])
        print(
            f"{name:<16}{r['seconds']:>9.3f}{nbytes / MiB / r['seconds']:>9.0f}{ratio:>8.2f}"
            f"{r['peak_rss'] / MiB:>14.0f}{mem:>10.2f}  {runs}"
        )
    save = results["bundle_save"]["seconds"] / results["raw_write"]["seconds"]
    restore = results["bundle_restore"]["seconds"] / results["raw_read"]["seconds"]
    t = TARGETS[case]
    checks = [("save", save, t["save"]), ("restore", restore, t["restore"])]
    if case == "mixed":
        for name in ("bundle_save", "bundle_restore"):
            checks.append((f"{name} peak memory", results[name]["peak_rss"] / nbytes, 1.10))
    for label, got, want in checks:
        verdict = "ok" if got <= want else "MISSED"
        ok &= got <= want
        print(f"target {label}: {got:.2f}x <= {want:.2f}x  {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("mixed", "small", "all"), default="all")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best time counts")
    parser.add_argument("--dir", default=None, help="scratch directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--child", nargs=3, metavar=("NAME", "CASE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="trackpoint-bench-"))
    cases = ("small", "mixed") if args.case == "all" else (args.case,)
    ok = True
    for case in cases:
        ok &= report(case, run_case(case, base, args.repeat))
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
