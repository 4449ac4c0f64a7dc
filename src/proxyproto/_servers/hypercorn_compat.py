"""Hypercorn's internals that :mod:`proxyproto.hypercorn` depends on, and their fingerprints.

Hypercorn has no hook for wrapping its listeners, so :func:`proxyproto.hypercorn.serve` runs a
worker of its own: a copy of Hypercorn's ``worker_serve`` (trio and asyncio) that builds
Hypercorn's per-connection classes itself. :data:`USES` lists every Hypercorn object that copy
mirrors or calls, with what of ours depends on it; :data:`KNOWN` is each one's fingerprint
(:mod:`proxyproto._servers.fingerprint`) in the releases checked. ``tests/test_server_compat.py``
fails, naming the object, when the installed Hypercorn has one that matches none of them.

To admit a new release: read what changed in the named objects, follow it in
``proxyproto/hypercorn.py``, run ``nox -s servers``, then add the release's fingerprints here
(``python -m proxyproto._servers.hypercorn_compat`` prints them).
"""

from __future__ import annotations

from .fingerprint import drift, record

__all__ = ("KNOWN", "USES", "check")

#: Each Hypercorn object we mirror or call, and what of ours depends on it.
USES: dict[str, str] = {
    "hypercorn.trio.run.worker_serve": "proxyproto.hypercorn._trio_worker (a copy of it)",
    "hypercorn.asyncio.run.worker_serve": "proxyproto.hypercorn._asyncio_worker (a copy of it)",
    "hypercorn.trio.tcp_server.TCPServer.__init__": "proxyproto.hypercorn._trio_connection",
    "hypercorn.trio.tcp_server.TCPServer.run": (
        "proxyproto._hypercorn_trio.HypercornStream (stream.socket gives scope['client'])"
    ),
    "hypercorn.asyncio.tcp_server.TCPServer.__init__": "proxyproto.hypercorn._asyncio_tcp_server",
    "hypercorn.asyncio.tcp_server.TCPServer.run": (
        "proxyproto.hypercorn._ProxiedStreamWriter, _StreamReader, _StreamWriter (what it reads)"
    ),
    "hypercorn.trio.lifespan.Lifespan.__init__": "proxyproto.hypercorn._trio_worker",
    "hypercorn.asyncio.lifespan.Lifespan.__init__": "proxyproto.hypercorn._asyncio_worker",
    "hypercorn.trio.worker_context.WorkerContext.__init__": "proxyproto.hypercorn._trio_worker",
    "hypercorn.asyncio.worker_context.WorkerContext.__init__": (
        "proxyproto.hypercorn._asyncio_worker"
    ),
    "hypercorn.utils.wrap_app": "proxyproto.hypercorn.serve",
    "hypercorn.utils.repr_socket_addr": "proxyproto.hypercorn._bind",
    "hypercorn.config.Config.create_sockets": "both workers of proxyproto.hypercorn",
    "hypercorn.config.Config.create_ssl_context": "both workers of proxyproto.hypercorn",
}

#: Each object's fingerprints, and the Hypercorn releases checked that have each.
KNOWN: dict[str, dict[str, str]] = {
    "hypercorn.trio.run.worker_serve": {
        "5989fc6677b1ede8": "0.17.0 0.17.3",
        "91a2dd8f7e7c82fb": "0.18.0",
    },
    "hypercorn.asyncio.run.worker_serve": {
        "7afd08f2168e97f2": "0.17.0 0.17.3",
        "be69cf8d002a9f84": "0.18.0",
    },
    "hypercorn.trio.tcp_server.TCPServer.__init__": {
        "b6d47970de237da4": "0.17.0 0.17.3",
        "82bea8eb4854d91f": "0.18.0",
    },
    "hypercorn.trio.tcp_server.TCPServer.run": {
        "6829aff6eb3a4a94": "0.17.0 0.17.3",
        "30cfbec0b62c2e20": "0.18.0",
    },
    "hypercorn.asyncio.tcp_server.TCPServer.__init__": {"762f7f9c1fd1439f": "0.17.0 0.17.3 0.18.0"},
    "hypercorn.asyncio.tcp_server.TCPServer.run": {
        "7d9b5953c5ce88bc": "0.17.0 0.17.3",
        "bae4df0e7b11f956": "0.18.0",
    },
    "hypercorn.trio.lifespan.Lifespan.__init__": {
        "709662982496b31a": "0.17.0 0.17.3",
        "d98b8eb276afe426": "0.18.0",
    },
    "hypercorn.asyncio.lifespan.Lifespan.__init__": {"214ba20a4d84a432": "0.17.0 0.17.3 0.18.0"},
    "hypercorn.trio.worker_context.WorkerContext.__init__": {
        "a30ff311492525aa": "0.17.0 0.17.3",
        "4404b6eb656a10a0": "0.18.0",
    },
    "hypercorn.asyncio.worker_context.WorkerContext.__init__": {
        "a30ff311492525aa": "0.17.0 0.17.3",
        "4404b6eb656a10a0": "0.18.0",
    },
    "hypercorn.utils.wrap_app": {"676d9a162456c2da": "0.17.0 0.17.3", "6d5023f27d0911a8": "0.18.0"},
    "hypercorn.utils.repr_socket_addr": {"bef4bf9e4b72cf37": "0.17.0 0.17.3 0.18.0"},
    "hypercorn.config.Config.create_sockets": {"9992605c4bd6849e": "0.17.0 0.17.3 0.18.0"},
    "hypercorn.config.Config.create_ssl_context": {
        "427ea7b6651f3f1e": "0.17.0 0.17.3",
        "38ddef61ae9277d5": "0.18.0",
    },
}


def check() -> list[str]:
    """What the installed Hypercorn changed in :data:`USES`, one line each (empty: nothing)."""
    return drift("hypercorn", KNOWN, USES, "proxyproto/_servers/hypercorn_compat.py")


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    import pprint
    from importlib import metadata

    # KNOWN with the installed release recorded: paste it over KNOWN above.
    pprint.pprint(record(list(USES), KNOWN, metadata.version("hypercorn")), width=96)
