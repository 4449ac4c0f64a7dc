from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The tests' own helpers (wire.py, haproxy_peer.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test (``@pytest.mark.anyio``) runs on both of anyio's backends."""
    return str(request.param)
