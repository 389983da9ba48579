"""Writing one shard of a save: an array per large tensor, small numeric tensors packed together.

numeric arrays' metadata (as zarr-python writes it), their chunks and packed shards are
encoded by :mod:`._chunks` straight from the tensors into the store, string
arrays go through zarr into a :class:`~._store_adapter.FileLayerStore`. All of
it lands under the directory the commit strategy gave the save. The shard's manifest (tensor table entries and array
metadata) goes back to the committing process in its ``ShardResult``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from trackpoint import _paths
from trackpoint.backends.stores import FileLayer
from trackpoint.backends.zarr import _layout
from trackpoint.backends.zarr._chunks import Codec, ContiguousChunks, write_chunks, write_shard_object
from trackpoint.backends.zarr._keys import encode_key
from trackpoint.backends.zarr._options import ZarrOptions
from trackpoint.errors import InvalidCheckpointError, StorageError
from trackpoint.storage import OBJECT_GRAPH_KEY, ShardResult, ShardSpec, WriteItem, _as_stored

#: Chunk objects a shard writes at once. Each is made durable on its own (a
#: local file is fsynced when closed), and one at a time leaves the device
#: idle between them: a 1 GiB save is about 200 chunk objects.
_CHUNK_WRITERS = 8


class ArrayWriter:
    """Creates arrays below ``data_root`` of ``files`` for the save of ``prefix``; each returns its metadata document.

    Chunks are written by ``pool``; :meth:`wait` returns once every one is
    written (and raises the first failure, naming the tensor it belongs to).
    """

    def __init__(self, files: FileLayer, prefix: str, data_root: str, pool: Executor) -> None:
        self.files = files
        self.prefix = prefix
        self.data_root = data_root
        self.pool = pool
        self._pending: list[tuple[str, Future[None]]] = []
        self._arrays: list[str] = []  # the directory of every array written, for sync_dirs

    def track(self, job: Future[None], what: str) -> None:
        """Count ``job`` (started on :attr:`pool`, writing part of ``what``) among the writes :meth:`wait` waits for."""
        self._pending.append((what, job))

    def wait(self, *, quiet: bool = False) -> None:
        """Wait for every chunk written so far; ``quiet`` drops their failures (a save already failing)."""
        pending, self._pending = self._pending, []
        for what, job in pending:
            if quiet:
                job.exception()
            else:
                # The pool runs jobs out of order: the failure names its own tensor, not the last one added.
                with _layout.writing(self.prefix, what):
                    job.result()

    def sync_dirs(self) -> None:
        """Make the directories of every array written durable, then :attr:`data_root`; call after :meth:`wait`.

        A shard returns once its files and the directory entries naming them
        are durable, so the commit has only the root left to sync, whichever
        process wrote each shard; the committing process used to list and
        sync every shard's directories one by one (about 40 ms for the ~200
        of a 1 GiB save). The pool syncs an array's directories per job.
        """
        jobs = [self.pool.submit(_sync_tree, self.files, d) for d in self._arrays]
        for job in jobs:
            job.result()
        self.files.sync_dir(self.data_root)

    def new_array(self, name: str, shape: tuple[int, ...], **spec: Any) -> tuple[Any, dict[str, Any]]:
        """A new, empty zarr array ``name`` and its metadata document (``zarr.json`` not yet written).

        zarr's ``create_array`` first looks for (or deletes) an existing node:
        a listing and several requests per array on an object store. The save
        owns a fresh directory, so the metadata is derived in memory instead,
        and only the chunks and one ``zarr.json`` are written.
        """
        import zarr
        from zarr.core.array import AsyncArray
        from zarr.storage import StorePath

        from trackpoint.backends.zarr._store_adapter import store

        template, meta = _template(shape, **spec)
        metadata: Any = template.metadata  # always v3 here; zarr types it as the v2/v3 union
        # Bit-exact: without write_empty_chunks a chunk of -0.0 would be dropped
        # as "equal to the fill value 0" and read back as +0.0.
        path = StorePath(store(self.files, _paths.join(self.data_root, name), read_only=False))
        arr = zarr.Array(AsyncArray(metadata=metadata, store_path=path, config={"write_empty_chunks": True}))
        return arr, meta

    def finish_array(self, name: str, meta: dict[str, Any], what: str) -> dict[str, Any]:
        """Start writing the array's ``zarr.json`` (with its chunks) and return ``meta``.

        Written by ``pool`` like the chunks: each ``zarr.json`` is made durable
        on its own, and on ext4 the fsync of a small file waits for the journal
        to commit the chunk data written meanwhile (about 25 ms here). Written
        in line, those waits held up the shard's next tensors for most of a
        1 GiB save.
        """
        directory = _paths.join(self.data_root, name)
        self.files.makedirs(directory)  # an empty array has no chunk that created it
        self._arrays.append(directory)
        document = json.dumps(meta, indent=2).encode()
        self.track(self.pool.submit(self.files.put, _paths.join(directory, _layout.ZARR_JSON), document), what)
        return meta

    def create_array(self, name: str, values: np.ndarray[Any, Any], what: str, **spec: Any) -> dict[str, Any]:
        """Write ``values`` as the new array ``name`` (holding ``what``); return its metadata document."""
        arr, meta = self.new_array(name, values.shape, **spec)
        if values.size:
            arr[...] = values
        return self.finish_array(name, meta, what)

    def write_tensor(
        self, name: str, key: str, array: np.ndarray[Any, Any], dname: str, opts: ZarrOptions
    ) -> dict[str, Any]:
        """Write tensor ``key`` as its own array ``name``."""
        attrs: dict[str, Any] = {"trackpoint_key": key}
        if dname == _layout.STRING:
            from zarr.core.dtype import VariableLengthBytes

            values = _layout.as_bytes_array(array, key)
            # Chunk by the mean element length, the best guess at bytes per element.
            mean = max(1, sum(len(x) for x in values.flat) // max(1, values.size))
            with _layout.quiet_vlen():
                return self.create_array(
                    name,
                    values,
                    key,
                    chunks=_layout.chunk_shape(values.shape, mean, opts.chunk_bytes),
                    dtype=VariableLengthBytes(),
                    chunk_key_encoding=_layout.chunk_key_encoding(),
                    compressors=_layout.codecs(opts),
                    attributes=attrs,
                )
        storage = _layout.storage_dtype(array.dtype)
        if storage.newbyteorder("=") != array.dtype.newbyteorder("="):
            attrs["trackpoint_dtype"] = dname
        chunks = _layout.chunk_shape(array.shape, storage.itemsize, opts.chunk_bytes)
        codecs = _layout.codec_metadata(opts, storage.itemsize)
        meta = _layout.array_metadata(array.shape, storage, chunks, codecs, attrs)
        grid = ContiguousChunks.of(array.shape, chunks, storage.itemsize, _layout.CHUNK_SEPARATOR)
        assert grid is not None  # chunk_shape cuts row-major
        # The chunks go from the tensor's memory to the store (_chunks), not through zarr's pipeline.
        directory = _paths.join(self.data_root, name)
        codec = Codec.from_options(opts, storage.itemsize)
        for job in write_chunks(self.files, directory, _layout.to_storage(array), grid, codec, self.pool):
            self.track(job, key)
        # zarr.json before the chunks are all written is fine: nothing is visible before the commit.
        return self.finish_array(name, meta, key)


class Packer:
    """Streams small tensors into one packed ``uint8`` array, one shard object at a time.

    The total size is known up front, so each shard-aligned window is written
    as soon as it is full: memory holds two shards (one filling while the
    pool writes the other), not the whole packed array, and no shard is ever
    rewritten.
    """

    def __init__(self, writer: ArrayWriter, name: str, total: int, opts: ZarrOptions) -> None:
        self._inner = max(1, min(opts.packed_chunk_bytes, total))
        # A shard (one object) holds whole inner chunks, at most chunk_bytes,
        # and no more than the array needs: the shard index has one entry per
        # inner chunk, so an oversized shard costs time and bytes for nothing.
        self._shard = self._inner * min(max(1, opts.chunk_bytes // self._inner), -(-total // self._inner))
        self._writer = writer
        self._name = name
        self._what = f"{name} (packed small tensors)"
        self._total = total
        self._codec = Codec.from_options(opts, 1)
        self._meta = _layout.packed_metadata(total, self._shard, self._inner, opts)
        self._directory = _paths.join(writer.data_root, name)
        writer.files.makedirs(_paths.dirname(self._object(0)))
        # Two windows: one fills while the other's shard object is written (and fsynced) by the pool.
        self._window: np.ndarray[Any, Any] = np.empty(min(self._shard, total), dtype=np.uint8)
        self._windows: list[np.ndarray[Any, Any] | None] = [self._window, None]
        self._writes: list[Future[None] | None] = [None, None]
        self._current = 0
        self._filled = 0  # bytes of the current window in use
        self._flushed = 0  # bytes written (whole windows)

    def _object(self, k: int) -> str:
        """The path of shard object ``k``."""
        return _paths.join(self._directory, f"c{_layout.CHUNK_SEPARATOR}{k}")

    def add(self, stored: np.ndarray[Any, Any]) -> int:
        """Append the bytes of ``stored``; return their offset in the packed array."""
        offset = self._flushed + self._filled
        # A flat uint8 view of the (C-contiguous) values: copied straight into the window.
        src = stored.reshape(-1).view(np.uint8)
        if offset + src.size > self._total:
            raise StorageError(
                f"zarr: packed array {self._name!r} was sized for {self._total} bytes, got more; "
                "the tensors changed while they were being saved"
            )
        pos = 0
        while pos < src.size:
            # The last window holds exactly the remainder: no byte beyond the array.
            size = min(self._shard, self._total - self._flushed)
            take = min(size - self._filled, src.size - pos)
            self._window[self._filled : self._filled + take] = src[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == size:
                self._flush(size)
        return offset

    def _flush(self, size: int) -> None:
        """Start writing the full current window as the next shard object; switch to the other window."""
        path = self._object(self._flushed // self._shard)
        job = self._writer.pool.submit(
            write_shard_object,
            self._writer.files,
            path,
            self._window[:size],
            self._inner,
            self._shard // self._inner,
            self._codec,
        )
        self._writer.track(job, self._what)
        self._writes[self._current] = job
        self._flushed += size
        self._filled = 0
        if self._flushed == self._total:
            return
        self._current = 1 - self._current
        pending = self._writes[self._current]
        if pending is not None:
            with _layout.writing(self._writer.prefix, self._what):
                pending.result()  # the window is free again once its shard object is written
        window = self._windows[self._current]
        if window is None:
            window = self._windows[self._current] = np.empty_like(self._window)
        self._window = window

    def close(self) -> dict[str, Any]:
        """Check that every announced byte was written; write the metadata and return it."""
        if self._flushed != self._total:
            raise StorageError(
                f"zarr: packed array {self._name!r} got {self._flushed + self._filled} of {self._total} bytes"
            )
        return self._writer.finish_array(self._name, self._meta, self._what)


def _template(shape: tuple[int, ...], **spec: Any) -> tuple[Any, dict[str, Any]]:
    """A zarr array in memory with ``spec``, and its metadata document: zarr decides the metadata."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    template = zarr.create_array(store=MemoryStore(), shape=shape, zarr_format=3, **spec)
    buf = template.metadata.to_buffer_dict(default_buffer_prototype())[_layout.ZARR_JSON]
    meta: dict[str, Any] = json.loads(buf.to_bytes())
    return template, meta


