"""Built-in storage backends.

Each backend is an ordinary plugin registered through the ``trackpoint.backends``
entry-point group, exactly like a third-party one. Importing this package
imports no storage library.
"""

from __future__ import annotations

__all__: list[str] = []
