"""Bytes written through the backend equal TensorFlow's (spec section 6.5).

The expected files were written by ``tf.train.Checkpoint(v=tf.Variable([1., 2., 3.])).save(...)``
with TensorFlow 2.21; the object graph is taken from the data file itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trackpoint.backends.bundle import BundleBackend
from trackpoint.storage import WriteItem

TF_DATA = bytes.fromhex(
    "0000803f00000040000040400100000000000000ae019fea52720a1d0a0508011201760a100802120c736176655f636f756e"
    "7465722a0208010a3e12380a0e5641524941424c455f56414c554512085661726961626c651a1c762f2e4154545249425554"
    "45532f5641524941424c455f56414c55452a0208010a4d12470a0e5641524941424c455f56414c5545120c736176655f636f"
    "756e7465721a27736176655f636f756e7465722f2e415454524942555445532f5641524941424c455f56414c55452a020801"
)
TF_INDEX = bytes.fromhex(
    "00000608011a020801001c0e5f434845434b504f494e5441424c455f4f424a4543545f475241504808071200201428b40135"
    "1f93779a00270d736176655f636f756e7465722f2e415454524942555445532f5641524941424c455f56414c554508091200"
    "200c2808350175de41001c0f762f2e415454524942555445532f5641524941424c455f56414c55450801120412020803280c"
    "35735b8971000000000100000000830adc04000000000100000000c0f2a1b00001037700a301000000000100000000aa8ea3"
    "6ca80108b5010f0000000000000000000000000000000000000000000000000000000000000000000057fb808b247547db"
)
# The graph string tensor starts at byte 20: varint length (2 bytes), masked length CRC (4), then 174 bytes.
GRAPH = TF_DATA[26:]


def test_files_equal_tensorflow_bytes(backend: BundleBackend, tmp_path: Path) -> None:
    assert len(GRAPH) == 174
    prefix = str(tmp_path / "e1" / "ckpt-1")
    backend.save(
        prefix,
        [
            WriteItem("v/.ATTRIBUTES/VARIABLE_VALUE", np.array([1.0, 2.0, 3.0], dtype=np.float32)),
            WriteItem("save_counter/.ATTRIBUTES/VARIABLE_VALUE", np.array(1, dtype=np.int64)),
            WriteItem("_CHECKPOINTABLE_OBJECT_GRAPH", np.array(GRAPH, dtype=object)),
        ],
    )
    assert sorted(p.name for p in (tmp_path / "e1").iterdir()) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    assert (tmp_path / "e1" / "ckpt-1.data-00000-of-00001").read_bytes() == TF_DATA
    assert (tmp_path / "e1" / "ckpt-1.index").read_bytes() == TF_INDEX


def test_tensorflow_files_read_back(backend: BundleBackend, tmp_path: Path) -> None:
    (tmp_path / "ckpt-1.data-00000-of-00001").write_bytes(TF_DATA)
    (tmp_path / "ckpt-1.index").write_bytes(TF_INDEX)
    with backend.open_reader(str(tmp_path / "ckpt-1")) as r:
        assert r.keys() == [
            "_CHECKPOINTABLE_OBJECT_GRAPH",
            "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
            "v/.ATTRIBUTES/VARIABLE_VALUE",
        ]
        np.testing.assert_array_equal(r.read("v/.ATTRIBUTES/VARIABLE_VALUE"), [1.0, 2.0, 3.0])
        counter = r.read("save_counter/.ATTRIBUTES/VARIABLE_VALUE")
        assert counter.shape == () and counter.dtype == np.int64 and int(counter) == 1
        assert r.read("_CHECKPOINTABLE_OBJECT_GRAPH")[()] == GRAPH
