"""The UDP adapter on real loopback sockets: ProxiedUDPSocket, build_datagram, send_datagram.

Loopback does not lose datagrams at these rates, so the tests count: every valid datagram sent
must arrive, in order, and every invalid one must be counted as dropped. Each wait is bounded.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketAttribute, UDPSocket

import proxyproto as pp
from interop import has_ipv6_loopback

pytestmark = pytest.mark.anyio

#: Bound on every wait for a datagram.
WAIT = 5.0

SERVICE = ("198.51.100.7", 53)


def dgram(source: tuple[str, int], destination: tuple[str, int] = SERVICE) -> pp.Header:
    return pp.Header.proxy(source, destination, transport=pp.Transport.DGRAM)


@asynccontextmanager
async def pair(
    config: pp.ProxyProtocolConfig | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[pp.ProxiedUDPSocket, UDPSocket, tuple[str, int]]]:
    """A proxied server socket, a client socket (the "proxy"), and the server's address."""
    server_udp = await anyio.create_udp_socket(local_host=host, local_port=0)
    client = await anyio.create_udp_socket(local_host=host, local_port=0)
    async with pp.ProxiedUDPSocket(server_udp, config) as server, client:
        address = server.extra(SocketAttribute.local_address)
        assert isinstance(address, tuple)
        yield server, client, (address[0], address[1])


async def receive(server: pp.ProxiedUDPSocket) -> pp.ProxiedDatagram:
    with anyio.fail_after(WAIT):
        return await server.receive()


async def test_interleaved_sources_each_reported_with_its_payload() -> None:
    sources = [("192.0.2.1", 1000), ("2001:db8::7", 2000), ("203.0.113.9", 3000)]
    async with pair() as (server, client, to):
        for i in range(30):
            source = sources[i % 3]
            destination = ("2001:db8::2", 53) if ":" in source[0] else SERVICE
            header = dgram(source, destination)
            await pp.send_datagram(client, header, f"payload {i}".encode(), to)
        me = client.extra(SocketAttribute.local_address)
        for i in range(30):
            datagram = await receive(server)
            assert datagram.source == sources[i % 3]
            assert datagram.payload == f"payload {i}".encode()
            assert datagram.peer == me
            assert datagram.header is not None
            if i % 3 == 1:
                assert datagram.destination == ("2001:db8::2", 53)
    statistics = server.statistics()
    assert (statistics.received, statistics.delivered, statistics.direct) == (30, 30, 0)
    assert statistics.dropped == {}


def _wrong_datagrams() -> list[tuple[str, bytes]]:
    good = pp.build_datagram(dgram(("192.0.2.1", 1)), b"payload")
    stream = pp.Header.proxy(("192.0.2.1", 1), SERVICE, transport=pp.Transport.STREAM)
    bad_version = bytearray(good)
    bad_version[12] = 0x31
    return [
        ("invalid", good[:20]),  # truncated in the addresses
        ("invalid", good[:13]),  # truncated after the signature
        ("invalid", bytes(bad_version)),
        ("invalid", b"PROXY UDP4 192.0.2.1 198.51.100.7 1 53\r\npayload"),
        ("invalid", b"PROXY TCP4 192.0.2.1 198.51.100.7 1 53\r\npayload"),
        ("invalid", stream.to_bytes() + b"payload"),
        ("missing", b"no header at all"),
        ("missing", b"\r\n\r\n"),  # part of a signature is no header (it may be a payload)
    ]


