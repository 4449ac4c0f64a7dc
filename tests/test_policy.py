"""The policy layer as pure functions: ``decide``, ``resolve``, ``carries_address``, and
``trusted_proxies``. No I/O: the same table on the wire is in ``test_anyio_stream.py``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

import proxyproto as pp
from proxyproto._handshake.engine import Refusal, judge_header, judge_reading
from proxyproto._handshake.policy import (
    Action,
    Policy,
    carries_address,
    decide,
    resolve,
)
from wire import v2

REQUIRE, USE, IGNORE, REJECT, SKIP = (
    pp.Policy.REQUIRE,
    pp.Policy.USE,
    pp.Policy.IGNORE,
    pp.Policy.REJECT,
    pp.Policy.SKIP,
)
PROXIED, DIRECT, CLOSE = Action.PROXIED, Action.DIRECT, Action.CLOSE

PROXY_V2 = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443))
PROXY_V1 = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443), version=1)
PROXY_V6 = pp.Header.proxy(("2001:db8::7", 1), ("2001:db8::1", 443))
PROXY_UNIX = pp.Header.proxy("/run/client.sock", "/run/app.sock")
LOCAL = pp.Header.local()
UNKNOWN = pp.Header.unknown()
UNSPEC = pp.parse(v2(0x21, 0x00, b""))[0]
#: A LOCAL header with an INET family byte and no address block: the spec says the family is
#: ignored (2.2), so it changes nothing either.
LOCAL_WITH_A_FAMILY = pp.parse(v2(0x20, 0x11, b""))[0]

HEADERS = {
    "v2 PROXY TCP4": PROXY_V2,
    "v1 TCP4": PROXY_V1,
    "v2 PROXY TCP6": PROXY_V6,
    "v2 PROXY UNIX": PROXY_UNIX,
    "v2 LOCAL": LOCAL,
    "v1 UNKNOWN": UNKNOWN,
    "v2 PROXY UNSPEC": UNSPEC,
    "v2 LOCAL with a family": LOCAL_WITH_A_FAMILY,
}
#: The ones that replace the connection's addresses.
WITH_ADDRESSES = {"v2 PROXY TCP4", "v1 TCP4", "v2 PROXY TCP6", "v2 PROXY UNIX"}

# ================================================================================ decide

#: The table at the top of proxyproto/_handshake/policy.py. Columns: what arrived.
#:   header   a valid header (whatever its command: LOCAL is a header too)
#:   broken   no header, but a whole signature arrived (invalid, cut short, or silent after it)
#:   none     no header and no whole signature (other bytes, EOF, silence)
TABLE = {
    #          header   broken  none
    REQUIRE: (PROXIED, CLOSE, CLOSE),
    USE: (PROXIED, CLOSE, DIRECT),
    IGNORE: (DIRECT, CLOSE, DIRECT),
    REJECT: (CLOSE, CLOSE, DIRECT),
    SKIP: (DIRECT, DIRECT, DIRECT),
}


@pytest.mark.parametrize("header", HEADERS.values(), ids=HEADERS.keys())
@pytest.mark.parametrize("policy", list(pp.Policy), ids=lambda p: p.name)
def test_decide_with_a_header(policy: pp.Policy, header: pp.Header) -> None:
    action, reason = decide(policy, header, signature_seen=True)
    assert action is TABLE[policy][0]
    assert bool(reason) is (action is CLOSE)


@pytest.mark.parametrize("policy", list(pp.Policy), ids=lambda p: p.name)
def test_decide_with_a_broken_header(policy: pp.Policy) -> None:
    action, reason = decide(policy, None, signature_seen=True)
    assert action is TABLE[policy][1]
    assert bool(reason) is (action is CLOSE)
    if action is CLOSE:
        assert "broken" in reason


@pytest.mark.parametrize("policy", list(pp.Policy), ids=lambda p: p.name)
def test_decide_without_a_header(policy: pp.Policy) -> None:
    action, reason = decide(policy, None, signature_seen=False)
    assert action is TABLE[policy][2]
    assert bool(reason) is (action is CLOSE)
    if action is CLOSE:
        assert "REQUIRE" in reason


def test_decide_reasons_name_the_policy() -> None:
    assert "REJECT" in decide(REJECT, PROXY_V2, signature_seen=True)[1]
    assert "REQUIRE" in decide(REQUIRE, None, signature_seen=False)[1]


def test_decide_covers_every_policy() -> None:
    assert set(TABLE) == set(pp.Policy)


# =============================================================================== resolve


@pytest.mark.parametrize("policy", list(pp.Policy), ids=lambda p: p.name)
def test_resolve_a_policy_is_itself(policy: pp.Policy) -> None:
    assert resolve(policy, ("192.0.2.1", 1)) is policy
    assert resolve(policy, None) is policy


@pytest.mark.parametrize("peer", [("192.0.2.1", 1), ("::1", 2), "/run/proxy.sock", None])
def test_resolve_calls_a_callable_with_the_peer(peer: pp.PeerAddress) -> None:
    calls: list[pp.PeerAddress] = []

    def policy(seen: pp.PeerAddress) -> pp.Policy:
        calls.append(seen)
        return IGNORE

    assert resolve(policy, peer) is IGNORE
    assert calls == [peer]


@pytest.mark.parametrize("returned", ["use", None, 1, True, Action.PROXIED])
def test_resolve_refuses_a_callable_that_returns_no_policy(returned: Any) -> None:
    with pytest.raises(TypeError, match="must return a Policy"):
        resolve(lambda peer: returned, ("192.0.2.1", 1))


def test_resolve_lets_the_callables_own_errors_through() -> None:
    def policy(peer: pp.PeerAddress) -> pp.Policy:
        raise LookupError("no such tenant")

    with pytest.raises(LookupError, match="no such tenant"):
        resolve(policy, ("192.0.2.1", 1))


# ======================================================================= carries_address


@pytest.mark.parametrize("name", [*HEADERS, "no header"])
def test_carries_address(name: str) -> None:
    assert carries_address(HEADERS.get(name)) is (name in WITH_ADDRESSES)


def test_carries_address_for_parsed_headers() -> None:
    for header in (PROXY_V2, PROXY_V1, PROXY_UNIX):
        assert carries_address(pp.parse(header.to_bytes())[0])
    assert not carries_address(pp.parse(b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n")[0])


# ======================================================================= trusted_proxies


@pytest.mark.parametrize(
    ("cidrs", "peer", "trusted"),
    [
        pytest.param(*case, id=f"{case[1]!r} in {case[0]}")
        for case in [
            # exact addresses
            (["192.0.2.7"], ("192.0.2.7", 1), True),
            (["192.0.2.7"], ("192.0.2.8", 1), False),
            (["2001:db8::7"], ("2001:db8::7", 1), True),
            (["2001:db8::7"], ("2001:db8::8", 1), False),
            # IPv4 networks, edges included
            (["10.0.0.0/8"], ("10.0.0.0", 1), True),
            (["10.0.0.0/8"], ("10.255.255.255", 1), True),
            (["10.0.0.0/8"], ("11.0.0.0", 1), False),
            (["10.0.0.0/8"], ("9.255.255.255", 1), False),
            (["10.0.0.0/8", "192.168.1.0/24"], ("192.168.1.200", 1), True),
            (["10.0.0.0/8", "192.168.1.0/24"], ("192.168.2.1", 1), False),
            (["0.0.0.0/0"], ("198.51.100.1", 1), True),
            (["0.0.0.0/0"], ("2001:db8::1", 1), False),
            # IPv6 networks
            (["2001:db8::/32"], ("2001:db8:ffff::1", 1), True),
            (["2001:db8::/32"], ("2001:db9::1", 1), False),
            (["::/0"], ("2001:db8::1", 1), True),
            (["::/0"], ("192.0.2.1", 1), False),
            (["::1"], ("::1", 1), True),
            (["::1"], ("127.0.0.1", 1), False),
            (["127.0.0.0/8"], ("::1", 1), False),
            # an IPv4-mapped IPv6 peer (a dual-stack socket's IPv4 client) matches IPv4 networks
            (["10.0.0.0/8"], ("::ffff:10.1.2.3", 1), True),
            (["10.0.0.0/8"], ("::ffff:11.1.2.3", 1), False),
            (["192.0.2.7"], ("::ffff:192.0.2.7", 1), True),
            # ... and the IPv4-mapped IPv6 network that holds it, as the socket reports it
            (["::ffff:10.0.0.0/104"], ("::ffff:10.1.2.3", 1), True),
            # scoped IPv6 (link-local): the scope does not change the address
            (["fe80::/10"], ("fe80::1%eth0", 1), True),
            (["fe80::/10"], ("fe80::1%2", 1), True),
            (["fe80::1"], ("fe80::1%lo", 1), True),
            (["fe80::/10"], ("fe81::1%eth0", 1), True),
            (["fe80::/64"], ("fe80:0:0:1::1%eth0", 1), False),
            # not IP addresses at all: otherwise
            (["0.0.0.0/0", "::/0"], "/run/haproxy.sock", False),
            (["0.0.0.0/0", "::/0"], None, False),
            (["0.0.0.0/0", "::/0"], ("not-an-address", 1), False),
            (["0.0.0.0/0", "::/0"], ("", 1), False),
            ([], ("192.0.2.1", 1), False),
        ]
    ],
)
def test_trusted_proxies_matches(cidrs: list[str], peer: pp.PeerAddress, trusted: bool) -> None:
    policy = pp.trusted_proxies(cidrs, trusted=USE, otherwise=SKIP)
    assert policy(peer) is (USE if trusted else SKIP)


def test_trusted_proxies_defaults_are_require_and_reject() -> None:
    policy = pp.trusted_proxies(["10.0.0.0/8"])
    assert policy(("10.1.2.3", 1)) is REQUIRE
    assert policy(("192.0.2.1", 1)) is REJECT


def test_trusted_proxies_takes_address_and_network_objects_and_any_iterable() -> None:
    entries = (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_address("192.0.2.7"),
        ipaddress.ip_network("2001:db8::/32"),
        "198.51.100.0/24",
    )
    policy = pp.trusted_proxies(iter(entries), trusted=USE, otherwise=IGNORE)
    for peer in ("10.9.9.9", "192.0.2.7", "2001:db8::1", "198.51.100.3"):
        assert policy((peer, 1)) is USE
    assert policy(("192.0.2.8", 1)) is IGNORE


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "2001:db8::1/32", "192.0.2.7/24"])
def test_trusted_proxies_refuses_host_bits(bad: str) -> None:
    with pytest.raises(ValueError, match="has host bits set"):
        pp.trusted_proxies(["10.0.0.0/8", bad])


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "example.com", "10.0.0", "", "::g", "::1/129"])
def test_trusted_proxies_refuses_what_is_not_an_address(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ipaddress's own messages
        pp.trusted_proxies(["10.0.0.0/8", bad])


def test_trusted_proxies_refuses_a_single_string() -> None:
    with pytest.raises(TypeError, match="not one string"):
        pp.trusted_proxies("10.0.0.0/8")


@pytest.mark.parametrize(
    "kwargs", [{"trusted": "use"}, {"otherwise": "reject"}, {"trusted": None}, {"otherwise": 1}]
)
def test_trusted_proxies_refuses_non_policies(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="Policy"):
        pp.trusted_proxies(["10.0.0.0/8"], **kwargs)


def test_trusted_proxies_describes_itself() -> None:
    policy = pp.trusted_proxies(["10.0.0.0/8", "::1"], trusted=USE, otherwise=IGNORE)
    assert policy.__doc__ == "USE for 10.0.0.0/8, ::1/128; else IGNORE"


def _parser_fed(
    data: bytes, *, eof: bool = False
) -> tuple[pp.HeaderParser, pp.ProxyProtocolError | None]:
    parser = pp.HeaderParser()
    parser.receive_data(data)
    if eof:
        parser.receive_data(b"")
    try:
        parser.next_event()
    except pp.ProxyProtocolError as error:
        return parser, error
    return parser, None


def _judge(
    policy: Policy,
    parser: pp.HeaderParser,
    error: pp.ProxyProtocolError | None,
    *,
    timed_out: bool,
) -> Action:
    # judge_reading takes the facts a parser knows, not the parser.
    return judge_reading(
        policy,
        parser.header,
        signature_seen=parser.version is not None,
        closed=parser.closed,
        sent_nothing=parser.version is None and not parser.trailing_data,
        error=error,
        timed_out=timed_out,
        header_timeout=1,
    )


@pytest.mark.parametrize(
    ("policy", "data", "eof", "timed_out", "outcome"),
    [
        (Policy.REQUIRE, pp.Header.local().to_bytes(), False, False, Action.PROXIED),
        (Policy.REQUIRE, b"GET /", False, False, "missing"),
        (Policy.REQUIRE, b"", True, False, "empty"),
        (Policy.REQUIRE, b"GE", True, False, "closed"),
        (Policy.REQUIRE, b"", False, True, "timeout"),
        (Policy.USE, b"", False, True, Action.DIRECT),
        (Policy.USE, b"PRO", False, True, Action.DIRECT),
        (Policy.USE, b"PROXY TCP4 1.2", False, True, "timeout"),
        (Policy.USE, b"PROXY TCP4 1.2", True, False, "closed"),
        (Policy.USE, b"PROXY TCP9", False, False, "invalid"),
        (Policy.IGNORE, pp.Header.unknown().to_bytes(), False, False, Action.DIRECT),
        (Policy.REJECT, pp.Header.unknown().to_bytes(), False, False, "policy"),
        (Policy.REJECT, b"GET /", False, False, Action.DIRECT),
    ],
)
def test_judge_reading(
    policy: Policy, data: bytes, eof: bool, timed_out: bool, outcome: Action | str
) -> None:
    # The one decision every adapter (anyio, trio, Uvicorn) takes after reading.
    parser, error = _parser_fed(data, eof=eof)
    if isinstance(outcome, Action):
        assert _judge(policy, parser, error, timed_out=timed_out) is outcome
    else:
        with pytest.raises(Refusal) as refusal:
            _judge(policy, parser, error, timed_out=timed_out)
        assert refusal.value.kind == outcome


@pytest.mark.parametrize("policy", [Policy.REQUIRE, Policy.USE, Policy.IGNORE, Policy.REJECT])
def test_judge_header_is_judge_reading_once_a_header_arrived(policy: Policy) -> None:
    # What the asyncio handshake asks when a whole header came in its first bytes.
    data = pp.Header.proxy(("192.0.2.1", 1), ("192.0.2.2", 2)).to_bytes()
    header, _ = pp.parse(data)
    parser, _ = _parser_fed(data)
    try:
        expected: Action | str = _judge(policy, parser, None, timed_out=False)
    except Refusal as refusal:
        expected = refusal.kind
    try:
        got: Action | str = judge_header(policy, header)
    except Refusal as refusal:
        got = refusal.kind
    assert got == expected
    assert got == (
        "policy" if policy is Policy.REJECT else decide(policy, header, signature_seen=True)[0]
    )
