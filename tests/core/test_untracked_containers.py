"""Containers that are not tracked (dict subclasses, sets, dataclasses, ...) may not hide state.

``AutoTrackable`` wraps plain dicts, lists and tuples; any other value assigned to an attribute (or put
into a tracked container outside a ``Checkpoint``) is configuration. One that holds a trackable, a numeric
array or a ``Stateful`` object would leave it out of every checkpoint without a word, so it is refused at
assignment, naming where. Containers nested too deeply to wrap raise a ``TrackableError`` too, not
Python's ``RecursionError``.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import data_structures

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def keys(path: str) -> list[str]:
    return [name for name, _ in tp.list_variables(path) if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]


class MyDict(dict[Any, Any]):
    pass


class AttrDict(dict[Any, Any]):
    """The attribute-access config dict found in many code bases."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class MyList(list[Any]):
    pass


@dataclasses.dataclass
class Heads:
    weight: Any
    bias: Any


@dataclasses.dataclass(frozen=True)
class Frozen:
    value: Any


class Model(tp.AutoTrackable):
    pass


class Counted:
    """A plain object with a ``state_dict`` protocol: saved through its state dict wherever it is tracked."""

    def __init__(self) -> None:
        self.count = np.zeros(2)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]


def variable() -> tp.Variable:
    return tp.Variable(np.ones(2))


# Each value holds something a plain dict, list or tuple would save; the second item is where it is named.
HIDING: dict[str, tuple[Callable[[], Any], str]] = {
    "dict subclass": (lambda: MyDict(a=variable()), "Model.x['a']"),
    "attribute dict": (lambda: AttrDict(lr=0.1, w=variable()), "Model.x['w']"),
    "list subclass": (lambda: MyList([1, variable()]), "Model.x[1]"),
    "UserDict": (lambda: collections.UserDict(a=variable()), "Model.x['a']"),
    "UserList": (lambda: collections.UserList([variable()]), "Model.x[0]"),
    "MappingProxyType": (lambda: types.MappingProxyType({"a": np.ones(2)}), "Model.x['a']"),
    "ChainMap": (lambda: collections.ChainMap({"a": 1}, {"b": variable()}), "Model.x.maps[1]['b']"),
    "Counter": (lambda: collections.Counter({"a": variable()}), "Model.x['a']"),
    "defaultdict": (lambda: collections.defaultdict(list, a=[variable()]), "Model.x['a'][0]"),
    "SimpleNamespace": (lambda: types.SimpleNamespace(lr=0.1, w=variable()), "Model.x.w"),
    "dataclass": (lambda: Heads(variable(), np.zeros(2)), "Model.x.weight"),
    "set": (lambda: {variable()}, "an element of Model.x"),
    "frozenset": (lambda: frozenset({variable()}), "an element of Model.x"),
    "deque": (lambda: collections.deque([variable()]), "Model.x[0]"),
    "numpy array": (lambda: collections.deque(["a", np.ones(2, np.float32)]), "Model.x[1]"),
    "stateful object": (lambda: collections.deque([Counted()]), "Model.x[0]"),
    "nested": (lambda: MyDict(a={"b": [1, (2, variable())]}), "Model.x['a']['b'][1][1]"),
    "frozen dataclass in a set": (lambda: {Frozen(variable())}, "(an element of Model.x).value"),
}


@pytest.mark.parametrize("kind", list(HIDING))
def test_untracked_container_holding_state_is_refused_naming_where(kind: str) -> None:
    make, where = HIDING[kind]
    model = Model()
    value = make()
    with pytest.raises(tp.TrackableError) as caught:
        model.x = value
    message = str(caught.value)
    assert message.startswith(f"{where} is "), message
    assert "held by Model.x" in message and "would not be saved" in message
    assert "NoDependency" in message
    assert not hasattr(model, "x")


