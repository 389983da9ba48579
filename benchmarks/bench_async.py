"""Async saves: how long they block, what memory they add, and a training loop that saves every step.

State: 1 GiB of float32 ``Variable``s (``mixed_sizes``: log-uniform 1 KiB..64 MiB),
saved with the bundle backend to local disk (the data fsynced). Every
measurement runs in a fresh child process; per round the cases run in
alternating order, and the report gives medians and spread (min..max) over
the rounds. The baseline, measured in the same child as each case:

* ``memcpy``: ``np.copyto`` of every variable's value into a preallocated,
  already touched buffer: the cheapest possible snapshot by copying.

Cases (the async ones measure the third save of the child, see below):

* ``idle``: ``Checkpoint.save`` with ``enable_async=True`` and nothing
  assigned while it writes. Blocking time = the ``save`` call.
* ``held``: the same, then every variable is assigned a new value (one
  ``assign`` each, from prepared arrays) while the writer is held back (the
  checkpoint is written by ``gated-bundle`` from ``tests/gated.py``, the bundle
  backend whose shard writes wait at a gate the child opens afterwards), so
  every assignment meets a value not yet written. Blocking time = the ``save``
  call + what the assignments took beyond the same assignments with no save in
  flight (measured in the same child just before the measured save): the cost
  of copy-on-write alone.
* ``assign``: the same with the writer running: the assignments also compete
  with it for the two CPUs, memory bandwidth and the GIL.
* ``sync``: a synchronous ``Checkpoint.save`` (the whole write blocks).

Each child saves three times the same way (assigning between saves too) and
reports the third: a training loop's steady state, where copy-on-write writes
go to the warm buffers earlier saves released. The first save of the process
(its buffers fresh from the kernel) is reported beside it as ``first save``.
Extra peak memory = the child's RSS high-water mark minus its RSS just before
the first save (state and prepared values already allocated; the kept warm
buffers included), as a multiple of the state. Targets (issue 12): blocking at
most 0.1x memcpy for ``idle`` and 1.2x for ``held`` and ``assign``.

``train``: a loop of ``--steps`` steps over 256 MiB of variables, each step an
SGD-like update (``assign_sub`` of a prepared gradient into every variable)
followed by ``CheckpointManager.save`` (``max_to_keep=2``): sync, async (the
writer at the program's priority, the default), and async with the writer 10
steps nicer (``train-async-nice10``, ``TRACKPOINT_ASYNC_NICENESS=10``, the
default before); throughput in steps per second, ``sync()`` at the end
included.

Run: ``python benchmarks/bench_async.py [--rounds 5] [--steps 8] [--dir DIR] [--cases train]``
(``--cases`` takes case names, or ``copy`` for idle/held/assign/sync and
``train`` for the three loops).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import GiB, MiB, child_result, mixed_sizes, peak_rss_bytes, run_child, timed

CASES = ("idle", "held", "assign", "sync")
TRAIN = ("train-async", "train-async-nice10", "train-sync")
GROUPS = {"copy": CASES, "train": TRAIN}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _state(total: int, seed: int) -> tuple[Any, list[Any]]:
    import numpy as np

    import trackpoint as tp

    rng = np.random.default_rng(seed)
    variables = [tp.Variable(rng.random(n, dtype=np.float32)) for n in mixed_sizes(total)]
    model = tp.AutoTrackable()
    model.layers = variables
    return tp.Checkpoint(model=model), variables


def _memcpy(variables: list[Any]) -> float:
    """Seconds to copy every value into buffers touched beforehand (no page faults timed)."""
    import numpy as np

    # The views are dropped on return: a live view of a value would make assignments wait.
    values = [v.value for v in variables]
    buffers = [np.ones_like(v) for v in values]
    return timed(lambda: [np.copyto(b, v) for b, v in zip(buffers, values, strict=True)])


def _hold_writer() -> Any:
    """Register ``gated-bundle`` (the bundle backend whose shard writes wait at a gate); return the gate."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import gated
    from trackpoint import plugins

    plugins.register(gated._Plugin(), "gated-backends")
    return gated.GATE


