"""A Stateful object of plain state for the tests, as a data loader or a random generator is to a checkpoint."""

from __future__ import annotations

from typing import Any


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
