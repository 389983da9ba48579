"""The Zarr v3 storage backend: one checkpoint is one consolidated Zarr group, over any file layer.

Layout of the checkpoint ``P`` (see ``docs/backends/zarr.md``)::

    P.zarr/                    the Zarr v3 group; its zarr.json is the commit point
      zarr.json                group metadata: attributes["trackpoint"] (tensor
                               table, base64 object graph) + consolidated metadata
      <data>/                  "" for rename commits, "v-<save_id>" for create commits
        <encode_key(key)>/     one array per large tensor (attribute trackpoint_key)
        _packed-<shard>/       small numeric tensors, concatenated as bytes

The jobs live apart: :mod:`._pack` writes a shard, :mod:`._reader` reads,
:mod:`._commit` publishes a save by the strategy the store's capabilities
allow, :mod:`._layout` holds the format's names and root document. Importing
this module imports zarr; :mod:`trackpoint.backends.zarr` imports it only when
a Zarr backend is created.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trackpoint import _paths
from trackpoint.backends.stores import FileLayer
from trackpoint.backends.zarr import _layout, _pack, _tree
from trackpoint.backends.zarr._commit import active, strategy_for
from trackpoint.backends.zarr._options import ZarrOptions, refuse_unknown
from trackpoint.backends.zarr._reader import ZarrReader
from trackpoint.errors import (
    ArgumentTypeError,
    CheckpointError,
    CheckpointNotFoundError,
    DataLossError,
    InvalidCheckpointError,
    StorageError,
    TrackableError,
)
from trackpoint.storage import (
    ANY_VERSION,
    OBJECT_GRAPH_KEY,
    CheckpointOptions,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    TensorSlice,
    VersionCondition,
    VersionedBytes,
    WriteItem,
    check_coverage,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ZarrBackend", "ZarrReader"]

FORMAT_NAME = _layout.FORMAT_NAME
FORMAT_VERSION = _layout.FORMAT_VERSION

#: URL schemes naming local paths.
_LOCAL_SCHEMES = ("", "file", "zarr", "zarr+file")


def _format_options(files: FileLayer, given: Mapping[str, Any]) -> ZarrOptions:
    """The format's part of ``given`` (``backend_options``), after refusing keys neither it nor ``files`` takes."""
    store = files.backend_option_names() or frozenset()
    refuse_unknown(given, store)
    return ZarrOptions.from_mapping({k: v for k, v in given.items() if k not in store})