def write_shard(
    files: FileLayer,
    prefix: str,
    data_root: str,
    spec: ShardSpec,
    items: Sequence[WriteItem],
    opts: ZarrOptions,
    *,
    sync_dirs: bool,
) -> ShardResult:
    """Write the tensors of one shard below ``data_root``; return the manifest for ``commit``.

    With ``sync_dirs`` (stores with directories, see ``CommitStrategy.sync_dirs``) the shard's
    directories are durable too when it returns.
    """
    with ThreadPoolExecutor(_CHUNK_WRITERS, thread_name_prefix="trackpoint-zarr-chunks") as pool:
        writer = ArrayWriter(files, prefix, data_root, pool)
        try:
            result = _write_items(writer, prefix, spec, items, opts)
        except BaseException:
            # Every job ends before the shard fails: none writes after an abort.
            writer.wait(quiet=True)
            raise
        writer.wait()
        if sync_dirs:
            with _layout.writing(prefix, "the shard's directories"):
                writer.sync_dirs()
    return result


def _sync_tree(files: FileLayer, root: str, names: list[str] | None = None) -> None:
    """Sync ``root`` and every non-empty directory below it; ``names``: ``root``'s listing, if known."""
    for name in files.listdir(root) if names is None else names:
        path = _paths.join(root, name)
        below = files.listdir(path)  # a file lists as empty
        if below:
            _sync_tree(files, path, below)
    files.sync_dir(root)


