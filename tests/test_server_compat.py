"""The drift tests: the Uvicorn and Hypercorn code we mirror or override is code we know.

Each server's compatibility module (``proxyproto/_servers/*_compat.py``) records the fingerprint
of every upstream function and class method our integration copies, overrides or relies on, in
each release checked. On a release that changed one, these tests fail with one line per change,
naming it and what of ours to review (``nox -s servers`` runs them on the newest release).
"""

from __future__ import annotations

import pytest

from proxyproto._servers import fingerprint


def test_uvicorn_has_not_drifted() -> None:
    pytest.importorskip("uvicorn")
    from proxyproto._servers import uvicorn_compat

    problems = uvicorn_compat.check()
    assert not problems, "\n".join(problems)


def test_hypercorn_has_not_drifted() -> None:
    pytest.importorskip("hypercorn")
    from proxyproto._servers import hypercorn_compat

    problems = hypercorn_compat.check()
    assert not problems, "\n".join(problems)


def test_uvicorn_every_use_is_recorded_and_nothing_of_uvicorn_is_overridden() -> None:
    pytest.importorskip("uvicorn")
    import proxyproto.uvicorn as ppu
    from proxyproto._servers import uvicorn_compat

    assert set(uvicorn_compat.USES) == set(uvicorn_compat.KNOWN)
    # Composition: our protocols subclass none of Uvicorn's, so no method of Uvicorn's is
    # overridden; each protocol class we hand connections to is fingerprinted.
    for name in (
        "ProxyProtocolH11Protocol",
        "ProxyProtocolHttpToolsProtocol",
        "ProxyProtocolZttpProtocol",
    ):
        wrapper = getattr(ppu, name)
        if wrapper is None:
            continue
        assert wrapper.__mro__[1:] == ppu._ProxyProtocol.__mro__
        http = wrapper.http_protocol
        path = f"{http.__module__}.{http.__qualname__}"
        assert {f"{path}.__init__", f"{path}.connection_made"} <= set(uvicorn_compat.USES)


def test_hypercorn_every_use_is_recorded() -> None:
    pytest.importorskip("hypercorn")
    from proxyproto._servers import hypercorn_compat

    assert set(hypercorn_compat.USES) == set(hypercorn_compat.KNOWN)


def test_uvicorn_and_hypercorn_drift_names_the_changed_function() -> None:
    pytest.importorskip("uvicorn")
    from importlib import metadata

    version = metadata.version("uvicorn")
    changed = "uvicorn.protocols.http.h11_impl.H11Protocol.shutdown"
    gone = "uvicorn.protocols.http.h11_impl.H11Protocol.no_such_method"
    same = "uvicorn.protocols.http.h11_impl.H11Protocol.data_received"
    known = {
        changed: {"0123456789abcdef": version},
        gone: {"fedcba9876543210": "0.1.0"},
        same: {fingerprint.fingerprint(same): "0.1.0"},  # an unrecorded release, same code
    }
    uses = {changed: "our shutdown", gone: "our method", same: "our data_received"}
    problems = fingerprint.drift("uvicorn", known, uses, "the table")
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"uvicorn {version} changed {changed} (fingerprint ")
    assert "expected 0123456789abcdef): review our shutdown, then record" in problems[0]
    assert f"changed {gone} (fingerprint missing, expected one of fedcba9876543210)" in problems[1]


def test_uvicorn_fingerprint_ignores_formatting_only() -> None:
    pytest.importorskip("uvicorn")
    name = "uvicorn.protocols.http.h11_impl.H11Protocol.shutdown"
    assert fingerprint.fingerprint(name) == fingerprint.fingerprint(name)
    assert fingerprint.fingerprint(name) != fingerprint.fingerprint(
        "uvicorn.protocols.http.h11_impl.H11Protocol.eof_received"
    )
    assert fingerprint.fingerprint("uvicorn.no_such_module.f") == fingerprint.MISSING
