"""Storage plugins: hook specifications, the plugin manager and the conformance kit.

Backends (built-in and third-party alike) are pluggy plugins published in the
``trackpoint.backends`` entry-point group.
"""

from __future__ import annotations

import pluggy

from trackpoint.plugins._spec import BackendFactory, BackendSpec

hookimpl = pluggy.HookimplMarker("trackpoint")

from trackpoint.plugins.manager import open_backend  # noqa: E402  (needs hookimpl defined first)

__all__ = ["BackendFactory", "BackendSpec", "hookimpl", "open_backend"]
