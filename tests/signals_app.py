"""The ASGI app of tests/test_hypercorn_signals.py: ``/slow`` answers after a second.

It prints ``slow request started`` from a second task once the request's own task is asleep
(in the server's native library, imported here: nothing is imported lazily on the way), so
that a signal sent on that line finds the process idle, as a real Ctrl-C usually does. On trio
that task is protected from KeyboardInterrupt: trio raises it in whatever unprotected code runs
when SIGINT comes, and in the app's own code plain Hypercorn (and ours) answer 500 and serve on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sniffio
import trio

from asgi_helpers import serve_lifespan

BODY = b"done"


async def announce() -> None:
    print("slow request started", flush=True)


announce_ki_protected = trio.lowlevel.enable_ki_protection(announce)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if sniffio.current_async_library() == "trio":
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announce_ki_protected)
            await trio.sleep(1)
    else:
        task = asyncio.get_running_loop().create_task(announce())
        await asyncio.sleep(1)
        await task
    headers = [(b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})
