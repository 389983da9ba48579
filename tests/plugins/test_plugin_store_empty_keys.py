"""An object store refuses a bare-bucket path whatever its backend's spec declares.

A plugin that writes its :class:`BackendSpec` out by hand (to keep its module light) and leaves
``buckets`` unset gets no early refusal of ``scheme://bucket`` from ``save``: its checkpoint's files
(``bucket-1.index``...) used to be written as the empty keys of *other* buckets. For ``az``, ``s3a`` and the
like that was a regression: a fixed list of schemes refused them before ``BackendSpec.buckets``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import numpy as np
import pytest
from test_object_store_plugin import _OBJECTS, SharedDict

import trackpoint as tp
from trackpoint import plugins
from trackpoint.backends.stores import OBJECT_STORE_CAPABILITIES
from trackpoint.errors import CheckpointNotFoundError, InvalidArgumentError
from trackpoint.plugins import BackendSpec
from trackpoint.storage import CheckpointOptions


def _hand_written(spec_plugin: Any, scheme: str) -> object:
    """A plugin whose object store's spec is written by hand, without ``buckets=True``."""
    store = type(f"Hand_{scheme}", (SharedDict,), {"schemes": (scheme,)})

    def create(url: str, options: CheckpointOptions) -> Any:
        return plugins.bundle_backend_spec(store, name=f"hand-{scheme}").factory(url, options)

    return spec_plugin(
        BackendSpec(f"hand-{scheme}", create, (scheme,), "by hand", capabilities=OBJECT_STORE_CAPABILITIES)
    )


@pytest.mark.parametrize("scheme", ["handdict", "az", "abfss", "azure"])
def test_a_bare_bucket_is_refused_without_buckets_declared(register: Any, spec_plugin: Any, scheme: str) -> None:
    register(_hand_written(spec_plugin, scheme))
    before = dict(_OBJECTS)
    ckpt = tp.Checkpoint(w=tp.Variable(np.ones(2)))
    # A bucket of its own: the shared dict store is one namespace for every scheme and test module (another
    # module's checkpoints saved in `bucket`'s root would be found by the read below).
    url = f"{scheme}://bucket-{uuid.uuid4().hex[:8]}"  # (with a trailing slash, save refuses it as a directory)
    for call in (ckpt.save, ckpt.write):
        with pytest.raises(
            InvalidArgumentError,
            match=r"names the bucket '[^']+', not a checkpoint prefix.*give a prefix inside a bucket, such as "
            rf"{scheme}://<bucket>/run/ckpt$",
        ):
            call(url)
    # A read finds nothing there (an empty key cannot exist) and looks at the bucket as a directory: empty.
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint at '[^']+': nothing is committed at that"):
        ckpt.read(url)
    assert _OBJECTS == before, "a refused prefix wrote objects"


def test_checkpoints_in_a_bucket_s_root_still_list(register: Any, spec_plugin: Any) -> None:
    register(_hand_written(spec_plugin, "handroot"))
    bucket = f"handroot://root-{uuid.uuid4().hex[:8]}"
    ckpt = tp.Checkpoint(w=tp.Variable(np.arange(3.0)))
    saved = ckpt.save(f"{bucket}/ckpt")
    assert saved == f"{bucket}/ckpt-1"
    for root in (bucket, f"{bucket}/"):
        assert tp.latest_checkpoint(root) == saved
        assert tp.CheckpointManager(ckpt, root, max_to_keep=2).latest_checkpoint == saved
    manager = tp.CheckpointManager(ckpt, bucket, max_to_keep=2)
    assert re.fullmatch(rf"{re.escape(bucket)}/ckpt-\d+", manager.save())
