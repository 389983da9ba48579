"""Backend options are validated, with messages naming the valid choices."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trackpoint.backends.zarr import ZarrOptions
from trackpoint.errors import BackendError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, WriteItem


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compresor": "zstd"}, "compresor \\(did you mean compressor\\?\\); valid options: compressor, "),
        ({"compressor": "lzma"}, "unknown compressor 'lzma'; choose one of zstd, blosc, gzip, none"),
        ({"chunk_bytes": 0}, "chunk_bytes must be a positive int, got 0"),
        ({"pack_bytes": -1}, "pack_bytes must be an int >= 0"),
        ({"compression_level": "high"}, "compression_level must be an int or None"),
        ({"checksum": "yes"}, "checksum must be a bool"),
        ({"cleanup_min_age": -5}, "cleanup_min_age must be seconds >= 0"),
    ],
)
def test_bad_options_are_reported(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(BackendError, match=message):
        open_backend(str(tmp_path), CheckpointOptions(backend="zarr", backend_options=options))
    backend = open_backend(str(tmp_path), CheckpointOptions(backend="zarr"))
    with pytest.raises(BackendError, match=message):
        backend.save(str(tmp_path / "c"), [WriteItem("x", np.zeros(2))], CheckpointOptions(backend_options=options))
    assert backend.list_checkpoints(str(tmp_path)) == []


@pytest.mark.parametrize("name", ["retries", "compresor"])
def test_per_save_options_are_checked_as_the_factory_checks_them(where: Any, name: str) -> None:
    # A store's option (retries) is taken by the object stores and refused on a local disk, a misspelt one
    # everywhere: a per-save option must meet the fate it meets when the backend is opened with it.
    given = {name: 3}
    refused: BackendError | None = None
    try:
        open_backend(where.directory, replace(where.options, backend_options=given)).close()
    except BackendError as exc:
        refused = exc
    assert (refused is None) == (name == "retries" and where.kind != "local")
    prefix, items = where.prefix(), [WriteItem("x", np.zeros(2))]
    if refused is None:
        where.backend.save(prefix, items, CheckpointOptions(backend_options=given))
        assert where.backend.list_checkpoints(where.directory) == [prefix]
        return
    with pytest.raises(BackendError) as saved:
        where.backend.save(prefix, items, CheckpointOptions(backend_options=given))
    assert saved.value.args == refused.args  # the factory's message, naming the valid options of both layers
    assert where.backend.list_checkpoints(where.directory) == []


def test_defaults() -> None:
    opts = ZarrOptions.from_mapping({})
    assert (opts.compressor, opts.chunk_bytes, opts.pack_bytes, opts.checksum) == ("none", 16 << 20, 1 << 20, True)


def test_per_save_options_do_not_stick(tmp_path: Path) -> None:
    import zarr

    backend = open_backend(str(tmp_path), CheckpointOptions(backend="zarr"))
    value = np.zeros(200_000)  # above pack_bytes: an array of its own
    backend.save(
        str(tmp_path / "a"), [WriteItem("x", value)], CheckpointOptions(backend_options={"compressor": "zstd"})
    )
    backend.save(str(tmp_path / "b"), [WriteItem("x", value)])
    codecs_a = [c.to_dict()["name"] for c in zarr.open_array(str(tmp_path / "a.zarr" / "x"), mode="r").metadata.codecs]
    codecs_b = [c.to_dict()["name"] for c in zarr.open_array(str(tmp_path / "b.zarr" / "x"), mode="r").metadata.codecs]
    assert codecs_a == ["bytes", "zstd", "crc32c"]
    assert codecs_b == ["bytes", "crc32c"]


def test_the_constructor_takes_checkpoint_options_as_the_bundle_does(tmp_path: Path) -> None:
    # A plugin's factory passed CheckpointOptions, as BundleBackend takes them: they were kept and unused.
    from trackpoint.backends.stores.local import LocalFiles
    from trackpoint.backends.zarr import ZarrBackend
    from trackpoint.errors import ArgumentTypeError

    tuned = ZarrBackend(LocalFiles(), CheckpointOptions(backend_options={"compressor": "gzip", "chunk_bytes": 4096}))
    assert tuned.options == replace(ZarrOptions(), compressor="gzip", chunk_bytes=4096)
    with pytest.raises(BackendError, match="unknown backend option\\(s\\) compresor"):
        ZarrBackend(LocalFiles(), CheckpointOptions(backend_options={"compresor": "gzip"}))
    with pytest.raises(ArgumentTypeError, match="options must be ZarrOptions or CheckpointOptions, got dict"):
        ZarrBackend(LocalFiles(), {"compressor": "gzip"})  # type: ignore[arg-type]
