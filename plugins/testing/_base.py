"""What every conformance mixin builds on: the adopter's contract and shared helpers."""

from __future__ import annotations

import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

import ml_dtypes
import numpy as np
import pytest

from trackpoint._suggest import with_hints
from trackpoint.plugins.testing._intercept import intercept_file_layer
from trackpoint.storage import CheckpointOptions, ShardResult, ShardSpec, StorageBackend, WriteItem

__all__ = ["DTYPES", "BackendTestBase", "assert_same", "sample"]

Array = np.ndarray[Any, Any]

#: Every element type the core supports besides strings.
DTYPES: Final[tuple[np.dtype[Any], ...]] = tuple(
    np.dtype(d)
    for d in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
        ml_dtypes.bfloat16,
        np.complex64,
        np.complex128,
    )
)


def sample(dtype: np.dtype[Any], shape: tuple[int, ...], seed: int = 0) -> Array:
    """Deterministic values spanning the dtype's range (signs, large magnitudes, both bool values)."""
    rng = np.random.default_rng(seed)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(int(info.min), int(info.max), size=shape, dtype=dtype, endpoint=True)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) * 1e3 + 1j * rng.standard_normal(shape)).astype(dtype)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def _as_bytes(x: object) -> object:
    return x.encode("utf-8") if isinstance(x, str) else x


def assert_same(actual: Array, expected: Array, what: str = "") -> None:
    """Dtype, shape and every bit equal (NaN payloads and ``-0.0`` included); strings compared as bytes."""
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind == "O":
        got = [_as_bytes(x) for x in actual.flat]
        want = [_as_bytes(x) for x in expected.flat]
        assert all(isinstance(x, bytes) for x in got), f"{what}: string elements must come back as bytes"
        assert got == want, f"{what}: strings differ"
    else:
        assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes(), (
            f"{what}: values differ"
        )