def test_the_reviewers_model_is_refused_attribute_by_attribute() -> None:
    class Reviewed(tp.AutoTrackable):
        def __init__(self, v: float, hidden: str) -> None:
            self.backbone = tp.Variable(np.full(2, v))
            blocks = MyDict(a=tp.Variable(np.full(2, v)))
            heads = Heads(tp.Variable(np.full(2, v)), np.full(2, v))
            ema = {tp.Variable(np.full(2, v))}
            queue = collections.deque([tp.Variable(np.full(2, v))])
            values = {"blocks": blocks, "heads": heads, "ema": ema, "queue": queue}
            for name, value in values.items():
                setattr(self, name, value if name == hidden else tp.NoDependency(value))

    for hidden, where, kind in [
        ("blocks", "Reviewed.blocks['a']", "MyDict"),
        ("heads", "Reviewed.heads.weight", "Heads"),
        ("ema", "an element of Reviewed.ema", "set"),
        ("queue", "Reviewed.queue[0]", "deque"),
    ]:
        with pytest.raises(tp.TrackableError, match=rf"^{re.escape(where)} is .*\(type {kind}\)"):
            Reviewed(1.0, hidden)


def test_the_message_says_what_to_use_instead() -> None:
    model = Model()
    advice = {
        "dict(value)": MyDict(a=variable()),
        "list(value)": collections.deque([variable()]),
        "dict(vars(value))": types.SimpleNamespace(w=variable()),
        "Make Heads a subclass of trackpoint.AutoTrackable": Heads(variable(), 1),
        "a plain list instead, in an order that is the same in every run": {variable()},
    }
    for text, value in advice.items():
        with pytest.raises(tp.TrackableError) as caught:
            model.x = value
        assert text in str(caught.value)


def test_the_advice_works_a_plain_copy_or_a_trackable_dataclass_is_saved_and_restored() -> None:
    @dataclasses.dataclass
    class TrackedHeads(tp.AutoTrackable):
        weight: Any
        bias: Any

    def build(v: float) -> Model:
        model = Model()
        model.blocks = dict(MyDict(a=tp.Variable(np.full(2, v))))
        model.heads = TrackedHeads(tp.Variable(np.full(2, v)), np.full(2, v))
        model.queue = list(collections.deque([tp.Variable(np.full(2, v))]))
        return model

    path = tp.Checkpoint(model=build(1.0)).write("memory://untracked/advice")
    assert keys(path) == [
        "model/blocks/a" + VALUE,
        "model/heads/bias" + VALUE,
        "model/heads/weight" + VALUE,
        "model/queue/0" + VALUE,
    ]
    restored = build(0.0)
    tp.Checkpoint(model=restored).read(path).assert_consumed()
    assert restored.blocks["a"].numpy().tolist() == [1.0, 1.0]
    assert restored.heads.bias.tolist() == [1.0, 1.0]
    assert restored.queue[0].numpy().tolist() == [1.0, 1.0]


def test_torch_tensor_in_an_untracked_container_is_refused() -> None:
    torch = pytest.importorskip("torch")
    model = Model()
    with pytest.raises(tp.TrackableError, match=r"^Model\.x\[0\] is .*\(type deque\)"):
        model.x = collections.deque([torch.zeros(2)])


@pytest.mark.parametrize("dtype", ["bfloat16", "int4", "float8_e3m4"])
def test_an_ml_dtypes_array_in_an_untracked_container_is_refused(dtype: str) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    model = Model()
    with pytest.raises(tp.TrackableError, match=r"^Model\.x\[0\] is .*\(type deque\)"):
        model.x = collections.deque([np.zeros(2, dtype=getattr(ml_dtypes, dtype))])


def test_jax_array_in_an_untracked_mapping_is_refused() -> None:
    jnp = pytest.importorskip("jax.numpy")
    model = Model()
    with pytest.raises(tp.TrackableError, match=r"^Model\.params\['w'\] is .*\(type mappingproxy\)"):
        model.params = types.MappingProxyType({"w": jnp.zeros(2)})


