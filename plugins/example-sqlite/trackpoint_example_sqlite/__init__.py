"""trackpoint storage backend ``sqlite``: every checkpoint of a run in one SQLite file.

This module is what the ``trackpoint.backends`` entry point loads, so it stays
light: it only describes the backend. The implementation (and its imports) is
loaded by the factory the first time a ``sqlite://`` URL is used.
"""

from __future__ import annotations

from collections.abc import Callable

from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import Capabilities, CheckpointOptions, StorageBackend

__all__ = ["CAPABILITIES", "trackpoint_register_backends"]

#: Declared once here so listings show them without importing the implementation.
CAPABILITIES = Capabilities(
    atomic_rename=False,
    conditional_create=True,  # commit and compare-and-swap are transactions
    ranged_reads=False,
    parallel_writes=True,  # WAL mode; SQLite serialises the writers itself
    listing_consistent=True,
)


def _create(url: str, options: CheckpointOptions) -> StorageBackend:
    from trackpoint_example_sqlite._backend import SqliteBackend

    return SqliteBackend.for_url(url, options)


@hookimpl
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register ``sqlite`` for ``sqlite://`` URLs."""
    register(
        BackendSpec(
            name="sqlite",
            factory=_create,
            schemes=("sqlite",),
            description="checkpoints as rows of one SQLite database file (example third-party plugin)",
            # Python can be built without sqlite3; then the backend is listed as
            # unavailable instead of failing on first use.
            requires=("sqlite3",),
            install_hint="use a Python built with the sqlite3 module",
            capabilities=CAPABILITIES,
        )
    )
