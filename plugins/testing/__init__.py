"""The conformance kit: pytest mixins every storage backend must pass.

It runs under pytest, which the ``testing`` extra installs (``pip install 'trackpoint[testing]'``);
importing the kit without pytest raises :class:`~trackpoint.errors.BackendUnavailableError` saying so.

A backend's test module adopts the kit in a few lines::

    import pytest
    from trackpoint.plugins.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self): ...              # a StorageBackend

        @pytest.fixture
        def base_url(self, tmp_path): ...   # a fresh, empty directory URL

        def raw_list(self, directory): ...  # backdoor helpers that bypass the backend
        def raw_read(self, path): ...
        def raw_write(self, path, data): ...
        def raw_delete(self, path): ...

        def intercept_raw_writes(self, backend, before_each): ...  # for the crash tests (see below)

Adopt :class:`BackendConformance` for everything, or the topical mixins one
by one. Both fixtures must be overridden (the kit's own raise, saying so);
the backend need not carry a registered ``name``. ``intercept_raw_writes``
is needed by a backend that is not built on a ``FileLayer`` kept as
``backend.files``; without it the crash tests (:class:`CrashSafety`) are
skipped for that backend. ``reopen`` and ``missing_location`` are optional
too. A backend on an ``ObjectStore`` can take all six from
:class:`ObjectStoreBackdoors`. Tests a store cannot support are skipped from the
capabilities the backend declares; a known gap is declared in the adopting
class as ``known_gaps = {"test_name": "reason"}``, which marks that test
``xfail(reason=..., strict=True)``. See ``docs/writing-a-backend.md``.
"""

from __future__ import annotations

try:
    import pytest  # noqa: F401 - every mixin of the kit is a pytest test class, with its fixtures
except ImportError as exc:
    from trackpoint.errors import BackendUnavailableError

    raise BackendUnavailableError(
        "trackpoint.plugins.testing, the conformance kit for storage backends, runs under pytest, which is not "
        "installed: pip install 'trackpoint[testing]'"
    ) from exc

from trackpoint.plugins.testing._backdoors import ObjectStoreBackdoors
from trackpoint.plugins.testing._bad_input import BadInput
from trackpoint.plugins.testing._base import DTYPES, BackendTestBase, assert_same, sample
from trackpoint.plugins.testing._commit import CommitVisibility, ShardingAndMerge
from trackpoint.plugins.testing._crash import CrashSafety
from trackpoint.plugins.testing._failures import FailedWrites
from trackpoint.plugins.testing._file_layer import FileLayerContract
from trackpoint.plugins.testing._intercept import intercept_file_layer
from trackpoint.plugins.testing._missing import MissingLocation
from trackpoint.plugins.testing._namespace import Listing, OverwriteAndDelete, SmallFiles
from trackpoint.plugins.testing._object_store import ObjectStoreWrites
from trackpoint.plugins.testing._tensors import HugeTensors, ManyTensors, RoundTrip

__all__ = [
    "DTYPES",
    "BackendConformance",
    "BackendTestBase",
    "BadInput",
    "CommitVisibility",
    "CrashSafety",
    "FailedWrites",
    "FileLayerContract",
    "HugeTensors",
    "Listing",
    "ManyTensors",
    "MissingLocation",
    "ObjectStoreBackdoors",
    "ObjectStoreWrites",
    "OverwriteAndDelete",
    "RoundTrip",
    "ShardingAndMerge",
    "SmallFiles",
    "assert_same",
    "intercept_file_layer",
    "sample",
]


class BackendConformance(
    RoundTrip,
    ManyTensors,
    HugeTensors,
    ShardingAndMerge,
    CommitVisibility,
    CrashSafety,
    FailedWrites,
    OverwriteAndDelete,
    Listing,
    SmallFiles,
    BadInput,
    ObjectStoreWrites,
    FileLayerContract,
    MissingLocation,
):
    """Every conformance mixin in one base class."""
