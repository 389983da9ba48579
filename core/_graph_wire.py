"""A hand encoder of ``TrackableObjectGraph`` protos, byte-identical to protobuf's serialization.

Building the proto through the generated classes costs a few microseconds per
child and attribute (each ``add()`` creates a message object), which made the
proto the largest single cost of saving a graph of 10^5 variables. The bytes
are simple to write directly: fields in number order, proto3 defaults left
out, nested messages length-prefixed. Tests compare the output with
protobuf's for every kind of node.
"""

from __future__ import annotations

from trackpoint._varint import ONE_BYTE, encode_varint

__all__ = ["NodeEncoder", "encode_graph"]


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string or message)."""
    n = len(payload)
    return tag + (ONE_BYTE[n] if n < 0x80 else encode_varint(n)) + payload


def _string(tag: bytes, text: str) -> bytes:
    """A proto3 string field; the default (empty) is not written."""
    return _field(tag, text.encode("utf-8")) if text else b""


class NodeEncoder:
    """Encodes the ``TrackableObject`` messages of one graph, field by field.

    Repeated strings (edge names such as ``kernel``, an attribute name such as
    ``VARIABLE_VALUE`` with the variable names that go with it) are encoded
    once per graph and reused. Lengths below 128, nearly all of them, are
    looked up inline: these two methods run once per edge and per tensor.
    """

    def __init__(self) -> None:
        self._local_names: dict[str, bytes] = {}
        self._attribute_heads: dict[tuple[str, str], bytes] = {}

    def child(self, node_id: int, local_name: str) -> bytes:
        """An ``ObjectReference`` field (``children``, field 1)."""
        name = self._local_names.get(local_name)
        if name is None:
            # Encoded inline: most names are unique (one attribute per variable of a flat model), so
            # this runs once per edge, and the calls of _string were a third of its cost.
            raw = local_name.encode("utf-8")
            n = len(raw)
            name = (b"\x12" + (ONE_BYTE[n] if n < 0x80 else encode_varint(n)) + raw) if n else b""
            self._local_names[local_name] = name
        if node_id:
            name = b"\x08" + (ONE_BYTE[node_id] if node_id < 0x80 else encode_varint(node_id)) + name
        n = len(name)
        return b"\x0a" + (ONE_BYTE[n] if n < 0x80 else encode_varint(n)) + name

    def attribute(self, name: str, full_name: str, checkpoint_key: str) -> bytes:
        """A ``SerializedTensor`` field (``attributes``, field 2)."""
        head = self._attribute_heads.get((name, full_name))
        if head is None:
            head = self._attribute_heads[name, full_name] = _string(b"\x0a", name) + _string(b"\x12", full_name)
        key = checkpoint_key.encode("utf-8")
        n = len(key)
        if n:
            head += b"\x1a" + (ONE_BYTE[n] if n < 0x80 else encode_varint(n)) + key
        n = len(head)
        return b"\x12" + (ONE_BYTE[n] if n < 0x80 else encode_varint(n)) + head

    @staticmethod
    def slot_variable(original_variable_node_id: int, slot_name: str, slot_variable_node_id: int) -> bytes:
        """A ``SlotVariableReference`` field (``slot_variables``, field 3)."""
        ref = (
            (b"\x08" + encode_varint(original_variable_node_id) if original_variable_node_id else b"")
            + _string(b"\x12", slot_name)
            + (b"\x18" + encode_varint(slot_variable_node_id) if slot_variable_node_id else b"")
        )
        return _field(b"\x1a", ref)

    @staticmethod
    def node(children: bytes, attributes: bytes, slot_variables: bytes, has_values: bool) -> bytes:
        """A whole ``TrackableObject`` as a ``nodes`` field of the graph.

        ``children``, ``attributes`` and ``slot_variables`` are the node's encoded fields of each kind,
        concatenated. ``has_checkpoint_values`` is always present (a ``BoolValue``, empty when false), as
        trackpoint and TensorFlow set it on every node.
        """
        flag = b"\x2a\x02\x08\x01" if has_values else b"\x2a\x00"
        return _field(b"\x0a", children + attributes + slot_variables + flag)


def encode_graph(nodes: list[bytes]) -> bytes:
    """The serialized ``TrackableObjectGraph`` of already encoded ``nodes`` fields."""
    return b"".join(nodes)
