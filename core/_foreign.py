"""What a path that holds no checkpoint is, when another library wrote it: for the messages of failed reads.

A TensorFlow, Keras or PyTorch user porting a model hands the readers what their library saved: a Keras
``.weights.h5`` file, a ``.keras`` archive, a ``torch.save`` file, a SavedModel without its variables, an
Orbax run. "Nothing is committed at that prefix" is true of all of them and helps with none.
:func:`describe` names the file and what to do instead.

It runs only after a reader found no checkpoint at the path, never on a restore that succeeds. It reads at
most the first :data:`_HEAD` bytes of one local file and looks at a few local names; a path in an object
store is judged by its name alone (the store offers whole files only, and a weights file may be gigabytes),
apart from the small marker files of Orbax (:func:`trackpoint.state.orbax_checkpoint`) and PyTorch DCP.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Final

from trackpoint import _paths
from trackpoint import state as _state
from trackpoint.errors import CheckpointError

if TYPE_CHECKING:
    from trackpoint.storage import StorageBackend

__all__ = ["describe"]

#: Bytes read from the start of a local file: a zip's first local header with its member's name fits.
_HEAD: Final = 512

_HDF5_MAGIC: Final = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC: Final = b"PK\x03\x04"

_NOT_READ: Final = "a format trackpoint does not read"

_KERAS: Final = (
    "Load it into the Keras model (model.load_weights(path)) and save a TensorFlow checkpoint of that model, "
    "tf.train.Checkpoint(model=model).save(prefix) (Keras 2 also writes one with "
    "model.save_weights(prefix, save_format='tf')); then restore that checkpoint, whose object graph "
    "`trackpoint inspect --tree PREFIX` draws for mirroring. See 'Keras checkpoints' in trackpoint's "
    "'Coming from TensorFlow' page"
)
_TORCH: Final = (
    "trackpoint never unpickles. Load it with torch (torch.load(path, weights_only=True)) into the objects it "
    "was saved from and save them with trackpoint (tp.Checkpoint(model=model).save(prefix)), or write the state "
    "dict as a safetensors file (safetensors.torch.save_file(state_dict, 'model.safetensors')), which "
    "trackpoint reads: Checkpoint.restore, load_checkpoint and `trackpoint convert` take '.safetensors' files"
)
_ORBAX: Final = (
    "(trackpoint reads TensorFlow's object-based checkpoints, which its own save() writes). To go on from it, "
    "restore it with Orbax once, assign the values to this checkpoint's attributes and save them with "
    "trackpoint (ckpt.save(path), or manager.save(checkpoint_number=step)); then restore that checkpoint. See "
    "'Coming from Orbax' in trackpoint's documentation"
)

_DCP: Final = (
    "Load it with torch.distributed.checkpoint.load into the objects it was saved from and save them with "
    "trackpoint once (tp.Checkpoint(model=model).save(prefix)) to go on from them"
)

#: Suffixes that name another library's file, for paths in a store (read nothing there): what it is, advice.
_BY_SUFFIX: Final = {
    ".h5": ("an HDF5 file (as Keras' model.save_weights writes)", _KERAS),
    ".hdf5": ("an HDF5 file (as Keras' model.save_weights writes)", _KERAS),
    ".keras": ("a Keras model archive (as model.save('model.keras') writes)", _KERAS),
    ".pt": ("a PyTorch file (as torch.save writes)", _TORCH),
    ".pth": ("a PyTorch file (as torch.save writes)", _TORCH),
    ".bin": ("a PyTorch file (as torch.save writes pytorch_model.bin)", _TORCH),
}


def describe(path: str, store: StorageBackend) -> str | None:
    """Why ``path`` holds no checkpoint when another library wrote what is there, and what to do; else ``None``.

    Parameters
    ----------
    path
        A path at which no checkpoint was found.
    store
        The store the reader looked for it in: the marker files of Orbax and PyTorch DCP are looked for there.

    Returns
    -------
    str or None
        A clause for the reader's message, such as ``"it is an HDF5 file (...), a format trackpoint does not
        read. Load it into ..."``; ``None`` when nothing foreign is recognized there (the reader's own message
        stands). Never raises.
    """
    where = path.rstrip("/") or path
    orbax = _state.orbax_checkpoint(where, store)
    if orbax is not None:
        return f"it is {orbax}, {_NOT_READ} {_ORBAX}"
    try:
        dcp = store.read_file(_paths.join(where, ".metadata")) is not None
    except CheckpointError:
        dcp = False
    if dcp:
        return (
            f"it is a checkpoint of PyTorch distributed checkpointing (DCP; it holds '.metadata'), {_NOT_READ}. {_DCP}"
        )
    if _paths.is_url(where):
        name = where.rsplit("/", 1)[-1].lower()
        if name == "saved_model.pb":
            return _saved_model_graph(where)
        suffix = os.path.splitext(name)[1]
        if suffix not in _BY_SUFFIX:
            return None
        what, advice = _BY_SUFFIX[suffix]
        return f"its name is that of {what}, {_NOT_READ}. {advice}"
    try:
        local = _paths.strip_file_scheme(where) or os.curdir
        if os.path.isdir(local):
            return _directory(local)
        if os.path.basename(local).lower() == "saved_model.pb":
            return _saved_model_graph(where)
        if not os.path.isfile(local):
            return None  # nothing there, or a device or pipe, whose reading could block
        with open(local, "rb") as fh:
            head = fh.read(_HEAD)
            size = os.fstat(fh.fileno()).st_size
    except (CheckpointError, OSError, ValueError):
        return None  # nothing there, or nothing readable: the reader's own message says so
    return _file(local, head, size)


def _file(path: str, head: bytes, size: int) -> str | None:
    """What the local file ``path`` of ``size`` bytes is, from its first bytes ``head``."""
    name = os.path.basename(path).lower()
    if head.startswith(_HDF5_MAGIC):
        what = (
            "a Keras weights file (HDF5, as model.save_weights writes)"
            if name.endswith((".weights.h5", ".h5", ".hdf5"))
            else "an HDF5 file"
        )
        return f"it is {what}, {_NOT_READ}. {_KERAS}"
    if head.startswith(_ZIP_MAGIC):
        member = _first_member(head)
        if member.endswith("data.pkl") or member.endswith("/version") or member.endswith("/byteorder"):
            return f"it is a PyTorch file (the zip archive torch.save writes), {_NOT_READ}. {_TORCH}"
        if name.endswith(".keras") or member in ("metadata.json", "config.json", "model.weights.h5"):
            return f"it is a Keras model archive (as model.save('model.keras') writes), {_NOT_READ}. {_KERAS}"
        return None
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"it is a Python pickle (torch.save's format before PyTorch 1.6, or pickle.dump), {_NOT_READ}. {_TORCH}"
    if len(head) >= 10 and head[8:10] in (b"{}", b'{"'):
        (header,) = struct.unpack("<Q", head[:8])
        if 2 <= header <= size - 8:
            return (
                "it is a safetensors file, which trackpoint reads by its '.safetensors' suffix only: give the "
                "file that suffix (rename it, or link to it under such a name) and pass that name"
            )
    return None


def _first_member(head: bytes) -> str:
    """The name of the first member of a zip archive whose first bytes are ``head`` (``""`` if cut off)."""
    if len(head) < 30:
        return ""
    (length,) = struct.unpack("<H", head[26:28])
    return head[30 : 30 + length].decode("utf-8", "replace")


def _directory(path: str) -> str | None:
    """What the local directory ``path`` is, when it is a SavedModel without variables."""
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        return None
    # A SavedModel with variables was read already (its variables/variables): these lack them.
    return (
        "it is a SavedModel directory without the checkpoint of its variables ('variables/variables.index' and "
        "its data files are missing): trackpoint restores a SavedModel's variables from that checkpoint and does "
        "not read saved_model.pb. Copy the SavedModel whole (its variables/ directory included), or save the "
        "variables with tf.train.Checkpoint(model=model).save(prefix) and restore that"
    )


def _saved_model_graph(path: str) -> str:
    """``path`` is a SavedModel's ``saved_model.pb``."""
    directory = _paths.dirname(path) or "."
    return (
        f"it is the graph file of a SavedModel, which trackpoint does not read; pass the SavedModel's directory, "
        f"{directory!r}, whose variables (its checkpoint variables/variables) trackpoint restores"
    )
