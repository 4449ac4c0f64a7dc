"""Adapters: one small function per implementation per workload.

Every parse adapter takes the bytes of exactly one header and returns what an application reads
from the decoded result, as plain values:

* address workloads: ``(src_host, src_port, dst_host, dst_port)``
* TLV workload: the same four, then ``alpn, authority, unique_id, ssl_cn, ssl_version,
  ssl_cipher, aws_vpce_id`` (``None`` for a field the implementation does not expose)

Every build adapter takes a :data:`BuildSpec` and returns the header bytes (with a CRC32C TLV).

Each ``load_*`` function imports its implementation (raising ``ImportError`` when it is not
installed) and binds everything the hot path needs once, so that the adapters spend their time in
the implementation and not in attribute look-ups. Where an implementation cannot run a workload,
or does not expose a field, the reason is recorded next to it and the harness prints ``n/a``.

The peers are installed only for the benchmark (never runtime dependencies of proxyproto):

* ``proxy-protocol`` (PyPI, import name ``proxyprotocol``),
* gunicorn's ASGI worker parser, ``gunicorn.asgi.parser.PythonProtocol``,
* Twisted's ``twisted.protocols.haproxy`` parsers (``V1Parser`` / ``V2Parser``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

#: ``(src_host, src_port, dst_host, dst_port, alpn, authority, unique_id, ssl_cn, ssl_version,
#: ssl_cipher, aws_vpce_id)`` -- the input of a build adapter.
BuildSpec = tuple[str, int, str, int, bytes, str, bytes, str, str, str, str]

ParseAdapter = Callable[[bytes], tuple[Any, ...]]
BuildAdapter = Callable[[BuildSpec], bytes]

#: Workload keys, in the order the harness runs them.
V2_IPV4 = "v2_ipv4"
V1_TCP4 = "v1_tcp4"
V2_TLVS = "v2_tlvs"
BUILD = "build_tlvs_crc32c"

#: The TLV fields of the TLV workload, in adapter-result order (after the four address values).
TLV_FIELDS = (
    "alpn",
    "authority",
    "unique_id",
    "ssl_cn",
    "ssl_version",
    "ssl_cipher",
    "aws_vpce_id",
)

#: Field coverage values.
NATIVE = "yes"
ADAPTER = "adapter"  # the peer hands over raw bytes; the adapter decodes them (cost included)
NA = "n/a"

AWS_TLV = 0xEA
AWS_VPCE_SUBTYPE = 0x01
SSL_CLIENT = 0x07  # PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS


@dataclass
class Impl:
    """One implementation: its adapters, what it cannot do and why."""

    name: str
    version: str
    parse: dict[str, ParseAdapter] = field(default_factory=dict)
    build: BuildAdapter | None = None
    #: workload key -> why this implementation cannot run it
    unsupported: dict[str, str] = field(default_factory=dict)
    #: TLV field -> NATIVE | ADAPTER | NA
    tlv_fields: dict[str, str] = field(default_factory=dict)
    #: workload key -> caveat printed under the table (the figure is shown, but marked)
    caveats: dict[str, str] = field(default_factory=dict)
    #: what a fair reading of the figures must know
    notes: list[str] = field(default_factory=list)

    def decodes_tlvs(self) -> bool:
        return any(v != NA for v in self.tlv_fields.values())


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------------------------
# ours


def load_ours() -> Impl:
    """proxyproto itself, through its public API only (``pp.parse``, ``pp.Header.proxy``)."""
    import proxyproto as pp

    impl = Impl("proxyproto", getattr(pp, "__version__", None) or _version("proxyproto"))
    parse = getattr(pp, "parse", None)
    if parse is None:
        reason = "not implemented yet (proxyproto.parse is missing)"
        for key in (V2_IPV4, V1_TCP4, V2_TLVS):
            impl.unsupported[key] = reason
    else:

        def ours_addresses(data: bytes) -> tuple[Any, ...]:
            header, _consumed = parse(data)
            src = header.source
            dst = header.destination
            return src[0], src[1], dst[0], dst[1]

        def ours_tlvs(data: bytes) -> tuple[Any, ...]:
            header, _consumed = parse(data)
            src = header.source
            dst = header.destination
            tlvs = header.tlvs
            ssl = tlvs.ssl
            return (
                src[0], src[1], dst[0], dst[1],
                tlvs.alpn, tlvs.authority, tlvs.unique_id,
                ssl.cn, ssl.version, ssl.cipher,
                tlvs.aws_vpce_id,
            )  # fmt: skip

        impl.parse[V2_IPV4] = ours_addresses
        impl.parse[V1_TCP4] = ours_addresses
        impl.parse[V2_TLVS] = ours_tlvs
        impl.tlv_fields = dict.fromkeys(TLV_FIELDS, NATIVE)

    header_cls = getattr(pp, "Header", None)
    tlvs_cls = getattr(pp, "TLVs", None)
    ssl_cls = getattr(pp, "SSLInfo", None)
    if header_cls is None or tlvs_cls is None or ssl_cls is None:
        impl.unsupported[BUILD] = "not implemented yet (Header / TLVs / SSLInfo missing)"
    else:
        proxy = header_cls.proxy

        def ours_build(spec: BuildSpec) -> bytes:
            sh, sp, dh, dp, alpn, authority, unique_id, cn, version, cipher, vpce = spec
            tlvs = tlvs_cls(
                alpn=alpn,
                authority=authority,
                unique_id=unique_id,
                ssl=ssl_cls(client=SSL_CLIENT, verify=0, version=version, cn=cn, cipher=cipher),
                aws_vpce_id=vpce,
            )
            return proxy((sh, sp), (dh, dp), tlvs=tlvs).to_bytes(crc32c=True)  # type: ignore[no-any-return]

        impl.build = ours_build
    return impl


# --------------------------------------------------------------------------------------------
# proxy-protocol (PyPI)


def load_proxy_protocol() -> Impl:
    """``proxy-protocol``: ``ProxyProtocolV1().unpack`` / ``ProxyProtocolV2().unpack`` / ``.pack``.

    The version-specific classes are used rather than ``ProxyProtocolDetect`` (which only adds a
    signature check and a dispatch): the cheapest correct call, so the peer gets the benefit.
    ``unpack`` needs the whole header in one buffer (it raises ``ProxyProtocolIncompleteError``
    with a want-read hint otherwise; there is no incremental parser object).
    """
    from ipaddress import IPv4Address
    from socket import SOCK_STREAM

    from proxyprotocol.result import ProxyResultIPv4
    from proxyprotocol.tlv import ProxyProtocolSSLTLV, ProxyProtocolTLV
    from proxyprotocol.v1 import ProxyProtocolV1
    from proxyprotocol.v2 import ProxyProtocolV2

    v1_unpack = ProxyProtocolV1().unpack
    v2 = ProxyProtocolV2()
    v2_unpack = v2.unpack
    v2_pack = v2.pack

    def pp_addresses_v2(data: bytes) -> tuple[Any, ...]:
        result = v2_unpack(data)
        # .peername / .sockname are (str(IPv4Address), port); .source holds ipaddress objects.
        src: Any = result.peername
        dst: Any = result.sockname
        return src[0], src[1], dst[0], dst[1]

    def pp_addresses_v1(data: bytes) -> tuple[Any, ...]:
        result = v1_unpack(data)
        src: Any = result.peername
        dst: Any = result.sockname
        return src[0], src[1], dst[0], dst[1]

    def pp_tlvs(data: bytes) -> tuple[Any, ...]:
        result = v2_unpack(data)
        src: Any = result.peername
        dst: Any = result.sockname
        tlv = result.tlv
        ssl = tlv.ssl  # a property that re-parses the SSL TLV on every access: read it once
        # No accessor for PP2_TYPE_AWS: the TLV is a Mapping[int, bytes], so the adapter does
        # what a user would (check the sub-type, decode the rest).
        aws = tlv.get(AWS_TLV)
        vpce = aws[1:].decode("ascii") if aws and aws[0] == AWS_VPCE_SUBTYPE else None
        return (
            src[0], src[1], dst[0], dst[1],
            tlv.alpn, tlv.authority, tlv.unique_id,
            ssl.cn, ssl.version, ssl.cipher,
            vpce,
        )  # fmt: skip

    def pp_build(spec: BuildSpec) -> bytes:
        sh, sp, dh, dp, alpn, authority, unique_id, cn, version, cipher, vpce = spec
        ssl = ProxyProtocolSSLTLV(
            has_ssl=True,
            has_cert_conn=True,
            has_cert_sess=True,
            verified=True,  # verify=0 on the wire
            version=version,
            cn=cn,
            cipher=cipher,
        )
        tlv = ProxyProtocolTLV(
            init={AWS_TLV: bytes((AWS_VPCE_SUBTYPE,)) + vpce.encode("ascii")},
            alpn=alpn,
            authority=authority,
            unique_id=unique_id,
            ssl=ssl,
        )
        result = ProxyResultIPv4(
            (IPv4Address(sh), sp), (IPv4Address(dh), dp), protocol=SOCK_STREAM, tlv=tlv
        )
        return v2_pack(result)  # adds the CRC32C TLV itself when the crc32c package is present

    impl = Impl("proxy-protocol", _version("proxy-protocol"))
    impl.parse = {V2_IPV4: pp_addresses_v2, V1_TCP4: pp_addresses_v1, V2_TLVS: pp_tlvs}
    impl.build = pp_build
    impl.tlv_fields = dict.fromkeys(TLV_FIELDS, NATIVE)
    impl.tlv_fields["aws_vpce_id"] = ADAPTER
    impl.notes = [
        "decodes addresses to ipaddress objects; reading them as str (.peername) costs a str()",
        "v2 TLVs parsed leniently: a truncated last TLV is cut short silently and a trailing"
        " fragment under 3 bytes is ignored; duplicate types overwrite; CRC32C is verified",
        "v2 'version' nibble and command checked; an unknown family gives an UNKNOWN result"
        " instead of an error; v1 ports go through int() (accepts '+80', '0080')",
        "no AWS accessor: the adapter decodes TLV 0xEA from the raw mapping (counted in its time)",
        "builds TLVs in type order and re-walks all 256 types when sizing and packing",
    ]
    return impl


# --------------------------------------------------------------------------------------------
# gunicorn (ASGI worker)


def load_gunicorn() -> Impl:
    """gunicorn's ASGI PROXY parser: ``gunicorn.asgi.parser.PythonProtocol``.

    In gunicorn 27 the ASGI worker parses PROXY v1/v2 only in its pure-Python HTTP parser
    ``PythonProtocol`` (``gunicorn.asgi.protocol`` picks it whenever ``proxy_protocol`` is on,
    because the C parser ``gunicorn_h1c`` has no PROXY support). The PROXY code is the private
    method ``_parse_proxy_protocol`` run from ``feed()`` while the parser is in its
    ``proxy_protocol`` state; the result is the ``proxy_protocol_info`` dict.

    One ``PythonProtocol`` is built per workload and reused: each call appends the header to its
    buffer (what ``feed()`` does) and runs ``_parse_proxy_protocol()``, which consumes exactly the
    header from the buffer, so the buffer is empty again afterwards. The HTTP state machine is not
    run. The mode is the specific version ('v1' / 'v2', not 'auto'): the cheapest call.
    """
    from gunicorn.asgi.parser import PythonProtocol

    def make(mode: str) -> ParseAdapter:
        proto = PythonProtocol(proxy_protocol=mode)
        buf = proto._buffer
        run = proto._parse_proxy_protocol

        def gunicorn_addresses(data: bytes) -> tuple[Any, ...]:
            buf.extend(data)
            if not run():
                raise RuntimeError("gunicorn wanted more data")
            info = proto._proxy_protocol_info
            return info["client_addr"], info["client_port"], info["proxy_addr"], info["proxy_port"]

        return gunicorn_addresses

    def make_tlvs() -> ParseAdapter:
        addresses = make("v2")

        def gunicorn_tlvs(data: bytes) -> tuple[Any, ...]:
            return (*addresses(data), None, None, None, None, None, None, None)

        return gunicorn_tlvs

    impl = Impl("gunicorn", _version("gunicorn"))
    impl.parse = {V2_IPV4: make("v2"), V1_TCP4: make("v1"), V2_TLVS: make_tlvs()}
    impl.unsupported[BUILD] = "has no builder"
    impl.tlv_fields = dict.fromkeys(TLV_FIELDS, NA)
    impl.caveats[V2_TLVS] = "addresses only: gunicorn skips the TLV bytes unread (no TLV API)"
    impl.notes = [
        "private API (PythonProtocol._parse_proxy_protocol); the HTTP parser around it is not run",
        "v2: TLVs are never looked at (no bounds check, no CRC32C check); only STREAM over"
        " INET/INET6 is accepted (UNIX and DGRAM are refused)",
        "v1: addresses checked with inet_pton, ports with int() and a range check; the protocol"
        " word is upper-cased first (accepts 'tcp4')",
        "incremental over a bytearray buffer, so byte-at-a-time feeding stays linear",
    ]
    return impl


# --------------------------------------------------------------------------------------------
# Twisted


def load_twisted() -> Impl:
    """Twisted's ``twisted.protocols.haproxy``: ``V1Parser().feed`` / ``V2Parser().feed``.

    ``V1Parser.parse`` / ``V2Parser.parse`` are classmethods that need the header already framed
    (v1: the line without CRLF; v2: exactly ``16 + length`` bytes). ``feed()`` frames and then
    calls ``parse()``; it is what Twisted's own ``HAProxyProtocolWrapper`` calls, so it is what we
    time (one parser object reused: ``feed`` resets its buffer after a complete header).
    """
    from twisted.protocols.haproxy._v1parser import V1Parser
    from twisted.protocols.haproxy._v2parser import V2Parser

    v1_feed = V1Parser().feed
    v2_feed = V2Parser().feed

    def twisted_v2(data: bytes) -> tuple[Any, ...]:
        info: Any = v2_feed(data)[0]
        src = info.source
        dst = info.destination
        return src.host, src.port, dst.host, dst.port

    def twisted_v1(data: bytes) -> tuple[Any, ...]:
        info: Any = v1_feed(data)[0]
        src = info.source
        dst = info.destination
        return src.host, src.port, dst.host, dst.port

    def twisted_tlvs(data: bytes) -> tuple[Any, ...]:
        return (*twisted_v2(data), None, None, None, None, None, None, None)

    impl = Impl("twisted", _version("twisted"))
    impl.parse = {V2_IPV4: twisted_v2, V1_TCP4: twisted_v1, V2_TLVS: twisted_tlvs}
    impl.unsupported[BUILD] = "has no builder"
    impl.tlv_fields = dict.fromkeys(TLV_FIELDS, NA)
    impl.caveats[V2_TLVS] = (
        "addresses only: Twisted ignores TLVs (ProxyInfo.header keeps raw bytes)"
    )
    impl.notes = [
        "private modules (_v1parser / _v2parser); the results are attrs address objects",
        "v1: addresses are not validated at all (any bytes that decode), ports are int() with no"
        " range check",
        "v2: the length field is used only to frame; TLVs are ignored (no CRC32C check)",
        "feed() concatenates bytes buffers (self.buffer += data): quadratic when fed in small"
        " pieces",
    ]
    return impl


#: Peers in display order: (distribution name for messages, loader).
PEERS: tuple[tuple[str, Callable[[], Impl]], ...] = (
    ("proxy-protocol", load_proxy_protocol),
    ("gunicorn", load_gunicorn),
    ("twisted", load_twisted),
)