async def test_wrong_datagrams_are_dropped_and_counted_nothing_else_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = _wrong_datagrams()
    async with pair() as (server, client, to):
        valid = 0
        for i in range(40):
            if i % 3 == 0:
                await client.send((wrong[i // 3 % len(wrong)][1], to))
            else:
                await pp.send_datagram(client, dgram(("192.0.2.9", 1024 + i)), b"%d" % i, to)
                valid += 1
        with caplog.at_level(logging.INFO, logger="proxyproto"):
            for i in range(40):
                if i % 3:
                    datagram = await receive(server)
                    assert datagram.source == ("192.0.2.9", 1024 + i)
                    assert datagram.payload == b"%d" % i
            # Nothing else is waiting: a bounded look finds no more deliverable datagrams.
            with anyio.move_on_after(0.2):
                extra = await server.receive()
                raise AssertionError(f"unexpected {extra}")
        statistics = server.statistics()
    expected: dict[str, int] = {}
    for i in range(0, 40, 3):
        kind = wrong[i // 3 % len(wrong)][0]
        expected[kind] = expected.get(kind, 0) + 1
    assert statistics.delivered == valid
    assert statistics.received == 40
    assert statistics.dropped == expected
    dropped_lines = [r for r in caplog.records if r.getMessage().startswith("dropped datagram")]
    assert dropped_lines  # logged, rate-limited
    assert len(dropped_lines) <= sum(expected.values())


async def test_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    async with pair() as (server, client, to):
        for _ in range(50):
            await client.send((b"junk", to))
        await pp.send_datagram(client, dgram(("192.0.2.1", 1)), b"last", to)
        with caplog.at_level(logging.INFO, logger="proxyproto"):
            assert (await receive(server)).payload == b"last"
        assert server.statistics().dropped == {"missing": 50}
    assert 1 <= len(caplog.records) <= 10
    # A missing header is WARNING on UDP as on TCP (the engine's RefusalKind.MISSING.level).
    assert all(r.levelno == logging.WARNING for r in caplog.records)


async def test_local_header_reports_the_peer() -> None:
    async with pair() as (server, client, to):
        await pp.send_datagram(client, pp.Header.local(), b"health", to)
        datagram = await receive(server)
    assert datagram.source == datagram.peer
    assert datagram.destination is None
    assert datagram.header == pp.Header.local()
    assert server.statistics().direct == 1


@pytest.mark.parametrize(
    ("policy", "headerless", "with_header"),
    [
        (pp.Policy.REQUIRE, None, "proxied"),
        (pp.Policy.USE, "direct", "proxied"),
        (pp.Policy.IGNORE, "direct", "stripped"),
        (pp.Policy.REJECT, "direct", None),
        (pp.Policy.SKIP, "direct", "raw"),
    ],
)
async def test_policies(policy: pp.Policy, headerless: str | None, with_header: str | None) -> None:
    header = dgram(("192.0.2.1", 1))
    async with pair(pp.ProxyProtocolConfig(policy=policy)) as (server, client, to):
        await client.send((b"plain", to))
        await pp.send_datagram(client, header, b"proxied", to)
        # The marker that ends the test must get through: headerless except under REQUIRE.
        end = pp.build_datagram(header, b"end") if policy is pp.Policy.REQUIRE else b"end"
        await client.send((end, to))
        me = client.extra(SocketAttribute.local_address)
        received = []
        while True:
            datagram = await receive(server)
            if datagram.payload == b"end":
                break
            received.append(datagram)
    if headerless is not None:
        plain = received.pop(0)
        assert (plain.payload, plain.source, plain.header) == (b"plain", me, None)
    if with_header is None:
        assert received == []
        assert server.statistics().dropped == {"policy": 1}
        return
    (datagram,) = received
    if with_header == "proxied":
        assert (datagram.payload, datagram.source) == (b"proxied", ("192.0.2.1", 1))
        assert datagram.destination == SERVICE
        assert datagram.header == header
    elif with_header == "stripped":
        assert (datagram.payload, datagram.source, datagram.header) == (b"proxied", me, header)
        assert datagram.destination is None
    else:
        assert datagram.payload == header.to_bytes() + b"proxied"
        assert (datagram.source, datagram.header) == (me, None)
    if headerless is None:
        assert server.statistics().dropped == {"missing": 1}


async def test_trusted_proxies_per_sender() -> None:
    # 127.0.0.1 is trusted; nobody else is, so forged headers from elsewhere would be dropped.
    config = pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["127.0.0.0/8"]))
    async with pair(config) as (server, client, to):
        await client.send((b"no header", to))
        await pp.send_datagram(client, dgram(("192.0.2.1", 1)), b"ok", to)
        datagram = await receive(server)
    assert datagram.source == ("192.0.2.1", 1)
    assert server.statistics().dropped == {"missing": 1}

    config = pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["10.0.0.0/8"]))
    async with pair(config) as (server, client, to):
        await pp.send_datagram(client, dgram(("192.0.2.1", 1)), b"forged", to)
        await client.send((b"direct", to))
        datagram = await receive(server)
    assert (datagram.payload, datagram.header) == (b"direct", None)
    assert server.statistics().dropped == {"policy": 1}


