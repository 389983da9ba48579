"""Objects that keep their state in a ``state_dict()``: PyTorch modules, optimizers, schedulers and the like.

An object that is not a :class:`~trackpoint.Trackable` but has
``state_dict()`` and ``load_state_dict()`` (the :class:`Stateful` protocol of
PyTorch's distributed checkpointing) is saved through its state dict wherever a
checkpoint meets it: given to a ``Checkpoint``, held by a list, dict or tuple,
or assigned to an ``AutoTrackable`` attribute. The holder keeps the object
itself; one node of the object graph saves it.

An object held in several places is one node, saved once.

What that node saves, under ``<path>/.ATTRIBUTES/<name>``:

* each array of the state dict (numpy values, torch tensors, JAX arrays),
  named by its keys joined with ``.`` as PyTorch names a module's entries
  (``0.weight``, ``state.0.exp_avg``; in a key, ``%`` is written ``%25``,
  ``/`` ``%2F``, a leading ``.`` ``%2E``, and an empty key is ``%``; two
  entries that come to the same name are refused); a ``DTensor`` (FSDP2,
  tensor parallelism) as this rank's local tensor, the slice of the whole
  tensor torch places it at (several slices under a strided shard whose rows
  interleave), which the ranks of a coordinated save merge into one tensor
  (``Shard``, ``_StridedShard`` and ``Replicate`` placements; see
  :class:`_DTensorValue`); an array the state dict holds under several keys
  (tied weights) once, under its first key, the structure naming that array
  for the others, so that a restore hands the one tensor to every key (see
  :func:`trackpoint._array_values._identity` for when two entries are one array);
* ``.STATE_DICT``, a JSON string with the state dict's structure: its keys
  (strings or integers), its mappings (``dict``, ``OrderedDict`` with torch's
  ``_metadata``, ``Counter``), lists and tuples, the place of each array, and
  every plain Python value (``None``, booleans, numbers, strings, bytes).

An empty state dict (a ``ReLU``, a loss) saves nothing, so such objects never
make a checkpoint look incomplete. A state dict is saved as a tree: one that
holds itself (a container inside it that contains that container), or whose
containers nest more than :data:`MAX_STATE_DICT_DEPTH` levels deep, is refused
with :class:`~trackpoint.errors.TrackableError` naming where.

A restore rebuilds the state dict the checkpoint holds and hands it to
``load_state_dict``. Arrays the object has now (same place, dtype and shape)
are read into their memory first, as PyTorch's distributed checkpointing
does; entries the object lacks (an optimizer's moments before its first
step, a lazy module's parameters) are created: torch tensors on the CPU,
numpy arrays, numpy scalars, JAX arrays on the default device, as they were
saved; a torch optimizer's entry of the whole shape of its DTensor parameter
as a DTensor placed like that parameter (of which this rank reads its part).
DTensors are read in place, each rank only its part of the stored tensor,
whatever the placements and number of ranks of the save. The object checks
the result as it always does
(``Module.load_state_dict`` refuses missing and unexpected keys). A
checkpoint written from the state dict given as a dict
(``Checkpoint(model=net.state_dict())``, a variable node per key) restores
into the object too: a module's arrays in place, without ``load_state_dict``;
any other object's state dict (``optimizer=opt.state_dict()``) rebuilt from
those nodes, typed by the object's own, and loaded (see :class:`_Rebuild`).

A module's keys are saved as if no submodule were compiled (``0.weight``, not
``0._orig_mod.weight``), as PyTorch DCP saves them; a restore takes either.
A restore loads the modules whose tensors on the 'meta' device it fills
before the other objects, so that an optimizer's state lands on its
parameters' memory (see :meth:`StatefulValue._order_restores`).
"""

from __future__ import annotations

import collections
import inspect
import itertools
import json
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import numpy as np

from trackpoint import dtypes
from trackpoint._array_values import (
    PYTHON_NUMBERS,
    PYTHON_NUMBERS_KEY,
    _copy_into_tensor,
    _identity,
    _is_meta,
    _memory,
    _NumpyValue,
    _same_values,
    is_array_value,
    is_dtensor,
    is_jax_array,
)
from trackpoint._slices import TensorSlice
from trackpoint.errors import (
    AssignmentError,
    DTypeMismatchError,
    InvalidCheckpointError,
    NotTrackableError,
    ShapeMismatchError,
    TrackableError,
)
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable

if TYPE_CHECKING:
    from trackpoint.storage import TensorInfo

__all__ = [
    "STATE_DICT_STRUCTURE",
    "NonStrict",
    "Stateful",
    "StatefulValue",
    "is_stateful",
    "parse_structure",
    "rebuild_state_dict",
    "stateful_node",
    "structure_changes",
]

_log = logging.getLogger("trackpoint")

#: Attribute name of the JSON structure of a saved state dict. No array's name starts with ``.``.
STATE_DICT_STRUCTURE = ".STATE_DICT"
_FORMAT_VERSION = 1
#: How deeply the containers of a state dict may nest. Real ones nest a few levels (an optimizer's
#: ``state[0]["exp_avg"]``); far deeper nesting is a mistake, and each level costs several frames of
#: Python's stack when saved (the JSON of the structure too) and restored, which would run out near 300.
MAX_STATE_DICT_DEPTH = 100


@runtime_checkable
class Stateful(Protocol):
    """An object a checkpoint saves through ``state_dict()`` and restores through ``load_state_dict()``.

    PyTorch's modules, optimizers, learning-rate schedulers and gradient
    scalers have both methods, as has anything written for PyTorch's
    distributed checkpointing (``torch.distributed.checkpoint.stateful``).
    Trackables are never treated as ``Stateful``: they save themselves.
    """

    def state_dict(self) -> Mapping[Any, Any]:
        """The state to save: a mapping of arrays, Python values and nested lists, tuples and mappings."""

    def load_state_dict(self, state_dict: Any) -> Any:
        """Take back a state dict as :meth:`state_dict` returned it."""


def is_stateful(value: Any) -> bool:
    """Whether ``value`` is saved through its state dict (see :class:`Stateful`).

    Parameters
    ----------
    value
        Any value; a trackable or a class is never ``Stateful``.

    Returns
    -------
    bool
        ``value`` has callable ``state_dict`` and ``load_state_dict`` attributes.
    """
    if isinstance(value, (Trackable, type)):
        return False
    try:
        return callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None))
    except Exception:  # noqa: BLE001 -- an object whose attribute lookup fails is simply not Stateful
        return False


def _component(key: str | int) -> str:
    # "/" would split the name in exports and key filters, and a leading "." is kept for STATE_DICT_STRUCTURE;
    # "." inside a key stays, as in a torch module's keys ("0.weight"): names that collide are refused.
    text = str(key).replace("%", "%25").replace("/", "%2F")
    if not text:
        return "%"  # an empty key: a bare "%" is no escape of anything
    return "%2E" + text[1:] if text.startswith(".") else text


#: The mappings a state dict may hold, by the name saved in its structure (torch's ``MultiStepLR`` keeps a
#: ``Counter``; a module's state dict is an ``OrderedDict``).
_MAPPINGS: dict[str, type[dict[Any, Any]]] = {
    "dict": dict,
    "OrderedDict": collections.OrderedDict,
    "Counter": collections.Counter,
}
_MAPPING_NAMES = {kind: name for name, kind in _MAPPINGS.items()}

#: The node of each Stateful object, by id: an object held in several places is one node, saved once.
_NODES: dict[int, weakref.ref[StatefulValue]] = {}
#: Makes a lookup and the insertion of a new node one step: threads tracking one object get one node.
_NODES_LOCK = threading.Lock()


def stateful_node(obj: Any, where: str) -> StatefulValue:
    """The object graph's node for the :class:`Stateful` ``obj`` (the same node wherever ``obj`` is held).

    Parameters
    ----------
    obj
        The object.
    where
        Where it is held, for messages (the first holder's name is kept).
    """
    obj = unwrapped(obj)
    key = id(obj)
    with _NODES_LOCK:
        ref = _NODES.get(key)
        node = None if ref is None else ref()
        # The node holds its object, so while it lives no other object can have this id.
        if node is None:
            node = StatefulValue(obj, where)

            def forget(dead: weakref.ref[StatefulValue], key: int = key) -> None:
                if _NODES.get(key) is dead:
                    del _NODES[key]

            _NODES[key] = weakref.ref(node, forget)
    return node


#: Wrappers of a torch module that add a prefix to its state dict's keys, and the attribute holding the module:
#: ``torch.compile``'s (``_orig_mod.``), ``DataParallel``'s and ``DistributedDataParallel``'s (``module.``).
_WRAPPERS: Final = {
    ("torch._dynamo.eval_frame", "OptimizedModule"): "_orig_mod",
    ("torch.nn.parallel.data_parallel", "DataParallel"): "module",
    ("torch.nn.parallel.distributed", "DistributedDataParallel"): "module",
}


def unwrapped(obj: Any) -> Any:
    """The module a ``torch.compile``, ``DataParallel`` or ``DistributedDataParallel`` wrapper holds; else ``obj``.

    Saved through the module itself, a checkpoint has the same keys whether the program compiled or wrapped
    its model or not, as PyTorch DCP's ``get_model_state_dict`` gives: a compiled model restores an eager
    run's checkpoint and the other way round. Matched by class name and module, so torch is not imported.
    """
    for _ in range(8):  # wrappers nest (a compiled DDP model); a bound, as a wrapper could hold itself
        cls = type(obj)
        attribute = _WRAPPERS.get((cls.__module__, cls.__name__))
        inner = None if attribute is None else getattr(obj, attribute, None)
        if inner is None:
            return obj
        obj = inner
    return obj


class NonStrict:
    """Restore an object from the entries a checkpoint has for it; leave the others as they are.

    ``tp.Checkpoint(model=tp.NonStrict(net))`` saves exactly what
    ``tp.Checkpoint(model=net)`` saves, so either restores the other's
    checkpoints. A restore hands the state dict rebuilt from the checkpoint
    to ``load_state_dict(state_dict, strict=False)``: a module that gained a
    layer since (a new head to fine-tune) keeps that layer's initial values,
    and entries the checkpoint has beyond the module's are ignored. The
    entries both have must still agree in dtype and shape (a mismatch is
    refused before anything is read, as for every restore).

    Parameters
    ----------
    obj
        A :class:`Stateful` object whose ``load_state_dict`` takes
        ``strict`` (PyTorch modules do; optimizers do not).

    Attributes
    ----------
    obj
        The object given.
    missing_keys, unexpected_keys
        After a restore, what ``load_state_dict`` reported: the object's
        entries the checkpoint lacked, and the checkpoint's entries the
        object has no place for. Empty before the first restore.

    Raises
    ------
    NotTrackableError
        ``obj`` is not :class:`Stateful`, or its ``load_state_dict`` takes no
        ``strict`` argument.
    """

    __slots__ = ("missing_keys", "obj", "unexpected_keys")

    obj: Any
    missing_keys: list[str]
    unexpected_keys: list[str]

    def __init__(self, obj: Any) -> None:
        if isinstance(obj, NonStrict):
            obj = obj.obj
        if not is_stateful(obj):
            raise NotTrackableError(
                f"NonStrict needs an object with state_dict() and load_state_dict() (a torch module), got "
                f"{dtypes._describe_typed(obj)}"
            )
        if not _takes_strict(obj.load_state_dict):
            raise NotTrackableError(
                f"NonStrict({type(obj).__name__}): its load_state_dict() takes no `strict` argument, so it "
                "cannot leave entries out (torch modules' does; an optimizer's state is restored whole). Give "
                "the object itself to the checkpoint"
            )
        self.obj = unwrapped(obj)
        self.missing_keys = []
        self.unexpected_keys = []

    def state_dict(self) -> Mapping[Any, Any]:
        """The object's state dict, unchanged."""
        state: Mapping[Any, Any] = self.obj.state_dict()
        return state

    def load_state_dict(self, state_dict: Any) -> Any:
        """``obj.load_state_dict(state_dict, strict=False)``; records what it left out."""
        result = self.obj.load_state_dict(state_dict, strict=False)
        self.missing_keys = [str(key) for key in getattr(result, "missing_keys", ())]
        self.unexpected_keys = [str(key) for key in getattr(result, "unexpected_keys", ())]
        if self.missing_keys or self.unexpected_keys:
            _log.info(
                "restored %s without %d of its entries the checkpoint lacks (%s) and ignoring %d entries it has no "
                "place for (%s)",
                type(self.obj).__name__,
                len(self.missing_keys),
                ", ".join(self.missing_keys[:10]),
                len(self.unexpected_keys),
                ", ".join(self.unexpected_keys[:10]),
            )
        return result

    def __repr__(self) -> str:
        return f"NonStrict({type(self.obj).__name__})"


