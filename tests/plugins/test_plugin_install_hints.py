"""What a user of a third-party object store hears when its set-up is incomplete: what to install, what to give.

The store here is registered with :class:`~trackpoint.plugins.ObjectStorePlugin`
(both formats) and reads its ``storage_options`` through
:class:`~trackpoint.plugins.StorageOptions`, as a packaged plugin would.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest

import trackpoint as tp
from trackpoint import plugins
from trackpoint.backends.stores import ObjectStore
from trackpoint.cli import main
from trackpoint.errors import BackendOptionError
from trackpoint.plugins import ObjectStorePlugin, StorageOptions, option
from trackpoint.storage import CheckpointOptions


class HintOptions(StorageOptions, store="hintobj"):
    endpoint: str = option(env="HINTOBJ_ENDPOINT")  # required


class HintStore(ObjectStore):
    """Opens only as far as its options: every test here fails before a request."""

    store_name = "hintobj"
    schemes = ("hintobj",)

    @classmethod
    def from_options(cls, options: CheckpointOptions) -> HintStore:
        HintOptions.from_storage_options(options.storage_options)
        return cls(cls.transfer_options(options))


@pytest.fixture
def hintobj(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``hintobj`` and ``zarr-hintobj`` registered, from a store whose package is installed."""
    monkeypatch.delenv("HINTOBJ_ENDPOINT", raising=False)
    name = f"hints-{uuid.uuid4().hex[:8]}"
    plugin = ObjectStorePlugin(
        f"{__name__}:HintStore", name="hintobj", schemes=("hintobj",), install_hint="pip install trackpoint-hintobj"
    )
    plugins.register(plugin, name)
    yield
    plugins.unregister(name)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit status and error output of trackpoint's command line, run in this process."""
    code = main(list(args))
    return code, capsys.readouterr().err


def test_without_zarr_the_zarr_backend_of_an_installed_store_names_zarr_alone(
    hintobj: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "zarr", None)  # what importlib finds when zarr is not installed
    needs = "backend 'zarr-hintobj' needs zarr: pip install 'trackpoint[zarr]'"
    with pytest.raises(tp.BackendUnavailableError) as unavailable:
        plugins.open_backend("zarr+hintobj://bkt/run")
    assert str(unavailable.value) == needs  # not the store's hint: the store is installed
    rows = {row.name: row for row in tp.list_backends()}
    assert rows["zarr-hintobj"].reason == "needs zarr: pip install 'trackpoint[zarr]'"
    code, err = cli(capsys, "ls", "zarr+hintobj://bkt/cli")
    assert needs in err and "trackpoint-hintobj" not in err, err
    assert code != 0


@pytest.fixture
def registered_missing() -> Iterator[str]:
    """``gonestore`` and ``zarr-gonestore``, from a store whose module is not installed; its name."""
    module = f"not_installed_{uuid.uuid4().hex[:8]}"
    name = f"hints-{uuid.uuid4().hex[:8]}"
    plugin = ObjectStorePlugin(
        f"{module}:Store",
        name="gonestore",
        schemes=("gonestore",),
        requires=(module,),
        install_hint="pip install gonestore",
    )
    plugins.register(plugin, name)
    yield module
    plugins.unregister(name)


def test_without_the_store_s_package_its_zarr_backend_names_that_package_alone(registered_missing: str) -> None:
    with pytest.raises(tp.BackendUnavailableError) as unavailable:
        plugins.open_backend("zarr+gonestore://bkt/run")
    assert str(unavailable.value) == f"backend 'zarr-gonestore' needs {registered_missing}: pip install gonestore"


def test_a_required_storage_option_given_nowhere_is_a_usage_error(
    hintobj: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BackendOptionError, match=r"hintobj: storage_options\['endpoint'\] is required"):
        plugins.open_backend("hintobj://bkt/run")
    # As a misspelt option is: the command line's usage status, 2, not a failure of the store's (4).
    code, err = cli(capsys, "ls", "hintobj://bkt/cli")
    assert code == 2, err
    assert "endpoint" in err and "is required" in err and "HINTOBJ_ENDPOINT" in err, err
    code, err = cli(capsys, "ls", "hintobj://bkt/cli", "-o", "endpont=http://x")
    assert code == 2, err
