"""``get_slice`` returns what ``get_tensor`` returns, also for a scalar string (``bytes``, not a 0-d array)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.bundle import BundleBackend
from trackpoint.storage import WriteItem

ITEMS = {
    "scalar_string": np.array(b"hello", dtype=object),
    "empty_string": np.array(b"", dtype=object),
    "strings": np.array([b"a", b"bc", b""], dtype=object),
    "scalar_float": np.array(2.5, np.float32),
    "floats": np.arange(6, dtype=np.float64).reshape(2, 3),
}


@pytest.mark.parametrize("key", sorted(ITEMS))
def test_get_slice_of_the_whole_tensor_equals_get_tensor(backend: BundleBackend, prefix: str, key: str) -> None:
    backend.save(prefix, [WriteItem(k, v) for k, v in ITEMS.items()])
    with tp.load_checkpoint(prefix) as reader:
        whole: Any = reader.get_tensor(key)
        shape = reader.get_variable_to_shape_map()[key]
        part: Any = reader.get_slice(key, [0] * len(shape), shape)
    assert type(part) is type(whole)
    if isinstance(whole, bytes):
        assert part == whole == ITEMS[key][()]
    else:
        assert part.dtype == whole.dtype and part.shape == whole.shape
        np.testing.assert_array_equal(part, whole)


def test_a_scalar_string_slice_is_bytes(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("s", np.array(b"hello", dtype=object))])
    with tp.load_checkpoint(prefix) as reader:
        assert reader.get_slice("s", (), ()) == b"hello"
        assert isinstance(reader.get_slice("s", (), ()), bytes)


def test_slices_of_string_vectors_stay_arrays(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, [WriteItem("v", np.array([b"a", b"b", b"c"], dtype=object))])
    with tp.load_checkpoint(prefix) as reader:
        part = reader.get_slice("v", (1,), (1,))
    assert isinstance(part, np.ndarray) and part.tolist() == [b"b"]