# ------------------------------------------------------------------ inside tracked lists, dicts and tuples
def test_tracked_containers_refuse_untracked_elements_holding_state() -> None:
    model = Model()
    given = {"lr": 0.1, "blocks": MyDict(a=variable())}
    with pytest.raises(tp.TrackableError, match=r"^Model\.cfg\['blocks'\]\['a'\] is .*held by Model\.cfg\['blocks'\]"):
        model.cfg = given
    assert type(given["blocks"]) is MyDict  # the dict given is left as it was

    model.d = {}
    with pytest.raises(tp.TrackableError, match=r"^Model\.d\['k'\]\.weight is .*\(type Heads\)"):
        model.d["k"] = Heads(variable(), 1)
    assert "k" not in model.d

    model.layers = []
    with pytest.raises(tp.TrackableError, match=r"^an element of Model\.layers\[0\] is .*\(type set\)"):
        model.layers.append({variable()})
    assert model.layers == []

    # A tuple of only configuration is left unwrapped, a tuple holding a variable is tracked: both look inside.
    with pytest.raises(tp.TrackableError, match=r"^Model\.t\[1\]\[0\] is .*held by Model\.t\[1\] \(type deque\)"):
        model.t = (1, collections.deque([variable()]))
    with pytest.raises(tp.TrackableError, match=r"^Model\.t\[1\]\['a'\] is .*\(type MyDict\)"):
        model.t = (variable(), MyDict(a=variable()))


# ---------------------------------------------------------------------------------- keeping state unsaved
def test_no_dependency_keeps_an_untracked_container_unsaved_on_purpose() -> None:
    def build(v: float) -> Model:
        model = Model()
        model.backbone = tp.Variable(np.full(2, v))
        model.ema = tp.NoDependency({tp.Variable(np.full(2, v))})
        model.blocks = {"cache": tp.NoDependency(MyDict(a=tp.Variable(np.full(2, v))))}
        return model

    source = build(1.0)
    assert type(source.ema) is set and type(source.blocks["cache"]) is MyDict
    path = tp.Checkpoint(model=source).write("memory://untracked/nodependency")
    assert keys(path) == ["model/backbone" + VALUE]
    restored = build(0.0)
    tp.Checkpoint(model=restored).read(path).assert_consumed()
    assert restored.backbone.numpy().tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------- configuration is still accepted
#: A trackable that outlives the weak containers that refer to it.
KEPT = tp.AutoTrackable()

CONFIGURATION: dict[str, Callable[[], Any]] = {
    "dict subclass of strings and ints": lambda: MyDict(name="resnet", depth=50, sizes=MyList([1, 2])),
    "attribute dict": lambda: AttrDict(lr=0.1, schedule=("cosine", 10)),
    "dataclass of floats": lambda: Heads(0.5, 1.5),
    "set of strings": lambda: {"train", "eval"},
    "frozenset of tuples": lambda: frozenset({("a", 1), ("b", 2)}),
    "Counter of ints": lambda: collections.Counter("mississippi"),
    "defaultdict of lists": lambda: collections.defaultdict(list, a=[1, 2]),
    "deque of strings": lambda: collections.deque(["a", "b"], maxlen=4),
    "SimpleNamespace": lambda: types.SimpleNamespace(lr=0.1, name=None, fn=len),
    "ChainMap": lambda: collections.ChainMap({"a": 1}, {"a": 2, "b": "x"}),
    "MappingProxyType": lambda: types.MappingProxyType({"a": 1.0}),
    "string array in a dict subclass": lambda: MyDict(labels=np.array(["cat", "dog"])),
    "tuple of numbers": lambda: (3, 4.0, None),
    "object in a set": lambda: {object()},
    "set of numpy scalars": lambda: set(np.unique(np.array([3, 1, 3]))),
    "dataclass with a numpy scalar": lambda: Heads(np.float32(0.5), 1.5),
    "nested tuples of numbers": lambda: ((1, 2), (3, 4.0)),
    "WeakSet of trackables": lambda: weakref.WeakSet([KEPT]),
    "WeakValueDictionary of trackables": lambda: weakref.WeakValueDictionary({"a": KEPT}),
}


@pytest.mark.parametrize("kind", list(CONFIGURATION))
def test_untracked_configuration_is_accepted_and_kept_as_given(kind: str) -> None:
    value = CONFIGURATION[kind]()
    model = Model()
    model.w = tp.Variable(np.ones(2))
    model.config = value
    assert model.config is value
    assert keys(tp.Checkpoint(model=model).write("memory://untracked/config")) == ["model/w" + VALUE]


def test_configuration_in_tracked_containers_is_accepted() -> None:
    model = Model()
    model.cfg = {"vocab": collections.Counter("abc"), "names": {"a", "b"}, "w": variable()}
    model.cfg["more"] = MyDict(depth=3)
    model.layers = [Heads(1.0, 2.0)]
    assert type(model.cfg["vocab"]) is collections.Counter and type(model.layers[0]) is Heads
    assert keys(tp.Checkpoint(model=model).write("memory://untracked/config-in-containers")) == ["model/cfg/w" + VALUE]


