"""One table of promises, held on every surface (issue 10's cross-surface promise suite).

Each promise below is checked the same way on every surface it applies to (``surfaces.py``: the
anyio listener on asyncio and trio, native trio, Uvicorn, Hypercorn on both workers, ``proxyproto
relay``, UDP on asyncio and trio), from a client on each of anyio's backends. A promise is about
outcomes only, never about time: what the application saw (its client's address, every byte
after the header), whether the connection was refused, the one log line naming the peer and its
level, and the counters.

Where a surface does not keep a promise today, the case is in :data:`KNOWN_FAILING`, with what
happens instead: it runs as a strict xfail, so the suite stays green and says so as soon as it
holds. Remove the entry when the fix lands.
"""

from __future__ import annotations

import logging
import socket
import struct
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import attrs
import pytest
from anyio.abc import SocketAttribute, SocketStream

import proxyproto as pp
from proxyproto._handshake.engine import RefusalLog
from surfaces import (
    DATAGRAM_SURFACES,
    STREAM_SURFACES,
    SURFACES,
    Line,
    Pool,
    Seen,
    Server,
    Surface,
    counters,
    pool,
)

pytestmark = pytest.mark.anyio

#: Seconds every server gives a header (and its validator); small, so that timeouts are quick.
HEADER_TIMEOUT = 0.5
#: How long an outcome may take to show (a log line, a counter): a bound, not an expectation.
PATIENCE = 5.0
#: How long a refusal's log line may take to show once the refusal is known.
LINE_PATIENCE = 2.0

PROXIED_SOURCE = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)


# --- the validator: what it does is chosen by the header's source ------------------------------

#: Header sources whose validator call behaves as named (any other source is accepted).
VALIDATOR_SOURCES = {
    "sync accepts": ("203.0.113.11", 40011),
    "sync refuses": ("203.0.113.12", 40012),
    "async accepts": ("203.0.113.13", 40013),
    "async refuses": ("203.0.113.14", 40014),
    "sync raises HeaderRejected": ("203.0.113.15", 40015),
    "async raises HeaderRejected": ("203.0.113.16", 40016),
    "sync raises another exception": ("203.0.113.17", 40017),
    "async raises another exception": ("203.0.113.18", 40018),
    "slower than header_timeout": ("203.0.113.19", 40019),
}


def validator(header: pp.Header, peer: pp.PeerAddress) -> bool | Awaitable[bool]:
    octet = int(str(header.source[0]).rsplit(".", 1)[1]) if isinstance(header.source, tuple) else 0

    async def later(verdict: bool) -> bool:
        await anyio.sleep(0)
        return verdict

    async def raise_later(error: Exception) -> bool:
        await anyio.sleep(0)
        raise error

    async def slow() -> bool:
        await anyio.sleep(HEADER_TIMEOUT * 20)
        return True

    if octet == 12:
        return False
    if octet == 13:
        return later(True)
    if octet == 14:
        return later(False)
    if octet == 15:
        raise pp.HeaderRejected("not this one")
    if octet == 16:
        return raise_later(pp.HeaderRejected("not this one"))
    if octet == 17:
        raise ValueError("a bug in the validator")
    if octet == 18:
        return raise_later(ValueError("a bug in the validator"))
    if octet == 19:
        return slow()
    return True


def _config(policy: Any, **kwargs: Any) -> pp.ProxyProtocolConfig:
    return pp.ProxyProtocolConfig(policy=policy, header_timeout=HEADER_TIMEOUT, **kwargs)


#: The servers' configurations (one server per surface and configuration, for the module).
CONFIGS = {
    "require": _config(pp.Policy.REQUIRE, validator=validator),
    "use": _config(pp.Policy.USE),
    "ignore": _config(pp.Policy.IGNORE),
    "reject": _config(pp.Policy.REJECT),
    "skip": _config(pp.Policy.SKIP),
    # 127.0.0.1, where every test client is, is trusted here, and not there.
    "trusted": _config(pp.trusted_proxies(["127.0.0.0/8"])),
    "untrusted": _config(pp.trusted_proxies(["192.0.2.0/24"])),
    "evict": pp.ProxyProtocolConfig(
        header_timeout=PATIENCE * 2, max_pending_handshakes=1, eviction_age=0
    ),
}
#: The relay's command line has no other policies (``--accept-proxy`` is REQUIRE, none SKIP,
#: ``--trusted`` refuses everyone else, header or not) and no validator.
RELAY_CONFIGS = frozenset({"require", "skip", "trusted", "untrusted"})

