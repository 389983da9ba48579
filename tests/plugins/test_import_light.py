"""``import trackpoint`` imports no backend plugin and no storage library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("s3fs", "gcsfs", "zarr", "fsspec", "boto3", "botocore", "aiobotocore", "google.cloud", "sqlite3")

SCRIPT = f"""
import json, sys
def loaded():
    return sorted(m for m in sys.modules
                  if m.startswith("trackpoint.backends.") or m.startswith("trackpoint_")
                  or any(m == h or m.startswith(h + ".") for h in {HEAVY!r}))
import trackpoint
after_import = loaded()
plugins_imported = "trackpoint.plugins" in sys.modules
names = [row.name for row in trackpoint.list_backends()]
print(json.dumps({{"after_import": after_import, "plugins_imported": plugins_imported,
                  "after_listing": [m for m in loaded() if not m.startswith(("trackpoint.backends.", "trackpoint_"))],
                  "names": names}}))
"""


def test_import_trackpoint_is_light() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["after_import"] == []
    assert result["plugins_imported"] is False
    assert "memory" in result["names"]
    # Loading every plugin (list_backends) still imports no storage library:
    # plugin modules are light and storage imports wait for the factory.
    assert result["after_listing"] == []


# The command line and the file formats are loaded when used, never by `import trackpoint`.
COMMAND_LINE = ("argparse", "safetensors", "tqdm", "trackpoint.cli", "trackpoint.interchange._files")


def test_import_trackpoint_loads_no_command_line_or_file_format() -> None:
    script = f"import json, sys, trackpoint; print(json.dumps([m for m in {COMMAND_LINE!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    # The check itself sees these modules once they are imported.
    probe = script.replace("import json, sys, trackpoint;", "import json, sys, trackpoint, trackpoint.cli;")
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert set(json.loads(seen.stdout)) >= {"argparse", "trackpoint.cli"}


def test_saving_to_a_local_disk_imports_no_network_machinery(tmp_path: Path) -> None:
    # Every plugin module is imported to register its backends, object stores included; asyncio and ssl
    # (about 20 ms of a process's first save) wait until a store is used.
    script = (
        "import json, sys, numpy, trackpoint\n"
        f"trackpoint.Checkpoint(v=trackpoint.Variable(numpy.ones(3))).write({str(tmp_path / 'ckpt')!r})\n"
        "print(json.dumps([m for m in ('asyncio', 'ssl') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    # The check sees them once a store module is used.
    probe = script.replace("import json, sys,", "import json, sys, asyncio,")
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(seen.stdout) == ["asyncio", "ssl"]


# Modules a checkpoint on the local disk does not need; registering the built-in backends imports none of them.
NOT_FOR_LOCAL = (
    "trackpoint.backends.memory",
    "trackpoint.backends.stores.objectstore",
    "trackpoint.backends.stores._fsspec",
    "trackpoint.backends.stores.s3",
    "trackpoint.backends.stores.gcs",
)


def test_a_local_checkpoint_imports_only_the_local_backend(tmp_path: Path) -> None:
    script = (
        "import json, sys, numpy, trackpoint\n"
        f"ckpt = trackpoint.Checkpoint(v=trackpoint.Variable(numpy.ones(3))).write({str(tmp_path / 'ckpt')!r})\n"
        "trackpoint.Checkpoint(v=trackpoint.Variable(numpy.zeros(3))).read(ckpt).assert_consumed()\n"
        f"print(json.dumps([m for m in {NOT_FOR_LOCAL!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    # The check sees them once a checkpoint goes to the memory backend and an object store is named.
    probe = script.replace(
        "print(json.dumps(",
        "trackpoint.Checkpoint(v=trackpoint.Variable(numpy.ones(3))).write('memory://probe/ckpt')\n"
        "from trackpoint.backends.stores import ObjectStore\n"
        "print(json.dumps(",
    )
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert set(json.loads(seen.stdout)) >= {"trackpoint.backends.memory", "trackpoint.backends.stores.objectstore"}


# The bundle's save machinery, which a process that only reads checkpoints never needs.
NOT_FOR_READING = ("trackpoint.backends.bundle._commit", "trackpoint.backends.bundle._writer")


def test_reading_a_bundle_imports_none_of_its_save_machinery(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    write = f"import numpy, trackpoint; trackpoint.Checkpoint(v=trackpoint.Variable(numpy.ones(3))).write({prefix!r})"
    subprocess.run([sys.executable, "-c", write], check=True)
    script = (
        "import json, sys, numpy, trackpoint\n"
        f"trackpoint.Checkpoint(v=trackpoint.Variable(numpy.zeros(3))).read({prefix!r}).assert_consumed()\n"
        f"print(json.dumps([m for m in {NOT_FOR_READING!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    # The check sees them once the same process saves.
    probe = script.replace("print(json.dumps(", f"trackpoint.Checkpoint().write({prefix + '-2'!r})\nprint(json.dumps(")
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(seen.stdout) == list(NOT_FOR_READING)
