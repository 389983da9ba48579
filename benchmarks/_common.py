"""Helpers shared by the benchmark scripts: workloads, page-cache eviction, child-process measurement.

Every measurement runs in a fresh child process (``python <script> --child
<name> ...``) so that no page cache or allocator state leaks from one
measurement into the next, and its peak memory is the child's own. The child
prints one JSON line.

Peak memory of an operation: :func:`start_peak_window` (after the model or the
arrays are built) returns the allocator's unused memory to the system and
resets the kernel's RSS high-water mark; :func:`window_peak_rss` is the
high-water mark since. So the peak counts the interpreter, the imported
modules and the model as they stand before the operation, plus what the
operation adds, and not the temporaries of building the model.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "GiB",
    "MiB",
    "child_env",
    "child_result",
    "compile_sources",
    "drop_cache",
    "evict",
    "make_arrays",
    "mixed_sizes",
    "paired",
    "peak_rss_bytes",
    "raw_cold_read",
    "raw_write_fsync",
    "rss_bytes",
    "run_child",
    "small_sizes",
    "start_peak_window",
    "target_ratio",
    "timed",
    "touch_free_memory",
    "touch_memory",
    "window_peak_rss",
]

MiB = 1 << 20
GiB = 1 << 30


def mixed_sizes(total_bytes: int, seed: int = 0) -> list[int]:
    """Element counts of float32 tensors, log-uniform from 1 KiB to 64 MiB, summing to ``total_bytes``."""
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    left = total_bytes // 4
    while left > 0:
        n = int(np.exp(rng.uniform(np.log(256), np.log(16 * MiB))))
        n = min(n, left)
        sizes.append(n)
        left -= n
    return sizes


def small_sizes(count: int, seed: int = 0) -> list[int]:
    """Element counts of ``count`` float32 tensors of 1-16 KiB (about 8.5 KiB on average)."""
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(256, 4097, size=count)]


def make_arrays(sizes: Sequence[int], seed: int = 0) -> list[np.ndarray[Any, Any]]:
    """Random float32 arrays of the given element counts (2-D where the count allows)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        a = rng.random(n, dtype=np.float32)
        out.append(a.reshape(-1, 4) if n % 4 == 0 else a)
    return out


def evict(paths: Iterable[str]) -> None:
    """Drop the files from the page cache so the next read comes from the disk, then touch and free memory.

    Call it in the measuring process just before the timed read, once everything
    the read needs is allocated (destination arrays included: allocated after it,
    they take the memory it freed and the read's page cache gets cold pages), and
    before :func:`start_peak_window`: the memory it touches raises the RSS high-water mark.

    After the files are dropped, this process touches and frees as much
    memory as they hold (plus a quarter), so that every cold read starts
    from the same state of free memory. On the virtual machines these
    figures come from, without that step a cold read after a pause of a few
    seconds (as after a save) sometimes took 2-3x as long, with twice the
    CPU time, while the same read right after another one did not: three
    rounds of 1 GiB reads after 8 s pauses took 0.41-1.22 s without the
    step and 0.35-0.44 s with it. Touching the memory in a separate process
    instead made every read slow (0.8-1.0 s). The likely cause is the
    hypervisor taking back memory the guest left free (free page reporting),
    so that the page cache's first touch of such pages costs a trip to the
    host. The step runs for every reader alike, baselines included.
    """
    touch_free_memory(drop_cache(paths))


def drop_cache(paths: Iterable[str]) -> int:
    """Fsync the files and drop them from the page cache; return the bytes they hold.

    The first half of :func:`evict`, for callers that touch memory themselves
    (:func:`touch_memory`).
    """
    total = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total


def touch_free_memory(nbytes: int) -> None:
    """Touch and free ``nbytes`` of memory (plus a quarter and 64 MiB) in this process.

    The step :func:`evict` ends with, for saves: call it in the measuring
    process just before a timed save of ``nbytes``, for every writer alike,
    baselines included, and before :func:`start_peak_window`. A save's
    written bytes are copied into page-cache pages taken from the guest's
    free memory; when the hypervisor has taken those pages back, the
    kernel's copy faults each of them in from the host. Writing 1 GiB from
    one thread cost 2.4-2.7 s of system time onto such pages and 0.24-0.33 s
    right after 1.5 GiB had been touched and freed, and 1 GiB saves of the
    same model in fresh processes varied from 0.4 to 2.3 s of system time
    without the step.
    """
    touch_memory(nbytes)  # dropped at once: freed


