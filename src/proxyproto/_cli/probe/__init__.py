"""Protocol probes for the relay's routing: sans-IO, one module per protocol.

Theory of operation. A TCP connection's first bytes go to a :class:`Prober`
(:meth:`~Prober.receive_data`, ``b""`` for the end of the stream), which asks every probe of the
protocols it was given and answers :class:`Match` (the protocol, with the ClientHello's SNI and
ALPN list for TLS), :data:`NO_MATCH` (no probed protocol: every probe said no, or
:data:`MAX_PROBE` bytes did not decide, or the stream ended) or :data:`NEED_MORE`. The probes
are mutually exclusive (each protocol's first bytes rule out the others), so the first match is
the only one. Each probe says how many bytes it needs before its answer can change, so bytes
trickling in one at a time are not parsed again on each. The caller forwards every byte it fed
(:attr:`Prober.data`) and bounds the wait itself: no I/O and no clock here.

A datagram is probed on its own (:func:`probe_datagram`); a QUIC ClientHello spread over
several Initial datagrams needs a :class:`DatagramProber` fed the client's datagrams in turn.

>>> prober = Prober(["ssh", "http"])
>>> prober.receive_data(b"SSH-2.")
<Verdict.NEED_MORE: 'need more'>
>>> prober.receive_data(b"0-OpenSSH_9.6\\r\\n")
Match(protocol='ssh', server_name=None, alpns=())
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable

from ._base import NEED_MORE, NO_MATCH, Match, Result, Verdict
from .http import probe_http
from .socks5 import probe_socks5
from .ssh import probe_ssh
from .tls import probe_tls
from .wireguard import probe_wireguard

__all__ = [
    "DATAGRAM_PROTOCOLS",
    "MAX_PROBE",
    "NEED_MORE",
    "NO_MATCH",
    "STREAM_PROTOCOLS",
    "DatagramProber",
    "Match",
    "ProbeUnavailable",
    "Prober",
    "Verdict",
    "probe_datagram",
    "require",
]

#: A stream's first bytes read at most: past this, no probe decided and it is ``NO_MATCH``.
MAX_PROBE = 16384

_STREAM: dict[str, Callable[[bytes], Result]] = {
    "http": probe_http,
    "tls": probe_tls,
    "ssh": probe_ssh,
    "socks5": probe_socks5,
}
#: The protocols a TCP connection is probed for, and a datagram.
STREAM_PROTOCOLS = tuple(_STREAM)
DATAGRAM_PROTOCOLS = ("quic", "wireguard")


class ProbeUnavailable(ValueError):
    """A protocol that cannot be probed here: unknown, of the other transport, or its extra is
    not installed. The message says which and what to do."""


def require(protocols: Iterable[str], *, datagram: bool = False) -> tuple[str, ...]:
    """``protocols`` checked for a stream (or, with ``datagram``, a datagram) listener.

    :raises ProbeUnavailable: one cannot be probed (a start-up error for the relay).
    """
    wanted = tuple(dict.fromkeys(protocols))
    known, other = (
        (DATAGRAM_PROTOCOLS, STREAM_PROTOCOLS)
        if datagram
        else (STREAM_PROTOCOLS, DATAGRAM_PROTOCOLS)
    )
    for name in wanted:
        if name in other:
            transport = "TCP" if datagram else "UDP"
            raise ProbeUnavailable(f"protocol {name!r} is probed on {transport} only")
        if name not in known:
            raise ProbeUnavailable(
                f"protocol {name!r} is not one of {', '.join(map(repr, known + other))}"
            )
        if name == "quic" and importlib.util.find_spec("cryptography") is None:
            raise ProbeUnavailable(
                "protocol 'quic' needs the cryptography package to decrypt Initial packets:"
                " pip install 'proxyproto[quic]'"
            )
    return wanted


class Prober:
    """The first bytes of one stream, probed for ``protocols`` (of :data:`STREAM_PROTOCOLS`).

    :raises ProbeUnavailable: a protocol is not a stream one.
    """

    def __init__(self, protocols: Iterable[str], *, limit: int = MAX_PROBE) -> None:
        self._probes = [_STREAM[name] for name in require(protocols)]
        #: Per live probe: the total size it needs before it is asked again.
        self._needed = [1] * len(self._probes)
        self._limit = limit
        self._buffer = bytearray()
        self._result: Match | Verdict = NEED_MORE if self._probes else NO_MATCH

    @property
    def data(self) -> bytes:
        """Every byte received so far: what the caller forwards."""
        return bytes(self._buffer)

    def receive_data(self, data: bytes) -> Match | Verdict:
        """Feed the next bytes (``b""``: the stream ended); the answer so far."""
        if self._result is not NEED_MORE:
            self._buffer += data
            return self._result
        if not data:
            self._result = NO_MATCH
            return NO_MATCH
        self._buffer += data
        probed = bytes(self._buffer[: self._limit])
        live = []
        for probe, needed in zip(self._probes, self._needed, strict=True):
            if len(probed) < needed:
                live.append((probe, needed))
                continue
            result = probe(probed)
            if isinstance(result, Match):
                self._result = result
                return result
            if isinstance(result, int):
                live.append((probe, result))
        self._probes = [probe for probe, _ in live]
        self._needed = [needed for _, needed in live]
        if not self._probes or len(self._buffer) >= self._limit:
            self._result = NO_MATCH
        return self._result


_DATAGRAM: dict[str, Callable[[bytes], Result]] = {"wireguard": probe_wireguard}


class DatagramProber:
    """The first datagrams of one UDP client, probed for ``protocols`` (of
    :data:`DATAGRAM_PROTOCOLS`): :meth:`receive_datagram` for each until it is not NEED_MORE.

    :raises ProbeUnavailable: a protocol is not a datagram one, or ``quic`` without
        ``cryptography``.
    """

    def __init__(self, protocols: Iterable[str]) -> None:
        wanted = require(protocols, datagram=True)
        self._simple = [_DATAGRAM[name] for name in wanted if name in _DATAGRAM]
        self._quic = None
        if "quic" in wanted:
            from .quic import QUICProbe

            self._quic = QUICProbe()
        self._first = True
        self._result: Match | Verdict = NEED_MORE

    def receive_datagram(self, datagram: bytes) -> Match | Verdict:
        """Probe the client's next datagram; the answer so far."""
        if self._result is not NEED_MORE:
            return self._result
        if self._first:
            self._first = False
            for probe in self._simple:
                result = probe(datagram)
                if isinstance(result, Match):
                    self._result = result
                    return result
        if self._quic is None:
            self._result = NO_MATCH
            return NO_MATCH
        answer = self._quic.receive_datagram(datagram)
        self._result = NEED_MORE if isinstance(answer, int) else answer
        return self._result


def probe_datagram(datagram: bytes, protocols: Iterable[str]) -> Match | Verdict:
    """One datagram probed for ``protocols``: NEED_MORE only for a QUIC ClientHello that
    continues in the next datagram (see :class:`DatagramProber`).

    >>> probe_datagram(b"\\x01\\x00\\x00\\x00" + bytes(144), ["wireguard"])
    Match(protocol='wireguard', server_name=None, alpns=())
    """
    return DatagramProber(protocols).receive_datagram(datagram)
