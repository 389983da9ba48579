"""``ObjectStorePlugin``: one object registers a third party's store in both formats, imported on first use."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import plugins
from trackpoint.backends.stores import Condition, ErrorKind, ObjectStat, ObjectStore
from trackpoint.errors import PluginError
from trackpoint.plugins import ObjectStorePlugin
from trackpoint.storage import Capabilities, CheckpointOptions, VersionedBytes

#: The objects of every SharedDict store, so that each backend opened sees the same "server".
_OBJECTS: dict[tuple[str, str], tuple[bytes, str, str]] = {}
_LOCK = threading.Lock()


class _Missing(Exception):
    pass


class _Refused(Exception):
    pass


class SharedDict(ObjectStore):
    """Objects in a module-level dict, with the conditional writes of an object store."""

    store_name = "shared"
    schemes = ("shareddict",)

    def classify(self, exc: BaseException) -> ErrorKind:
        return "not_found" if isinstance(exc, _Missing) else "precondition" if isinstance(exc, _Refused) else "other"

    def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        found = _OBJECTS.get((bucket, key))
        return None if found is None else ObjectStat(len(found[0]), found[1], found[2])

    def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        found = _OBJECTS.get((bucket, key))
        if found is None:
            raise _Missing(key)
        chunk = found[0][start : start + out.nbytes]
        if len(chunk) < out.nbytes:
            raise tp.DataLossError(f"shared: {key} ends early")
        out[:] = chunk

    def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        found = _OBJECTS.get((bucket, key))
        return None if found is None else VersionedBytes(found[0], found[1])

    def object_put(self, bucket: str, key: str, data: memoryview, condition: Condition, write_id: str) -> str:
        with _LOCK:
            current = _OBJECTS.get((bucket, key))
            if condition.create_only and current is not None:
                raise _Refused(key)
            if condition.version is not None and (current is None or current[1] != condition.version):
                raise _Refused(key)
            version = uuid.uuid4().hex
            _OBJECTS[(bucket, key)] = (bytes(data), version, write_id)
            return version

    def object_list(self, bucket: str, prefix: str) -> list[str]:
        return [k for (b, k) in list(_OBJECTS) if b == bucket and k.startswith(prefix) and "/" not in k[len(prefix) :]]

    def object_find(self, bucket: str, prefix: str) -> list[str]:
        return [k for (b, k) in list(_OBJECTS) if b == bucket and k.startswith(prefix)]

    def object_delete(self, bucket: str, keys: Sequence[str]) -> None:
        with _LOCK:
            for k in keys:
                _OBJECTS.pop((bucket, k), None)


class NotAStore:
    schemes = ("shareddict",)


HERE = f"{__name__}:SharedDict"


@pytest.fixture
def registered(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Register ObjectStorePlugins through ``add(plugin)``; all unregistered afterwards."""
    names: list[str] = []

    def add(plugin: ObjectStorePlugin) -> None:
        name = f"objplugin-{uuid.uuid4().hex[:8]}"
        plugins.register(plugin, name)
        names.append(name)

    request.node.add = add
    yield names
    for name in names:
        plugins.unregister(name)


def test_one_object_registers_both_formats_and_readers_find_each(registered: Any, request: Any) -> None:
    request.node.add(ObjectStorePlugin(HERE, name="shareddict", schemes=("shareddict",), description="a dict"))
    run = f"shareddict://b/{uuid.uuid4().hex[:8]}"
    values = np.arange(6, dtype=np.float32)
    bundle = tp.Checkpoint(v=tp.Variable(values)).save(f"{run}/bundle")
    zarr = tp.Checkpoint(v=tp.Variable(values * 2)).save(f"{run}/zarr", CheckpointOptions(backend="zarr-shareddict"))
    assert any(key.endswith(".index") for (_, key) in _OBJECTS if run.split("/")[-1] in key)
    # A reader of the plain scheme asks the Zarr backend too (trackpoint_detect_backends).
    for path, expected in ((bundle, values), (zarr, values * 2), (f"zarr+{zarr}", values * 2)):
        fresh = tp.Checkpoint(v=tp.Variable(np.zeros(6, np.float32)))
        fresh.restore(path).assert_consumed()
        np.testing.assert_array_equal(fresh.v.numpy(), expected)
    rows = {row.name: row for row in tp.list_backends()}
    assert rows["shareddict"].schemes == ("shareddict",) and rows["zarr-shareddict"].schemes == ("zarr+shareddict",)
    assert rows["zarr-shareddict"].description == "Zarr v3 groups; a dict"


def test_the_store_module_is_imported_on_first_open_only(registered: Any, request: Any) -> None:
    module = f"not_imported_{uuid.uuid4().hex[:8]}"
    request.node.add(
        ObjectStorePlugin(
            f"{module}:Store", name="lazyobj", schemes=("lazyobj",), requires=(module,), install_hint="pip install it"
        )
    )
    assert "lazyobj" in {row.name for row in tp.list_backends()}  # registered without importing anything
    assert module not in sys.modules
    with pytest.raises(tp.BackendUnavailableError, match=rf"needs {module}: pip install it"):
        plugins.open_backend("lazyobj://b/ckpt")
    with pytest.raises(tp.BackendUnavailableError, match=rf"needs {module}: pip install it$"):
        plugins.open_backend("zarr+lazyobj://b/ckpt")  # the store's hint only: zarr is installed


@pytest.mark.parametrize(
    ("store", "kwargs", "message"),
    [
        (HERE, {"schemes": ("other",)}, r"SharedDict.schemes is \('shareddict',\), but the plugin was declared"),
        (
            HERE,
            {"capabilities": Capabilities(atomic_rename=True)},
            "SharedDict.capabilities is .* but the plugin was declared",
        ),
        (f"{__name__}:NotAStore", {}, "is not a trackpoint.backends.stores.ObjectStore subclass"),
    ],
)
def test_a_store_unlike_its_declaration_is_refused_when_opened(
    registered: Any, request: Any, store: str, kwargs: dict[str, Any], message: str
) -> None:
    schemes = kwargs.pop("schemes", ("shareddict",))
    name = f"bad{uuid.uuid4().hex[:6]}"
    request.node.add(ObjectStorePlugin(store, name=name, schemes=schemes, **kwargs))
    with pytest.raises(PluginError, match=message):
        plugins.open_backend(f"{schemes[0]}://b/ckpt", CheckpointOptions(backend=name))


@pytest.mark.parametrize(
    ("store", "schemes", "message"),
    [
        ("no_colon", ("x",), "store must be 'module:Class'"),
        (HERE, (), "an object store serves URL schemes"),
        (HERE, ("",), "an object store serves URL schemes"),
        (HERE, ("Not A Scheme",), "schemes"),
    ],
)
def test_a_malformed_plugin_fails_when_made(store: str, schemes: tuple[str, ...], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        ObjectStorePlugin(store, name="x", schemes=schemes)


def test_zarr_false_registers_the_bundle_alone() -> None:
    plugin = ObjectStorePlugin(HERE, name="onlybundle", schemes=("shareddict",), zarr=False)
    assert [spec.name for spec in plugin.specs] == ["onlybundle"]
    assert plugin.trackpoint_detect_backends(url="shareddict://b/x", options=CheckpointOptions()) is None
