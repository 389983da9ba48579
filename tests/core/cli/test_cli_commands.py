"""The ``trackpoint`` command line.

Each command runs through the installed console script in a subprocess, as a user runs it (``run``),
against checkpoints from real TensorFlow (``tests/fixtures/tf``), from trackpoint on the bundle and
Zarr backends, on S3 (moto) and GCS (fake-gcs-server) reached with ``--storage-option``, and against a
bit-flipped copy. Printed tables and ``--json`` output are checked, and so are exit statuses. Starting
an interpreter costs about a second, so the many small checks of options and error paths call the same
``main`` in this process (``cli``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

import trackpoint as tp
from trackpoint.storage import ShardSpec, WriteItem

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tf"
NESTED = str(FIXTURES / "nested" / "ckpt-1")
SCRIPT = Path(sys.executable).with_name("trackpoint")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script; stdout and stderr captured (not a terminal)."""
    assert SCRIPT.exists(), f"{SCRIPT} is missing: pip install -e . installs the console script"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.stderr == "", result.stderr
    return json.loads(result.stdout)


def _flipped(tmp_path: Path) -> str:
    shutil.copytree(FIXTURES / "nested", tmp_path / "flipped")
    data = tmp_path / "flipped" / "ckpt-1.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0x01  # inside model/shared's value
    data.write_bytes(bytes(raw))
    return str(tmp_path / "flipped" / "ckpt-1")


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    """``trackpoint inspect ... | head``: status 141, as SIGPIPE leaves a command, and nothing on stderr."""
    # 6,000 tensors: far more output than a pipe buffers, so the command is still writing when the reader leaves.
    proc = subprocess.Popen(
        [str(SCRIPT), "inspect", str(FIXTURES / "multiblock" / "ckpt-1")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141 and err == b""


# ------------------------------------------------------------------- inspect
def test_inspect_lists_every_tensor_of_a_tensorflow_checkpoint() -> None:
    result = run("inspect", NESTED)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["key", "dtype", "shape", "bytes"]
    assert "model/decoder/kernel/.ATTRIBUTES/VARIABLE_VALUE  float32  [4, 2]     32".split() in [
        line.split() for line in lines
    ]
    assert lines[-1] == f"18 tensors, 308 B in {NESTED}"


def test_inspect_json() -> None:
    data = run_json("inspect", NESTED)
    rows = {row["key"]: row for row in data["tensors"]}
    assert len(rows) == 18 and data["prefix"] == NESTED
    assert rows["model/encoder/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == {
        "key": "model/encoder/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "path": "model/encoder/dense/kernel",
        "dtype": "float32",
        "shape": [3, 4],
        "bytes": 48,
    }


def test_inspect_tree_puts_slots_under_their_optimizer() -> None:
    result = run("inspect", "--tree", NESTED)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "(root)"
    assert "│   │   │   ├── kernel  float32 [3, 4]" in lines
    assert "│   │   └── shared  -> model/shared (shared)" in lines
    optimizer = lines.index("├── optimizer")
    assert lines[optimizer + 1] == "│   ├── momentum (slot for model/shared)  float32 [2]"
    assert lines[-1] == "└── save_counter  int64 []"


def test_inspect_one_tensor_by_path_with_values(cli: Any) -> None:
    result = cli("inspect", NESTED, "--key", "model/decoder/kernel", "--values")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "model/decoder/kernel/.ATTRIBUTES/VARIABLE_VALUE  float32 [4, 2]"
    expected = tp.load_checkpoint(NESTED).get_tensor("model/decoder/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    assert result.stdout.splitlines()[1:] == np.array2string(expected).splitlines()
    data = json.loads(cli("inspect", NESTED, "-k", "model/decoder/kernel", "--values", "--json").stdout)
    np.testing.assert_array_equal(np.array(data["values"], np.float32), expected)


def test_inspect_one_tensor_by_another_path_to_a_shared_object(cli: Any, tmp_path: Path) -> None:
    """``--tree`` shows ``alias -> model/shared``; ``--key model/alias`` names that object's tensor too."""
    model = tp.AutoTrackable()
    model.shared = tp.Variable(np.arange(3, dtype=np.float32))
    model.alias = model.shared
    path = tp.Checkpoint(model=model).write(str(tmp_path / "ck"))
    assert "alias  -> model/shared (shared)" in cli("inspect", path, "--tree").stdout
    for key in ("model/alias", "model/alias/.ATTRIBUTES/VARIABLE_VALUE"):
        result = cli("inspect", path, "--key", key, "--values")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "model/shared/.ATTRIBUTES/VARIABLE_VALUE  float32 [3]"
    assert cli("inspect", path, "--key", "model/alias/nothing").returncode == 3
    # An object whose one attribute is not a VARIABLE_VALUE (a PythonState's py_state), by its path alone.
    state = cli("inspect", str(FIXTURES / "python_state" / "ckpt-1"), "--key", "state")
    assert state.returncode == 0 and state.stdout.startswith("state/.ATTRIBUTES/py_state  string []")


def test_inspect_one_tensor_by_its_listed_key_without_the_attribute(cli: Any, tmp_path: Path) -> None:
    # Dict keys holding "." and "/" are escaped in checkpoint keys ("a..b", "mlp.S~.Slinear_0"); a "/" in a
    # local name also keeps the object-graph path from naming it, so the listed key is the way to it.
    path = tp.Checkpoint(state={"a.b": np.ones(2), "mlp/~/linear_0": np.arange(3.0)}).write(str(tmp_path / "ck"))
    for key, listed in (("state/a..b", "state/a..b"), ("state/mlp.S~.Slinear_0", "state/mlp.S~.Slinear_0")):
        result = cli("inspect", path, "--key", key, "--values")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].startswith(f"{listed}/.ATTRIBUTES/VARIABLE_VALUE  float64")
    assert "[0. 1. 2.]" in cli("inspect", path, "--key", "state/mlp.S~.Slinear_0", "--values").stdout


def test_inspect_json_leaves_out_only_the_path_that_cannot_name_its_tensor(cli: Any, tmp_path: Path) -> None:
    model = tp.AutoTrackable()
    model.params = {"dense/kernel": tp.Variable(np.ones(2, np.float32)), "bias": tp.Variable(np.zeros(2, np.float32))}
    path = tp.Checkpoint(model=model).write(str(tmp_path / "c-1"))
    data = json.loads(cli("inspect", "--json", path).stdout)
    assert {row["key"]: row["path"] for row in data["tensors"]} == {
        "model/params/bias/.ATTRIBUTES/VARIABLE_VALUE": "model/params/bias",
        "model/params/dense.Skernel/.ATTRIBUTES/VARIABLE_VALUE": None,
    }
    one = json.loads(cli("inspect", "--json", path, "--key", "model/params/bias").stdout)
    assert one["path"] == "model/params/bias"


def test_inspect_a_string_tensor_and_a_name_based_checkpoint() -> None:
    data = run_json(
        "inspect", str(FIXTURES / "python_state" / "ckpt-1"), "-k", "state/.ATTRIBUTES/py_state", "--values"
    )
    assert data["dtype"] == "string" and isinstance(json.loads(data["values"]), dict)
    result = run("inspect", "--tree", str(FIXTURES / "tf1_saver" / "model.ckpt-1"))
    assert result.returncode == 4
    assert result.stderr.strip().endswith("inspect without --tree lists its keys")


def test_inspect_errors_are_one_line_and_exit_codes_are_documented(tmp_path: Path, cli: Any) -> None:
    missing = run("inspect", str(tmp_path / "nothing"))
    assert missing.returncode == 3 and missing.stdout == ""
    assert len(missing.stderr.splitlines()) == 1
    assert missing.stderr.startswith("trackpoint inspect: CheckpointNotFoundError: no checkpoint at")
    bad_key = cli("inspect", NESTED, "--key", "nope")
    assert bad_key.returncode == 3 and "has no tensor 'nope'" in bad_key.stderr
    usage = cli("inspect", NESTED, "--values")
    assert usage.returncode == 2 and "--values needs --key" in usage.stderr
    assert cli("frobnicate").returncode == 2
    verbose = cli("inspect", str(tmp_path / "nothing"), "--verbose")
    assert verbose.returncode == 3 and verbose.stderr.startswith("Traceback (most recent call last)")


# -------------------------------------------------------------------- verify
def test_verify_tensorflow_checkpoints() -> None:
    result = run("verify", NESTED, str(FIXTURES / "sliced" / "ckpt-1"), str(FIXTURES / "dtypes"))
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"OK       {NESTED}  (18 tensors, 308 B, bundle)"
    assert lines[-1] == "3 of 3 intact (every byte read)"


def test_verify_names_the_damaged_file_and_key(tmp_path: Path) -> None:
    flipped = _flipped(tmp_path)
    result = run("verify", flipped, NESTED, str(tmp_path / "missing"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"DAMAGED  {flipped}"
    assert lines[1].startswith("  model/shared/.ATTRIBUTES/VARIABLE_VALUE: DataLossError: bundle: CRC-32C mismatch")
    assert "ckpt-1.data-00000-of-00001" in lines[1]
    assert lines[2].startswith("OK       ")
    assert lines[3] == f"MISSING  {tmp_path / 'missing'}"
    assert lines[-1] == "1 of 3 intact (every byte read)"
    data = run_json("verify", flipped)
    assert data["ok"] is False
    (entry,) = data["checkpoints"]
    assert [(p["key"], p["error"]) for p in entry["problems"]] == [
        ("model/shared/.ATTRIBUTES/VARIABLE_VALUE", "DataLossError")
    ]
    # --quick checks the structure only: the flipped data byte goes unseen.
    quick = run("verify", "--quick", flipped)
    assert quick.returncode == 0 and quick.stdout.splitlines()[-1] == "1 of 1 intact (structure checked)"


def test_verify_calls_a_file_without_checksums_unverifiable_not_intact(tmp_path: Path, cli: Any) -> None:
    foreign = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file({"w": np.arange(4, dtype=np.float32)}, str(foreign))
    result = cli("verify", str(foreign), NESTED)
    assert result.returncode == 5
    lines = result.stdout.splitlines()
    assert lines[0] == f"UNVERIFIED {foreign}  (1 tensor, 16 B, safetensors)"
    assert lines[1].startswith("  1 of 1 tensor read whole but unverifiable: the file stores no checksum of it")
    assert lines[1].endswith(f"trackpoint diff SOURCE {foreign}")
    assert lines[2].startswith("OK       ")
    assert lines[-1] == "1 of 2 intact, 1 unverifiable (every byte read)"
    data = json.loads(cli("verify", "--json", str(foreign)).stdout)
    (entry,) = data["checkpoints"]
    assert data["ok"] is False and entry["ok"] is False and entry["status"] == "unverified"
    assert entry["problems"] == [] and entry["unverified"] == ["w/.ATTRIBUTES/VARIABLE_VALUE"]
    # Damage found elsewhere is the stronger verdict; trackpoint's own export is checked by its CRC-32C.
    assert cli("verify", str(foreign), _flipped(tmp_path)).returncode == 1
    exported = tmp_path / "export.safetensors"
    assert cli("convert", NESTED, str(exported)).returncode == 0
    checked = cli("verify", str(exported))
    assert checked.returncode == 0 and checked.stdout.splitlines()[-1] == "1 of 1 intact (every byte read)"
    # --quick reads no data and claims nothing of it.
    assert cli("verify", "--quick", str(foreign)).returncode == 0


# ---------------------------------------------------------------------- diff
def test_diff_of_two_tensorflow_saves(cli: Any) -> None:
    a, b = str(FIXTURES / "tf1_saver" / "model.ckpt-1"), str(FIXTURES / "tf1_saver" / "model.ckpt-2")
    result = run("diff", a, b)
    assert result.returncode == 1
    rows = [line.split(None, 2) for line in result.stdout.splitlines()[1:-1]]
    assert rows == [
        ["changed", "dense/bias", "max abs 1, max rel 0.0909091"],
        ["changed", "dense/kernel", "max abs 1, max rel 0.5"],
        ["changed", "global_step", "max abs 100, max rel 0.5"],
    ]
    assert result.stdout.splitlines()[-1] == "different: 1 tensor equal exactly, 3 changed, 0 added, 0 removed"
    data = json.loads(cli("diff", a, b, "--json").stdout)
    assert data["equal"] is False and [c["key"] for c in data["changed"]] == [
        "dense/bias",
        "dense/kernel",
        "global_step",
    ]
    assert data["changed"][2] == {
        "key": "global_step",
        "kind": "values",
        "dtype": ["int64", "int64"],
        "shape": [[], []],
        "max_abs": 100.0,
        "max_rel": 0.5,
        "details": [],
    }
    assert cli("diff", a, b, "--atol", "100").returncode == 0
    same = cli("diff", a, a)
    assert same.returncode == 0 and same.stdout.startswith("equal: 4 tensors equal exactly")


def _strict_json(text: str) -> Any:
    """``text`` parsed as RFC 8259 JSON: the NaN and Infinity tokens Python's json accepts are refused."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json(cli: Any, tmp_path: Path) -> None:
    values = np.array([1.5, np.nan, np.inf, -np.inf], np.float32)
    a = tp.Checkpoint(
        v=tp.Variable(values),
        s=tp.Variable(np.array([b"\x00\xff", b"\\xff", "é".encode()], dtype=object)),
        z=tp.Variable(np.array([[1 + 2j, complex(np.nan, np.inf)]] * 3, np.complex64)),
    ).write(str(tmp_path / "a-1"))
    b = tp.Checkpoint(v=tp.Variable(np.array([1.5, 1.0, np.inf, -np.inf], np.float32))).write(str(tmp_path / "b-1"))
    shown = _strict_json(cli("inspect", "--json", a, "--key", "v", "--values").stdout)
    assert shown["values"] == [1.5, "NaN", "Infinity", "-Infinity"]
    # Bytes that are not UTF-8 are base64, never text with escapes that a tensor could hold as they read.
    strings = _strict_json(cli("inspect", "--json", a, "--key", "s", "--values").stdout)["values"]
    assert strings == [{"base64": "AP8="}, "\\xff", "é"]
    # Complex values are [real, imag] pairs, nested as the tensor is.
    pairs = _strict_json(cli("inspect", "--json", a, "--key", "z", "--values").stdout)["values"]
    assert np.array(pairs).shape == (3, 2, 2) and pairs[0][1] == ["NaN", "Infinity"]
    changed = _strict_json(cli("diff", "--json", a, b, "--atol", "inf").stdout)["changed"]
    assert [(c["key"], c["max_abs"], c["max_rel"]) for c in changed] == [("v/.ATTRIBUTES/VARIABLE_VALUE", "NaN", "NaN")]
    assert _strict_json(cli("diff", "--json", a, b, "--atol", "inf").stdout)["atol"] == "Infinity"
    nan = cli("diff", a, b, "--atol", "nan")
    assert nan.returncode == 2 and "--atol and --rtol must be numbers >= 0" in nan.stderr


# ------------------------------------------------------------------- convert
def test_convert_tensorflow_to_safetensors_and_back(tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    result = run("convert", NESTED, str(out))
    assert result.returncode == 0 and result.stdout == f"converted {NESTED} -> {out}\n" and result.stderr == ""
    loaded = safetensors.numpy.load_file(str(out))
    assert loaded["model/stack/1"].shape == (3,) and len(loaded) == 18
    back = tmp_path / "back" / "ckpt-1"
    assert run("convert", str(out), str(back)).returncode == 0
    assert run("diff", NESTED, str(back)).returncode == 0
    # Restores exactly, by path.
    model = tp.AutoTrackable()
    model.decoder = tp.AutoTrackable()
    model.decoder.kernel = tp.Variable(np.zeros((4, 2), np.float32))
    tp.Checkpoint(model=model).restore(str(back)).expect_partial()
    np.testing.assert_array_equal(model.decoder.kernel.numpy(), loaded["model/decoder/kernel"])


def test_convert_options(tmp_path: Path, cli: Any) -> None:
    keys = tmp_path / "keys.npz"
    assert cli("convert", NESTED, str(keys), "--keep-keys", "--exclude", "*OPTIMIZER_SLOT*").returncode == 0
    with np.load(keys) as z:
        assert (
            sorted(f for f in z.files if not f.startswith("__"))[0] == "model/decoder/bias/.ATTRIBUTES/VARIABLE_VALUE"
        )
        assert len(z.files) == 11  # 10 tensors and trackpoint's metadata
    again = cli("convert", NESTED, str(keys))
    assert again.returncode == 4 and "--overwrite" in again.stderr
    table = ("--include", "model/table/*", "--exclude", "*SLOT*")
    assert cli("convert", NESTED, str(keys), "--overwrite", *table).returncode == 0
    with np.load(keys) as z:
        assert sorted(z.files) == ["__trackpoint_metadata__", "model/table/alpha", "model/table/beta"]
    # safetensors has no complex128: one line saying what to leave out, nothing written.
    complex128 = cli("convert", str(FIXTURES / "dtypes" / "ckpt-1"), str(tmp_path / "s.safetensors"))
    assert complex128.returncode == 4 and len(complex128.stderr.splitlines()) == 1
    assert "UnsupportedDTypeError: tensor 'c128_scalar' has dtype complex128" in complex128.stderr
    assert "leave it out with an exclude pattern" in complex128.stderr
    assert not (tmp_path / "s.safetensors").exists()


def test_convert_between_backends_and_ls_finds_every_format(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run("convert", NESTED, str(run_dir / "ckpt-1")).returncode == 0
    assert run("convert", NESTED, str(run_dir / "ckpt-2"), "--dst-backend", "zarr").returncode == 0
    assert (run_dir / "ckpt-2.zarr").is_dir()
    listing = run("ls", str(run_dir))
    assert listing.returncode == 0
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert rows[0] == ["checkpoint", "number", "time", "(UTC)", "tensors", "size", "format"]
    # No state file names them (convert writes none): the time is the store's commit time of each.
    assert rows[1][:2] + rows[1][4:] == ["ckpt-1", "1", "18", "308", "B", "bundle"]
    assert rows[2][:2] + rows[2][4:] == ["ckpt-2", "2", "18", "308", "B", "zarr", "latest"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", " ".join(row[2:4])) for row in rows[1:])
    verified = run("verify", str(run_dir / "ckpt-2"))
    assert verified.returncode == 0 and "(18 tensors, 308 B, zarr)" in verified.stdout
    assert run("diff", str(run_dir / "ckpt-1"), str(run_dir / "ckpt-2")).returncode == 0


def test_convert_a_directory_copies_its_latest_checkpoint(tmp_path: Path, cli: Any) -> None:
    """A checkpoint is named by its prefix or by its directory (docs/cli.md), for convert's source too."""
    run_dir = tmp_path / "run"
    assert cli("convert", str(FIXTURES / "tf1_saver" / "model.ckpt-1"), str(run_dir / "ckpt-1")).returncode == 0
    latest = cli(
        "convert", str(FIXTURES / "tf1_saver" / "model.ckpt-2"), str(run_dir / "ckpt-2"), "--dst-backend", "zarr"
    )
    assert latest.returncode == 0
    copied = cli("convert", str(run_dir), str(tmp_path / "out" / "ckpt-z"), "--dst-backend", "zarr")
    assert (copied.returncode, copied.stderr) == (0, "")
    assert copied.stdout == f"converted {run_dir} -> {tmp_path / 'out' / 'ckpt-z'}\n"
    assert cli("diff", str(run_dir / "ckpt-2"), str(tmp_path / "out" / "ckpt-z")).returncode == 0
    same = cli("convert", f"{run_dir}/", str(run_dir / "ckpt-2"), "--dst-backend", "zarr", "--overwrite")
    # A copy onto its own source is a wrong command line (status 2), which --overwrite does not change.
    assert same.returncode == 2 and "same checkpoint" in same.stderr


def test_convert_onto_an_existing_checkpoint_names_the_flag(tmp_path: Path, cli: Any) -> None:
    dst = str(tmp_path / "run" / "ckpt-1")
    assert cli("convert", NESTED, dst).returncode == 0
    for extra in ((), ("--include", "model/*"), ("--dst-backend", "bundle")):
        again = cli("convert", NESTED, dst, *extra)
        assert again.returncode == 4 and len(again.stderr.splitlines()) == 1
        assert again.stderr.startswith("trackpoint convert: CheckpointExistsError: convert: a checkpoint is already")
        assert again.stderr.rstrip().endswith("pass --overwrite to replace it")
        assert "overwrite=True" not in again.stderr
    assert cli("convert", NESTED, dst, "--overwrite").returncode == 0


def test_ls_of_a_tensorflow_manager_directory_with_timestamps(cli: Any) -> None:
    data = json.loads(cli("ls", str(FIXTURES / "manager"), "--json").stdout)
    expected = json.loads((FIXTURES / "manager" / "expected.json").read_text())
    assert [Path(r["prefix"]).name for r in data["checkpoints"]] == ["ckpt-2", "ckpt-3"]
    assert [r["latest"] for r in data["checkpoints"]] == [False, True]
    assert all(isinstance(r["time"], float) for r in data["checkpoints"])
    assert data["checkpoints"][0]["number"] == 2 and expected  # the fixture's own record exists


def test_ls_all_and_cleanup_with_the_age_guard(tmp_path: Path, cli: Any) -> None:
    tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).save(str(tmp_path / "ckpt"))
    backend = tp.plugins.open_backend(str(tmp_path / "ckpt-9"))
    backend.begin(str(tmp_path / "ckpt-9"), "crashed")
    backend.write_shard(str(tmp_path / "ckpt-9"), ShardSpec(0, 1, "crashed"), [WriteItem("x", np.zeros(3))])
    listing = run("ls", "--all", str(tmp_path))
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[1].split()[0] == "ckpt-1" and lines[1].split()[-1] == "latest"
    # One crashed save: its staging directory and the two files in it are one leftover, not three.
    staging = tmp_path / "ckpt-9_temp"
    assert lines[2:] == [
        "leftovers of crashed saves (1; `trackpoint cleanup` removes old ones):",
        f"  {staging}  (2 files in it)",
    ]
    data = json.loads(cli("ls", "--all", str(tmp_path), "--json").stdout)
    # JSON lists every path, as cleanup removes each.
    assert data["leftovers"] == sorted([str(staging), *(str(p) for p in staging.iterdir())])
    # The default age guard keeps young leftovers: they may be a save still running.
    kept = cli("cleanup", str(tmp_path))
    assert kept.returncode == 0 and kept.stdout == (
        f"nothing removed in {tmp_path}: 1 leftover is younger than the age guard (10 min); "
        "--min-age 0 removes it if no save is running\n"
    )
    removed = json.loads(cli("cleanup", str(tmp_path), "--min-age", "0", "--json").stdout)
    assert sorted(removed["removed"]) == sorted(data["leftovers"])
    assert json.loads(cli("ls", "--all", str(tmp_path), "--json").stdout)["leftovers"] == []
    assert cli("cleanup", str(tmp_path), "--min-age", "-1").returncode == 2


def test_python_dash_m_is_the_same_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "trackpoint", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"trackpoint {tp.__version__}"
    listing = subprocess.run(
        [sys.executable, "-m", "trackpoint", "inspect", NESTED, "--json"], capture_output=True, text=True
    )
    assert json.loads(listing.stdout) == run_json("inspect", NESTED)


def test_a_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    piped = run("convert", NESTED, str(tmp_path / "a.npz"))
    assert piped.stderr == ""  # no bar when stderr is not a terminal
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, where tqdm draws nothing: give it a size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.run(
            [str(SCRIPT), "convert", NESTED, str(tmp_path / "b.npz")], stdout=subprocess.PIPE, stderr=follower
        )
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0
    assert b"convert" in drawn and b"308" in drawn  # tqdm's bar: description and byte count


# ------------------------------------------------- damaged and unreadable checkpoints, operator errors
def _run_of_three(directory: Path, backend: str | None = None) -> list[str]:
    """Three checkpoints saved by a manager in ``directory`` (on ``backend``); their prefixes."""
    checkpoint = tp.Checkpoint(v=tp.Variable(np.arange(3, dtype=np.float32)))
    options = tp.CheckpointOptions(backend=backend) if backend else None
    manager = tp.CheckpointManager(checkpoint, str(directory), max_to_keep=5, options=options)
    return [manager.save() for _ in range(3)]


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


#: A way to break the index (the commit point) of the second checkpoint, by backend.
_BREAK_INDEX = {
    "flipped index": (None, lambda d: _flip(d / "ckpt-2.index", 5)),
    "truncated index": (None, lambda d: os.truncate(d / "ckpt-2.index", 7)),
    "truncated zarr.json": ("zarr", lambda d: os.truncate(d / "ckpt-2.zarr" / "zarr.json", 10)),
}


@pytest.mark.parametrize("damage", sorted(_BREAK_INDEX))
def test_ls_lists_every_checkpoint_and_marks_a_damaged_one(tmp_path: Path, cli: Any, damage: str) -> None:
    backend, breaks = _BREAK_INDEX[damage]
    prefixes = _run_of_three(tmp_path / "run", backend)
    breaks(tmp_path / "run")
    result = cli("ls", str(tmp_path / "run"))
    assert result.returncode == 1, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert sorted(rows) == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert "damaged: " in rows["ckpt-2"] and "Error: " in rows["ckpt-2"]
    assert rows["ckpt-3"].split()[-1] == "latest" and "damaged" not in rows["ckpt-1"] + rows["ckpt-3"]
    assert len(result.stderr.splitlines()) == 1
    assert "1 of 3 checkpoints in" in result.stderr and "could not be read (1 damaged)" in result.stderr
    assert f"trackpoint verify {prefixes[1]}" in result.stderr
    data = cli("ls", str(tmp_path / "run"), "--json")
    assert data.returncode == 1
    listed = json.loads(data.stdout)
    assert listed["ok"] is False
    assert [(r["prefix"], r["status"]) for r in listed["checkpoints"]] == [
        (prefixes[0], "ok"),
        (prefixes[1], "damaged"),
        (prefixes[2], "ok"),
    ]
    broken = listed["checkpoints"][1]
    assert broken["tensors"] is None and broken["bytes"] is None and broken["format"] == (backend or "bundle")
    assert broken["error"]["error"] in ("DataLossError", "InvalidCheckpointError") and broken["error"]["message"]
    assert listed["checkpoints"][0]["error"] is None and listed["checkpoints"][0]["tensors"] == 2


def _without_dac_override() -> list[str]:
    """A command prefix under which file permissions apply, as they do to a user who is not root."""
    if os.name != "posix":
        pytest.skip("file permissions are POSIX's here")
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    drop = [str(setpriv), "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps=-all"]
    if setpriv is None or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
        pytest.skip("root, and setpriv cannot drop the capabilities that bypass file permissions")
    return drop


def run_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_without_dac_override(), str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_a_checkpoint_without_read_permission_is_unreadable_not_damaged(tmp_path: Path) -> None:
    prefixes = _run_of_three(tmp_path / "run")
    (tmp_path / "run" / "ckpt-2.index").chmod(0)
    verified = run_unprivileged("verify", prefixes[1], prefixes[0])
    assert verified.returncode == 4, verified.stdout + verified.stderr
    lines = verified.stdout.splitlines()
    assert lines[0] == f"UNREADABLE {prefixes[1]}" and "DAMAGED" not in verified.stdout
    assert lines[1].startswith("  (checkpoint): StoragePermissionError: ")
    assert lines[2].startswith(f"OK       {prefixes[0]}")
    assert len(verified.stderr.splitlines()) == 1
    assert "could not read 1 of 2 checkpoints (StoragePermissionError), which may be intact" in verified.stderr
    data = json.loads(run_unprivileged("verify", prefixes[1], "--json").stdout)
    assert [c["status"] for c in data["checkpoints"]] == ["unreadable"] and data["ok"] is False
    # Damage elsewhere is still reported as such; the status says that not everything could be checked.
    _flip(tmp_path / "run" / "ckpt-3.index", 5)
    both = run_unprivileged("verify", prefixes[1], prefixes[2])
    assert both.returncode == 4
    assert [line.split()[0] for line in both.stdout.splitlines() if not line.startswith(" ")][:2] == [
        "UNREADABLE",
        "DAMAGED",
    ]
    listing = run_unprivileged("ls", str(tmp_path / "run"))
    assert listing.returncode == 4
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert "unreadable: StoragePermissionError: " in rows["ckpt-2"]
    assert "damaged: DataLossError: " in rows["ckpt-3"] and rows["ckpt-1"].split()[-1] == "bundle"
    assert "could not be read (1 unreadable, 1 damaged)" in listing.stderr


def test_an_unreadable_data_file_is_unreadable_and_each_problem_is_printed_once(tmp_path: Path) -> None:
    prefixes = _run_of_three(tmp_path / "run")
    (tmp_path / "run" / "ckpt-2.data-00000-of-00001").chmod(0)
    result = run_unprivileged("verify", prefixes[1])
    assert result.returncode == 4 and result.stdout.startswith(f"UNREADABLE {prefixes[1]}\n")
    keys = [line.split(":")[0].strip() for line in result.stdout.splitlines()[1:-1]]
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in keys and len(keys) == len(set(keys))


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_verify_prints_each_problem_once(tmp_path: Path, cli: Any, damage: str) -> None:
    prefixes = _run_of_three(tmp_path / "run")
    data_file = tmp_path / "run" / "ckpt-2.data-00000-of-00001"
    if damage == "missing":
        data_file.unlink()
    else:
        os.truncate(data_file, 5)
    result = cli("verify", prefixes[1])
    assert result.returncode == 1 and result.stdout.startswith(f"DAMAGED  {prefixes[1]}\n")
    problems = result.stdout.splitlines()[1:-1]
    keys = [line.split(":")[0].strip() for line in problems]
    assert keys.count("_CHECKPOINTABLE_OBJECT_GRAPH") == 1 and len(keys) == len(set(keys)) == 3
    (entry,) = json.loads(cli("verify", prefixes[1], "--json").stdout)["checkpoints"]
    assert [p["key"] for p in entry["problems"]] == keys and entry["status"] == "damaged"


def test_ls_and_cleanup_refuse_a_missing_directory_or_a_file(tmp_path: Path, cli: Any) -> None:
    prefixes = _run_of_three(tmp_path / "run")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    for command in ("ls", "cleanup"):
        missing = cli(command, str(tmp_path / "nonexist"))
        assert (missing.returncode, missing.stdout) == (3, "")
        assert missing.stderr == (
            f"trackpoint {command}: CheckpointNotFoundError: no directory {str(tmp_path / 'nonexist')!r}: "
            "nothing exists at that path; check it for a typo\n"
        )
        afile = cli(command, str(tmp_path / "afile"), "--json")
        assert (afile.returncode, json.loads(afile.stdout)["error"]["type"]) == (3, "CheckpointNotFoundError")
        assert "is a file, not a directory: pass the directory that holds the checkpoints" in afile.stderr
        index = cli(command, f"{prefixes[0]}.index")
        assert index.returncode == 3
        assert f"is a file of the checkpoint {prefixes[0]!r}, not a directory" in index.stderr
        assert f"`trackpoint {command} {tmp_path / 'run'}`" in index.stderr
        prefix = cli(command, prefixes[0])
        assert prefix.returncode == 3 and "is a checkpoint prefix, not a directory" in prefix.stderr
    empty = cli("ls", str(tmp_path / "empty"))
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, f"no checkpoints in {tmp_path / 'empty'}\n", "")
    assert cli("cleanup", str(tmp_path / "empty")).returncode == 0
    # An object store has no directories: a prefix with nothing under it is empty, not missing.
    bucket = cli("ls", "memory://nothing/here")
    assert (bucket.returncode, bucket.stdout) == (0, "no checkpoints in memory://nothing/here\n")


def test_an_unknown_backend_is_a_usage_error(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = cli("ls", str(tmp_path), "--backend", "nosuch")
    assert listing.returncode == 2 and listing.stdout == ""
    assert listing.stderr.startswith("usage: trackpoint ls ")
    assert "trackpoint ls: error: unknown backend 'nosuch' (chosen by --backend); registered backends: " in (
        listing.stderr
    )
    assert "bundle" in listing.stderr.splitlines()[-1] and "zarr" in listing.stderr.splitlines()[-1]
    copy = cli("convert", NESTED, str(tmp_path / "out" / "ckpt-1"), "--dst-backend", "nosuch")
    assert copy.returncode == 2 and "unknown backend 'nosuch' (chosen by --dst-backend)" in copy.stderr
    assert cli("verify", NESTED, "--backend", "nosuch").returncode == 2
    # Chosen by the environment: a usage error too, the command's setting being wrong.
    monkeypatch.setenv("TRACKPOINT_BACKEND", "nosuch")
    assert cli("inspect", NESTED).returncode == 2


def test_help_lists_every_documented_exit_status(cli: Any) -> None:
    page = (Path(__file__).resolve().parents[3] / "docs" / "cli.md").read_text(encoding="utf-8")
    table = page.split("## Exit status", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| (\d+) \|", table, re.MULTILINE)
    assert {"0", "1", "2", "3", "4", "5", "130", "141"} <= set(documented)
    shown = cli("--help")
    assert shown.returncode == 0
    epilog = " ".join(shown.stdout.split("Exit status:", 1)[1].split())
    assert [n for n in documented if f" {n} " not in f" {epilog} "] == []
    import trackpoint.cli

    assert trackpoint.cli.__doc__ is not None
    assert [n for n in documented if f"\n{n} " not in trackpoint.cli.__doc__] == []


def test_counts_agree_with_their_nouns(tmp_path: Path, cli: Any) -> None:
    path = tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "one"))
    model = tp.AutoTrackable()
    model.v = tp.Variable(np.ones(2, np.float32))
    other = tp.Checkpoint(model=model).write(str(tmp_path / "two"))
    assert cli("inspect", path).stdout.splitlines()[-1] == f"1 tensor, 8 B in {path}"
    assert f"OK       {path}  (1 tensor, 8 B, bundle)" in cli("verify", path).stdout
    assert cli("diff", path, path).stdout == "equal: 1 tensor equal exactly, 0 changed, 0 added, 0 removed\n"
    assert cli("diff", path, other).stdout.splitlines()[-1] == (
        "different: 0 tensors equal exactly, 0 changed, 1 added, 1 removed"
    )
    backend = tp.plugins.open_backend(str(tmp_path / "ckpt-9"))
    backend.begin(str(tmp_path / "ckpt-9"), "crashed")
    backend.write_shard(str(tmp_path / "ckpt-9"), ShardSpec(0, 1, "crashed"), [WriteItem("x", np.zeros(3))])
    # One leftover: the crashed save's directory, once the files in it are gone.
    for leftover in backend.leftovers(str(tmp_path)):
        if os.path.isfile(leftover):
            os.unlink(leftover)
    removed = cli("cleanup", str(tmp_path), "--min-age", "0")
    assert removed.returncode == 0 and removed.stdout.splitlines()[0] == "removed 1 leftover:"
    assert len(removed.stdout.splitlines()) == 2


def test_usage_errors_found_after_parsing_show_the_command_usage(cli: Any, tmp_path: Path) -> None:
    for args, command in (
        (("inspect", NESTED, "--values"), "inspect"),
        (("diff", NESTED, NESTED, "--atol", "-1"), "diff"),
        (("cleanup", str(tmp_path), "--min-age", "-1"), "cleanup"),
    ):
        result = cli(*args)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith(f"usage: trackpoint {command} [-h]"), result.stderr
        assert result.stderr.splitlines()[-1].startswith(f"trackpoint {command}: error: ")


@pytest.mark.parametrize("dst", ["new/sub/ckpt-1", "new/sub/model.npz", "new/sub/ckpt-1 zarr"])
def test_convert_of_a_damaged_source_leaves_no_directory_behind(tmp_path: Path, cli: Any, dst: str) -> None:
    prefixes = _run_of_three(tmp_path / "run")
    _flip(tmp_path / "run" / "ckpt-2.data-00000-of-00001", 2)  # the tensor's bytes: found while copying
    target, *backend = dst.split()
    extra = ["--dst-backend", *backend] if backend else []
    failed = cli("convert", prefixes[1], str(tmp_path / target), *extra)
    assert failed.returncode == 4 and "DataLossError" in failed.stderr
    assert not (tmp_path / "new").exists()
    # A directory that was there before is kept, even when the copy fails.
    (tmp_path / "kept").mkdir()
    assert cli("convert", prefixes[1], str(tmp_path / "kept" / target), *extra).returncode == 4
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "new").exists()
    assert cli("convert", prefixes[0], str(tmp_path / target), *extra).returncode == 0
    assert (tmp_path / "new" / "sub").is_dir()


def test_an_export_of_a_damaged_source_removes_the_directories_it_made(tmp_path: Path) -> None:
    """The Python API too: an export makes its file's directories, and removes them again when it fails."""
    prefixes = _run_of_three(tmp_path / "run")
    _flip(tmp_path / "run" / "ckpt-2.data-00000-of-00001", 2)
    with pytest.raises(tp.DataLossError):
        tp.convert(prefixes[1], str(tmp_path / "api" / "sub" / "model.npz"))
    assert not (tmp_path / "api").exists()


# ------------------------------------------------------------ object stores
def _object_store_round_trip(tmp_path: Path, bucket: str, options: dict[str, Any], fs: Any) -> None:
    so = [arg for k, v in options.items() for arg in ("--storage-option", f"{k}={v}")]
    remote = f"{bucket}/run/ckpt-1"
    done = run("convert", NESTED, remote, *[a.replace("--storage-option", "--dst-storage-option") for a in so])
    assert done.returncode == 0, done.stderr
    listing = run_json("ls", f"{bucket}/run", *so)
    assert [(Path(r["prefix"]).name, r["tensors"], r["bytes"], r["latest"]) for r in listing["checkpoints"]] == [
        ("ckpt-1", 18, 308, True)
    ]
    inspected = run_json("inspect", remote, *so)
    assert len(inspected["tensors"]) == 18
    verified = run("verify", remote, *so)
    assert verified.returncode == 0 and verified.stdout.splitlines()[-1] == "1 of 1 intact (every byte read)"
    assert run("diff", NESTED, remote, *so).returncode == 0
    out = tmp_path / "from-bucket.safetensors"
    assert run("convert", remote, str(out), *so).returncode == 0
    assert len(safetensors.numpy.load_file(str(out))) == 18
    # A bit flipped in the bucket is found and named.
    data_object = remote.split("://", 1)[1] + ".data-00000-of-00001"
    raw = bytearray(fs.cat_file(data_object))
    raw[10] ^= 0x01
    fs.pipe_file(data_object, bytes(raw))
    damaged = run("verify", remote, *so)
    assert damaged.returncode == 1
    assert damaged.stdout.splitlines()[0] == f"DAMAGED  {remote}"
    assert ": DataLossError: bundle: " in damaged.stdout.splitlines()[1]
    assert "ckpt-1.data-00000-of-00001" in damaged.stdout.splitlines()[1]
    # Without the storage options the store cannot be reached: one line on stderr, status 4 or 3.
    failed = run("inspect", remote, "--storage-option", "endpoint_url=http://127.0.0.1:9")
    assert failed.returncode in (3, 4) and len(failed.stderr.splitlines()) == 1


@pytest.mark.s3
@pytest.mark.slow  # ten interpreters that each import s3fs/gcsfs: about a minute on a busy machine
def test_s3_with_storage_options(
    tmp_path: Path, s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any
) -> None:
    _object_store_round_trip(tmp_path, s3_bucket, s3_storage_options, s3_raw)


@pytest.mark.gcs
@pytest.mark.slow
def test_gcs_with_storage_options(
    tmp_path: Path, gcs_bucket: str, gcs_storage_options: dict[str, Any], gcs_raw: Any
) -> None:
    _object_store_round_trip(tmp_path, gcs_bucket, gcs_storage_options, gcs_raw)


def test_diff_names_the_state_dict_entries_that_changed(tmp_path: Path, cli: Any) -> None:
    script = textwrap.dedent(
        """
        import sys
        import trackpoint as tp

        class Settings:
            def __init__(self, **state):
                self.state = state
            def state_dict(self):
                return self.state
            def load_state_dict(self, state):
                self.state = state

        folder = sys.argv[1]
        lrs = [0.1, 0.2, 0.3, 1.0, 0.5, 0.6, 0.7]
        tp.Checkpoint(opt=Settings(lr=0.1, groups=[1.0] * 7)).write(folder + "/a")
        tp.Checkpoint(opt=Settings(lr=0.2, groups=lrs)).write(folder + "/b")
        """
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    result = run("diff", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()[1:-1]
    assert lines[0].split(None, 2) == ["changed", "opt/.ATTRIBUTES/..STATE_DICT", "['groups'][0]: 1.0 -> 0.1"]
    assert [line.strip() for line in lines[1:]] == [
        "['groups'][1]: 1.0 -> 0.2",
        "['groups'][2]: 1.0 -> 0.3",
        "['groups'][4]: 1.0 -> 0.5",
        "['groups'][5]: 1.0 -> 0.6",
        "... and 2 more",
    ]
    data = json.loads(cli("diff", str(tmp_path / "a"), str(tmp_path / "b"), "--json").stdout)
    assert data["changed"][0]["details"][-1] == "['lr']: 0.1 -> 0.2" and len(data["changed"][0]["details"]) == 7


def test_diff_and_ls_leave_the_metrics_of_a_manager_out_of_the_tensors(tmp_path: Path, cli: Any) -> None:
    for name, loss in (("a", 0.5), ("b", 0.4)):
        ckpt = tp.Checkpoint(w=tp.Variable(np.ones(3, np.float32)))
        with tp.CheckpointManager(ckpt, tmp_path / name, max_to_keep=2) as manager:
            manager.save(metrics={"loss": loss})
    a, b = str(tmp_path / "a" / "ckpt-1"), str(tmp_path / "b" / "ckpt-1")
    result = cli("diff", a, b)
    # The same weights: equal (exit status 0), the metrics shown on a line of their own.
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        'metrics differ (not compared as tensors): {"loss": 0.5} -> {"loss": 0.4}',
        "equal: 2 tensors equal exactly, 0 changed, 0 added, 0 removed",
    ]
    data = json.loads(cli("diff", a, b, "--json").stdout)
    assert data["equal"] is True and data["changed"] == [] and data["same"] == 2
    assert data["metrics"] == {"a": {"loss": 0.5}, "b": {"loss": 0.4}}
    assert json.loads(cli("diff", a, a, "--json").stdout)["metrics"] is None
    listed = json.loads(cli("ls", str(tmp_path / "a"), "--json").stdout)
    assert [row["tensors"] for row in listed["checkpoints"]] == [2]  # the weights and save_counter, not the metrics


def test_ls_all_says_when_the_backend_cannot_list_leftovers(tmp_path: Path, cli: Any) -> None:
    """`ls --all` on a backend without leftovers() used to print "no leftovers of crashed saves", which reads
    as a guarantee; the backend only could not tell."""
    from trackpoint.backends import memory

    run_dir = "memory://cli-ls-leftovers"
    try:
        tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).save(f"{run_dir}/ckpt")
        listing = cli("ls", "--all", run_dir)
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.splitlines()[-1] == (
            "leftovers of crashed saves: not known (the memory backend cannot list them)"
        )
        assert "no leftovers" not in listing.stdout
        data = json.loads(cli("ls", "--all", run_dir, "--json").stdout)
        assert (data["leftovers"], data["leftovers_not_listed_by"]) == (None, ["memory"])
    finally:
        memory.clear()
    # A backend that lists them still says so when there are none.
    tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).save(str(tmp_path / "ckpt"))
    assert cli("ls", "--all", str(tmp_path)).stdout.splitlines()[-1] == "no leftovers of crashed saves"
    data = json.loads(cli("ls", "--all", str(tmp_path), "--json").stdout)
    assert (data["leftovers"], data["leftovers_not_listed_by"]) == ([], [])