def touch_memory(nbytes: int) -> np.ndarray[Any, Any]:
    """Touch ``nbytes`` of memory (plus a quarter and 64 MiB) and return it: drop it to free the memory.

    :func:`touch_free_memory` for callers that wait between the touch and the
    timed operation, such as ranks meeting at a barrier: keep the array
    across the wait and drop it just before the timer starts. Memory freed
    a few seconds before a save is no better than memory never touched: the
    guest's kernel reports free memory to the hypervisor about two seconds
    after it was freed (free page reporting), which then takes it back. Four
    processes that touched and freed their memory 4 s before saving 2 GiB
    together saved at 390-520 MiB/s; holding it until the save started,
    at 1440-1650 MiB/s, as fast as one process.
    """
    return np.ones(nbytes + nbytes // 4 + 64 * MiB, np.uint8)


def raw_write_fsync(path: str, arrays: Sequence[np.ndarray[Any, Any]]) -> None:
    """The baseline writer: each array's bytes appended to one file in order, then fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for a in arrays:
            view = a.reshape(-1).view(np.uint8).data
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def raw_cold_read(path: str, arrays: Sequence[np.ndarray[Any, Any]], check: bool = False) -> None:
    """The baseline reader: fill each preallocated array from one file, in order.

    With ``check``, the CRC-32C of each array is computed as soon as it arrived (the check every
    trackpoint restore makes, with nothing to compare against): the cost of verifying alone.
    """
    crc = None
    if check:
        from crc32c import crc32c as crc

    with open(path, "rb", buffering=0) as f:
        for a in arrays:
            whole = view = a.reshape(-1).view(np.uint8).data
            while view:
                n = f.readinto(view)
                if not n:
                    raise EOFError(path)
                view = view[n:]
            if crc is not None:
                crc(whole)


def paired(ratios: Sequence[float]) -> list[float]:
    """Per pair of rounds (the first and second, the third and fourth, ...), the geometric mean of their ratios.

    The scripts run a round's measurements in one order and the next round's in
    the reverse order. On these machines the later of two like operations in a
    row was often the faster, whichever code ran it, so per-round ratios fall
    into two groups by order, and the median over an odd number of rounds, or
    over groups that far apart, leans to one of them. A pair of consecutive
    rounds holds each order once, and its geometric mean cancels the order's
    factor. A last round without a partner is left out.
    """
    return [math.sqrt(a * b) for a, b in zip(ratios[0::2], ratios[1::2], strict=False)]


def target_ratio(ratios: Sequence[float]) -> tuple[str, float]:
    """The figure a ratio target is checked on, and how it was taken.

    The median over :func:`paired` rounds when there are at least two pairs,
    else the median of the per-round ratios.
    """
    pairs = paired(ratios)
    if len(pairs) >= 2:
        return f"median over {len(pairs)} paired rounds", statistics.median(pairs)
    return "median over rounds", statistics.median(ratios)


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """This process's resident set size now."""
    return _status_kib("VmRSS") * 1024


def start_peak_window() -> int:
    """Free what the setup left behind, reset the RSS high-water mark, and return the RSS now.

    Building a model leaves freed temporaries in the allocator (glibc keeps
    freed blocks below its mmap threshold, up to 32 MiB each, in the heap),
    which would count as resident; ``malloc_trim`` returns them. Writing 5 to
    ``/proc/self/clear_refs`` (Linux) resets ``VmHWM`` to the current RSS.
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the peak then includes the allocator's leftovers
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_bytes()


def window_peak_rss() -> int:
    """The RSS high-water mark since :func:`start_peak_window`."""
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child_result(**fields: Any) -> None:
    """Print a child's result as the JSON line :func:`run_child` reads.

    ``peak_rss`` defaults to the child's lifetime high-water mark
    (:func:`peak_rss_bytes`); pass :func:`window_peak_rss` to count one operation.
    """
    fields.setdefault("peak_rss", peak_rss_bytes())
    print(json.dumps(fields), flush=True)


_compiled = False


def child_env() -> dict[str, str]:
    """The environment for measured children: as users run, with compiled bytecode.

    An installed wheel has its ``.pyc`` files compiled at install time. A shell with
    ``PYTHONDONTWRITEBYTECODE`` set would make every fresh child compile trackpoint's modules from
    source again (about 50 ms of a first save or restore), a cost no user pays; so children run
    without it, after :func:`compile_sources` has written the bytecode once, untimed.
    """
    compile_sources()
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_sources() -> None:
    """Compile trackpoint and the backend plugins it can load to bytecode (once per process)."""
    global _compiled
    if _compiled:
        return
    import compileall
    import importlib.metadata
    import importlib.util

    roots = {"trackpoint"} | {
        ep.value.split(":")[0].split(".")[0] for ep in importlib.metadata.entry_points(group="trackpoint.backends")
    }
    for root in sorted(roots):
        spec = importlib.util.find_spec(root)
        for location in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(location, quiet=1)
    # trackpoint's subpackages map onto folders outside its own (setuptools package-dir).
    for sub in ("trackpoint.backends", "trackpoint.plugins"):
        spec = importlib.util.find_spec(sub)
        for location in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(location, quiet=1)
    _compiled = True


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run ``script --child *args`` in a fresh interpreter (see :func:`child_env`) and return its JSON result."""
    out = subprocess.run(
        [sys.executable, script, "--child", *args], check=True, capture_output=True, text=True, env=child_env()
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result
