"""Observer plugins shared by the tests of trackpoint's events."""

from __future__ import annotations

from typing import Any

from trackpoint.plugins import hookimpl


class Deletes:
    """An observer of deletes only; ``events`` holds the fields of each, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @hookimpl
    def trackpoint_checkpoint_deleted(
        self, path: str, backend: str, reason: str, error: BaseException | None, seconds: float
    ) -> None:
        self.events.append({"path": path, "backend": backend, "reason": reason, "error": error, "seconds": seconds})

    @property
    def plain(self) -> list[dict[str, Any]]:
        """``events`` without ``seconds`` (checked to be a duration), to compare with expected fields."""
        assert all(event["seconds"] >= 0 for event in self.events)
        return [{k: v for k, v in event.items() if k != "seconds"} for event in self.events]
