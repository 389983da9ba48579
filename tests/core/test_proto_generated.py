"""The committed ``*_pb2.py`` modules are exactly what the generator produces."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_generator() -> types.ModuleType:
    # A developer script in .ci/, not a module of the package (no distribution ships it).
    spec = importlib.util.spec_from_file_location("generate_proto", REPO / ".ci" / "generate_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_generate = _load_generator()


@pytest.mark.parametrize("proto_dir", _generate.PROTO_DIRS)
def test_committed_modules_match_generator(proto_dir: str, tmp_path: Path) -> None:
    source = REPO / proto_dir
    outputs = _generate.generate(source, tmp_path / "out")
    assert outputs, f"no .proto files found in {proto_dir}"
    for generated in outputs:
        committed = source / generated.name
        assert committed.exists(), f"{proto_dir}/{generated.name} is not committed; run python .ci/generate_proto.py"
        assert committed.read_text() == generated.read_text(), f"{proto_dir}/{generated.name} is stale; regenerate it"


def test_object_graph_package_does_not_clash_with_tensorflow() -> None:
    from trackpoint.proto import trackable_object_graph_pb2 as pb

    assert pb.TrackableObjectGraph.DESCRIPTOR.full_name == "trackpoint.tf.TrackableObjectGraph"
    node = pb.TrackableObjectGraph.TrackableObject.DESCRIPTOR
    assert {f.name: f.number for f in node.fields} == {
        "children": 1,
        "attributes": 2,
        "slot_variables": 3,
        "registered_saver": 4,
        "has_checkpoint_values": 5,
    }
