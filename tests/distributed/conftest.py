"""Process groups shared by the distributed tests: started on first use, kept for the session.

Every test module of this folder carries ``pytestmark = pytest.mark.xdist_group("ranks")``
(pyproject runs pytest-xdist with ``--dist loadgroup``), so they run on one pytest
worker and share the groups instead of each worker starting its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ranks import HAS_JAX, HAS_TORCH, Ranks

from azurite import azurite, azurite_container  # noqa: F401 - fixtures for the Azure plugin's case


@pytest.fixture(scope="session")
def torch2() -> Iterator[Ranks]:
    """Two torch.distributed (gloo) ranks."""
    if not HAS_TORCH:
        pytest.skip("needs torch: pip install 'trackpoint[torch]'")
    with Ranks(2, "torch") as ranks:
        yield ranks


@pytest.fixture(scope="session")
def torch4() -> Iterator[Ranks]:
    """Four torch.distributed (gloo) ranks."""
    if not HAS_TORCH:
        pytest.skip("needs torch: pip install 'trackpoint[torch]'")
    with Ranks(4, "torch") as ranks:
        yield ranks


@pytest.fixture(scope="session")
def jax2() -> Iterator[Ranks]:
    """Two jax.distributed CPU processes."""
    if not HAS_JAX:
        pytest.skip("needs jax: pip install 'trackpoint[jax]'")
    with Ranks(2, "jax") as ranks:
        yield ranks
