"""Accept loops that survive running out of descriptors: :func:`serve`, :func:`accept_retrying`.

Theory of operation
-------------------
``accept()`` fails with ``EMFILE`` (this process is out of file descriptors), ``ENFILE`` (the
system is), ``ENOBUFS`` or ``ENOMEM`` when the server has as many connections open as it may: the
connection stays in the kernel's backlog, and the error is about this moment, not the listener.
anyio's ``Listener.serve()`` lets it propagate, which ends the accept loop and with it, usually,
the server: about 510 idle connections at ``ulimit -n 1024``. trio's ``serve_listeners`` instead
sleeps :data:`RETRY_DELAY` (100 ms, its figure) and accepts again. Every accept loop of ours does
the same, through :func:`accept_retrying`: once connections close and descriptors are free, the
next ``accept()`` succeeds and the backlog is served.

The failures are logged on the ``proxyproto`` logger without flooding it: the first one at
WARNING, then at most one WARNING per :data:`LOG_INTERVAL` with the number of failures since the
last, and one INFO line when ``accept()`` works again, with the count and how long it lasted. The
log state is one per process (:data:`exhaustion`), as the descriptor limit is: a server with two
listeners (IPv4 and IPv6) that both run out says so once.

:func:`serve` is anyio's ``Listener.serve()`` with that loop, for an anyio listener that has an
``accept()`` (every :class:`anyio.abc.SocketListener`, and a
:class:`~anyio.streams.stapled.MultiListener` of them, as :func:`anyio.create_tcp_listener`
returns); another listener runs its own ``serve()``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import anyio
from anyio.abc import Listener, SocketListener, TaskGroup
from anyio.streams.stapled import MultiListener

__all__ = [
    "EXHAUSTION_ERRNOS",
    "LOG_INTERVAL",
    "RETRY_DELAY",
    "accept_retrying",
    "exhaustion",
    "read_nowait",
    "serve",
    "wait_out",
]

T = TypeVar("T")

logger = logging.getLogger("proxyproto")

#: ``accept()`` errors that mean "out of resources for now": the ones trio's ``serve_listeners``
#: sleeps on and retries.
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

#: Seconds between two tries of a failed ``accept()`` (trio's ``serve_listeners`` waits as long).
RETRY_DELAY = 0.1

#: At most one WARNING per this many seconds while ``accept()`` keeps failing.
LOG_INTERVAL = 10.0


class Exhaustion:
    """Counts ``accept()`` failures from running out of resources and logs them rate-limited.

    A *streak* runs from a failure to the ``accept()`` that works again. Its first failure is
    logged at once (WARNING), later ones as a count, at most one WARNING per ``interval``; the
    end of the streak at INFO, at most one such line per ``interval`` too (one that comes sooner
    keeps the streak open: the next ``accept()`` that works after the interval says it). So a
    server at its limit, where accepts alternate with failures (a connection closes, the next
    one is accepted, the one after fails), logs at most two lines per interval.
    """

    def __init__(
        self, *, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        #: Whether a streak of failures is open (checked on every accept: keep it cheap).
        self.in_streak = False
        #: Failures since the last WARNING.
        self.unlogged = 0
        #: Failures in the streak.
        self.failures = 0
        #: Every failure so far.
        self.total = 0
        self._since = 0.0
        self._warned_at = -math.inf
        self._recovered_at = -math.inf

    def failed(self, error: OSError, where: str) -> None:
        """One ``accept()`` failed with ``error`` on ``where`` (a listener's address)."""
        now = self.clock()
        if not self.in_streak:
            self.in_streak = True
            self._since = now
            self.failures = 0
        self.unlogged += 1
        self.failures += 1
        self.total += 1
        if now - self._warned_at < self.interval:
            return
        name = errno.errorcode.get(error.errno or 0, str(error.errno))
        reason = os.strerror(error.errno) if error.errno else str(error)
        if self.unlogged == 1:
            logger.warning(
                "accept() on %s failed: %s (%s); retrying every %gs, connections wait in the"
                " backlog (one line per %gs at most)",
                where,
                name,
                reason,
                RETRY_DELAY,
                self.interval,
            )
        else:
            logger.warning(
                "accept() on %s failed %d times since the last line: %s (%s); still retrying",
                where,
                self.unlogged,
                name,
                reason,
            )
        self._warned_at = now
        self.unlogged = 0

    def succeeded(self) -> None:
        """``accept()`` worked: close the streak of failures, unless that is too soon to say."""
        now = self.clock()
        if now - self._recovered_at < self.interval:
            return
        logger.info(
            "accept() works again, after %d failure(s) over %.1fs",
            self.failures,
            now - self._since,
        )
        self._recovered_at = now
        self.in_streak = False


#: The process's log state: the descriptor limit is the process's, so is the summary.
exhaustion = Exhaustion()


async def accept_retrying(
    accept: Callable[[], Awaitable[T]],
    where: str | Callable[[], str],
    *,
    sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
) -> T:
    """``await accept()``, retried every :data:`RETRY_DELAY` while it runs out of resources.

    Any other error propagates (so does the BrokenResourceError anyio's trio backend wraps
    every accept() error in, unless its cause is one of those). ``where`` names the listener in
    the log (a callable is asked only when a failure is logged). ``sleep`` is the framework's
    (anyio's works on trio too).
    """
    while True:
        try:
            result = await accept()
        except (OSError, anyio.BrokenResourceError) as error:
            # anyio's trio backend raises the OSError as the cause of a BrokenResourceError.
            cause = error if isinstance(error, OSError) else error.__cause__
            if not isinstance(cause, OSError) or cause.errno not in EXHAUSTION_ERRNOS:
                raise
            await wait_out(cause, where, sleep=sleep)
            continue
        if exhaustion.in_streak:
            exhaustion.succeeded()
        return result


async def wait_out(
    error: OSError,
    where: str | Callable[[], str],
    *,
    sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
) -> None:
    """For an accept loop of its own: log ``error`` (one of :data:`EXHAUSTION_ERRNOS`) and wait
    :data:`RETRY_DELAY`. Call ``exhaustion.succeeded()`` after the next accept that works, when
    ``exhaustion.in_streak``."""
    exhaustion.failed(error, where if isinstance(where, str) else where())
    await sleep(RETRY_DELAY)


async def serve(
    listener: Listener[Any], handler: Callable[[Any], Any], task_group: TaskGroup | None = None
) -> None:
    """``listener.serve(handler, task_group)``, surviving ``EMFILE`` and the like.

    A :class:`~anyio.streams.stapled.MultiListener` serves each of its listeners so; a
    :class:`~anyio.abc.SocketListener` is accepted from here; another listener runs its own
    ``serve()``. As in anyio, each connection's ``handler`` runs in ``task_group`` (a task group
    of this call's when ``None``).
    """
    if isinstance(listener, MultiListener):
        async with anyio.create_task_group() as listeners:
            for sub in listener.listeners:
                listeners.start_soon(serve, sub, handler, task_group)
        return
    if not isinstance(listener, SocketListener):
        await listener.serve(handler, task_group)
        return
    accept = listener.accept

    def where() -> str:
        return _describe(listener)

    async with AsyncExitStack() as stack:
        if task_group is None:
            task_group = await stack.enter_async_context(anyio.create_task_group())
        while True:
            stream = await accept_retrying(accept, where)
            task_group.start_soon(handler, stream)


def _describe(listener: Listener[Any]) -> str:
    from anyio.abc import SocketAttribute

    try:
        return describe_socket(listener.extra(SocketAttribute.raw_socket))
    except Exception:  # a closed socket, an odd listener: the log line still goes out
        return repr(listener)


def describe_socket(sock: Any) -> str:
    """A listening socket's address for the log (``sock`` is a stdlib or trio socket)."""
    from proxyproto._core.text import format_address

    try:
        address = sock.getsockname()
    except OSError:
        return repr(sock)
    if isinstance(address, tuple):
        address = (address[0], address[1])
    return format_address(address)


def read_nowait(read: Callable[[int], bytes], size: int = 65536) -> bytes | None:
    """What a just-accepted connection has sent already, read from its non-blocking socket
    (``read`` is its ``recv``, or ``os.read`` of its descriptor); ``None`` when nothing has.

    The handshake's first read (the engine's ``receive_nowait``): behind a proxy the whole
    header is there, and it is judged with no deadline set and no trip through the scheduler.
    """
    try:
        return read(size)
    except (BlockingIOError, InterruptedError):
        return None
