"""What the formats need of the store under a backend: the primitives of its file layer, one by one.

These tests reach below the :class:`~trackpoint.storage.StorageBackend`, to the
:class:`~trackpoint.backends.stores.FileLayer` it is built on (an
:class:`~trackpoint.backends.stores.ObjectStore` included), because the
formats' own checks hide what they test. A store that pads a short read with
zeros passes every round trip: the bundle's CRC-32C and Zarr's checksums turn
the zeros into a :class:`~trackpoint.errors.DataLossError`, but a Zarr
checkpoint saved with ``checksum=False`` reads them back as values. A store
whose put is two requests (part of the object, then all of it) passes every
save, and a crash between the two leaves a torn commit point. A backend not
built on a ``FileLayer`` skips them.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pytest

from trackpoint.errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
)
from trackpoint.plugins.testing._base import BackendTestBase
from trackpoint.storage import MUST_NOT_EXIST, StorageBackend

if TYPE_CHECKING:
    from trackpoint.backends.stores import FileLayer

__all__ = ["FileLayerContract", "store_path"]


#: What a store whose create-only writes replace an existing object must change (for the kit's messages).
CREATE_ONLY_ADVICE = (
    "a create-only write must refuse an existing object (on an ObjectStore: object_put, and upload_begin or "
    "upload_finish, must honour condition.create_only, sending the service's create-only precondition such as "
    'If-None-Match: * or ifGenerationMatch=0, and fail with an exception classify calls "precondition")'
)


def store_path(url: str) -> str:
    """``url`` as the store under a format addresses it: ``zarr+s3://b/k`` -> ``s3://b/k``.

    A format's compound scheme (``<format>+<store>``) chooses the backend; its
    store knows the part after the ``+`` only.
    """
    scheme, sep, rest = url.partition("://")
    if sep and "+" in scheme and "/" not in scheme:
        return f"{scheme.rpartition('+')[2]}://{rest}"
    return url


def _has_directories(files: FileLayer) -> bool:
    """Whether ``files`` keeps real directories, which its ``listdir`` names (a local disk).

    The notion :class:`~trackpoint.backends.stores.FileLayer` has of it: ``makedirs`` and
    ``remove_dir`` are no-ops on stores without directories, and a layer with directories overrides
    them. An :class:`~trackpoint.backends.stores.ObjectStore` has none, whatever it overrides.
    """
    from trackpoint.backends.stores import FileLayer, ObjectStore

    return not isinstance(files, ObjectStore) and type(files).makedirs is not FileLayer.makedirs


def _finds(files: FileLayer) -> bool:
    """Whether ``files`` can :meth:`~trackpoint.backends.stores.FileLayer.find` objects at any depth.

    Every layer can (the default walks ``listdir``) but an
    :class:`~trackpoint.backends.stores.ObjectStore` that leaves out the optional client call
    ``object_find``: a listing with the delimiter cannot reach keys in "subdirectories".
    """
    from trackpoint.backends.stores import ObjectStore

    return not isinstance(files, ObjectStore) or type(files).object_find is not ObjectStore.object_find


def _payload(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


class FileLayerContract(BackendTestBase):
    """The file layer's primitives raise what the formats rely on, and replace objects whole."""

    #: Bytes of the object the atomic-replacement test writes over and over; below the default upload
    #: part sizes (an object store sends it in one request) and deliberately odd.
    replaced_object_bytes: ClassVar[int] = 2 * 2**20 + 7
    #: Times that test replaces it while another thread watches its size.
    replacements: ClassVar[int] = 8

    def file_layer(self, backend: StorageBackend) -> FileLayer | None:
        """The :class:`~trackpoint.backends.stores.FileLayer` under ``backend``, ``None`` if it has none.

        The default finds the layer of a format (``BundleBackend``, ``ZarrBackend``) as
        ``backend.files``. Override it when your backend keeps its layer elsewhere.
        """
        from trackpoint.backends.stores import FileLayer

        files = getattr(backend, "files", None)
        return files if isinstance(files, FileLayer) else None

    def _layer(self, backend: StorageBackend) -> FileLayer:
        files = self.file_layer(backend)
        if files is None:
            name = backend.name or type(backend).__name__
            pytest.skip(f"backend {name!r} is not built on a trackpoint.backends.stores.FileLayer")
        return files

    def _require_listing(self, backend: StorageBackend, files: FileLayer) -> None:
        """Skip the test unless the backend and its layer declare ``listing_consistent``.

        A listing of a store that does not (a new object shows up some time after its put) may miss
        what was just written: the test could not tell that from a listing that drops objects.
        """
        self.require(backend, "listing_consistent")
        if not files.capabilities.listing_consistent:
            pytest.skip(f"the file layer {files.store_name!r} does not declare capabilities.listing_consistent")

    def _object(self, files: FileLayer, base_url: str, name: str) -> str:
        """The path of a fresh object ``name`` in the test's directory, as the layer addresses it."""
        directory = files.join(store_path(base_url), "file-layer")
        files.makedirs(directory)
        return files.join(directory, name)

    def _raw_path(self, files: FileLayer, path: str) -> str:
        """The harness's raw path (:meth:`raw_list`) of the layer's object ``path``."""
        name = path.rsplit("/", 1)[-1]
        found = [p for p in self.raw_list(files.dirname(path)) if p.rsplit("/", 1)[-1] == name]
        assert len(found) == 1, (
            f"raw_list({files.dirname(path)!r}) should show the one object written at {path!r}, shows {found}: "
            "the raw objects of a backend on a file layer are the layer's files"
        )
        return found[0]

    def test_a_read_past_the_end_raises_data_loss(self, backend: StorageBackend, base_url: str) -> None:
        files = self._layer(backend)
        path = self._object(files, base_url, "short")
        data = _payload(1000, 1)
        files.put(path, data)
        whole = bytearray(len(data))
        files.read_into(path, 0, memoryview(whole))
        assert bytes(whole) == data, f"read_into({path!r}) of all its bytes returned other bytes"
        # A range that starts inside the object and ends past it: the store gets fewer bytes than asked. Then
        # one starting at the end, and one starting past it (an HTTP store's 416).
        for offset, size in ((990, 20), (len(data), 1), (len(data) + 100, 10)):
            out = memoryview(bytearray(size))
            with pytest.raises(DataLossError):
                files.read_into(path, offset, out)
                pytest.fail(
                    f"read_into({path!r}, {offset}, <{size} bytes>) of a {len(data)}-byte object returned "
                    f"{bytes(out[: min(size, 16)])!r}... instead of raising DataLossError: a short read must "
                    "never come back padded (ObjectStore.object_get_range raises DataLossError when the object "
                    "ends before the view is full)"
                )
        # Two ranges a store reads with one request (coalesced, or vectored), the second past the end.
        head, tail = memoryview(bytearray(10)), memoryview(bytearray(10))
        with pytest.raises(DataLossError):
            files.read_ranges(path, [(0, head), (995, tail)])
            pytest.fail(
                f"read_ranges({path!r}, [(0, 10 bytes), (995, 10 bytes)]) of a {len(data)}-byte object returned "
                f"{bytes(tail)!r} for the second range instead of raising DataLossError"
            )

    def test_a_truncated_object_is_detected(self, backend: StorageBackend, base_url: str) -> None:
        # What a format's checksum would catch, caught by the store: the object is shorter than the format
        # knows it to be (its index or metadata says how long), and a read of the lost bytes must fail.
        files = self._layer(backend)
        path = self._object(files, base_url, "truncated")
        data = _payload(4096, 2)
        files.put(path, data)
        raw = self._raw_path(files, path)
        self.raw_write(raw, data[:1000])
        assert files.size(path) == 1000, f"size({path!r}) is {files.size(path)} after it was truncated to 1000 bytes"
        kept = bytearray(1000)
        files.read_into(path, 0, memoryview(kept))
        assert bytes(kept) == data[:1000], f"the bytes {path!r} kept read back differently"
        for offset, size in ((0, len(data)), (500, 1000), (2000, 100)):
            out = memoryview(bytearray(size))
            with pytest.raises(DataLossError):
                files.read_into(path, offset, out)
                pytest.fail(
                    f"read_into({path!r}, {offset}, <{size} bytes>) of an object truncated to 1000 bytes returned "
                    "without raising DataLossError (were the missing bytes padded?)"
                )

    def test_absent_objects_read_as_absent(self, backend: StorageBackend, base_url: str) -> None:
        files = self._layer(backend)
        files.put(self._object(files, base_url, "present"), b"x")  # the directory exists, the object not
        path = self._object(files, base_url, "absent")
        assert files.size(path) is None, f"size({path!r}) of a missing object must be None"
        assert files.sizes([path]) == [None], f"sizes([{path!r}]) of a missing object must be [None]"
        assert not files.exists(path), f"exists({path!r}) of a missing object must be false"
        assert files.read_versioned(path) is None, f"read_versioned({path!r}) of a missing object must be None"
        with pytest.raises(CheckpointNotFoundError):
            files.read(path)
        with pytest.raises(CheckpointNotFoundError):
            files.read_into(path, 0, memoryview(bytearray(4)))
        assert files.listdir(files.join(files.dirname(path), "no-such-directory")) == [], (
            "listdir of a missing directory must be []"
        )
        files.delete([path])  # deleting what is not there is not an error

    def test_a_listing_names_the_objects_directly_in_the_directory(
        self, backend: StorageBackend, base_url: str
    ) -> None:
        # The formats find a checkpoint's files by listdir: a listing that also returns deeper keys (an object
        # store that ignores the delimiter) or a sibling directory's objects passes every save and restore,
        # since the formats match names against patterns, yet hands them names of objects that are not there.
        files = self._layer(backend)
        self._require_listing(backend, files)
        directory = self._object(files, base_url, "listed")
        files.makedirs(directory)
        names = ("a", "b.index", "c.data-00000-of-00001")
        for name in names:
            files.put(files.join(directory, name), name.encode())
        deeper = files.join(directory, "sub")
        files.makedirs(files.join(deeper, "deeper"))
        files.put(files.join(deeper, "d"), b"d")
        files.put(files.join(files.join(deeper, "deeper"), "e"), b"e")
        sibling = f"{directory}-sibling"  # shares the directory's name as a prefix of its keys
        files.makedirs(sibling)
        files.put(files.join(sibling, "f"), b"f")
        listed = files.listdir(directory)
        # A store with real directories (a local disk) names them too; an object store has none to name.
        directories = _has_directories(files)
        objects = sorted(n for n in listed if not (directories and n == "sub"))
        assert objects == sorted(names), (
            f"listdir({directory!r}) returned {listed}; expected the names {sorted(names)} of the objects directly "
            f"in it{' (and the directory sub)' if directories else ''}. Names, not paths: no deeper keys, no keys "
            "of another directory, no 'subdirectory' entries, with or without a trailing '/' (on an ObjectStore: "
            "object_list must return the keys directly under the prefix only, as a listing with the delimiter "
            "'/' does)"
        )
        if not _finds(files):
            return  # an object store without object_find: find is optional
        found = files.find(directory)
        expected = sorted(
            [files.join(directory, n) for n in names]
            + [files.join(deeper, "d"), files.join(files.join(deeper, "deeper"), "e")]
        )
        assert sorted(found) == expected, (
            f"find({directory!r}) returned {found}; expected every object under it at any depth, as paths, and "
            f"nothing of {sibling!r} (on an ObjectStore: object_find returns every key starting with the prefix)"
        )

    def test_a_listing_returns_every_page(self, backend: StorageBackend, base_url: str) -> None:
        # More objects than a page of the store's listing holds, where many_objects_count exceeds its page: a
        # listing that reads the first page only misses the rest, and the formats with them (a delete leaves
        # objects behind, latest_checkpoint misses checkpoints).
        files = self._layer(backend)
        self._require_listing(backend, files)
        directory = self._object(files, base_url, "paged")
        files.makedirs(directory)
        names = [f"o{i:05d}" for i in range(self.many_objects_count)]

        def put(name: str) -> None:
            files.put(files.join(directory, name), b"x")

        if backend.capabilities.parallel_writes and files.capabilities.parallel_writes:
            with ThreadPoolExecutor(8) as pool:  # one short request each: at once, to keep the test short
                list(pool.map(put, names))
        else:
            for name in names:  # a store that takes one write at a time
                put(name)
        listed = files.listdir(directory)
        missing = sorted(set(names) - set(listed))
        assert not missing, (
            f"listdir({directory!r}) lists {len(listed)} of the {len(names)} objects put there; missing "
            f"{len(missing)}, e.g. {missing[:3]} (does object_list read only the first page of the listing?)"
        )
        if not _finds(files):
            return  # an object store without object_find: find is optional
        found = files.find(directory)
        missing = sorted({files.join(directory, n) for n in names} - set(found))
        assert not missing, (
            f"find({directory!r}) finds {len(found)} of the {len(names)} objects put there; missing "
            f"{len(missing)}, e.g. {missing[:3]} (does object_find read only the first page of the listing?)"
        )

    def test_existing_objects_refuse_create_only_writes(self, backend: StorageBackend, base_url: str) -> None:
        # The commit of a format on a store without atomic rename is a create-only or compare-and-swap write:
        # the layer must refuse it, with the error the format translates, and keep the object.
        files = self._layer(backend)
        path = self._object(files, base_url, "taken")
        files.put(path, b"first", create_only=True)
        with pytest.raises(CheckpointExistsError):
            files.put(path, b"second", create_only=True)
            pytest.fail(
                f"put({path!r}, create_only=True) over an existing object returned instead of raising "
                f"CheckpointExistsError: {CREATE_ONLY_ADVICE}"
            )
        sink = files.open_sink(path, create_only=True)
        sink.write(b"third")
        with pytest.raises(CheckpointExistsError):
            sink.close()
            pytest.fail(
                f"open_sink({path!r}, create_only=True) over an existing object closed instead of raising "
                f"CheckpointExistsError: {CREATE_ONLY_ADVICE}"
            )
        with pytest.raises(ConcurrentModificationError):
            files.write_versioned(path, b"fourth", if_version=MUST_NOT_EXIST)
            pytest.fail(
                f"write_versioned({path!r}, if_version=MUST_NOT_EXIST) over an existing object returned instead "
                f"of raising ConcurrentModificationError: {CREATE_ONLY_ADVICE}"
            )
        assert files.read(path) == b"first", f"a refused create-only write changed {path!r}"

    def test_a_put_replaces_an_object_whole(self, backend: StorageBackend, base_url: str) -> None:
        # Readers see the old object or the new one, whole: a store that sends part of an object first (or
        # deletes it before writing it again) shows a torn commit point to every reader meanwhile, and a
        # crash between its requests leaves it torn for good. The kit cannot stop a client call half way,
        # so another thread watches the object's size while it is replaced, again and again.
        files = self._layer(backend)
        path = self._object(files, base_url, "replaced")
        sizes = (self.replaced_object_bytes, self.replaced_object_bytes + 1)
        files.put(path, _payload(sizes[0], 3))
        seen: list[int | None] = []
        done = threading.Event()
        failed: list[BaseException] = []

        def watch() -> None:
            try:
                while not done.is_set():
                    size = files.size(path)
                    if size not in sizes:
                        seen.append(size)
            except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
                failed.append(exc)

        watcher = threading.Thread(target=watch, name="trackpoint-kit-watcher", daemon=True)
        watcher.start()
        try:
            for i in range(self.replacements):
                data = _payload(sizes[(i + 1) % 2], 4 + i)
                files.put(path, data)
                assert files.read(path) == data, f"{path!r} does not hold what put {i + 1} wrote"
        finally:
            done.set()
            watcher.join()
        if failed:
            raise failed[0]
        assert not seen, (
            f"while put replaced {path!r} ({sizes[0]} and {sizes[1]} bytes in turn), size() reported "
            f"{sorted(set(seen), key=str)}: readers saw the object torn or missing. An object must be replaced "
            "by one request (object_put) or appear whole when its upload completes (upload_finish)"
        )
