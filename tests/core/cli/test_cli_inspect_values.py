"""``trackpoint inspect --key K --values`` prints what numpy prints, reading only the values it shows.

Before: the whole tensor was read (a 2 GiB tensor: 2 GiB in memory) to print its summary; ``--json``
printed every value. Now a tensor numpy summarises (more than 1,000 elements) is read by its edges only
(``--edgeitems`` at each end of each axis), and ``--full`` asks for every value.
"""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import trackpoint as tp

_RNG = np.random.default_rng(0)
_ARRAYS = {
    "matrix": _RNG.standard_normal((50, 40)).astype(np.float32),
    "long": np.arange(2000),
    "flat_axis": _RNG.standard_normal((3, 500, 2)),  # an axis of 3 and one of 2: never cut
    "cube": _RNG.integers(-(10**6), 10**6, (7, 7, 7, 7)),
    "strings": np.array([b"x%d" % i for i in range(1500)], dtype=object),
    "wide_floats": _RNG.standard_normal(1001) * 1e10,  # formatted by the edges: scientific here
    "bools": _RNG.standard_normal((2, 600)) > 0,
    "bf16": _RNG.standard_normal((40, 30)).astype(ml_dtypes.bfloat16),
    "complex": (_RNG.standard_normal((30, 40)) + 1j * _RNG.standard_normal((30, 40))).astype(np.complex64),
    "small": np.arange(12.0).reshape(3, 4),  # not summarised
    "all_short_axes": np.arange(6**4).reshape(6, 6, 6, 6),  # 1,296 elements, but no axis longer than 6
}


def _values(cli: Any, prefix: str, key: str, *extra: str) -> str:
    result = cli("inspect", prefix, "--key", key, "--values", *extra)
    assert result.returncode == 0, result.stderr
    return str(result.stdout.split("\n", 1)[1].rstrip("\n"))


@pytest.mark.parametrize("backend", ["bundle", "zarr"])
def test_the_values_are_printed_as_numpy_prints_them(tmp_path: Path, cli: Any, backend: str) -> None:
    ckpt = tp.Checkpoint(**{k: tp.Variable(v) for k, v in _ARRAYS.items()})
    prefix = ckpt.write(str(tmp_path / "ckpt"), options=tp.CheckpointOptions(backend=backend))
    for key, value in _ARRAYS.items():
        expected = np.array2string(value, threshold=1000, edgeitems=3, max_line_width=120)
        assert _values(cli, prefix, key) == expected, key
    value = _ARRAYS["matrix"]
    assert _values(cli, prefix, "matrix", "--edgeitems", "5") == np.array2string(
        value, threshold=1000, edgeitems=5, max_line_width=120
    )
    full = _values(cli, prefix, "matrix", "--full")
    assert full == np.array2string(value, threshold=sys.maxsize, max_line_width=120)
    assert "..." not in full


def test_a_flat_file_is_summarised_too(tmp_path: Path, cli: Any) -> None:
    ckpt = tp.Checkpoint(**{k: tp.Variable(_ARRAYS[k]) for k in ("matrix", "cube")})
    tp.convert(ckpt.write(str(tmp_path / "ckpt")), str(tmp_path / "model.npz"))
    for key in ("matrix", "cube"):
        expected = np.array2string(_ARRAYS[key], threshold=1000, edgeitems=2, max_line_width=120)
        assert _values(cli, str(tmp_path / "model.npz"), key, "--edgeitems", "2") == expected


def _peak(cli: Any, *args: str) -> int:
    tracemalloc.start()
    try:
        result = cli(*args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.returncode == 0, result.stderr
    return peak


@pytest.mark.parametrize("backend", ["bundle", "zarr"])
def test_a_summary_reads_only_the_values_it_shows(tmp_path: Path, cli: Any, backend: str) -> None:
    # 32 MiB each: a slab of whole rows (square), and rows too long for one read (wide: read by their ends).
    shapes = {"square": (2048, 4096), "wide": (2, 4 * 2**20), "deep": (64, 64, 64, 32)}
    values = {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) for k, s in shapes.items()}
    # Zarr reads whole chunks (16 MiB by default): chunks of 1 MiB show that only those holding the edges are read.
    chunks = {"chunk_bytes": 2**20} if backend == "zarr" else {}
    options = tp.CheckpointOptions(backend=backend, backend_options=chunks)
    prefix = tp.Checkpoint(**{k: tp.Variable(v) for k, v in values.items()}).write(
        str(tmp_path / "ckpt"), options=options
    )
    _values(cli, prefix, "deep")  # imports (numpy's printing, the file formats) before anything is measured
    for key, value in values.items():
        if backend == "zarr" and key == "wide":
            continue  # Zarr chunks (and reads) whole rows of the first axis: 16 MiB each here, a chunk at least
        peak = _peak(cli, "inspect", prefix, "--key", key, "--values")
        assert peak < 4 * 2**20, f"{key}: {peak} bytes at the peak to print a 32 MiB tensor's summary"
        assert _values(cli, prefix, key) == np.array2string(value, threshold=1000, edgeitems=3, max_line_width=120)
    del values


def test_json_holds_the_values_shown_and_says_so(tmp_path: Path, cli: Any) -> None:
    prefix = tp.Checkpoint(m=tp.Variable(_ARRAYS["matrix"]), s=tp.Variable(_ARRAYS["small"])).write(
        str(tmp_path / "ckpt")
    )
    data = json.loads(cli("inspect", prefix, "--key", "m", "--values", "--json").stdout)
    assert (data["summarized"], data["edgeitems"], data["shape"]) == (True, 3, [50, 40])
    edges = np.array(data["values"], np.float32)
    matrix = _ARRAYS["matrix"]
    assert np.array_equal(edges, matrix[np.ix_(np.r_[0:3, 47:50], np.r_[0:3, 37:40])])
    full = json.loads(cli("inspect", prefix, "--key", "m", "--values", "--json", "--full").stdout)
    assert full["summarized"] is False and "edgeitems" not in full
    assert np.array_equal(np.array(full["values"], np.float32), matrix)
    small = json.loads(cli("inspect", prefix, "--key", "s", "--values", "--json").stdout)
    assert small["summarized"] is False and small["values"] == _ARRAYS["small"].tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--full",), "--full and --edgeitems shape what --values prints"),
        (("--edgeitems", "5"), "--full and --edgeitems shape what --values prints"),
        (("--values", "--edgeitems", "0"), "--edgeitems must be at least 1, got 0"),
    ],
)
def test_preview_options_without_their_use_are_usage_errors(
    tmp_path: Path, cli: Any, args: tuple[str, ...], message: str
) -> None:
    prefix = tp.Checkpoint(m=tp.Variable(_ARRAYS["small"])).write(str(tmp_path / "ckpt"))
    result = cli("inspect", prefix, "--key", "m", *args)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]
