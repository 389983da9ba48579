"""The raw writes of a file layer, intercepted: where the kit's crash tests stop a save."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from trackpoint.backends.stores import FileLayer, FileSink

__all__ = ["intercept_file_layer"]

#: The methods of a file layer that change what it stores. The others only read, or handle directories
#: (``makedirs``, ``remove_dir``, ``sync_dir``), which hold no data a reader could see half written.
_WRITES = ("put", "write_versioned", "rename", "delete", "rmtree", "open_sink")


@contextlib.contextmanager
def intercept_file_layer(files: FileLayer, before_each: Callable[[str], None]) -> Iterator[None]:
    """Call ``before_each(path)`` before each change ``files`` makes to what it stores, while the block runs.

    What :meth:`~trackpoint.plugins.testing.BackendTestBase.intercept_raw_writes` asks of a harness, for a
    backend built on a :class:`~trackpoint.backends.stores.FileLayer` (``BundleBackend``, ``ZarrBackend``):
    the kit's default finds the layer as ``backend.files``; a backend that keeps it elsewhere returns
    ``intercept_file_layer(its_layer, before_each)`` from its own ``intercept_raw_writes``.

    Counted as one change each: a ``put``, a ``write_versioned``, a ``rename``, the ``close`` (and an
    ``abort``) of a sink from ``open_sink``, and every path of a ``delete`` or an ``rmtree``, which are
    carried out one path at a time so that a crash can fall between two of them, as it can between the
    requests of a store's batch delete. A call made inside another (a ``put`` that writes through
    ``open_sink``) counts once, as the outer call. When ``before_each`` raises, the change is not made.

    Parameters
    ----------
    files
        The file layer; its methods are replaced on this instance only, and restored on exit.
    before_each
        Called in the thread about to make the change, with the path it changes.
    """
    if not hasattr(files, "__dict__"):
        raise TypeError(f"{type(files).__name__} keeps no instance attributes; its writes cannot be intercepted")
    real = {name: getattr(files, name) for name in _WRITES}
    shadowed = {name: files.__dict__[name] for name in _WRITES if name in files.__dict__}
    depth = threading.local()

    @contextlib.contextmanager
    def inner() -> Iterator[None]:
        # Calls the layer makes inside an intercepted one are parts of that one change.
        depth.n = getattr(depth, "n", 0) + 1
        try:
            yield
        finally:
            depth.n -= 1

    def outermost() -> bool:
        return getattr(depth, "n", 0) == 0

    def one_change(name: str, what: Callable[..., str]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if outermost():
                before_each(what(*args))
            with inner():
                return real[name](*args, **kwargs)

        return call

    def delete(paths: Sequence[str]) -> None:
        if not outermost():
            return real["delete"](paths)  # type: ignore[no-any-return]
        for path in paths:
            before_each(path)
            with inner():
                real["delete"]([path])
        return None

    def rmtree(directory: str) -> None:
        if not outermost():
            return real["rmtree"](directory)  # type: ignore[no-any-return]
        for path in files.find(directory):
            before_each(path)
            with inner():
                real["delete"]([path])
        with inner():
            real["rmtree"](directory)  # what find does not list: the emptied directories
        return None

    def open_sink(path: str, *, create_only: bool = False) -> FileSink:
        sink: FileSink = real["open_sink"](path, create_only=create_only)
        if not outermost():
            return sink
        return _InterceptedSink(sink, path, before_each, inner)

    replacements: dict[str, Any] = {
        "put": one_change("put", lambda path, *_: path),
        "write_versioned": one_change("write_versioned", lambda path, *_: path),
        "rename": one_change("rename", lambda src, dst: f"{src} -> {dst}"),
        "delete": delete,
        "rmtree": rmtree,
        "open_sink": open_sink,
    }
    # Instance attributes: the layer's own methods look these names up on the instance (self.put calls
    # self.open_sink), so its internal calls are seen too, and no other instance of the class changes.
    for name, replacement in replacements.items():
        setattr(files, name, replacement)
    try:
        yield
    finally:
        for name in _WRITES:
            if name in shadowed:
                setattr(files, name, shadowed[name])
            else:
                delattr(files, name)


class _InterceptedSink(FileSink):
    """A sink whose ``close`` (the moment its file appears) and ``abort`` are announced first."""

    def __init__(
        self,
        sink: FileSink,
        path: str,
        before_each: Callable[[str], None],
        inner: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._sink = sink
        self._path = path
        self._before_each = before_each
        self._inner = inner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sink.write(data)

    def write_many(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        self._sink.write_many(buffers)

    def close(self) -> None:
        self._before_each(self._path)
        with self._inner():
            self._sink.close()

    def abort(self) -> None:
        # Removing the sink's temporary data is a change too: after a crash it never happens.
        self._before_each(f"discarding the unfinished {self._path}")
        with self._inner():
            self._sink.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)
