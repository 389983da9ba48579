"""How much ``import trackpoint`` adds to ``import numpy``, and which packages it loads.

Each round starts a fresh interpreter that imports numpy, then trackpoint, timing each with
``time.perf_counter``; the cost of trackpoint is the second figure (numpy is already loaded, as in any
program that uses trackpoint). Rounds are separate processes, so every one pays the full import, with
the ``.pyc`` files already compiled (as an installed wheel has them) before the first round.

Run: ``python benchmarks/bench_import.py [--rounds 15]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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
print(json.dumps({"numpy": t1 - t0, "trackpoint": t2 - t1, "packages": third}))
"""


def one() -> tuple[float, float, list[str]]:
    """(ms for numpy, ms for trackpoint after numpy, third-party packages loaded) in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD], check=True, capture_output=True, text=True, env=child_env()
    ).stdout
    r = json.loads(out)
    return 1000 * r["numpy"], 1000 * r["trackpoint"], r["packages"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    runs = [one() for _ in range(args.rounds)]
    numpy_ms = [r[0] for r in runs]
    tp_ms = [r[1] for r in runs]
    med = statistics.median(tp_ms)
    print(f"rounds: {args.rounds} fresh interpreters")
    for label, ms in (("import numpy", numpy_ms), ("import trackpoint after numpy", tp_ms)):
        print(f"{label:<30} median {statistics.median(ms):5.0f} ms  range {min(ms):.0f}-{max(ms):.0f} ms")
    print(f"third-party packages loaded: {', '.join(runs[0][2])}")
    ok = med <= TARGET_MS
    print(f"target: median {med:.0f} ms <= {TARGET_MS:.0f} ms  {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
