"""An Azure account URL given without its scheme is refused as a bad option, before any request."""

from __future__ import annotations

import pytest

import trackpoint as tp
from trackpoint_azure.store import AzureOptions


def test_an_account_url_without_scheme_is_refused_naming_the_fix() -> None:
    with pytest.raises(
        tp.BackendOptionError, match=r"account_url'\] is refused: it has no scheme.*http://127\.0\.0\.1:10000"
    ):
        AzureOptions.from_storage_options({"account_url": "127.0.0.1:10000"}, environ={})
    assert AzureOptions.from_storage_options({"account_url": "http://127.0.0.1:10000/x"}, environ={}).account_url
