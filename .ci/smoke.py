"""Smoke test of an installed trackpoint, as a user meets it: run by ``.ci/run`` against the built wheel.

``python .ci/smoke.py [SCRIPT ...]`` runs, each in its own interpreter, the checks below and then every
``SCRIPT`` given (CI passes ``docs/examples/quickstart.py``). Each must exit with status 0 and print
nothing at all on stderr: a warning a user would see (an unavailable backend, an unclosed session, a
traceback at exit) fails the smoke test as surely as a wrong value. Run it from a directory outside the
source tree, in an environment where trackpoint is installed from a wheel (not editable), so that what
is tested is what ships.

The checks:

- trackpoint is imported from site-packages, not from a source checkout or an editable install;
- every backend the ``trackpoint`` distribution registers (its ``trackpoint.backends`` entry points) is
  listed by ``trackpoint.list_backends()`` as available;
- a checkpoint saved through each local backend (``bundle`` on a plain path, ``zarr``, ``memory``)
  restores into fresh objects with every value equal, and ``assert_consumed()`` holds.

This file is a developer script: it lives in ``.ci/`` so that no distribution ships it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

CHECKS_FLAG = "--checks"
#: Backends that store on this machine, each with the location to save to under a scratch directory.
LOCAL_BACKENDS = {
    "bundle": "{tmp}/bundle/ckpt",
    "zarr": "zarr://{tmp}/zarr/ckpt",
    "memory": "memory://smoke/ckpt",
}


class SmokeFailure(AssertionError):
    """A smoke check failed; the message says which and what was seen."""


def check_installed_from_wheel() -> None:
    """Fail unless ``trackpoint`` comes from site-packages of a regular (non-editable) install."""
    import trackpoint

    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    location = Path(trackpoint.__file__).resolve()
    if not location.is_relative_to(purelib):
        raise SmokeFailure(f"trackpoint is imported from {location}, not from site-packages {purelib}")
    direct_url = metadata.distribution("trackpoint").read_text("direct_url.json")
    if direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"):
        raise SmokeFailure("trackpoint is an editable install; install the built wheel instead")


def check_backends_available() -> None:
    """Fail unless every backend the trackpoint distribution registers is listed and available."""
    import trackpoint as tp
    from trackpoint.plugins import ENTRY_POINT_GROUP

    registered = {ep.name for ep in metadata.distribution("trackpoint").entry_points if ep.group == ENTRY_POINT_GROUP}
    missing_locals = set(LOCAL_BACKENDS) - registered
    if missing_locals:
        raise SmokeFailure(f"the trackpoint distribution registers no {sorted(missing_locals)} backend")
    listed = {info.name: info for info in tp.list_backends()}
    problems = [f"{name}: not listed" for name in sorted(registered - set(listed))]
    problems += [
        f"{name}: unavailable ({listed[name].reason})"
        for name in sorted(registered & set(listed))
        if not listed[name].available
    ]
    if problems:
        raise SmokeFailure("built-in backends not usable: " + "; ".join(problems))


def _state(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "kernel": rng.standard_normal((3, 4)).astype(np.float32),
        "step": np.asarray(rng.integers(0, 1 << 40), dtype=np.int64),
        "mask": rng.integers(0, 2, 5).astype(bool),
        "vocab": np.array([f"word{seed}".encode(), b"", b"\x00\xff"], dtype=object),
    }


def _model(values: dict[str, np.ndarray]) -> object:
    import trackpoint as tp

    model = tp.AutoTrackable()
    for name, value in values.items():
        setattr(model, name, tp.Variable(value.copy()))
    return model


def check_round_trips(tmp: str) -> None:
    """Save through each local backend, restore into fresh objects, and compare every value."""
    import trackpoint as tp

    saved_values = _state(1)
    for backend, template in LOCAL_BACKENDS.items():
        location = template.format(tmp=tmp)
        path = tp.Checkpoint(model=_model(saved_values)).save(location)
        fresh = _model(_state(2))
        tp.Checkpoint(model=fresh).restore(path).assert_consumed()
        for name, expected in saved_values.items():
            got = getattr(fresh, name).numpy()
            if got.dtype != expected.dtype or got.shape != expected.shape or not np.array_equal(got, expected):
                raise SmokeFailure(f"{backend}: {name} restored from {path} as {got!r}, saved {expected!r}")
        print(f"{backend}: saved and restored {path}")


def run_checks() -> None:
    """Every check, in this process (the child the parent watches)."""
    import trackpoint as tp

    check_installed_from_wheel()
    check_backends_available()
    print("backends: " + ", ".join(info.name for info in tp.list_backends()))
    with tempfile.TemporaryDirectory(prefix="tp-smoke-") as tmp:
        check_round_trips(tmp)


def run_quietly(argv: list[str]) -> str | None:
    """Run ``python argv...``; return a description of the failure, or ``None`` if it passed silently."""
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, check=False)
    sys.stdout.write(result.stdout)
    what = " ".join(argv)
    if result.returncode != 0:
        return f"{what} exited with status {result.returncode}; stderr:\n{result.stderr}"
    if result.stderr:
        return f"{what} printed on stderr (a user would see this):\n{result.stderr}"
    return None


def main(argv: list[str]) -> int:
    if argv == [CHECKS_FLAG]:
        run_checks()
        return 0
    programs = [[__file__, CHECKS_FLAG], *([script] for script in argv)]
    failures = [failure for program in programs if (failure := run_quietly(program)) is not None]
    for failure in failures:
        print(f"SMOKE FAILURE: {failure}", file=sys.stderr)
    if not failures:
        print(f"smoke test passed: {len(programs)} program(s), nothing on stderr")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