def _takes_strict(method: Callable[..., Any]) -> bool:
    """Whether ``method`` accepts a ``strict`` keyword (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: it cannot be asked, so it is not assumed
        return False
    return any(p.name == "strict" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _module(obj: Any) -> Any:
    """The torch module ``obj`` is or restores (through :class:`NonStrict`); ``None`` for other objects."""
    target = obj.obj if isinstance(obj, NonStrict) else obj
    return target if callable(getattr(target, "get_submodule", None)) else None


def _materialize(module: Any, state: Mapping[str, Any]) -> None:
    """Give the tensors of ``module`` on the 'meta' device the checkpoint's values, keeping each tensor object.

    ``load_state_dict(..., assign=True)`` would put new Parameter objects in the module, so an optimizer made
    beforehand would go on holding the empty ones and train nothing; ``torch.utils.swap_tensors`` keeps the
    objects and replaces what they hold. Entries the checkpoint lacks stay on 'meta' (see the caller).
    """
    import torch

    for key, tensor in module.state_dict(keep_vars=True).items():
        value = state.get(key)
        if not _is_meta(tensor) or value is None or not isinstance(value, torch.Tensor):
            continue
        # Cast as load_state_dict's copy_ would; detached: a new tensor object (on the state dict's memory) for
        # the swap, which must leave the state dict's own entry as it is.
        value = value.to(tensor.dtype).detach()
        if isinstance(tensor, torch.nn.Parameter):
            value = torch.nn.Parameter(value, requires_grad=tensor.requires_grad)
        swap: Callable[[Any, Any], None] = torch.utils.swap_tensors
        swap(tensor, value)


#: The attribute ``torch.compile``'s wrapper holds its module in: a segment of every key of a compiled submodule
#: (``m[0] = torch.compile(m[0])`` makes ``0.weight`` ``0._orig_mod.weight``).
_COMPILED: Final = "_orig_mod"


def _uncompiled(key: str) -> str:
    """``key`` without the segments a compiled submodule adds to it (``0._orig_mod.weight`` -> ``0.weight``)."""
    if _COMPILED not in key:
        return key
    return ".".join(part for part in key.split(".") if part != _COMPILED)


class _Spelling:
    """How a module with compiled submodules spells the keys its checkpoint holds without ``_orig_mod.``.

    Attributes
    ----------
    keys
        The module's own key of each saved key.
    metadata
        The keys of the module's ``_metadata`` (one per submodule, wrappers included).
    """

    __slots__ = ("keys", "metadata")

    def __init__(self, keys: dict[str, str], metadata: tuple[str, ...]) -> None:
        self.keys = keys
        self.metadata = metadata


def _without_compiled(state: Any) -> tuple[Any, _Spelling | None]:
    """A module's state dict with its keys as the module would have them uncompiled, and how to spell them back.

    PyTorch DCP's ``get_model_state_dict`` drops ``_orig_mod`` at every level, so that compiled and eager runs
    share checkpoints; so does a save here, of a compiled submodule as of a compiled model (see
    :func:`unwrapped`). Keys that would then collide are kept as they are (a submodule named ``_orig_mod``
    that is no compiled one).
    """
    if not isinstance(state, Mapping) or not any(isinstance(key, str) and _COMPILED in key for key in state):
        return state, None
    keys: dict[Any, Any] = {}
    for key in state:
        plain = _uncompiled(key) if isinstance(key, str) else key
        if plain in keys:
            return state, None
        keys[plain] = key
    renamed: Any = collections.OrderedDict((plain, state[key]) for plain, key in keys.items())
    metadata = getattr(state, "_metadata", None)
    if isinstance(metadata, dict):
        # torch records a module's metadata before its children's: the compiled module's own entry comes after
        # its wrapper's under the same plain key, and is the one an eager module of that name has.
        renamed._metadata = {
            _uncompiled(key) if isinstance(key, str) else key: value for key, value in metadata.items()
        }
    return renamed, _Spelling(keys, tuple(metadata) if isinstance(metadata, dict) else ())


def _respelled(key: Any, own: set[Any]) -> Any:
    """``key`` of a checkpoint as a module whose keys are ``own`` has it: uncompiled only into one of them."""
    if not isinstance(key, str) or key in own:
        return key
    plain = _uncompiled(key)
    return plain if plain in own else key


def _as_spelled(state: Any, spelling: _Spelling | None, module: Any) -> Any:
    """A module's state dict rebuilt from a checkpoint, with its keys spelled as the module spells them.

    Either spelling is taken: keys saved without ``_orig_mod.`` (this trackpoint) and keys saved with it (a
    compiled submodule saved by an older one), for a compiled module and an eager one alike. Without a
    spelling (``module`` compiles nothing, or has a submodule of its own named ``_orig_mod`` whose keys would
    collide once uncompiled), a key keeps ``_orig_mod.`` when ``module`` has it so: only a key the module
    lacks is uncompiled, and only into one it has.
    """
    if not isinstance(state, Mapping):
        return state
    if spelling is None and not any(isinstance(key, str) and _COMPILED in key for key in state):
        return state
    renamed: Any = type(state)()
    own: set[Any] = set()
    own_metadata: set[Any] = set()
    if spelling is None:
        current = module.state_dict()
        own, own_metadata = set(current), set(getattr(current, "_metadata", None) or ())
        for key, value in state.items():
            renamed[_respelled(key, own)] = value
    else:
        for key, value in state.items():
            plain = _uncompiled(key) if isinstance(key, str) else key
            renamed[spelling.keys.get(plain, plain)] = value
    metadata = getattr(state, "_metadata", None)
    if isinstance(metadata, dict):
        if spelling is None:
            renamed._metadata = {_respelled(k, own_metadata): v for k, v in metadata.items()}
        else:
            found = {}
            for key in spelling.metadata:
                plain = _uncompiled(key)
                if key in metadata or plain in metadata:
                    found[key] = metadata[key] if key in metadata else metadata[plain]
            renamed._metadata = found
    return renamed


def _optimizer_params(obj: Any) -> list[Any] | None:
    """The parameters of the torch optimizer ``obj`` in its state dict's order; ``None`` for other objects.

    A torch optimizer's state dict numbers its parameters in the order of its ``param_groups`` (``state.0``
    is the first group's first parameter), and its ``load_state_dict`` maps them back by that order.
    """
    groups = getattr(obj, "param_groups", None)
    if not isinstance(groups, list):
        return None
    return [p for group in groups if isinstance(group, Mapping) for p in group.get("params", ())]


#: The entries of the per-parameter state of torch's own optimizers that torch creates in the shape of their
#: parameter (``zeros_like(p)``), by class: only those are checked against the parameter's shape. Exact
#: classes, as a subclass may keep other state under these names; other optimizers' state is not of that shape
#: in general (Adafactor's factored moments, LBFGS's history) and is left to their ``load_state_dict``.
_PARAM_SHAPED_STATE: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("torch.optim.sgd", "SGD"): frozenset({"momentum_buffer"}),
    ("torch.optim.adam", "Adam"): frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    ("torch.optim.adamw", "AdamW"): frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    ("torch.optim.adamax", "Adamax"): frozenset({"exp_avg", "exp_inf"}),
    ("torch.optim.nadam", "NAdam"): frozenset({"exp_avg", "exp_avg_sq"}),
    ("torch.optim.radam", "RAdam"): frozenset({"exp_avg", "exp_avg_sq"}),
    ("torch.optim.adagrad", "Adagrad"): frozenset({"sum"}),
    ("torch.optim.adadelta", "Adadelta"): frozenset({"square_avg", "acc_delta"}),
    ("torch.optim.rmsprop", "RMSprop"): frozenset({"square_avg", "momentum_buffer", "grad_avg"}),
    ("torch.optim.rprop", "Rprop"): frozenset({"prev", "step_size"}),
    ("torch.optim.asgd", "ASGD"): frozenset({"ax"}),
    ("torch.optim.sparse_adam", "SparseAdam"): frozenset({"exp_avg", "exp_avg_sq"}),
}


def _state_entry(name: str) -> tuple[int, str] | None:
    """``(parameter number, entry)`` of an optimizer state dict's array name ``state.<number>.<entry>``."""
    parts = name.split(".", 2)
    if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2]


def _dtensor_layout(dtensor: Any, where: str) -> tuple[Any, tuple[int, ...], list[np.ndarray[Any, Any] | None]]:
    """This rank's local tensor of ``dtensor``, the whole shape, and which indices of the whole tensor it holds.

    The third result gives, per dimension, the index in the whole tensor of each index of the local tensor
    (``local[i, j]`` is ``whole[rows[i], cols[j]]``), or ``None`` for a dimension no placement shards (all of
    it). ``Shard`` placements leave one stretch of consecutive indices; strided shards (``_StridedShard``,
    which FSDP2 places over tensor parallelism sharding the same dimension) may leave several. Each
    dimension is cut as torch lays the DTensor out (see :func:`_shard_cuts`).

    Raises
    ------
    TrackableError
        A placement other than ``Shard``, ``_StridedShard`` and ``Replicate`` (``Partial`` holds addends, not
        parts), a mesh without this rank, a local tensor of another shape than its part, or strided shards on
        a torch that does not say how it lays them out.
    """
    torch = sys.modules["torch"]
    placements = sys.modules["torch.distributed.tensor.placement_types"]
    # Private, and absent from older torch, which then has no strided shards: Shard placements save all the same.
    strided = getattr(placements, "_StridedShard", None)
    shards = (placements.Shard,) if strided is None else (placements.Shard, strided)
    for placement in dtensor.placements:
        if isinstance(placement, placements.Partial):
            raise TrackableError(
                f"{where} is a DTensor with a Partial placement ({placement!r} on {dtensor.device_mesh}): each rank "
                "holds an addend of the value, not a part of it, so no rank's tensor is the saved value; reduce it "
                "first (dtensor.redistribute(placements=[Replicate()] * mesh.ndim), or full_tensor()) and save that"
            )
        # Exact types: a placement derived from these may place its parts otherwise than their split does.
        if type(placement) not in (*shards, placements.Replicate):
            raise TrackableError(
                f"{where} is a DTensor with the placement {placement!r} (of type {type(placement).__qualname__}), "
                "which trackpoint cannot save: only Shard, _StridedShard and Replicate placements, whose local "
                "tensors are parts of the whole tensor as their split places them, are; redistribute it to those "
                "(dtensor.redistribute(placements=...)) before saving"
            )
    mesh = dtensor.device_mesh
    coordinate = mesh.get_coordinate()
    if coordinate is None:
        # torch gives such a rank an empty chunk of no dimensions, no part of the tensor a slice could name.
        raise TrackableError(
            f"{where} is a DTensor on a device mesh that does not include this rank ({mesh}): "
            "this rank holds no part of it, yet every rank of a coordinated save holds the same objects; give "
            "each rank only the modules on its own mesh, or place the tensor on a mesh of every rank"
        )
    full_shape = tuple(int(d) for d in dtensor.shape)
    # Which part is this rank's: the indices of each dimension, cut in torch's order, this rank keeping its mesh
    # coordinate's part at each cut. Worked on the indices alone, it says where each local row lies.
    sharded: dict[int, np.ndarray[Any, Any]] = {}
    for dim, cuts in _shard_cuts(dtensor, shards, strided, where).items():
        held = np.arange(full_shape[dim])
        for mesh_dim, split in cuts:
            parts, part = int(mesh.size(mesh_dim)), int(coordinate[mesh_dim])
            held = _chunk(held, parts, part) if split is None else _strided_part(split, held, parts, part, where)
        sharded[dim] = held
    # Under no_grad: the local tensor of a parameter otherwise carries an autograd node, several times the cost.
    with torch.no_grad():
        local = dtensor.to_local()
    indices = [sharded.get(d) for d in range(len(full_shape))]
    shape = tuple(n if index is None else len(index) for n, index in zip(full_shape, indices, strict=True))
    # The check one rank can make alone: a wrong order of the same sizes would pass it (the tests compare the
    # indices with torch's own placement of the data, over many meshes, placements and sizes).
    if shape != tuple(local.shape):
        raise TrackableError(
            f"{where}: the DTensor's local tensor (shape {tuple(local.shape)}) is not the part its placements "
            f"{list(dtensor.placements)} give this rank as trackpoint reads them (shape {shape}); save "
            f"full_tensor() instead, and report this with your torch version ({_torch_version()})"
        )
    return local, full_shape, indices


def _torch_version() -> str:
    """The version of the torch imported, for messages."""
    return str(getattr(sys.modules["torch"], "__version__", "unknown"))


