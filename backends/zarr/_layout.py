"""The trackpoint Zarr layout: names, dtypes, codecs and the root document.

Shared by the writer (:mod:`._pack`), the reader (:mod:`._reader`) and the
commit strategies (:mod:`._commit`). A checkpoint ``P`` is the Zarr v3 group
``P.zarr`` whose ``zarr.json`` carries ``attributes["trackpoint"]`` (the
tensor table, the object graph, where the data lives) and the consolidated
metadata of every array, under a CRC32C over both.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import numpy as np

from trackpoint import dtypes as core_dtypes
from trackpoint._crc32c import crc32c
from trackpoint.backends.zarr._options import ZarrOptions
from trackpoint.errors import (
    CheckpointError,
    DataLossError,
    InvalidCheckpointError,
    StorageError,
    StoragePermissionError,
    UnsupportedDTypeError,
)

#: Value of ``attributes["trackpoint"]["format"]`` in a checkpoint's root group.
FORMAT_NAME: Final = "trackpoint-zarr"
#: Layout version written; readers reject newer ones.
FORMAT_VERSION: Final = 1
#: A checkpoint ``P`` is the group ``P.zarr``.
SUFFIX: Final = ".zarr"
#: Name of a Zarr node's metadata document.
ZARR_JSON: Final = "zarr.json"
#: Tensor-table dtype name of string tensors.
STRING: Final = "bytes"
#: Separator of the chunk keys written (Zarr's ``default`` key encoding): ``c.0.1``, not ``c/0/1``.
#: Every chunk sits in its array's own directory, so a local save creates and makes durable one
#: directory per array instead of two or more. Readers take both separators.
CHUNK_SEPARATOR: Final = "."
#: Separators the fast reader knows; ``"/"`` is the one 0.1 wrote.
CHUNK_SEPARATORS: Final = (".", "/")


def chunk_key_encoding() -> dict[str, Any]:
    """The ``chunk_key_encoding`` of every array written (a new dict: it goes into a metadata document)."""
    return {"name": "default", "configuration": {"separator": CHUNK_SEPARATOR}}


# ml_dtypes types have no Zarr v3 data type in zarr-python 3.1 (the names the zarr-extensions registry
# gives some of them, "int4", "float8_e4m3fn", ..., no zarr-python release reads): each is stored as the
# unsigned integer of its width, its bits unchanged, with its name in the tensor table and an attribute.
# This format holds every type the core does, those TensorFlow has no DataType for too. ml_dtypes is
# imported only when one is met (numpy reports most as kind "V"): importing it costs more than a small save.
ML_DTYPE_NAMES: Final = core_dtypes.ML_DTYPE_NAMES
# ml_dtypes' complex types: two 16-bit halves, real part first, each little-endian as stored. Viewed as one
# 32-bit integer they are byte-swapped whole on a big-endian host, which would put the imaginary part first.
_ML_COMPLEX: Final = frozenset({"complex32", "bcomplex32"})


@functools.lru_cache(maxsize=1)
def ml_dtypes_by_name() -> dict[str, np.dtype[Any]]:
    """The ml_dtypes types this format stores that the installed ml_dtypes has, by name."""
    import ml_dtypes

    return {name: np.dtype(getattr(ml_dtypes, name)) for name in ML_DTYPE_NAMES if hasattr(ml_dtypes, name)}


_NUMERIC_KINDS: Final = {"b": 1, "i": 8, "u": 8, "f": 8, "c": 16}


@contextlib.contextmanager
def quiet_vlen() -> Iterator[None]:
    """Silence zarr-python's warning that variable-length bytes are not in the Zarr v3 spec yet.

    docs/backends/zarr.md says so once. The filter is narrow, so
    ``catch_warnings``' lack of thread safety can at worst leave this one
    warning silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The data type \(VariableLengthBytes\(\)\)")
        yield


# ---------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------


