"""Every ml_dtypes type round-trips through the Zarr format; the ones TensorFlow has a DataType for, through the bundle.

ml_dtypes holds each element of its sub-byte types (int4, int2, float4_e2m1fn, ...) in one byte, and so do
both formats, as TensorFlow's bundle writer does. The bundle refuses the types TensorFlow has no DataType
for, naming the type and the Zarr format. The ``ml_dtypes`` fixture case was written by TensorFlow 2.21
(``tests/fixtures/tf/generate.py``): trackpoint reads it and writes the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import trackpoint as tp
from fixtures.tf import tfcases
from trackpoint.backends.bundle._index import BundleIndex
from trackpoint.cli import main as cli_main
from trackpoint.dtypes import ML_DTYPE_NAMES

#: Every ml_dtypes type the installed ml_dtypes has.
ML = [name for name in ML_DTYPE_NAMES if hasattr(ml_dtypes, name)]
#: TensorFlow's DataType numbers (tensorflow/core/framework/types.proto, TensorFlow 2.21) of the ml_dtypes types.
TF_DATATYPE = {
    "bfloat16": 14,
    "float8_e5m2": 24,
    "float8_e4m3fn": 25,
    "float8_e4m3fnuz": 26,
    "float8_e4m3b11fnuz": 27,
    "float8_e5m2fnuz": 28,
    "int4": 29,
    "uint4": 30,
    "int2": 31,
    "uint2": 32,
    "float4_e2m1fn": 33,
}
IN_BUNDLE = [name for name in ML if name in TF_DATATYPE]
NOT_IN_BUNDLE = [name for name in ML if name not in TF_DATATYPE]
VALUE = ".ATTRIBUTES/VARIABLE_VALUE"


def _dtype(name: str) -> np.dtype[Any]:
    return np.dtype(getattr(ml_dtypes, name))


def _patterns(name: str) -> np.ndarray[Any, Any]:
    """Bit patterns of ``name``: all 256 bytes of a 1-byte type (NaNs, -0 and the unused high bits of sub-byte
    types included), a spread of 16- and 32-bit ones for the wider types."""
    dt = _dtype(name)
    if dt.itemsize == 1:
        return np.arange(256, dtype=np.uint8).view(dt).reshape(16, 16)
    bits = np.random.default_rng(5).integers(0, 2 ** (8 * dt.itemsize), 96, dtype=np.uint64)
    return bits.astype(f"u{dt.itemsize}").view(dt).reshape(8, 12)


def _same(got: Any, want: np.ndarray[Any, Any]) -> bool:
    got = np.asarray(got)
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def _zarr(pack_bytes: int = 1 << 20) -> tp.CheckpointOptions:
    return tp.CheckpointOptions(backend="zarr", backend_options={"pack_bytes": pack_bytes})


# ---------------------------------------------------------------- Zarr: every type


@pytest.mark.parametrize("pack_bytes", [0, 1 << 20], ids=["own-array", "packed"])
@pytest.mark.parametrize("name", ML)
def test_zarr_holds_every_ml_dtype_bit_exactly(tmp_path: Path, name: str, pack_bytes: int) -> None:
    value = _patterns(name)
    path = tp.Checkpoint(v=tp.Variable(value), s=tp.Variable(value[0, 0])).write(
        str(tmp_path / "ckpt"), options=_zarr(pack_bytes)
    )
    v, s = tp.Variable(np.zeros_like(value)), tp.Variable(np.zeros((), value.dtype))
    tp.Checkpoint(v=v, s=s).read(path).assert_consumed()
    assert _same(v.numpy(), value) and _same(s.numpy(), value[0, 0])
    # The readers name the type, as the tensor table does.
    assert tp.load_checkpoint(path).get_variable_to_dtype_map()[f"v/{VALUE}"] == value.dtype
    assert _same(tp.load_tree(path)["v"], value)


def test_zarr_stores_an_ml_dtype_as_plain_unsigned_integers_with_its_name(tmp_path: Path) -> None:
    # What docs/backends/zarr.md promises a plain-zarr reader: the bits as uint8, the name in an attribute.
    import zarr

    value = _patterns("int4")
    path = tp.Checkpoint(v=tp.Variable(value)).write(str(tmp_path / "ckpt"), options=_zarr(pack_bytes=0))
    group = zarr.open_group(path + ".zarr", mode="r")
    meta = group.attrs["trackpoint"]
    entry = meta["tensors"][f"v/{VALUE}"]
    assert entry["dtype"] == "int4"
    array = (group[meta["data"]] if meta["data"] else group)[entry["array"]]
    assert array.dtype == np.uint8 and array.attrs["trackpoint_dtype"] == "int4"
    assert _same(array[...].view(ml_dtypes.int4), value)


# ---------------------------------------------------------------- bundle: TensorFlow's types, refusals


@pytest.mark.parametrize("name", IN_BUNDLE)
def test_bundle_holds_the_ml_dtypes_tensorflow_has_under_its_datatype(tmp_path: Path, name: str) -> None:
    value = _patterns(name)
    path = tp.Checkpoint(v=tp.Variable(value)).write(str(tmp_path / "ckpt"))
    v = tp.Variable(np.zeros_like(value))
    tp.Checkpoint(v=v).read(path).assert_consumed()
    assert _same(v.numpy(), value)
    index = BundleIndex(Path(path + ".index").read_bytes(), path)
    assert {k.tf_dtype for k in index.kinds} == {TF_DATATYPE[name], 7}  # the value and the object graph
    # One byte per element (two for bfloat16): no packing of sub-byte types, as TensorFlow stores them.
    assert Path(path + ".data-00000-of-00001").stat().st_size >= value.nbytes
    assert tp.load_checkpoint(path).get_variable_to_dtype_map()[f"v/{VALUE}"] == value.dtype


@pytest.mark.parametrize("name", NOT_IN_BUNDLE)
def test_bundle_refuses_a_type_tensorflow_lacks_naming_it_and_the_zarr_format(tmp_path: Path, name: str) -> None:
    prefix = str(tmp_path / "ckpt")
    kept = tp.Checkpoint(w=tp.Variable(np.ones(2, np.float32))).write(prefix)
    root = tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32)), v=tp.Variable(_patterns(name)))
    with pytest.raises(tp.UnsupportedDTypeError, match=rf"'v/\.ATTRIBUTES/VARIABLE_VALUE' has dtype {name}, "):
        root.write(prefix)
    with pytest.raises(tp.UnsupportedDTypeError, match=r"TensorFlow has no DataType for.*Zarr format.*backend='zarr'"):
        root.write(prefix)
    # Nothing of the refused save was committed: the checkpoint at the prefix is the earlier one.
    assert [k for k, _ in tp.list_variables(kept)] == ["_CHECKPOINTABLE_OBJECT_GRAPH", f"w/{VALUE}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.data-00000-of-00001", "ckpt.index"]
    # The same objects save in the Zarr format.
    path = root.write(str(tmp_path / "z"), options=_zarr())
    assert tp.load_checkpoint(path).get_variable_to_dtype_map()[f"v/{VALUE}"] == _dtype(name)


# ---------------------------------------------------------------- JAX arrays


def _jax_values(names: list[str]) -> dict[str, Any]:
    """A JAX array of each type JAX has, holding every value of the type (canonical bits: JAX keeps no others)."""
    jnp = pytest.importorskip("jax.numpy")
    from jax.errors import JaxRuntimeError

    out: dict[str, Any] = {}
    for name in names:
        dt = _dtype(name)
        if name.startswith(("int", "uint")):
            info = ml_dtypes.iinfo(dt)
            values = np.arange(int(info.min), int(info.max) + 1).astype(dt)
        else:
            via = np.complex64 if "complex" in name else np.float32
            values = _patterns(name).reshape(-1)[:64].astype(via).astype(dt)
        try:
            out[name] = jnp.asarray(values)
        except (TypeError, JaxRuntimeError):  # a type JAX lacks (complex32), or XLA's CPU cannot hold (int1, float6)
            continue
    return out


@pytest.mark.parametrize("backend", ["bundle", "zarr"])
def test_jax_arrays_of_ml_dtypes_round_trip(tmp_path: Path, backend: str) -> None:
    import jax

    values = _jax_values(IN_BUNDLE if backend == "bundle" else ML)
    # The types of the JAX quantization work that this fixed must all be there.
    assert {"int4", "uint4", "int2", "uint2", "float4_e2m1fn"} <= set(values)
    if backend == "zarr":
        assert {"float8_e3m4", "float8_e4m3", "float8_e8m0fnu"} <= set(values)
    path = tp.Checkpoint(params=dict(values)).write(
        str(tmp_path / "ckpt"), options=tp.CheckpointOptions(backend=backend)
    )
    root = tp.Checkpoint(params={k: jax.numpy.zeros_like(v) for k, v in values.items()})
    root.read(path).assert_consumed()
    for name, want in values.items():
        got = root.params[name]
        assert isinstance(got, jax.Array), name
        assert _same(np.asarray(got), np.asarray(want)), name
    tree = tp.load_tree(path)["params"]
    assert {k: str(v.dtype) for k, v in tree.items()} == {k: k for k in values}


def test_jax_array_of_a_type_tensorflow_lacks_is_refused_by_the_bundle_only(tmp_path: Path) -> None:
    values = _jax_values(["float8_e8m0fnu"])
    with pytest.raises(tp.UnsupportedDTypeError, match="dtype float8_e8m0fnu, which TensorFlow has no DataType"):
        tp.Checkpoint(params=dict(values)).write(str(tmp_path / "ckpt"))


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")  # torch's, once per process
def test_torch_complex32_tensor_round_trips_as_ml_dtypes_complex32(tmp_path: Path) -> None:
    # torch's complex32 and ml_dtypes' have the same bits (two float16 parts, real first).
    torch = pytest.importorskip("torch")
    tensor = torch.tensor([1 + 2j, -3.5j, 65504 - 0.5j], dtype=torch.complex32)
    path = tp.Checkpoint(x={"t": tensor}).write(str(tmp_path / "ckpt"), options=_zarr())
    stored = tp.load_checkpoint(path).get_tensor("x/t/.ATTRIBUTES/VARIABLE_VALUE")
    assert stored.dtype == ml_dtypes.complex32
    assert stored.astype(np.complex64).tolist() == [1 + 2j, -3.5j, 65504 - 0.5j]
    into = {"t": torch.zeros(3, dtype=torch.complex32)}
    tp.Checkpoint(x=into).read(path).assert_consumed()
    assert into["t"].view(torch.int32).tolist() == tensor.view(torch.int32).tolist()
    back = tp.to_torch(stored)
    assert back.dtype == torch.complex32 and back.view(torch.int32).tolist() == tensor.view(torch.int32).tolist()


# ---------------------------------------------------------------- readers name the types


def test_inspect_names_every_ml_dtype(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = {name: _patterns(name) for name in ML}
    path = tp.Checkpoint(**{name: tp.Variable(v) for name, v in values.items()}).write(
        str(tmp_path / "ckpt"), options=_zarr()
    )
    assert cli_main(["inspect", path]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines() if VALUE in line}
    assert rows == {f"{name}/{VALUE}": name for name in ML}


# ---------------------------------------------------------------- files TensorFlow wrote


class ConstantTensor(tp.Trackable):
    """Mirror of generate.py's ConstantTensor: one array saved under the attribute ``value``."""

    def __init__(self, value: np.ndarray[Any, Any]) -> None:
        self.value = value

    def _serialize_to_tensors(self) -> dict[str, Any]:
        return {"value": self.value}

    def _restore_from_tensors(self, restored_tensors: Any) -> None:
        self.value = np.asarray(restored_tensors["value"])


