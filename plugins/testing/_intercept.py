"""The raw writes of a file layer, intercepted: where the kit's crash tests stop a save."""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from trackpoint.backends.stores import FileLayer, FileSink

if TYPE_CHECKING:
    from trackpoint.backends.stores import ObjectStore

__all__ = ["intercept_file_layer"]

#: The methods of a file layer that change what it stores. The others only read, or handle directories
#: (``makedirs``, ``remove_dir``, ``sync_dir``), which hold no data a reader could see half written.
_WRITES = ("put", "write_versioned", "rename", "delete", "rmtree", "open_sink")

#: The client calls of an object store that send data or change what it stores. One change of the layer
#: may take several of them (an upload's begin, parts and finish; a store that replaces an object by deleting
#: it first), and a crash can fall between any two. The other client calls only read.
_CLIENT_WRITES = ("object_put", "object_delete", "upload_begin", "upload_part", "upload_finish", "upload_abort")


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

    On an :class:`~trackpoint.backends.stores.ObjectStore` each client call that writes is announced too,
    also inside a change of the layer: ``object_put``, every key of an ``object_delete`` (carried out one
    key at a time) and the four ``upload_*`` calls that send or finish an upload. A store may make one
    change of the layer in several client calls (an upload's parts and its completion; a replacement as a
    delete and a put), and a crash between two of them is what a store must survive. A client call is not
    stopped half way: two requests it sends itself count as one. These announcements come from the thread
    the client call runs in (the store's event loop or its thread pool), after the announcement of the
    layer's change they belong to, which comes from the calling thread; a crash before the first of them
    leaves what a crash before that change leaves.

    Parameters
    ----------
    files
        The file layer; its methods (and an object store's client calls) are replaced on this instance
        only, and restored on exit.
    before_each
        Called in the thread about to make the change, with the path it changes.
    """
    if not hasattr(files, "__dict__"):
        raise TypeError(f"{type(files).__name__} keeps no instance attributes; its writes cannot be intercepted")
    real = {name: getattr(files, name) for name in _WRITES}
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
    from trackpoint.backends.stores import ObjectStore

    if isinstance(files, ObjectStore):
        replacements.update(_client_writes(files, before_each))
    names = tuple(replacements)
    shadowed = {name: files.__dict__[name] for name in names if name in files.__dict__}
    # Instance attributes: the layer's own methods look these names up on the instance (self.put calls
    # self.open_sink, an object store calls its client through getattr(self, name)), so its internal calls
    # are seen too, and no other instance of the class changes.
    for name, replacement in replacements.items():
        setattr(files, name, replacement)
    try:
        yield
    finally:
        for name in names:
            if name in shadowed:
                setattr(files, name, shadowed[name])
            else:
                delattr(files, name)


def _client_writes(store: ObjectStore, before_each: Callable[[str], None]) -> dict[str, Callable[..., Any]]:
    """Stand-ins for the client calls of ``store`` that write, each announcing itself before its request.

    Only the calls the store's class implements are replaced. Each stand-in is a coroutine function where
    the store's call is one, since the store decides per class whether it awaits a call or runs it in its
    thread pool.
    """
    from trackpoint.backends.stores import ObjectStore

    cls = type(store)
    # Uploads are announced by the object they create: their later calls get only the upload's state.
    uploads: dict[int, str] = {}
    lock = threading.Lock()

    def target(call: str, args: tuple[Any, ...]) -> str:
        if call in ("object_put", "object_delete", "upload_begin"):  # (bucket, key, ...)
            return f"{call} of {store.url(args[0], args[1])}"
        with lock:
            where = uploads.get(id(args[0]), "an upload")
        return f"{call} of {where}" if call != "upload_part" else f"upload_part {args[1]} of {where}"

    def began(args: tuple[Any, ...], state: Any) -> None:
        with lock:
            uploads[id(state)] = store.url(args[0], args[1])

    out: dict[str, Callable[..., Any]] = {}
    for call in _CLIENT_WRITES:
        if getattr(cls, call) is getattr(ObjectStore, call):
            continue  # optional and not implemented: never called
        real = getattr(store, call)
        if inspect.iscoroutinefunction(getattr(cls, call)):
            out[call] = _async_stand_in(call, real, before_each, target, began)
        else:
            out[call] = _sync_stand_in(call, real, before_each, target, began)
    return out


def _sync_stand_in(
    call: str,
    real: Callable[..., Any],
    before_each: Callable[[str], None],
    target: Callable[[str, tuple[Any, ...]], str],
    began: Callable[[tuple[Any, ...], Any], None],
) -> Callable[..., Any]:
    if call == "object_delete":

        def delete(bucket: str, keys: Sequence[str]) -> None:
            # One key at a time: a crash can fall between two deletions of one batch request.
            for key in keys:
                before_each(target(call, (bucket, key)))
                real(bucket, [key])

        return delete

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        before_each(target(call, args))
        result = real(*args, **kwargs)
        if call == "upload_begin":
            began(args, result)
        return result

    return stand_in


def _async_stand_in(
    call: str,
    real: Callable[..., Any],
    before_each: Callable[[str], None],
    target: Callable[[str, tuple[Any, ...]], str],
    began: Callable[[tuple[Any, ...], Any], None],
) -> Callable[..., Any]:
    if call == "object_delete":

        async def delete(bucket: str, keys: Sequence[str]) -> None:
            for key in keys:
                before_each(target(call, (bucket, key)))
                await real(bucket, [key])

        return delete

    async def stand_in(*args: Any, **kwargs: Any) -> Any:
        before_each(target(call, args))
        result = await real(*args, **kwargs)
        if call == "upload_begin":
            began(args, result)
        return result

    return stand_in


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
