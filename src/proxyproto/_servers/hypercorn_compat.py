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
        "proxyproto._servers.hypercorn_trio.HypercornStream (stream.socket gives scope['client'])"
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
        "3135653c35b54ba0": "0.17.0 0.17.3",
        "faa7517d9ac9212c": "0.18.0",
    },
    "hypercorn.asyncio.run.worker_serve": {
        "0e74c5138082bc45": "0.17.0 0.17.3",
        "89a5d0d2713b2117": "0.18.0",
    },
    "hypercorn.trio.tcp_server.TCPServer.__init__": {
        "ba9078bf1eda3521": "0.17.0 0.17.3",
        "501e8d9bd3f7db21": "0.18.0",
    },
    "hypercorn.trio.tcp_server.TCPServer.run": {
        "2219efa1034b9d07": "0.17.0 0.17.3",
        "39a9dde15a196fa7": "0.18.0",
    },
    "hypercorn.asyncio.tcp_server.TCPServer.__init__": {"84bd70ebd3f10028": "0.17.0 0.17.3 0.18.0"},
    "hypercorn.asyncio.tcp_server.TCPServer.run": {
        "9ddf35b581711532": "0.17.0 0.17.3",
        "20ca014d86834f51": "0.18.0",
    },
    "hypercorn.trio.lifespan.Lifespan.__init__": {
        "e9d3169b101c9e9e": "0.17.0 0.17.3",
        "36d11925ed42b18c": "0.18.0",
    },
    "hypercorn.asyncio.lifespan.Lifespan.__init__": {"b2fcd69f617e11a2": "0.17.0 0.17.3 0.18.0"},
    "hypercorn.trio.worker_context.WorkerContext.__init__": {
        "44a6e3f5fdcdaa3b": "0.17.0 0.17.3",
        "b7912f7abc3ed26c": "0.18.0",
    },
    "hypercorn.asyncio.worker_context.WorkerContext.__init__": {
        "44a6e3f5fdcdaa3b": "0.17.0 0.17.3",
        "b7912f7abc3ed26c": "0.18.0",
    },
    "hypercorn.utils.wrap_app": {"f8758eababb1035e": "0.17.0 0.17.3", "a90be8b983e2b02b": "0.18.0"},
    "hypercorn.utils.repr_socket_addr": {"fa8bc3213e19d88c": "0.17.0 0.17.3 0.18.0"},
    "hypercorn.config.Config.create_sockets": {"8d43601463a117f2": "0.17.0 0.17.3 0.18.0"},
    "hypercorn.config.Config.create_ssl_context": {
        "abe310609b9d1c85": "0.17.0 0.17.3",
        "4e083291afb1f281": "0.18.0",
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