def test_strict_checkpoint_arguments_still_refuse_untracked_containers() -> None:
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.x is .*\(Counter\), which a checkpoint does not save"):
        tp.Checkpoint(x=collections.Counter("abc"))


# --------------------------------------------------------------------------------------- how far it looks
class CountingMapping(Mapping[int, Any]):
    """A large mapping that counts the values read from it."""

    def __init__(self, size: int, first: Any = 0) -> None:
        self.size = size
        self.first = first
        self.reads = 0

    def __getitem__(self, key: int) -> Any:
        self.reads += 1
        return self.first if key == 0 else key

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.size))

    def __len__(self) -> int:
        return self.size


def test_a_huge_untracked_value_is_looked_at_only_up_to_the_bound() -> None:
    config = CountingMapping(10**6)
    model = Model()
    model.config = config
    assert model.config is config
    assert 0 < config.reads <= data_structures._SCAN_ITEMS


def test_the_scan_stops_at_the_first_saved_value() -> None:
    config = CountingMapping(10**6, first=variable())
    with pytest.raises(tp.TrackableError, match=r"^Model\.config\[0\] is "):
        Model().config = config
    assert config.reads == 1


def test_saved_values_are_found_breadth_first_past_large_configuration() -> None:
    # The large field is looked into after every field at the top level: the variable after it is found.
    @dataclasses.dataclass
    class Config:
        vocab: Any
        embedding: Any

    with pytest.raises(tp.TrackableError, match=r"^Model\.config\.embedding is "):
        Model().config = Config(collections.Counter({str(i): i for i in range(10**5)}), variable())


def test_an_untracked_container_that_holds_itself_is_scanned_once() -> None:
    loop = MyDict(name="loop")
    loop["self"] = loop
    Model().config = loop  # accepted: configuration only, and the scan ends
    loop["w"] = variable()
    with pytest.raises(tp.TrackableError, match=r"^Model\.config\['w'\] is "):
        Model().config = loop


def test_an_untracked_container_that_cannot_be_read_is_accepted() -> None:
    class Broken(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise OSError("the store is gone")

        def __iter__(self) -> Iterator[str]:
            return iter(["a"])

        def __len__(self) -> int:
            return 1

    broken = Broken()
    model = Model()
    model.store = broken
    assert model.store is broken


# ------------------------------------------------------------------------------------------- deep nesting
def nested_lists(depth: int) -> Any:
    value: Any = np.zeros(1)
    for _ in range(depth):
        value = [value]
    return value


def test_containers_nested_too_deeply_raise_a_trackable_error_naming_where() -> None:
    with pytest.raises(tp.TrackableError) as caught:
        tp.Checkpoint(x=nested_lists(1000))
    message = str(caught.value)
    assert message.startswith("Checkpoint.x nests lists, dicts or tuples too deeply to be wrapped")
    assert "levels of containers down, at Checkpoint.x[0][0]" in message and "NoDependency" in message
    assert isinstance(caught.value.__cause__, RecursionError)

    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(1000):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(tp.TrackableError, match=r"^Model\.tree nests .* at Model\.tree\['a'\]\['a'\]"):
        Model().tree = deep

    chain: Any = 1
    for _ in range(5000):
        chain = (chain,)
    with pytest.raises(tp.TrackableError, match=r"^Model\.chain nests lists, dicts or tuples too deeply"):
        Model().chain = chain


def test_wrapping_works_again_after_nesting_too_deep() -> None:
    with pytest.raises(tp.TrackableError):
        tp.Checkpoint(x=nested_lists(1000))
    shared = [variable()]
    model = Model()
    model.pair = [shared, {"again": shared}]  # the same list twice is no cycle
    model.nested = nested_lists(100)
    path = tp.Checkpoint(model=model).write("memory://untracked/after-deep")
    assert "model/pair/0/0" + VALUE in keys(path)
    cycle: list[Any] = [variable()]
    cycle.append(cycle)
    with pytest.raises(tp.TrackableError, match="holds itself"):
        model.cycle = cycle
