"""The conformance kit needs pytest, which the ``testing`` extra installs; without it, the import says so."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_kit_without_pytest_names_the_extra_to_install() -> None:
    # pytest is installed here: the child process hides it (a None entry in sys.modules fails its import).
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None\n"
        "import trackpoint\n"
        "try:\n"
        "    import trackpoint.plugins.testing\n"
        "except trackpoint.BackendUnavailableError as exc:\n"
        "    assert isinstance(exc, ImportError)\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "trackpoint.plugins.testing, the conformance kit for storage backends, runs under pytest, which is not "
        "installed: pip install 'trackpoint[testing]'\n"
    )


def test_the_testing_extra_installs_what_the_kit_imports() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [req.split(">")[0] for req in extras["testing"]] == ["pytest"]
    imported = {
        line.split()[1].split(".")[0]
        for path in (ROOT / "plugins" / "testing").glob("*.py")
        for line in path.read_text().splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    }
    # numpy and ml_dtypes are trackpoint's own dependencies; the standard library needs nothing.
    third_party = imported - set(sys.stdlib_module_names) - {"trackpoint", "numpy", "ml_dtypes"}
    assert third_party == {"pytest"}