def _write_items(
    writer: ArrayWriter, prefix: str, spec: ShardSpec, items: Sequence[WriteItem], opts: ZarrOptions
) -> ShardResult:
    tensors: dict[str, dict[str, Any]] = {}
    arrays: dict[str, dict[str, Any]] = {}
    graph: str | None = None
    packed_name = f"_packed-{spec.shard_id:05d}"
    nbytes = 0

    def packable(array: np.ndarray[Any, Any]) -> bool:
        return array.dtype.kind != "O" and array.nbytes <= opts.pack_bytes

    def packed_bytes(item: WriteItem) -> int:
        # From the dtype and shape alone: an item's array may be made when read (a JAX array's host copy,
        # gathered from its devices), and is read once, when it is written, not to size the pack as well.
        array = np.asarray(_as_stored(item))
        return array.nbytes if packable(array) else 0

    total = sum(packed_bytes(it) for it in items)
    packer = Packer(writer, packed_name, total, opts) if total else None
    for item in items:
        if not item.key:
            encode_key(item.key)  # raises: no format trackpoint writes stores an empty key
        part = item.slice
        if part is not None and (part.is_full or 0 in part.full_shape):
            part = None  # a slice that is the whole tensor is stored as the tensor
        if part is not None and not part.size:
            continue  # an empty slice holds nothing; the other slices cover the tensor
        known = tensors.get(item.key)
        if (known is not None and (part is None or "slices" not in known)) or (
            item.key == OBJECT_GRAPH_KEY and graph is not None
        ):
            what = "appears twice" if part is None else "is saved both whole and as slices"
            raise InvalidCheckpointError(f"zarr: tensor {item.key!r} {what} in one save of {prefix!r}")
        array = np.asarray(item.array)
        nbytes += item.nbytes
        dname = _layout.dtype_name(array.dtype, item.key)
        if item.key == OBJECT_GRAPH_KEY and dname == _layout.STRING and array.ndim == 0 and part is None:
            graph = base64.b64encode(bytes(_layout.as_bytes_array(array, item.key)[()])).decode("ascii")
            continue
        entry: dict[str, Any] = {"dtype": dname, "shape": list(array.shape)}
        if packable(array):
            offset = 0
            if packer is not None:
                with _layout.writing(prefix, item.key):
                    offset = packer.add(_layout.to_storage(array))
            entry.update(packed=packed_name if array.nbytes else None, offset=offset, nbytes=array.nbytes)
        else:
            # A slice is stored as an array of its own, named after the key and the slice.
            name = encode_key(item.key if part is None else f"{item.key}@{part.spec}")
            with _layout.writing(prefix, item.key):
                arrays[name] = writer.write_tensor(name, item.key, array, dname, opts)
            entry["array"] = name
        if part is None:
            tensors[item.key] = entry
            continue
        entry["slice_offset"] = list(part.offset)
        whole = tensors.setdefault(item.key, {"dtype": dname, "shape": list(part.full_shape), "slices": []})
        if whole["dtype"] != dname or tuple(whole["shape"]) != part.full_shape:
            raise InvalidCheckpointError(
                f"zarr: the slices of tensor {item.key!r} in one save of {prefix!r} differ in dtype or full shape"
            )
        whole["slices"].append(entry)
    if packer is not None:
        arrays[packed_name] = packer.close()
    payload = {"tensors": tensors, "arrays": arrays, "graph": graph}
    keys = (*tensors, *([OBJECT_GRAPH_KEY] if graph is not None else []))
    return ShardResult(spec, keys, nbytes, json.dumps(payload, separators=(",", ":")).encode())
