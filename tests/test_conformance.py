"""The conformance corpus: other implementations' test cases, run against our parser.

``tests/vectors/conformance.json`` holds cases taken from the test suites (and, where named, the
source) of Envoy, netty, HAProxy, ranch, go-proxyproto, ppp and Apache Traffic Server, re-expressed
as the bytes on the wire and the outcome we expect (``tests/vectors/README.md`` has the format;
``docs/spec.rst``, "Where implementations disagree", the choices). Every case runs whole, byte by
byte through :class:`HeaderParser`, and followed by application bytes that must come back
unchanged.

A case with ``"pending"`` fails on main only because of a rule being implemented on that branch
(issue 9 items 6-8): it is a strict xfail until the branch is merged, then the mark goes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import proxyproto as pp
from wire import TRAILING, tr

CORPUS = Path(__file__).parent / "vectors" / "conformance.json"
CASES: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="ascii"))["cases"]
PENDING_REASON = "issue 9 items 6-8, branch i9-core"
#: Every strict prefix is also parsed on its own, which is quadratic: only up to this size.
PREFIX_CHECK_LIMIT = 4096


def _params() -> list[Any]:
    return [
        pytest.param(
            case,
            id=case["name"],
            marks=[pytest.mark.xfail(strict=True, reason=PENDING_REASON)]
            if "pending" in case
            else [],
        )
        for case in CASES
    ]


def _prefix_ends(size: int) -> range | list[int]:
    if size <= PREFIX_CHECK_LIMIT:
        return range(size)
    return [0, 1, 12, 15, 16, 28, size // 2, size - 1]


# ------------------------------------------------------------------------------- the three outcomes


def _accepted(data: bytes, after: bytes) -> tuple[pp.Header, int]:
    """Whole, with the application's bytes after it, byte by byte: one header, ``after`` kept."""
    return tr(data, trailing=after, prefix_ends=_prefix_ends(len(data))), len(data)


def _rejected(data: bytes) -> None:
    """Refused whole, with bytes after it, and byte by byte before or at its last byte."""
    with pytest.raises(pp.InvalidHeader):
        pp.parse(data)
    with pytest.raises(pp.InvalidHeader):
        pp.parse(data + TRAILING)

    parser = pp.HeaderParser()
    for i in range(len(data)):
        parser.receive_data(data[i : i + 1])
        try:
            event = parser.next_event()
        except pp.InvalidHeader:
            break
        assert event is pp.NEED_DATA, f"a header after {i + 1} bytes"
    else:
        pytest.fail(f"still waiting after all {len(data)} bytes")
    with pytest.raises(pp.InvalidHeader):  # and it does not change its mind
        parser.next_event()

    parser = pp.HeaderParser()
    parser.receive_data(data)
    with pytest.raises(pp.InvalidHeader):
        parser.next_event()


def _incomplete(data: bytes) -> None:
    """A valid start of a header: more is needed, and a close now is an invalid header."""
    with pytest.raises(pp.IncompleteHeader):
        pp.parse(data)
    parser = pp.HeaderParser()
    for i in range(len(data)):
        parser.receive_data(data[i : i + 1])
        assert parser.next_event() is pp.NEED_DATA
    parser.receive_data(b"")
    with pytest.raises(pp.InvalidHeader):
        parser.next_event()


# ------------------------------------------------------------------------------ expected fields


def _address(value: Any) -> pp.Address:
    return tuple(value) if isinstance(value, list) else value


def _check_ssl(ssl: pp.SSLInfo | None, expected: dict[str, Any]) -> None:
    assert ssl is not None
    for key, value in expected.items():
        if key == "raw":
            assert ssl.raw == tuple((kind, bytes.fromhex(v)) for kind, v in value)
        elif key == "client_cert":
            assert ssl.client_cert == bytes.fromhex(value)
        else:
            assert getattr(ssl, key) == value, key


def _check_tlvs(tlvs: pp.TLVs, expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        actual = getattr(tlvs, key)
        if key == "raw":
            assert actual == tuple((kind, bytes.fromhex(v)) for kind, v in value)
        elif key == "ssl":
            _check_ssl(actual, value)
        elif key == "crc32c":
            assert (actual is not None) is value
        elif key in ("alpn", "unique_id") and value is not None:
            assert actual == bytes.fromhex(value), key
        else:
            assert actual == value, key


def _check_header(header: pp.Header, consumed: int, expected: dict[str, Any]) -> None:
    assert consumed == expected["length"]
    for key in ("version", "source", "destination"):
        if key in expected:
            wanted = expected[key] if key == "version" else _address(expected[key])
            assert getattr(header, key) == wanted, key
    for key in ("command", "family", "transport"):
        if key in expected:
            assert getattr(header, key).name == expected[key], key
    _check_tlvs(header.tlvs, expected.get("tlvs", {}))


@pytest.mark.parametrize("case", _params())
def test_case(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    if case["expect"] == "accept":
        after = bytes.fromhex(case.get("trailing_hex", "")) + TRAILING
        header, consumed = _accepted(data, after)
        _check_header(header, consumed, case["header"])
    elif case["expect"] == "reject":
        _rejected(data)
    else:
        assert case["expect"] == "need_data"
        _incomplete(data)


def test_corpus_is_well_formed() -> None:
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert case["expect"] in ("accept", "reject", "need_data"), case["name"]
        assert ("header" in case) is (case["expect"] == "accept"), case["name"]
        sources = case["source"] if isinstance(case["source"], list) else [case["source"]]
        assert all({"implementation", "file", "test"} <= set(s) for s in sources), case["name"]
        assert case.get("pending") in (None, "i9-core"), case["name"]
        assert ("pending_reason" in case) is ("pending" in case), case["name"]
        assert set(case.get("peers", {}).values()) <= {"accept", "reject"}, case["name"]
