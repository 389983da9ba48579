"""The saved object graph: BFS order, keys, escaping, slots, and byte identity with TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.graph import ObjectGraphView, escape_local_name, serialize_object_graph

# ckpt-1.data-00000-of-00001 written by TensorFlow 2.21 for
# tf.train.Checkpoint(v=tf.Variable([1., 2., 3.])).save(...) (tf-format-spec §6.5):
# v (12 bytes), save_counter (8 bytes), then the object-graph string tensor
# (varint length 0xae01 = 174, masked CRC, 174 bytes of serialized proto).
TF_DATA_FILE = bytes.fromhex(
    "0000803f00000040000040400100000000000000ae019fea52720a1d0a0508011201760a100802120c736176655f636f756e"
    "7465722a0208010a3e12380a0e5641524941424c455f56414c554512085661726961626c651a1c762f2e4154545249425554"
    "45532f5641524941424c455f56414c55452a0208010a4d12470a0e5641524941424c455f56414c5545120c736176655f636f"
    "756e7465721a27736176655f636f756e7465722f2e415454524942555445532f5641524941424c455f56414c55452a020801"
)


def test_graph_bytes_equal_tensorflow() -> None:
    assert len(TF_DATA_FILE) == 200
    tf_graph = TF_DATA_FILE[26:]
    assert len(tf_graph) == 174
    ckpt = tp.Checkpoint(v=tp.Variable([1.0, 2.0, 3.0]))
    path = ckpt.save("memory://tf/ckpt")
    with tp.load_checkpoint(path) as reader:
        ours = reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
        assert ours == tf_graph
        # The tensor values match TensorFlow's data file too.
        assert reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE").tobytes() == TF_DATA_FILE[:12]
        assert reader.get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE").tobytes() == TF_DATA_FILE[12:20]


def test_escaping() -> None:
    assert escape_local_name("odd/name.x") == "odd.Sname..x"
    root = tp.AutoTrackable()
    setattr(root, "odd/name.x", tp.Variable(1.0))
    keys = [key for key, _ in serialize_object_graph(ObjectGraphView(root)).tensors]
    assert keys == ["odd.Sname..x/.ATTRIBUTES/VARIABLE_VALUE"]


class Layer(tp.AutoTrackable):
    def __init__(self, n: int) -> None:
        self.kernel = tp.Variable(np.ones((n, n), np.float32), name="kernel")
        self.bias = tp.Variable(np.zeros(n, np.float32), name="bias")


def test_bfs_order_children_and_has_checkpoint_values() -> None:
    model = tp.AutoTrackable()
    model.layers = [Layer(2), Layer(3)]
    model.empty = tp.AutoTrackable()
    ckpt = tp.Checkpoint(z=model, a=tp.Variable(0, name="a"))
    ckpt.save_counter  # noqa: B018 - create it
    serialized = serialize_object_graph(ObjectGraphView(ckpt))
    proto = serialized.proto
    root_children = [(c.local_name, c.node_id) for c in proto.nodes[0].children]
    assert root_children == [("a", 1), ("z", 2), ("save_counter", 3)]
    assert [c.local_name for c in proto.nodes[2].children] == ["layers", "empty"]
    assert [key for key, _ in serialized.tensors] == [
        "a/.ATTRIBUTES/VARIABLE_VALUE",
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "z/layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "z/layers/0/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "z/layers/1/kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "z/layers/1/bias/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    empty_id = proto.nodes[2].children[1].node_id
    assert all(node.HasField("has_checkpoint_values") for node in proto.nodes)
    assert not proto.nodes[empty_id].has_checkpoint_values.value
    assert proto.nodes[0].has_checkpoint_values.value
    attr = proto.nodes[1].attributes[0]
    assert (attr.name, attr.full_name, attr.checkpoint_key) == ("VARIABLE_VALUE", "a", "a/.ATTRIBUTES/VARIABLE_VALUE")


def test_shared_object_listed_by_every_parent_with_first_path_name() -> None:
    shared = tp.Variable(1.0)
    root = tp.AutoTrackable()
    root.b = tp.AutoTrackable()
    root.a = tp.AutoTrackable()
    root.b.x = shared
    root.a.y = shared
    serialized = serialize_object_graph(ObjectGraphView(root))
    proto = serialized.proto
    assert [key for key, _ in serialized.tensors] == ["b/x/.ATTRIBUTES/VARIABLE_VALUE"]
    b_id, a_id = (c.node_id for c in proto.nodes[0].children)
    assert proto.nodes[b_id].children[0].node_id == proto.nodes[a_id].children[0].node_id
    assert len(proto.nodes) == 4


def test_slot_variables_follow_bfs_nodes() -> None:
    model = Layer(2)
    opt = tp.optimizers.SGD(0.1, momentum=0.9)
    opt.apply_gradients([(np.ones((2, 2)), model.kernel), (np.ones(2), model.bias)])
    serialized = serialize_object_graph(ObjectGraphView(tp.Checkpoint(model=model, optimizer=opt)))
    proto = serialized.proto
    opt_id = next(c.node_id for c in proto.nodes[0].children if c.local_name == "optimizer")
    kernel_id = next(c.node_id for c in proto.nodes[1].children if c.local_name == "kernel")
    slots = [
        (s.original_variable_node_id, s.slot_name, s.slot_variable_node_id) for s in proto.nodes[opt_id].slot_variables
    ]
    n = len(proto.nodes)
    assert slots == [(kernel_id, "momentum", n - 2), (kernel_id + 1, "momentum", n - 1)]
    keys = [key for key, _ in serialized.tensors]
    assert keys[-2:] == [
        "model/kernel/.OPTIMIZER_SLOT/optimizer/momentum/.ATTRIBUTES/VARIABLE_VALUE",
        "model/bias/.OPTIMIZER_SLOT/optimizer/momentum/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    assert proto.nodes[n - 1].has_checkpoint_values.value


class Note(tp.PythonState):
    def __init__(self, text: str) -> None:
        self.text = text

    def serialize(self) -> str:
        return self.text

    def deserialize(self, string_value: str | bytes) -> None:
        self.text = bytes(string_value).decode() if not isinstance(string_value, str) else string_value


def test_python_state_tensors_come_after_regular_ones() -> None:
    root = tp.Checkpoint(a_note=Note("hi"), b=tp.Variable(1.0))
    keys = [key for key, _ in serialize_object_graph(ObjectGraphView(root)).tensors]
    assert keys == ["b/.ATTRIBUTES/VARIABLE_VALUE", "a_note/.ATTRIBUTES/py_state"]


def test_object_graph_is_saved_last() -> None:
    from trackpoint.checkpoint import write_items

    items = write_items(ObjectGraphView(tp.Checkpoint(v=tp.Variable(1.0))))
    assert items[-1].key == "_CHECKPOINTABLE_OBJECT_GRAPH"
    assert items[-1].array.shape == () and items[-1].array.dtype == object


def test_bundle_save_is_byte_identical_to_tensorflow(tmp_path: Path) -> None:
    """End to end through the local bundle backend (tf-format-spec §6.5): data file and index."""
    pytest.importorskip("trackpoint.backends.stores.local")
    tf_index = bytes.fromhex(
        "00000608011a020801001c0e5f434845434b504f494e5441424c455f4f424a4543545f475241504808071200201428b40135"
        "1f93779a00270d736176655f636f756e7465722f2e415454524942555445532f5641524941424c455f56414c554508091200"
        "200c2808350175de41001c0f762f2e415454524942555445532f5641524941424c455f56414c55450801120412020803280c"
        "35735b8971000000000100000000830adc04000000000100000000c0f2a1b00001037700a301000000000100000000aa8ea3"
        "6ca80108b5010f0000000000000000000000000000000000000000000000000000000000000000000057fb808b247547db"
    )
    path = tp.Checkpoint(v=tp.Variable([1.0, 2.0, 3.0])).save(str(tmp_path / "ckpt"))
    assert Path(path + ".data-00000-of-00001").read_bytes() == TF_DATA_FILE
    assert Path(path + ".index").read_bytes() == tf_index


def test_hand_encoded_graph_is_protobufs_serialization() -> None:
    # Parsing and re-serializing through protobuf must give back exactly the bytes the encoder wrote, for
    # every kind of field: children (shared and escaped names, an edge back to node 0), attributes with and
    # without full names, saveables, python state, slot variables, nodes with and without values, non-ASCII.
    model = Layer(2)
    model.nested = [tp.Variable(1.0, name="ü/x"), {"k.e/y": tp.Variable(np.zeros(2))}]
    model.empty = tp.AutoTrackable()
    model.note = Note("hi")
    model.scale = np.float32(2.0)
    opt = tp.optimizers.SGD(0.1, momentum=0.9)
    opt.apply_gradients([(np.ones((2, 2)), model.kernel), (np.ones(2), model.bias)])
    ckpt = tp.Checkpoint(model=model, optimizer=opt)
    model.root = ckpt
    serialized = serialize_object_graph(ObjectGraphView(ckpt))
    proto = serialized.proto
    assert proto.SerializeToString() == serialized.data
    assert any(node.slot_variables for node in proto.nodes)
    assert any(a.full_name for node in proto.nodes for a in node.attributes)
    assert any(c.node_id == 0 for node in proto.nodes for c in node.children)
    assert not all(node.has_checkpoint_values.value for node in proto.nodes)


def test_hand_encoded_graph_matches_protobuf_with_multibyte_ids_and_lengths() -> None:
    # Node ids from 128 on take two varint bytes and from 16,384 on three; names and keys of 128 bytes
    # or more take two-byte lengths, and so do the fields holding them.
    root = tp.AutoTrackable()
    long_name = "w" * 200
    for i in range(16_400):
        setattr(root, f"v{i}", tp.Variable(np.float32(i), name=long_name if i % 1000 == 0 else "Variable"))
    setattr(root, long_name, tp.Variable(1.0))
    serialized = serialize_object_graph(ObjectGraphView(root))
    proto = serialized.proto
    assert proto.SerializeToString() == serialized.data
    assert len(proto.nodes) == 16_402
    assert proto.nodes[0].children[-1].node_id == 16_401
    assert proto.nodes[16_401].attributes[0].checkpoint_key == f"{long_name}/.ATTRIBUTES/VARIABLE_VALUE"


def test_has_checkpoint_values_reaches_a_node_through_an_edge_to_an_earlier_node() -> None:
    # Node ids: root 0, x 1, y 2, z 3. y's only child is x, listed before it, which holds values only
    # through its own child z: a single backward pass over the ids would leave y without values.
    root, x, y = tp.AutoTrackable(), tp.AutoTrackable(), tp.AutoTrackable()
    root.x = x
    root.y = y
    y.x = x
    x.z = tp.AutoTrackable()
    x.z.v = tp.Variable(1.0)
    no_values = tp.AutoTrackable()
    y.empty = no_values
    proto = serialize_object_graph(ObjectGraphView(root)).proto
    assert [c.local_name for c in proto.nodes[2].children] == ["x", "empty"]
    assert proto.nodes[2].children[0].node_id == 1
    assert proto.nodes[2].has_checkpoint_values.value
    empty_id = proto.nodes[2].children[1].node_id
    assert not proto.nodes[empty_id].has_checkpoint_values.value
    assert all(proto.nodes[i].has_checkpoint_values.value for i in (0, 1, 2, 3))
