"""How much ``import trackpoint`` adds to ``import numpy``, which packages it loads, and the first read.

Each round starts a fresh interpreter that imports numpy, then trackpoint, timing each with
``time.perf_counter``; the cost of trackpoint is the second figure (numpy is already loaded, as in any
program that uses trackpoint). Rounds are separate processes, so every one pays the full import, with
the ``.pyc`` files already compiled (as an installed wheel has them) before the first round.

The same interpreter then reads a one-variable checkpoint twice with ``Checkpoint.read``: the first read
pays what a process pays once (finding the backend plugins through their entry points, importing them and
the bundle backend), the second is the read alone. Reported, no target.

Run: ``python benchmarks/bench_import.py [--rounds 15]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import child_env

TARGET_MS = 150.0

CHILD = """
import json, sys, time
before = set(sys.modules)
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import trackpoint
t2 = time.perf_counter()
third = sorted({m.split(".")[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names))
root = trackpoint.AutoTrackable()
root.v = trackpoint.Variable(numpy.zeros(3, numpy.float32))
checkpoint = trackpoint.Checkpoint(model=root)
reads = []
for _ in range(2):
    t = time.perf_counter()
    checkpoint.read(sys.argv[1]).assert_consumed()
    reads.append(time.perf_counter() - t)
print(json.dumps({"numpy": t1 - t0, "trackpoint": t2 - t1, "packages": third, "reads": reads}))
"""


def one(prefix: str) -> tuple[float, float, list[str], float, float]:
    """In a fresh interpreter: ms for numpy, ms for trackpoint after numpy, third-party packages loaded,
    ms for the first and for the second ``Checkpoint.read`` of ``prefix``."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, prefix], check=True, capture_output=True, text=True, env=child_env()
    ).stdout
    r = json.loads(out)
    first, second = r["reads"]
    return 1000 * r["numpy"], 1000 * r["trackpoint"], r["packages"], 1000 * first, 1000 * second


def _write_checkpoint(directory: str) -> str:
    """A one-variable checkpoint, written in a child (this process stays free of trackpoint)."""
    prefix = str(Path(directory) / "ckpt")
    code = (
        "import sys, numpy, trackpoint as tp; r = tp.AutoTrackable(); r.v = tp.Variable(numpy.ones(3, numpy.float32)); "
        "tp.Checkpoint(model=r).write(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, prefix], check=True, env=child_env())
    return prefix


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trackpoint-bench-") as directory:
        prefix = _write_checkpoint(directory)
        runs = [one(prefix) for _ in range(args.rounds)]
    tp_ms = [r[1] for r in runs]
    med = statistics.median(tp_ms)
    print(f"rounds: {args.rounds} fresh interpreters")
    rows = (
        ("import numpy", [r[0] for r in runs]),
        ("import trackpoint after numpy", tp_ms),
        ("first Checkpoint.read", [r[3] for r in runs]),
        ("second Checkpoint.read", [r[4] for r in runs]),
    )
    for label, ms in rows:
        print(f"{label:<30} median {statistics.median(ms):6.1f} ms  range {min(ms):.1f}-{max(ms):.1f} ms")
    print(f"third-party packages loaded: {', '.join(runs[0][2])}")
    ok = med <= TARGET_MS
    print(f"target: median {med:.0f} ms <= {TARGET_MS:.0f} ms  {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