async def test_validator_and_raising_policy(caplog: pytest.LogCaptureFixture) -> None:
    async def validator(header: pp.Header, peer: pp.PeerAddress) -> bool:
        return header.source == ("192.0.2.1", 1)

    async with pair(pp.ProxyProtocolConfig(validator=validator)) as (server, client, to):
        await pp.send_datagram(client, dgram(("192.0.2.2", 1)), b"refused", to)
        await pp.send_datagram(client, dgram(("192.0.2.1", 1)), b"accepted", to)
        assert (await receive(server)).payload == b"accepted"
    assert server.statistics().dropped == {"validator": 1}

    def policy(peer: pp.PeerAddress) -> pp.Policy:
        raise RuntimeError("a bug in the policy")

    async with pair(pp.ProxyProtocolConfig(policy=policy)) as (server, client, to):
        await client.send((b"x", to))
        with caplog.at_level(logging.ERROR, logger="proxyproto"), anyio.move_on_after(0.3):
            await server.receive()
            raise AssertionError("delivered despite a failing policy")
    assert server.statistics().dropped == {"error": 1}
    assert any(r.exc_info for r in caplog.records)


async def test_max_header_size() -> None:
    header = pp.Header.proxy(
        ("192.0.2.1", 1),
        SERVICE,
        transport=pp.Transport.DGRAM,
        tlvs=pp.TLVs(unique_id=b"u" * 100),
    )
    async with pair(pp.ProxyProtocolConfig(max_header_size=64)) as (server, client, to):
        await pp.send_datagram(client, header, b"big", to)
        await pp.send_datagram(client, dgram(("192.0.2.1", 1)), b"small", to)
        assert (await receive(server)).payload == b"small"
    assert server.statistics().dropped == {"invalid": 1}


async def test_replies_reach_the_real_peer() -> None:
    async with pair() as (server, client, to):
        await pp.send_datagram(client, dgram(("192.0.2.1", 1000)), b"question", to)
        datagram = await receive(server)
        await server.reply(datagram, b"answer")
        await server.reply(datagram, b"with header", with_header=True)
        await server.send(b"raw", datagram.peer)
        with anyio.fail_after(WAIT):
            answer, sender = await client.receive()
            mirrored, _ = await client.receive()
            raw, _ = await client.receive()
    assert (answer, sender) == (b"answer", to)
    header, payload = pp.parse_datagram(mirrored)
    assert payload == b"with header"
    assert (header.source, header.destination) == (SERVICE, ("192.0.2.1", 1000))
    assert header.transport is pp.Transport.DGRAM
    assert raw == b"raw"


async def test_reply_with_header_needs_addresses() -> None:
    async with pair(pp.ProxyProtocolConfig(policy=pp.Policy.USE)) as (server, client, to):
        await client.send((b"direct", to))
        datagram = await receive(server)
        with pytest.raises(pp.HeaderEncodingError):
            await server.reply(datagram, b"x", with_header=True)


async def test_async_iteration_ends_when_closed() -> None:
    async with pair() as (server, client, to):
        for i in range(3):
            await pp.send_datagram(client, dgram(("192.0.2.1", i + 1)), b"%d" % i, to)
        seen = []
        with anyio.fail_after(WAIT):
            async for datagram in server:
                seen.append(datagram.payload)
                if len(seen) == 3:
                    await server.aclose()
    assert seen == [b"0", b"1", b"2"]


