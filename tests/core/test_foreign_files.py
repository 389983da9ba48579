"""Another library's weights file or model directory, given where a checkpoint is wanted, is named with what to do.

Each file is made as its library writes it, by its first bytes (HDF5's signature, a zip archive's first member, a
pickle's protocol mark, a safetensors header): the tests need neither Keras, h5py nor TensorFlow.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp

#: The readers that take a checkpoint path, each with how its message starts.
READERS: list[tuple[str, Callable[[str], Any]]] = [
    ("Error when restoring from checkpoint", lambda p: tp.Checkpoint(v=tp.Variable(1.0)).restore(p)),
    ("Error when restoring from checkpoint", lambda p: tp.Checkpoint(v=tp.Variable(1.0)).read(p)),
    ("no checkpoint at", tp.load_checkpoint),
    ("no checkpoint at", tp.list_variables),
]


def refusals(path: Path | str) -> list[str]:
    messages = []
    for start, read in READERS:
        with pytest.raises(tp.ForeignCheckpointError) as caught:
            read(str(path))
        message = str(caught.value)
        assert message.startswith(f"{start} {str(path)!r}: it")
        assert "nothing is committed" not in message and "double-check" not in message  # not the generic advice
        messages.append(message)
    return messages


def test_a_keras_weights_file_says_how_to_make_a_checkpoint_of_it(tmp_path: Path) -> None:
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(504))
    for message in refusals(path):
        assert "it is a Keras weights file (HDF5, as model.save_weights writes), a format trackpoint does not read" in (
            message
        )
        assert "model.load_weights(path)" in message and "tf.train.Checkpoint(model=model).save(prefix)" in message
    # Anything else keeps the reader's own message.
    other = tmp_path / "notes.txt"
    other.write_text("not a checkpoint")
    for elsewhere in (other, tmp_path / "missing.h5", tmp_path / "ckpt-1"):
        with pytest.raises(tp.CheckpointNotFoundError, match="nothing is committed at that prefix"):
            tp.load_checkpoint(str(elsewhere))


def test_a_keras_model_archive_is_named_by_its_first_member(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        archive.writestr("config.json", "{}")
    for message in refusals(path):
        assert "it is a Keras model archive (as model.save('model.keras') writes)" in message


def test_a_torch_file_points_at_safetensors(tmp_path: Path) -> None:
    archive = tmp_path / "model.pt"
    with zipfile.ZipFile(archive, "w") as zf:  # torch.save's layout: <name>/data.pkl first
        zf.writestr("model/data.pkl", pickle.dumps({}))
        zf.writestr("model/version", "3\n")
    legacy = tmp_path / "pytorch_model.bin"
    legacy.write_bytes(pickle.dumps({"weight": [1.0]}, protocol=2))
    for path, what in [
        (archive, "it is a PyTorch file (the zip archive torch.save writes)"),
        (legacy, "it is a Python pickle (torch.save's format before PyTorch 1.6, or pickle.dump)"),
    ]:
        for message in refusals(path):
            assert what in message and "trackpoint never unpickles" in message
            assert "safetensors.torch.save_file(state_dict, 'model.safetensors')" in message


def test_a_safetensors_file_without_its_suffix_is_told_to_take_it(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "model.st"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    for message in refusals(path):
        assert "it is a safetensors file, which trackpoint reads by its '.safetensors' suffix only" in message
    path.rename(tmp_path / "model.safetensors")
    tp.Checkpoint(w=tp.Variable([0.0], dtype="float32")).restore(str(tmp_path / "model.safetensors"))


def test_a_saved_model_without_variables_or_its_graph_file(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "saved_model.pb").write_bytes(b"\x08\x01")
    for message in refusals(export):
        assert "it is a SavedModel directory without the checkpoint of its variables" in message
    for message in refusals(export / "saved_model.pb"):
        assert "it is the graph file of a SavedModel, which trackpoint does not read; pass the SavedModel's " in message
        assert repr(str(export)) in message


def test_a_file_in_a_store_is_named_by_its_suffix_without_reading_it() -> None:
    for message in refusals("memory://foreign/model.weights.h5"):
        assert "its name is that of an HDF5 file (as Keras' model.save_weights writes)" in message


def test_the_command_line_names_a_foreign_file_too(tmp_path: Path) -> None:
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(504))
    inspect = subprocess.run(
        [sys.executable, "-m", "trackpoint", "inspect", str(path)], capture_output=True, text=True, timeout=120
    )
    assert inspect.returncode == 3, inspect.stderr
    assert "ForeignCheckpointError" in inspect.stderr and "Keras weights file" in inspect.stderr
