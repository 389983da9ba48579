"""CRC-32C (Castagnoli) from the ``crc32c`` package, for the formats: ``crc32c(data, value=0)``.

The package's compiled module is loaded without running the package's ``__init__``, which reads the
package's version through ``importlib.metadata`` and imports its command-line interface (``argparse``):
30-40 ms on the first checkpoint a process opens, for the one function the formats call. Any other layout
of the package gets a plain import.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType
from typing import Final

__all__ = ["crc32c"]


def _load_extension() -> ModuleType:
    spec = importlib.util.find_spec("crc32c")
    locations = [] if spec is None else list(spec.submodule_search_locations or ())
    for location in locations:
        for suffix in EXTENSION_SUFFIXES:
            path = os.path.join(location, "_crc32c" + suffix)
            if not os.path.isfile(path):
                continue
            extension = importlib.util.spec_from_file_location("crc32c._crc32c", path)
            if extension is None or extension.loader is None:
                continue
            try:
                module = importlib.util.module_from_spec(extension)
                extension.loader.exec_module(module)
            except ImportError:
                continue  # a build for another interpreter, say: the package's own import decides
            if callable(getattr(module, "crc32c", None)):
                return module
    import crc32c

    return crc32c


#: ``crc32c(data, value=0)``: the CRC-32C of the bytes of ``data`` (any contiguous buffer), continuing
#: ``value`` (unmasked); an ``int``.
crc32c: Final[Callable[..., int]] = _load_extension().crc32c