def test_convert_strip_prefix_exports_a_torch_module_load_state_dict_takes(tmp_path: Path, cli: Any) -> None:
    """docs/cli.md showed a Python one-liner dropping 'model/.ATTRIBUTES/' from the names; --strip-prefix does it."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters())
    src = tp.Checkpoint(model=net, optimizer=opt).write(str(tmp_path / "run" / "ckpt-1"))
    out = str(tmp_path / "model.safetensors")
    done = cli("convert", src, out, "--include", "model/*", "--strip-prefix", "model/.ATTRIBUTES/")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    fresh.load_state_dict(load_file(out))  # strict: every key of the module, no other
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values(), strict=True))
    # Both objects' prefixes: their numeric entries do not collide (the structures are metadata, by key).
    both = cli(
        "convert", src, str(tmp_path / "both.safetensors"),
        "--strip-prefix", "model/.ATTRIBUTES/", "--strip-prefix", "optimizer/.ATTRIBUTES/",
    )  # fmt: skip
    assert both.returncode == 0, both.stderr
    # In an .npz file the structures are tensors, and would collide: refused, nothing written.
    clash = cli(
        "convert", src, str(tmp_path / "both.npz"),
        "--strip-prefix", "model/.ATTRIBUTES/", "--strip-prefix", "optimizer/.ATTRIBUTES/",
    )  # fmt: skip
    assert clash.returncode == 4 and "usage:" not in clash.stderr
    assert "NameConflictError: convert: tensors 'model/.ATTRIBUTES/..STATE_DICT' and " in clash.stderr
    assert not (tmp_path / "both.npz").exists()
    typo = cli("convert", src, str(tmp_path / "typo.safetensors"), "--strip-prefix", "modle/")
    assert typo.returncode == 3 and "starts with the prefix 'modle/'" in typo.stderr
    copy = cli("convert", src, str(tmp_path / "copy" / "ckpt-1"), "--strip-prefix", "model/")
    assert copy.returncode == 2 and copy.stderr.startswith("usage: trackpoint convert ")
    assert "renames the tensors of an exported file" in copy.stderr
