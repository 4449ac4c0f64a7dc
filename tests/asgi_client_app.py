"""An ASGI application for ``proxyproto hypercorn`` tests (tests/test_hypercorn_cli.py).

Imported by the server's worker processes (``asgi_client_app:app`` with ``tests`` on
``PYTHONPATH``). Every path answers a JSON object with ``scope["client"]`` and the worker's pid,
except ``/slow`` (prints ``slow request started`` on stdout, then answers after a second) and
``/crash`` (ends the worker process with status 3, no answer).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio

from asgi_helpers import send_ok, serve_lifespan


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    assert scope["type"] == "http"
    if scope["path"] == "/crash":
        os._exit(3)
    if scope["path"] == "/slow":
        print("slow request started", flush=True)
        await anyio.sleep(1)
    client = scope["client"]
    body = json.dumps({"client": None if client is None else list(client), "pid": os.getpid()})
    await send_ok(send, body.encode())
    sys.stdout.flush()
