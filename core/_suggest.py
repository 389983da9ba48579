"""Unknown names in messages, each with the valid name it most likely meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def with_hints(unknown: Iterable[str], valid: Iterable[str], quote: bool = False) -> str:
    """``"retriez (did you mean retries?), bogus"``: ``unknown`` sorted, each with its closest ``valid`` name.

    ``quote`` writes the names as ``repr`` does (``'retriez'``), for options that are dict keys in the
    message's wording.
    """
    choices = sorted(valid)
    shown = repr if quote else str
    return ", ".join(
        f"{shown(name)} (did you mean {shown(close[0])}?)"
        if (close := difflib.get_close_matches(name, choices, 1))
        else shown(name)
        for name in sorted(unknown)
    )