#: The log level of each kind of refusal, on every surface; ``crash`` is a validator that raised
#: something else than HeaderRejected: counted as ``error``, logged with its traceback.
LEVELS = {
    "empty": logging.DEBUG,
    "timeout": logging.INFO,
    "evicted": logging.INFO,
    "closed": logging.INFO,
    "error": logging.INFO,
    "missing": logging.WARNING,
    "invalid": logging.WARNING,
    "policy": logging.WARNING,
    "validator": logging.WARNING,
    "crash": logging.ERROR,
}


@pytest.fixture(scope="module")
def servers() -> Iterator[Pool]:
    # Each server here serves many rows, and every row's refusal must have its own line: the
    # flood limit on refusal lines (ten of a kind per window, tested in test_engine.py and
    # test_anyio_listener.py) is lifted for this module's in-process servers.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RefusalLog, "BURST", 1_000_000)
        with pool(CONFIGS) as started:
            yield started


# --- what clients send -------------------------------------------------------------------------


def header_bytes(
    version: int, source: tuple[str, int] = PROXIED_SOURCE, *, dgram: bool = False
) -> bytes:
    transport = pp.Transport.DGRAM if dgram else pp.Transport.STREAM
    return pp.Header.proxy(source, DESTINATION, version=version, transport=transport).to_bytes()


#: Broken headers: a whole signature, then something no header can be.
INVALID = {1: b"PROXY TCP4 not-an-address\r\n", 2: header_bytes(2)[:12] + b"\x31" + b"\x00" * 15}


def token() -> bytes:
    return b"token-" + uuid.uuid4().hex.encode()


#: Each port's newest client: where the log was when it started (ports are reused).
SINCE: dict[int, int] = {}


def lines_of(server: Server, port: int) -> list[Line]:
    """The log lines about the newest client on ``port``."""
    return server.lines(port, SINCE.get(port, 0))


class Client:
    """One TCP connection from 127.0.0.1, on the test's anyio backend."""

    def __init__(self, stream: SocketStream, since: int) -> None:
        self.stream = stream
        self.since = since
        self.port: int = stream.extra(SocketAttribute.local_port)
        self.direct = ("127.0.0.1", self.port)

    @classmethod
    async def connect(cls, server: Server) -> Client:
        since = server.mark()
        client = cls(await anyio.connect_tcp(*server.address), since)
        SINCE[client.port] = since
        return client

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def finish(self, *, half_close: bool = True) -> bytes:
        """Half-close (unless told not to), then read the answer to EOF or reset."""
        response = bytearray()
        with anyio.fail_after(PATIENCE * 3):
            try:
                if half_close:
                    await self.stream.send_eof()
                while True:
                    response += await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
            finally:
                await self.stream.aclose()
        return bytes(response)

    async def reset(self) -> None:
        """Close with a reset (RST), not a FIN."""
        raw = self.stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


async def until(predicate: Callable[[], Any], timeout: float = PATIENCE) -> Any:
    """``predicate()`` once it is true, or its last value after ``timeout``."""
    with anyio.move_on_after(timeout):
        while not (value := predicate()):
            await anyio.sleep(0.01)
        return value
    return predicate()


# --- what to expect ----------------------------------------------------------------------------


def half_close(surface: Surface) -> bool:
    return not surface.http


async def expect_served(
    server: Server, port: int, response: bytes, tok: bytes, client: Any, data: bytes
) -> None:
    surface = server.surface
    assert surface.served(response), f"not served: {response[:200]!r}"
    seen = await until(lambda: server.find(tok))
    assert seen == [Seen(client, data)]
    loud = [line for line in lines_of(server, port) if line.level >= logging.WARNING]
    assert not loud, loud


async def expect_refused(
    server: Server, port: int, response: bytes | None, tok: bytes | None, kind: str
) -> None:
    """Refused: the client got nothing, the application saw nothing, one line named the peer."""
    if response is not None:
        assert response == b"", f"answered: {response[:200]!r}"
    level = LEVELS[kind]
    if server.surface.name == "relay" and level < logging.INFO:
        pass  # the relay prints the proxyproto logger from INFO up
    else:
        # The line comes with the close the client saw; after a reset the client saw nothing,
        # and a surface that does not log it costs this wait.
        lines: list[Line] = await until(lambda: lines_of(server, port), LINE_PATIENCE)
        assert len(lines) == 1, lines
        [line] = lines
        assert logging.getLevelName(line.level) == logging.getLevelName(level), line
        assert line.traceback == (kind == "crash"), line
    if tok is not None:
        assert not server.find(tok)