def _fixture_objects(fill: bool) -> dict[str, Any]:
    """The objects of the ``ml_dtypes`` case: TensorFlow's values (``fill``) or zeros of their dtypes and shapes."""
    c = tfcases.checkpoints("ml_dtypes")[0]
    objects: dict[str, Any] = {}
    for name, spec in tfcases.expected("ml_dtypes")["structure"]["objects"].items():
        kind = "variable" if "variable" in spec else "constant"
        key = f"{name}/{VALUE}" if kind == "variable" else f"{name}/.ATTRIBUTES/value"
        want = c.tensor(key)
        value = want if fill else np.zeros(want.shape, want.dtype)
        objects[name] = tp.Variable(value, name=name) if kind == "variable" else ConstantTensor(value)
    return objects


def test_tensorflow_ml_dtypes_checkpoint_restores_bit_exactly() -> None:
    c = tfcases.checkpoints("ml_dtypes")[0]
    objects = _fixture_objects(fill=False)
    tp.Checkpoint(**objects).restore(c.prefix).assert_consumed()
    for name, obj in objects.items():
        if isinstance(obj, tp.Variable):
            tfcases.assert_same_tensor(obj.numpy(), c.tensor(f"{name}/{VALUE}"), name)
        else:
            tfcases.assert_same_tensor(obj.value, c.tensor(f"{name}/.ATTRIBUTES/value"), name)
    int4 = objects["int4_all"].numpy()
    assert int4.dtype == ml_dtypes.int4 and int4.astype(int).tolist() == [list(range(-8, 0)), list(range(8))]


