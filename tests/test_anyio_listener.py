"""ProxyProtocolListener under load and under attack, over real TCP sockets on 127.0.0.1.

Each test serves a real ``anyio.create_tcp_listener`` through
:class:`proxyproto.ProxyProtocolListener` in a task group that is cancelled at the end, on asyncio
and trio, bounded by ``anyio.fail_after``. No traffic leaves loopback; connection counts are
modest (this runs on small shared machines) and floods are sized from the open-file limit.

No timing assertion bounds a latency (CI machines are loaded): only lower bounds ("not closed
before header_timeout"). "Served at once" is checked by cause instead: a header_timeout far
beyond the test's deadline, so only the behaviour under test can end a handshake, and the
counters or the other connections' state at the moment a client is served. Where the test must
know that the server caught up, it polls ``statistics().in_flight`` instead of sleeping.

Decisions these tests pin down:

- Exceptions from the handler propagate out of ``serve`` (as with anyio's own listeners), wrapped
  in exception groups by the task groups on the way. The other connections' handlers and every
  pending handshake are cancelled; pending handshakes are closed and not counted as refused;
  handlers close their own streams (``async with stream``). ``serve`` can be called again.
- A PROXY handshake refused for a remote reason is logged in one record, with the peer and the
  reason and no traceback; a policy callable that raises is a server bug, logged with one.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import logging
import random
import resource
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream, Listener, SocketAttribute, SocketListener, SocketStream
from anyio.streams.stapled import MultiListener

import proxyproto as pp
from proxyproto._handshake.engine import RefusalLog

HOST = "127.0.0.1"
DESTINATION = ("198.51.100.10", 443)
DESTINATION_V6 = ("2001:db8:ffff::10", 443)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: A bound on every test, far above what each needs.
TEST_DEADLINE = 30.0

Address = tuple[str, int]


def open_file_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 16


def flood_size(max_pending_handshakes: int) -> int:
    """5x the handshake slots, far from the open-file limit (each connection costs two fds here)."""
    return min(5 * max_pending_handshakes, open_file_limit() // 4)


def legit_source(n: int) -> Address:
    """Clients that behave (TEST-NET-3, or 2001:db8::/32 for odd n)."""
    if n % 2:
        return (f"2001:db8::{n:x}", 1024 + n)
    return (f"203.0.113.{1 + n % 250}", 1024 + n)


def attacker_source(n: int) -> Address:
    """Clients that misbehave (TEST-NET-1): the handler must never see these."""
    return (f"192.0.2.{1 + n % 250}", 40000 + n)


def proxy_header(source: Address, *, version: int = 2) -> pp.Header:
    destination = DESTINATION_V6 if ":" in source[0] else DESTINATION
    return pp.Header.proxy(source, destination, version=version)


def header_bytes(source: Address, *, version: int = 2) -> bytes:
    return proxy_header(source, version=version).to_bytes()


@dataclass
class Server:
    """A running listener and what its handler saw."""

    listener: pp.ProxyProtocolListener
    port: int
    #: ``SocketAttribute.remote_address`` of every stream the handler got, in order.
    seen: list[Any] = field(default_factory=list)
    #: Varies the handler's ``receive()`` sizes, so leftover bytes are served in pieces.
    rng: random.Random | None = None

    def statistics(self) -> pp.ListenerStatistics:
        return self.listener.statistics()

    async def connect(self) -> SocketStream:
        return await anyio.connect_tcp(HOST, self.port)

    async def wait_until(self, predicate: Callable[[pp.ListenerStatistics], bool]) -> None:
        """Poll the counters (the caller's deadline bounds this)."""
        while not predicate(self.listener.statistics()):
            await anyio.sleep(0.01)

    async def settled(self) -> pp.ListenerStatistics:
        """The counters once no handshake is under way."""
        await self.wait_until(lambda stats: stats.in_flight == 0)
        return self.statistics()

    async def reply_digest(self, stream: pp.ProxiedStream) -> None:
        """The default handler: read to EOF, answer with what arrived and who sent it."""
        async with stream:
            source = stream.extra(SocketAttribute.remote_address)
            self.seen.append(source)
            digest, size = hashlib.sha256(), 0
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    max_bytes = int(2 ** self.rng.uniform(0, 16)) if self.rng else 65536
                    chunk = await stream.receive(max_bytes)
                    digest.update(chunk)
                    size += len(chunk)
            reply = {
                "source": list(source) if isinstance(source, tuple) else source,
                "peer": list(stream.extra(pp.ProxyAttribute.peer_address) or ()),
                "local": list(stream.extra(SocketAttribute.local_address)[:2]),
                "size": size,
                "sha256": digest.hexdigest(),
            }
            await stream.send(json.dumps(reply).encode())


@contextlib.asynccontextmanager
async def serving(
    config: pp.ProxyProtocolConfig, *, rng: random.Random | None = None
) -> AsyncIterator[Server]:
    """A listener on 127.0.0.1 whose handler is :meth:`Server.reply_digest`."""
    inner = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    listener = pp.ProxyProtocolListener(inner, config)
    server = Server(listener, listener.extra(SocketAttribute.local_port), rng=rng)
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, server.reply_digest)
        try:
            yield server
        finally:
            task_group.cancel_scope.cancel()


async def read_until_closed(stream: ByteStream) -> bytes:
    """Everything the server sends until it closes (EOF or reset)."""
    data = bytearray()
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
        while True:
            data += await stream.receive()
    return bytes(data)