async def expect_bad_request(server: Server, response: bytes, tok: bytes) -> None:
    """SKIP on an HTTP surface: the header reached the HTTP parser, which refused it."""
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert not server.find(tok)


# --- the promises ------------------------------------------------------------------------------

Check = Callable[[Pool, Surface], Awaitable[None]]


@attrs.frozen
class Promise:
    name: str
    check: Check
    surfaces: tuple[str, ...]


PROMISES: list[Promise] = []


def promise(name: str, surfaces: tuple[str, ...] | frozenset[str]) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        PROMISES.append(Promise(name, check, tuple(s for s in SURFACES if s in surfaces)))
        return check

    return register


def _without_relay(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in names if name != "relay")


def _policy_outcome(config: str, header: bool, surface: Surface) -> str:
    """``proxied``, ``direct``, ``raw`` (every byte, header included), or a refusal kind."""
    if surface.name == "relay" and config == "untrusted":
        return "policy"  # the relay's --trusted keeps every other peer out (DESIGN.md)
    policy = {"trusted": "require", "untrusted": "reject"}.get(config, config)
    if not header:
        return "missing" if policy == "require" else "direct"
    return {
        "require": "proxied",
        "use": "proxied",
        "ignore": "direct",
        "reject": "policy",
        "skip": "raw",
    }[policy]


async def _stream_policy(servers: Pool, surface: Surface, config: str, version: int | None) -> None:
    server = await servers.start(surface.name, config)
    tok = token()
    wire, data = surface.frame(b"body " + tok)
    head = b"" if version is None else header_bytes(version)
    client = await Client.connect(server)
    await client.send(head + wire)
    response = await client.finish(half_close=half_close(surface))
    outcome = _policy_outcome(config, version is not None, surface)
    if outcome == "proxied":
        await expect_served(server, client.port, response, tok, PROXIED_SOURCE, data)
    elif outcome == "direct":
        await expect_served(server, client.port, response, tok, client.direct, data)
    elif outcome == "raw" and surface.http:
        await expect_bad_request(server, response, tok)
    elif outcome == "raw":
        await expect_served(server, client.port, response, tok, client.direct, head + data)
    else:
        await expect_refused(server, client.port, response, tok, outcome)


async def _udp_exchange(server: Server, datagram: bytes) -> tuple[int, bytes | None]:
    """Send one datagram; the answer, or ``None`` when none came (the server dropped it)."""
    since = server.mark()
    async with await anyio.create_connected_udp_socket(
        *server.address, family=socket.AF_INET, local_host="127.0.0.1"
    ) as udp:
        port = udp.extra(SocketAttribute.local_port)
        SINCE[port] = since
        await udp.send(datagram)
        answer = None

        async def answered() -> None:
            nonlocal answer
            answer = await udp.receive()

        async with anyio.create_task_group() as tg:
            tg.start_soon(answered)
            # An answer comes at once; a dropped datagram shows as a log line or a counter.
            with anyio.move_on_after(PATIENCE):
                while answer is None and not lines_of(server, port):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        return port, answer


async def _udp_policy(servers: Pool, surface: Surface, config: str, version: int | None) -> None:
    server = await servers.start(surface.name, config)
    tok = token()
    payload = b"payload " + tok
    head = b"" if version is None else header_bytes(version, dgram=True)
    port, answer = await _udp_exchange(server, head + payload)
    direct = ("127.0.0.1", port)
    outcome = _policy_outcome(config, version is not None, surface)
    if outcome in ("proxied", "direct", "raw"):
        assert answer == b"ok", answer
        client = PROXIED_SOURCE if outcome == "proxied" else direct
        seen = await until(lambda: server.find(tok))
        assert seen == [Seen(client, head + payload if outcome == "raw" else payload)]
    else:
        assert answer is None, answer
        await expect_refused(server, port, None, tok, outcome)


def _policy_promise(config: str, version: int | None) -> None:
    label = {None: "no header", 1: "v1 header", 2: "v2 header"}[version]
    name = f"policy {config}, {label}"
    stream = STREAM_SURFACES if config in RELAY_CONFIGS else _without_relay(STREAM_SURFACES)
    applies = stream + (DATAGRAM_SURFACES if version != 1 else ())

    async def check(servers: Pool, surface: Surface) -> None:
        if surface.datagram:
            await _udp_policy(servers, surface, config, version)
        else:
            await _stream_policy(servers, surface, config, version)

    promise(name, applies)(check)


