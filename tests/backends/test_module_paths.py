"""Where the built-in stores and plugins live: the 0.1 module paths warn and still work; built-ins are entry points."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from trackpoint.backends import stores
from trackpoint.plugins import BackendSpec

MOVED = [
    ("trackpoint.backends.files", "trackpoint.backends.stores", ["FileLayer", "FileSink"]),
    ("trackpoint.backends.local", "trackpoint.backends.stores", ["LocalFiles"]),
    ("trackpoint.backends.fsspec_files", "trackpoint.backends.stores", ["Condition", "ObjectStat", "TransferOptions"]),
    ("trackpoint.backends.s3", "trackpoint.backends.stores.s3", ["S3Files", "create_files"]),
    ("trackpoint.backends.gcs", "trackpoint.backends.stores.gcs", ["GCSFiles", "create_files"]),
]


@pytest.mark.parametrize(("old", "new", "names"), MOVED)
def test_old_module_warns_naming_the_new_one_and_reexports(old: str, new: str, names: list[str]) -> None:
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .* import from {new}\b") as caught:
        sys.modules.pop(old, None)
        module = __import__(old, fromlist=["__name__"])
    # Attributed to the import statement (here: __import__ in this file), not to the shim.
    assert caught[0].filename == __file__
    target = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(target, name)


def test_the_library_itself_imports_no_old_path() -> None:
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import pkgutil, importlib, trackpoint, trackpoint.backends as b\n"
        "old = {'files', 'local', 'fsspec_files', 's3', 'gcs'}\n"
        "for m in pkgutil.walk_packages(b.__path__, 'trackpoint.backends.'):\n"
        "    if m.name.rsplit('.', 1)[-1] not in old or '.stores.' in m.name:\n"
        "        importlib.import_module(m.name)\n"
        "trackpoint.list_backends()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.fixture
def io_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_a_01_fsspecfiles_subclass_keeps_working(io_loop: asyncio.AbstractEventLoop) -> None:
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("trackpoint.backends.fsspec_files", None)
        fsspec_files = importlib.import_module("trackpoint.backends.fsspec_files")

    class Old(fsspec_files.FsspecFiles):  # type: ignore[misc, name-defined]
        store_name = "old"
        schemes = ("old",)
        objects: ClassVar[dict[str, bytes]] = {}

        def _classify(self, exc: BaseException) -> Any:
            return "other"

        async def _a_stat(self, bucket: str, key: str) -> Any:
            data = self.objects.get(key)
            return None if data is None else stores.ObjectStat(len(data), "1", None)

        async def _a_put(self, bucket: str, key: str, data: Any, cond: Any, write_id: str) -> str:
            self.objects[key] = bytes(data)
            return "1"

        async def _a_get_into(self, bucket: str, key: str, start: int, out: memoryview) -> None:
            out[:] = self.objects[key][start : start + out.nbytes]

    files = Old(SimpleNamespace(loop=io_loop), stores.TransferOptions())
    assert isinstance(files, stores.ObjectStore)
    files.put("old://b/k", b"abc")
    assert files.read("old://b/k") == b"abc" and files.loop is io_loop


def test_builtins_are_entry_points_into_builtin_plugin_objects() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="trackpoint.backends")}
    for name in ("bundle", "memory", "s3", "gcs", "zarr"):
        assert eps[name].value == f"trackpoint.backends._builtin:{name}"
        specs: list[BackendSpec] = []
        eps[name].load().trackpoint_register_backends(register=specs.append)
        assert [s.name for s in specs] == [name]
    # The built-in plugins spell out the schemes and capabilities of the stores they register (so that
    # registering imports no store); they must say what the classes say.
    from trackpoint.backends.memory import MemoryBackend
    from trackpoint.backends.stores.gcs import GCSFiles
    from trackpoint.backends.stores.local import LOCAL_CAPABILITIES
    from trackpoint.backends.stores.s3 import S3Files

    expected = {
        "bundle": (("", "file"), LOCAL_CAPABILITIES),
        "memory": (("memory",), MemoryBackend.capabilities),
        "s3": (S3Files.schemes, S3Files.capabilities),
        "gcs": (GCSFiles.schemes, GCSFiles.capabilities),
    }
    for name, (schemes, capabilities) in expected.items():
        registered: list[BackendSpec] = []
        eps[name].load().trackpoint_register_backends(register=registered.append)
        assert (registered[0].schemes, registered[0].capabilities) == (schemes, capabilities), name