def _shard_cuts(
    dtensor: Any, shards: tuple[type, ...], strided: type | None, where: str
) -> dict[int, list[tuple[int, Any]]]:
    """How torch cuts each sharded dimension of ``dtensor``: (mesh dimension, split) per cut, in torch's order.

    The split is ``None`` for ``torch.chunk``'s (``Shard``'s), or a ``_StridedShard`` placement whose own
    split applies. Without strided shards, each dimension is cut over its mesh dimensions left to right. A
    strided shard means one of two things, and torch's DTensor says which
    (``DTensorSpec.use_strided_shard_as_shard_order``, torch 2.13):

    - a *shard order*, for placements given to torch (FSDP2's among them): the split factor of a strided
      shard is the product of the sizes of the mesh dimensions that cut its dimension before it, and each
      cut is a ``torch.chunk`` of what the earlier ones left. FSDP2 over tensor parallelism on a
      ``(dp, tp)`` mesh, ``_StridedShard(0, sf=tp), Shard(0)``, cuts the rows over tp first, then each
      part over dp (7 rows on a (3, 2) mesh: rows 0-1, 2-3, none | 4, 5, 6);
    - the placements left to right, each strided shard by its own split (the dimension in ``sf`` chunks,
      each chunk over the mesh dimension, a rank's pieces of every chunk together), for a view's strided
      shard (``flatten`` of a column-sharded tensor), and where no shard order gives the split factors.

    The two agree where every cut is even. The order is decoded by torch's own function.

    Raises
    ------
    TrackableError
        Strided shards on a torch without the flag or the decoding this reads.
    """
    placements = tuple(dtensor.placements)
    cuts = [(mesh_dim, p) for mesh_dim, p in enumerate(placements) if type(p) in shards]
    if strided is not None and any(type(p) is strided for _, p in cuts):
        spec = getattr(dtensor, "_spec", None)
        as_order = getattr(spec, "use_strided_shard_as_shard_order", None)
        if not isinstance(as_order, bool):
            raise _torch_lacks(where, "DTensorSpec.use_strided_shard_as_shard_order")
        if as_order:
            decode = getattr(type(spec), "_maybe_convert_StridedShard_to_shard_order", None)
            if decode is None:
                raise _torch_lacks(where, "DTensorSpec._maybe_convert_StridedShard_to_shard_order")
            try:
                order = decode(placements, dtensor.device_mesh)
                if order is not None:
                    return {int(entry.tensor_dim): [(int(m), None) for m in entry.mesh_dims] for entry in order}
            except (AttributeError, TypeError, ValueError) as error:
                what = "DTensorSpec._maybe_convert_StridedShard_to_shard_order as trackpoint calls it"
                raise _torch_lacks(where, what) from error
    by_dim: dict[int, list[tuple[int, Any]]] = {}
    for mesh_dim, placement in cuts:
        by_dim.setdefault(int(placement.dim), []).append((mesh_dim, placement if type(placement) is strided else None))
    return by_dim


def _chunk(held: np.ndarray[Any, Any], parts: int, part: int) -> np.ndarray[Any, Any]:
    """Part ``part`` of ``held`` cut in ``parts`` as ``torch.chunk`` cuts (``Shard``'s documented split).

    Parts of ``ceil(len / parts)`` values, the last shorter and any past the end empty (5 in 4: 2, 2, 1, 0).
    """
    size = -(-len(held) // parts)
    return held[part * size : (part + 1) * size]


def _strided_part(
    placement: Any, held: np.ndarray[Any, Any], parts: int, part: int, where: str
) -> np.ndarray[Any, Any]:
    """Part ``part`` of ``held`` cut in ``parts`` by the strided shard ``placement``'s own split (torch's)."""
    torch = sys.modules["torch"]
    # The split acts on the placement's dimension: the indices laid along it, every other dimension of size 1.
    along = torch.from_numpy(held).reshape((1,) * int(placement.dim) + (-1,))
    try:
        pieces, _ = placement._split_tensor(along, parts, with_padding=False, contiguous=False)
        result: np.ndarray[Any, Any] = pieces[part].reshape(-1).numpy()
    except (AttributeError, TypeError, ValueError, IndexError, AssertionError) as error:
        raise _torch_lacks(where, f"_StridedShard._split_tensor as trackpoint calls it ({placement!r})") from error
    return result


def _torch_lacks(where: str, what: str) -> TrackableError:
    """The error for strided shards on a torch whose private DTensor code is not what trackpoint reads."""
    return TrackableError(
        f"{where} is a DTensor with strided shards (_StridedShard placements), and this torch "
        f"({_torch_version()}) lacks {what}, which trackpoint reads to know where each rank's rows lie "
        "(torch 2.13 has it): upgrade torch, or save dtensor.full_tensor() instead"
    )


def _runs(index: np.ndarray[Any, Any] | None, size: int) -> list[tuple[int, int, int]]:
    """The stretches of consecutive values of ``index`` (``None``: ``0 .. size``): (first value, position, length)."""
    if index is None:
        return [(0, 0, size)] if size else []
    if not len(index):
        return []
    starts = [0, *(int(i) + 1 for i in np.flatnonzero(np.diff(index) != 1))]
    ends = [*starts[1:], len(index)]
    return [(int(index[s]), s, e - s) for s, e in zip(starts, ends, strict=True)]


class _DTensorValue(_NumpyValue):
    """A DTensor in a state dict: saved as the slices of the whole tensor this rank holds, restored by reading them.

    The node saves and restores the DTensor's local tensor; :meth:`current` is the DTensor, which a restore
    hands to ``load_state_dict`` (it never replaces it). A local tensor that is the whole tensor (placements
    ``Replicate`` on every mesh dimension, a mesh of one rank) is saved as a plain value: every rank holding
    it makes it a replicated value, written once. Under ``Shard`` placements the local tensor is one block of
    the whole tensor, one slice, read in place. Under a strided shard it may be several blocks (rows 0-1 and
    5 of 9 rows): each is saved as a slice of its own, and a restore reads the smallest block that holds them
    all, then takes this rank's elements from it.

    Parameters
    ----------
    dtensor
        The DTensor.
    name, where
        Its attribute name and where it is held, as for :class:`_NumpyValue`.

    Raises
    ------
    TrackableError
        The DTensor cannot be saved as slices (see :func:`_dtensor_layout`), or holds no data (the 'meta' device).
    """

    def __init__(self, dtensor: Any, name: str, where: str) -> None:
        local, full_shape, indices = _dtensor_layout(dtensor, where)
        if _is_meta(local):
            raise TrackableError(
                f"{where} is a DTensor on the 'meta' device, which holds no values: give the model memory first "
                "(module.to_empty(device=...) after fully_shard, as FSDP2 asks), then save or restore"
            )
        super().__init__(local, name, where)
        self._dtensor = dtensor
        self._full_shape = full_shape
        # The blocks of the whole tensor this rank holds, each with where it lies in the local tensor: every
        # combination of a stretch of consecutive indices per dimension.
        self._pieces = [
            (
                TensorSlice(full_shape, tuple(run[0] for run in block), tuple(run[2] for run in block)),
                tuple(slice(run[1], run[1] + run[2]) for run in block),
            )
            for block in itertools.product(*(_runs(index, n) for index, n in zip(indices, full_shape, strict=True)))
        ]
        if not self._pieces:
            # An empty local tensor (uneven shards: 5 rows over 4 ranks leave one none) is saved as an empty
            # slice: a tensor of no elements at all is still saved, by every rank alike.
            self._pieces = [(TensorSlice(full_shape, (0,) * len(full_shape), tuple(local.shape)), ())]
        # What a restore reads: the one block, or the smallest one holding every block; from the latter,
        # _gather takes this rank's elements (the restore's reader fills one slice per value).
        self._gather: tuple[np.ndarray[Any, Any], ...] | None = None
        self._slice: TensorSlice | None = self._pieces[0][0]
        if len(self._pieces) > 1:
            every = [np.arange(n) if index is None else index for index, n in zip(indices, full_shape, strict=True)]
            low = tuple(int(index.min()) for index in every)
            size = tuple(int(index.max()) + 1 - lo for index, lo in zip(every, low, strict=True))
            self._slice = TensorSlice(full_shape, low, size)
            self._gather = np.ix_(*(index - lo for index, lo in zip(every, low, strict=True)))
        elif self._slice.is_full:
            self._slice = None
        # Set by a restore whose stored dtype differs: read as stored, then cast by torch (as copy_ does).
        self._torch_casts = False

    def current(self) -> Any:
        """The DTensor (its local tensor holds the restored part)."""
        return self._dtensor

    def _kind(self) -> str:
        return "DTensor"

    def _serialize_to_tensors(self) -> dict[str, Any]:
        tensors: dict[str, Any] = super()._serialize_to_tensors()
        if self._slice is None:
            return tensors
        # TensorFlow's form for slices of a larger tensor: the commit merges every rank's slices into one tensor.
        local = tensors[VARIABLE_VALUE_KEY]
        return {VARIABLE_VALUE_KEY: {part.spec: np.ascontiguousarray(local[at]) for part, at in self._pieces}}

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        info = infos.get(VARIABLE_VALUE_KEY)
        if info is None:
            return
        key = where[VARIABLE_VALUE_KEY]
        if tuple(info.shape) != self._full_shape:
            raise ShapeMismatchError(
                f"cannot restore {key!r} into the DTensor {self._name!r}: the checkpoint holds shape "
                f"{tuple(info.shape)}, the DTensor's whole shape is {self._full_shape} (this rank holds "
                f"{tuple(self._value.shape)} of it)"
            )
        if info.dtype != self._saved_dtype:
            if info.dtype.kind not in "biufc" and not dtypes.is_ml_dtype(info.dtype):
                raise DTypeMismatchError(
                    f"cannot restore {key!r} into the DTensor {self._name!r}: the checkpoint holds dtype "
                    f"{dtypes._name(info.dtype)}, which is no number a torch tensor could take"
                )
            # Another numeric dtype (a bfloat16 model from a float32 checkpoint): torch casts, as its
            # load_state_dict does; the local tensor is not offered to read into.
            self._torch_casts = True
        else:
            self._torch_casts = False

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        # Not the local tensor when the read is a block around several (its shape is the block's).
        return None if self._torch_casts or self._gather is not None else super()._restore_buffer(attribute)

    def _restore_slice(self, attribute: str) -> TensorSlice | None:
        # docstring inherited
        return self._slice if attribute == VARIABLE_VALUE_KEY else None

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if VARIABLE_VALUE_KEY not in tensors:
            return
        restored = tensors[VARIABLE_VALUE_KEY]
        if self._gather is not None:
            restored = restored[self._gather]  # this rank's elements of the block read
        if self._in_place() and not self._torch_casts:
            np.copyto(self._value, restored)
        else:
            _copy_into_tensor(self._tensor, restored)


def _array_node(value: Any, name: str, where: str) -> _NumpyValue:
    """The node saving the array ``value`` of a state dict: a :class:`_DTensorValue` for a DTensor."""
    if is_dtensor(value):
        return _DTensorValue(value, name, where)
    return _NumpyValue(value, name, where)


def _optimizer_dtensor_params(obj: Any) -> list[Any] | None:
    """The parameters of the torch optimizer ``obj`` in its state dict's order, if any is a DTensor; else ``None``.

    A torch optimizer's state dict numbers its parameters in the order of its ``param_groups`` (``state.0``
    is the first group's first parameter), and its ``load_state_dict`` maps them back by that order.
    """
    if "torch.distributed.tensor" not in sys.modules:
        return None
    params = _optimizer_params(obj)
    return params if params is not None and any(is_dtensor(p) for p in params) else None


def _dtensor_like(param: Any, dtype: np.dtype[Any]) -> Any:
    """A new DTensor of ``dtype`` placed as the DTensor ``param`` (same mesh, placements and shape), uninitialized."""
    local = param.to_local()
    torch_dtype = dtypes._numpy_to_torch(np.empty(0, dtype)).dtype
    empty = sys.modules["torch"].empty(tuple(local.shape), dtype=torch_dtype, device=local.device)
    # No check and no communication: the geometry is the parameter's, known on every rank.
    return type(param).from_local(
        empty, param.device_mesh, param.placements, run_check=False, shape=param.shape, stride=param.stride()
    )


class _SavedNames(tuple[str, ...]):
    """The names of a state dict's entries now; ``in`` admits every name a checkpoint may hold.

    A restore rebuilds the entries the object lacks (an optimizer holds no
    moments before its first step), so no saved entry is left out as unused.
    """

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)


#: No template, or no value: nothing the object holds there.
_ABSENT: Final[Any] = object()


