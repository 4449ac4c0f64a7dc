"""Threaded servers on 127.0.0.1 for the tests that need a plain peer behind the code under test
(a relay's target, HAProxy's backend).

:class:`LoopbackServer` owns the socket and one thread that calls :meth:`LoopbackServer.step`
until :meth:`LoopbackServer.close`; the socket's 0.1 s timeout is how often that thread looks at
the stop flag. :class:`TCPServer` accepts in that thread and hands each connection to
:meth:`TCPServer.handle` in a thread of its own.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import ClassVar, TypeVar

from cli_process import TIMEOUT, Address

S = TypeVar("S", bound="LoopbackServer")


class LoopbackServer:
    """``sock`` (bound) served by a daemon thread, started here; also a context manager that
    closes it on exit."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.1)  # how often the loop looks at the stop flag
        self.address: Address = self.sock.getsockname()[:2]
        self.port: int = self.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def step(self) -> None:
        """One turn of the loop: wait (at most the socket's timeout) for a peer and serve it."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except TimeoutError:
                continue
            except OSError:  # closed
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.sock.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TCPServer(LoopbackServer):
    """A TCP server: each accepted connection goes to :meth:`handle` in a thread of its own;
    ``connections`` counts them. :meth:`close` also waits for those threads unless
    ``join_connections`` is false (a class whose connections may outlive it)."""

    join_connections: ClassVar[bool] = True

    def __init__(self) -> None:
        self.connections = 0
        self._threads: list[threading.Thread] = []
        super().__init__(socket.create_server(("127.0.0.1", 0)))

    def handle(self, conn: socket.socket, peer: Address) -> None:
        raise NotImplementedError

    def step(self) -> None:
        conn, peer = self.sock.accept()
        self.connections += 1
        thread = threading.Thread(target=self.handle, args=(conn, peer[:2]), daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
        super().close()
        if self.join_connections:
            for thread in self._threads:
                thread.join(TIMEOUT)