for _config_name in ("require", "use", "ignore", "reject", "skip", "trusted", "untrusted"):
    for _version in (1, 2, None):
        _policy_promise(_config_name, _version)


# Refusals: each kind, its log line, the application never sees it.


@promise("refused: closed before a byte (empty)", STREAM_SURFACES)
async def _closed_at_once(servers: Pool, surface: Surface) -> None:
    server = await servers.start(surface.name, "require")
    client = await Client.connect(server)
    response = await client.finish()
    await expect_refused(server, client.port, response, None, "empty")


@promise("policy use, closed before a byte: direct", _without_relay(STREAM_SURFACES))
async def _use_closed_at_once(servers: Pool, surface: Surface) -> None:
    # USE: no header is a direct connection (DESIGN.md), an empty one too; the engine's
    # judge_reading decides so for every surface.
    server = await servers.start(surface.name, "use")
    before = {server: _counters(server)}
    client = await Client.connect(server)
    await client.finish()
    if not surface.http:  # an HTTP application sees no request in an empty connection
        assert await until(lambda: Seen(client.direct, b"") in server.seen)
    await _expect_counted(before, {server: Counter({"accepted": 1, "direct": 1})})
    assert not lines_of(server, client.port)


@promise("refused: reset before a byte (empty)", STREAM_SURFACES)
async def _reset_at_once(servers: Pool, surface: Surface) -> None:
    server = await servers.start(surface.name, "require")
    client = await Client.connect(server)
    await client.reset()
    await expect_refused(server, client.port, None, None, "empty")


def _mid_header_promises(version: int) -> None:
    @promise(f"refused: EOF mid-header v{version} (closed)", STREAM_SURFACES)
    async def eof(servers: Pool, surface: Surface) -> None:
        server = await servers.start(surface.name, "require")
        client = await Client.connect(server)
        await client.send(header_bytes(version)[:12])
        response = await client.finish()
        await expect_refused(server, client.port, response, None, "closed")

    @promise(f"refused: reset mid-header v{version} (error)", STREAM_SURFACES)
    async def reset(servers: Pool, surface: Surface) -> None:
        server = await servers.start(surface.name, "require")
        client = await Client.connect(server)
        await client.send(header_bytes(version)[:12])
        # Time for the server to read those bytes, so that the reset comes mid-header (a
        # reset that came first would be "empty"): not an assertion about time.
        await anyio.sleep(0.3)
        await client.reset()
        await expect_refused(server, client.port, None, None, "error")

    @promise(f"refused: invalid v{version} header (invalid)", STREAM_SURFACES)
    async def invalid(servers: Pool, surface: Surface) -> None:
        server = await servers.start(surface.name, "require")
        tok = token()
        wire, _ = surface.frame(tok)
        client = await Client.connect(server)
        await client.send(INVALID[version] + wire)
        response = await client.finish(half_close=half_close(surface))
        await expect_refused(server, client.port, response, tok, "invalid")


for _version in (1, 2):
    _mid_header_promises(_version)


@promise("refused: invalid v2 datagram (invalid)", DATAGRAM_SURFACES)
async def _invalid_datagram(servers: Pool, surface: Surface) -> None:
    server = await servers.start(surface.name, "require")
    tok = token()
    port, answer = await _udp_exchange(server, INVALID[2] + tok)
    assert answer is None
    await expect_refused(server, port, None, tok, "invalid")


@promise("header timeout: partial v1, partial v2, silent (timeout)", STREAM_SURFACES)
async def _header_timeout(servers: Pool, surface: Surface) -> None:
    server = await servers.start(surface.name, "require")
    sends = [header_bytes(1)[:12], header_bytes(2)[:12], b""]
    results: list[tuple[int, bytes]] = []

    async def one(first: bytes) -> None:
        client = await Client.connect(server)
        if first:
            await client.send(first)
        # No half-close: the client stays, silent, until the server gives up on it.
        results.append((client.port, await client.finish(half_close=False)))

    async with anyio.create_task_group() as tg:
        for first in sends:
            tg.start_soon(one, first)
    for port, response in results:
        await expect_refused(server, port, response, None, "timeout")


# Every byte after the header, however the header arrives.


def _body() -> tuple[bytes, bytes]:
    tok = token()
    return tok, tok + bytes(range(256)) * 256 + tok


