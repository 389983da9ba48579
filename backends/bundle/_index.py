"""A bundle's parsed ``.index``: the entries as columns of numbers, checked once when the index is opened.

An index of a model with 10^5 tensors holds 10^5 entries but few distinct
dtype and shape pairs. Each entry is therefore one row of a few numpy arrays
(data file, offset, size, CRC, and the number of its dtype and shape, its
"kind"), and each kind one :class:`Kind` shared by its entries. Per entry,
Python holds only its key and row number, which keeps a large index small and
out of the cyclic garbage collector's way, and lets a read of many tensors
check and locate them with array operations instead of one object each.
"""

from __future__ import annotations

import bisect
import sys
from operator import methodcaller
from typing import Any, Final, NamedTuple

import numpy as np

from trackpoint.backends.bundle._codec import Entry, decode_entries, decode_header
from trackpoint.backends.bundle._dtypes import DT_STRING, READABLE, dtype_from_tf
from trackpoint.backends.bundle._sstable import first_entry, read_table
from trackpoint.errors import CheckpointError, DataLossError
from trackpoint.storage import TensorInfo

__all__ = ["BundleIndex", "Kind", "header_count"]

#: A header claiming more shards than this is treated as corrupt.
_MAX_SHARDS: Final = 1 << 24
#: numpy's limits on an array (``NPY_MAXDIMS`` and ``NPY_MAX_INTP`` bytes).
_MAX_RANK: Final = 64
_MAX_ARRAY_BYTES: Final = sys.maxsize
_MAX_SIZE: Final = 2**63 - 1
_OBJECT: Final = np.dtype(object)
#: What an entry of a type trackpoint cannot read is listed as (it fails when read).
_UNREADABLE: Final = np.dtype(np.uint8)


class Kind(NamedTuple):
    """What the entries of one stored dtype and shape have in common (a model has few of these)."""

    #: The stored TensorFlow ``DataType`` number and shape.
    tf_dtype: int
    shape: tuple[int, ...]
    #: The numpy dtype read into, and whether its bytes must be swapped after reading (ml_dtypes, big-endian).
    dtype: np.dtype[Any]
    swap: bool
    #: Bytes an unsliced entry must record: exact for numbers, a lower bound for strings, -1: not checked.
    nbytes: int
    #: Why no numpy array can hold the tensor (``None`` if one can); such entries are listed but not read.
    problem: str | None
    #: What :meth:`BundleReader.info` returns; ``None`` when the tensor cannot be read (``problem``, or a
    #: type numpy cannot hold).
    info: TensorInfo | None
    #: Whether entries of this kind are read by :meth:`BundleReader.read_many` directly into their arrays
    #: (readable numbers; strings are decoded one by one).
    direct: bool


def _unholdable(shape: tuple[int, ...], dtype: np.dtype[Any]) -> str | None:
    """Why numpy cannot create an array of ``shape`` and ``dtype``, or ``None`` when it can.

    The size checks of an entry compare element counts with byte counts, so a
    zero dimension makes any other dimensions pass them (``[0, 2**40, 2**40]``
    holds no element). numpy still multiplies the non-zero dimensions and the
    item size and refuses the shape, with a plain ValueError at allocation.
    """
    if len(shape) > _MAX_RANK:
        return f"has {len(shape)} dimensions; numpy arrays hold at most {_MAX_RANK}"
    nbytes = dtype.itemsize
    for d in shape:
        if d:
            nbytes *= d
    if nbytes > _MAX_ARRAY_BYTES:
        return f"has shape {shape} of {dtype}, which no numpy array can hold (over 2**63 bytes addressed)"
    return None


def _kind(tf_dtype: int, shape: tuple[int, ...], dtype: np.dtype[Any], swap: bool) -> Kind:
    """The size rule and readability of entries of ``tf_dtype`` and ``shape``.

    ``dtype`` and ``swap`` are :func:`dtype_from_tf`'s answer for ``tf_dtype``, if it is in ``READABLE``.
    """
    # Unreadable types (resource, variant) stay listed and fail only when read.
    readable = tf_dtype in READABLE
    count = 1
    for d in shape:
        count *= d
    if tf_dtype == DT_STRING:
        # Every string takes at least one length byte: this bounds the element array allocated
        # before the bytes are checked.
        nbytes = count + 4 if count else -1
    else:
        nbytes = count * dtype.itemsize if readable else -1
    # Strings are object arrays: one pointer per element.
    problem = _unholdable(shape, _OBJECT if tf_dtype == DT_STRING else dtype)
    readable = readable and problem is None
    info = TensorInfo(dtype, shape) if readable else None
    return Kind(tf_dtype, shape, dtype, swap, nbytes, problem, info, readable and tf_dtype != DT_STRING)


