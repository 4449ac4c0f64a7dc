"""The handshake engine on its own, sans-IO: refusal kinds and levels, the handshake fed whole and
byte by byte, the validator's verdicts, the counters, the rate-limited log, admission and eviction.
Every surface calls these; the same behaviour on the wire is in each surface's tests."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import proxyproto as pp
from proxyproto._handshake import engine
from proxyproto._handshake.engine import (
    Admission,
    Counters,
    Handshake,
    Refusal,
    RefusalKind,
    RefusalLog,
    Ticket,
    validate,
)
from proxyproto._handshake.policy import Action

HEADER = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443))
PEER = ("192.0.2.1", 40000)


def test_kinds_are_the_counter_keys_with_their_levels() -> None:
    assert {kind.value: kind.level for kind in RefusalKind} == {
        "empty": logging.DEBUG,
        "missing": logging.WARNING,
        "invalid": logging.WARNING,
        "closed": logging.INFO,
        "policy": logging.WARNING,
        "validator": logging.WARNING,
        "timeout": logging.INFO,
        "evicted": logging.INFO,
        "error": logging.INFO,
    }
    assert Refusal("policy", "no").kind is RefusalKind.POLICY


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        (RefusalKind.TIMEOUT, TimeoutError),
        (RefusalKind.POLICY, pp.HeaderRejected),
        (RefusalKind.VALIDATOR, pp.HeaderRejected),
        (RefusalKind.MISSING, pp.InvalidHeader),
        (RefusalKind.CLOSED, pp.InvalidHeader),
    ],
)
def test_what_wrap_raises(kind: RefusalKind, error: type[Exception]) -> None:
    raised = Refusal(kind, "reason").as_error()
    assert type(raised) is error
    assert str(raised) == "reason"


def _fed(data: bytes, *, eof: bool, split: bool, policy: pp.Policy) -> Handshake:
    handshake = Handshake(pp.ProxyProtocolConfig(policy=policy), PEER)
    chunks = [data[i : i + 1] for i in range(len(data))] if split else [data]
    for chunk in [c for c in chunks if c] + ([b""] if eof else []):
        if handshake.receive_data(chunk):
            break
    return handshake


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize(
    ("policy", "data", "eof", "timed_out", "outcome"),
    [
        (pp.Policy.REQUIRE, HEADER.to_bytes() + b"GET /", False, False, Action.PROXIED),
        (pp.Policy.REQUIRE, b"GET /", False, False, "missing"),
        (pp.Policy.REQUIRE, b"", True, False, "empty"),
        (pp.Policy.REQUIRE, b"PROXY TCP4 1.2", True, False, "closed"),
        (pp.Policy.REQUIRE, b"", False, True, "timeout"),
        (pp.Policy.USE, b"", False, True, Action.DIRECT),
        (pp.Policy.USE, b"GET /", False, False, Action.DIRECT),
        (pp.Policy.USE, b"PROXY TCP9 ", False, False, "invalid"),
        (pp.Policy.IGNORE, HEADER.to_bytes(), False, False, Action.DIRECT),
        (pp.Policy.REJECT, HEADER.to_bytes(), False, False, "policy"),
        (pp.Policy.SKIP, HEADER.to_bytes(), False, False, Action.DIRECT),
    ],
)
def test_a_handshake_fed_whole_or_byte_by_byte(
    split: bool,
    policy: pp.Policy,
    data: bytes,
    eof: bool,
    timed_out: bool,
    outcome: Action | str,
) -> None:
    handshake = _fed(data, eof=eof, split=split, policy=policy)
    if isinstance(outcome, Action):
        assert handshake.judge(timed_out=timed_out) is outcome
    else:
        with pytest.raises(Refusal) as refusal:
            handshake.judge(timed_out=timed_out)
        assert refusal.value.kind == outcome


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_the_bytes_after_the_header_are_kept(split: bool) -> None:
    handshake = _fed(HEADER.to_bytes() + b"GET /", eof=False, split=split, policy=pp.Policy.USE)
    assert handshake.judge() is Action.PROXIED
    assert handshake.header == HEADER
    assert handshake.uses_addresses(Action.PROXIED)
    if not split:  # byte by byte, reading stops at the header's last byte
        assert handshake.leftover == b"GET /"
    assert not handshake.sent_nothing


def test_partial_and_sent_nothing() -> None:
    handshake = Handshake(pp.ProxyProtocolConfig(), PEER)
    assert (handshake.sent_nothing, handshake.partial) == (True, False)
    assert not handshake.receive_data(HEADER.to_bytes()[:10])
    assert (handshake.sent_nothing, handshake.partial) == (False, True)
    assert handshake.receive_data(HEADER.to_bytes()[10:])
    assert (handshake.sent_nothing, handshake.partial) == (False, False)


def test_a_policy_callable_that_refuses_the_peer() -> None:
    def policy(peer: pp.PeerAddress) -> pp.Policy:
        raise Refusal("policy", "not from here")

    with pytest.raises(Refusal):
        Handshake(pp.ProxyProtocolConfig(policy=policy), PEER)


def _async(verdict: bool | Exception) -> Any:
    async def validator(header: pp.Header, peer: pp.PeerAddress) -> bool:
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    return validator


def _sync(verdict: bool | Exception) -> Any:
    def validator(header: pp.Header, peer: pp.PeerAddress) -> bool:
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    return validator


@pytest.mark.parametrize("make", [_sync, _async], ids=["sync", "async"])
@pytest.mark.anyio
async def test_the_validator_verdicts(make: Any) -> None:
    async def outcome(verdict: bool | Exception) -> str:
        try:
            pending = validate(make(verdict), HEADER, PEER)
            if pending is not None:
                await pending
        except Refusal as refusal:
            return f"{refusal.kind.value}: {refusal.reason}"
        return "accepted"

    assert await outcome(True) == "accepted"
    assert await outcome(False) == "validator: the validator refused the header"
    rejection = pp.HeaderRejected("bad\nline")
    assert await outcome(rejection) == "validator: the validator refused the header: bad\\nline"
    with pytest.raises(RuntimeError):
        await outcome(RuntimeError("a bug"))


def test_a_validator_past_the_deadline_is_a_timeout() -> None:
    assert engine.validator_timed_out(2).kind is RefusalKind.TIMEOUT


def test_counters_snapshot_and_surface_totals() -> None:
    counters = Counters()
    counters.accepted, counters.direct, counters.in_flight = 3, 1, 2
    counters.rejected[RefusalKind.EMPTY] += 2
    counters.rejected[RefusalKind.TIMEOUT] += 1
    counters.rejected[RefusalKind.EVICTED] += 4
    assert counters.snapshot() == pp.ListenerStatistics(
        accepted=3, direct=1, rejected={"empty": 2}, timed_out=1, evicted=4, in_flight=2
    )
    surface = "test_engine"
    engine.register(surface, counters)
    engine.register(surface, counters)  # counted once
    other = engine.register(surface, Counters())
    other.accepted = 1
    other.rejected[RefusalKind.EMPTY] = 1
    total = engine.surface_statistics(surface)
    assert (total.accepted, total.rejected, total.evicted) == (4, {"empty": 3}, 4)
    assert engine.surface_statistics("nothing registered").accepted == 0


def test_refusals_are_logged_ten_of_each_kind_a_window_then_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RefusalLog(lambda: now[0])
    caplog.set_level(logging.DEBUG, "proxyproto")
    for second in range(30):  # 30 s of a flood: 100 refusals a second
        now[0] = float(second)
        for n in range(100):
            kind = RefusalKind.TIMEOUT if n % 2 else RefusalKind.MISSING
            log.refused(kind, ("192.0.2.9", n), "reason")
    now[0] = 30.0
    log.refused(RefusalKind.EMPTY, None, "last")
    lines = [r for r in caplog.records if r.name == "proxyproto"]
    summaries = [r for r in lines if "were not logged" in r.getMessage()]
    # Three windows of 10 s: ten lines of each kind, a summary each, and the last refusal's line.
    assert len(lines) == 3 * (2 * 10 + 1) + 1
    assert len(summaries) == 3
    assert summaries[0].getMessage() == (
        "980 more refused connections were not logged in 10s: 490 missing, 490 timeout"
    )
    assert summaries[0].levelno == logging.WARNING  # the highest of the kinds it counts
    first = lines[0]
    assert [r.levelno for r in lines[:20]].count(logging.INFO) == 10  # the first ten timeouts
    assert first.levelno == logging.WARNING
    assert first.getMessage() == "refused connection from 192.0.2.9:0: reason"
    assert lines[-1].getMessage() == "refused connection from an unknown peer: last"
    assert lines[-1].levelno == logging.DEBUG


def _ticket(events: list[str], name: str) -> Ticket:
    return Ticket(evict=lambda: events.append(name))


def test_admission_evicts_the_oldest_old_enough_in_a_batch_and_never_makes_one_wait() -> None:
    events: list[str] = []
    admission = Admission(2, eviction_age=0.5)
    a, b, c, d, e = (_ticket(events, name) for name in "abcde")
    assert (admission.admit(a, 0.0), admission.admit(b, 0.1)) == (0, 0)
    # Full, and nothing is old enough to evict: c comes in all the same (a burst of real
    # clients never evicts itself), and so does d.
    assert (admission.admit(c, 0.2), admission.admit(d, 0.3), len(admission)) == (0, 0, 4)
    # At 0.75, a, b and c are old enough: e makes room for itself down to one under the bound,
    # oldest first, in one batch; d is too young.
    assert admission.admit(e, 0.75) == 3
    assert events == ["a", "b", "c"]
    assert [t.evicted for t in (a, b, c, d, e)] == [True, True, True, False, False]
    assert len(admission) == 2
    for ticket in (a, d, e):  # an evicted ticket has nothing to give back
        admission.release(ticket)
    assert len(admission) == 0


def test_admission_with_room_evicts_nothing() -> None:
    events: list[str] = []
    admission = Admission(3, eviction_age=0)
    tickets = [_ticket(events, str(n)) for n in range(3)]
    assert [admission.admit(t, 10.0 * n) for n, t in enumerate(tickets)] == [0, 0, 0]
    admission.release(tickets[0])
    assert admission.admit(_ticket(events, "new"), 100.0) == 0
    assert admission.admit(_ticket(events, "newer"), 100.0) == 1
    assert events == ["1"]


def test_the_engine_imports_no_io_framework() -> None:
    # Checked on the module's source: the engine is sans-IO.
    with open(engine.__file__, encoding="utf-8") as file:
        source = file.read()
    for name in ("anyio", "trio", "asyncio"):
        assert f"import {name}" not in source