def _data_promises(version: int) -> None:
    @promise(f"bytes after a v{version} header: first segment and later", _all_stream())
    async def segments(servers: Pool, surface: Surface) -> None:
        server = await servers.start(surface.name, "require")
        tok, body = _body()
        wire, data = surface.frame(body)
        client = await Client.connect(server)
        await client.send(header_bytes(version) + wire[:100])
        for start in (100, 1000, 30000):
            await anyio.sleep(0.02)
            await client.send(wire[start : {100: 1000, 1000: 30000, 30000: None}[start]])
        response = await client.finish(half_close=half_close(surface))
        await expect_served(server, client.port, response, tok, PROXIED_SOURCE, data)

    @promise(f"v{version} header split at every position", _all_stream())
    async def split(servers: Pool, surface: Surface) -> None:
        server = await servers.start(surface.name, "require")
        head = header_bytes(version)
        clients: list[tuple[Client, bytes, bytes, bytes]] = []
        for position in range(1, len(head) + 1):
            tok = token()
            wire, data = surface.frame(b"body " + tok)
            clients.append((await Client.connect(server), tok, data, head[position:] + wire))
            await clients[-1][0].send(head[:position])
        await anyio.sleep(0.05)  # so that the second segment is one
        responses: dict[int, bytes] = {}

        async def rest(client: Client, second: bytes) -> None:
            await client.send(second)
            responses[client.port] = await client.finish(half_close=half_close(surface))

        async with anyio.create_task_group() as tg:
            for client, _, _, second in clients:
                tg.start_soon(rest, client, second)
        for client, tok, data, _ in clients:
            await expect_served(
                server, client.port, responses[client.port], tok, PROXIED_SOURCE, data
            )

    @promise(f"v{version} header a byte at a time", _all_stream())
    async def bytewise(servers: Pool, surface: Surface) -> None:
        server = await servers.start(surface.name, "require")
        tok = token()
        wire, data = surface.frame(b"body " + tok)
        first = header_bytes(version) + wire[:8]
        client = await Client.connect(server)
        for index in range(len(first)):
            await client.send(first[index : index + 1])
            await anyio.sleep(0.002)
        await client.send(wire[8:])
        response = await client.finish(half_close=half_close(surface))
        await expect_served(server, client.port, response, tok, PROXIED_SOURCE, data)


def _all_stream() -> tuple[str, ...]:
    return STREAM_SURFACES


for _version in (1, 2):
    _data_promises(_version)


# The validator, called the same way everywhere.

VALIDATOR_OUTCOMES = {
    "sync accepts": "proxied",
    "sync refuses": "validator",
    "async accepts": "proxied",
    "async refuses": "validator",
    "sync raises HeaderRejected": "validator",
    "async raises HeaderRejected": "validator",
    "sync raises another exception": "crash",
    "async raises another exception": "crash",
    "slower than header_timeout": "timeout",
}


def _validator_promise(behaviour: str) -> None:
    source = VALIDATOR_SOURCES[behaviour]
    outcome = VALIDATOR_OUTCOMES[behaviour]

    @promise(f"validator {behaviour}", _without_relay(SURFACES))
    async def check(servers: Pool, surface: Surface) -> None:
        server = await servers.start(surface.name, "require")
        tok = token()
        if surface.datagram:
            payload = b"payload " + tok
            port, answer = await _udp_exchange(
                server, header_bytes(2, source, dgram=True) + payload
            )
            if outcome == "proxied":
                assert answer == b"ok"
                assert await until(lambda: server.find(tok)) == [Seen(source, payload)]
            else:
                assert answer is None
                await expect_refused(server, port, None, tok, outcome)
            return
        wire, data = surface.frame(b"body " + tok)
        client = await Client.connect(server)
        await client.send(header_bytes(2, source) + wire)
        response = await client.finish(half_close=half_close(surface))
        if outcome == "proxied":
            await expect_served(server, client.port, response, tok, source, data)
        else:
            await expect_refused(server, client.port, response, tok, outcome)


for _behaviour in VALIDATOR_SOURCES:
    _validator_promise(_behaviour)


def _counters(server: Server) -> Counter[str] | None:
    statistics = server.statistics()
    return None if statistics is None else counters(statistics)


