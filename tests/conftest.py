from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trustme

# The tests' own helpers (wire.py, haproxy_peer.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test (``@pytest.mark.anyio``) runs on both of anyio's backends."""
    return str(request.param)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A test certificate authority (trustme), one per test module."""
    return trustme.CA()


@pytest.fixture
def server_certs(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    """A server certificate for localhost and 127.0.0.1 from :func:`ca`: (certfile, keyfile)."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(certfile, append=True)
    cert.private_key_pem.write_to_path(keyfile)
    return certfile, keyfile
