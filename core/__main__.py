"""``python -m trackpoint``: the same command line as the ``trackpoint`` console script."""

from __future__ import annotations

from trackpoint.cli import main

raise SystemExit(main())