@dataclass
class Exchange:
    reply: dict[str, Any]
    latency: float
    #: The client's own address, as the server's socket sees it.
    address: Address


async def exchange(
    server: Server,
    first: bytes,
    payload: bytes = b"ping",
    *,
    delay: float = 0.0,
    split_gap: float | None = None,
    between: Callable[[], Awaitable[None]] | None = None,
) -> Exchange:
    """Connect, wait ``delay`` (a proxy's round trip), send ``first + payload`` in one segment,
    EOF, and read the handler's reply.

    With ``split_gap``, the first half of ``first`` goes alone, then the rest ``split_gap``
    seconds later: a header split across segments, which needs a handshake slot meanwhile.
    With ``between``, the rest goes once ``between()`` returns instead.
    """
    start = anyio.current_time()
    async with await server.connect() as stream:
        address = (HOST, stream.extra(SocketAttribute.local_port))
        if delay:
            await anyio.sleep(delay)
        if split_gap is not None or between is not None:
            await stream.send(first[: len(first) // 2])
            if between is not None:
                await between()
            else:
                await anyio.sleep(split_gap or 0.0)
            first = first[len(first) // 2 :]
        await stream.send(first + payload)
        await stream.send_eof()
        raw = await read_until_closed(stream)
    assert raw, f"the client at {address} was closed without a reply"
    reply = json.loads(raw)
    assert reply["sha256"] == hashlib.sha256(payload).hexdigest()
    return Exchange(reply, anyio.current_time() - start, address)


async def legit_client(
    server: Server,
    n: int,
    *,
    version: int = 2,
    delay: float = 0.0,
    split_gap: float | None = None,
    between: Callable[[], Awaitable[None]] | None = None,
) -> float:
    """A client that behaves like a real proxy: header and request at once. Its latency."""
    source = legit_source(n)
    first = header_bytes(source, version=version)
    result = await exchange(server, first, delay=delay, split_gap=split_gap, between=between)
    assert tuple(result.reply["source"]) == source
    return result.latency


async def refused_client(server: Server, data: bytes, *, eof: bool = False) -> tuple[float, int]:
    """Send ``data`` (then EOF, or keep the connection open), wait for the server to close it.

    Returns how long that took and the client's port (how the server's log names it).
    """
    async with await server.connect() as stream:
        port = stream.extra(SocketAttribute.local_port)
        start = anyio.current_time()
        if data:
            await stream.send(data)
        if eof:
            await stream.send_eof()
        received = await read_until_closed(stream)
        elapsed = anyio.current_time() - start
    assert received == b"", "a refused connection got bytes from the server"
    return elapsed, port


def empty_is(count: int, stats: pp.ListenerStatistics) -> bool:
    return stats.rejected.get("empty") == count


async def reset_client(server: Server) -> int:
    """Connect and reset the connection (SO_LINGER 0) without sending anything; the client's
    port."""
    stream = await server.connect()
    raw = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    port: int = stream.extra(SocketAttribute.local_port)
    await stream.aclose()
    return port


# --- integrity ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_byte_after_the_header_arrives_intact_under_concurrency() -> None:
    clients = 64
    rng = random.Random(20260427)
    plans = []
    for n in range(clients):
        kind = rng.random()
        size = 0 if kind < 0.1 else rng.randint(1, 16) if kind < 0.2 else rng.randint(1, 1 << 20)
        payload = rng.randbytes(size)
        version = rng.choice((1, 2))
        header = proxy_header(legit_source(n), version=version)
        first = header.to_bytes(crc32c=version == 2 and rng.random() < 0.3)
        # The header and the first payload bytes go in one segment; the rest in random pieces.
        cut = rng.randint(1, min(size, 1 << 16)) if size else 0
        chunks = [first + payload[:cut]]
        while cut < size:
            step = int(2 ** rng.uniform(0, 18))
            chunks.append(payload[cut : cut + step])
            cut += step
        plans.append((n, payload, chunks))

    async def client(n: int, payload: bytes, chunks: list[bytes]) -> None:
        async with await server.connect() as stream:
            address = [HOST, stream.extra(SocketAttribute.local_port)]
            for chunk in chunks:
                await stream.send(chunk)
            await stream.send_eof()
            reply = json.loads(await read_until_closed(stream))
        assert reply["size"] == len(payload), f"client {n}"
        assert reply["sha256"] == hashlib.sha256(payload).hexdigest(), f"client {n}"
        assert tuple(reply["source"]) == legit_source(n)
        assert reply["peer"] == address

    config = pp.ProxyProtocolConfig(header_timeout=10.0)
    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config, rng=random.Random(1)) as server:
            async with anyio.create_task_group() as task_group:
                for plan in plans:
                    task_group.start_soon(client, *plan)
            stats = await server.settled()
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(clients))
    assert stats == pp.ListenerStatistics(
        accepted=clients, direct=0, rejected={}, timed_out=0, evicted=0, in_flight=0
    )


# --- attacks -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_slowloris_times_out_while_prompt_clients_are_served() -> None:
    timeout = 4.0
    slow, prompt = 8, 15
    config = pp.ProxyProtocolConfig(header_timeout=timeout, max_pending_handshakes=32)
    rng = random.Random(7)
    closed_after: list[float] = []
    #: At each prompt client's reply: how many slowloris connections had been closed by then.
    closed_when_served: list[int] = []

    async def slowloris(n: int) -> None:
        # A valid header, one byte every 100-300 ms: it would take several header timeouts.
        header = header_bytes(attacker_source(n), version=1 + n % 2)
        sent = 0

        async def trickle(stream: ByteStream) -> None:
            nonlocal sent
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                for byte in header:
                    await anyio.sleep(rng.uniform(0.2, 0.4))
                    await stream.send(bytes((byte,)))
                    sent += 1

        async with await server.connect() as stream, anyio.create_task_group() as task_group:
            start = anyio.current_time()
            task_group.start_soon(trickle, stream)
            received = await read_until_closed(stream)
            closed_after.append(anyio.current_time() - start)
            task_group.cancel_scope.cancel()
        assert received == b""
        assert sent < len(header), "the slowloris finished its header: trickle slower"

    async def prompt_client(n: int) -> None:
        await legit_client(server, n, version=1 + n % 2)
        closed_when_served.append(len(closed_after) + server.statistics().timed_out)

    async def prompt_clients() -> None:
        await server.wait_until(lambda stats: stats.in_flight >= slow)
        async with anyio.create_task_group() as clients:
            for n in range(prompt):
                clients.start_soon(prompt_client, n)

    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            async with anyio.create_task_group() as task_group:
                for n in range(slow):
                    task_group.start_soon(slowloris, n)
                task_group.start_soon(prompt_clients)
            stats = await server.settled()
    assert len(closed_after) == slow
    # Closed by the timeout, not before it (it was sending); fail_after bounds the rest.
    assert all(0.9 * timeout <= elapsed for elapsed in closed_after), closed_after
    # Served while every slowloris was still pending: no prompt client waited for a timeout.
    assert closed_when_served == [0] * prompt, closed_when_served
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(prompt))
    assert stats == pp.ListenerStatistics(
        accepted=prompt, direct=0, rejected={}, timed_out=slow, evicted=0, in_flight=0
    )


