"""The header model: what a PROXY protocol header says, independent of its encoding.

Values are immutable ``attrs`` classes. The parser builds them on its hot path, so they carry no
validators: the builder (:meth:`Header.proxy`, :meth:`Header.to_bytes`) checks what it encodes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    # Header's codec methods call the builder and the parser, which build Headers, so this module
    # cannot import them: proxyproto._core (the package, always imported before any module of it)
    # imports them after this one and binds them here, as these two names.
    from . import builder as _builder
    from . import parser as _parser

__all__ = [
    "Address",
    "Command",
    "Family",
    "Header",
    "SSLClient",
    "SSLInfo",
    "SSLSubType",
    "TLVType",
    "TLVs",
    "Transport",
]

#: ``(host, port)`` for INET and INET6 (the shape of anyio's ``SocketAttribute.remote_address``),
#: a path for UNIX, ``None`` when the header carries no address.
Address: TypeAlias = "tuple[str, int] | str | None"


class Command(enum.IntEnum):
    """The v2 command (low nibble of the 13th byte, spec section 2.2)."""

    #: The connection was made by the proxy itself (e.g. a health check): use the real endpoints.
    LOCAL = 0x0
    #: The connection was relayed on behalf of another node: the header carries its addresses.
    PROXY = 0x1


class Family(enum.IntEnum):
    """The address family (high nibble of the 14th byte, spec section 2.2)."""

    #: Unknown or unspecified; the addresses are ignored (v2 ``0x00``, v1 ``UNKNOWN``).
    UNSPEC = 0x0
    #: IPv4, 4-byte addresses (v1 ``TCP4``).
    INET = 0x1
    #: IPv6, 16-byte addresses (v1 ``TCP6``).
    INET6 = 0x2
    #: UNIX sockets, 108-byte NUL-padded paths (v2 only).
    UNIX = 0x3


class Transport(enum.IntEnum):
    """The transport protocol (low nibble of the 14th byte, spec section 2.2)."""

    #: Unspecified (v2 ``0x00``, v1 ``UNKNOWN``).
    UNSPEC = 0x0
    #: A stream: TCP, or a UNIX stream socket.
    STREAM = 0x1
    #: Datagrams: UDP, or a UNIX datagram socket.
    DGRAM = 0x2


class TLVType(enum.IntEnum):
    """The registered v2 TLV types (spec section 2.2.1) and the vendor types we decode."""

    #: Application-Layer Protocol Negotiation, e.g. ``b"h2"`` (2.2.1).
    ALPN = 0x01
    #: The host name the client asked for, e.g. from TLS SNI (2.2.2).
    AUTHORITY = 0x02
    #: CRC32C of the whole header (2.2.3).
    CRC32C = 0x03
    #: Padding, to be skipped (2.2.4).
    NOOP = 0x04
    #: An opaque identifier of the connection, at most 128 bytes (2.2.5).
    UNIQUE_ID = 0x05
    #: TLS information, with sub-TLVs (2.2.6).
    SSL = 0x20
    #: The network namespace name (2.2.7).
    NETNS = 0x30
    #: GCP Private Service Connect: the PSC connection id, u64 big-endian.
    GCP = 0xE0
    #: AWS: sub-type 0x01 carries the VPC endpoint id.
    AWS = 0xEA
    #: Azure: sub-type 0x01 carries the Private Link service endpoint id, u32 little-endian.
    AZURE = 0xEE


class SSLSubType(enum.IntEnum):
    """The sub-TLVs of the SSL TLV (spec section 2.2.6)."""

    #: TLS version, e.g. ``"TLSv1.3"``.
    VERSION = 0x21
    #: The client certificate's Common Name.
    CN = 0x22
    #: The cipher, e.g. ``"TLS_AES_256_GCM_SHA384"``.
    CIPHER = 0x23
    #: The certificate's signature algorithm, e.g. ``"SHA256"``.
    SIG_ALG = 0x24
    #: The certificate's key algorithm, e.g. ``"RSA2048"``.
    KEY_ALG = 0x25
    #: The key-exchange group, e.g. ``"X25519"``.
    GROUP = 0x26
    #: The signature scheme of the handshake, e.g. ``"rsa_pss_rsae_sha256"``.
    SIG_SCHEME = 0x27
    #: The client certificate, DER-encoded.
    CLIENT_CERT = 0x28


class SSLClient(enum.IntFlag):
    """Bits of :attr:`SSLInfo.client` (spec section 2.2.6)."""

    #: The client connected over SSL/TLS.
    SSL = 0x01
    #: The client presented a certificate over this connection.
    CERT_CONN = 0x02
    #: The client presented a certificate at least once over this TLS session.
    CERT_SESS = 0x04


def _bytes_repr(value: bytes | None) -> str:
    if value is None:
        return "None"
    if len(value) > 32:
        return f"<{len(value)} bytes>"
    return repr(value)


@attrs.frozen(kw_only=True)
class SSLInfo:
    """The SSL TLV: what the proxy knows of the client's TLS connection.

    ``client`` holds :class:`SSLClient` bits; ``verify`` is 0 when the client certificate was
    verified *or when none was presented* (HAProxy sends 0 then): use :attr:`verified_cert`,
    which checks both.

    >>> info = SSLInfo(client=SSLClient.SSL | SSLClient.CERT_CONN, verify=0, cn="alice")
    >>> info.verified_cert
    True
    """

    client: int = 0
    verify: int = 0
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    group: str | None = None
    sig_scheme: str | None = None
    client_cert: bytes | None = attrs.field(default=None, repr=_bytes_repr)
    #: Every sub-TLV in wire order, unknown ones too, as ``(type, value)``.
    raw: tuple[tuple[int, bytes], ...] = ()

    @property
    def ssl(self) -> bool:
        """Whether the client connected over SSL/TLS."""
        return bool(self.client & SSLClient.SSL)

    @property
    def verified_cert(self) -> bool:
        """Whether the client presented a certificate *and* it was verified."""
        presented = self.client & (SSLClient.CERT_CONN | SSLClient.CERT_SESS)
        return bool(self.client & SSLClient.SSL and presented and self.verify == 0)


@attrs.frozen(kw_only=True)
class TLVs:
    """The Type-Length-Value extensions of a v2 header (spec section 2.2).

    Build with keywords; every field is optional:

    >>> TLVs(alpn=b"h2", authority="example.com")
    TLVs(alpn=b'h2', authority='example.com')

    When parsed, ``raw`` holds every TLV in wire order, unknown ones included, as
    ``(type, value)``; the typed fields decode the ones we know. A type may repeat: every
    occurrence is in ``raw`` and the typed field is the first (for a vendor TLV, the first
    well-formed one). A malformed vendor TLV (AWS, Azure, GCP) stays in ``raw`` with its typed
    field ``None``.

    When encoded, the typed fields come first, then each ``raw`` entry that no typed field
    covers. ``crc32c`` is informative only: ask :meth:`Header.to_bytes` for ``crc32c=True``.
    NOOP entries are not copied from ``raw``: use ``pad_to``.
    """

    alpn: bytes | None = None
    authority: str | None = None
    crc32c: int | None = None
    unique_id: bytes | None = attrs.field(default=None, repr=_bytes_repr)
    netns: str | None = None
    ssl: SSLInfo | None = None
    aws_vpce_id: str | None = None
    azure_link_id: int | None = None
    gcp_psc_id: int | None = None
    raw: tuple[tuple[int, bytes], ...] = ()

    def __repr__(self) -> str:
        fields = [
            f"{a.name}={_bytes_repr(v) if a.name == 'unique_id' else repr(v)}"
            for a in attrs.fields(TLVs)
            if (v := getattr(self, a.name)) not in (None, ())
        ]
        return f"TLVs({', '.join(fields)})"

    def __bool__(self) -> bool:
        """False when there is no TLV at all."""
        return bool(self.raw) or any(
            value is not None
            for value in (
                self.alpn,
                self.authority,
                self.crc32c,
                self.unique_id,
                self.netns,
                self.ssl,
                self.aws_vpce_id,
                self.azure_link_id,
                self.gcp_psc_id,
            )
        )


_NO_TLVS = TLVs()


@attrs.frozen
class Header:
    """A PROXY protocol header, v1 or v2.

    ``source`` and ``destination`` are ``(host, port)`` for INET and INET6, a path for UNIX, and
    ``None`` when the header carries no address (LOCAL, UNSPEC, v1 UNKNOWN). A UNIX pathname ends
    at its first NUL; an abstract name (leading NUL) keeps its NULs but not the padding. A LOCAL
    header keeps the family it was sent with, or UNSPEC if its byte is not one the spec defines.

    >>> h = Header.proxy(("192.0.2.1", 56324), ("198.51.100.7", 443))
    >>> h.source
    ('192.0.2.1', 56324)
    >>> Header.parse(h.to_bytes())[0] == h
    True
    """

    version: int
    command: Command
    family: Family
    transport: Transport
    source: Address
    destination: Address
    tlvs: TLVs = _NO_TLVS

    @classmethod
    def proxy(
        cls,
        source: tuple[str, int] | str,
        destination: tuple[str, int] | str,
        *,
        version: int = 2,
        transport: Transport = Transport.STREAM,
        tlvs: TLVs | Mapping[str, object] | None = None,
    ) -> Header:
        """A PROXY header for a connection from ``source`` to ``destination``.

        The family follows from the addresses: IPv4 or IPv6 ``(host, port)`` tuples, or UNIX
        paths. Raises :class:`HeaderEncodingError` for what cannot be encoded.

        >>> Header.proxy(("2001:db8::1", 1234), ("2001:db8::2", 443), version=1).to_bytes()
        b'PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\\r\\n'
        """
        return _builder.proxy_header(cls, source, destination, version, transport, tlvs)

    @classmethod
    def local(cls, *, tlvs: TLVs | None = None) -> Header:
        """A v2 LOCAL header: the connection was made by the proxy itself (health checks)."""
        return cls(2, Command.LOCAL, Family.UNSPEC, Transport.UNSPEC, None, None, tlvs or _NO_TLVS)

    @classmethod
    def unknown(cls) -> Header:
        """A v1 ``PROXY UNKNOWN`` header: the receiver uses the real connection endpoints."""
        return cls(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC, None, None)

    @staticmethod
    def parse(data: bytes | bytearray | memoryview) -> tuple[Header, int]:
        """Same as :func:`proxyproto.parse`."""
        return _parser.parse(data)

    def to_bytes(self, *, crc32c: bool = False, pad_to: int | None = None) -> bytes:
        """Encode as v1 or v2, per :attr:`version`.

        v2 only: ``crc32c=True`` appends a CRC32C TLV computed over the whole header;
        ``pad_to=N`` appends a NOOP TLV so that the header is exactly N bytes long.
        """
        return _builder.encode(self, crc32c, pad_to)


# --- the parser's constructors ----------------------------------------------------------------
#
# attrs' __init__ of a frozen class goes through object.__setattr__ once per field, which is most
# of the cost of parsing a header. The parser, which has already checked every value, fills the
# slots through their descriptors instead: the same instance, at about half the cost. Users call
# the ordinary __init__. tests/test_model.py checks that these cover every field.


def _slot_setters(
    cls: type, names: tuple[str, ...]
) -> tuple[Callable[[object, object], None], ...]:
    assert names == tuple(a.name for a in attrs.fields(cls)), "a field was added or moved"
    return tuple(cls.__dict__[name].__set__ for name in names)


_new = object.__new__
(_h_version, _h_command, _h_family, _h_transport, _h_source, _h_destination, _h_tlvs) = (
    _slot_setters(
        Header, ("version", "command", "family", "transport", "source", "destination", "tlvs")
    )
)


def _make_header(
    version: int,
    command: Command,
    family: Family,
    transport: Transport,
    source: Address,
    destination: Address,
    tlvs: TLVs,
) -> Header:
    header: Header = _new(Header)
    _h_version(header, version)
    _h_command(header, command)
    _h_family(header, family)
    _h_transport(header, transport)
    _h_source(header, source)
    _h_destination(header, destination)
    _h_tlvs(header, tlvs)
    return header


(
    _t_alpn,
    _t_authority,
    _t_crc32c,
    _t_unique_id,
    _t_netns,
    _t_ssl,
    _t_aws_vpce_id,
    _t_azure_link_id,
    _t_gcp_psc_id,
    _t_raw,
) = _slot_setters(
    TLVs,
    (
        "alpn",
        "authority",
        "crc32c",
        "unique_id",
        "netns",
        "ssl",
        "aws_vpce_id",
        "azure_link_id",
        "gcp_psc_id",
        "raw",
    ),
)


def _make_tlvs(
    alpn: bytes | None,
    authority: str | None,
    crc32c: int | None,
    unique_id: bytes | None,
    netns: str | None,
    ssl: SSLInfo | None,
    aws_vpce_id: str | None,
    azure_link_id: int | None,
    gcp_psc_id: int | None,
    raw: tuple[tuple[int, bytes], ...],
) -> TLVs:
    tlvs: TLVs = _new(TLVs)
    _t_alpn(tlvs, alpn)
    _t_authority(tlvs, authority)
    _t_crc32c(tlvs, crc32c)
    _t_unique_id(tlvs, unique_id)
    _t_netns(tlvs, netns)
    _t_ssl(tlvs, ssl)
    _t_aws_vpce_id(tlvs, aws_vpce_id)
    _t_azure_link_id(tlvs, azure_link_id)
    _t_gcp_psc_id(tlvs, gcp_psc_id)
    _t_raw(tlvs, raw)
    return tlvs


(
    _s_client,
    _s_verify,
    _s_version,
    _s_cn,
    _s_cipher,
    _s_sig_alg,
    _s_key_alg,
    _s_group,
    _s_sig_scheme,
    _s_client_cert,
    _s_raw,
) = _slot_setters(
    SSLInfo,
    (
        "client",
        "verify",
        "version",
        "cn",
        "cipher",
        "sig_alg",
        "key_alg",
        "group",
        "sig_scheme",
        "client_cert",
        "raw",
    ),
)


def _make_ssl(
    client: int,
    verify: int,
    version: str | None,
    cn: str | None,
    cipher: str | None,
    sig_alg: str | None,
    key_alg: str | None,
    group: str | None,
    sig_scheme: str | None,
    client_cert: bytes | None,
    raw: tuple[tuple[int, bytes], ...],
) -> SSLInfo:
    ssl: SSLInfo = _new(SSLInfo)
    _s_client(ssl, client)
    _s_verify(ssl, verify)
    _s_version(ssl, version)
    _s_cn(ssl, cn)
    _s_cipher(ssl, cipher)
    _s_sig_alg(ssl, sig_alg)
    _s_key_alg(ssl, key_alg)
    _s_group(ssl, group)
    _s_sig_scheme(ssl, sig_scheme)
    _s_client_cert(ssl, client_cert)
    _s_raw(ssl, raw)
    return ssl
