"""Save and restore through the user API (``Checkpoint``, ``CheckpointManager``) against baselines in the same run.

Workloads (float32 ``Variable`` objects tracked by ``AutoTrackable`` objects):

* ``small``: 20,000 variables of 1-16 KiB (166 MiB), all attributes of one ``AutoTrackable``;
* ``mixed``: 1 GiB in 127 variables, log-uniform from 1 KiB to 64 MiB;
* ``tiny20k`` / ``tiny200k``: 20,000 / 200,000 scalars and short vectors (1-64 elements), 20 per layer
  object, as optimizer-heavy models have; the pair shows whether time per tensor stays flat.

Measured, each in a fresh child process; peak memory is that child's RSS high-water mark from just before the
timed part (the model built, the allocator's leftovers from building it returned, see ``_common.py``) to its
end: interpreter, modules and model as they stand, plus what the operation adds:

* ``api save``: ``Checkpoint(model=root).write(prefix)`` (the bundle backend fsyncs what it writes);
  ``manager save``: ``CheckpointManager.save()``; ``contract save``: ``backend.save(prefix, items)`` of the
  same arrays (the storage contract alone, the object-graph layer's cost is the difference);
* ``api restore``: ``Checkpoint.read(prefix)`` + ``assert_consumed()`` into the model's existing variables,
  with the checkpoint's files evicted from the page cache first; ``assert`` is ``assert_consumed()`` alone;
  ``manager restore``: ``restore_or_initialize()``; ``contract restore``: ``reader.read_many`` into
  preallocated arrays;
* baselines: ``raw`` writes each array's bytes to one file and fsyncs, and reads them back cold into
  preallocated arrays; ``checked raw restore`` is that read plus the CRC-32C of each array as it
  arrives (what verifying costs: every trackpoint restore checks each tensor's CRC-32C); peers
  ``np.save``/``np.load`` (one ``.npy`` per array, one ``os.sync()``) and
  ``safetensors.numpy.save_file``/``load_file`` (one file, fsynced). The peers allocate new arrays on
  load; they are skipped for ``tiny200k`` (200,000 ``.npy`` files say nothing new).

Destination arrays are allocated and touched before any timer starts, for every reader alike, so
first-touch page faults are not counted; before every cold read the files are evicted and memory is
touched and freed (``_common.evict`` says why), and before every save memory is touched and freed as well
(``_common.touch_free_memory``). Every round runs every measurement once, in alternating
order, and waits ``--settle`` seconds (default 10) between its saves and its restores; figures are
medians over the rounds with their range, and ratios are taken per round (each against the raw baseline
of the same round) before the median. The targets are checked on the median over pairs of rounds, one in
each order, of the geometric mean of the pair's two ratios (``_common.paired``), so use an even number of
rounds. CPU time (user + system, all threads) is reported per
1,000 tensors: it does not depend on the disk.

Run: ``python benchmarks/bench_api.py [--case small|mixed|tiny|all] [--rounds 6] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    GiB,
    MiB,
    evict,
    make_arrays,
    mixed_sizes,
    paired,
    raw_cold_read,
    raw_write_fsync,
    run_child,
    small_sizes,
    start_peak_window,
    target_ratio,
    touch_free_memory,
    window_peak_rss,
)

import trackpoint as tp
from trackpoint.plugins import open_backend
from trackpoint.storage import WriteItem

SAVES = ["raw save", "api save", "manager save", "contract save", "npy save", "safetensors save"]
RESTORES = [
    "raw restore",
    "checked raw restore",
    "api restore",
    "manager restore",
    "contract restore",
    "npy load",
    "safetensors load",
]
#: Targets (issue 14), as ratios to the raw baseline of the same round.
TARGETS = {
    "small": {"save": 1.5, "restore": 2.0},
    "mixed": {"save": 1.10, "restore": 1.10, "memory": 1.10},
}
TINY_SECONDS = 4.0
TINY_SCALING = 1.3
ASSERT_SHARE = 0.05


def _sizes(case: str) -> list[int]:
    if case == "mixed":
        return mixed_sizes(GiB)
    if case == "small":
        return small_sizes(20_000)
    count = 20_000 if case == "tiny20k" else 200_000
    rng = np.random.default_rng(1)
    # Half scalars, half vectors of 2-64 elements (biases, norms, optimizer step counters).
    scalars = rng.random(count) < 0.5
    lengths = rng.integers(2, 65, count)
    return [1 if scalar else int(n) for scalar, n in zip(scalars, lengths, strict=True)]


def _shape(case: str, n: int) -> tuple[int, ...]:
    if case.startswith("tiny"):
        return () if n == 1 else (n,)
    return (n // 4, 4) if n % 4 == 0 else (n,)  # as make_arrays shapes them


def _arrays(case: str, sizes: list[int]) -> list[np.ndarray[Any, Any]]:
    if case.startswith("tiny"):
        rng = np.random.default_rng(0)
        return [rng.random(n, dtype=np.float32).reshape(_shape(case, n)) for n in sizes]
    return make_arrays(sizes)


def _model(case: str, arrays: list[np.ndarray[Any, Any]]) -> tp.AutoTrackable:
    root = tp.AutoTrackable()
    if not case.startswith("tiny"):
        for i, a in enumerate(arrays):
            setattr(root, f"v{i:06d}", tp.Variable(a))
        return root
    for start in range(0, len(arrays), 20):
        layer = tp.AutoTrackable()
        for j, a in enumerate(arrays[start : start + 20]):
            setattr(layer, f"w{j}", tp.Variable(a))
        setattr(root, f"layer{start // 20:05d}", layer)
    return root


def _touched(case: str, sizes: list[int]) -> list[np.ndarray[Any, Any]]:
    """Restore targets as a model's existing arrays are: allocated and already touched (no first-touch faults)."""
    return [np.ones(_shape(case, n), dtype=np.float32) for n in sizes]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measure(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all threads) of one call."""
    c, t = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t, _cpu() - c


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file()]


def _cold_files(name: str, d: Path, npy_paths: list[str]) -> list[str]:
    """The files the restore or load ``name`` reads."""
    if name in ("raw restore", "checked raw restore"):
        return [str(d / "raw.bin")]
    if name == "npy load":
        return npy_paths
    if name == "safetensors load":
        return [str(d / "model.safetensors")]
    return _files(d / name.split()[0])  # api, manager, contract


def child(name: str, case: str, directory: str) -> None:
    """One measurement in this (fresh) process; prints its JSON result."""
    d = Path(directory)
    sizes = _sizes(case)
    keys = [f"t{i:06d}" for i in range(len(sizes))]
    extra: dict[str, float] = {}
    arrays: list[np.ndarray[Any, Any]] = []
    outs: list[np.ndarray[Any, Any]] = []
    root = None
    if name.endswith(("restore", "load")):
        # Restores go into existing, touched memory: the model's variables, or preallocated arrays.
        if name in ("api restore", "manager restore"):
            root = _model(case, _touched(case, sizes))
        elif name in ("raw restore", "checked raw restore", "contract restore"):
            outs = _touched(case, sizes)
    elif name in ("api save", "manager save"):
        root = _model(case, _arrays(case, sizes))  # the variables hold copies; the arrays are dropped
    else:
        arrays = _arrays(case, sizes)
    npy_paths = [str(d / "npy" / f"{k}.npy") for k in keys]
    if name.endswith(("restore", "load")):
        evict(_cold_files(name, d, npy_paths))  # before the peak window: see evict
    else:
        touch_free_memory(4 * sum(sizes))  # the page cache's pages for the save (see touch_free_memory)
    rss_before = start_peak_window()
    if name == "raw save":
        wall, cpu = _measure(lambda: raw_write_fsync(str(d / "raw.bin"), arrays))
    elif name == "api save":
        assert root is not None
        ckpt = tp.Checkpoint(model=root)
        wall, cpu = _measure(lambda: ckpt.write(str(d / "api" / "ckpt")))
    elif name == "manager save":
        assert root is not None
        manager = tp.CheckpointManager(tp.Checkpoint(model=root), str(d / "manager"), max_to_keep=1)
        wall, cpu = _measure(manager.save)
    elif name == "contract save":
        prefix = str(d / "contract" / "ckpt")
        backend = open_backend(prefix)
        items = [WriteItem(k, a) for k, a in zip(keys, arrays, strict=True)]
        wall, cpu = _measure(lambda: backend.save(prefix, items))
    elif name == "npy save":
        (d / "npy").mkdir(exist_ok=True)

        def npy_save() -> None:
            for k, a in zip(keys, arrays, strict=True):
                np.save(d / "npy" / f"{k}.npy", a)
            os.sync()

        wall, cpu = _measure(npy_save)
    elif name == "safetensors save":
        from safetensors.numpy import save_file

        path = str(d / "model.safetensors")

        def st_save() -> None:
            save_file(dict(zip(keys, arrays, strict=True)), path)
            _fsync_path(path)

        wall, cpu = _measure(st_save)
    elif name == "raw restore":
        wall, cpu = _measure(lambda: raw_cold_read(str(d / "raw.bin"), outs))
    elif name == "checked raw restore":
        wall, cpu = _measure(lambda: raw_cold_read(str(d / "raw.bin"), outs, check=True))
    elif name == "api restore":
        assert root is not None
        ckpt = tp.Checkpoint(model=root)
        holder: dict[str, Any] = {}

        def api_restore() -> None:
            status = ckpt.read(str(d / "api" / "ckpt"))
            t = time.perf_counter()
            status.assert_consumed()
            holder["assert"] = time.perf_counter() - t

        wall, cpu = _measure(api_restore)
        extra["assert"] = holder["assert"]
    elif name == "manager restore":
        assert root is not None
        manager = tp.CheckpointManager(tp.Checkpoint(model=root), str(d / "manager"), max_to_keep=1)
        wall, cpu = _measure(manager.restore_or_initialize)
    elif name == "contract restore":
        prefix = str(d / "contract" / "ckpt")
        backend = open_backend(prefix)

        def contract_restore() -> None:
            with backend.open_reader(prefix) as reader:
                reader.read_many(list(zip(keys, outs, strict=True)))

        wall, cpu = _measure(contract_restore)
    elif name == "npy load":
        wall, cpu = _measure(lambda: [np.load(p) for p in npy_paths])
    elif name == "safetensors load":
        from safetensors.numpy import load_file

        path = str(d / "model.safetensors")
        wall, cpu = _measure(lambda: load_file(path))
    else:
        raise SystemExit(f"unknown measurement {name!r}")
    peak = window_peak_rss()
    print(
        json.dumps(
            dict(
                name=name,
                seconds=wall,
                cpu=cpu,
                nbytes=4 * sum(sizes),
                tensors=len(sizes),
                peak_rss=peak,
                rss_before=rss_before,
                **extra,
            )
        ),
        flush=True,
    )


def run_case(
    case: str, directory: Path, rounds: int, skip: tuple[str, ...] = (), settle: float = 0.0
) -> dict[str, list[dict[str, Any]]]:
    """Every measurement of one workload, ``rounds`` times, in alternating order.

    A round waits ``settle`` seconds between its saves and its restores.
    """
    work = directory / case
    if case == "tiny200k":
        skip += ("npy", "safetensors")
    names = [n for n in SAVES + RESTORES if not n.startswith(skip)]
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for round_ in range(rounds):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        saves = [n for n in names if n in SAVES]
        restores = [n for n in names if n in RESTORES]
        if round_ % 2:
            saves.reverse()
            restores.reverse()
        for name in saves:
            results[name].append(run_child(__file__, name, case, str(work)))
        # The disk (on a VM: the host) is still writing out the saves for a while after their fsync;
        # reads in that time were slower, which fell on whichever restore came first.
        time.sleep(settle)
        for name in restores:
            results[name].append(run_child(__file__, name, case, str(work)))
        print(f"  {case}: round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return results


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def report(case: str, results: dict[str, list[dict[str, Any]]]) -> bool:
    """Print medians, ranges and per-round ratios; return whether the targets are met."""
    first = results["raw save"][0]
    nbytes, tensors = first["nbytes"], first["tensors"]
    rounds = len(results["raw save"])
    print(f"\n== {case}: {tensors} float32 variables, {nbytes / MiB:.0f} MiB, {rounds} rounds: median [min-max] ==")
    print(
        f"{'measurement':<20}{'seconds':>20}{'vs raw':>20}{'vs raw, paired':>20}{'CPU ms/1k tensors':>22}"
        f"{'peak RSS/model':>16}{'added MiB':>11}"
    )
    ratios: dict[str, list[float]] = {}
    for name, runs in results.items():
        base = "raw save" if name in SAVES else "raw restore"
        ratios[name] = [r["seconds"] / b["seconds"] for r, b in zip(runs, results[base], strict=True)]
        cpu = [1000 * r["cpu"] / (tensors / 1000) for r in runs]
        mem = max(r["peak_rss"] for r in runs) / nbytes
        added = max(r["peak_rss"] - r["rss_before"] for r in runs) / MiB
        print(
            f"{name:<20}{_spread([r['seconds'] for r in runs], '{:.3f}'):>20}{_spread(ratios[name]):>20}"
            f"{_spread(pairs) if (pairs := paired(ratios[name])) else '-':>20}"
            f"{_spread(cpu, '{:.0f}'):>22}{mem:>16.2f}{added:>11.1f}"
        )
    api = results["api restore"]
    shares = [r["assert"] / r["seconds"] for r in api]
    seconds = _spread([r["assert"] for r in api], "{:.3f}")
    print(f"{'assert_consumed':<20}{seconds:>20}  share of api restore {_spread(shares)}")
    checks: list[tuple[str, float, float]] = []
    if case in TARGETS:
        t = TARGETS[case]
        for op, names in (("save", ("api save", "manager save")), ("restore", ("api restore", "manager restore"))):
            for n in names:
                how, got = target_ratio(ratios[n])
                checks.append((f"{n} / raw ({how})", got, t[op]))
        if "memory" in t:
            for n in ("api save", "api restore", "contract save", "contract restore"):
                checks.append((f"{n} peak RSS / model", max(r["peak_rss"] for r in results[n]) / nbytes, t["memory"]))
        checks.append(("assert_consumed share of api restore (median)", statistics.median(shares), ASSERT_SHARE))
    else:
        for n in ("api save", "api restore"):
            checks.append((f"{n} seconds (median)", statistics.median(r["seconds"] for r in results[n]), TINY_SECONDS))
    ok = True
    for label, got, want in checks:
        verdict = "ok" if got <= want else "MISSED"
        ok &= got <= want
        print(f"target {label}: {got:.3f} <= {want:.2f}  {verdict}")
    return ok


def report_scaling(small: dict[str, list[dict[str, Any]]], large: dict[str, list[dict[str, Any]]]) -> bool:
    """Time per tensor at 200,000 against 20,000 tiny variables (linear scaling keeps it flat)."""
    ok = True
    print("\n== scaling: time per tensor, tiny200k / tiny20k (medians) ==")
    for name in ("api save", "api restore", "contract save", "contract restore"):
        per = [statistics.median(r["seconds"] / r["tensors"] for r in runs[name]) for runs in (small, large)]
        ratio = per[1] / per[0]
        verdict = "ok" if ratio <= TINY_SCALING else "MISSED"
        if name.startswith("api"):
            ok &= ratio <= TINY_SCALING
        print(
            f"{name:<18} {1e6 * per[0]:7.1f} us -> {1e6 * per[1]:7.1f} us per tensor: {ratio:.2f}"
            + (f" <= {TINY_SCALING}  {verdict}" if name.startswith("api") else "")
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("small", "mixed", "tiny", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds, an even number (medians over them)")
    parser.add_argument("--dir", default=None, help="scratch directory on the disk to measure (default: a temp dir)")
    parser.add_argument(
        "--skip", action="append", default=[], choices=("npy", "safetensors"), help="leave out a peer (repeatable)"
    )
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds to wait between a round's saves and its restores"
    )
    parser.add_argument("--child", nargs=3, metavar=("NAME", "CASE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="trackpoint-bench-"))
    cases = {"all": ("small", "tiny", "mixed"), "tiny": ("tiny",)}.get(args.case, (args.case,))
    ok = True
    for case in cases:
        if case == "tiny":
            small = run_case("tiny20k", base, args.rounds, tuple(args.skip), args.settle)
            ok &= report("tiny20k", small)
            large = run_case("tiny200k", base, args.rounds, tuple(args.skip), args.settle)
            ok &= report("tiny200k", large)
            ok &= report_scaling(small, large)
        else:
            ok &= report(case, run_case(case, base, args.rounds, tuple(args.skip), args.settle))
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