class _SavedEntry(Trackable):
    """An entry of a state dict saved as a dict (``optimizer=opt.state_dict()``), restored into the object itself.

    That layout holds each container of the state dict as a node and each value as a variable. A restore
    matches an entry to each node below the object's node; the entries only collect what the checkpoint
    holds, and the object's node rebuilds the state dict from them (:class:`_Rebuild`) and hands it to
    ``load_state_dict`` once the last value has been read.

    Parameters
    ----------
    owner
        The node of the object restored.
    place
        Where the entry is in the state dict, for messages (``Checkpoint.optimizer['state']['0']``).
    """

    def __init__(self, owner: StatefulValue, place: str) -> None:
        self._maybe_initialize_trackable()
        self._owner = owner
        self._place = place
        self._entries: dict[str, _SavedEntry] = {}
        # The value's dtype and shape and checkpoint key, once the restore has planned to read it.
        self._info: TensorInfo | None = None
        self._key = ""
        # Attributes other than a variable's value (the node of something else than a value).
        self._others: list[str] = []
        self._value: Any = _ABSENT

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _SavedEntry(self._owner, f"{self._place}[{name!r}]")
        return entry

    def _checkpoint_attribute_names(self) -> tuple[str, ...]:
        return _SavedNames((VARIABLE_VALUE_KEY,))

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        self._info = infos.get(VARIABLE_VALUE_KEY)
        self._key = where.get(VARIABLE_VALUE_KEY, "")
        self._others = sorted(name for name in infos if name != VARIABLE_VALUE_KEY)

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if VARIABLE_VALUE_KEY in tensors:
            self._value = tensors[VARIABLE_VALUE_KEY]
            self._owner._arrived(self)

    def __repr__(self) -> str:
        return f"<saved entry {self._place}>"


#: The lists of tensors in the per-parameter state of torch's LBFGS (its history). Its other entries are Python
#: numbers or torch tensors as their saved dtype tells (``H_diag`` and ``t`` are either, from one step to the
#: next); ``al`` holds ``history_size`` places, ``None`` where nothing is saved yet.
_LBFGS_LISTS: Final = frozenset({"old_dirs", "old_stps", "ro", "al"})


def _walk_entries(entry: _SavedEntry) -> Iterator[_SavedEntry]:
    """``entry`` and every entry below it."""
    yield entry
    for inner in entry._entries.values():
        yield from _walk_entries(inner)


def _is_int_text(name: str) -> bool:
    """Whether ``name`` is how an ``int`` key is named in a checkpoint (``"3"``, ``"-1"``)."""
    return name.lstrip("-").isdigit() and str(int(name)) == name


def pad_lbfgs_al(state_dict: Mapping[Any, Any], size: int | None = None) -> None:
    """Give each ``al`` of a torch ``LBFGS`` state dict restored, ``state_dict``, ``history_size`` places.

    ``LBFGS`` makes ``al`` a list of ``history_size`` places, ``None`` where no step computed one yet, and its
    next step indexes it by the ``history_size`` of its param group. A checkpoint saves only what a step
    computed (``None`` is not saved), so a restore gives ``al`` only as many places as it held values then, or
    as the state dict restored into held. The ``history_size`` is the one restored with it, the checkpoint's
    (``load_state_dict`` gives the optimizer the saved param group, whatever it was built with); ``size`` where
    ``state_dict`` holds no param group telling one. A longer ``al`` is left as it is. The one rule of both
    layouts: the optimizer's state rebuilt (see ``_Rebuild``) and its state dict given as a dict, restored in
    place (see ``trackpoint.data_structures.restoring``).
    """
    groups = state_dict.get("param_groups")
    group = groups[0] if isinstance(groups, list) and groups and isinstance(groups[0], Mapping) else {}
    size = group.get("history_size", size)
    if not isinstance(size, int):
        return
    states = state_dict.get("state")
    for state in states.values() if isinstance(states, Mapping) else ():
        al = state.get("al") if isinstance(state, Mapping) else None
        if isinstance(al, list) and len(al) < size:
            al += [None] * (size - len(al))


#: The keys of a param group of torch's ``LBFGS`` (besides ``params``): a state dict whose param groups all hold
#: them is taken for LBFGS's, whose per-parameter state keeps its history in lists (:data:`_LBFGS_LISTS`).
_LBFGS_GROUP: Final = frozenset(
    {"lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size", "line_search_fn"}
)


def optimizer_param_numbers(state_dict: Any) -> list[int] | None:
    """The parameter numbers of ``state_dict`` if it is a torch optimizer's state dict as torch makes it, else None.

    That is a plain dict of exactly ``state`` (a dict keyed by ints) and ``param_groups`` (a non-empty list of
    dicts, each holding its ``params`` as a list of distinct ints). A state dict keyed otherwise (by parameter
    names, as PyTorch DCP's ``get_optimizer_state_dict`` keys it) is not: nothing tells which entries it lacks.
    """
    if type(state_dict) is not dict or len(state_dict) != 2:
        return None
    state, groups = state_dict.get("state"), state_dict.get("param_groups")
    if type(state) is not dict or any(type(key) is not int for key in state):
        return None
    if type(groups) is not list or not groups:
        return None
    numbers: list[int] = []
    for group in groups:
        params = group.get("params") if type(group) is dict else None
        if type(params) is not list or any(type(number) is not int for number in params):
            return None
        numbers += params
    return numbers if len(set(numbers)) == len(numbers) else None


def has_lbfgs_param_groups(state_dict: Any) -> bool:
    """Whether the param groups of ``state_dict``, a dict, are LBFGS's (by their keys alone, whatever keys its
    ``state``: parameter numbers, or names as PyTorch DCP's ``get_optimizer_state_dict`` has them)."""
    groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
    return (
        type(groups) is list
        and bool(groups)
        and all(isinstance(group, dict) and _LBFGS_GROUP <= group.keys() for group in groups)
    )


#: The types of the Python numbers each checkpoint of a restore records, by its coordinator (read once each).
_RECORDED_NUMBERS: weakref.WeakKeyDictionary[Any, dict[str, type] | None] = weakref.WeakKeyDictionary()
#: Python numbers by the name :data:`~trackpoint._array_values.PYTHON_NUMBERS_KEY` records for their type.
NUMBER_TYPES: Final = {number.__name__: number for number in PYTHON_NUMBERS}
#: The ``full_name`` development versions after 0.1.0 recorded for a Python number in place of its name, before
#: its type had an entry of its own (``docs/format.md``): read as that type, and as no name.
NUMBER_TAGS: Final = {f"python:{name}": number for name, number in NUMBER_TYPES.items()}


def parse_number_types(raw: Any) -> dict[str, type]:
    """``{checkpoint key: int, float or bool}`` from ``raw``, the value of the checkpoint's
    :data:`~trackpoint._array_values.PYTHON_NUMBERS_KEY` entry (read here for a restore, and by
    ``trackpoint.reader`` for ``load_tree``).

    Raises
    ------
    ValueError
        ``raw`` is not a JSON object ``{checkpoint key: "int", "float" or "bool"}``.
    """
    try:
        raw = raw[()] if isinstance(raw, np.ndarray) else raw
        recorded = json.loads(raw if isinstance(raw, (bytes, str)) else bytes(raw))
        if not isinstance(recorded, dict):
            raise TypeError(f"a JSON {type(recorded).__name__}, not an object")
        return {str(key): NUMBER_TYPES[name] for key, name in recorded.items()}
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def _number_types(coordinator: Any) -> dict[str, type] | None:
    """``{checkpoint key: int, float or bool}`` of the Python numbers the restored checkpoint records; ``None``
    when it records none (written before such records, or holding no Python number)."""
    if coordinator in _RECORDED_NUMBERS:
        return _RECORDED_NUMBERS[coordinator]
    found: dict[str, type] | None = None
    reader = coordinator.reader
    try:
        if reader.has(PYTHON_NUMBERS_KEY):
            found = parse_number_types(reader.read(PYTHON_NUMBERS_KEY))
    except (TypeError, ValueError, KeyError, AttributeError):
        found = None  # unreadable: no type is certain (load_tree names the problem)
    _RECORDED_NUMBERS[coordinator] = found
    return found


#: For each restore's coordinator: the saved nodes leading to each node, ``{child id: [(parent id, edge name)]}``.
_PARENTS: weakref.WeakKeyDictionary[Any, dict[int, list[tuple[int, str]]]] = weakref.WeakKeyDictionary()


def _saved_param_groups(position: Any, name: str) -> list[tuple[list[int], list[str] | None]] | None:
    """``[(params, param_names or None)]`` of each param group saved beside the optimizer's state entry at
    ``position`` (saved as ``name`` in the ``state`` dict of a state dict saved as a dict), or ``None`` when that
    cannot be read with certainty (no single such state dict, a param group of another layout)."""
    coordinator = position.coordinator
    nodes = coordinator.nodes
    parents = _PARENTS.get(coordinator)
    if parents is None:
        parents = {}
        for node_id, node in enumerate(nodes):
            for child in node.children:
                parents.setdefault(child.node_id, []).append((node_id, child.local_name))
        _PARENTS[coordinator] = parents
    states = [parent for parent, edge in parents.get(position.proto_id, []) if edge == name]
    holders = [parent for state in states for parent, edge in parents.get(state, []) if edge == "state"]
    if len(holders) != 1:
        return None
    edges = {child.local_name: child.node_id for child in nodes[holders[0]].children}
    if set(edges) != {"state", "param_groups"}:
        return None

    def leaves(node_id: int) -> list[Any] | None:
        held = nodes[node_id]
        names = [edge.local_name for edge in held.children]
        if held.attributes or names != [str(index) for index in range(len(names))]:
            return None
        found = []
        for edge in held.children:
            leaf = nodes[edge.node_id]
            if len(leaf.attributes) != 1 or leaf.attributes[0].name != VARIABLE_VALUE_KEY or leaf.children:
                return None
            value = np.asarray(coordinator.reader.read(leaf.attributes[0].checkpoint_key))
            if value.shape != ():
                return None
            found.append(value[()])
        return found

    groups = nodes[edges["param_groups"]]
    saved: list[tuple[list[int], list[str] | None]] = []
    group_names = [edge.local_name for edge in groups.children]
    if groups.attributes or group_names != [str(index) for index in range(len(group_names))]:
        return None
    try:
        for edge in groups.children:
            held = {child.local_name: child.node_id for child in nodes[edge.node_id].children}
            params = leaves(held["params"]) if "params" in held else None
            names = leaves(held["param_names"]) if "param_names" in held else None
            if params is None or not all(isinstance(number, np.integer) for number in params):
                return None
            if "param_names" in held and (names is None or not all(isinstance(n, (bytes, str)) for n in names)):
                return None
            saved.append(
                (
                    [int(number) for number in params],
                    None if names is None else [n.decode() if isinstance(n, bytes) else str(n) for n in names],
                )
            )
    except (TypeError, ValueError, KeyError, AttributeError, UnicodeDecodeError):
        return None  # unreadable: nothing is certain (the status names the entries)
    return saved


def given_param_groups(state_dict: Any) -> list[tuple[list[Any], list[Any] | None]] | None:
    """``[(params, param_names or None)]`` of each param group of ``state_dict``, a torch optimizer's state dict
    given as a dict, as it is now (a restore records them before it writes the saved ones into it), or ``None``
    when its ``param_groups`` is not a list of dicts."""
    groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
    if type(groups) is not list or any(not isinstance(group, dict) for group in groups):
        return None
    found: list[tuple[list[Any], list[Any] | None]] = []
    for group in groups:
        params, names = group.get("params"), group.get("param_names")
        found.append(
            (list(params) if isinstance(params, list) else [], list(names) if isinstance(names, list) else None)
        )
    return found


def param_groups_mismatch(
    position: Any, name: str, given: list[tuple[list[Any], list[Any] | None]] | None
) -> str | None:
    """Why the param groups saved beside the optimizer's state entry at ``position`` differ from the ``given`` ones
    (see :func:`given_param_groups`), or ``None`` where they match group by group: as many groups, the same
    parameter numbers in each, and where both groups hold ``param_names``, the same names. The state of a
    parameter is made from the checkpoint only where they match (see :func:`optimizer_state_entry`): else it would
    be the state of another parameter (of another shape: the next step fails; of the same: wrong moments load)."""
    if given is None:
        return "the param_groups of the state dict given are not a list of dicts"
    saved = _saved_param_groups(position, name)
    if saved is None:
        return "the checkpoint's param_groups beside it cannot be read as torch's (a list of param groups)"
    if len(saved) != len(given):
        return f"the checkpoint holds {len(saved)} param groups, the state dict given {len(given)}"
    for index, ((params, names), (given_params, given_names)) in enumerate(zip(saved, given, strict=True)):
        if params != given_params:
            return f"param group {index} holds parameters {params} in the checkpoint, {given_params} in the one given"
        if names is not None and given_names is not None and names != given_names:
            return f"param group {index} names its parameters {names} in the checkpoint, {given_names} in the one given"
    return None


