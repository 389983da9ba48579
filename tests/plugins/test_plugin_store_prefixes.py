"""A plugin's object store is bucket-addressed like the built-in ones, and messages name its URL forms.

A bare-bucket prefix on a plugin's scheme (``shareddict://bucket``) used to be taken: its checkpoint went
to the objects ``bucket.index``... (``save``: ``bucket-1.index``), in another bucket, since only a fixed
list of built-in schemes was known to name buckets. ``backend="zarr"`` on a plugin's scheme named only
the built-in ``zarr+`` URL forms, not the plugin's own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from test_object_store_plugin import _OBJECTS, HERE, SharedDict

import trackpoint as tp
from trackpoint import plugins
from trackpoint.errors import InvalidArgumentError, PluginError, UnknownBackendError
from trackpoint.plugins import BackendSpec, ObjectStorePlugin
from trackpoint.storage import CheckpointOptions


def _never(url: str, options: CheckpointOptions) -> Any:
    raise RuntimeError(f"opened {url}")


def _objects_plugin() -> object:
    return ObjectStorePlugin(HERE, name="shareddict", schemes=("shareddict",))


def _bundle_spec_plugin(spec_plugin: Any) -> object:
    return spec_plugin(plugins.bundle_backend_spec(SharedDict, name="shareddict"))


def _hand_written_plugin(spec_plugin: Any) -> object:
    # An object store's spec written out by hand (to keep the plugin's module light) declares its buckets.
    return spec_plugin(BackendSpec("shareddict", _never, ("shareddict",), buckets=True))


@pytest.mark.parametrize("route", ["ObjectStorePlugin", "bundle_backend_spec", "BackendSpec(buckets=True)"])
def test_a_bare_bucket_of_a_plugin_store_is_refused(register: Any, spec_plugin: Any, route: str) -> None:
    make: dict[str, Callable[[], object]] = {
        "ObjectStorePlugin": _objects_plugin,
        "bundle_backend_spec": lambda: _bundle_spec_plugin(spec_plugin),
        "BackendSpec(buckets=True)": lambda: _hand_written_plugin(spec_plugin),
    }
    register(make[route]())
    before = dict(_OBJECTS)
    ckpt = tp.Checkpoint(w=np.ones(2))
    urls = ["shareddict://bucket", "shareddict://bucket/"]
    if route == "ObjectStorePlugin":
        urls.append("zarr+shareddict://bucket")  # a format's scheme follows its store's
    for url in urls:
        example = url.rstrip("/") + "/ckpt"
        for call in (ckpt.save, ckpt.write):
            with pytest.raises(
                InvalidArgumentError,
                match=rf"file_prefix {re.escape(repr(url))} names a bucket, not a checkpoint.*such as "
                rf"{re.escape(example)}$",
            ):
                call(url)
    assert _OBJECTS == before, "a refused prefix wrote objects"
    assert int(ckpt.save_counter.numpy()) == 0


def test_a_directory_in_a_plugin_store_s_bucket_is_named_a_directory(register: Any) -> None:
    register(_objects_plugin())
    ckpt = tp.Checkpoint(w=np.ones(2))
    run = f"shareddict://bucket/run-{uuid.uuid4().hex[:8]}"
    for call in (ckpt.save, ckpt.write):
        with pytest.raises(
            InvalidArgumentError,
            match=rf"file_prefix '{re.escape(run)}/' names a directory, not a checkpoint.*such as "
            rf"{re.escape(run)}/ckpt$",
        ):
            call(f"{run}/")
    # The bucket's root holds checkpoints like any directory.
    root = f"shareddict://bucket/ckpt-{uuid.uuid4().hex[:8]}"
    assert ckpt.write(root) == root
    assert ckpt.save(root) == f"{root}-1"


def test_a_scheme_served_without_buckets_takes_a_prefix_at_its_root(register: Any, spec_plugin: Any) -> None:
    # Not declared: the first component is no bucket, so the prefix reaches the backend (which refuses it here).
    register(spec_plugin(BackendSpec("nobuckets", _never, ("nobuckets",))))
    with pytest.raises(PluginError, match="opened nobuckets://name$"):
        tp.Checkpoint(w=np.ones(2)).write("nobuckets://name")


def test_buckets_must_be_a_bool() -> None:
    with pytest.raises(PluginError, match="buckets must be True or False"):
        BackendSpec("odd", _never, ("odd",), buckets="yes")  # type: ignore[arg-type]


def test_the_built_in_object_stores_declare_buckets() -> None:
    specs: dict[str, BackendSpec] = {}
    from trackpoint.plugins.manager import _get_host

    host = _get_host()
    for name in ("s3", "gcs", "bundle", "memory", "zarr"):
        entry = host._build_table().backends[name]
        specs[name] = entry.spec
    assert specs["s3"].buckets and specs["gcs"].buckets
    assert not (specs["bundle"].buckets or specs["memory"].buckets or specs["zarr"].buckets)


def test_backend_zarr_on_a_plugin_scheme_names_the_plugin_s_zarr_form(register: Any) -> None:
    register(_objects_plugin())
    with pytest.raises(UnknownBackendError) as caught:
        tp.Checkpoint(w=np.ones(2)).write("shareddict://bucket/run/ckpt", options=CheckpointOptions(backend="zarr"))
    message = str(caught.value)
    assert message.startswith("zarr: cannot store checkpoints at 'shareddict://bucket/run/ckpt'"), message
    assert (
        "Registered for shareddict:// URLs: zarr+shareddict:// (backend 'zarr-shareddict'), shareddict:// "
        "(backend 'shareddict'): write the URL with one of these schemes, or choose its backend with "
        "CheckpointOptions(backend=...)"
    ) in message, message
    # What it says works.
    saved = tp.Checkpoint(w=np.ones(2)).write(f"zarr+shareddict://bucket/run-{uuid.uuid4().hex[:8]}/ckpt")
    assert tp.list_variables(saved)


def test_backend_zarr_names_other_forms_only_where_they_are_registered() -> None:
    with pytest.raises(UnknownBackendError) as caught:
        tp.Checkpoint(w=np.ones(2)).write("memory://run/ckpt", options=CheckpointOptions(backend="zarr"))
    assert "Registered for memory:// URLs: memory:// (backend 'memory'): " in str(caught.value)
    with pytest.raises(UnknownBackendError) as caught:
        tp.Checkpoint(w=np.ones(2)).write("unserved://b/ckpt", options=CheckpointOptions(backend="zarr"))
    assert "Registered for" not in str(caught.value)
