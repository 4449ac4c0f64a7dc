"""The public names of DESIGN.md's contract, exported and documented."""

from __future__ import annotations

import inspect
import typing

import proxyproto as pp

CONTRACT = {
    "Header", "Command", "Family", "Transport", "TLVs", "SSLInfo",
    "parse", "HeaderParser", "NEED_DATA", "parse_datagram",
    "ProxyProtocolError", "InvalidHeader", "IncompleteHeader", "HeaderRejected",
    "ProxyProtocolListener", "ProxiedStream", "ProxyAttribute", "ProxyProtocolConfig",
    "Policy", "trusted_proxies", "send_header",
}  # fmt: skip


def test_all_is_exactly_what_the_package_exports() -> None:
    public = {name for name in dir(pp) if not name.startswith("_")} - {"annotations"}
    exported = set(pp.__all__) - {"__version__"}
    # Submodules (proxyproto.trio, once imported) are not names of the package's API.
    assert exported == {name for name in public if not inspect.ismodule(getattr(pp, name))}
    assert isinstance(pp.__all__, tuple)
    assert len(pp.__all__) == len(set(pp.__all__))


def test_contract_names_exist() -> None:
    assert set(pp.__all__) >= CONTRACT


def test_public_names_are_documented() -> None:
    for name in pp.__all__:
        obj = getattr(pp, name)
        # Type aliases (PolicyCallable = Callable[...]) are not documented objects; on Python
        # 3.10 a generic alias even passes for a class.
        if typing.get_origin(obj) is None and (inspect.isclass(obj) or inspect.isfunction(obj)):
            assert obj.__doc__, name


def test_header_contract_fields() -> None:
    header = pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2))
    for field in ("version", "command", "family", "transport", "source", "destination", "tlvs"):
        assert hasattr(header, field)
    tlvs = pp.TLVs()
    for field in (
        "alpn", "authority", "crc32c", "unique_id", "netns", "ssl", "aws_vpce_id",
        "azure_link_id", "gcp_psc_id", "raw",
    ):  # fmt: skip
        assert hasattr(tlvs, field)
    ssl = pp.SSLInfo()
    for field in (
        "client", "verify", "version", "cn", "cipher", "sig_alg", "key_alg", "group",
        "sig_scheme", "client_cert",
    ):  # fmt: skip
        assert hasattr(ssl, field)


def test_the_trio_module_exports_its_names() -> None:
    import proxyproto.trio as pt

    assert isinstance(pt.__all__, tuple)
    for name in pt.__all__:
        assert getattr(pt, name).__doc__, name
