"""Inspecting checkpoints: ``load_checkpoint``, ``list_variables``, ``object_metadata``, ``load_tree``.

The TensorFlow equivalents are ``tf.train.load_checkpoint``,
``tf.train.list_variables`` and ``tf.train.CheckpointView``'s graph. All I/O
goes through the storage contract.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import numpy as np

from trackpoint import _resolve
from trackpoint._array_values import _PYTHON_KINDS, PYTHON_NUMBERS_KEY
from trackpoint.errors import ArgumentTypeError, CheckpointKeyError, InvalidArgumentError, InvalidCheckpointError
from trackpoint.proto import trackable_object_graph_pb2 as pb
from trackpoint.stateful import NUMBER_TAGS, NUMBER_TYPES, parse_number_types
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, CheckpointReader, _options_argument

__all__ = ["TensorReader", "list_variables", "load_checkpoint", "load_tree", "object_metadata", "to_torch"]

#: Where ``load_tree`` puts the slot variables an optimizer holds, by the path of their variable.
SLOTS_KEY = ".OPTIMIZER_SLOT"


class TensorReader:
    """Read access to one checkpoint with TensorFlow's ``CheckpointReader`` methods.

    Wraps a backend's :class:`~trackpoint.storage.CheckpointReader`; close it
    with :meth:`close` or use it as a context manager. Closing it also closes
    the backend :func:`load_checkpoint` opened for it (a reader that is
    garbage collected unclosed is closed then).
    """

    def __init__(self, reader: CheckpointReader) -> None:
        self._reader = reader

    @property
    def prefix(self) -> str:
        """The checkpoint being read."""
        return self._reader.prefix

    def get_tensor(self, name: str | bytes) -> Any:
        """The tensor ``name``: an ndarray, or ``bytes`` for a scalar string.

        ``name`` is a checkpoint key (``model/kernel/.ATTRIBUTES/VARIABLE_VALUE``),
        a ``str`` or UTF-8 ``bytes``, as TensorFlow's reader takes it.

        Raises
        ------
        ArgumentTypeError
            ``name`` is neither ``str`` nor ``bytes``.
        CheckpointKeyError
            No such tensor; the message names the keys that start with
            ``name/`` (an object's path, as TensorFlow users often give).
        """
        key = tensor_name(name, "TensorReader.get_tensor")
        try:
            value = self._reader.read(key)
        except CheckpointKeyError as exc:
            raise _with_suggestions(exc, self._reader, key) from exc
        if value.dtype == np.dtype(object) and value.ndim == 0:
            return value[()]
        return value

    def get_slice(self, name: str | bytes, offset: Sequence[int], shape: Sequence[int]) -> Any:
        """The part ``offset .. offset + shape`` of the tensor ``name``, reading only what overlaps it.

        The checkpoint may hold the tensor whole or as slices of any
        partitioning (see :meth:`trackpoint.storage.CheckpointReader.read_slice`).
        What it returns is what :meth:`get_tensor` returns: an ndarray, or
        ``bytes`` for a scalar string (whose only part is the whole).

        Raises
        ------
        ArgumentTypeError
            ``name`` is neither ``str`` nor ``bytes``.
        CheckpointKeyError
            No such tensor (the message names the keys that start with ``name/``).
        ValueError
            The part does not lie inside the tensor.
        """
        key = tensor_name(name, "TensorReader.get_slice")
        try:
            value = self._reader.read_slice(key, offset, shape)
        except CheckpointKeyError as exc:
            raise _with_suggestions(exc, self._reader, key) from exc
        if value.dtype == np.dtype(object) and value.ndim == 0:
            return value[()]
        return value

    def has_tensor(self, name: str) -> bool:
        """Whether the checkpoint holds ``name``."""
        return self._reader.has(name)

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        """``{key: shape}`` for every tensor."""
        return {key: list(self._reader.info(key).shape) for key in self._reader.keys()}

    def get_variable_to_dtype_map(self) -> dict[str, np.dtype[Any]]:
        """``{key: dtype}`` for every tensor (``numpy.dtype(object)`` for strings)."""
        return {key: self._reader.info(key).dtype for key in self._reader.keys()}

    def close(self) -> None:
        """Release the underlying reader."""
        self._reader.close()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def tensor_name(name: object, call: str) -> str:
    """``name``, a tensor's checkpoint key given to ``call``, as a ``str`` (UTF-8 ``bytes`` are decoded).

    Raises
    ------
    ArgumentTypeError
        ``name`` is neither ``str`` nor ``bytes``.
    InvalidArgumentError
        ``name`` is ``bytes`` that are not UTF-8.
    """
    if type(name) is str:
        return name
    if isinstance(name, str):
        return str(name)
    if isinstance(name, bytes):
        # TensorFlow's reader takes bytes keys (compat.as_bytes); stored keys are UTF-8.
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(f"{call}: the tensor name {name!r} is not UTF-8 ({exc.reason})") from None
    raise ArgumentTypeError(
        f"{call}: the tensor name must be a str or UTF-8 bytes (a checkpoint key such as "
        f"'model/kernel/.ATTRIBUTES/VARIABLE_VALUE'), got {type(name).__name__} ({name!r:.80}); "
        "list_variables(path) lists the keys"
    )


#: At most this many keys are suggested by a refusal of a tensor name.
_MAX_SUGGESTED = 5


#: Beyond this many keys a missing name is not compared with each for a close spelling (it takes seconds).
_MAX_COMPARED: Final = 50_000


def _plain(key: str) -> str:
    """``key`` as a program names what it holds: ``model/.ATTRIBUTES/0..weight`` is ``model/0.weight``."""
    return key.replace("/.ATTRIBUTES/VARIABLE_VALUE", "").replace("/.ATTRIBUTES/", "/").replace("..", ".")


def _with_suggestions(exc: CheckpointKeyError, reader: CheckpointReader, name: str) -> CheckpointKeyError:
    """``exc`` (no tensor ``name``) naming the keys of ``reader`` under ``name/``, when there are any.

    TensorFlow users give an object's path (``"w"``, ``"model/dense/kernel"``) where a key is wanted
    (``"w/.ATTRIBUTES/VARIABLE_VALUE"``). Only on this failure path are the keys listed.
    """
    stem = name.rstrip("/") + "/"
    try:
        keys = [key for key in reader.keys() if key != OBJECT_GRAPH_KEY]
    except Exception:  # noqa: BLE001 - a reader that cannot list keys: the original refusal stands
        return exc
    found = sorted(key for key in keys if key.startswith(stem))
    message = str(exc.args[0]) if exc.args else f"no tensor {name!r}"
    if not found:
        # A name as the program writes it ("model/0.weight", a state dict's entry) for its key
        # ("model/.ATTRIBUTES/0..weight"), or a misspelling.
        plains: dict[str, list[str]] = {}
        for key in keys:
            plains.setdefault(_plain(key), []).append(key)
        meant = plains.get(_plain(name), [])
        if not meant and len(keys) <= _MAX_COMPARED:
            meant = [plains[p][0] for p in difflib.get_close_matches(_plain(name), plains, n=3, cutoff=0.8)]
        if not meant:
            return exc
        return CheckpointKeyError(
            f"{message}; did you mean {' or '.join(map(repr, meant))}?", backend=exc.backend, url=exc.url, key=exc.key
        )
    # A variable's value first: the key that was meant, most of the time.
    found.sort(key=lambda key: key != stem + ".ATTRIBUTES/VARIABLE_VALUE")
    shown = ", ".join(map(repr, found[:_MAX_SUGGESTED]))
    more = (
        f" and {len(found) - _MAX_SUGGESTED} more (list_variables lists them all)"
        if len(found) > _MAX_SUGGESTED
        else ""
    )
    if len(found) == 1:
        hint = f"{name!r} is the path of an object, whose value is saved under the full key {shown}: pass that key"
    else:
        hint = f"{name!r} is the path of an object, whose tensors are saved under the full keys {shown}{more}: pass one"
    return CheckpointKeyError(f"{message}; {hint}", backend=exc.backend, url=exc.url, key=exc.key)


def load_checkpoint(
    ckpt_dir_or_file: str | os.PathLike[str] | None = None,
    options: CheckpointOptions | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
) -> TensorReader:
    """A reader for the checkpoint at ``ckpt_dir_or_file``: a prefix, a directory (its latest), or a flat file.

    Called as ``tf.train.load_checkpoint(ckpt_dir_or_file)``. A committed prefix
    wins over a directory of the same name, and over a
    ``.safetensors`` / ``.npz`` file of that name, which is read as
    ``trackpoint convert`` reads it (its keys as exported). Without a
    backend chosen in ``options``, a checkpoint of any format stored at
    ``ckpt_dir_or_file`` is found (see :func:`trackpoint.plugins.detect_backends`).

    Parameters
    ----------
    ckpt_dir_or_file
        A checkpoint prefix, a directory (its latest checkpoint is read) or a
        ``.safetensors`` / ``.npz`` file; a local path, ``pathlib.Path`` or URL.
    options
        Chooses and configures the backend.
    path
        The former name of ``ckpt_dir_or_file``, still accepted as a keyword.

    Returns
    -------
    TensorReader
        TensorFlow's ``CheckpointReader`` interface; close it (or use it as a
        context manager) to release the backend it reads through.

    Raises
    ------
    CheckpointNotFoundError
        No checkpoint there; the message says a prefix (``dir/ckpt-1``) or a
        directory holding checkpoints is wanted (``ForeignCheckpointError``
        when another library's file is there).
    ArgumentTypeError
        ``ckpt_dir_or_file`` and ``path`` both given, or neither; or the path
        is not a ``str``, ``bytes`` or ``os.PathLike``.
    InvalidPathError
        The path is ``bytes`` that are not UTF-8.
    """
    from trackpoint._paths import argument
    from trackpoint._renamed import renamed

    # Checked as save and restore check theirs: an int or None is an ArgumentTypeError naming the call.
    where = argument(
        renamed("load_checkpoint", "ckpt_dir_or_file", ckpt_dir_or_file, "path", path),
        "load_checkpoint",
        "ckpt_dir_or_file",
    )
    # The reader keeps the one backend it reads through open until it is closed.
    options = _options_argument(options, "load_checkpoint")
    backends = _resolve.Backends()
    try:
        return TensorReader(backends.open_checkpoint(where, options)[1])
    finally:
        backends.close()


def list_variables(
    ckpt_dir_or_file: str | os.PathLike[str] | None = None,
    options: CheckpointOptions | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
) -> list[tuple[str, list[int]]]:
    """Sorted ``(key, shape)`` pairs of every tensor in a checkpoint, as ``tf.train.list_variables``.

    Parameters
    ----------
    ckpt_dir_or_file, options, path
        As for :func:`load_checkpoint` (``path`` is the former name of ``ckpt_dir_or_file``).

    Returns
    -------
    list of (str, list of int)
        Each tensor's key and shape, sorted by key.

    Raises
    ------
    CheckpointNotFoundError, ArgumentTypeError
        As :func:`load_checkpoint` raises them.
    """
    from trackpoint._renamed import renamed

    where = renamed("list_variables", "ckpt_dir_or_file", ckpt_dir_or_file, "path", path)
    with load_checkpoint(where, options) as reader:
        return sorted(reader.get_variable_to_shape_map().items())


def object_metadata(path: str | os.PathLike[str], options: CheckpointOptions | None = None) -> pb.TrackableObjectGraph:
    """The checkpoint's ``TrackableObjectGraph`` proto (``path`` as for :func:`load_checkpoint`).

    Raises
    ------
    InvalidCheckpointError
        The checkpoint has no object graph (a name-based checkpoint).
    """
    with load_checkpoint(path, options) as reader:
        return _object_graph(reader, os.fspath(path))


def _object_graph(reader: TensorReader, path: str) -> pb.TrackableObjectGraph:
    """The object graph ``reader``'s checkpoint holds (see :func:`object_metadata`)."""
    if not reader.has_tensor(OBJECT_GRAPH_KEY):
        raise InvalidCheckpointError(
            f"The specified checkpoint {reader.prefix!r} does not appear to be object-based (saved with "
            f"trackpoint.Checkpoint or tf.train.Checkpoint): it has no {OBJECT_GRAPH_KEY!r} tensor. "
            "Use load_checkpoint() to read its tensors by name."
        )
    raw = reader.get_tensor(OBJECT_GRAPH_KEY)
    proto = pb.TrackableObjectGraph()
    try:
        proto.ParseFromString(bytes(raw))
    except Exception as exc:
        raise InvalidCheckpointError(f"the object graph in {path!r} cannot be parsed: {exc}") from exc
    return proto


def load_tree(path: str | os.PathLike[str], options: CheckpointOptions | None = None) -> dict[str, Any]:
    """The checkpoint's values as nested dicts along its object graph, without the objects that saved them.

    What Orbax's ``restore`` without a target gives: a checkpoint read with nothing but numpy, whoever
    wrote it (trackpoint or TensorFlow).

    Parameters
    ----------
    path
        A checkpoint prefix, or a directory (its latest checkpoint), as for :func:`load_checkpoint`.
    options
        Selects and configures the backend.

    Returns
    -------
    dict
        The root object's children by name. An object that holds one value (a variable, a numpy value,
        a Python number, a JAX array or torch tensor saved where it was held) is that value: an ndarray,
        or ``bytes`` for a scalar string. An object saved through its state dict (a torch module or
        optimizer) is that state dict, rebuilt with numpy arrays in place of tensors. Any other object is
        a dict of its children by name, its own values under their attribute names (``py_state``, ...),
        and the slot variables of an optimizer under ``".OPTIMIZER_SLOT"``, by the path of their
        variable, then by slot name. An object reached by several paths is one value, found at each.

    Raises
    ------
    InvalidCheckpointError
        The checkpoint has no object graph (a name-based checkpoint: read it with
        :func:`load_checkpoint`), a child and a value of one object have the same name, or
        the types of its Python numbers (``_TRACKPOINT_PYTHON_NUMBERS``) cannot be read.
    CheckpointNotFoundError
        No checkpoint there.
    """
    from trackpoint.graph import escape_local_name
    from trackpoint.stateful import STATE_DICT_STRUCTURE, parse_structure, rebuild_state_dict
    from trackpoint.trackable import VARIABLE_VALUE_KEY

    with load_checkpoint(path, options) as reader:
        proto = _object_graph(reader, os.fspath(path))
        nodes = proto.nodes
        paths: dict[int, str] = {0: ""}
        # Breadth first, as the object graph names its nodes: each node's first path is its shortest. Slot
        # variables are no object's children: they come last.
        order = [0]
        for node_id in order:
            for child in nodes[node_id].children:
                if child.node_id not in paths:
                    parent, name = paths[node_id], escape_local_name(child.local_name)
                    paths[child.node_id] = f"{parent}/{name}" if parent else name
                    order.append(child.node_id)
        order += [node_id for node_id in range(len(nodes)) if node_id not in paths]
        built: dict[int, Any] = {}
        numbers = _python_numbers(reader)

        def value(key: str) -> Any:
            try:
                return reader.get_tensor(key)
            except CheckpointKeyError as exc:
                raise InvalidCheckpointError(
                    f"the object graph of {reader.prefix!r} names the tensor {key!r}, which the checkpoint lacks"
                ) from exc

        def state_dict(node_id: int, keys: dict[str, str]) -> Any:
            where = paths.get(node_id) or "(root)"

            def array(name: str, kind: str) -> Any:
                if name not in keys:
                    raise InvalidCheckpointError(
                        f"{where}: the saved state dict names the array {name!r}, which the checkpoint lacks"
                    )
                found = value(keys[name])
                return found[()] if kind == "scalar" and isinstance(found, np.ndarray) else found

            return rebuild_state_dict(parse_structure(value(keys[STATE_DICT_STRUCTURE]), where), array, where)

        # First the objects that stand for one value, then the others, which may hold those.
        grouping = []
        for node_id in order:
            node = nodes[node_id]
            keys = {attribute.name: attribute.checkpoint_key for attribute in node.attributes}
            alone = node_id != 0 and not node.children and not node.slot_variables  # the root is always a dict
            if alone and list(keys) == [VARIABLE_VALUE_KEY]:
                key = keys[VARIABLE_VALUE_KEY]
                found = value(key)
                number = numbers.get(key) or _TAGS.get(node.attributes[0].full_name)
                built[node_id] = found if number is None else _python_number(found, number)
            elif alone and STATE_DICT_STRUCTURE in keys:
                built[node_id] = state_dict(node_id, keys)
            else:
                built[node_id] = {}
                grouping.append((node_id, keys))
        for node_id, keys in grouping:
            node = nodes[node_id]
            entry = built[node_id]
            children = list(node.children)
            half = len(children) // 2
            if half and _namedtuple_edges(children, half):
                # A namedtuple's elements are its children by field name, then by position (TensorFlow's
                # rule): shown once, by name.
                children = children[:half]
            for child in children:
                entry[child.local_name] = built[child.node_id]
            for name, key in keys.items():
                if name in entry:
                    raise InvalidCheckpointError(
                        f"{paths.get(node_id) or '(root)'}: the object has a child and a value both named "
                        f"{name!r}; read them with load_checkpoint"
                    )
                entry[name] = value(key)
            for slot in node.slot_variables:
                variable = paths.get(slot.original_variable_node_id, str(slot.original_variable_node_id))
                slots = entry.setdefault(SLOTS_KEY, {}).setdefault(variable, {})
                slots[slot.slot_name] = built[slot.slot_variable_node_id]
    root: dict[str, Any] = built[0]
    return root


#: Python numbers by the name :data:`~trackpoint._array_values.PYTHON_NUMBERS_KEY` records for their type, and
#: by the ``full_name`` tag earlier writers recorded instead (one definition, shared with a restore's).
_NUMBER_TYPES: Final = NUMBER_TYPES
_TAGS: Final = NUMBER_TAGS


def full_name_keys(graph: pb.TrackableObjectGraph) -> dict[str, str]:
    """``{full_name: checkpoint key}`` of the attributes of ``graph`` (TensorFlow's ``object_graph_key_mapping``).

    What name-based lookups in an object-based checkpoint go through: :func:`trackpoint.object_graph_key_mapping`
    and a name-based :class:`~trackpoint.Saver` restoring such a checkpoint. An empty ``full_name`` (the
    attributes of an object that is no variable) names nothing and is left out, as are the ``python:int``,
    ``python:float`` and ``python:bool`` tags recorded in place of the names of Python numbers by earlier
    writers (``docs/format.md``), which many attributes share. Where attributes share a name, the last wins,
    as in TensorFlow.
    """
    mapping: dict[str, str] = {}
    for node in graph.nodes:
        for attribute in node.attributes:
            name = attribute.full_name
            if name and name not in _TAGS:
                mapping[name] = attribute.checkpoint_key
    return mapping


def _python_numbers(reader: TensorReader) -> dict[str, type]:
    """``{checkpoint key: int, float or bool}`` of the Python numbers the checkpoint records (see
    :data:`~trackpoint._array_values.PYTHON_NUMBERS_KEY`); empty when it records none.

    Raises
    ------
    InvalidCheckpointError
        The entry is not such a JSON object.
    """
    if not reader.has_tensor(PYTHON_NUMBERS_KEY):
        return {}
    raw = reader.get_tensor(PYTHON_NUMBERS_KEY)
    try:
        return parse_number_types(raw)
    except ValueError as exc:
        raise InvalidCheckpointError(
            f"the types of the Python numbers {reader.prefix!r} holds (its entry {PYTHON_NUMBERS_KEY!r}) cannot be "
            f"read: {exc}. It should hold a JSON object {{checkpoint key: one of "
            f"{sorted(_NUMBER_TYPES)}}}; read the values with load_checkpoint"
        ) from exc


def _python_number(found: Any, number: type) -> Any:
    """``found``, the value of a Python ``number`` saved in a checkpoint's container, as that number again.

    A value of another shape or kind than such a number is saved as (another writer's) is left as read.
    """
    if isinstance(found, np.ndarray) and found.shape == () and found.dtype.kind in _PYTHON_KINDS[number]:
        return number(found[()])
    return found


def _namedtuple_edges(children: list[Any], half: int) -> bool:
    """Whether the edges are a namedtuple's: ``half`` field names, then positions ``0..half-1`` to the same nodes."""
    return len(children) == 2 * half and all(
        not named.local_name.isdigit() and by_index.local_name == str(i) and named.node_id == by_index.node_id
        for i, (named, by_index) in enumerate(zip(children[:half], children[half:], strict=True))
    )


def to_torch(value: Any) -> Any:
    """``value`` with every numeric numpy array in it made a torch tensor: what a reader gave, for PyTorch.

    ``torch.from_numpy`` refuses bfloat16 and the float8 types (ml_dtypes' arrays, as readers return
    them); this hands their bits across as torch's type of the same name. Use it on what :func:`load_tree`,
    :meth:`TensorReader.get_tensor <trackpoint.TensorReader.get_tensor>` or :func:`load_variable` return,
    for example ``net.load_state_dict(tp.to_torch(tp.load_tree(path)["model"]))``.

    Parameters
    ----------
    value
        An array, or dicts, lists and tuples of them (any depth), beside other values.

    Returns
    -------
    Any
        The same structure (the same mapping and sequence types), numeric arrays and numpy scalars
        replaced by CPU tensors sharing their memory (read-only arrays are copied first). Strings
        (``bytes``, arrays of them), Python numbers and anything else are left as they are.

    Raises
    ------
    BackendUnavailableError
        PyTorch is not installed.
    UnsupportedDTypeError
        An array has a type torch lacks (``float8_e4m3b11fnuz``, int4); the message names where it is.
    """
    from trackpoint.errors import BackendUnavailableError

    try:
        import torch  # noqa: F401 - dtypes._numpy_to_torch finds it in sys.modules
    except ImportError as exc:
        raise BackendUnavailableError(
            "to_torch needs PyTorch: pip install 'trackpoint[torch]' (or install torch yourself)"
        ) from exc
    return _to_torch(value, "the value")


def _to_torch(value: Any, where: str) -> Any:
    from trackpoint import dtypes
    from trackpoint.errors import UnsupportedDTypeError

    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind not in "biufc" and not dtypes._is_ml_float(array.dtype):
            if array.dtype.kind in "OSU" or not dtypes.is_ml_dtype(array.dtype):
                return value  # strings and other non-numbers stay numpy's
            raise UnsupportedDTypeError(
                f"to_torch: {where} has dtype {array.dtype.name}, which torch has no type for; read it as numpy"
            )
        if dtypes._is_ml_float(array.dtype) and not hasattr(sys.modules["torch"], array.dtype.name):
            raise UnsupportedDTypeError(
                f"to_torch: {where} has dtype {array.dtype.name}, which this torch has no type for; read it as numpy"
            )
        if not array.flags.writeable:
            array = array.copy()  # torch warns on (and may write through) a read-only buffer
        return dtypes._numpy_to_torch(array)
    if isinstance(value, Mapping):
        items = [(k, _to_torch(v, f"{where}[{k!r}]")) for k, v in value.items()]
        # A shallow copy keeps what the type carries beside its items: an OrderedDict's `_metadata` (which
        # torch's load_state_dict reads), a defaultdict's factory; a Counter is not rebuilt from pairs.
        try:
            converted: Any = copy.copy(value)
            for k, v in items:
                converted[k] = v
        except TypeError:  # a read-only mapping
            return dict(items)
        return converted
    if isinstance(value, (list, tuple)):
        converted = [_to_torch(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, list):
            return converted if type(value) is list else type(value)(converted)
        fields = getattr(type(value), "_fields", None)
        return type(value)(*converted) if fields is not None else type(value)(converted)
    return value