async def _expect_counted(
    before: dict[Server, Counter[str] | None], expected: dict[Server, Counter[str]]
) -> None:
    """The counters moved by ``expected`` since ``before`` (summed over servers that share
    theirs), and no handshake is left in flight."""
    keys: dict[object, list[Server]] = {}
    for server in expected:
        keys.setdefault(server.counter_key or server, []).append(server)
    for group in keys.values():
        want: Counter[str] = Counter()
        for server in group:
            want.update(expected[server])
        start = before[group[0]]
        assert start is not None

        def delta(start: Counter[str] = start, server: Server = group[0]) -> dict[str, int]:
            now = _counters(server)
            assert now is not None
            return {k: now[k] - start[k] for k in set(now) | set(start) if now[k] != start[k]}

        want_dict = {k: v for k, v in want.items() if v}

        def matches(want_dict: dict[str, int] = want_dict) -> bool:
            return delta() == want_dict

        await until(matches, LINE_PATIENCE)
        assert delta() == want_dict


@promise("counters: accepted, direct, each refusal kind, in_flight", _without_relay(SURFACES))
async def _counted(servers: Pool, surface: Surface) -> None:
    require = await servers.start(surface.name, "require")
    use = await servers.start(surface.name, "use")
    before = {require: _counters(require), use: _counters(use)}
    head = header_bytes(2)
    sources = VALIDATOR_SOURCES
    if surface.datagram:
        sends = {
            "accepted": head_dgram(PROXIED_SOURCE),
            "rejected.missing": b"no header",
            "rejected.invalid": INVALID[2],
            "rejected.validator": head_dgram(sources["sync refuses"]),
            "rejected.error": head_dgram(sources["sync raises another exception"]),
            "rejected.timeout": head_dgram(sources["slower than header_timeout"]),
        }
        for datagram in sends.values():
            await _udp_exchange(require, datagram + b" payload")
        await _udp_exchange(use, b"direct payload")
        expected = Counter(dict.fromkeys(sends, 1))
    else:
        wire, _ = surface.frame(b"body")
        plans: list[tuple[bytes, bool]] = [
            (head + wire, True),  # accepted
            (wire, True),  # missing (REQUIRE)
            (INVALID[2] + wire, True),  # invalid
            (head[:12], True),  # closed: EOF mid-header
            (b"", True),  # empty
            (head[:12], False),  # timeout: silent mid-header
            (header_bytes(2, sources["sync refuses"]) + wire, True),  # validator
            (header_bytes(2, sources["sync raises another exception"]) + wire, True),  # error
            (header_bytes(2, sources["slower than header_timeout"]) + wire, True),  # timeout
        ]

        async def one(server: Server, data: bytes, eof: bool) -> None:
            client = await Client.connect(server)
            if data:
                await client.send(data)
            await client.finish(half_close=eof)

        async with anyio.create_task_group() as tg:
            for data, eof in plans:
                tg.start_soon(one, require, data, eof)
            tg.start_soon(one, use, wire, True)
        expected = Counter(
            {
                "accepted": 1,
                "rejected.missing": 1,
                "rejected.invalid": 1,
                "rejected.closed": 1,
                "rejected.empty": 1,
                "rejected.timeout": 2,
                "rejected.validator": 1,
                "rejected.error": 1,
            }
        )
    await _expect_counted(before, {require: expected, use: Counter({"accepted": 1, "direct": 1})})


def head_dgram(source: tuple[str, int]) -> bytes:
    return header_bytes(2, source, dgram=True)


# --- the test ----------------------------------------------------------------------------------

#: (surface, promise) -> what happens instead, today. Each is a strict xfail: remove the entry
#: when the fix lands (the suite then fails until it is removed).
KNOWN_FAILING: dict[tuple[str, str], str] = {}

#: Cases that fail on some runs only, and why: a non-strict xfail until fixed.
FLAKY: dict[tuple[str, str], str] = {
    (surface, "refused: reset before a byte (empty)"): (
        "when the reset comes before the anyio listener reads the peer's address, the line "
        "says 'an unknown peer' instead of naming it (native trio keeps accept()'s address)"
    )
    for surface in ("anyio-asyncio", "anyio-trio")
}


def _params() -> list[Any]:
    params = []
    for entry in PROMISES:
        for surface in entry.surfaces:
            marks = []
            if (surface, entry.name) in KNOWN_FAILING:
                marks.append(
                    pytest.mark.xfail(reason=KNOWN_FAILING[(surface, entry.name)], strict=True)
                )
            if (surface, entry.name) in FLAKY:
                marks.append(pytest.mark.xfail(reason=FLAKY[(surface, entry.name)], strict=False))
            params.append(pytest.param(surface, entry, id=f"{surface}: {entry.name}", marks=marks))
    return params


@pytest.mark.parametrize(("surface", "entry"), _params())
async def test_promise(servers: Pool, surface: str, entry: Promise) -> None:
    await entry.check(servers, Surface(surface))