class ZarrBackend(StorageBackend):
    """Checkpoints as consolidated Zarr v3 groups on any :class:`FileLayer` store.

    Parameters
    ----------
    files
        The store. Its declared capabilities choose the commit strategy
        (atomic rename, else conditional create).
    options
        The default tuning: :class:`ZarrOptions`, or the
        :class:`~trackpoint.storage.CheckpointOptions` a backend factory
        received (as :class:`~trackpoint.backends.bundle.BundleBackend` takes
        them), whose ``backend_options`` are the format's and, on an object
        store, the store's; a save may pass other ``backend_options`` to
        :meth:`save`.
    exchange
        Optional atomic swap of two directories of ``files`` (local disk on
        Linux), which makes an overwrite by rename atomic.

    Raises
    ------
    BackendOptionError
        ``backend_options`` names a key neither the format nor the store takes.
    ArgumentTypeError
        ``options`` is neither.
    """

    name = "zarr"
    # A slice is stored as an array of its own; the commit lists a key's slices in its table entry.
    supports_slices = True

    def __init__(
        self,
        files: FileLayer,
        options: ZarrOptions | CheckpointOptions | None = None,
        *,
        exchange: Callable[[str, str], bool] | None = None,
    ) -> None:
        if isinstance(options, CheckpointOptions):
            options = _format_options(files, options.backend_options)
        elif options is not None and not isinstance(options, ZarrOptions):
            raise ArgumentTypeError(
                f"ZarrBackend: options must be ZarrOptions or CheckpointOptions, got {type(options).__name__}"
            )
        self._files = files
        self._options = options or ZarrOptions()
        self._exchange = exchange
        self._strategy = strategy_for(files, exchange)
        self.capabilities = files.capabilities

    @property
    def options(self) -> ZarrOptions:
        """The backend's default tuning."""
        return self._options

    @property
    def files(self) -> FileLayer:
        """The store the checkpoints live on."""
        return self._files

    def with_options(self, options: CheckpointOptions) -> StorageBackend:
        """This backend tuned by ``options.backend_options`` for one save.

        Names are checked as the factory checks them when the backend is
        opened: the format's options tune the copy returned, the store's
        (``TransferOptions``: retries, time-outs, part sizes) are accepted on
        a store that takes them, S3 and GCS, and left out, since the store
        was configured when it was created.

        Raises
        ------
        BackendError
            An option is unknown, or is a store's option and the store takes
            none (the local disk); the factory's message and error.
        """
        given = options.backend_options
        if not given:
            return self
        # The store's options are refused where it takes none (the local disk): a save must not drop them.
        tuning = _format_options(self._files, given)
        if not set(given) & ZarrOptions.names():
            return self  # only the store's, which configured it when it was created
        clone = ZarrBackend(self._files, tuning, exchange=self._exchange)
        clone.name = self.name
        return clone

    # -------------------------------------------------------------- helpers
    def _path(self, url: str) -> str:
        """``url`` as the store addresses it (``zarr+s3://b/k`` -> ``s3://b/k``, ``zarr:///x`` -> ``/x``)."""
        scheme, rest = _paths.split_scheme(url)
        local = self._files.capabilities.atomic_rename
        if scheme in _LOCAL_SCHEMES:
            if not local and scheme != "":
                raise StorageError(
                    f"zarr: {url!r} is a local path; this backend instance stores on {self._files.store_name}"
                )
            return os.path.abspath(rest) if local else rest
        if local:
            raise StorageError(f"zarr: {url!r} is not a local path; this backend instance stores on local disk")
        base = scheme[len("zarr+") :] if scheme.startswith("zarr+") else scheme
        return f"{base}://{rest}"

    def _group(self, prefix: str) -> str:
        return self._path(prefix) + _layout.SUFFIX

    def _data_root(self, prefix: str, save_id: str) -> str:
        root, data = self._strategy.staging(self._group(prefix), save_id)
        return _paths.join(root, data) if data else root

    # -------------------------------------------------------------- writing
    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        with active(spec.save_id):
            group = self._group(prefix)
            prepared = False
            try:
                self._strategy.prepare(group, spec)
                prepared = True
                data_root = self._data_root(prefix, spec.save_id)
                return _pack.write_shard(
                    self._files, prefix, data_root, spec, items, self._options, sync_dirs=self._strategy.sync_dirs
                )
            except (CheckpointNotFoundError, StorageError) as exc:
                # On a store with directories, a cleanup that took the save's staging directory makes the next
                # file or directory created in it fail: say so, not which one it was. Before the shard's marker
                # is in place, only a missing file or directory can tell of a cleanup (not, say, permissions).
                removed = None
                if prepared or isinstance(exc, CheckpointNotFoundError):
                    removed = self._strategy.shard_staging_removed(prefix, group, spec)
                if removed is None:
                    raise
                raise removed from exc

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        if not shards:
            raise InvalidCheckpointError(f"zarr: commit of {prefix!r} got no shards; write at least one")
        save_id = shards[0].spec.save_id
        with active(save_id):
            group = self._group(prefix)
            _, data = self._strategy.staging(group, save_id)
            doc = _root_document(prefix, shards, save_id, data)
            self._strategy.commit(prefix, group, save_id, doc, overwrite, len(shards))

    def abort(self, prefix: str, save_id: str) -> None:
        try:
            # Under the store's clean-up budget: when the save failed because the store stopped answering,
            # its listing and deletions must not each wait out the retry limits again.
            with self._files.cleaning_up():
                self._strategy.abort(self._group(prefix), save_id)
        except CheckpointError:
            pass  # best effort by contract; cleanup() gets the rest

    # -------------------------------------------------------------- reading
    def open_reader(self, prefix: str) -> CheckpointReader:
        group = self._group(prefix)
        identity: Callable[[], object] | None = None
        opened: object = None
        if self._exchange is not None:
            # An overwrite swaps a new group in at this path, so chunks are read by paths that may name the
            # next checkpoint's by then, and their checksums match them. The root document's identity (a new
            # file on every commit) tells the reader when its checkpoint was replaced (see ZarrReader).
            root = _paths.join(group, _layout.ZARR_JSON)

            def identity() -> object:
                return self._files.modified(root), self._files.size(root)

        for _ in range(3):
            opened = None if identity is None else identity()
            found = self._strategy.read_root(group)
            if identity is None or identity() == opened:
                break  # else replaced while being read: read the new one
        if found is None:
            raise CheckpointNotFoundError(f"zarr: no checkpoint is committed at {prefix!r} (no {group}/zarr.json)")
        attrs, metadata = found
        data = str(attrs.get("data") or "")
        graph_b64 = attrs.get("object_graph")
        try:
            graph = None if graph_b64 is None else base64.b64decode(graph_b64, validate=True)
        except ValueError as exc:
            raise DataLossError(f"zarr: the object graph in {group}/zarr.json is not valid base64") from exc
        table = attrs.get("tensors")
        if not isinstance(table, dict):
            raise InvalidCheckpointError(f"zarr: {group}/zarr.json has no tensor table")
        # Array metadata comes from the (checksummed) consolidated copy: no
        # per-array zarr.json read, and a damaged one cannot mislead a restore.
        arrays = {name[len(data) + 1 :] if data else name: meta for name, meta in metadata.items()}
        return ZarrReader(
            prefix,
            self._files,
            _paths.join(group, data) if data else group,
            table,
            graph,
            arrays,
            identity=identity,
            opened=opened,
        )

    # ------------------------------------------------------------ namespace
    def exists(self, prefix: str) -> bool:
        return self._files.exists(_paths.join(self._group(prefix), _layout.ZARR_JSON))

    def modified(self, prefix: str) -> float | None:
        # docstring inherited: the root group's zarr.json is the commit point.
        return self._files.modified(_paths.join(self._group(prefix), _layout.ZARR_JSON))

    def delete(self, prefix: str) -> None:
        self._strategy.delete(self._group(prefix))

    def list_checkpoints(self, directory: str) -> list[str]:
        base = self._path(directory)
        names: set[str] = set()
        if self._files.capabilities.atomic_rename:
            # Listings of a local directory name its subdirectories.
            names = {n for n in self._files.listdir(base) if n.endswith(_layout.SUFFIX)}
        else:
            for path in self._files.find(base):
                rel = _tree.strip(path)[len(_tree.strip(base)) :].lstrip("/").split("/")
                if len(rel) == 2 and rel[1] == _layout.ZARR_JSON and rel[0].endswith(_layout.SUFFIX):
                    names.add(rel[0])
        groups = sorted(name for name in names if len(name) > len(_layout.SUFFIX))
        roots = [_paths.join(_paths.join(base, name), _layout.ZARR_JSON) for name in groups]
        # The sizes asked together, then one read per group (as many requests as asking whether each root
        # exists): the start of a root names the format.
        found = [
            self.join(directory, name[: -len(_layout.SUFFIX)])
            for name, root, size in zip(groups, roots, self._files.sizes(roots), strict=True)
            if size is not None and self._written_by_trackpoint(root, size)
        ]
        return sorted(found)

    def _written_by_trackpoint(self, root: str, size: int) -> bool:
        """Whether the root ``zarr.json`` at ``root`` (``size`` bytes) is a checkpoint's, not another Zarr group's.

        The start of the document tells for every root trackpoint writes; the whole is read only when the
        start does not (a document rewritten by another tool, or a large one of another writer).
        """
        try:
            if size > _layout.HEAD_BYTES:
                head = bytearray(_layout.HEAD_BYTES)
                try:
                    self._files.read_into(root, 0, memoryview(head))
                except DataLossError:
                    pass  # replaced by a shorter root since its size was asked: the whole is read below
                else:
                    if _layout.names_trackpoint(head):
                        return True
            return _layout.written_by_trackpoint(self._files.read(root))
        except CheckpointNotFoundError:
            return False  # deleted since it was listed

    def cleanup(self, directory: str, *, min_age: float | None = None) -> list[str]:
        """Remove the abandoned saves in ``directory`` that are old enough; return what was removed.

        Parameters
        ----------
        directory
            Where to look (not recursively).
        min_age
            Seconds a save must have been left alone; ``None`` keeps the
            backend option ``cleanup_min_age``. ``0`` removes every abandoned
            save but those this process is writing.

        Returns
        -------
        list of str
            The directories removed, and the unfinished uploads aborted (an S3
            multipart upload a killed save left in its directory: invisible,
            but stored and billed), worded as :meth:`UnfinishedUpload.describe
            <trackpoint.backends.stores.UnfinishedUpload.describe>` words them.
            A save with an upload that received a part less than ``min_age``
            ago is kept: it may be running.
        """
        base = self._path(directory)
        if min_age is None:
            min_age = self._options.cleanup_min_age
        removed: list[str] = []
        for leftover in self._strategy.leftovers(base, time.time(), min_age):
            # The uploads first: when one fails to abort, the save's objects stay too, and the next cleanup
            # finds the save whole.
            self._files.abort_uploads(leftover.uploads)
            removed.extend(upload.describe() for upload in leftover.uploads)
            # Not removed in place: the strategy makes sure a commit of that save, running at the same time,
            # fails rather than publishes what is left of it, or else keeps it (see docs/backends/zarr.md).
            if self._strategy.remove(leftover):
                removed.append(leftover.path)
        return sorted(_as_given(directory, base, removed))

    def leftovers(self, directory: str) -> list[str]:
        # docstring inherited: what cleanup(min_age=0) would remove, this process's running saves excepted;
        # unfinished uploads as cleanup reports them.
        base = self._path(directory)
        found = self._strategy.leftovers(base, time.time(), 0.0)
        return sorted(
            _as_given(directory, base, [*(f.path for f in found), *(u.describe() for f in found for u in f.uploads)])
        )

    # ---------------------------------------------------------- small files
    def read_file(self, path: str) -> VersionedBytes | None:
        return self._files.read_versioned(self._path(path))

    def write_file(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        p = self._path(path)
        self._files.makedirs(self._files.dirname(p))
        return self._files.write_versioned(p, bytes(data), if_version=if_version)

    def delete_file(self, path: str) -> None:
        self._files.delete([self._path(path)])

    def dirname(self, path: str) -> str:
        return _paths.dirname(path)

    def close(self) -> None:
        self._files.close()

    def __repr__(self) -> str:
        return f"<ZarrBackend on {self._files.store_name}>"


def _as_given(directory: str, base: str, paths: list[str]) -> list[str]:
    """``paths`` under ``base`` (the store's address of ``directory``) written under ``directory`` as given.

    What cleanup reports must name the leftovers so that they can be given back: ``s3://b/run/x.zarr``
    found in ``zarr+s3://b/run`` selects the bundle backend, so it is reported as ``zarr+s3://b/run/x.zarr``
    (an unfinished upload's description starts with its path, and is written the same way).
    """
    given, root = directory.rstrip("/"), base.rstrip("/")
    if not given or given == root:
        return paths
    return [given + path[len(root) :] if path == root or path.startswith(root + "/") else path for path in paths]


def _root_document(prefix: str, shards: Sequence[ShardResult], save_id: str, data: str) -> bytes:
    """Merge the shards' manifests into the root ``zarr.json``; refuse an incomplete or mixed set."""
    tensors: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    graph: str | None = None
    expected = shards[0].spec.num_shards
    ids = sorted(r.spec.shard_id for r in shards)
    if ids != list(range(expected)) or any(r.spec.num_shards != expected for r in shards):
        # A manifest lost on its way to the committing process would
        # otherwise commit a checkpoint silently missing its tensors.
        raise InvalidCheckpointError(
            f"zarr: commit of {prefix!r} needs the manifests of shards 0..{expected - 1} exactly once, "
            f"got shard ids {ids}; gather every write_shard result before committing"
        )
    for r in shards:
        if r.spec.save_id != save_id:
            raise InvalidCheckpointError(
                f"zarr: commit of {prefix!r} mixes shards of saves {save_id} and {r.spec.save_id}"
            )
        try:
            piece = json.loads(r.payload)
            if not (isinstance(piece["tensors"], dict) and isinstance(piece["arrays"], dict)):
                raise TypeError("tensors and arrays must be objects")
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCheckpointError(
                f"zarr: manifest of shard {r.spec.shard_id} for {prefix!r} is not a zarr backend manifest "
                f"({exc}); pass the ShardResult that write_shard returned"
            ) from exc
        dup = {k for k in tensors.keys() & piece["tensors"].keys() if not _sliced(tensors[k], piece["tensors"][k])}
        if dup or (graph is not None and piece.get("graph") is not None):
            name = sorted(dup)[0] if dup else OBJECT_GRAPH_KEY
            raise InvalidCheckpointError(f"zarr: tensor {name!r} appears in two shards of {prefix!r}")
        for key, entry in piece["tensors"].items():
            if key in tensors:
                _merge_slices(prefix, key, tensors[key], entry)
            else:
                tensors[key] = entry
        arrays.update(piece["arrays"])
        graph = graph if piece.get("graph") is None else piece.get("graph")
    for key, entry in tensors.items():
        if isinstance(entry, dict) and "slices" in entry:
            _check_slices(prefix, key, entry)
    return _layout.root_document(save_id, data, graph, tensors, arrays)


def _sliced(a: Any, b: Any) -> bool:
    """Whether two shards' entries for one key are both slices of it (they merge)."""
    return isinstance(a, dict) and isinstance(b, dict) and "slices" in a and "slices" in b


def _merge_slices(prefix: str, key: str, into: dict[str, Any], entry: dict[str, Any]) -> None:
    if into["dtype"] != entry["dtype"] or into["shape"] != entry["shape"]:
        raise TrackableError(
            f"zarr: commit of {prefix!r}: the slices of tensor {key!r} disagree: dtype {into['dtype']} shape "
            f"{into['shape']} in one shard, dtype {entry['dtype']} shape {entry['shape']} in another"
        )
    into["slices"] = [*into["slices"], *entry["slices"]]


def _check_slices(prefix: str, key: str, entry: dict[str, Any]) -> None:
    """The slices of ``key`` tile it; they are put in offset order (whatever order the shards came in)."""
    full = tuple(int(d) for d in entry["shape"])
    try:
        parts = [TensorSlice(full, tuple(s["slice_offset"]), tuple(s["shape"])) for s in entry["slices"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCheckpointError(f"zarr: manifest entry of the slices of {key!r} is malformed ({exc})") from exc
    check_coverage(key, full, parts, f"zarr: commit of {prefix!r}")
    entry["slices"] = sorted(entry["slices"], key=lambda s: tuple(s["slice_offset"]))
