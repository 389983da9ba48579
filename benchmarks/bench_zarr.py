"""Zarr against the bundle through the API users call: ``Checkpoint.write`` and ``Checkpoint.read``.

Workloads (``_common.py``): ``mixed`` (1 GiB of float32 tensors, log-uniform
1 KiB..64 MiB) and ``small`` (20,000 float32 tensors of 1-16 KiB, about
170 MB), held as ``Variable``s of an ``AutoTrackable``. Every measurement runs
in a fresh child process (its peak RSS is the child's high-water mark):

* ``save``: ``Checkpoint(model=...).write(path)`` (the data fsynced by the backend), after
  memory is touched and freed (``_common.touch_free_memory``);
* ``restore``: ``Checkpoint(model=...).read(path).assert_consumed()`` into the
  existing variables, with the checkpoint's files evicted from the page cache first.

Per round, the backends run in alternating order (``bundle`` then ``zarr``,
then the other way round), saves first, then a wait of ``--settle`` seconds
(default 10), then restores; the report gives, per backend and operation, the
median over the rounds and the spread (min..max), per round the
zarr/bundle ratio, and per pair of rounds (one in each order) the geometric
mean of their two ratios (``_common.paired``), whose median and spread are the
figures that count; use an even number of rounds.
``zarr`` uses the backend's default options unless ``--zarr-options``
says otherwise. Peak memory is the RSS high-water mark from just before the
operation (the model built, the allocator's leftovers from building it
returned) to its end, as a multiple of the model's bytes: the interpreter, the
imported modules and the model, plus what the operation adds, which is also
reported on its own in MiB. CPU seconds (user + system) per 1,000 tensors are
reported too: they do not depend on the disk.

Run:
``python benchmarks/bench_zarr.py [--case mixed|small|all] [--rounds 6] [--dir DIR] [--settle 10]
[--zarr-options JSON]``
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    GiB,
    MiB,
    child_result,
    evict,
    make_arrays,
    mixed_sizes,
    paired,
    run_child,
    small_sizes,
    start_peak_window,
    timed,
    touch_free_memory,
    window_peak_rss,
)

BACKENDS = ("bundle", "zarr")


def _sizes(case: str) -> list[int]:
    return mixed_sizes(GiB) if case == "mixed" else small_sizes(20_000)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(name: str, op: str, case: str, directory: str, zarr_options: str) -> None:
    """One measurement (``op`` is ``save`` or ``restore``) in this fresh process."""
    import numpy as np

    import trackpoint as tp

    sizes = _sizes(case)
    work = Path(directory) / name
    work.mkdir(parents=True, exist_ok=True)
    backend_options = json.loads(zarr_options) if name == "zarr" else {}
    options = tp.CheckpointOptions(backend=name, backend_options=backend_options)
    # Built one tensor at a time; the peak window starts once the model exists.
    rng = np.random.default_rng(0)  # the sequence make_arrays draws
    layers = []
    for n in sizes:
        value = rng.random(n, dtype=np.float32) if op == "save" else np.zeros(n, np.float32)
        layers.append(tp.Variable(value.reshape(-1, 4) if n % 4 == 0 else value))
    model = tp.AutoTrackable()
    model.layers = layers
    ckpt = tp.Checkpoint(model=model)
    path = str(work / "ckpt-1")
    model_bytes = 4 * sum(sizes)
    if op == "restore":
        evict([str(Path(d) / f) for d, _, fs in os.walk(work) for f in fs])
    else:
        touch_free_memory(model_bytes)  # the page cache's pages for the save (see touch_free_memory)
    before = start_peak_window()
    cpu0 = _cpu()
    if op == "save":
        seconds = timed(lambda: ckpt.write(path, options=options))
    else:
        seconds = timed(lambda: ckpt.read(path, options=options).assert_consumed())
    cpu = _cpu() - cpu0
    peak = window_peak_rss()
    if op == "restore":
        expected = make_arrays(sizes[:1])[0]
        assert np.array_equal(layers[0].numpy(), expected), "restore returned wrong values"
    child_result(
        name=name,
        op=op,
        seconds=seconds,
        cpu=cpu,
        model_bytes=model_bytes,
        tensors=len(sizes),
        rss_before=before,
        peak_rss=peak,
    )


def run_case(
    case: str, directory: Path, rounds: int, zarr_options: str, settle: float = 0.0
) -> list[dict[tuple[str, str], Any]]:
    """``rounds`` interleaved rounds; one dict of results per round.

    A round waits ``settle`` seconds between its saves and its restores, as ``bench_api`` does: a restore
    right after the saves reads slower while the disk still writes them out, and the backend whose restore
    comes second alternates from round to round.
    """
    work = directory / case
    out = []
    for round_ in range(rounds):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        names = list(BACKENDS) if round_ % 2 == 0 else list(reversed(BACKENDS))
        results: dict[tuple[str, str], Any] = {}
        for op in ("save", "restore"):
            if op == "restore":
                time.sleep(settle)
            for name in names:
                results[(name, op)] = run_child(__file__, name, op, case, str(work), zarr_options)
        out.append(results)
        print(
            f"  round {round_ + 1}: "
            + "  ".join(f"{n} {op} {results[(n, op)]['seconds']:.2f}s" for op in ("save", "restore") for n in names),
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    return out


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def report(case: str, rounds: list[dict[tuple[str, str], Any]]) -> None:
    """Medians and spreads per measurement, and of the per-round zarr/bundle ratios."""
    first = rounds[0][("bundle", "save")]
    model = first["model_bytes"]
    print(f"\n== {case}: {first['tensors']} float32 Variables, {model / MiB:.0f} MiB, {len(rounds)} rounds ==")
    print("median (min..max) over the rounds")
    print(f"{'measurement':<16}{'seconds':>20}{'peak RSS / model':>22}{'added MiB':>20}{'CPU s per 1k tensors':>26}")
    for op in ("save", "restore"):
        for name in BACKENDS:
            rs = [r[(name, op)] for r in rounds]
            secs = _spread([x["seconds"] for x in rs])
            mem = _spread([x["peak_rss"] / model for x in rs], "{:.3f}")
            added = _spread([(x["peak_rss"] - x["rss_before"]) / MiB for x in rs], "{:.1f}")
            cpu = _spread([1000 * x["cpu"] / x["tensors"] for x in rs], "{:.3f}")
            print(f"{name + ' ' + op:<16}{secs:>20}{mem:>22}{added:>20}{cpu:>26}")
    for op in ("save", "restore"):
        ratios = [r[("zarr", op)]["seconds"] / r[("bundle", op)]["seconds"] for r in rounds]
        print(f"zarr/bundle {op} time: {_spread(ratios)}   per round: " + " ".join(f"{x:.2f}" for x in ratios))
        pairs = paired(ratios)
        if pairs:
            print(
                f"zarr/bundle {op} time, paired rounds: {_spread(pairs)} over {len(pairs)} pairs   per pair: "
                + " ".join(f"{x:.2f}" for x in pairs)
            )
    mem = [r[("zarr", op)]["peak_rss"] / model for r in rounds for op in ("save", "restore")]
    print(f"zarr peak RSS / model (save and restore): max {max(mem):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("mixed", "small", "all"), default="mixed")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds, an even number (medians over them)")
    parser.add_argument("--dir", default=None, help="scratch directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--zarr-options", default="{}", help="JSON backend_options for zarr (default: its defaults)")
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds to wait between a round's saves and its restores"
    )
    parser.add_argument("--child", nargs=5, metavar=("NAME", "OP", "CASE", "DIR", "OPTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="trackpoint-bench-zarr-"))
    cases = ("mixed", "small") if args.case == "all" else (args.case,)
    for case in cases:
        report(case, run_case(case, base, args.rounds, args.zarr_options, args.settle))
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