def optimizer_state_entry(position: Any, lbfgs: bool) -> dict[str, Any] | None:
    """The per-parameter state a restore adds to a torch optimizer's state dict given as a dict, or ``None``.

    Made from the checkpoint's node at ``position`` (a deferred restore of the parameter's entry, which the
    state dict given lacks: an optimizer that has not stepped yet), to be filled by that restore: a CPU torch
    tensor of the saved dtype and shape for each tensor, a Python number of the saved type for each Python
    number, and (``lbfgs``) a list of such tensors for each list of LBFGS's history. ``None`` where that is not
    certain, so that nothing is invented: a container of another kind, a 0-d integer, boolean or float64 value
    of a checkpoint that records no Python numbers' types (a Python number or a 0-d tensor), a dtype torch lacks.
    """
    coordinator = position.coordinator
    nodes = coordinator.nodes
    node = position.object_proto
    if node.attributes or not node.children or node.slot_variables:
        return None
    numbers = _number_types(coordinator)

    def leaf(node_id: int, number: bool) -> Any:
        held = nodes[node_id]
        if len(held.attributes) != 1 or held.attributes[0].name != VARIABLE_VALUE_KEY or held.children:
            return _ABSENT
        attribute = held.attributes[0]
        key = attribute.checkpoint_key
        info = coordinator.info(key)
        dtype, shape = np.dtype(info.dtype), tuple(info.shape)
        python = (numbers or {}).get(key) or NUMBER_TAGS.get(attribute.full_name)
        if python is not None:
            return python() if number and shape == () else _ABSENT
        if shape == () and numbers is None and (dtype.kind in "biu" or dtype == np.float64):
            return _ABSENT  # a Python number or a 0-d tensor: the checkpoint does not tell
        if not (dtype.kind in "biufc" or dtypes.is_ml_dtype(dtype)):
            return _ABSENT
        try:
            return dtypes._numpy_to_torch(np.zeros(shape, dtype))
        except (TypeError, ValueError, KeyError, AttributeError):
            return _ABSENT  # a dtype torch lacks

    entry: dict[str, Any] = {}
    for child in node.children:
        name = child.local_name
        if name in entry:
            return None
        value = leaf(child.node_id, number=True)
        if value is _ABSENT and lbfgs and name in _LBFGS_LISTS:
            held = nodes[child.node_id]
            names = [edge.local_name for edge in held.children]
            if held.attributes or names != [str(index) for index in range(len(names))]:
                return None
            items = [leaf(edge.node_id, number=False) for edge in held.children]
            value = _ABSENT if any(item is _ABSENT for item in items) else items
        if value is _ABSENT:
            return None
        entry[name] = value
    return entry


class _Rebuild:
    """Rebuilds a state dict from the entries of a checkpoint that holds it as a dict, typed by the object's own.

    Such a checkpoint holds containers as nodes and Python numbers as 0-d arrays, without their types: the
    object's state dict now tells them (``betas`` a tuple, ``lr`` a float, a torch tensor where it holds
    one). Where the object holds nothing, the type must be certain: an optimizer's state is keyed by the
    parameter numbers of its ``param_groups`` and holds torch tensors, and the ``param_names`` of a param group
    (an optimizer built from ``named_parameters()``) are a list of str, each a 0-d string value, which torch's
    ``load_state_dict`` takes also into an optimizer built without names; a 0-d boolean, integer or float64
    array was a Python number. Anything else (an empty container, integer names that may be a list's positions or a
    dict's keys) is a problem, reported before anything is written. torch's ``LBFGS`` keeps Python numbers and
    lists of tensors in its per-parameter state, typed by their names (:data:`_LBFGS_LISTS`) and saved dtypes,
    whatever the optimizer holds now.

    Parameters
    ----------
    obj
        The object restored.
    build
        Whether to build the values (once read); else only check what can be built.
    """

    def __init__(self, obj: Any, build: bool) -> None:
        self.obj = obj
        self.build = build
        self.problems: list[str] = []
        cls = type(obj)
        self.torch = cls.__module__.split(".")[0] == "torch"
        # torch's own optimizers keep their per-parameter state as tensors, all but LBFGS (Python numbers, lists).
        self.own_optimizer = cls.__module__.startswith("torch.optim.") and cls.__name__ != "LBFGS"
        self.lbfgs = cls.__module__ == "torch.optim.lbfgs" and cls.__name__ == "LBFGS"

    def state(self, entries: Mapping[str, _SavedEntry], template: Any, place: str) -> Any:
        """The whole state dict: the object's own, ``template``, types what the checkpoint's ``entries`` hold."""
        return self._container(entries, template, place, "")

    def _value(self, entry: _SavedEntry, template: Any, context: str) -> Any:
        if entry._others:
            self.problems.append(
                f"{entry._place}: the checkpoint holds {entry._others} there, not a value of a state dict"
            )
            return None
        if entry._info is not None:
            if entry._entries:
                self.problems.append(f"{entry._place}: the checkpoint holds both a value and entries there")
                return None
            return self._leaf(entry, template, context)
        return self._container(entry._entries, template, entry._place, context)

    def _leaf(self, entry: _SavedEntry, template: Any, context: str) -> Any:
        info = entry._info
        assert info is not None  # a leaf
        dtype, shape = np.dtype(info.dtype), tuple(info.shape)
        numeric = dtype.kind in "biufc" or dtypes.is_ml_dtype(dtype)
        value = entry._value
        # What a Python bool, int or float is saved as.
        python = shape == () and (dtype.kind in "biu" or dtype == np.float64)
        problem = None
        if template is _ABSENT and context == "param_value" and python and not self.own_optimizer:
            problem = (
                "was a Python number or a 0-d tensor, which the checkpoint does not tell, and the optimizer holds "
                "no state there to tell (torch's own optimizers keep tensors)"
            )
        elif dtypes._is_torch_tensor(template) or (template is _ABSENT and context in ("param_value", "tensor")):
            # The per-parameter state of torch's own optimizers is torch tensors (Adam's `step` too).
            if not numeric:
                problem = f"holds dtype {dtypes._name(dtype)}, which is no number a torch tensor could take"
            elif template is not _ABSENT and tuple(template.shape) != shape:
                problem = f"holds shape {shape}, {type(self.obj).__name__} holds shape {tuple(template.shape)} there"
            else:
                return dtypes._numpy_to_torch(value) if self.build else None
        elif isinstance(template, (np.ndarray, np.generic)):
            if tuple(template.shape) != shape:
                problem = f"holds shape {shape}, {type(self.obj).__name__} holds shape {tuple(template.shape)} there"
            else:
                return (value if isinstance(template, np.ndarray) else value[()]) if self.build else None
        elif type(template) in (str, bytes) or (template is _ABSENT and context == "param_name"):
            # A string (a torch optimizer's `param_names`, str where the object holds nothing to tell).
            if shape != () or dtype != np.dtype(object):
                problem = (
                    f"holds an array of dtype {dtypes._name(dtype)} and shape {shape} where "
                    f"{type(self.obj).__name__} holds a string"
                )
            elif not self.build:
                return None
            else:
                text = value[()]
                text = text if isinstance(text, bytes) else str(text).encode("utf-8")
                return text if type(template) is bytes else text.decode("utf-8")
        elif type(template) in (bool, int, float):
            kinds = {bool: "b", int: "iu", float: "fiu"}[type(template)]
            if shape != () or dtype.kind not in kinds:
                problem = (
                    f"holds an array of dtype {dtypes._name(dtype)} and shape {shape} where "
                    f"{type(self.obj).__name__} holds the {type(template).__name__} {template!r}"
                )
            else:
                return type(template)(value[()]) if self.build else None
        elif template is _ABSENT or template is None:
            if python:
                number = bool if dtype.kind == "b" else int if dtype.kind in "iu" else float
                return number(value[()]) if self.build else None
            if not numeric:
                problem = f"holds dtype {dtypes._name(dtype)}, no array a state dict holds"
            elif self.build:
                return dtypes._numpy_to_torch(value) if self.torch else value
            else:
                return None
        else:
            problem = f"holds a value where {type(self.obj).__name__} holds {dtypes._describe_typed(template)}"
        self.problems.append(f"{entry._place} ({entry._key!r}) {problem}")
        return None

    def _container(self, entries: Mapping[str, _SavedEntry], template: Any, place: str, context: str) -> Any:
        if isinstance(template, Mapping):
            return self._mapping(entries, template, place, context)
        if type(template) in (list, tuple):
            return self._sequence(entries, template, place, context)
        if template is _ABSENT or template is None:
            if context in ("states", "param_state"):
                return self._mapping(entries, {}, place, context)
            if context == "lbfgs_list":
                return self._sequence(entries, [], place, context)
            if context == "param_names":  # a list of str in torch's format, also where the optimizer has none
                return self._sequence(entries, [], place, context)
            if not entries:
                self.problems.append(
                    f"{place}: the checkpoint holds an empty container, which may have been a list or a dict, where "
                    f"{type(self.obj).__name__} holds nothing to tell"
                )
                return None
            if all(_is_int_text(name) for name in entries):
                self.problems.append(
                    f"{place}: the checkpoint holds entries named {sorted(entries)[:5]}, which may have been a "
                    f"list's positions or a dict's integer keys, where {type(self.obj).__name__} holds nothing to tell"
                )
                return None
            return self._mapping(entries, {}, place, context)
        self.problems.append(
            f"{place}: the checkpoint holds a container where {type(self.obj).__name__} holds "
            f"{dtypes._describe_typed(template)}"
        )
        return None

    def _mapping(
        self, entries: Mapping[str, _SavedEntry], template: Mapping[Any, Any], place: str, context: str
    ) -> Any:
        # A torch optimizer's state dict: its `state` is keyed by the parameter numbers in `param_groups`.
        optimizer = "state" in template and "param_groups" in template
        # LBFGS's state changes types from one step to the next: what it holds now tells nothing.
        lbfgs = self.lbfgs and context == "param_state"
        by_name = {str(key): key for key in template}
        integers = (bool(template) and all(type(key) is int for key in template)) or context == "states"
        found: dict[Any, Any] = {}
        for name, entry in entries.items():
            key = by_name.get(name)
            if key is None:
                if integers and _is_int_text(name):
                    key = int(name)
                elif _is_int_text(name):
                    self.problems.append(
                        f"{place}: the checkpoint holds the entry {name!r}, which may have been an integer key or a "
                        f"string one, where {type(self.obj).__name__} holds no such entry to tell"
                    )
                    continue
                else:
                    key = name
            inner = (
                "states"
                if optimizer and key == "state"
                else "param_groups"
                if optimizer and key == "param_groups"
                else "param_state"
                if context == "states"
                else ("lbfgs_list" if key in _LBFGS_LISTS else "")
                if lbfgs
                else "param_value"
                if context == "param_state"
                else "param_names"
                if context == "param_group" and key == "param_names"
                else ""
            )
            found[key] = self._value(entry, _ABSENT if lbfgs else template.get(key, _ABSENT), inner)
        if not self.build:
            return None
        if lbfgs and "d" in found:
            # After a step: an empty list of its history holds nothing to save. (`al` is padded once the param
            # groups are rebuilt, see pad_lbfgs_al.)
            for key in ("old_dirs", "old_stps", "ro"):
                found.setdefault(key, [])
        if self.lbfgs and optimizer:
            pad_lbfgs_al(found, self.obj.param_groups[0]["history_size"])
        result: Any = (type(template) if type(template) in _MAPPING_NAMES else dict)()
        for key, held in template.items():  # in the object's order, as its own state dict has them
            if key in found:
                result[key] = found.pop(key)
            elif held is None or (type(held) in (dict, list, tuple) and not held):
                # None is not saved, nor is anything in an empty container: what the object holds there is it.
                result[key] = held if held is None else type(held)()
        result.update(found)
        metadata = getattr(template, "_metadata", None)
        if isinstance(metadata, dict):
            # The module versions of a module's state dict (not in that layout): the module's own.
            result._metadata = metadata
        return result

    def _sequence(
        self, entries: Mapping[str, _SavedEntry], template: list[Any] | tuple[Any, ...], place: str, context: str
    ) -> Any:
        if set(entries) != {str(index) for index in range(len(entries))}:
            self.problems.append(
                f"{place}: the checkpoint holds the entries {sorted(entries)[:5]} where {type(self.obj).__name__} "
                f"holds a {type(template).__name__}"
            )
            return None
        items = []
        # An optimizer's param groups, and the names in each.
        inner = {"param_groups": "param_group", "param_names": "param_name", "lbfgs_list": "tensor"}.get(context, "")
        for index in range(len(entries)):
            # A list grown since holds elements like its last.
            held = template[index] if index < len(template) else template[-1] if template else _ABSENT
            items.append(self._value(entries[str(index)], held, inner))
        return type(template)(items) if self.build else None

    def flat(self, entries: Mapping[str, _SavedEntry]) -> list[tuple[str, TensorInfo, str]]:
        """The values of the optimizer state the entries hold, as ``(state.<i>.<entry>, info, key)``."""
        found = []
        states = entries.get("state")
        for number, held in ({} if states is None else states._entries).items():
            for name, entry in held._entries.items():
                if entry._info is not None:
                    found.append((f"state.{number}.{name}", entry._info, entry._key))
        return found