def child(case: str, directory: str, steps: str) -> None:
    """One measurement in this fresh process."""
    import numpy as np

    import trackpoint as tp

    if case.startswith("train"):
        if case == "train-async-nice10":
            os.environ["TRACKPOINT_ASYNC_NICENESS"] = "10"  # the writer 10 steps nicer (the old default)
        else:
            os.environ.pop("TRACKPOINT_ASYNC_NICENESS", None)  # the default: the program's priority
        train(case, directory, int(steps))
        return
    ckpt, variables = _state(GiB, 0)
    state_bytes = sum(v.value.nbytes for v in variables)
    memcpy = _memcpy(variables)
    new = [[np.full(v.shape, x, np.float32) for v in variables] for x in (0.25, 0.5)]
    gate = _hold_writer() if case == "held" else None
    options = tp.CheckpointOptions(enable_async=case != "sync", backend="gated-bundle" if gate is not None else None)
    assigning = case in ("held", "assign")

    def one_save(prefix: str, values: list[Any]) -> tuple[float, float]:
        """Blocking seconds of one save (and the assignments' share of it), the write finished after."""
        if gate is not None:
            gate.open.clear()
        blocking = timed(lambda: ckpt.save(prefix, options))
        assigned = 0.0
        if assigning:
            assigned = timed(lambda: [v.assign(x) for v, x in zip(variables, values, strict=True)])
            blocking += max(0.0, assigned - baseline_assign)
        if gate is not None:
            gate.open.set()
        return blocking, assigned

    # The first async save of a process writes its copy-on-write values into fresh memory; later
    # ones reuse the buffers earlier saves released. Measured: the third (a training loop's steady
    # state; with the writer running, which values swap varies per save, so two saves warm the pool).
    rss0 = _rss()
    baseline_assign = timed(lambda: [v.assign(x) for v, x in zip(variables, new[0], strict=True)])
    cold, _ = one_save(str(Path(directory) / case / "warm-up-1"), new[1])
    ckpt.sync()
    one_save(str(Path(directory) / case / "warm-up-2"), new[0])
    ckpt.sync()
    # The same assignments with no save in flight, just before the measured save.
    baseline_assign = timed(lambda: [v.assign(x) for v, x in zip(variables, new[1], strict=True)])
    blocking, assigned = one_save(str(Path(directory) / case / "ckpt"), new[0])
    written = timed(ckpt.sync)
    last = ckpt._self_async.last
    child_result(
        case=case,
        memcpy=memcpy,
        cold=cold,
        blocking=blocking,
        assign=assigned,
        baseline_assign=baseline_assign,
        after=written,
        extra_peak=peak_rss_bytes() - rss0,
        state_bytes=state_bytes,
        swaps=last.swaps if last is not None else 0,
        warm=last.warm if last is not None else 0,
        waits=last.waits if last is not None else 0,
    )


def train(case: str, directory: str, steps: int) -> None:
    """``steps`` updates over 256 MiB of variables, each followed by a manager save (async or sync)."""
    import numpy as np

    import trackpoint as tp

    ckpt, variables = _state(256 * MiB, 1)
    grads = [np.full(v.shape, 1e-3, np.float32) for v in variables]
    options = tp.CheckpointOptions(enable_async=case.startswith("train-async"))
    manager = tp.CheckpointManager(ckpt, str(Path(directory) / case), max_to_keep=2, options=options)
    t0 = time.perf_counter()
    for _ in range(steps):
        for v, g in zip(variables, grads, strict=True):
            v.assign_sub(g)
        manager.save()
    manager.sync()
    seconds = time.perf_counter() - t0
    child_result(case=case, steps_per_second=steps / seconds, seconds=seconds)