def dtype_name(dtype: np.dtype[Any], key: str) -> str:
    """The name recorded in the tensor table for ``dtype`` (``"bytes"`` for strings)."""
    name = _known_dtype_name(dtype)
    if name is None:
        raise UnsupportedDTypeError(
            f"zarr: tensor {key!r} has dtype {dtype}, which a checkpoint cannot hold; use bool, (u)int8-64, "
            "float16/32/64, complex64/128, bytes or an ml_dtypes type (bfloat16, float8_e4m3fn, int4, ...)"
        )
    return name


@functools.lru_cache(maxsize=64)
def _known_dtype_name(dtype: np.dtype[Any]) -> str | None:
    # Cached: a checkpoint of 20,000 tensors asks for a handful of dtypes.
    if core_dtypes.is_string(dtype):
        return STRING
    # Not by kind: ml_dtypes gives float8_e5m2 kind "f" (and "<f1", which numpy cannot hold in a buffer). By the
    # type's module first, so that numpy's own types do not import ml_dtypes.
    if core_dtypes.is_ml_dtype(dtype):
        for name, dt in ml_dtypes_by_name().items():
            if dtype == dt:
                return name
    limit = _NUMERIC_KINDS.get(dtype.kind)
    if limit is None or dtype.itemsize > limit or dtype.fields is not None:
        return None
    return dtype.newbyteorder("=").name


def dtype_of(name: str, where: str) -> np.dtype[Any]:
    """The numpy dtype of a tensor-table dtype name."""
    if name == STRING:
        return core_dtypes.string
    if name in ML_DTYPE_NAMES:
        dt = ml_dtypes_by_name().get(name)
        if dt is None:
            import ml_dtypes

            raise InvalidCheckpointError(
                f"zarr: {where} records dtype {name!r}, which the installed ml_dtypes {ml_dtypes.__version__} "
                "lacks; upgrade ml_dtypes to read it"
            )
        return dt
    try:
        dt = np.dtype(name)
    except TypeError as exc:
        raise InvalidCheckpointError(f"zarr: {where} records unknown dtype {name!r}") from exc
    if dt.kind not in _NUMERIC_KINDS:
        raise InvalidCheckpointError(f"zarr: {where} records unsupported dtype {name!r}")
    return dt


