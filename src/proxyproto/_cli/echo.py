"""``proxyproto echo``: a server that shows the PROXY header of every connection."""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute

import proxyproto as pp
from proxyproto._handshake.engine import register

from .args import (
    add_backend_option,
    add_command,
    listen_address,
    network,
    proxy_config,
    run,
    seconds,
)
from .metrics import add_metrics_option, run_with_metrics
from .output import (
    Row,
    address_json,
    fail,
    format_address,
    header_json,
    header_rows,
    log_to_stderr,
    logger,
    os_error_text,
    pair,
    print_rows,
)

if TYPE_CHECKING:
    from .args import Subparsers

__all__ = ["add"]

#: How long ``echo`` waits, after its reply, for the client to finish sending. Closing a socket
#: with unread bytes makes the kernel send a reset, which can destroy the reply in flight.
_ECHO_DRAIN_SECONDS = 5.0


def add(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "echo",
        _echo,
        "a server that shows the PROXY header of every connection",
        "Listen for TCP connections, read each one's PROXY header (v1 or v2) and print it:\n"
        "the real peer (the proxy), the addresses, every TLV, the SSL details and the CRC32C\n"
        "status -- or 'no header (direct)'. Then answer the client with a one-line summary and\n"
        "close. Refused connections are logged on stderr. Runs until SIGINT or SIGTERM.\n\n"
        "Without --trusted, --policy applies to every peer (default: require). With --trusted,\n"
        "peers in those networks get --policy (default: require) and every other peer 'reject'.\n"
        "Exit status 0 when stopped by a signal, 1 when it cannot listen.",
        "examples:\n"
        "  proxyproto echo --listen 127.0.0.1:8000\n"
        "  proxyproto echo --listen [::]:8000 --trusted 10.0.0.0/8 --trusted fd00::/8 --json\n"
        "  proxyproto echo --listen 0.0.0.0:8000 --policy use --header-timeout 2\n"
        "  proxyproto echo --listen 127.0.0.1:8000 --metrics 127.0.0.1:9100\n"
        "  # then, from another terminal:\n"
        "  proxyproto send 127.0.0.1:8000 --source 192.0.2.1:56324 </dev/null",
    )
    parser.add_argument(
        "--listen",
        required=True,
        type=listen_address,
        metavar="HOST:PORT",
        help="where to listen; port 0 picks a free one (printed at startup)",
    )
    parser.add_argument(
        "--trusted",
        action="append",
        type=network,
        metavar="CIDR",
        help="a proxy's address or network (repeat for more)",
    )
    parser.add_argument(
        "--policy",
        type=pp.Policy,
        choices=list(pp.Policy),
        metavar="{" + ",".join(policy.value for policy in pp.Policy) + "}",
        help="what to do with a header (default: require)",
    )
    parser.add_argument(
        "--header-timeout",
        type=seconds,
        default=pp.ProxyProtocolConfig().header_timeout,
        metavar="S",
        help="seconds a connection gets to send its header (default: %(default)g)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_metrics_option(parser)
    add_backend_option(parser)


def _echo(args: argparse.Namespace) -> int:
    config = proxy_config(
        trusted=args.trusted or (), policy=args.policy, header_timeout=args.header_timeout
    )
    log_to_stderr()
    return run_with_metrics(
        args.metrics, "echo", lambda: run(args.backend, _serve_echo, args, config)
    )


async def _serve_echo(args: argparse.Namespace, config: pp.ProxyProtocolConfig) -> int:
    host, port = args.listen
    try:
        inner = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as error:
        return fail(f"cannot listen on {format_address(args.listen)}: {os_error_text(error)}")
    listener = pp.ProxyProtocolListener(inner, config)
    addresses = [
        format_address(pair(sub.extra(SocketAttribute.local_address))) for sub in inner.listeners
    ]
    # Counted in --metrics (proxyproto.prometheus).
    register("echo", listener._counters, ", ".join(addresses))
    async with listener, anyio.create_task_group() as task_group:
        await task_group.start(_stop_on_signal, task_group.cancel_scope)
        print(f"listening on {', '.join(addresses)}", flush=True)
        await listener.serve(_echo_handler(args.json), task_group)
    return 0


def _echo_handler(as_json: bool) -> Callable[[pp.ProxiedStream], Awaitable[None]]:
    """The connection handler of ``echo``."""

    async def handle(stream: pp.ProxiedStream) -> None:
        peer = format_address(pair(stream.extra(pp.ProxyAttribute.peer_address)))
        try:
            async with stream:
                summary = _echo_report(stream, as_json)
                await stream.send(summary.encode() + b"\n")
                await stream.send_eof()
                with anyio.move_on_after(_ECHO_DRAIN_SECONDS):
                    while await stream.receive():
                        pass
        except anyio.EndOfStream:
            pass
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            logger.info("connection from %s: %s", peer, os_error_text(error))

    return handle


def _echo_report(stream: pp.ProxiedStream, as_json: bool) -> str:
    """Print what ``stream``'s handshake brought; return the summary line for the client."""
    peer = pair(stream.extra(pp.ProxyAttribute.peer_address))
    policy = stream.extra(pp.ProxyAttribute.policy)
    header = stream.extra(pp.ProxyAttribute.header, None)
    source = stream.extra(pp.ProxyAttribute.source, None)
    if header is None:
        summary = f"client {format_address(peer)} no header (direct)"
    else:
        said = f"header v{header.version} {header.command.name} {header.family.name}"
        said += f" {header.transport.name}"
        if source is not None:
            destination = format_address(stream.extra(pp.ProxyAttribute.destination))
            summary = f"client {format_address(source)} via {format_address(peer)} {said}"
            summary += f" to {destination}"
        else:
            # LOCAL, UNKNOWN, UNSPEC, or a header the policy (IGNORE) reads and drops.
            summary = f"client {format_address(peer)} {said} (addresses not used)"
    if as_json:
        report = {
            "peer": address_json(peer),
            "policy": policy.value,
            "client": address_json(source if source is not None else peer),
            "header": None if header is None else header_json(header, None, 0),
            "summary": summary,
        }
        print(json.dumps(report), flush=True)
        return summary
    print(f"connection from {format_address(peer)} (policy {policy.value})")
    if header is None:
        rows: list[Row] = [(1, "header", "no header (direct)")]
    else:
        rows = [(indent + 1, label, value) for indent, label, value in header_rows(header, None, 0)]
    rows.append((1, "reply", summary))
    print_rows(rows)
    print(flush=True)
    return summary


async def _stop_on_signal(
    scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for number in signals:
            logger.info("stopping on %s", signal.Signals(number).name)
            scope.cancel()
            return