class BundleIndex:
    """The entries of an ``.index`` file, validated: header, data file numbers and sizes against shapes.

    Row ``i`` is the ``i``-th entry after the header. Tensors are found by key
    in :attr:`rows`, the slices of partitioned tensors (keys starting with a NUL
    byte) by their encoded key in :attr:`pieces`.
    """

    def __init__(self, index_bytes: bytes, where: str) -> None:
        table = read_table(index_bytes, where)
        if not table or table[0][0] != b"":
            raise DataLossError(f"{where}: the bundle header entry is missing")
        header = decode_header(table[0][1], where)
        if header.num_shards > _MAX_SHARDS or (header.num_shards == 0 and len(table) > 1):
            raise DataLossError(f"{where}: the header claims an implausible {header.num_shards} data shards")
        self.num_shards: int = header.num_shards
        keys = [k for k, _ in table]
        del keys[0]
        values = [v for _, v in table]
        del values[0], table

        def entry_where(row: int) -> str:
            return f"{where}: entry {keys[row]!r}"

        columns = decode_entries(values, entry_where)
        del values
        first = np.unique(columns.kind, return_index=True)[1].tolist()  # each kind's first row
        #: The distinct dtype and shape pairs, by number.
        # Each stored type's numpy dtype, looked up once (a checkpoint of small tensors has thousands of
        # distinct shapes, and few types).
        dtypes: dict[int, tuple[np.dtype[Any], bool]] = {}
        for (tf_dtype, _), row in zip(columns.kinds, first, strict=True):
            if tf_dtype not in dtypes:
                dtypes[tf_dtype] = (
                    dtype_from_tf(tf_dtype, header.big_endian, entry_where(row))
                    if tf_dtype in READABLE
                    else (_UNREADABLE, False)
                )
        self.kinds: list[Kind] = [_kind(tf_dtype, shape, *dtypes[tf_dtype]) for tf_dtype, shape in columns.kinds]
        #: Per row: its kind's number, data file, offset, size and masked CRC-32C as stored.
        self.kind = columns.kind
        self.shard_id = columns.shard_id
        self.offset = columns.offset
        self.size = columns.size
        self.crc32c = columns.crc32c
        #: The rows of partitioned tensors' full entries, with their slices.
        self.slices = columns.slices
        #: Per row: whether it is the full entry of a partitioned tensor (it has slices, and no data).
        self.sliced = np.zeros(len(keys), bool)
        self.sliced[list(self.slices)] = True
        #: Per kind: whether its entries are read directly into arrays, cannot be read, need swapped bytes.
        self.direct = np.array([k.direct for k in self.kinds], bool)
        self.unreadable = np.array([k.info is None for k in self.kinds], bool)
        self.swap = np.array([k.swap for k in self.kinds], bool)
        self._check(keys, where)
        # Keys are sorted (the table checks), so the slices' keys, which start with a NUL byte, come first.
        split = bisect.bisect_left(keys, b"\x01")
        #: Row of each slice of a partitioned tensor, by its encoded key.
        self.pieces: dict[bytes, int] = dict(zip(keys[:split], range(split), strict=True))
        names = map(methodcaller("decode", "utf-8", "surrogateescape"), keys[split:])
        #: Row of each tensor, by key.
        self.rows: dict[str, int] = dict(zip(names, range(split, len(keys)), strict=True))

    def _check(self, keys: list[bytes], where: str) -> None:
        """Data file numbers and sizes of unsliced entries (a partitioned tensor's full entry has no data)."""
        unsliced = ~self.sliced
        bad_shard = unsliced & (self.shard_id >= self.num_shards)
        # Sizes are below 2**63 (larger varints are negative numbers, refused when decoded): a kind needing
        # more bytes fails every entry.
        nbytes = np.array([min(k.nbytes, _MAX_SIZE) for k in self.kinds], np.int64)[self.kind]
        huge = np.array([k.nbytes > _MAX_SIZE for k in self.kinds], bool)[self.kind]
        string = np.array([k.tf_dtype == DT_STRING for k in self.kinds], bool)[self.kind]
        wrong = np.where(string, self.size < nbytes, self.size != nbytes) | huge
        bad_size = unsliced & (nbytes >= 0) & wrong
        bad = np.flatnonzero(bad_shard | bad_size)
        if not len(bad):
            return
        row = int(bad[0])
        e = self.entry(row)
        kind = self.kinds[self.kind[row]]
        if bad_shard[row]:
            raise DataLossError(
                f"{where}: entry {keys[row]!r}: shard_id {e.shard_id} is not below num_shards {self.num_shards}"
            )
        if kind.tf_dtype == DT_STRING:
            raise DataLossError(f"{where}: entry {keys[row]!r}: {e.size} bytes cannot hold {kind.nbytes - 4} strings")
        raise DataLossError(
            f"{where}: entry {keys[row]!r}: shape {e.shape} of {kind.dtype} needs {kind.nbytes} bytes "
            f"but the entry records {e.size}"
        )

    def entry(self, row: int) -> Entry:
        """The decoded entry of ``row``."""
        kind = self.kinds[self.kind[row]]
        return Entry(
            kind.tf_dtype,
            kind.shape,
            int(self.shard_id[row]),
            int(self.offset[row]),
            int(self.size[row]),
            int(self.crc32c[row]),
            self.slices.get(row, ()),
        )


def header_count(index_bytes: bytes, where: str) -> int | None:
    """The data file count in an index's header, ``None`` if the header cannot be parsed.

    Only the header entry is read (the first entry of the first block), so that replacing a checkpoint of
    10^5 tensors does not decode its whole index.
    """
    try:
        first = first_entry(index_bytes, where)
        if first is None or first[0] != b"":
            return None
        return decode_header(first[1], where).num_shards
    except CheckpointError:
        return None