def _spread(values: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def _assignments(case: str, rs: list[dict[str, Any]]) -> None:
    print(
        f"{case}: the assignments took "
        + _spread([x["assign"] for x in rs])
        + " s during the save, "
        + _spread([x["baseline_assign"] for x in rs])
        + " s without one; new buffers "
        + _spread([x["swaps"] for x in rs], "{:.0f}")
        + " (from the pool "
        + _spread([x["warm"] for x in rs], "{:.0f}")
        + "), waits "
        + _spread([x["waits"] for x in rs], "{:.0f}")
        + f" of {len(mixed_sizes(GiB))} variables"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians and spread over them)")
    parser.add_argument("--steps", type=int, default=8, help="steps of the training loop")
    parser.add_argument("--dir", default=None, help="scratch directory on the disk to measure (default: a temp dir)")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["copy", "train"],
        choices=sorted({*CASES, *TRAIN, *GROUPS}),
        help="what to run: case names, 'copy' (idle, held, assign, sync) or 'train' (the three loops)",
    )
    parser.add_argument("--child", nargs=3, metavar=("CASE", "DIR", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    chosen = [c for c in CASES + TRAIN if any(c == name or c in GROUPS.get(name, ()) for name in args.cases)]
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="trackpoint-bench-async-"))
    rounds: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        order = chosen if round_ % 2 == 0 else chosen[::-1]
        results: dict[str, Any] = {}
        for case in order:
            shutil.rmtree(base / case, ignore_errors=True)
            results[case] = run_child(__file__, case, str(base), str(args.steps))
            shutil.rmtree(base / case, ignore_errors=True)
        rounds.append(results)
        print(
            f"  round {round_ + 1}: "
            + "  ".join(
                f"{c} {results[c]['blocking'] / results[c]['memcpy']:.3f}x memcpy" for c in CASES if c in results
            )
            + "  "
            + "  ".join(f"{c} {results[c]['steps_per_second']:.2f} steps/s" for c in TRAIN if c in results),
            flush=True,
        )
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    copies = [c for c in CASES if c in chosen]
    if copies:
        _report_copies(rounds, copies)
    if "train-sync" in chosen:
        _report_train(rounds, [c for c in TRAIN[:-1] if c in chosen])
    return 0


def _report_copies(rounds: list[dict[str, Any]], cases: list[str]) -> None:
    state = rounds[0][cases[0]]["state_bytes"]
    print(f"\n== {state / MiB:.0f} MiB of float32 Variables, bundle on local disk, {len(rounds)} rounds ==")
    print("median (min..max) over the rounds")
    print(
        f"{'case':<8}{'memcpy s':>22}{'blocking s':>22}{'blocking / memcpy':>24}{'first save / memcpy':>24}"
        f"{'extra peak / state':>24}"
    )
    for case in cases:
        rs = [r[case] for r in rounds]
        print(
            f"{case:<8}{_spread([x['memcpy'] for x in rs]):>22}{_spread([x['blocking'] for x in rs]):>22}"
            f"{_spread([x['blocking'] / x['memcpy'] for x in rs]):>24}"
            f"{_spread([x['cold'] / x['memcpy'] for x in rs]):>24}"
            f"{_spread([x['extra_peak'] / x['state_bytes'] for x in rs]):>24}"
        )
    for case in ("held", "assign"):
        if case in cases:
            _assignments(case, [r[case] for r in rounds])
    if "idle" in cases:
        after = _spread([r["idle"]["after"] for r in rounds], "{:.2f}")
        print(f"idle: background write after save returned {after} s")


def _report_train(rounds: list[dict[str, Any]], cases: list[str]) -> None:
    sync = [r["train-sync"]["steps_per_second"] for r in rounds]
    print(f"train (256 MiB, save every step), steps/s: sync {_spread(sync, '{:.2f}')}")
    for case in cases:
        rate = [r[case]["steps_per_second"] for r in rounds]
        ratio = [x / y for x, y in zip(rate, sync, strict=True)]
        print(
            f"  {case}: {_spread(rate, '{:.2f}')} steps/s, per round / sync {_spread(ratio, '{:.2f}')}   "
            + " ".join(f"{x:.2f}" for x in ratio)
        )


if __name__ == "__main__":
    sys.exit(main())
