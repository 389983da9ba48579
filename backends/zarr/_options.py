"""Tuning of the Zarr backend, read from ``CheckpointOptions.backend_options``."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from trackpoint.errors import BackendOptionError

__all__ = ["COMPRESSORS", "ZarrOptions", "refuse_unknown"]

#: Accepted values of the ``compressor`` option.
COMPRESSORS: Final = ("zstd", "blosc", "gzip", "none")

_MiB: Final = 1 << 20
#: Default inner chunk size of packed arrays (``packed_chunk_bytes``).
DEFAULT_PACKED_CHUNK_BYTES: Final = _MiB


@dataclass(frozen=True, slots=True)
class ZarrOptions:
    """Per-save tuning of the Zarr backend; every field is a ``backend_options`` key.

    Parameters
    ----------
    compressor
        ``"none"`` (default), ``"zstd"``, ``"blosc"`` (lz4 with byte shuffle) or
        ``"gzip"``. Off by default: trained weights in float formats shrink by
        about a tenth at zstd's level 3, which compresses at ~220 MB/s per
        core here, several times slower than the disk, so a compressed save
        takes 2-3x as long.
    compression_level
        Level for the compressor; ``None`` picks its default (zstd 3, blosc 5,
        gzip 6).
    chunk_bytes
        Upper bound on the uncompressed bytes of one chunk of a tensor's array,
        and on the bytes of one shard object of a packed array (default 16 MiB).
    pack_bytes
        Numeric tensors of at most this many bytes are packed into shared
        arrays instead of getting an array each (default 1 MiB; ``0`` turns
        packing off).
    packed_chunk_bytes
        Inner chunk size of packed arrays: the unit a read of one small tensor
        fetches (default 1 MiB; smaller chunks mean finer partial reads but
        more per-chunk work: 256 KiB made the 20,000-tensor save 1.6x slower).
    checksum
        Append Zarr's ``crc32c`` codec to every chunk so corruption is detected
        on read (default on).
    cleanup_min_age
        Default of ``cleanup(directory, min_age=...)``: seconds an abandoned
        save must have been left alone before it is deleted, when its
        writer's liveness cannot be checked (default 600, as the storage
        contract's ``min_age``): a writer on another machine may still be
        writing it.
    """

    compressor: str = "none"
    compression_level: int | None = None
    chunk_bytes: int = 16 * _MiB
    pack_bytes: int = _MiB
    packed_chunk_bytes: int = DEFAULT_PACKED_CHUNK_BYTES
    checksum: bool = True
    cleanup_min_age: float = 600.0

    def __post_init__(self) -> None:
        if self.compressor not in COMPRESSORS:
            raise BackendOptionError(
                f"zarr: unknown compressor {self.compressor!r}; choose one of {', '.join(COMPRESSORS)}"
            )
        for name in ("chunk_bytes", "packed_chunk_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BackendOptionError(f"zarr: backend option {name} must be a positive int, got {value!r}")
        if not isinstance(self.pack_bytes, int) or isinstance(self.pack_bytes, bool) or self.pack_bytes < 0:
            raise BackendOptionError(f"zarr: backend option pack_bytes must be an int >= 0, got {self.pack_bytes!r}")
        if self.compression_level is not None and not isinstance(self.compression_level, int):
            raise BackendOptionError(
                f"zarr: backend option compression_level must be an int or None, got {self.compression_level!r}"
            )
        if not isinstance(self.checksum, bool):
            raise BackendOptionError(f"zarr: backend option checksum must be a bool, got {self.checksum!r}")
        if not isinstance(self.cleanup_min_age, (int, float)) or self.cleanup_min_age < 0:
            raise BackendOptionError(
                f"zarr: backend option cleanup_min_age must be seconds >= 0, got {self.cleanup_min_age!r}"
            )

    @classmethod
    def names(cls) -> frozenset[str]:
        """The ``backend_options`` keys of the format."""
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> ZarrOptions:
        """Build from ``backend_options``; unknown keys are an error naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise BackendOptionError(
                f"zarr: unknown backend option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
            )
        return cls(**dict(options))


def refuse_unknown(names: Iterable[str], store_names: Collection[str]) -> None:
    """Refuse ``backend_options`` keys that are neither the format's nor the store's, as the factory does.

    For options given per save (:meth:`ZarrBackend.with_options
    <trackpoint.backends.zarr.ZarrBackend.with_options>`): the error and
    message are those of the ``zarr`` backend's factory, which checks the
    options the backend is opened with (a test holds the two messages equal),
    so a name is refused or taken alike either way.

    Parameters
    ----------
    names
        The ``backend_options`` keys given.
    store_names
        The keys the store takes (the S3 and GCS stores' ``TransferOptions``);
        empty for a store that takes none, such as the local disk.

    Raises
    ------
    BackendOptionError
        A name is unknown; the message lists the valid ones, the stores' too.
    """
    unknown = set(names) - ZarrOptions.names() - set(store_names)
    if unknown:
        from trackpoint._suggest import with_hints

        # Imported for the message only: a local backend with valid options never imports the object-store layer.
        from trackpoint.backends.stores import TransferOptions

        valid = [f.name for f in fields(ZarrOptions)]
        valid += [f"{name} (object stores)" for name in sorted(TransferOptions.names() | set(store_names))]
        hints = with_hints(unknown, ZarrOptions.names() | TransferOptions.names() | set(store_names))
        raise BackendOptionError(f"zarr: unknown backend option(s) {hints}; valid options: {', '.join(valid)}")
