"""The public names of DESIGN.md's contract, exported and documented."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing

import pytest

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


# The I/O libraries and our modules that use them: importing the core must not bring any in.
ADAPTER_MODULES = (
    "anyio",
    "trio",
    "sniffio",
    "proxyproto._adapters.anyio",
    "proxyproto._adapters.udp",
)


@pytest.mark.parametrize(
    "module",
    [
        "proxyproto",
        "proxyproto._core.parser",
        "proxyproto._core.builder",
        "proxyproto._handshake.engine",
    ],
)
def test_importing_the_core_imports_no_io_library(module: str) -> None:
    # A fresh interpreter: this one has imported everything already.
    code = (
        f"import sys, {module}\n"
        f"loaded = [name for name in {ADAPTER_MODULES!r} if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_adapter_names_are_imported_on_first_use() -> None:
    code = (
        "import sys\n"
        "from proxyproto import ProxyProtocolListener, ProxiedUDPSocket\n"
        "import proxyproto._adapters.anyio, proxyproto._adapters.udp\n"
        "assert ProxyProtocolListener is proxyproto._adapters.anyio.ProxyProtocolListener\n"
        "assert ProxiedUDPSocket is proxyproto._adapters.udp.ProxiedUDPSocket\n"
        "assert 'anyio' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_lazy_names_are_listed_and_unknown_names_are_not_invented() -> None:
    assert {"ProxyProtocolListener", "ProxiedStream", "send_datagram"} <= set(dir(pp))
    assert pp.ProxiedStream.__module__ == "proxyproto._adapters.anyio"
    with pytest.raises(AttributeError, match="no_such_name"):
        pp.no_such_name  # type: ignore[attr-defined]  # noqa: B018
