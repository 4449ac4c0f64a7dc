"""``proxyproto send``: connect, send a header, then pipe stdin and stdout like nc."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

import proxyproto as pp

from .args import (
    add_backend_option,
    add_command,
    add_tlv_options,
    add_version_options,
    connect_address,
    header_address,
    header_from_args,
    run,
    seconds,
)
from .output import fail, format_address, os_error_text

if TYPE_CHECKING:
    from .args import Subparsers

__all__ = ["add"]


def add(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "send",
        _send,
        "connect, send a header, then pipe stdin and stdout like nc",
        "Connect to a server, send one PROXY protocol header, then copy stdin to the connection\n"
        "and the connection to stdout, bytes unchanged, until both are done: stdin's end\n"
        "half-closes the connection, the server's end stops the reading.\n\n"
        "--destination defaults to the address connected to. The header is v2 unless --v1.\n"
        "Exit status 1 when the connection is refused or fails, or the header cannot be encoded.",
        "examples:\n"
        "  proxyproto send 127.0.0.1:8000 --source 192.0.2.1:56324 </dev/null\n"
        "  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | proxyproto send localhost:8080 \\\n"
        "      --source 203.0.113.7:51234 --destination 198.51.100.10:443 --alpn http/1.1\n"
        "  proxyproto send [::1]:8000 --source [2001:db8::1]:4000 --v1\n"
        "  proxyproto send 10.0.0.5:8000 --local --crc32c </dev/null",
    )
    parser.add_argument(
        "target", type=connect_address, metavar="HOST:PORT", help="the server to connect to"
    )
    parser.add_argument(
        "--source", type=header_address, metavar="ADDRESS", help="the client the header claims"
    )
    parser.add_argument(
        "--destination",
        type=header_address,
        metavar="ADDRESS",
        help="the address the header says it connected to (default: HOST:PORT's address)",
    )
    add_version_options(parser)
    parser.add_argument(
        "--local", action="store_true", help="LOCAL: a connection of the proxy's own (v2)"
    )
    add_tlv_options(parser)
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="S",
        help="seconds to wait for the connection (default: %(default)g)",
    )
    add_backend_option(parser)
    parser.set_defaults(unknown=False, dgram=False)


def _send(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.local:
        if args.source is not None or args.destination is not None:
            parser.error("--local takes no --source or --destination")
    elif args.source is None:
        parser.error("--source is required, unless --local")
    try:
        return run(args.backend, _run_send, args)
    except KeyboardInterrupt:
        return 130


async def _run_send(args: argparse.Namespace) -> int:
    host, port = args.target
    target = format_address(args.target)
    if not args.local and args.destination is None:
        # The header says where the client connected to: the address actually connected to.
        try:
            host = await _resolve(host, port, args.source)
        except OSError as error:
            return fail(f"cannot connect to {target}: {os_error_text(error)}")
        args.destination = (host, port)
    try:
        header = header_from_args(args)
        header.to_bytes(crc32c=args.crc32c)  # refuse before connecting
    except pp.HeaderEncodingError as error:
        return fail(f"invalid header: {error}")
    try:
        with anyio.fail_after(args.timeout):
            stream = await pp.connect_tcp(host, port, header=header, crc32c=args.crc32c)
    except TimeoutError:
        return fail(f"cannot connect to {target}: no answer within {args.timeout:g}s")
    except OSError as error:
        return fail(f"cannot connect to {target}: {os_error_text(error)}")
    failures: list[str] = []
    async with stream, anyio.create_task_group() as task_group:

        async def pump(copy: Callable[[anyio.abc.ByteStream], Awaitable[None]]) -> None:
            try:
                await copy(stream)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
                failures.append(os_error_text(error))
                task_group.cancel_scope.cancel()

        task_group.start_soon(pump, _stdin_to_stream)
        task_group.start_soon(pump, _stream_to_stdout)
    if failures:
        return fail(f"connection to {target} failed: {failures[0]}")
    return 0


async def _resolve(host: str, port: int, source: pp.Address) -> str:
    """``host`` as an IP address, of the source's family when it has one."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    family = socket.AF_UNSPEC
    if isinstance(source, tuple):
        family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
    found = await anyio.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    return str(found[0][4][0])


async def _stdin_to_stream(stream: anyio.abc.ByteStream) -> None:
    fd = _stdin_fd()
    if fd is not None:
        # A pipe, socket or terminal is waited on; a file (or /dev/null) never blocks, and
        # epoll refuses it.
        mode = os.fstat(fd).st_mode
        waitable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
        while True:
            if waitable:
                await anyio.wait_readable(fd)
            data = os.read(fd, 65536)
            if not data:
                break
            await stream.send(data)
    await stream.send_eof()


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # closed, or not a real file
        return None


async def _stream_to_stdout(stream: anyio.abc.ByteStream) -> None:
    out = sys.stdout.buffer
    while True:
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            return
        out.write(data)
        out.flush()
