"""The model: value semantics, the parser's fast constructors, conveniences."""

from __future__ import annotations

import attrs
import pytest

import proxyproto as pp
from proxyproto._core import model


def test_values_are_frozen_and_hashable() -> None:
    header = pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs=pp.TLVs(alpn=b"h2"))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        header.source = ("10.0.0.3", 3)  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        header.tlvs.alpn = b"http/1.1"  # type: ignore[misc]
    assert {header: 1}[header] == 1
    assert attrs.evolve(header, source=("10.0.0.9", 9)).source == ("10.0.0.9", 9)


def test_the_parsers_constructors_fill_every_field() -> None:
    # A field added to a class must be added to its fast constructor too; a wrong order would
    # put values into the wrong fields.
    values = {a.name: object() for a in attrs.fields(pp.Header)}
    header = model._make_header(*values.values())  # type: ignore[arg-type]
    assert all(getattr(header, name) is value for name, value in values.items())
    values = {a.name: object() for a in attrs.fields(pp.TLVs)}
    tlvs = model._make_tlvs(*values.values())  # type: ignore[arg-type]
    assert all(getattr(tlvs, name) is value for name, value in values.items())
    values = {a.name: object() for a in attrs.fields(pp.SSLInfo)}
    ssl = model._make_ssl(*values.values())  # type: ignore[arg-type]
    assert all(getattr(ssl, name) is value for name, value in values.items())


def test_parsed_equals_built_when_nothing_is_raw() -> None:
    built = pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2))
    parsed = pp.parse(built.to_bytes())[0]
    assert parsed == built
    assert hash(parsed) == hash(built)


def test_tlvs_truthiness() -> None:
    assert not pp.TLVs()
    assert not pp.Header.local().tlvs
    # Any one field set, even to a falsy value, makes TLVs true.
    for field in attrs.fields(pp.TLVs):
        value = ((0xF0, b""),) if field.name == "raw" else 0
        assert pp.TLVs(**{field.name: value}), field.name  # type: ignore[arg-type]


def test_reprs_keep_bytes_short() -> None:
    tlvs = pp.TLVs(unique_id=b"u" * 100, alpn=b"h2")
    assert repr(tlvs) == "TLVs(alpn=b'h2', unique_id=<100 bytes>)"
    assert repr(pp.TLVs()) == "TLVs()"
    info = pp.SSLInfo(client_cert=b"c" * 2000)
    assert "<2000 bytes>" in repr(info)


def test_enums_are_the_wire_values() -> None:
    assert [c.value for c in pp.Command] == [0x0, 0x1]
    assert [f.value for f in pp.Family] == [0x0, 0x1, 0x2, 0x3]
    assert [t.value for t in pp.Transport] == [0x0, 0x1, 0x2]
    assert pp.TLVType.SSL.value == 0x20
    assert pp.SSLSubType.CLIENT_CERT.value == 0x28
    assert pp.SSLClient.CERT_SESS.value == 0x04


def test_header_parse_is_parse() -> None:
    data = pp.Header.unknown().to_bytes()
    assert pp.Header.parse(data) == pp.parse(data)
