"""Chunk objects of the numeric arrays trackpoint writes, encoded and decoded in place.

trackpoint's numeric arrays use one codec chain, ``bytes`` (little-endian) ->
optional compressor (``zstd``, ``blosc``, ``gzip``) -> optional ``crc32c``, and
a row-major chunking in which every chunk is one contiguous run of the
array's bytes (see :func:`~._layout.chunk_shape`). Packed arrays put their
inner chunks into shard objects (``sharding_indexed``, index at the end).
Written and read here, a chunk goes from the caller's array to the store and
back without zarr's asynchronous pipeline: no intermediate copies when
uncompressed, and no buffers beyond one chunk. The objects are byte for byte
what zarr-python writes for the same metadata, so plain zarr reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from trackpoint import _paths
from trackpoint._crc32c import crc32c as _crc
from trackpoint.backends.stores import FileLayer, FileSink
from trackpoint.backends.zarr._options import ZarrOptions
from trackpoint.errors import DataLossError

__all__ = ["Codec", "ContiguousChunks", "read_packed", "write_chunks", "write_shard_object"]

#: Uncompressed chunks are checksummed and written in pieces of this size (see Codec.write).
_PIECE: Final = 4 << 20
#: Shard-index entry of an inner chunk that was never written.
_MISSING: Final = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Codec:
    """The codec chain after ``bytes``: an optional numcodecs compressor, then an optional CRC32C."""

    compressor: Any | None
    checksum: bool

    @classmethod
    def from_options(cls, opts: ZarrOptions, itemsize: int) -> Codec:
        """The chain :func:`~._layout.codec_metadata` declares for ``opts`` (``itemsize`` for blosc's shuffle)."""
        level = opts.compression_level
        compressor: Any = None
        if opts.compressor == "none":
            return cls(None, opts.checksum)
        # numcodecs only when compressing: importing it costs more than a small save.
        import numcodecs

        if opts.compressor == "zstd":
            compressor = numcodecs.Zstd(level=3 if level is None else level)
        elif opts.compressor == "blosc":
            compressor = numcodecs.Blosc(
                cname="lz4", clevel=5 if level is None else level, shuffle=numcodecs.Blosc.SHUFFLE, blocksize=0
            )
        elif opts.compressor == "gzip":
            compressor = numcodecs.GZip(level=6 if level is None else level)
        return cls(compressor, opts.checksum)

    @classmethod
    def from_metadata(cls, codecs: Sequence[Mapping[str, Any]]) -> Codec | None:
        """The chain of an array's ``codecs`` metadata; ``None`` for one trackpoint does not write."""
        names = [c.get("name") for c in codecs]
        if not names or names[0] != "bytes" or codecs[0].get("configuration", {}).get("endian", "little") != "little":
            return None
        rest = list(codecs[1:])
        checksum = bool(rest) and rest[-1].get("name") == "crc32c"
        if checksum:
            rest.pop()
        if not rest:
            return cls(None, checksum)
        if len(rest) != 1:
            return None
        import numcodecs

        # Decoding needs no parameters: each of these formats describes itself.
        decoders = {"zstd": numcodecs.Zstd, "gzip": numcodecs.GZip, "blosc": numcodecs.Blosc}
        factory = decoders.get(str(rest[0].get("name")))
        return None if factory is None else cls(factory(), checksum)

    def write(self, sink: FileSink, values: np.ndarray[Any, Any], padding: int = 0) -> int:
        """Write the stored object of the 1-D contiguous ``values`` followed by ``padding`` zero bytes; return its size.

        Uncompressed, ``values`` itself is written, nothing is copied, in
        pieces of ``_PIECE`` bytes, each checksummed just before it is
        written: the kernel's copy then reads bytes still in the CPU's cache,
        where a whole 16 MiB chunk checksummed first was read from memory
        twice.
        """
        pieces: list[Any]
        if self.compressor is not None:
            if padding:
                values = np.concatenate([values.view(np.uint8), np.zeros(padding, np.uint8)]).view(values.dtype)
            pieces = [self.compressor.encode(values)]
        else:
            data = values.data.cast("B")
            pieces = [data[start : start + _PIECE] for start in range(0, len(data), _PIECE)]
            if padding:
                pieces.append(bytes(padding))
        crc = 0
        size = 0
        for piece in pieces:
            if self.checksum:
                crc = _crc(piece, crc)
            sink.write(piece)
            size += memoryview(piece).nbytes
        if self.checksum:
            sink.write(crc.to_bytes(4, "little"))
            size += 4
        return size

    def decode_into(self, raw: memoryview, out: memoryview, where: str) -> None:
        """Decode the stored object ``raw`` into ``out`` (exactly its size); bad bytes raise :class:`DataLossError`."""
        payload = self._verified(raw, where)
        if self.compressor is None:
            if len(payload) != len(out):
                raise DataLossError(f"zarr: {where} holds {len(payload)} bytes, expected {len(out)}")
            out[:] = payload
            return
        try:
            got = self.compressor.decode(payload)
        except Exception as exc:
            raise DataLossError(f"zarr: {where} does not decompress ({type(exc).__name__}: {exc})") from exc
        got_view = memoryview(got).cast("B")
        if len(got_view) != len(out):
            raise DataLossError(f"zarr: {where} decompresses to {len(got_view)} bytes, expected {len(out)}")
        out[:] = got_view

    def _verified(self, raw: memoryview, where: str) -> memoryview:
        if not self.checksum:
            return raw
        if len(raw) < 4:
            raise DataLossError(f"zarr: {where} is truncated ({len(raw)} bytes)")
        if _crc(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise DataLossError(f"zarr: {where} fails its CRC32C checksum")
        return raw[:-4]

    def check_in_place(self, pieces: Sequence[memoryview], crc: bytes, where: str) -> None:
        """Verify an uncompressed chunk read straight into its destination (and padding), CRC read apart."""
        value = 0
        for p in pieces:
            value = _crc(p, value)
        if self.checksum and value != int.from_bytes(crc, "little"):
            raise DataLossError(f"zarr: {where} fails its CRC32C checksum")


@dataclass(frozen=True, slots=True)
class ContiguousChunks:
    """A row-major chunking in which each chunk is one contiguous byte run of the array.

    Chunks have extent 1 on the axes before ``axis``, ``rows`` on ``axis`` and
    the whole extent after it, which is how :func:`~._layout.chunk_shape` cuts.
    Chunk keys join their grid position with ``separator`` (Zarr's ``default``
    key encoding).
    """

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    axis: int
    itemsize: int
    separator: str

    @classmethod
    def of(cls, shape: Sequence[int], chunks: Sequence[int], itemsize: int, separator: str) -> ContiguousChunks | None:
        """The chunking, or ``None`` when its chunks are not contiguous runs (not written by trackpoint)."""
        shape_t, chunks_t = tuple(int(d) for d in shape), tuple(int(c) for c in chunks)
        if len(shape_t) != len(chunks_t):
            return None
        axis = next((i for i, c in enumerate(chunks_t) if c != 1), max(0, len(shape_t) - 1))
        for d in range(axis + 1, len(shape_t)):
            if chunks_t[d] != max(1, shape_t[d]):
                return None
        return cls(shape_t, chunks_t, axis, itemsize, separator)

    def runs(self) -> list[tuple[str, int, int, int]]:
        """``(chunk key, byte offset, bytes in the array, bytes stored)`` per chunk, in byte order."""
        if not self.shape:
            return [("c", 0, self.itemsize, self.itemsize)]
        if math.prod(self.shape) == 0:
            return []
        inner = self.itemsize * math.prod(self.shape[self.axis + 1 :])
        rows, step = self.shape[self.axis], self.chunks[self.axis]
        tail = (0,) * (len(self.shape) - self.axis - 1)
        out = []
        offset = 0
        for lead in np.ndindex(*self.shape[: self.axis]):
            for r in range(-(-rows // step)):
                n = min(step, rows - r * step) * inner
                key = self.separator.join(map(str, ("c", *lead, r, *tail)))
                out.append((key, offset, n, step * inner))
                offset += n
        return out


def write_chunks(
    files: FileLayer,
    directory: str,
    values: np.ndarray[Any, Any],
    grid: ContiguousChunks,
    codec: Codec,
    pool: Executor,
) -> list[Future[None]]:
    """Start writing every chunk of the C-contiguous ``values`` (storage dtype) below ``directory``.

    Chunks are written by ``pool``, each its own object: durable one by one
    (a local sink fsyncs each file), so several at once keep the device busy.
    Uncompressed, a job holds only a view of ``values``; compressed, its
    encoded bytes while it runs.
    """
    flat = values.reshape(-1).view(np.uint8)
    made: set[str] = set()
    jobs = []
    for key, offset, n, stored in grid.runs():
        path = _paths.join(directory, key)
        parent = _paths.dirname(path)
        if parent not in made:
            files.makedirs(parent)
            made.add(parent)
        jobs.append(
            pool.submit(_write_chunk, files, path, flat[offset : offset + n].view(values.dtype), stored - n, codec)
        )
    return jobs


def _write_chunk(files: FileLayer, path: str, values: np.ndarray[Any, Any], padding: int, codec: Codec) -> None:
    # Zarr stores an edge chunk at full size, padded with the fill value 0.
    with files.open_sink(path) as sink:
        codec.write(sink, values, padding)


def read_chunks(
    files: FileLayer,
    directory: str,
    out: np.ndarray[Any, Any],
    grid: ContiguousChunks,
    codec: Codec,
    runs: Sequence[tuple[str, int, int, int]] | None = None,
    sizes_of: Callable[[list[str]], list[int | None]] | None = None,
) -> None:
    """Fill the C-contiguous ``out`` (storage dtype view) from the chunks below ``directory``.

    ``runs`` (default: every chunk of ``grid``) reads some chunks only, each at
    its byte offset within ``out``. The stored sizes of uncompressed chunks,
    checked before their reads, are asked together from ``sizes_of``
    (default: ``files.sizes``; on an object store each is a round trip).
    """
    runs = grid.runs() if runs is None else runs
    flat = out.reshape(-1).view(np.uint8).data
    paths = [_paths.join(directory, run[0]) for run in runs]
    sizes = (sizes_of or files.sizes)(paths) if codec.compressor is None else [None] * len(paths)
    for (_, offset, n, stored), path, size in zip(runs, paths, sizes, strict=True):
        where = f"chunk {path!r}"
        if codec.compressor is None:
            # Straight into the destination; only an edge chunk's padding and the CRC land elsewhere.
            pad = memoryview(bytearray(stored - n))
            crc = bytearray(4 if codec.checksum else 0)
            if size != stored + len(crc):
                raise DataLossError(f"zarr: {where} holds {size} bytes, expected {stored + len(crc)}")
            dest = flat[offset : offset + n]
            files.read_ranges(path, [(0, dest), (n, pad), (stored, memoryview(crc))])
            codec.check_in_place([dest, pad], bytes(crc), where)
            continue
        raw = files.read(path)
        if n == stored:
            codec.decode_into(memoryview(raw), flat[offset : offset + n], where)
        else:
            whole = bytearray(stored)
            codec.decode_into(memoryview(raw), memoryview(whole), where)
            flat[offset : offset + n] = memoryview(whole)[:n]


def write_shard_object(
    files: FileLayer, path: str, window: np.ndarray[Any, Any], inner: int, per_shard: int, codec: Codec
) -> None:
    """Write ``window`` (bytes of one shard, maybe short at the array's end) as a sharded object at ``path``.

    Inner chunks are padded to ``inner`` bytes; those past the array's end
    are absent, their index entries all ones. The index (offset, length per
    inner chunk, little-endian uint64) follows the chunks, CRC32C last.
    """
    index = np.full((per_shard, 2), _MISSING, dtype="<u8")
    pos = 0
    with files.open_sink(path) as sink:
        for j in range(-(-window.size // inner)):
            piece = window[j * inner : (j + 1) * inner]
            if piece.size < inner:
                padded = np.zeros(inner, dtype=np.uint8)
                padded[: piece.size] = piece
                piece = padded
            size = codec.write(sink, piece)
            index[j] = (pos, size)
            pos += size
        raw = index.tobytes()
        sink.write(raw)
        sink.write(_crc(raw).to_bytes(4, "little"))


def read_packed(
    files: FileLayer,
    directory: str,
    start: int,
    stop: int,
    shard: int,
    inner: int,
    codec: Codec,
    separator: str,
    scratch: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """Bytes ``[start, stop)`` of the packed array below ``directory`` (shards of ``shard`` bytes).

    Shard objects are named ``c``, ``separator`` and their number.

    The inner chunks the range touches are read whole, in array order, into
    one buffer: ``scratch`` (a uint8 array) when it is large enough, and the
    result is then a view into it, to be used before ``scratch`` is passed
    again. Uncompressed chunks are read in place and their CRCs checked there:
    no zero-filled buffers, no decode copy.
    """
    if stop <= start:
        return np.empty(0, dtype=np.uint8)
    first, last = start // inner, -(-stop // inner)  # inner chunks, numbered across the array
    size = (last - first) * inner
    buf = scratch[:size] if scratch is not None and scratch.size >= size else np.empty(size, dtype=np.uint8)
    view = buf.data
    plain = codec.compressor is None
    tail = 4 if codec.checksum else 0
    per_shard = shard // inner
    for k in range(first // per_shard, (last - 1) // per_shard + 1):
        path = _paths.join(directory, f"c{separator}{k}")
        index = _shard_index(files, path, per_shard).tolist()
        ranges: list[tuple[int, memoryview]] = []
        chunks: list[tuple[int, memoryview, bytearray]] = []  # (inner chunk, its place in buf, CRC or raw bytes)
        for g in range(max(first, k * per_shard), min(last, (k + 1) * per_shard)):
            j = g - k * per_shard
            offset, stored = index[j]
            if offset == _MISSING:
                raise DataLossError(f"zarr: inner chunk {j} of {path!r} is missing")
            dest = view[(g - first) * inner : (g - first + 1) * inner]
            if plain:
                if stored != inner + tail:
                    raise DataLossError(
                        f"zarr: inner chunk {j} of {path!r} holds {stored} bytes, expected {inner + tail}"
                    )
                crc = bytearray(tail)
                ranges.append((offset, dest))
                if tail:
                    ranges.append((offset + inner, memoryview(crc)))
                chunks.append((j, dest, crc))
            else:
                raw = bytearray(stored)
                ranges.append((offset, memoryview(raw)))
                chunks.append((j, dest, raw))
        files.read_ranges(path, ranges)
        for j, dest, got in chunks:
            where = f"inner chunk {j} of {path!r}"
            if not plain:
                codec.decode_into(memoryview(got), dest, where)
            elif tail:
                codec.check_in_place([dest], bytes(got), where)
    return buf[start - first * inner : stop - first * inner]


def _shard_index(files: FileLayer, path: str, per_shard: int) -> np.ndarray[Any, Any]:
    size = files.size(path)
    n = per_shard * 16 + 4
    if size is None:
        raise DataLossError(f"zarr: shard {path!r} is missing")
    if size < n:
        raise DataLossError(f"zarr: shard {path!r} is truncated ({size} bytes)")
    raw = bytearray(n)
    files.read_into(path, size - n, memoryview(raw))
    if _crc(memoryview(raw)[:-4]) != int.from_bytes(raw[-4:], "little"):
        raise DataLossError(f"zarr: the shard index of {path!r} fails its CRC32C checksum")
    index = np.frombuffer(bytes(raw[:-4]), dtype="<u8").reshape(per_shard, 2)
    ends = [int(o) + int(s) for o, s in index if o != _MISSING]
    if ends and max(ends) > size - n:
        raise DataLossError(f"zarr: the shard index of {path!r} points past its chunks")
    return index