class BackendTestBase(ABC):
    """The contract between the conformance kit and a backend's test class.

    The adopting class (named ``Test...`` so pytest collects it) provides two
    fixtures and four backdoor methods, and where the kit needs it one hook:

    * ``backend`` -- a :class:`~trackpoint.storage.StorageBackend` to test
      (the kit's own fixture only fails, saying it must be overridden);
    * ``base_url`` -- a fresh, empty directory URL (or path) for this test
      (likewise);
    * :meth:`raw_list`, :meth:`raw_read`, :meth:`raw_write`, :meth:`raw_delete`
      -- access to the raw storage that bypasses the backend, used to inspect
      what a save left behind and to corrupt it;
    * :meth:`intercept_raw_writes` -- optional for a backend built on a
      :class:`~trackpoint.backends.stores.FileLayer` kept as ``backend.files``
      (the kit handles those itself), needed by every other backend for the
      crash tests (:class:`~trackpoint.plugins.testing.CrashSafety`), which
      are skipped without it;
    * :meth:`reopen` and :meth:`missing_location` -- optional: a second backend
      over the same storage, and a URL in a location that does not exist.

    The backend need not carry a registered ``name``: the plugin host sets it
    when it opens a backend, and a backend built directly in the fixture has
    none. Class attributes let slow stores scale the heavy tests down.
    """

    #: Bytes of the tensor in the huge-tensor tests; larger than typical part
    #: and buffer sizes (S3 multipart parts, the 8 MiB bundle write buffer) and
    #: deliberately odd, so no size lines up with a chunk boundary.
    huge_tensor_bytes: ClassVar[int] = 24 * 2**20 + 3
    #: Number of tensors in the many-tensors tests.
    many_tensors_count: ClassVar[int] = 2000
    #: Number of checkpoints the listing test saves in one directory, of objects the file-layer listing
    #: test puts in one directory, and of tensors in the checkpoint the delete and abort tests remove. The
    #: two listing tests catch a listing that returns only its first page, where this exceeds the page size
    #: of your store's listing: make it so where that is cheap; the default is above the 100 entries per page
    #: some clients ask for. (The delete and abort tests remove whatever the format wrote, often a few
    #: objects: they catch a first-page-only listing or batch delete only on formats that write an object
    #: per tensor.)
    many_objects_count: ClassVar[int] = 120
    #: Known gaps of this backend: test name (without parameters) -> reason.
    #: Each such test is marked ``xfail(reason=..., strict=True)``, so a gap
    #: that gets fixed is reported too. A name that is no test of the class
    #: fails every test's setup, listing the valid names.
    known_gaps: ClassVar[Mapping[str, str]] = {}

    @pytest.fixture
    def backend(self) -> StorageBackend:
        """The backend under test: the adopting class must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the 'backend' fixture: return the StorageBackend to test"
        )

    @pytest.fixture
    def base_url(self) -> str:
        """A fresh, empty directory URL for one test: the adopting class must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the 'base_url' fixture: return a fresh, empty directory URL"
        )

    @pytest.fixture(autouse=True)
    def _mark_known_gaps(self, request: pytest.FixtureRequest) -> None:
        self._check_known_gaps()
        name = getattr(request.node, "originalname", None) or request.node.name
        reason = self.known_gaps.get(name)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))

    @classmethod
    def _check_known_gaps(cls) -> None:
        """Fail the test's setup when :attr:`known_gaps` names a test the class does not have.

        A misspelt or stale name would otherwise mark nothing, and the gap it meant would go unnoticed.
        """
        if not cls.known_gaps:
            return
        tests = sorted(n for n in dir(cls) if n.startswith("test") and callable(getattr(cls, n)))
        unknown = sorted(set(cls.known_gaps) - set(tests))
        if not unknown:
            return
        pytest.fail(
            f"{cls.__name__}.known_gaps names {len(unknown)} test(s) the class does not have: "
            f"{with_hints(unknown, tests, quote=True)}. "
            f"Name a test without its parameters, one of: {', '.join(tests)}",
            pytrace=False,
        )

    @abstractmethod
    def raw_list(self, directory: str) -> list[str]:
        """Paths of every raw object at or below ``directory``, recursively, in the backend's path syntax."""

    @abstractmethod
    def raw_read(self, path: str) -> bytes:
        """Contents of the raw object ``path`` (one of :meth:`raw_list`)."""

    @abstractmethod
    def raw_write(self, path: str, data: bytes) -> None:
        """Replace the raw object ``path`` (one of :meth:`raw_list`) with ``data``, or put back a removed one.

        On an object store it need not keep the object's write id, and must not give the new object
        the write id of the one it replaces: the kit puts another writer's commit point in place with
        it while the backend writes, and a write id of the backend's would make that object look like
        the backend's own write (see ``docs/writing-a-backend.md``, "Write ids and raw_write").
        """

    @abstractmethod
    def raw_delete(self, path: str) -> None:
        """Remove the raw object ``path``."""

    def intercept_raw_writes(
        self, backend: StorageBackend, before_each: Callable[[str], None]
    ) -> contextlib.AbstractContextManager[object] | None:
        """A context in which ``before_each`` is called before every change of the raw storage under ``backend``.

        The crash tests (:class:`~trackpoint.plugins.testing.CrashSafety`) stop an
        overwriting save and a delete at each of their raw writes in turn, as a
        crash of the process would stop them there, and check that the store then
        holds a whole checkpoint (the old or the new one) or none, never part of
        one. They see the store's writes through this hook only.

        Parameters
        ----------
        backend
            The backend under test (the ``backend`` fixture).
        before_each
            Call it, while the returned context is entered, in the thread about
            to change the raw storage, before each change: an object or file
            written, replaced, renamed or deleted, a row inserted or deleted, a
            transaction committed. Pass what the change touches (a path), for
            messages. A request that changes several objects (a batch delete)
            is one change per object: carry it out one object at a time while
            intercepting, since a crash can fall between them. A change that is
            atomic in your store (one transaction, one rename) is one change.

            When it raises, let the exception propagate unchanged (do not
            translate, retry or swallow it), and do not make that change (call
            it before the request is sent). The kit passes two kinds:

            * the crash tests' (:class:`~trackpoint.plugins.testing.CrashSafety`)
              raises a ``BaseException`` that is no ``Exception``, so that retry
              loops and ``except Exception`` clean-ups let it through as they
              would a crash, and once it has raised it raises for every later
              change as well;
            * the failed-write test's (:class:`~trackpoint.plugins.testing.FailedWrites`)
              raises a :class:`~trackpoint.errors.TransientStorageError` (an
              ``Exception``: the store refused this one change after its
              retries) once, for one change, and lets every other change
              through; your backend then handles it as it would the store's own
              failure (fail the save before its commit point, warn after it).

        Returns
        -------
        contextlib.AbstractContextManager or None
            The context; ``None`` when the harness cannot intercept the writes,
            and the crash tests are then skipped.

        Notes
        -----
        The default handles a backend built on a
        :class:`~trackpoint.backends.stores.FileLayer` kept as ``backend.files``
        (``BundleBackend`` and ``ZarrBackend`` over any store, an
        :class:`~trackpoint.backends.stores.ObjectStore` included), through
        :func:`~trackpoint.plugins.testing.intercept_file_layer` (which on an
        ``ObjectStore`` also stops at each of its client calls that write), and
        returns ``None`` for any other. Besides the crash tests,
        :class:`~trackpoint.plugins.testing.CommitVisibility` uses the hook to
        put another writer's checkpoint in place between two raw writes of a
        commit, through the backdoors, from ``before_each`` calls made in the
        thread that called ``commit``. Override it for a backend that talks to its
        store directly, typically by wrapping the client calls that write with
        :meth:`pytest.MonkeyPatch.context`.
        """
        from trackpoint.backends.stores import FileLayer

        files = getattr(backend, "files", None)
        return intercept_file_layer(files, before_each) if isinstance(files, FileLayer) else None

    def _intercepting(
        self, backend: StorageBackend, before_each: Callable[[str], None], needed_by: str
    ) -> contextlib.AbstractContextManager[object]:
        """:meth:`intercept_raw_writes`, or a skip of the test (``needed_by`` names it) when it returns ``None``."""
        interception = self.intercept_raw_writes(backend, before_each)
        if interception is None:
            name = backend.name or type(backend).__name__
            pytest.skip(
                f"{type(self).__name__}.intercept_raw_writes returns None for backend {name!r}: {needed_by} "
                "to see its raw writes (see BackendTestBase.intercept_raw_writes)"
            )
        return interception

    def reopen(self, backend: StorageBackend) -> StorageBackend | None:
        """A second backend over the same storage as ``backend``, as another process would open it.

        The crash tests (:class:`~trackpoint.plugins.testing.CrashSafety`) look
        at what a crash left through it: state the crashed instance keeps in
        memory (an index updated before its raw write, a cache) must not make
        a broken store look whole. Optional: ``None`` (the default) has them
        look through ``backend`` itself, which cannot catch that.

        Returns
        -------
        StorageBackend or None
            A new, open backend (the kit closes it), or ``None``.
        """
        return None

    def missing_location(self, base_url: str) -> str | None:
        """A directory URL in a location that does not exist, such as a bucket nobody created.

        The :class:`~trackpoint.plugins.testing.MissingLocation` tests read,
        list and save there and expect
        :class:`~trackpoint.errors.CheckpointNotFoundError`. Optional: ``None``
        (the default) skips them. Return one for a store whose locations must
        be created before use (object-store buckets, containers); not for a
        local disk, where a missing directory is an empty one and a save
        creates it.

        Parameters
        ----------
        base_url
            This test's ``base_url``, to build the URL from (same scheme, a
            bucket that does not exist).

        Returns
        -------
        str or None
            The URL; nothing may exist there, and the tests create nothing.
        """
        return None

    # ------------------------------------------------------------ helpers
    @staticmethod
    def url(backend: StorageBackend, base_url: str, *names: str) -> str:
        """``base_url/names[0]/names[1]/...`` in the backend's path syntax."""
        out = base_url
        for n in names:
            out = backend.join(out, n)
        return out

    @staticmethod
    def save(
        backend: StorageBackend,
        prefix: str,
        tensors: Mapping[str, Array],
        *,
        overwrite: bool = True,
        max_shard_bytes: int | None = None,
        num_writers: int | None = None,
    ) -> None:
        """Save ``tensors`` at ``prefix`` through :meth:`StorageBackend.save`."""
        opts = CheckpointOptions(max_shard_bytes=max_shard_bytes, num_writers=num_writers)
        backend.save(prefix, [WriteItem(k, v) for k, v in tensors.items()], opts, overwrite=overwrite)

    @staticmethod
    def write_shards(
        backend: StorageBackend,
        prefix: str,
        groups: Sequence[Mapping[str, Array]],
        save_id: str | None = None,
        *,
        overwrite: bool = True,
    ) -> list[ShardResult]:
        """Begin a save and write each mapping of ``groups`` as one of its shards, without committing.

        Drives the save protocol as every writer does: :meth:`StorageBackend.begin`
        with ``overwrite``, then :meth:`StorageBackend.write_shard` per group.
        """
        sid = save_id or uuid.uuid4().hex
        backend.begin(prefix, sid, overwrite=overwrite)
        return [
            backend.write_shard(prefix, ShardSpec(i, len(groups), sid), [WriteItem(k, v) for k, v in g.items()])
            for i, g in enumerate(groups)
        ]

    @staticmethod
    def assert_contents(backend: StorageBackend, prefix: str, expected: Mapping[str, Array]) -> None:
        """The committed checkpoint at ``prefix`` holds exactly ``expected``."""
        assert backend.exists(prefix), f"{prefix!r} should be committed"
        with backend.open_reader(prefix) as reader:
            assert list(reader.keys()) == sorted(expected), f"keys of {prefix!r}"
            for key, want in expected.items():
                assert_same(reader.read(key), want, f"{prefix!r}[{key!r}]")

    @staticmethod
    def assert_listed(backend: StorageBackend, directory: str, expected: Sequence[str]) -> None:
        """``list_checkpoints(directory)`` returns exactly ``expected`` (in that order)."""
        got = backend.list_checkpoints(directory)
        assert got == list(expected), f"list_checkpoints({directory!r}) returned {got}, expected {list(expected)}"

    @staticmethod
    def assert_absent(backend: StorageBackend, prefix: str) -> None:
        """Nothing is committed at ``prefix``."""
        assert not backend.exists(prefix), f"exists({prefix!r}) is true: a checkpoint is committed there"

    def assert_nothing_left(self, directory: str, after: str) -> None:
        """:meth:`raw_list` shows no object under ``directory``; ``after`` says what should have removed them."""
        left = self.raw_list(directory)
        assert left == [], f"{after} must leave no object under {directory!r}; {len(left)} remain: {left[:5]}"

    def entries_of(self, backend: StorageBackend, prefix: str) -> list[str]:
        """Raw objects that belong to the checkpoint ``prefix`` (their paths start with it)."""
        return [p for p in self.raw_list(backend.dirname(prefix)) if p.startswith(prefix)]

    @staticmethod
    def require(backend: StorageBackend, capability: str) -> None:
        """Skip the test unless ``backend.capabilities`` declares ``capability``."""
        if not getattr(backend.capabilities, capability):
            name = backend.name or type(backend).__name__
            pytest.skip(f"backend {name!r} does not declare capabilities.{capability}")