def test_save_of_tensorflows_ml_dtypes_objects_is_byte_identical(tmp_path: Path) -> None:
    # The bytes TensorFlow 2.21 wrote, so TensorFlow reads trackpoint's (DataType, one byte per element).
    tp.Checkpoint(**_fixture_objects(fill=True)).save(str(tmp_path / "ckpt"))
    theirs = tfcases.FIXTURES / "ml_dtypes"
    for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001", "checkpoint"):
        assert (tmp_path / name).read_bytes() == (theirs / name).read_bytes(), f"{name} differs from TensorFlow's"


@pytest.mark.skipif(sys.byteorder != "little", reason="the fixture's bytes are a little-endian host's")
def test_tensorflow_holds_sub_byte_types_one_per_byte_as_ml_dtypes_does() -> None:
    # The premise of storing ml_dtypes' memory as it is: TF's bytes equal ml_dtypes' for the same values.
    c = tfcases.checkpoints("ml_dtypes")[0]
    entries = c.record["index"]["entries"]
    for name in ("int4", "uint4", "int2", "uint2"):
        info = ml_dtypes.iinfo(_dtype(name))
        ours = np.arange(int(info.min), int(info.max) + 1).astype(_dtype(name))
        key = f"{name}_all/{VALUE}"
        assert bytes.fromhex(c.record["tensors"][key]["hex"]) == ours.tobytes(), name
        assert entries[key]["size"] == ours.size and entries[key]["dtype"] == TF_DATATYPE[name]
