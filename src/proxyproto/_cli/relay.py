"""``proxyproto relay``: the command line of the L4 relay (:mod:`proxyproto._cli.relay_server`)."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import TYPE_CHECKING

from proxyproto._cli.relay_config import ConfigError, RelayConfig, idle_seconds, tlv_item, tlv_types
from proxyproto._cli.relay_server import BALANCE_MODES, RelaySettings, serve_relay
from proxyproto._cli.relay_udp import UDPRelay

from .args import (
    PROG,
    add_backend_option,
    add_command,
    relay_listen,
    relay_target,
    relay_trusted,
    run,
    seconds,
)
from .metrics import add_metrics_option, run_with_metrics
from .output import fail, format_address, log_to_stderr, os_error_text
from .relay_workers import reserve_port, reuse_port_missing, serve_workers

if TYPE_CHECKING:
    from .args import Subparsers

__all__ = ["add"]


def add(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "relay",
        _relay,
        "an L4 TCP (or UDP) relay that receives and sends PROXY headers",
        "Accept TCP connections and relay each one, bytes unchanged both ways, to a target.\n\n"
        "--accept-proxy reads a PROXY header first: from peers in --trusted (which must send\n"
        "one; anyone else is refused), or from every peer without --trusted. --send-proxy v1|v2\n"
        "prepends a header with the client's address (the header's client when one was\n"
        "accepted, so a chain of relays keeps the original client) to each target connection.\n\n"
        "--balance picks the order targets are tried in: none (as given), random, source-ip or\n"
        "source-socket (a hash of the client's IP, or IP and port). A target that refuses or does\n"
        "not answer within --connect-timeout is skipped for the next; with none left the client\n"
        "is closed and a warning logged.\n\n"
        "One access-log line per connection on stderr (the proxyproto.relay logger, INFO):\n"
        "  peer=REAL_PEER client=CLIENT target=TARGET route=ROUTE up=BYTES down=BYTES\n"
        "  duration=S end=WHY\n"
        "--idle-timeout S closes a connection that carried no byte either way for S seconds.\n"
        "--listen unix:/path listens on a UNIX socket (a stale file is replaced, removed on\n"
        "exit); its clients are sent as LOCAL unless a header was accepted (--trusted unix).\n\n"
        "With --send-proxy v2: --keep-tlvs copies the inbound header's TLVs (all, or the types\n"
        "listed), --add-tlv adds fixed ones, --unique-id a fresh UNIQUE_ID, --send-proxy-crc32c a\n"
        "checksum. An inbound LOCAL header gives a LOCAL one (v1: UNKNOWN); an IPv4-mapped client\n"
        "(::ffff:a.b.c.d) is sent as IPv4.\n\n"
        "SIGINT or SIGTERM stops accepting and gives open connections --grace seconds to finish;\n"
        "a second signal closes them at once.\n\n"
        "--udp relays datagrams: one pseudo connection (its own socket to a target) per client,\n"
        "ended after --udp-idle-lifetime seconds without a datagram, at most\n"
        "--udp-max-connections at once (the least recently used evicted). --send-proxy v2 puts\n"
        "a header on every datagram; --accept-proxy reads one from every datagram (others are\n"
        "dropped); replies go back without one. One access-log line per pseudo connection.\n"
        "[::] takes IPv4 clients too (sent as UDP4). On SIGINT/SIGTERM no new client is taken\n"
        "and the open pseudo connections go on until idle, for at most --grace seconds.\n\n"
        "--config FILE.toml holds the same settings (listen, to, send_proxy, accept_proxy,\n"
        "trusted, balance, header_timeout, connect_timeout, grace, keep_tlvs, add_tlv,\n"
        "unique_id, send_proxy_crc32c, idle_timeout, probe_timeout; workers at the top level\n"
        "only), [protocols.NAME] tables (protocol, to, server_names, alpns, balance,\n"
        "send_proxy, idle_timeout; on UDP udp_idle_lifetime: routing by the first bytes, TLS\n"
        "by SNI and ALPN; with udp = true, QUIC by SNI and ALPN and WireGuard) and [[route]]\n"
        "tables, one more listener each, inheriting the top-level settings. Options given\n"
        "on the command line replace the file's top-level values. The file is re-read when\n"
        "it changes: new connections get the new settings, open ones keep theirs; an invalid\n"
        "file is logged and ignored. A file in rpxy-l4's format (listen_port, tcp_target,\n"
        "...) is read too.\n\n"
        "--workers N runs N processes, each its own event loop, each binding the listening\n"
        "addresses with SO_REUSEPORT (Linux): the kernel spreads TCP connections over them,\n"
        "and UDP clients by a hash of their address (a client stays with one worker). Each\n"
        "worker re-reads --config itself; access-log lines end in worker=N. SIGINT/SIGTERM\n"
        "reach every worker; a worker that fails stops the others (exit status 1).\n\n"
        "--metrics HOST:PORT serves Prometheus metrics of the handshakes at /metrics there\n"
        "(needs the prometheus extra); each route is a listener label, named by its address;\n"
        "the relay's connections, bytes and datagrams by protocol route, and those unrouted;\n"
        "with --workers, the sums over the workers (each writes its counts every 0.5 s).\n"
        "Exit status 0 when stopped by a signal, 1 when it cannot listen, 2 for a bad option\n"
        "or configuration file.",
        "examples:\n"
        "  proxyproto relay --listen 0.0.0.0:8080 --to 10.0.0.5:80 --send-proxy v2\n"
        "  proxyproto relay --listen [::]:443 --to 10.0.0.5:443 --to 10.0.0.6:443 \\\n"
        "      --balance source-ip --accept-proxy --trusted 10.0.0.0/8 --send-proxy v2\n"
        "  proxyproto relay --listen 127.0.0.1:0 --to 127.0.0.1:8000 --grace 2\n"
        "  proxyproto relay --config /etc/proxyproto/relay.toml --grace 30\n"
        "  proxyproto relay --listen 0.0.0.0:8080 --to 10.0.0.5:80 --metrics 127.0.0.1:9100\n"
        "  proxyproto relay --listen 0.0.0.0:8080 --to 10.0.0.5:80 --workers 4",
    )
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="a TOML file with the settings and [[route]] tables; re-read when it changes",
    )
    parser.add_argument(
        "--listen",
        action="append",
        type=relay_listen,
        metavar="HOST:PORT",
        help="where to listen; port 0 picks a free one (printed at startup); or unix:/path"
        " (TCP only; a stale socket file is replaced, the file removed on exit); repeat for"
        " more listeners with the same settings",
    )
    parser.add_argument(
        "--to",
        action="append",
        dest="targets",
        type=relay_target,
        metavar="HOST:PORT",
        help="a target, or unix:/path (TCP only; repeat for more)",
    )
    parser.add_argument(
        "--send-proxy",
        choices=("none", "v1", "v2"),
        help="the header to send to targets (default: none)",
    )
    parser.add_argument(
        "--accept-proxy",
        action="store_true",
        default=None,
        help="read a PROXY header from each client",
    )
    parser.add_argument(
        "--trusted",
        action="append",
        type=relay_trusted,
        metavar="CIDR",
        help="with --accept-proxy: a proxy's address or network, or unix for the peers of a"
        " unix:/path listener (repeat for more)",
    )
    # No defaults here: with --config, only the options given replace the file's values.
    defaults = RelaySettings(listen=("", 0), targets=())
    parser.add_argument(
        "--balance",
        choices=BALANCE_MODES,
        help="the order targets are tried in (default: none)",
    )
    parser.add_argument(
        "--header-timeout",
        type=seconds,
        metavar="S",
        help=f"seconds a client gets to send its header (default: {defaults.header_timeout:g})",
    )
    parser.add_argument(
        "--connect-timeout",
        type=seconds,
        metavar="S",
        help="seconds a target gets to accept a connection"
        f" (default: {defaults.connect_timeout:g})",
    )
    parser.add_argument(
        "--grace",
        type=seconds,
        metavar="S",
        help="seconds open connections get to finish after SIGINT/SIGTERM"
        f" (default: {defaults.grace:g})",
    )
    parser.add_argument(
        "--keep-tlvs",
        type=tlv_types,
        metavar="all|none|TYPE,...",
        help="with --accept-proxy and --send-proxy v2: the inbound header's TLVs to copy onto"
        " the outbound one, by name (alpn, authority, ssl, ...) or number (0xE1)"
        " (default: none)",
    )
    parser.add_argument(
        "--add-tlv",
        action="append",
        dest="add_tlvs",
        type=tlv_item,
        metavar="TYPE=VALUE",
        help="with --send-proxy v2: a fixed TLV on every header, e.g. authority=example.com"
        " (text for alpn, authority, netns) or 0xE1=c0ffee (hex); repeat for more",
    )
    parser.add_argument(
        "--unique-id",
        action="store_true",
        default=None,
        help="with --send-proxy v2: a fresh UNIQUE_ID TLV (a UUID) on every header",
    )
    parser.add_argument(
        "--send-proxy-crc32c",
        action="store_true",
        default=None,
        help="with --send-proxy v2: append a CRC32C TLV to every header",
    )
    parser.add_argument(
        "--idle-timeout",
        type=idle_seconds,
        metavar="S",
        help="close a connection after S seconds without a byte either way"
        f" (default: {defaults.idle_timeout:g}, never)",
    )
    parser.add_argument(
        "--probe-timeout",
        type=seconds,
        metavar="S",
        help="with [protocols] routes: seconds a client gets to send the bytes that decide its"
        f" protocol (default: {defaults.probe_timeout:g})",
    )
    parser.add_argument(
        "--udp",
        action="store_true",
        default=None,
        help="relay UDP datagrams instead of TCP connections: one pseudo connection per client,"
        " a v2 header on every datagram with --send-proxy v2, read from every one with"
        " --accept-proxy",
    )
    parser.add_argument(
        "--udp-idle-lifetime",
        type=seconds,
        metavar="S",
        help="with --udp: end a pseudo connection after S seconds without a datagram"
        f" (default: {defaults.udp_idle_lifetime:g})",
    )
    parser.add_argument(
        "--udp-max-connections",
        type=_positive,
        metavar="N",
        help="with --udp: the most pseudo connections at once, the least recently used"
        " evicted first (default: from the descriptor limit, 16 to 1024)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="N processes, each binding the listening addresses with SO_REUSEPORT so that the"
        " kernel spreads connections (UDP: clients) over them (default: 1, this process)",
    )
    add_metrics_option(parser)
    add_backend_option(parser)


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return number


def _relay(args: argparse.Namespace) -> int:
    # The options given, as RelaySettings fields: with --config they replace the file's
    # top-level values (which the [[route]] tables inherit unless they set their own).
    listens: list[tuple[str, int] | str] = list(dict.fromkeys(args.listen or ()))
    given = {
        "listen": None if not listens else listens if len(listens) > 1 else listens[0],
        "targets": tuple(args.targets) if args.targets else None,
        "send_proxy": {"none": 0, "v1": 1, "v2": 2}.get(args.send_proxy),
        "accept_proxy": args.accept_proxy,
        "trusted": tuple(args.trusted) if args.trusted else None,
        "balance": args.balance,
        "header_timeout": args.header_timeout,
        "connect_timeout": args.connect_timeout,
        "grace": args.grace,
        "keep_tlvs": args.keep_tlvs,
        "add_tlvs": tuple(args.add_tlvs) if args.add_tlvs else None,
        "unique_id": args.unique_id,
        "crc32c": args.send_proxy_crc32c,
        "idle_timeout": args.idle_timeout,
        "probe_timeout": args.probe_timeout,
        "udp": args.udp,
        "udp_idle_lifetime": args.udp_idle_lifetime,
        "udp_max_connections": args.udp_max_connections,
        "workers": args.workers,
    }
    overrides = {name: value for name, value in given.items() if value is not None}
    reserved: list[socket.socket] = []
    if args.workers is not None and args.workers > 1:
        unavailable = reuse_port_missing()
        if unavailable is not None:
            args.parser.error(unavailable)
        for index, listen in enumerate(listens):
            if not isinstance(listen, tuple) or listen[1] != 0:
                continue
            # One port for every worker, chosen here and held until they all listen.
            try:
                reserved.append(reserve_port(listen, udp=bool(args.udp)))
            except OSError as error:
                return fail(f"cannot listen on {format_address(listen)}: {os_error_text(error)}")
            listens[index] = (listen[0], reserved[-1].getsockname()[1])
        if listens:
            overrides["listen"] = listens if len(listens) > 1 else listens[0]
    config = None
    if args.config is not None:
        config = RelayConfig(args.config, overrides)
        try:
            routes = config.load()
        except ConfigError as error:
            # One line: the usage text says nothing about a file.
            print(f"{PROG} relay: error: {error}", file=sys.stderr)
            return 2
    else:
        missing = [
            flag
            for flag, name in (("--listen", "listen"), ("--to", "targets"))
            if name not in overrides
        ]
        if missing:
            args.parser.error(f"the following arguments are required: {', '.join(missing)}")
        if args.trusted and not args.accept_proxy:
            args.parser.error("--trusted needs --accept-proxy")
        for flag, value in (
            ("--udp-idle-lifetime", args.udp_idle_lifetime),
            ("--udp-max-connections", args.udp_max_connections),
        ):
            if value is not None and not args.udp:
                # Without a file there is no UDP route it could apply to.
                args.parser.error(f"{flag} needs --udp")
        ports = [listen[1] for listen in listens if isinstance(listen, tuple) and listen[1]]
        if args.udp and any(
            isinstance(listen, tuple) and listen[0] in ("", "::") and ports.count(listen[1]) > 1
            for listen in listens
        ):
            # A UDP [::] socket is dual stack: it holds its port for IPv4 too.
            args.parser.error(
                "--listen: [::] with --udp takes IPv4 clients too: no other address of its port"
            )
        routes = tuple(RelaySettings(**{**overrides, "listen": listen}) for listen in listens)
        for route in routes:
            problem = route.problem()
            if problem is None:
                continue
            option = {"add_tlv": "--add-tlv", "send_proxy_crc32c": "--send-proxy-crc32c"}.get(
                problem[0], "--" + problem[0].replace("_", "-")
            )
            args.parser.error(f"{option}: {problem[1].replace('send_proxy', '--send-proxy')}")
    log_to_stderr()
    workers = routes[0].workers
    if config is not None and "workers" not in overrides:
        # Read once, at the start: a reload cannot change how many processes run.
        config = RelayConfig(config.path, {**overrides, "workers": workers})
    if workers > 1:
        unavailable = reuse_port_missing()
        if unavailable is not None:
            args.parser.error(unavailable)
        return serve_workers(routes, config, args.backend, metrics=args.metrics, reserved=reserved)
    return run_with_metrics(
        args.metrics, "relay", lambda: run(args.backend, serve_relay, routes, config, UDPRelay)
    )
