"""Worker processes under a supervising parent: ``proxyproto hypercorn --workers N`` and
``proxyproto relay --workers N``.

One loop, :func:`run_workers`, decides for both what happens to the workers: it starts
``count`` ``spawn`` processes (SIGINT ignored in each: a Ctrl-C reaches the whole process group
and the parent alone decides), and then

- on SIGINT or SIGTERM, sets the shared ``shutdown_event`` (which Hypercorn's workers poll) and,
  with ``forward_signals``, sends SIGTERM to every worker (the relay's workers stop on it, as the
  relay does in one process); a second signal kills the workers (with ``forward_signals``: is
  forwarded too, so each worker closes its connections at once and writes their access-log
  lines; a third kills them);
- a worker that exits with status 0 while no stop was asked (Hypercorn's ``--max-requests``, a
  SIGTERM sent to that worker alone) is replaced by a new one in the same slot;
- a worker that exits with any other status (a failure, a kill) is reported and stops the rest:
  they get their grace period, and the exit status is 1. A service manager restarts the whole.

With ``ready``, each worker is handed a one-way pipe (``ready=``) on which it sends one message
once it serves; ``ready`` is called with the first ``count`` messages, in worker order, once
every first worker has sent its own (the relay prints ``listening on`` then, not before every
worker listens).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

__all__ = ["run_workers", "watch_parent"]

logger = logging.getLogger("proxyproto")


def run_workers(
    count: int,
    target: Callable[..., None],
    kwargs: Mapping[str, Any],
    name: str,
    *,
    forward_signals: bool = False,
    ready: Callable[[list[Any]], None] | None = None,
) -> int:
    """Run ``count`` processes of ``target(**kwargs, shutdown_event=...)`` until a signal.

    With ``ready``, ``target`` is also given ``number`` (its slot, from 1) and ``ready`` (the
    pipe's sending end). Returns 0 when stopped by a signal, 1 when a worker failed.
    """
    from multiprocessing import get_context
    from multiprocessing.connection import wait

    context = get_context("spawn")
    shutdown_event = context.Event()
    processes: dict[BaseProcess, int] = {}
    # Slot -> the reading end of the first worker's pipe, until it has said it serves.
    waiting: dict[int, Connection] = {}
    messages: dict[int, Any] = {}
    signals = 0

    def start(number: int) -> None:
        extra: dict[str, Any] = {}
        if ready is not None:
            reader, writer = context.Pipe(duplex=False)
            extra = {"number": number, "ready": writer}
        process = context.Process(
            target=target,
            kwargs={**kwargs, **extra, "shutdown_event": shutdown_event},
            name=f"{name}-{number}",
        )
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, handler)
        processes[process] = number
        if ready is not None:
            writer.close()  # the worker has its own copy
            if len(messages) < count:
                waiting[number] = reader
            else:
                reader.close()  # a replacement: nobody waits for it

    def on_signal(signum: int, frame: object) -> None:
        nonlocal signals
        signals += 1
        shutdown_event.set()
        if forward_signals and signals <= 2:
            for process in processes:
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGTERM)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    killed = False
    try:
        for signum in previous:
            signal.signal(signum, on_signal)
        for number in range(1, count + 1):
            start(number)
        while processes:
            wait([*(process.sentinel for process in processes), *waiting.values()], timeout=0.5)
            for number, reader in list(waiting.items()):
                if reader.poll():
                    # EOF: exited before it served; its exit status tells.
                    with contextlib.suppress(EOFError):
                        messages[number] = reader.recv()
                    reader.close()
                    del waiting[number]
                    if len(messages) == count and ready is not None:
                        ready([messages[slot] for slot in sorted(messages)])
            if signals > (2 if forward_signals else 1) and not killed:
                logger.warning(
                    "%s signal: killing %d worker(s)",
                    "third" if forward_signals else "second",
                    len(processes),
                )
                for process in processes:
                    process.kill()
                killed = True
            for process in [process for process in processes if process.exitcode is not None]:
                process.join()
                number = processes.pop(process)
                if shutdown_event.is_set():
                    continue
                if process.exitcode == 0:  # --max-requests, or a worker stopped alone
                    logger.info("worker %s exited: starting another", process.pid)
                    start(number)
                else:
                    logger.error(
                        "worker %s exited with status %s: stopping", process.pid, process.exitcode
                    )
                    status = 1
                    shutdown_event.set()
                    if forward_signals:
                        for other in processes:
                            if other.pid is not None and other.exitcode is None:
                                os.kill(other.pid, signal.SIGTERM)
    finally:
        shutdown_event.set()
        for reader in waiting.values():
            reader.close()
        for process in processes:  # only after an exception here
            process.terminate()
        for process in processes:
            process.join(5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def watch_parent(on_gone: Callable[[], None], interval: float = 0.5) -> None:
    """Call ``on_gone()`` once, from a daemon thread, when this process's parent has exited."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(interval)
        on_gone()

    threading.Thread(target=watch, name="proxyproto-parent-watch", daemon=True).start()
