"""Support for the 0.1 module paths kept for one release (``trackpoint.backends.files`` and the like)."""

from __future__ import annotations

import warnings


def warn_moved(old: str, new: str) -> None:
    """Warn that module ``old`` moved to ``new``, attributed to the line that imported ``old``."""
    # stacklevel 3 is the frame above the shim module; the warnings machinery
    # skips the import system's own frames, so that is the import statement:
    # the default filters then show the warning to the code that has to change.
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; import from {new} instead",
        DeprecationWarning,
        stacklevel=3,
    )
