"""Sizes for people: one formatting for the logs, the command line and the stores' messages."""

from __future__ import annotations

__all__ = ["human_bytes"]


def human_bytes(nbytes: float) -> str:
    """``"1.5 KiB"`` for 1536, whole bytes below 1 KiB (``"512 B"``); rates (floats) too."""
    if abs(nbytes) < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        nbytes /= 1024
        if abs(nbytes) < 1024 or unit == "PiB":
            break
    return f"{nbytes:.1f} {unit}"