async def open_flood(
    server: Server,
    flood: int,
    task_group: anyio.abc.TaskGroup,
    closed_at: list[float],
    first: bytes = b"",
) -> None:
    """Open ``flood`` connections that send ``first`` (a header's first bytes, or nothing) and
    then nothing more; note when the server closes each."""

    async def idle(stream: SocketStream) -> None:
        async with stream:
            if first:
                await stream.send(first)
            assert await read_until_closed(stream) == b""
        closed_at.append(anyio.current_time())

    for _ in range(flood):
        task_group.start_soon(idle, await server.connect())
    await server.wait_until(lambda stats: stats.in_flight == flood)


@pytest.mark.anyio
async def test_idle_flood_holds_no_slot() -> None:
    """Connections that send nothing hold no handshake slot: real clients never wait for them.

    They cost a task and a socket each until they leave (or their deadline). No clock is raced:
    the flood never times out (``header_timeout`` is beyond the test's deadline), so a prompt
    client that needed one of its slots would wait past ``fail_after`` or evict it; every prompt
    client is served while the whole flood is still pending, then the flood leaves ("empty").
    """
    max_pending = 8
    flood, prompt = flood_size(max_pending), 2 * max_pending
    config = pp.ProxyProtocolConfig(
        header_timeout=10 * TEST_DEADLINE, max_pending_handshakes=max_pending, eviction_age=0.1
    )
    closed_at: list[float] = []
    #: At each prompt client's reply: (flood connections closed, evicted, timed out) by then.
    flood_when_served: list[tuple[int, int, int]] = []

    async def client(n: int, split_gap: float | None) -> None:
        await legit_client(server, n, split_gap=split_gap)
        stats = server.statistics()
        flood_when_served.append((len(closed_at), stats.evicted, stats.timed_out))

    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            async with anyio.create_task_group() as flood_group:
                await open_flood(server, flood, flood_group, closed_at)
                # One by one, then all together, some with their header split across segments.
                for n in range(prompt):
                    await client(n, None)
                async with anyio.create_task_group() as clients:
                    for n in range(prompt, 2 * prompt):
                        clients.start_soon(client, n, 0.02 if n % 2 else None)
                assert server.statistics().in_flight == flood  # the flood is still pending
                flood_group.cancel_scope.cancel()  # the flood leaves
            stats = await server.settled()
    assert flood_when_served == [(0, 0, 0)] * (2 * prompt), flood_when_served
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(2 * prompt))
    assert stats == pp.ListenerStatistics(
        accepted=2 * prompt,
        direct=0,
        rejected={"empty": flood},
        timed_out=0,
        evicted=0,
        in_flight=0,
    )


async def hold_partial(stream: SocketStream, partial: bytes) -> None:
    """Send a header's first bytes, then nothing, until the server closes the connection."""
    async with stream:
        await stream.send(partial)
        assert await read_until_closed(stream) == b""


