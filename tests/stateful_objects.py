"""A Stateful object of plain state for the tests, as a data loader or a random generator is to a checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np


class StateHolder:
    """Saves ``state`` through ``state_dict()``; ``load_state_dict`` records each state dict it is given."""

    def __init__(self, state: Any = None) -> None:
        self.state: Any = {} if state is None else state
        self.loaded: list[Any] = []

    def state_dict(self) -> Any:
        return self.state

    def load_state_dict(self, state: Any) -> None:
        self.loaded.append(state)
        self.state = state


def assert_same(a: Any, b: Any) -> None:
    """``a`` and ``b`` are equal state dicts: same types, keys in the same order, bit-equal tensors and arrays."""
    assert type(a) is type(b), (a, b)
    if type(a).__module__.startswith("torch"):
        import torch  # only for torch values: the module is imported by tests without torch too

        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b or (a != a and b != b), (a, b)
