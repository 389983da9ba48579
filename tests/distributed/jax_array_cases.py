"""Cases for test_jax_arrays_multiprocess.py: JAX arrays spread over the processes of a jax.distributed job.

Run on every process of a job of 2 processes with 2 CPU devices each (a global mesh of 4 devices) as
``Ranks.run("jax_array_cases:<case>", ...)``; :func:`one_process` runs in a plain process of 4 CPU devices.
Every array is built from known numpy data (:func:`data`) with ``jax.make_array_from_callback``, so each
process can check, bit for bit, what its devices hold after a restore. jax is imported inside the functions
only: torch workers import this folder's modules too.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from cases import Context, _options

import trackpoint as tp

#: The arrays saved: name -> (shape, dtype, partition spec over the ("x", "y") mesh of (2, 2) devices, whose
#: rows are the processes). Each is 8 KiB, so any part written twice shows in the bytes written.
SAVED: dict[str, tuple[tuple[int, ...], str, tuple[Any, ...]]] = {
    "rows": ((32, 64), "float32", ("x",)),  # a half per process, copied on both of its devices
    "blocks": ((32, 64), "float32", ("x", "y")),  # four blocks, two per process
    "cols": ((32, 64), "int32", (None, "y")),  # both halves in every process: each held twice over the job
    "flat": ((4096,), "bfloat16", (("x", "y"),)),  # four runs of a vector
    "replicated": ((32, 64), "float32", ()),  # whole on every device: a plain replicated value
}

#: The bytes each process's devices hold the first copy of (replica_id 0), by array: what it should write.
#: The replicated array is a plain value, written once by one process (the save's plan picks which).
FIRST_COPIES = {
    "rows": (4096, 4096),
    "blocks": (4096, 4096),
    "cols": (8192, 0),  # process 0's devices come first in the mesh: it holds the first copy of both halves
    "flat": (4096, 4096),
    "replicated": (0, 0),
}


def key(name: str) -> str:
    return f"params/{name}/.ATTRIBUTES/VARIABLE_VALUE"


def data(name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray[Any, Any]:
    """The known values of array ``name``: random bits of every element (NaN payloads included for floats)."""
    import ml_dtypes

    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np_dtype.itemsize, dtype=np.uint8)
    return raw.view(np_dtype).reshape(shape)


def saved_values() -> dict[str, np.ndarray[Any, Any]]:
    return {name: data(name, shape, dtype) for name, (shape, dtype, _) in SAVED.items()}


def _mesh(kind: str) -> Any:
    """``grid``: the (2, 2) mesh of the save, a process per row; ``reversed``: the 4 devices in one row,
    process 1's first; ``local``: this process's devices only."""
    import jax
    from jax.sharding import Mesh

    if kind == "grid":
        return Mesh(np.array(jax.devices()).reshape(2, 2), ("x", "y"))
    if kind == "reversed":
        return Mesh(np.array(jax.devices()[::-1]), ("d",))
    if kind == "local":
        return Mesh(np.array(jax.local_devices()), ("d",))
    if kind == "other":  # the other process's devices only
        return Mesh(np.array([d for d in jax.devices() if d.process_index != jax.process_index()]), ("d",))
    raise ValueError(kind)


def _sharding(mesh_kind: str, spec: tuple[Any, ...]) -> Any:
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(_mesh(mesh_kind), PartitionSpec(*spec))


def _array(values: np.ndarray[Any, Any], sharding: Any) -> Any:
    import jax

    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


@contextmanager
def _data_bytes() -> Iterator[dict[str, int]]:
    """Count the bytes this process writes to and reads from data files on the local disk."""
    from trackpoint.backends.stores import LocalFiles
    from trackpoint.backends.stores.local import _LocalSink

    counted = {"written": 0, "read": 0}
    write_many, read_into, read_ranges = _LocalSink.write_many, LocalFiles.read_into, LocalFiles.read_ranges

    def count_writes(self: Any, buffers: Any) -> None:
        if ".data-" in self._path:
            counted["written"] += sum(memoryview(b).nbytes for b in buffers)
        write_many(self, buffers)

    def count_into(self: Any, path: str, offset: int, out: memoryview) -> None:
        counted["read"] += out.nbytes if ".data-" in path else 0
        read_into(self, path, offset, out)

    def count_ranges(self: Any, path: str, ranges: Any) -> None:
        counted["read"] += sum(o.nbytes for _, o in ranges) if ".data-" in path else 0
        read_ranges(self, path, ranges)

    _LocalSink.write_many = count_writes  # type: ignore[method-assign]
    LocalFiles.read_into, LocalFiles.read_ranges = count_into, count_ranges  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        _LocalSink.write_many = write_many  # type: ignore[method-assign]
        LocalFiles.read_into, LocalFiles.read_ranges = read_into, read_ranges  # type: ignore[method-assign]


def _check(array: Any, want: np.ndarray[Any, Any], sharding: Any) -> str | None:
    """What is wrong with the restored ``array`` (its sharding, any device's part, bit for bit), or ``None``."""
    import jax

    if not isinstance(array, jax.Array):
        return f"restored a {type(array).__name__}"
    if array.sharding != sharding or array.shape != want.shape or array.dtype != want.dtype:
        return f"restored {array.shape} {array.dtype} on {array.sharding}"
    for shard in array.addressable_shards:
        got = np.asarray(shard.data)
        if got.tobytes() != np.ascontiguousarray(want[shard.index]).tobytes():
            return f"device {shard.device} holds other values at {shard.index}"
    return None


def _needed(sharding: Any, shape: tuple[int, ...], itemsize: int) -> int:
    """The bytes of the distinct parts of the array this process's devices hold."""
    distinct = {
        tuple(p.indices(n)[:2] for p, n in zip(index, shape, strict=True))
        for index in sharding.addressable_devices_indices_map(shape).values()
    }
    return sum(int(np.prod([hi - lo for lo, hi in index])) * itemsize for index in distinct)


# ------------------------------------------------------------------------------------------------ cases
def save_spread(ctx: Context, prefix: str) -> dict[str, Any]:
    """Save the SAVED arrays on the grid mesh under the coordinator; count the data bytes this process wrote."""
    from trackpoint import _array_values

    values = saved_values()
    arrays = {name: _array(values[name], _sharding("grid", spec)) for name, (_, _, spec) in SAVED.items()}
    gathered = [0]
    host_copy = _array_values.host_copy

    def counted_copy(*args: Any, **kwargs: Any) -> Any:
        copy = host_copy(*args, **kwargs)
        gathered[0] += copy.nbytes
        return copy

    _array_values.host_copy = counted_copy
    try:
        with _data_bytes() as counted:
            path = tp.Checkpoint(params=arrays).write(prefix, options=_options(ctx))
    finally:
        _array_values.host_copy = host_copy
    return {
        "path": path,
        "written": counted["written"],
        "gathered": gathered[0],
        "spread": {name: not a.is_fully_addressable and not a.is_fully_replicated for name, a in arrays.items()},
    }


def restore_spread(
    ctx: Context,
    prefix: str,
    layouts: dict[str, tuple[str, tuple[Any, ...], str]],
    coordinated: bool = True,
    partial: bool = False,
) -> dict[str, Any]:
    """Restore arrays into templates ``name -> (mesh, spec, dtype)``; check every device's part, count bytes read.

    ``partial``: the templates are some of the checkpoint's arrays only.
    """
    import jax

    values = saved_values()
    shardings = {name: _sharding(mesh, spec) for name, (mesh, spec, _) in layouts.items()}
    templates = {
        name: jax.ShapeDtypeStruct(values[name].shape, jax.numpy.dtype(dtype), sharding=shardings[name])
        for name, (_, _, dtype) in layouts.items()
    }
    ckpt = tp.Checkpoint(params=templates)
    with _data_bytes() as counted:
        status = ckpt.read(prefix, options=_options(ctx) if coordinated else None)
        if partial:
            status.expect_partial().assert_existing_objects_matched()
        else:
            status.assert_consumed()
    problems = {}
    needed = 0
    for name, template in templates.items():
        want = values[name].astype(template.dtype)  # a template casts into its dtype
        problems[name] = _check(ckpt.params[name], want, shardings[name])
        needed += _needed(shardings[name], want.shape, values[name].dtype.itemsize)  # read as stored
    return {"problems": problems, "read": counted["read"], "needed": needed}


def restore_into_arrays(ctx: Context, prefix: str) -> dict[str, Any]:
    """Restore into existing global arrays (zeros) on shardings other than the save's, then save them again."""
    values = saved_values()
    layouts = {"rows": ("grid", ("y", "x")), "blocks": ("reversed", ("d",)), "cols": ("grid", ("x",))}
    shardings = {name: _sharding(mesh, spec) for name, (mesh, spec) in layouts.items()}
    zeros = {name: _array(np.zeros_like(values[name]), shardings[name]) for name in layouts}
    ckpt = tp.Checkpoint(params=zeros)
    ckpt.read(prefix, options=_options(ctx)).expect_partial().assert_existing_objects_matched()
    problems = {name: _check(ckpt.params[name], values[name], shardings[name]) for name in layouts}
    # The restored arrays save again as they were saved: the same whole tensors.
    again = tp.Checkpoint(params=dict(ckpt.params)).write(f"{prefix}-again", options=_options(ctx))
    return {"problems": problems, "again": again}


def restore_plain(ctx: Context, prefix: str) -> dict[str, Any]:
    """Restore a plain checkpoint (written by one process) into arrays spread over the job, without a coordinator."""
    return restore_spread(
        ctx,
        prefix,
        {
            "rows": ("grid", ("x", "y"), "float32"),
            "blocks": ("reversed", ("d",), "float32"),
            "flat": ("grid", (("x", "y"),), "bfloat16"),
        },
        coordinated=False,
    )


def refusals(ctx: Context, directory: str) -> dict[str, Any]:
    """Each refusal, with its error class and message, and whether an earlier checkpoint stayed intact."""
    import jax
    from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

    out: dict[str, Any] = {}

    def refused(what: str, call: Callable[[], Any]) -> None:
        try:
            call()
            out[what] = None
        except tp.CheckpointError as exc:
            out[what] = [type(exc).__name__, str(exc)]

    values = saved_values()
    blocks = _array(values["blocks"], _sharding("grid", ("x", "y")))
    # A save without a coordinator: each process holds half of the array, so neither can write it alone; the
    # checkpoint already at the prefix (this process's own) stays as it was.
    prefix = f"{directory}/alone{ctx.rank}/ckpt"
    tp.Checkpoint(params={"blocks": np.ones((2, 2), np.float32)}).write(prefix)
    refused("no_coordinator", lambda: tp.Checkpoint(params={"blocks": blocks}).write(prefix))
    out["earlier_intact"] = bool(np.array_equal(tp.load_variable(prefix, key("blocks")), np.ones((2, 2), np.float32)))

    def template(shape: tuple[int, ...], sharding: Any) -> Any:
        return jax.ShapeDtypeStruct(shape, np.float32, sharding=sharding)

    # Shardings this process cannot describe: over a mesh that names no devices, over the other process's
    # devices only, and one that does not split the shape evenly.
    abstract = NamedSharding(AbstractMesh((2, 2), ("x", "y")), PartitionSpec("x"))
    refused("abstract_mesh", lambda: tp.Checkpoint(params={"blocks": template((32, 64), abstract)}))
    other = _sharding("other", ("d",))
    refused("other_devices", lambda: tp.Checkpoint(params={"blocks": template((32, 64), other)}))
    uneven = _sharding("grid", ("x", "y"))
    refused("uneven", lambda: tp.Checkpoint(params={"blocks": template((31, 64), uneven)}))
    return out


def restore_whole_shape(ctx: Context, prefix: str, shape: tuple[int, ...], existing: bool) -> list[str] | None:
    """Restore ``blocks`` into a template (or an existing array) of another whole shape: the error, if any."""
    import jax

    sharding = _sharding("grid", ("x", "y"))
    target = (
        _array(np.zeros(shape, np.float32), sharding)
        if existing
        else jax.ShapeDtypeStruct(shape, np.float32, sharding=sharding)
    )
    ckpt = tp.Checkpoint(params={"blocks": target})
    try:
        ckpt.read(prefix, options=_options(ctx))
    except tp.CheckpointError as exc:
        # The array held is the one given: nothing was replaced.
        held = ckpt.params["blocks"]
        return [type(exc).__name__, str(exc), str(held is target)]
    return None


def one_process(saved_by_two: str, plain_prefix: str) -> None:
    """In one process of 4 CPU devices: restore the 2-process checkpoint on a local mesh, write a plain one.

    Run as ``python -c "import jax_array_cases as c; c.one_process(...)"``; raises on any difference.
    """
    import jax

    assert jax.process_count() == 1 and len(jax.devices()) == 4, jax.devices()
    values = saved_values()
    specs = {"rows": ("d",), "blocks": (None, "d"), "cols": (), "flat": ("d",), "replicated": ("d",)}
    shardings = {name: _sharding("local", spec) for name, spec in specs.items()}
    templates = {
        name: jax.ShapeDtypeStruct(values[name].shape, values[name].dtype, sharding=shardings[name]) for name in specs
    }
    ckpt = tp.Checkpoint(params=templates)
    ckpt.read(saved_by_two).assert_consumed()
    for name in specs:
        problem = _check(ckpt.params[name], values[name], shardings[name])
        assert problem is None, (name, problem)
    # Arrays sharded over this process's devices only: a plain checkpoint, each array one ordinary tensor.
    plain = {name: _array(values[name], _sharding("local", ("d",))) for name in ("rows", "blocks", "flat")}
    tp.Checkpoint(params=plain).write(plain_prefix)