async def test_async_iteration_ends_when_another_task_closes() -> None:
    async with pair() as (server, _client, _to):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as task_group:

                async def close_soon() -> None:
                    await anyio.sleep(0.1)
                    await server.aclose()

                task_group.start_soon(close_soon)
                async for datagram in server:
                    raise AssertionError(f"unexpected {datagram}")


async def test_extra_attributes_are_the_sockets() -> None:
    async with pair() as (server, _client, to):
        assert server.extra(SocketAttribute.local_port) == to[1]
        assert server.extra(SocketAttribute.raw_socket) is server.transport_socket.extra(
            SocketAttribute.raw_socket
        )


async def test_ipv6_loopback() -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) on this machine")
    async with pair(host="::1") as (server, client, to):
        await pp.send_datagram(client, dgram(("2001:db8::1", 5000), ("2001:db8::2", 53)), b"v6", to)
        datagram = await receive(server)
        await server.reply(datagram, b"back")
        with anyio.fail_after(WAIT):
            answer, _ = await client.receive()
    assert datagram.source == ("2001:db8::1", 5000)
    assert datagram.peer[0] == "::1"
    assert len(datagram.peer) == 2
    assert answer == b"back"


async def test_send_datagram_on_a_connected_socket() -> None:
    async with pair() as (server, _client, to):
        async with await anyio.create_connected_udp_socket(to[0], to[1]) as connected:
            await pp.send_datagram(connected, dgram(("192.0.2.1", 1)), b"connected")
            with pytest.raises(TypeError):
                await pp.send_datagram(connected, dgram(("192.0.2.1", 1)), b"x", to)
        assert (await receive(server)).payload == b"connected"
        with pytest.raises(TypeError):
            await pp.send_datagram(_client, dgram(("192.0.2.1", 1)), b"x")


def test_build_datagram_round_trip() -> None:
    header = dgram(("192.0.2.1", 5353))
    datagram = pp.build_datagram(header, b"payload", crc32c=True)
    parsed, payload = pp.parse_datagram(datagram)
    assert payload == b"payload"
    assert (parsed.source, parsed.transport) == (header.source, pp.Transport.DGRAM)
    assert parsed.tlvs.crc32c is not None
    local = pp.build_datagram(pp.Header.local(), b"x")
    assert pp.parse_datagram(local) == (pp.Header.local(), b"x")


@pytest.mark.parametrize(
    "header",
    [
        pp.Header.proxy(("192.0.2.1", 1), SERVICE),  # STREAM
        pp.Header.proxy(("192.0.2.1", 1), SERVICE, version=1),
        pp.Header.unknown(),
        pp.Header.proxy("/tmp/a", "/tmp/b", transport=pp.Transport.STREAM),
    ],
    ids=["stream", "v1", "v1-unknown", "unix-stream"],
)
def test_build_datagram_refuses_non_dgram_headers(header: pp.Header) -> None:
    with pytest.raises(pp.HeaderEncodingError):
        pp.build_datagram(header, b"payload")


async def test_a_validator_past_the_deadline_is_a_timeout(caplog: pytest.LogCaptureFixture) -> None:
    # As on every TCP surface: a validator still running at header_timeout is "timeout", at INFO.
    release = anyio.Event()

    async def validator(header: pp.Header, peer: pp.PeerAddress) -> bool:
        if header.source == ("192.0.2.1", 1):
            await release.wait()  # never set: slower than any deadline
        return True

    config = pp.ProxyProtocolConfig(validator=validator, header_timeout=0.1)
    async with pair(config) as (server, client, to):
        await pp.send_datagram(client, dgram(("192.0.2.1", 1)), b"slow", to)
        await pp.send_datagram(client, dgram(("192.0.2.2", 1)), b"quick", to)
        with caplog.at_level(logging.INFO, logger="proxyproto"):
            assert (await receive(server)).payload == b"quick"
    assert server.statistics().dropped == {"timeout": 1}
    [record] = [r for r in caplog.records if "the validator took more than" in r.getMessage()]
    assert record.levelno == logging.INFO