@functools.lru_cache(maxsize=64)
def little_endian(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """``dtype`` with little-endian byte order: how packed bytes are viewed (made once per dtype, per tensor)."""
    return dtype.newbyteorder("<")


@functools.lru_cache(maxsize=64)
def storage_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The little-endian dtype the array is stored with (ml_dtypes types as unsigned ints).

    Raises
    ------
    UnsupportedDTypeError
        ``dtype`` is ml_dtypes' complex32 or bcomplex32 and this host is big-endian (see ``_ML_COMPLEX``).
    """
    # Not by kind: float8_e5m2 has kind "f" and complex32 kind "c". By the type's module, as _known_dtype_name.
    if core_dtypes.is_ml_dtype(dtype) and any(dtype == dt for dt in ml_dtypes_by_name().values()):
        if dtype.name in _ML_COMPLEX and sys.byteorder == "big":
            raise UnsupportedDTypeError(
                f"zarr: dtype {dtype.name} is stored as two little-endian halves, which this big-endian host "
                "would swap as one 32-bit value; convert it to complex64 (.astype(numpy.complex64)) first"
            )
        return np.dtype(f"<u{dtype.itemsize}")
    return dtype.newbyteorder("<")


def to_storage(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``array`` as C-ordered little-endian values of its storage dtype (bit patterns kept).

    A view, not a copy, when ``array`` is already C-contiguous and native
    little-endian (the common case).
    """
    storage = storage_dtype(array.dtype)
    native = np.asarray(array, dtype=array.dtype.newbyteorder("="), order="C")
    return native.view(storage.newbyteorder("=")).astype(storage, copy=False)


def as_bytes_array(array: np.ndarray[Any, Any], key: str) -> np.ndarray[Any, Any]:
    """An object array of ``bytes`` from one of ``str``/``bytes`` (what string tensors hold)."""
    out = np.empty(array.shape, dtype=object)
    for idx, x in np.ndenumerate(array):
        if isinstance(x, str):
            x = x.encode("utf-8")
        if not isinstance(x, (bytes, bytearray, memoryview, np.bytes_)):
            raise UnsupportedDTypeError(
                f"zarr: string tensor {key!r} holds a {type(x).__name__} at {idx}; only bytes or str are allowed"
            )
        out[idx] = bytes(x)
    return out


# ---------------------------------------------------------------------------
# chunks and codecs
# ---------------------------------------------------------------------------


def chunk_shape(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> tuple[int, ...]:
    """Row-major chunking: whole trailing dimensions, leading ones cut so a chunk stays within ``chunk_bytes``.

    The cut axis is split into equal parts rather than into maximal ones: Zarr
    stores edge chunks at full size, so 17 rows in chunks of 16 would write
    32 rows, while two chunks of 9 write 18.
    """
    chunks = [max(1, d) for d in shape]
    for i in range(len(shape)):
        inner = itemsize
        for d in chunks[i + 1 :]:
            inner *= d
        if inner <= chunk_bytes:
            most = max(1, chunk_bytes // inner)
            parts = -(-chunks[i] // most)
            chunks[i] = -(-chunks[i] // parts)
            return tuple(chunks)
        chunks[i] = 1
    return tuple(chunks)


def codecs(opts: ZarrOptions) -> list[Any]:
    """The zarr codecs after ``bytes`` for ``opts``: the compressor, then the checksum."""
    from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec, GzipCodec, ZstdCodec

    out: list[Any] = []
    level = opts.compression_level
    if opts.compressor == "zstd":
        out.append(ZstdCodec(level=3 if level is None else level))
    elif opts.compressor == "blosc":
        out.append(BloscCodec(cname="lz4", clevel=5 if level is None else level, shuffle=BloscShuffle.shuffle))
    elif opts.compressor == "gzip":
        out.append(GzipCodec(level=6 if level is None else level))
    if opts.checksum:
        # Last, so it covers the compressed bytes as stored.
        out.append(Crc32cCodec())
    return out


def codec_metadata(opts: ZarrOptions, itemsize: int) -> list[dict[str, Any]]:
    """The ``codecs`` metadata of a numeric chunk: ``bytes``, the compressor, the checksum.

    The same documents zarr-python writes for :func:`codecs` (a test compares them).
    """
    out: list[dict[str, Any]] = [
        {"name": "bytes", "configuration": {"endian": "little"}} if itemsize > 1 else {"name": "bytes"}
    ]
    level = opts.compression_level
    if opts.compressor == "zstd":
        out.append({"name": "zstd", "configuration": {"level": 3 if level is None else level, "checksum": False}})
    elif opts.compressor == "blosc":
        blosc = {"typesize": itemsize, "cname": "lz4", "clevel": 5 if level is None else level}
        out.append({"name": "blosc", "configuration": {**blosc, "shuffle": "shuffle", "blocksize": 0}})
    elif opts.compressor == "gzip":
        out.append({"name": "gzip", "configuration": {"level": 6 if level is None else level}})
    if opts.checksum:
        out.append({"name": "crc32c"})
    return out


def array_metadata(
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    chunks: tuple[int, ...],
    codecs: list[dict[str, Any]],
    attributes: dict[str, Any],
) -> dict[str, Any]:
    """The ``zarr.json`` document of a numeric Zarr v3 array (fill value 0), as zarr-python writes it."""
    fill: Any = False if dtype.kind == "b" else 0.0 if dtype.kind == "f" else [0.0, 0.0] if dtype.kind == "c" else 0
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": chunk_key_encoding(),
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attributes,
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def packed_metadata(total: int, shard: int, inner: int, opts: ZarrOptions) -> dict[str, Any]:
    """The ``zarr.json`` document of a packed ``uint8`` array: shards of ``shard`` bytes, inner chunks of ``inner``."""
    sharding = {
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": [inner],
            "codecs": codec_metadata(opts, 1),
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
            "index_location": "end",
        },
    }
    return array_metadata((total,), np.dtype("uint8"), (shard,), [sharding], {"trackpoint_packed": True})


# ---------------------------------------------------------------------------
# the root document
# ---------------------------------------------------------------------------


def group_metadata(attributes: dict[str, Any]) -> dict[str, Any]:
    """The ``zarr.json`` document of a Zarr v3 group."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes}


def root_checksum(attrs: Mapping[str, Any], metadata: Mapping[str, Any]) -> int:
    """CRC32C over a canonical JSON form of the tensor table and the array metadata the reader uses."""
    body = {"attributes": {k: v for k, v in attrs.items() if k != "checksum"}, "metadata": metadata}
    return crc32c(_canonical(body))


def _canonical(value: Any) -> bytes:
    """The canonical JSON encoding (sorted keys, no spaces, ASCII) that ``checksum`` covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


#: Root group attribute (beside ``trackpoint``, so readers of the canonical ``checksum`` never see it): the
#: CRC32C of the root document's own bytes, taken with this value as eight zeros, in eight hex digits. A
#: reader that finds the bytes as written skips re-encoding the tensor table for ``checksum``: about
#: 80 ms for 20,000 tensors. A document rewritten by another tool (reformatted, attributes added) fails
#: this check only; ``checksum`` then decides, as it always did.
RAW_CHECKSUM: Final = "trackpoint_raw_crc32c"
_RAW_FIELD: Final = b'"' + RAW_CHECKSUM.encode() + b'":"'
_RAW_ZEROS: Final = b"00000000"


def _raw_checksum(pieces: Iterable[bytes | memoryview]) -> str:
    """The raw checksum of the document made of ``pieces``, its own value written as zeros in them."""
    crc = 0
    for piece in pieces:
        crc = crc32c(piece, crc)
    return f"{crc:08x}"


def _raw_intact(raw: bytes, value: object) -> bool:
    """Whether ``raw`` is byte for byte the document whose raw checksum is ``value``."""
    at = raw.find(_RAW_FIELD)
    if not isinstance(value, str) or at < 0:
        return False
    at += len(_RAW_FIELD)
    # The first such field is the one written (JSON strings cannot hold an unescaped quote); a document
    # with another one first fails here and falls back to the canonical checksum.
    view = memoryview(raw)
    return (
        raw[at : at + len(_RAW_ZEROS)] == value.encode("ascii", "replace")
        and _raw_checksum((view[:at], _RAW_ZEROS, view[at + len(_RAW_ZEROS) :])) == value
    )


def root_document(
    save_id: str, data: str, graph: str | None, tensors: dict[str, Any], arrays: Mapping[str, Any]
) -> bytes:
    """The root ``zarr.json`` of a checkpoint whose arrays live under ``data`` (``""``: the group itself)."""
    metadata: dict[str, Any] = {}
    if data:
        metadata[data] = group_metadata({})
    for name, meta in arrays.items():
        metadata[f"{data}/{name}" if data else name] = meta
    attrs: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "save_id": save_id,
        "data": data,
        "object_graph": graph,
        "tensors": tensors,
    }
    # The tensor table is encoded once, in canonical form, for both the checksum and the document: encoding
    # it twice cost 55 ms of a save of 20,000 tensors. In the document, the attributes appear with
    # "checksum" added in its sorted place (first), and the metadata as encoded. The pieces are joined
    # once: each copy of a 5 MB document costs milliseconds of page faults.
    encoded_attrs, encoded_metadata = _canonical(attrs), _canonical(metadata)
    checksum = 0
    # root_checksum's canonical body, {"attributes": ..., "metadata": ...}, piece by piece.
    for part in (b'{"attributes":', encoded_attrs, b',"metadata":', encoded_metadata, b"}"):
        checksum = crc32c(part, checksum)
    doc = group_metadata({"trackpoint": _ATTRS_SLOT, RAW_CHECKSUM: _RAW_ZEROS.decode()})
    doc["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": _METADATA_SLOT}
    skeleton = json.dumps(doc, separators=(",", ":")).encode()
    head, rest = skeleton.split(_slot(_ATTRS_SLOT), 1)
    middle, tail = rest.split(_slot(_METADATA_SLOT), 1)
    pieces: list[bytes | memoryview] = [
        head,
        b'{"checksum":%d,' % checksum,
        memoryview(encoded_attrs)[1:],
        middle,
        encoded_metadata,
        tail,
    ]
    # The raw checksum's own value, still zeros, is in ``middle``.
    at = middle.index(_RAW_FIELD) + len(_RAW_FIELD)
    pieces[3] = middle[:at] + _raw_checksum(pieces).encode() + middle[at + len(_RAW_ZEROS) :]
    return b"".join(pieces)


#: Stand-ins in the root document's skeleton for the encodings spliced in (see :func:`root_document`).
_ATTRS_SLOT: Final = "\x00trackpoint attributes"
_METADATA_SLOT: Final = "\x00array metadata"


def _slot(name: str) -> bytes:
    return json.dumps(name).encode()


#: Bytes at the start of a root ``zarr.json`` that recognise a checkpoint (see :func:`names_trackpoint`).
HEAD_BYTES: Final = 4096
# The format's name as the root document's attributes give it, in the first hundred or so bytes:
# trackpoint writes its attributes first and their keys sorted ("checksum", "data", "format", ...), and
# zarr-python keeps that order when it rewrites the document (reformatted, attributes added).
_FORMAT_FIELD: Final = re.compile(rb'"format"\s*:\s*"' + re.escape(FORMAT_NAME.encode()) + rb'"')


def names_trackpoint(head: bytes | bytearray) -> bool:
    """Whether ``head``, the start of a root ``zarr.json``, names this format (``False`` may be inconclusive)."""
    return _FORMAT_FIELD.search(head) is not None


def _trackpoint_attrs(doc: Any) -> Any:
    """``attributes["trackpoint"]`` of the parsed document ``doc``; ``None`` when it has none."""
    attributes = doc.get("attributes") if isinstance(doc, dict) else None
    return attributes.get("trackpoint") if isinstance(attributes, dict) else None


def written_by_trackpoint(raw: bytes) -> bool:
    """Whether ``raw``, a whole root ``zarr.json``, is a checkpoint's: not the document of another tool's Zarr node.

    Listings show only these: plain zarr writes groups ``P.zarr`` too, which hold no checkpoint. A root
    that is not JSON counts as a checkpoint's, cut short or damaged: listed, so that its restore (or
    ``trackpoint ls``) reports the damage rather than the checkpoint vanishing.
    """
    if names_trackpoint(raw[:HEAD_BYTES]):
        return True
    try:
        doc = json.loads(raw)
    except ValueError:
        return True
    attrs = _trackpoint_attrs(doc)
    return isinstance(attrs, dict) and attrs.get("format") == FORMAT_NAME


def parse_root(raw: bytes, group: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``trackpoint`` attributes, consolidated array metadata) of a root ``zarr.json``, verified."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        if FORMAT_NAME.encode() in raw:
            # trackpoint's root, cut short or damaged (its attributes, which name the format, come first).
            raise DataLossError(
                f"zarr: the root zarr.json of {group!r} is truncated or damaged ({len(raw)} bytes, not valid JSON: "
                f"{exc}); restore it from a complete copy, or use an older checkpoint"
            ) from exc
        raise InvalidCheckpointError(
            f"zarr: {group!r} is not a trackpoint Zarr checkpoint (its zarr.json is not valid JSON: {exc})"
        ) from exc
    attrs = _trackpoint_attrs(doc)
    if attrs is None:
        node = doc.get("node_type") if isinstance(doc, dict) else None
        node = node if node in ("group", "array") else "node"
        opener = "zarr.open" if node == "node" else f"zarr.open_{node}"
        raise InvalidCheckpointError(
            f"zarr: {group!r} is a Zarr {node} not written by trackpoint (its zarr.json has no "
            f"attributes['trackpoint']), so it holds no checkpoint; read it with zarr itself, "
            f"{opener}({group!r}, mode='r'), or restore from a checkpoint trackpoint saved"
        )
    try:
        raw_value = doc["attributes"].get(RAW_CHECKSUM)
        metadata = doc["consolidated_metadata"]["metadata"]
    except (KeyError, TypeError) as exc:
        raise InvalidCheckpointError(
            f"zarr: {group!r} is not a trackpoint Zarr checkpoint (its zarr.json has attributes['trackpoint'] "
            "but no consolidated metadata)"
        ) from exc
    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT_NAME or not isinstance(metadata, dict):
        raise InvalidCheckpointError(f"zarr: {group!r} is a Zarr group but not a trackpoint checkpoint")
    if not isinstance(attrs.get("version"), int) or attrs["version"] > FORMAT_VERSION:
        raise InvalidCheckpointError(
            f"zarr: {group!r} uses layout version {attrs.get('version')!r}, not one this trackpoint "
            f"reads (up to {FORMAT_VERSION}); upgrade trackpoint"
        )
    if not _raw_intact(raw, raw_value) and attrs.get("checksum") != root_checksum(attrs, metadata):
        raise DataLossError(
            f"zarr: the root zarr.json of {group!r} fails its checksum (the tensor table or array "
            "metadata was altered); restore from another checkpoint"
        )
    return attrs, metadata


# ---------------------------------------------------------------------------
# error translation
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def reading(prefix: str, key: str) -> Iterator[None]:
    """Report any failure reading tensor ``key`` as a trackpoint error naming it."""
    try:
        yield
    except CheckpointError as exc:
        if isinstance(exc, DataLossError) and f"tensor {key!r}" not in str(exc):
            # A chunk's own complaint: say which tensor and checkpoint it belongs to.
            raise DataLossError(
                f"zarr: tensor {key!r} of checkpoint {prefix!r} is corrupted or incomplete ({exc}); "
                "restore from another checkpoint"
            ) from exc
        if isinstance(exc, FileNotFoundError):
            # The tensor table lists it, so a missing piece means a damaged checkpoint.
            raise DataLossError(
                f"zarr: tensor {key!r} of checkpoint {prefix!r} is corrupted or incomplete (missing: {exc}); "
                "restore from another checkpoint"
            ) from exc
        raise
    except FileNotFoundError as exc:
        raise DataLossError(
            f"zarr: tensor {key!r} of checkpoint {prefix!r} is corrupted or incomplete (missing: {exc}); "
            "restore from another checkpoint"
        ) from exc
    except PermissionError as exc:
        raise StoragePermissionError(f"zarr: permission denied reading {key!r} of {prefix!r}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"zarr: failed to read {key!r} of {prefix!r}: {exc}") from exc
    except Exception as exc:
        # zarr reports checksum mismatches, undecodable chunks and missing
        # metadata as ValueError/RuntimeError/its own errors: the bytes are bad.
        raise DataLossError(
            f"zarr: tensor {key!r} of checkpoint {prefix!r} is corrupted or incomplete "
            f"({type(exc).__name__}: {exc}); restore from another checkpoint"
        ) from exc


@contextlib.contextmanager
def writing(prefix: str, key: str) -> Iterator[None]:
    """Report any failure writing tensor ``key`` as a trackpoint error naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except PermissionError as exc:
        raise StoragePermissionError(f"zarr: permission denied writing {key!r} of {prefix!r}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"zarr: failed to write {key!r} of {prefix!r}: {exc}") from exc
    except Exception as exc:
        raise StorageError(f"zarr: failed to write tensor {key!r} of {prefix!r} ({type(exc).__name__}: {exc})") from exc