class StatefulValue(Trackable):
    """The node of the object graph that saves a :class:`Stateful` object through its state dict.

    Parameters
    ----------
    obj
        The object; its holder keeps it.
    where
        Where the object is held (``Checkpoint.optimizer``), for messages.
    """

    def __init__(self, obj: Any, where: str) -> None:
        self._maybe_initialize_trackable()
        self._obj = obj
        self._where = where
        # The arrays of the state dict when a restore was planned, by name: read into in place where they fit.
        self._planned: dict[str, _NumpyValue] | None = None
        # The names whose arrays were offered to the reader to fill in place.
        self._offered: set[str] = set()
        # The names of the state dict's tensors on the 'meta' device when a restore was planned.
        self._meta: dict[str, tuple[str, Any]] = {}
        # The entries of the state dict that are the same array as an earlier one (a tied weight), by name,
        # with that one's name: saved and restored as that array (see _identity).
        self._aliases: dict[str, str] = {}
        # Planned by a restore: the entries the object holds as one array (a tied weight) that the checkpoint
        # holds apart, as (the array's name, the other entry's name), with their checkpoint keys.
        self._apart: list[tuple[str, str, str, str]] = []
        # For a checkpoint of the object's state dict given as a dict: (the restore's children, the state dict).
        self._legacy: tuple[Any, Mapping[Any, Any]] | None = None
        self._legacy_nodes: dict[str, _NumpyValue] = {}
        # For such a checkpoint whose entries are not all arrays the object holds (`optimizer=opt.state_dict()`):
        # the entries matched to its nodes, by name, and the state dict then (see _entries_missing_from).
        self._entries: dict[str, _SavedEntry] | None = None
        self._template: Any = None
        # The values still to be read before that state dict is rebuilt and loaded (by id), once planned.
        self._pending: set[int] = set()
        # How a module with compiled submodules spells the keys saved without `_orig_mod.` (see _state_dict).
        self._spelling: _Spelling | None = None
        # Planned by a restore (see _order_restores): the tensors on 'meta' it fills (a module's), and the
        # parameters on 'meta' whose state it restores (an optimizer's), by id, with the state's name.
        self._fills: list[Any] = []
        self._needs: dict[int, str] = {}

    def current(self) -> Any:
        """The object saved (a restore never replaces it)."""
        return self._obj

    def _state_dict(self) -> Any:
        """The object's state dict; a module's with its keys as if no submodule were compiled."""
        try:
            state = self._obj.state_dict()
        except Exception as exc:  # the object's own failure, of any type
            raise TrackableError(f"{self._where}: {type(self._obj).__name__}.state_dict() failed: {exc}") from exc
        if _module(self._obj) is not None:
            state, self._spelling = _without_compiled(state)
        return state

    def _flatten(self, state: Any, arrays: bool, restoring: bool = False) -> tuple[Any, dict[str, _NumpyValue | None]]:
        """The JSON structure of ``state`` and its arrays by name (a node each when ``arrays``, else ``None``).

        ``restoring``: an array that cannot be read into (an uninitialized lazy parameter, a tensor on the
        'meta' device) gets no node; ``load_state_dict`` receives a new one.
        """
        leaves: dict[str, _NumpyValue | None] = {}
        meta = self._meta = {}
        # The first entry met of each memory (see _memory), then the name of the first array saved for each
        # identity among entries of a memory met twice (see _identity): an entry that is the same array (a tied
        # weight) names that array in the structure instead of saving it again.
        memories: dict[Hashable, str] = {}
        first: dict[Hashable, str] = {}
        # The first entry of each memory by name, until its identity is known. No tuple per entry: the garbage
        # collector tracks tuples, and tens of thousands of them made it collect during the walk, at a cost.
        unknown: dict[str, Any] = {}
        aliases: dict[str, str] = {}
        self._aliases = aliases

        def saved_as(value: Any, name: str, kind: str) -> str | None:
            """The name of an earlier entry that is the same array as ``value``, if any."""
            memory = _memory(value, kind)
            if memory is None:
                return None
            met = memories.setdefault(memory, name)
            if met == name:
                unknown[name] = value  # the first of its memory: no identity needed unless another comes
                return None
            if met in unknown:
                found = _identity(unknown.pop(met))
                if found is not None:
                    first.setdefault(found, met)
            identity = _identity(value)
            saved = None if identity is None else first.setdefault(identity, name)
            return None if saved == name else saved

        def leaf(value: Any, name: str, where: str) -> _NumpyValue | None:
            if not arrays:
                return None
            try:
                return _array_node(value, name, where)
            except TrackableError as exc:
                if is_dtensor(value):
                    # Refused alike by saves and restores: a DTensor the object holds is never replaced by a
                    # new tensor (a Partial one, one on 'meta').
                    if restoring:
                        raise AssignmentError(f"cannot restore into {self._where}: {exc}") from exc
                    raise
                if restoring:
                    if _is_meta(value):
                        meta[name] = (where, value)
                    return None
                raise TrackableError(
                    f"{exc} (the value is in {type(self._obj).__name__}.state_dict(): NoDependency applies to the "
                    "whole object)"
                ) from exc

        # The containers being visited (by id), to refuse one that holds itself.
        open_containers: set[int] = set()

        def visit(value: Any, name: str, where: str, depth: int = 0) -> Any:
            if is_array_value(value):
                if name in leaves or name in aliases:
                    raise TrackableError(f"{where}: two entries of the state dict are both saved as {name!r}")
                if dtypes._is_torch_tensor(value):
                    kind = "torch"
                elif is_jax_array(value):
                    kind = "jax"
                else:
                    kind = "numpy" if isinstance(value, np.ndarray) else "scalar"
                saved = saved_as(value, name, kind)
                if saved is not None:
                    aliases[name] = saved
                    return {"array": saved, "kind": kind}
                leaves[name] = leaf(value, name, where)
                return {"array": name, "kind": kind}
            if value is None or type(value) in (bool, int, float, str):
                return value
            if type(value) is bytes:
                return {"bytes": value.hex()}
            prefix = f"{name}." if name else ""
            mapping = _MAPPING_NAMES.get(type(value))
            if mapping is None and type(value) not in (list, tuple):
                raise TrackableError(
                    f"{where} is {dtypes._describe_typed(value)}, which a "
                    "state dict is not saved with: arrays (numpy, torch, JAX), None, bool, int, float, str, bytes, "
                    "and dicts (OrderedDict, Counter), lists and tuples of them are"
                )
            if id(value) in open_containers:
                raise TrackableError(
                    f"{where} is a {type(value).__name__} that also holds it (a container that holds itself) in "
                    f"{type(self._obj).__name__}.state_dict(): a state dict is saved as a tree and cannot hold a "
                    "cycle; return a state dict without the inner reference (or keep the object out of the "
                    "checkpoint with NoDependency)"
                )
            if depth >= MAX_STATE_DICT_DEPTH:
                shown = where if len(where) <= 120 else where[:120] + "..."
                raise TrackableError(
                    f"{self._where}: {type(self._obj).__name__}.state_dict() nests containers more than "
                    f"{MAX_STATE_DICT_DEPTH} levels deep ({shown}), more than a checkpoint saves; flatten it (join "
                    "the keys of nested dicts into one key, as torch names a module's entries '0.weight')"
                )
            open_containers.add(id(value))
            try:
                if mapping is not None:
                    items = []
                    for key, item in value.items():
                        if type(key) not in (str, int):
                            raise TrackableError(
                                f"{where} has the key {key!r} ({type(key).__name__}): a state dict is saved with str "
                                "and int keys only"
                            )
                        items.append([key, visit(item, prefix + _component(key), f"{where}[{key!r}]", depth + 1)])
                    node: dict[str, Any] = {"dict": items}
                    if mapping != "dict":
                        node["type"] = mapping
                    metadata = getattr(value, "_metadata", None)  # torch keeps each module's version here
                    if isinstance(metadata, dict):
                        node["metadata"] = visit(metadata, f"{prefix}%2Emetadata", f"{where}._metadata", depth + 1)
                    return node
                return {
                    type(value).__name__: [
                        visit(item, prefix + str(index), f"{where}[{index}]", depth + 1)
                        for index, item in enumerate(value)
                    ]
                }
            finally:
                open_containers.discard(id(value))

        try:
            structure = visit(state, "", self._where)
        except RecursionError:
            # Within the depth limit, yet the stack ran out: the save was called deep in the stack already.
            raise TrackableError(
                f"{self._where}: {type(self._obj).__name__}.state_dict() nests containers too deeply for the "
                "Python stack left to this save; flatten it (join the keys of nested dicts into one key)"
            ) from None
        return structure, leaves

    def _serialize_to_tensors(self) -> dict[str, np.ndarray[Any, Any]]:
        state = self._state_dict()
        if isinstance(state, Mapping) and not state:
            return {}  # nothing to save (a ReLU, a loss): no values that a restore would have to find
        structure, leaves = self._flatten(state, arrays=True)
        tensors = {
            name: node._serialize_to_tensors()[VARIABLE_VALUE_KEY] for name, node in leaves.items() if node is not None
        }
        text = np.empty((), dtype=object)
        try:
            text[()] = json.dumps({"version": _FORMAT_VERSION, "state": structure}).encode("utf-8")
        except RecursionError:
            # Within MAX_STATE_DICT_DEPTH, yet the stack ran out: the save was called deep in the stack already.
            raise TrackableError(
                f"{self._where}: {type(self._obj).__name__}.state_dict() nests containers too deeply for the "
                "Python stack left to this save; flatten it (join the keys of nested dicts into one key)"
            ) from None
        tensors[STATE_DICT_STRUCTURE] = text
        return tensors

    def _checkpoint_attribute_names(self) -> tuple[str, ...]:
        state = self._state_dict()
        if isinstance(state, Mapping) and not state:
            return _SavedNames(())  # holds no state of its own, yet takes what a checkpoint has for it
        _, leaves = self._flatten(state, arrays=False)
        return _SavedNames((*leaves, STATE_DICT_STRUCTURE))

    def _entries_missing_from(self, names: Sequence[str]) -> list[str]:
        """The entries of the state dict that a checkpoint node holding entries as children (``names``) lacks.

        Such a node was saved from the state dict given as a dict (``model=net.state_dict()``). When every
        entry it names is an array the object holds (a module's), its entries restore one by one, in place,
        through :meth:`_lookup_dependency`. Otherwise (``optimizer=opt.state_dict()``: containers and Python
        numbers) the entries are matched to :class:`_SavedEntry` nodes, from which the state dict is rebuilt
        and handed to ``load_state_dict`` (see :meth:`_order_restores`). The restore's status reports what is
        returned: the arrays the first kind lacks, or the entries the second lacks.
        """
        self._entries = None
        self._fills, self._needs = [], {}
        try:
            state = self._state_dict()
        except TrackableError:
            return []
        if not isinstance(state, Mapping):
            return []
        module = _module(self._obj) is not None
        # A module's entries saved from a compiled one's state dict given as a dict: `_orig_mod.` in each key.
        given = {_uncompiled(name) if module else name: name for name in names}
        held = {str(key): value for key, value in state.items()}
        if any(name in held and not is_array_value(held[name]) for name in given):
            self._entries, self._template = {}, state
            missing = [
                name
                for name, value in held.items()
                # None is not saved, nor is anything in an empty container: what the object holds is that.
                if name not in given and value is not None and not (type(value) in (dict, list, tuple) and not value)
            ]
        else:
            missing = [name for name, value in held.items() if is_array_value(value) and name not in given]
        if isinstance(self._obj, NonStrict):
            # Asked to leave them as they are: recorded as load_state_dict(strict=False) would report them.
            self._obj.missing_keys = missing
            return []
        # Entries saved under a prefix (`model=ddp.state_dict()`: `module.0.weight`) are the likeliest cause.
        unknown = [name for plain, name in given.items() if plain not in held]
        hinted = {key: name for key in missing for name in unknown if name.endswith("." + key)}
        if hinted:
            prefixes = sorted({name[: -len(key)] for key, name in hinted.items()})
            key, name = next(iter(hinted.items()))
            prefix = name[: -len(key)]
            missing.append(
                f"(the checkpoint holds {len(hinted)} of them under the prefix {' or '.join(map(repr, prefixes))}, "
                f"as {name!r}: restore into a dict of those names, such as "
                f"{{{prefix!r} + k: v for k, v in net.state_dict().items()}}, which restores in place)"
            )
        return missing

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        # A checkpoint written from the object's state dict given as a dict (`model=net.state_dict()`) holds
        # each array as a child named by its key: restore those in place, as that dict would be. A restore
        # asks once per child with the same `cached_dependencies`, so the state dict is taken once.
        legacy = self._legacy
        if legacy is None or cached_dependencies is None or legacy[0] is not cached_dependencies:
            try:
                state = self._state_dict()
            except TrackableError:
                return None
            legacy = self._legacy = (cached_dependencies, state if isinstance(state, Mapping) else {})
        key = _uncompiled(name) if _module(self._obj) is not None else name
        if self._entries is not None:
            # Entries to rebuild the state dict from: only those the object's state dict has, as its keys tell
            # how to type them; the others are reported unresolved by the status, as for any restore.
            if not any(str(k) == key for k in legacy[1]):
                return None
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _SavedEntry(self, f"{self._where}[{key!r}]")
            return entry
        value = legacy[1].get(key)
        if not is_array_value(value):
            return None
        node = self._legacy_nodes.get(name)
        if node is None or node.current() is not value:
            try:
                node = _array_node(value, key, f"{self._where}[{key!r}]")
            except TrackableError:
                return None
            # Kept: a restore holds its matched objects weakly, and status checks look for them later.
            self._legacy_nodes[name] = node
        return node

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        info = infos.get(STATE_DICT_STRUCTURE)
        if info is None or info.dtype != np.dtype(object) or tuple(info.shape) != ():
            raise AssignmentError(
                f"cannot restore into {self._where} ({type(self._obj).__name__}): the checkpoint holds no state "
                f"dict there (no scalar string {STATE_DICT_STRUCTURE!r} among its values {sorted(infos)})"
            )
        self._entries = None
        self._fills, self._needs, self._apart = [], {}, []
        _, leaves = self._flatten(self._state_dict(), arrays=True, restoring=True)
        module = _module(self._obj)
        # By the name the object's state dict gives it now: a module's entry saved with `_orig_mod.` in its key
        # (a compiled submodule, saved by an older trackpoint) is the same entry.
        plain: dict[str, str] = {}
        if module is not None:
            plain = {_uncompiled(name): name for name in infos if _COMPILED in name}
            plain = {name: saved for name, saved in plain.items() if name not in infos}
        places = [where for where, _ in self._meta.values()]
        if self._meta and _module(self._obj) is None:
            # torch copies nothing into a tensor without memory: the restore would report success and restore
            # nothing. Refused before anything is written.
            raise AssignmentError(
                f"cannot restore into {self._where}: {len(places)} of its tensors are on the 'meta' device "
                f"({', '.join(places[:3])}{', ...' if len(places) > 3 else ''}), which holds no values, and "
                f"{type(self._obj).__name__} is not a torch module whose tensors the restore could fill. Give "
                "them memory first (module.to_empty(device='cpu')), or restore the module itself, not a wrapper"
            )
        planned = {name: node for name, node in leaves.items() if node is not None}
        for name, saved in plain.items():
            if name in planned:
                planned[saved] = planned.pop(name)
        planned.update(self._dtensor_templates(infos, leaves, where))
        problems: list[AssignmentError] = []
        filled: set[str] = set()
        for name, (place, tensor) in self._meta.items():
            # A tensor on 'meta' takes the checkpoint's value whole: its shape must be the one it was built with.
            saved = plain.get(name, name)
            info = infos.get(saved)
            if info is not None and tuple(info.shape) != tuple(tensor.shape):
                problems.append(
                    ShapeMismatchError(
                        f"cannot restore {where[saved]!r} into {place} on the 'meta' device: the checkpoint holds "
                        f"shape {tuple(info.shape)}, the tensor has shape {tuple(tensor.shape)}"
                    )
                )
            elif info is not None:
                filled.add(name)
        if module is not None and filled:
            # The tensor objects themselves (the state dict's own are detached aliases): an optimizer holds these.
            # One of them under two keys is a tied weight, which _flatten cannot tell on 'meta' (no memory): the
            # checkpoint's two values for it are compared once read (see _apart).
            held: dict[int, str] = {}
            for key, tensor in module.state_dict(keep_vars=True).items():
                name = _component(_uncompiled(key))
                if name not in filled or not _is_meta(tensor):
                    continue
                self._fills.append(tensor)
                first = held.setdefault(id(tensor), name)
                if first != name:
                    array, other = plain.get(first, first), plain.get(name, name)
                    self._apart.append((array, other, where[array], where[other]))
        needs, misfits = self._check_optimizer_state(
            [(name, info, where[name]) for name, info in infos.items() if name not in planned]
        )
        self._needs = needs
        problems.extend(misfits)
        for name, tensor in infos.items():
            node = planned.get(name)
            if node is None:
                # An entry that is the same array as another (a tied weight) saved on its own, by a checkpoint of
                # an untied model or of an earlier trackpoint: read apart and copied by load_state_dict, so
                # its shape is checked here, against the array it is, and its values once read (see _apart).
                array = self._aliases.get(name, "")
                tied = planned.get(array)
                shape = None if tied is None else tuple(tied.current().shape)
                if shape is not None and tuple(tensor.shape) != shape:
                    problems.append(
                        ShapeMismatchError(
                            f"cannot restore {where[name]!r} into {self._where}[{name!r}]: the checkpoint holds "
                            f"shape {tuple(tensor.shape)}, the object holds shape {shape} there"
                        )
                    )
                elif array in infos:
                    self._apart.append((array, name, where[array], where[name]))
                continue
            try:
                node._check_restore_tensors({VARIABLE_VALUE_KEY: tensor}, {VARIABLE_VALUE_KEY: where[name]})
            except DTypeMismatchError as exc:
                if node._tensor is not None and tuple(tensor.shape) == tuple(node._tensor.shape):
                    # A torch tensor of another dtype (a bfloat16 model restoring a float32 checkpoint): not read
                    # in place but handed to load_state_dict, which casts as torch's own does (copy_).
                    del planned[name]
                    continue
                problems.append(exc)
            except ShapeMismatchError as exc:
                problems.append(exc)
        if problems:
            message = "\n".join(str(problem) for problem in problems)
            raise type(problems[0])(
                f"{len(problems)} values do not fit {self._where}:\n{message}" if len(problems) > 1 else message
            )
        self._planned = planned
        self._offered = set()

    def _check_optimizer_state(
        self, entries: Sequence[tuple[str, TensorInfo, str]]
    ) -> tuple[dict[int, str], list[AssignmentError]]:
        """What the state a torch optimizer lacks and the checkpoint holds (``(name, info, key)``) needs to fit.

        Returns the parameters on the 'meta' device that state belongs to (by id, with the state's name):
        torch's ``load_state_dict`` moves state to its parameter's device, where it would hold no values, so
        those parameters must be filled first, by the same restore (see :meth:`_order_restores`). And the
        entries of a torch optimizer's own (:data:`_PARAM_SHAPED_STATE`) whose shape is not their parameter's,
        which would fail at the next ``step()`` (a layer resized since the save).
        """
        params = _optimizer_params(self._obj)
        if params is None:
            return {}, []
        cls = type(self._obj)
        shaped = _PARAM_SHAPED_STATE.get((cls.__module__, cls.__name__), frozenset())
        needs: dict[int, str] = {}
        problems: list[AssignmentError] = []
        for name, info, key in entries:
            entry = _state_entry(name)
            if entry is None or entry[0] >= len(params):
                continue
            number, kind = entry
            param = params[number]
            if _is_meta(param):
                needs.setdefault(id(param), f"state.{number}")
            shape = tuple(getattr(param, "shape", ()))
            if kind in shaped and tuple(info.shape) != shape:
                problems.append(
                    ShapeMismatchError(
                        f"cannot restore {key!r} into {self._where}: it is the {kind!r} state of parameter {number} "
                        f"(in the order of the optimizer's param_groups), of shape {tuple(info.shape)}, and that "
                        f"parameter has shape {shape}; {cls.__name__} keeps {kind!r} in its parameter's shape. Was "
                        "the model changed (a layer resized) or its parameters reordered since the save?"
                    )
                )
        return needs, problems

    def _dtensor_templates(
        self, infos: Mapping[str, TensorInfo], leaves: Mapping[str, _NumpyValue | None], where: Mapping[str, str]
    ) -> dict[str, _NumpyValue]:
        """New DTensors for the entries a torch optimizer lacks whose parameter is a DTensor, by name.

        An optimizer has no state before its first step, and a restore creates what it lacks; for a model
        sharded by FSDP2 or tensor parallelism, the state of a DTensor parameter must be a DTensor placed as
        the parameter (``optimizer.step`` refuses to mix DTensors and plain tensors). An entry
        ``state.<i>.<name>`` of the parameter's whole shape becomes such a DTensor, and this rank reads only
        its part of it, as for the DTensors the object holds. Other entries (``step``) are created as usual.
        """
        params = _optimizer_dtensor_params(self._obj)
        if params is None:
            return {}
        created: dict[str, _NumpyValue] = {}
        for name, info in infos.items():
            if name in leaves or name == STATE_DICT_STRUCTURE:
                continue
            parts = name.split(".", 2)
            if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
                continue
            index = int(parts[1])
            param: Any = params[index] if index < len(params) else None
            # A scalar entry (Adam's `step`) stays a plain tensor even for a 0-d DTensor parameter, as torch keeps it.
            if not is_dtensor(param) or param.ndim == 0 or tuple(info.shape) != tuple(param.shape):
                continue
            if info.dtype.kind not in "biufc" and not dtypes.is_ml_dtype(info.dtype):
                continue
            place = f"{self._where}[{name!r}]"
            try:
                created[name] = _DTensorValue(_dtensor_like(param, info.dtype), name, place)
            except TrackableError as exc:
                raise AssignmentError(f"cannot restore into {self._where}: {exc}") from exc
        return created

    def _restore_slice(self, attribute: str) -> TensorSlice | None:
        # docstring inherited
        node = None if self._planned is None else self._planned.get(attribute)
        return None if node is None else node._restore_slice(VARIABLE_VALUE_KEY)

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        if self._apart:
            return None  # nothing read in place before the two values of a tied array are compared
        node = None if self._planned is None else self._planned.get(attribute)
        buffer = None if node is None else node._restore_buffer(VARIABLE_VALUE_KEY)
        if buffer is not None:
            self._offered.add(attribute)
        return buffer

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        planned, self._planned = self._planned or {}, None
        offered, self._offered = self._offered, set()
        apart, self._apart = self._apart, []
        raw = tensors.get(STATE_DICT_STRUCTURE)
        if raw is None:
            return
        self._check_apart(apart, tensors)
        structure = parse_structure(raw, self._where)
        # The arrays the object holds that hold the checkpoint's values before load_state_dict runs.
        written = set(offered)
        # Each array once: an entry naming another's array (a tied weight) gets that very tensor, not a copy.
        built: dict[str, Any] = {}

        def array(name: str, kind: str) -> Any:
            if name not in built:
                built[name] = read(name, kind)
            return built[name]

        def read(name: str, kind: str) -> Any:
            value = planned.get(name)
            if name in tensors:
                if value is not None:
                    value._restore_from_tensors({VARIABLE_VALUE_KEY: tensors[name]})
                    if value._in_place() or value._tensor is not None:
                        written.add(name)  # copied into the object's own memory (a GPU tensor, say)
                    return value.current()
                restored = tensors[name]
                if kind == "torch":
                    return dtypes._numpy_to_torch(restored)
                if kind == "jax":
                    import jax.numpy as jnp  # only for a state dict that held JAX arrays

                    return jnp.asarray(restored)
                return restored[()] if kind == "scalar" else restored
            if value is not None and name in offered:
                return value.current()  # read into its memory
            raise InvalidCheckpointError(
                f"{self._where}: the saved state dict names the array {name!r}, which the checkpoint lacks"
            )

        state = rebuild_state_dict(structure, array, self._where)
        meta, self._meta = self._meta, {}
        self._load(state, bool(meta), written)

    @staticmethod
    def _check_planned_values(
        objects: list[Trackable], read: Callable[[Sequence[str]], Mapping[str, np.ndarray[Any, Any]]]
    ) -> None:
        """Refuse two different values for a tied tensor once a restore has planned, before it writes anything.

        Called by a restore (see ``trackpoint.restore._Plan``) with ``read(keys)``, whose values it applies
        without reading them again. Restores that do not call this (``FrozenSaver``) are checked by
        :meth:`_restore_from_tensors`, with no value read in place.
        """
        tied = [node for node in objects if isinstance(node, StatefulValue) and node._apart]
        if not tied:
            return
        values = read([key for node in tied for *_, first, other in node._apart for key in (first, other)])
        for node in tied:
            apart = node._apart
            node._check_apart(apart, {n: values[k] for a, b, ka, kb in apart for n, k in ((a, ka), (b, kb))})
            node._apart = []  # checked: its values may be read in place

    def _check_apart(self, apart: list[tuple[str, str, str, str]], tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Refuse two different values the checkpoint holds for one array of the object (a tied weight).

        The object would keep whichever ``load_state_dict`` copied last and drop the other. Equal values (a
        tied model saved by a trackpoint that stored each key) restore as one. Nothing of the object was
        read in place (see :meth:`_restore_buffer`): it is left as it was.
        """
        differ = [
            f"  {first_key!r} and {other_key!r}"
            for first, other, first_key, other_key in apart
            if first in tensors and other in tensors and not _same_values(tensors[first], tensors[other])
        ]
        if differ:
            lines = "\n".join(differ)
            raise TrackableError(
                f"cannot restore into {self._where}: the checkpoint holds two different values for one tensor "
                f"{type(self._obj).__name__} holds under two keys (tied weights, saved from a model where they "
                "were not tied); a restore would keep one and drop the other. Nothing was restored into "
                f"{self._where}. Untie them in the model (a Parameter of its own for each key) to restore both, "
                f"or restore a checkpoint saved from the tied model:\n{lines}"
            )

    def _load(self, state: Any, meta: bool, written: set[str]) -> None:
        """Hand the state dict rebuilt from the checkpoint to ``load_state_dict``, first filling tensors on 'meta'.

        ``meta``: the object holds tensors on the 'meta' device; ``written``: the names of its arrays already
        holding the checkpoint's values, for the message if ``load_state_dict`` refuses.
        """
        module = _module(self._obj)
        if module is not None:
            state = _as_spelled(state, self._spelling, module)
        filling = module if meta else None
        try:
            if filling is not None and isinstance(state, Mapping):
                # A module built on the 'meta' device, to be filled by its checkpoint (as large models are).
                _materialize(filling, state)
            self._obj.load_state_dict(state)
        except Exception as exc:  # the object's own refusal, of any type
            # As PyTorch DCP does, arrays the object holds were read into in place before load_state_dict ran.
            partly = (
                f"; {len(written)} of its arrays had already been written in place and hold the checkpoint's values"
                if written
                else ""
            )
            raise AssignmentError(
                f"cannot restore into {self._where}: {type(self._obj).__name__}.load_state_dict() refused the saved "
                f"state dict ({type(exc).__name__}: {exc}){partly}. Was it saved from another kind of object (an "
                "optimizer of another class, a module with other layers)?"
            ) from exc
        if filling is not None:
            empty = [key for key, tensor in filling.state_dict(keep_vars=True).items() if _is_meta(tensor)]
            if empty:
                # Entries the checkpoint lacks (a NonStrict restore) have no initial values to keep on 'meta'.
                # Said, not raised: the restore of the other objects goes on, as a NonStrict restore should.
                _log.warning(
                    "%s: %d of its tensors are still on the 'meta' device after the restore (%s): the checkpoint "
                    "holds no value for them; give them memory and initialize them (module.to_empty(device=...) "
                    "before the restore, or those layers' reset_parameters() after materializing them)",
                    self._where,
                    len(empty),
                    ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else ""),
                )

    def _arrived(self, entry: _SavedEntry) -> None:
        """A value of a state dict saved as a dict was read: the last one rebuilds it and loads it."""
        pending = self._pending
        if id(entry) not in pending:
            return  # an entry of an earlier restore
        pending.discard(id(entry))
        if not pending:
            self._load_entries()

    def _load_entries(self) -> None:
        entries, template = self._entries or {}, self._template
        rebuild = _Rebuild(self._obj, build=True)
        state = rebuild.state(entries, template, self._where)
        meta = isinstance(template, Mapping) and any(_is_meta(value) for value in template.values())
        self._load(state, meta, set())

    @staticmethod
    def _order_restores(objects: list[Trackable]) -> list[Trackable]:
        """The objects a restore planned, in the order to apply their values; refuses what cannot be restored.

        Called by a restore once it has planned every object and before it writes anything (see
        ``trackpoint.restore._Plan``). A torch optimizer's ``load_state_dict`` places its state on its
        parameters' device: for parameters on the 'meta' device that the restore fills (a model built on
        'meta'), their modules must be loaded first, whatever the names they are held under. State for
        parameters on 'meta' that the restore does not fill would keep no values: refused, as is a state dict
        saved as a dict that cannot be rebuilt. Such state dicts are loaded last, once their values are read.

        Parameters
        ----------
        objects
            The objects planned, in the order of the restore's walk.

        Returns
        -------
        list
            The same objects: those filling tensors on 'meta' first, the entries of state dicts saved as a dict
            last, the others in between in their order.

        Raises
        ------
        AssignmentError
            Optimizer state whose parameters stay on 'meta', or a state dict saved as a dict that cannot be
            rebuilt (each named with what to do); nothing has been written.
        """
        nodes = [obj for obj in objects if isinstance(obj, StatefulValue)]
        planned = {id(obj) for obj in objects}
        rebuilt: list[tuple[StatefulValue, list[_SavedEntry]]] = []
        problems: list[str] = []
        for node in nodes:
            if node._entries is None:
                continue
            every = [entry for top in node._entries.values() for entry in _walk_entries(top)]
            if not every or not all(id(entry) in planned for entry in every):
                continue  # entries of an earlier restore of this object
            check = _Rebuild(node._obj, build=False)
            check.state(node._entries, node._template, node._where)
            needs, misfits = node._check_optimizer_state(check.flat(node._entries))
            node._needs = needs
            if check.problems or misfits:
                listed = "\n  ".join([*check.problems, *(str(misfit) for misfit in misfits)])
                problems.append(
                    f"{node._where} ({type(node._obj).__name__}): the checkpoint holds its state dict as a dict (saved "
                    "from the state dict given as a dict, such as optimizer=opt.state_dict()), and the state dict "
                    f"its load_state_dict() takes cannot be rebuilt from it:\n  {listed}\nRead that dict with "
                    "tp.load_tree(path) and load what it holds yourself (tp.to_torch makes its arrays torch tensors)"
                )
            rebuilt.append((node, every))
        filled = {id(tensor) for node in nodes for tensor in node._fills}
        for node in nodes:
            waiting = [name for param, name in node._needs.items() if param not in filled]
            if waiting:
                problems.append(
                    f"{node._where} ({type(node._obj).__name__}) holds state for {len(waiting)} parameters on the "
                    f"'meta' device ({', '.join(waiting[:3])}{', ...' if len(waiting) > 3 else ''}) that this restore "
                    "does not fill: torch places an optimizer's state on its parameters' device, where it would "
                    "keep no values. Restore their module in the same restore (give it to this Checkpoint too), "
                    "or before this one, or give them memory first (module.to_empty(device='cpu')). A module "
                    "whose checkpoint holds its state dict as a dict (saved from model=net.state_dict()) fills "
                    "no tensors on 'meta', in this restore or any: give it memory first"
                )
        if problems:
            raise AssignmentError("cannot restore (nothing was written): " + "\n".join(problems))
        first = [node for node in nodes if node._fills]
        for node in nodes:
            node._fills, node._needs = [], {}
        last: list[Trackable] = []
        for node, every in rebuilt:
            leaves = [entry for entry in every if entry._info is not None]
            node._pending = {id(entry) for entry in leaves}
            last.extend(every)
            if not leaves:
                node._load_entries()  # nothing to read (empty containers only)
        if not first and not last:
            return objects
        moved = {id(obj) for obj in (*first, *last)}
        return [*first, *(obj for obj in objects if id(obj) not in moved), *last]

    def __repr__(self) -> str:
        return f"<state dict of {type(self._obj).__name__} at {self._where}>"


def parse_structure(raw: Any, where: str) -> Any:
    """The structure saved in a ``.STATE_DICT`` string, checked for its format.

    Parameters
    ----------
    raw
        The saved string: a 0-d object array, ``bytes`` or ``str``.
    where
        What it belongs to, for messages.

    Returns
    -------
    object
        The JSON structure (see :class:`StatefulValue`), for :func:`rebuild_state_dict`.

    Raises
    ------
    InvalidCheckpointError
        The string is not a structure this trackpoint reads (damaged, or of a newer format).
    """
    try:
        text: Any = np.asarray(raw, dtype=object)[()]
        saved = json.loads(text)
        version, structure = saved["version"], saved["state"]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise InvalidCheckpointError(f"{where}: the saved state dict structure is unreadable ({exc})") from exc
    if version != _FORMAT_VERSION:
        raise InvalidCheckpointError(
            f"{where}: the state dict was saved in format {version!r}; this trackpoint reads format "
            f"{_FORMAT_VERSION}: upgrade trackpoint"
        )
    return structure


def rebuild_state_dict(structure: Any, array: Callable[[str, str], Any], where: str) -> Any:
    """The state dict a saved structure describes.

    Parameters
    ----------
    structure
        What :func:`parse_structure` returned.
    array
        Called as ``array(name, kind)`` for each array: its attribute name and how it was held
        (``"torch"``, ``"jax"``, ``"numpy"`` or ``"scalar"``); returns the value to put in its place.
    where
        What the state dict belongs to, for messages.

    Raises
    ------
    InvalidCheckpointError
        The structure names a mapping type this trackpoint does not know.
    """

    def build(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "array" in node:
            return array(node["array"], node["kind"])
        if "bytes" in node:
            return bytes.fromhex(node["bytes"])
        if "dict" in node:
            kind = _MAPPINGS.get(node.get("type", "dict"))
            if kind is None:
                raise InvalidCheckpointError(
                    f"{where}: the saved state dict holds a mapping of unknown type {node['type']!r}"
                )
            rebuilt: Any = kind()
            for key, item in node["dict"]:
                rebuilt[key] = build(item)  # not kind(pairs): a Counter would count the pairs
            if "metadata" in node:
                rebuilt._metadata = build(node["metadata"])
            return rebuilt
        if "list" in node:
            return [build(item) for item in node["list"]]
        return tuple(build(item) for item in node["tuple"])

    try:
        return build(structure)
    except RecursionError:
        # Saves refuse nesting this deep (MAX_STATE_DICT_DEPTH): a checkpoint written otherwise.
        raise InvalidCheckpointError(
            f"{where}: the saved state dict nests containers too deeply to be rebuilt (a save nests at most "
            f"{MAX_STATE_DICT_DEPTH} levels)"
        ) from None


def structure_changes(a: object, b: object, atol: float = 0.0, rtol: float = 0.0) -> list[str] | None:
    """What differs between two saved state-dict structures, entry by entry; ``None`` if either is not one.

    Parameters
    ----------
    a, b
        The saved ``.STATE_DICT`` strings (``bytes`` or ``str``).
    atol, rtol
        Tolerances for numbers, as in :func:`numpy.isclose`; booleans, strings and the structure itself
        must be equal.

    Returns
    -------
    list of str or None
        One line per differing entry (``['param_groups'][0]['lr']: 0.1 -> 0.2``), empty when the
        structures agree within the tolerances. Array entries are compared as tensors, not here.
    """

    def parse(text: object) -> Any:
        try:
            return parse_structure(text, "")
        except InvalidCheckpointError:
            return None

    x, y = parse(a), parse(b)
    if x is None or y is None:
        return None
    found: list[str] = []

    def close(p: Any, q: Any) -> bool:
        if type(p) is not type(q) or type(p) not in (int, float):
            return bool(type(p) is type(q) and p == q)  # an int that became a float has changed
        if p == q or (p != p and q != q):
            return True
        if type(p) is int:
            # Exactly, as tensors' integers are: through float64, 2**62 + 1 equals 2**62.
            return bool(abs(p - q) <= atol + rtol * abs(q))
        return bool(np.isclose(p, q, rtol=rtol, atol=atol))

    def entries(node: Any) -> dict[Any, Any] | None:
        if isinstance(node, dict) and "dict" in node:
            return {json.dumps(key): item for key, item in node["dict"]}
        if isinstance(node, dict) and ("list" in node or "tuple" in node):
            items: list[Any] = node["list"] if "list" in node else node["tuple"]
            return {str(index): item for index, item in enumerate(items)}
        return None

    def shown(node: Any) -> str:
        if isinstance(node, dict) and "array" in node:
            # By the array it names: an entry that became the same array as another (tied) names that one.
            return f"<{node['kind']} array {node['array']!r}>"
        if isinstance(node, dict) and "bytes" in node:
            return repr(bytes.fromhex(node["bytes"]))
        if entries(node) is not None:
            return "<dict>" if "dict" in node else f"<{'list' if 'list' in node else 'tuple'}>"
        return repr(node)

    def walk(p: Any, q: Any, where: str) -> None:
        ep, eq = entries(p), entries(q)
        if ep is None or eq is None or {k for k in p if k != "metadata"} != {k for k in q if k != "metadata"}:
            if not close(p, q):
                found.append(f"{where or '(whole)'}: {shown(p)} -> {shown(q)}")
            return
        if "metadata" in p or "metadata" in q:  # torch's module versions
            walk(p.get("metadata"), q.get("metadata"), f"{where}._metadata")
        for key in ep.keys() | eq.keys():
            step = f"{where}[{json.loads(key)!r}]" if "dict" in p else f"{where}[{key}]"
            if key not in eq:
                found.append(f"{step}: {shown(ep[key])} -> (none)")
            elif key not in ep:
                found.append(f"{step}: (none) -> {shown(eq[key])}")
            else:
                walk(ep[key], eq[key], step)

    walk(x, y, "")
    return sorted(found)