@pytest.mark.anyio
@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "together"])
async def test_partial_header_flood_is_evicted_for_prompt_clients(together: bool) -> None:
    """A flood that sends a header's first bytes and stops holds every slot.

    Prompt clients whose header comes in two segments are partial handshakes too: they evict the
    flood's oldest handshakes and never wait behind them, whether they come one by one or more
    of them at once than there are slots.

    No clock is raced: the flood never times out (``header_timeout`` is beyond the test's
    deadline). One by one, ``eviction_age=0`` makes every step exact: the flood evicts its own
    older connections until it holds the slots, then each prompt client finds either room or
    the oldest to evict. Together, the age is real: the flood is left to grow older than it,
    and the first prompt client evicts it down to one under the bound in one batch; prompt
    clients, younger, never evict each other.
    """
    max_pending = 8
    flood, prompt = flood_size(max_pending), 2 * max_pending
    config = pp.ProxyProtocolConfig(
        header_timeout=10 * TEST_DEADLINE,
        max_pending_handshakes=max_pending,
        eviction_age=0.5 if together else 0.0,
    )
    partial = header_bytes(attacker_source(0))[:10]

    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            async with anyio.create_task_group() as flood_group:
                for _ in range(flood):
                    flood_group.start_soon(hold_partial, await server.connect(), partial)
                if together:
                    # Every flood connection has reached the server (some may be evicted).
                    await server.wait_until(lambda stats: stats.in_flight + stats.evicted == flood)
                    await anyio.sleep(1.2 * config.eviction_age)  # the flood grows old
                    async with anyio.create_task_group() as clients:
                        for n in range(prompt):
                            client = functools.partial(legit_client, server, n, split_gap=0.01)
                            clients.start_soon(client)
                else:
                    # The flood's own newcomers evicted all but the newest max_pending.
                    await server.wait_until(
                        lambda stats: (
                            (stats.evicted, stats.in_flight) == (flood - max_pending, max_pending)
                        )
                    )
                    for n in range(prompt):
                        await legit_client(server, n, split_gap=0.01)
                # What is left of the flood leaves: its handshakes end as "closed".
                flood_group.cancel_scope.cancel()
            stats = await server.settled()
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(prompt))
    left = stats.rejected.get("closed", 0)
    assert stats.evicted + left == flood, stats
    assert (stats.accepted, stats.timed_out, stats.in_flight) == (prompt, 0, 0), stats
    assert set(stats.rejected) <= {"closed"}, stats
    if together:
        # The first prompt client made room in one batch, down to one under the bound.
        assert stats.evicted >= flood - max_pending + 1, stats
    else:
        # The first prompt client evicted the oldest and, once served, freed that slot for the
        # next ones: what the flood holds is left alone while a slot is free.
        assert (stats.evicted, left) == (flood - max_pending + 1, max_pending - 1), stats


