"""The clients of the attacks, shared by ``tests/test_attacks.py`` and ``bench/bench_attacks.py``.

The servers are ``tests/attack_server.py``'s (or the ``proxyproto`` command): each client here
sends its header and request to one of them and returns what came back (:func:`ask_hello`,
:func:`ask_echo`, :func:`ask_http`, :func:`ask_https`), or pushes bytes and never reads
(:func:`push_until_blocked`); :func:`ask_when_freed` asks from the backlog of a server out of
descriptors; :func:`sink_target` and :func:`echo_target` are the relay's
targets, :func:`certificates` makes the TLS servers' files. Nothing here imports proxyproto:
:data:`HEADER` is written out byte by byte.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from socket import create_connection, create_server, socket
from typing import Any

HOST = "127.0.0.1"
TIMEOUT = 20.0
MiB = 1 << 20
#: A send() that makes no progress for this long: the server stopped taking bytes.
STALL = 1.0
#: The client stops pushing here: an unbounded server would take all of it.
CAP = 256 * MiB
CHUNK = b"x" * 65536
#: A v2 PROXY header, TCP over IPv4, from 192.0.2.1:56324 to 198.51.100.7:443 (spec 2.2).
HEADER = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"  # the signature
    "21"  # version 2, PROXY
    "11"  # TCP over IPv4
    "000c"  # 12 address bytes
    "c0000201"  # 192.0.2.1
    "c6336407"  # 198.51.100.7
    "dc04"  # 56324
    "01bb"  # 443
)
REQUEST = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"


def push_until_blocked(sock: socket, prefix: bytes = b"", cap: int = CAP) -> int:
    """Send ``prefix`` and then on ``sock`` until a send() stalls for :data:`STALL` s or ``cap``
    bytes are pushed; how many were."""
    sock.settimeout(TIMEOUT)
    sock.sendall(prefix + CHUNK)
    pushed = len(CHUNK)
    sock.settimeout(STALL)
    try:
        while pushed < cap:
            pushed += sock.send(CHUNK)
    except (TimeoutError, OSError):
        pass
    return pushed


def read_some(sock: Any, until: bytes) -> bytes:
    """Read until ``until`` is in what came, EOF or the timeout; what came."""
    sock.settimeout(TIMEOUT)
    got = b""
    try:
        while until not in got and (chunk := sock.recv(65536)):
            got += chunk
    except (TimeoutError, OSError, ssl.SSLError):
        pass
    return got


def ask_hello(sock: socket) -> bytes:
    """The header: the listeners answer ``hello CLIENT``, ``proxyproto echo`` its client line."""
    sock.sendall(HEADER)
    return read_some(sock, b"\n")


def ask_echo(sock: socket) -> bytes:
    """A line and no header (the relay in front of an echo target)."""
    sock.sendall(b"ping\n")
    return read_some(sock, b"\n")


def ask_http(sock: socket) -> bytes:
    """The header and an HTTP/1.1 request in one segment, up to the body of ``200 ok``."""
    sock.sendall(HEADER + REQUEST)
    return read_some(sock, b"ok")


def ask_https(context: ssl.SSLContext, until: bytes = b"ok") -> Callable[[socket], bytes]:
    """:func:`ask_http`, with TLS after the header; reading until ``until`` is in the answer."""

    def ask(sock: socket) -> bytes:
        sock.sendall(HEADER)
        with context.wrap_socket(sock, server_hostname="localhost") as secure:
            secure.sendall(REQUEST)
            return read_some(secure, until)

    return ask


def ask_when_freed(
    address: tuple[str, int], ask: Callable[[socket], bytes], held: list[socket]
) -> bytes | None:
    """Connect a client that waits in the backlog of a server out of descriptors, close (and
    empty) ``held``, the idle connections that took them, and return what ``ask`` got on the
    waiting client (``None``: nothing within :data:`TIMEOUT`)."""
    with create_connection(address, timeout=TIMEOUT) as waiting:
        # In the backlog: served once descriptors are free (the request is in its buffers).
        answer: list[bytes] = []
        thread = threading.Thread(target=lambda: answer.append(ask(waiting)), daemon=True)
        thread.start()
        for sock in held:
            sock.close()
        held.clear()
        thread.join(TIMEOUT)
        return answer[0] if answer else None


@contextlib.contextmanager
def target(handle: Callable[[socket], None]) -> Iterator[tuple[tuple[str, int], list[socket]]]:
    """A loopback server that accepts in a thread and hands each connection to ``handle``: its
    address, and the connections it accepted (all closed at the end)."""
    held: list[socket] = []
    stop = threading.Event()
    with create_server((HOST, 0)) as server:
        server.settimeout(0.1)

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn = server.accept()[0]
                except TimeoutError:
                    continue
                held.append(conn)
                handle(conn)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[:2], held
        finally:
            stop.set()
            thread.join(TIMEOUT)
            for sock in held:
                sock.close()


def sink_target() -> contextlib.AbstractContextManager[tuple[tuple[str, int], list[socket]]]:
    """A :func:`target` that accepts connections and never reads from them."""
    return target(lambda conn: None)


def echo_target() -> contextlib.AbstractContextManager[tuple[tuple[str, int], list[socket]]]:
    """A :func:`target` that echoes on each connection, in a thread, and closes it at EOF."""
    return target(
        lambda conn: threading.Thread(target=echo_back, args=(conn,), daemon=True).start()
    )


def echo_back(conn: socket) -> None:
    # Closed at EOF: the relay's connection ends, its descriptors are free.
    with conn, contextlib.suppress(OSError):
        while data := conn.recv(65536):
            conn.sendall(data)


def certificates(folder: Path) -> tuple[ssl.SSLContext, str, str]:
    """A certificate for ``localhost`` and 127.0.0.1 from a fresh trustme CA: a client context
    that trusts it, and the PEM files (in ``folder``) of the certificate chain and its key."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", HOST)
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context, str(certfile), str(keyfile)