@pytest.mark.anyio
async def test_tenfold_slowloris_flood_that_reconnects(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten times more slow senders than slots, each sending a header's first bytes and
    reconnecting as soon as it is evicted, and prompt clients whose header comes in two
    segments, all at once: every prompt client is served (it never waits for a slot: it is
    admitted and reads its second segment at once), none is evicted or times out, and the flood's
    many evictions are logged as ten lines (and ten of each other kind), the rest counted for
    the window's summary.

    Bounded counts only: the flood never times out, each of its connections ends evicted or
    closed (at the end), and the log window is longer than the test.
    """
    monkeypatch.setattr(RefusalLog, "PERIOD", 3600.0)
    caplog.set_level(logging.DEBUG, "proxyproto")
    max_pending = 8
    flood, prompt = min(10 * max_pending, open_file_limit() // 4), 20
    config = pp.ProxyProtocolConfig(
        header_timeout=10 * TEST_DEADLINE, max_pending_handshakes=max_pending, eviction_age=0.5
    )
    partial = header_bytes(attacker_source(0))[:10]
    opened = 0
    rng = random.Random(11)

    async def slow_sender() -> None:
        nonlocal opened
        while True:  # until cancelled: reconnect at once when evicted
            opened += 1
            await hold_partial(await server.connect(), partial)

    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            async with anyio.create_task_group() as flood_group:
                for _ in range(flood):
                    flood_group.start_soon(slow_sender)
                await server.wait_until(lambda stats: stats.in_flight >= flood)
                # The flood grows old enough to evict, and evicting it goes on while the
                # prompt clients come.
                await anyio.sleep(1.2 * config.eviction_age)
                async with anyio.create_task_group() as clients:
                    for n in range(prompt):
                        delay, gap = rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.02)
                        client = functools.partial(
                            legit_client, server, n, delay=delay, split_gap=gap
                        )
                        clients.start_soon(client)
                flood_group.cancel_scope.cancel()
            stats = await server.settled()
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(prompt))
    assert (stats.accepted, stats.timed_out, stats.in_flight) == (prompt, 0, 0), stats
    assert set(stats.rejected) <= {"closed", "error"}, stats
    assert stats.evicted + sum(stats.rejected.values()) == opened, (stats, opened)
    assert stats.evicted >= flood - max_pending + 1, stats
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused connection")]
    # One window: each kind's first BURST refusals are logged, one line each.
    counts = [stats.evicted, *stats.rejected.values()]
    assert len(refusals) == sum(min(count, RefusalLog.BURST) for count in counts), (
        len(refusals),
        stats,
    )


@pytest.mark.anyio
async def test_burst_of_prompt_clients_do_not_evict_each_other() -> None:
    # Six times more clients than slots, each with its header split across two segments, all
    # partial at once: every client sends its first half, and the second only once all of them
    # are under way (so the slots are oversubscribed whatever the machine's load). None is old
    # enough to evict (eviction_age is far above the wait), so none is evicted: a burst of real
    # clients never evicts itself, and all are served.
    max_pending, timeout = 8, 25.0
    burst = 6 * max_pending
    config = pp.ProxyProtocolConfig(
        header_timeout=timeout, max_pending_handshakes=max_pending, eviction_age=20.0
    )
    all_partial = anyio.Event()

    async def wait_for_all() -> None:
        await all_partial.wait()

    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server, anyio.create_task_group() as clients:
            for n in range(burst):
                clients.start_soon(functools.partial(legit_client, server, n, between=wait_for_all))
            await server.wait_until(lambda stats: stats.in_flight == burst)
            all_partial.set()
        stats = await server.settled()
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(burst))
    assert stats == pp.ListenerStatistics(
        accepted=burst, direct=0, rejected={}, timed_out=0, evicted=0, in_flight=0
    )


def junk(seed: int, size: int = 64) -> bytes:
    rng = random.Random(seed)
    # Not a prefix of either signature ("PROXY " or "\r\n\r\n\0\r\nQUIT\n").
    first = rng.choice([b for b in range(256) if b not in b"P\r"])
    return bytes((first,)) + rng.randbytes(size - 1)


#: Bytes that cannot start a header, sent without EOF: (id, data, the rejected[] reason).
INVALID = [
    ("junk", junk(1), "missing"),
    ("junk-2", junk(2, 4096), "missing"),
    ("http", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "missing"),
    ("v1-bad-port", b"PROXY TCP4 192.0.2.1 198.51.100.10 99999 443\r\n", "invalid"),
    ("v1-leading-zero", b"PROXY TCP4 192.0.2.01 198.51.100.10 1234 443\r\n", "invalid"),
    ("v1-double-space", b"PROXY  TCP4 192.0.2.1 198.51.100.10 1234 443\r\n", "invalid"),
    ("v2-version-3", V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), "invalid"),
    ("v2-bad-family", V2_SIGNATURE + b"\x21\x99\x00\x0c" + bytes(12), "invalid"),
    ("v2-short-length", V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "invalid"),
    # Above max_header_size: refused at the length field, without waiting for the rest.
    ("v2-over-long", V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 8192), "invalid"),
]

#: Bytes that could start a header, then EOF: rejected as "closed" ("empty" for no byte at all).
EARLY_EOF = [
    ("nothing", b""),
    ("in-signature", b"PRO"),
    ("v1-partial", b"PROXY TCP4 192.0.2.1 "),
    ("v2-partial", header_bytes(attacker_source(0))[:20]),
]


async def refuse_all_while_serving(
    server: Server, cases: list[tuple[bytes, bool]], prompt: int
) -> list[float]:
    """Run the refused cases and ``prompt`` prompt clients (each checks its answer) at once:
    how long each refused client waited."""
    refused_after: list[float] = []

    async def refused(data: bytes, eof: bool) -> None:
        elapsed, _port = await refused_client(server, data, eof=eof)
        refused_after.append(elapsed)

    async def prompt_client(n: int) -> None:
        await legit_client(server, n)

    async with anyio.create_task_group() as task_group:
        for data, eof in cases:
            task_group.start_soon(refused, data, eof)
        for n in range(prompt):
            task_group.start_soon(prompt_client, n)
    return refused_after


@pytest.mark.anyio
async def test_invalid_headers_are_refused_at_once() -> None:
    # The timeout is beyond the test's deadline: only the invalid bytes can end a handshake.
    prompt = 10
    config = pp.ProxyProtocolConfig(header_timeout=10 * TEST_DEADLINE)
    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            cases = [(data, False) for _id, data, _reason in INVALID]
            refused_after = await refuse_all_while_serving(server, cases, prompt)
            stats = await server.settled()
    # The client keeps its side open: only the server can have closed, and it did so on the
    # bytes (not at a timeout: none could come before fail_after).
    assert len(refused_after) == len(INVALID)
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(prompt))
    expected: dict[str, int] = {}
    for _id, _data, reason in INVALID:
        expected[reason] = expected.get(reason, 0) + 1
    assert stats == pp.ListenerStatistics(
        accepted=prompt, direct=0, rejected=expected, timed_out=0, evicted=0, in_flight=0
    )


@pytest.mark.anyio
async def test_eof_before_a_complete_header_is_rejected_as_closed() -> None:
    # The timeout is beyond the test's deadline: only the EOF can end a handshake.
    prompt = 5
    config = pp.ProxyProtocolConfig(header_timeout=10 * TEST_DEADLINE)
    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            cases = [(data, True) for _id, data in EARLY_EOF]
            refused_after = await refuse_all_while_serving(server, cases, prompt)
            stats = await server.settled()
    assert len(refused_after) == len(EARLY_EOF)
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(prompt))
    assert stats == pp.ListenerStatistics(
        accepted=prompt,
        direct=0,
        rejected={"empty": 1, "closed": len(EARLY_EOF) - 1},
        timed_out=0,
        evicted=0,
        in_flight=0,
    )


# --- logging and counters ----------------------------------------------------------------------


def broken_v2() -> bytes:
    return V2_SIGNATURE + b"\x21\x99\x00\x0c" + bytes(12)


@pytest.mark.anyio
async def test_each_refusal_is_logged_once_with_peer_and_reason_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxyproto")
    # The prompt client must arrive while both partial headers are still pending: the timeout
    # leaves a loaded machine seconds for that, well over the eviction age.
    timeout, age = 4.0, 0.1
    config = pp.ProxyProtocolConfig(
        header_timeout=timeout, max_pending_handshakes=2, eviction_age=age
    )
    with pytest.raises(pp.InvalidHeader) as parse_error:
        pp.parse(broken_v2())
    #: client port -> a phrase its log record must contain
    expected: dict[int, str] = {}
    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            _elapsed, port = await refused_client(server, b"GET / HTTP/1.1\r\n\r\n")
            expected[port] = "no PROXY header"
            _elapsed, port = await refused_client(server, broken_v2())
            expected[port] = str(parse_error.value)
            _elapsed, port = await refused_client(server, b"PRO", eof=True)
            expected[port] = "closed"
            # A connection that leaves without a byte (a health check) is no INFO line.
            _elapsed, empty_port = await refused_client(server, b"", eof=True)
            # Two connections that stop in the middle of their header take both slots; a prompt
            # client whose header comes in two segments evicts the older one, the other one
            # times out.
            partial = header_bytes(attacker_source(0))[:10]
            async with await server.connect() as older, await server.connect() as younger:
                expected[older.extra(SocketAttribute.local_port)] = "evicted"
                expected[younger.extra(SocketAttribute.local_port)] = "within"
                await older.send(partial)
                await younger.send(partial)
                await server.wait_until(lambda stats: stats.in_flight == 2)
                await anyio.sleep(3 * age)
                await legit_client(server, 0, split_gap=0.01)
                assert await read_until_closed(older) == b""
                assert await read_until_closed(younger) == b""
            stats = await server.settled()
    assert (stats.evicted, stats.timed_out, stats.accepted) == (1, 1, 1)
    records = [r for r in caplog.records if r.name == "proxyproto" and r.levelno >= logging.INFO]
    assert len(records) == len(expected), [r.getMessage() for r in records]
    for port, phrase in expected.items():
        peer = f"{HOST}:{port}"
        mine = [r for r in records if peer in r.getMessage()]
        assert len(mine) == 1, (peer, [r.getMessage() for r in records])
        record = mine[0]
        message = record.getMessage()
        assert phrase in message, message
        assert "\n" not in message
        assert record.exc_info is None, message
        assert record.exc_text is None
        assert record.levelno <= logging.WARNING, "a remote error is not a server error"
    [empty] = [r for r in caplog.records if f"{HOST}:{empty_port}" in r.getMessage()]
    assert empty.levelno == logging.DEBUG
    assert "before sending a byte" in empty.getMessage()


@pytest.mark.anyio
@pytest.mark.parametrize("leave", ["close", "reset"])
async def test_a_health_check_that_connects_and_leaves_is_counted_as_empty_at_debug(
    caplog: pytest.LogCaptureFixture, leave: str
) -> None:
    """HAProxy's checks connect, then close or reset without a byte: routine, so DEBUG."""
    caplog.set_level(logging.DEBUG, logger="proxyproto")
    checks = 3
    ports: set[int] = set()
    with anyio.fail_after(TEST_DEADLINE):
        async with serving(pp.ProxyProtocolConfig()) as server:
            for n in range(checks):
                if leave == "close":
                    _elapsed, port = await refused_client(server, b"", eof=True)
                else:
                    port = await reset_client(server)
                ports.add(port)
                await server.wait_until(functools.partial(empty_is, n + 1))
            stats = await server.settled()
    assert stats.rejected == {"empty": checks}
    records = [r for r in caplog.records if r.name == "proxyproto"]
    assert [r.levelno for r in records] == [logging.DEBUG] * checks, [
        r.getMessage() for r in records
    ]
    named = {f"{HOST}:{port}" for port in ports}
    for record in records:
        message = record.getMessage()
        peer, _, reason = message.removeprefix("refused connection from ").partition(": ")
        assert reason == "closed or reset before sending a byte", message
        if leave == "close":
            assert peer in named, message
        else:
            # anyio keeps no address from accept(): a reset that beats the server's look at
            # the socket leaves no peer to name.
            assert peer in named | {"an unknown peer"}, message


@pytest.mark.anyio
async def test_a_header_of_a_version_not_accepted_is_logged_as_such(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxyproto")
    config = pp.ProxyProtocolConfig(versions={2})
    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            _elapsed, port = await refused_client(server, header_bytes(legit_source(0), version=1))
            stats = await server.settled()
    assert stats.rejected == {"missing": 1}
    [record] = [r for r in caplog.records if r.name == "proxyproto"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"refused connection from {HOST}:{port}: a PROXY v1 header, but only v2 is accepted,"
        " and its policy (REQUIRE) needs one"
    )


@pytest.mark.anyio
async def test_statistics_add_up() -> None:
    timeout = 1.0
    config = pp.ProxyProtocolConfig(header_timeout=timeout, max_pending_handshakes=64)
    proxied, local, unknown, silent, resets = 8, 2, 2, 2, 2
    invalid = [data for _id, data, reason in INVALID if reason == "invalid"][:3]
    missing = [data for _id, data, reason in INVALID if reason == "missing"]
    early_eof = [data for _id, data in EARLY_EOF][:2]

    async def direct_client(first: bytes) -> None:
        result = await exchange(server, first)
        # LOCAL and UNKNOWN keep the real addresses.
        assert tuple(result.reply["source"]) == result.address

    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server, anyio.create_task_group() as silent_group:
            silent_streams = [await server.connect() for _ in range(silent)]
            for stream in silent_streams:
                silent_group.start_soon(read_until_closed, stream)
            async with anyio.create_task_group() as task_group:
                for n in range(proxied):
                    task_group.start_soon(legit_client, server, n)
                for _ in range(local):
                    task_group.start_soon(direct_client, pp.Header.local().to_bytes())
                for _ in range(unknown):
                    task_group.start_soon(direct_client, pp.Header.unknown().to_bytes())
                for data in invalid + missing:
                    task_group.start_soon(refused_client, server, data)
                for data in early_eof:
                    task_group.start_soon(functools.partial(refused_client, server, data, eof=True))
                for _ in range(resets):
                    task_group.start_soon(reset_client, server)
            # Everyone but the silent clients is done (a reset client leaves before the server
            # has seen it: count outcomes, not clients still connected).
            done = proxied + local + unknown + len(invalid + missing + early_eof) + resets
            await server.wait_until(
                lambda stats: (
                    stats.accepted + sum(stats.rejected.values()) == done
                    and stats.in_flight == silent
                )
            )
            during = server.statistics()
            final = await server.settled()
            for stream in silent_streams:
                await stream.aclose()
    accepted = proxied + local + unknown
    for stats, timed_out, in_flight in ((during, 0, silent), (final, silent, 0)):
        rejected = dict(stats.rejected)
        # A reset before a byte is "empty", whether it beats the server's look at its address
        # or breaks a receive; so is an EOF before a byte.
        assert rejected == {
            "invalid": len(invalid),
            "missing": len(missing),
            "empty": 1 + resets,
            "closed": 1,
        }, stats
        assert (stats.accepted, stats.direct) == (accepted, local + unknown), stats
        assert (stats.timed_out, stats.evicted, stats.in_flight) == (timed_out, 0, in_flight)
    assert len(server.seen) == accepted


@pytest.mark.anyio
@pytest.mark.parametrize(
    "first",
    [
        V2_SIGNATURE + b"\x20\x11\x00\x00",  # LOCAL, family INET, no address block
        V2_SIGNATURE + b"\x20\x41\x00\x03\x04\x00\x00",  # LOCAL, undefined family, a NOOP
    ],
    ids=["inet-length-0", "undefined-family"],
)
async def test_local_whatever_its_family_is_a_direct_connection(first: bytes) -> None:
    # Issue 9: spec 2.2 says the receiver must accept LOCAL, its family ignored.
    with anyio.fail_after(TEST_DEADLINE):
        async with serving(pp.ProxyProtocolConfig()) as server:
            result = await exchange(server, first)
            stats = await server.settled()
    assert tuple(result.reply["source"]) == result.address
    assert (stats.accepted, stats.direct) == (1, 1)


# --- handler exceptions ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_handler_exception_propagates_out_of_serve() -> None:
    """A handler's exception ends ``serve`` (anyio's listeners do the same).

    On its way out it cancels the task group the connections run in: the other handlers are
    cancelled (a handler that closes its stream with ``async with`` leaves nothing open) and so
    are pending handshakes, which are closed without being counted as refused. The listener
    itself stays open: ``serve`` can be called again.
    """
    in_handler = anyio.Event()
    outcome: dict[str, bytes] = {}

    async def handler(stream: pp.ProxiedStream) -> None:
        async with stream:
            if await stream.receive() == b"boom":
                raise ValueError("boom")
            in_handler.set()
            await anyio.sleep_forever()

    async def client(name: str, first: bytes) -> None:
        async with await anyio.connect_tcp(HOST, port) as stream:
            if first:
                await stream.send(first)
            outcome[name] = await read_until_closed(stream)

    async def bomber() -> None:
        await in_handler.wait()
        await listener_ready(lambda stats: stats.in_flight == 1)  # the silent one
        await client("bomber", header_bytes(legit_source(1)) + b"boom")

    async def listener_ready(predicate: Callable[[pp.ListenerStatistics], bool]) -> None:
        while not predicate(listener.statistics()):
            await anyio.sleep(0.01)

    config = pp.ProxyProtocolConfig(header_timeout=10.0)
    inner = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    listener = pp.ProxyProtocolListener(inner, config)
    port = listener.extra(SocketAttribute.local_port)
    with anyio.fail_after(TEST_DEADLINE):
        async with listener:
            async with anyio.create_task_group() as clients:
                clients.start_soon(client, "other", header_bytes(legit_source(0)) + b"hello")
                clients.start_soon(client, "silent", b"")
                clients.start_soon(bomber)
                with pytest.RaisesGroup(
                    pytest.RaisesExc(ValueError, match="^boom$"), flatten_subgroups=True
                ):
                    await listener.serve(handler)
            assert outcome == {"other": b"", "silent": b"", "bomber": b""}
            stats = listener.statistics()
            assert stats == pp.ListenerStatistics(
                accepted=2, direct=0, rejected={}, timed_out=0, evicted=0, in_flight=0
            )
            # Serving again works.
            server = Server(listener, port)
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(listener.serve, server.reply_digest)
                await legit_client(server, 2)
                task_group.cancel_scope.cancel()
    assert server.seen == [legit_source(2)]


# --- ready_streams() ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("max_buffer_size", [0, 8])
async def test_ready_streams_skips_silent_clients_and_closes_what_is_not_taken(
    max_buffer_size: int,
) -> None:
    timeout, clients, taken = 5.0, 5, 3
    config = pp.ProxyProtocolConfig(header_timeout=timeout)
    inner = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    listener = pp.ProxyProtocolListener(inner, config)
    port = listener.extra(SocketAttribute.local_port)
    still_open: list[str] = []

    async def closed_soon(name: str, stream: SocketStream, expected: bytes) -> None:
        with anyio.move_on_after(timeout / 2) as scope:
            assert await read_until_closed(stream) == expected, name
        if scope.cancelled_caught:
            still_open.append(name)

    with anyio.fail_after(TEST_DEADLINE):
        async with listener, contextlib.AsyncExitStack() as streams_stack:
            silent = await streams_stack.enter_async_context(await anyio.connect_tcp(HOST, port))
            prompt = []
            for n in range(clients):
                stream = await streams_stack.enter_async_context(
                    await anyio.connect_tcp(HOST, port)
                )
                await stream.send(header_bytes(legit_source(n)) + b"hello")
                prompt.append(stream)
            got = []
            async with listener.ready_streams(max_buffer_size) as ready:
                with anyio.fail_after(timeout / 2):  # the silent client blocks no one
                    async for proxied in ready:
                        async with proxied:
                            got.append(proxied.extra(SocketAttribute.remote_address))
                            assert await proxied.receive() == b"hello"
                            await proxied.send(b"bye")
                        if len(got) == taken:
                            break
                assert listener.statistics().in_flight == 1  # the silent one, still pending
                # The others are handshaken, waiting to be taken, when the block exits.
                while listener.statistics().accepted < clients:
                    await anyio.sleep(0.01)
            open_send_streams = ready.statistics().open_send_streams
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(closed_soon, "silent", silent, b"")
                for n, stream in enumerate(prompt):
                    name = f"client {n} ({'taken' if n < taken else 'not taken'})"
                    task_group.start_soon(closed_soon, name, stream, b"bye" if n < taken else b"")
            in_flight = listener.statistics().in_flight
    # Whatever ready_streams() left unclosed warns when collected: make that happen in this test
    # (before any assertion can fail and keep it alive into the next one).
    del ready, proxied
    gc.collect()
    assert sorted(got) == sorted(legit_source(n) for n in range(taken))
    assert not still_open, f"left open when ready_streams() exited: {still_open}"
    # The sending side is closed too (anyio warns about unclosed memory streams).
    assert open_send_streams == 0
    assert in_flight == 0


# --- the listener's attributes, multi-listeners, aclose() --------------------------------------


async def tcp_listeners() -> list[tuple[SocketListener, Address]]:
    """TCP listeners on 127.0.0.1 and, when the machine has it, ::1, with their addresses."""
    listeners: list[Listener[SocketStream]] = []
    listeners.append(await anyio.create_tcp_listener(local_host=HOST, local_port=0))
    with contextlib.suppress(OSError):
        listeners.append(await anyio.create_tcp_listener(local_host="::1", local_port=0))
    result = []
    for sub in MultiListener(listeners).listeners:  # flattens create_tcp_listener's own
        assert isinstance(sub, SocketListener)
        address = sub.extra(SocketAttribute.local_address)
        assert isinstance(address, tuple)
        result.append((sub, (address[0], address[1])))
    return result


@pytest.mark.anyio
async def test_extra_attributes_multi_listener_and_aclose() -> None:
    listeners = await tcp_listeners()
    inner = MultiListener([sub for sub, _address in listeners])
    listener = pp.ProxyProtocolListener(inner, pp.ProxyProtocolConfig(header_timeout=5.0))
    assert listener.extra_attributes.keys() == inner.extra_attributes.keys()
    for attribute in (SocketAttribute.local_address, SocketAttribute.local_port):
        assert listener.extra(attribute) == inner.extra(attribute)
    server = Server(listener, port=0)
    with anyio.fail_after(TEST_DEADLINE):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, server.reply_digest)
            for n, (_sub, (host, port)) in enumerate(listeners):
                async with await anyio.connect_tcp(host, port) as stream:
                    await stream.send(header_bytes(legit_source(n)) + b"ping")
                    await stream.send_eof()
                    reply = json.loads(await read_until_closed(stream))
                assert tuple(reply["source"]) == legit_source(n)
                assert tuple(reply["local"]) == (host, port)  # the real one
            task_group.cancel_scope.cancel()
        await listener.aclose()
        for sub, (host, port) in listeners:
            with pytest.raises(anyio.ClosedResourceError):
                await sub.accept()
            with pytest.raises(OSError, match="connection attempts failed") as refused:
                await anyio.connect_tcp(host, port)
            assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    assert len(server.seen) == len(listeners)


# --- a policy callable that raises -------------------------------------------------------------


@pytest.mark.anyio
async def test_policy_that_raises_is_a_server_bug_logged_with_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="proxyproto")
    calls = 0

    def policy(peer: pp.PeerAddress) -> pp.Policy:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("policy bug")
        if calls == 2:
            return "require"  # type: ignore[return-value]  # not a Policy: also a bug
        return pp.Policy.REQUIRE

    # The timeout is beyond the test's deadline: only the policy's error can refuse.
    config = pp.ProxyProtocolConfig(header_timeout=10 * TEST_DEADLINE, policy=policy)
    with anyio.fail_after(TEST_DEADLINE):
        async with serving(config) as server:
            ports = []
            for n in range(2):
                _elapsed, port = await refused_client(server, header_bytes(legit_source(n)))
                ports.append(port)
            for n in range(2, 5):  # the listener keeps serving
                await legit_client(server, n)
            stats = await server.settled()
    assert stats.rejected == {"error": 2}
    assert stats.accepted == 3
    assert sorted(server.seen) == sorted(legit_source(n) for n in range(2, 5))
    records = [r for r in caplog.records if r.name == "proxyproto"]
    assert len(records) == 2, [r.getMessage() for r in records]
    for record, port, error in zip(records, ports, (RuntimeError, TypeError), strict=True):
        assert f"{HOST}:{port}" in record.getMessage()
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
        assert record.exc_info[0] is error
