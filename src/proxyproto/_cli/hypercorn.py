"""``proxyproto hypercorn``: Hypercorn's command line, with a PROXY handshake on every socket.

:func:`main` (``proxyproto hypercorn APP ...``) reads Hypercorn's options and the PROXY options,
loads the application, binds the sockets once in this process and prints where it listens, then
serves in this process or in worker processes (:mod:`.supervisor`). Nothing here needs
Hypercorn to be imported until :func:`main` runs: ``proxyproto --help`` works without it.

The proxy options cross the process boundary as plain data
(:class:`proxyproto._cli.supervisor.ProxyOptions`): a policy from
:func:`proxyproto.trusted_proxies` is a closure, which does not pickle.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from proxyproto._core.extras import require
from proxyproto._handshake.config import ProxyProtocolConfig
from proxyproto._handshake.policy import Policy

from .args import network, positive_int, seconds
from .metrics import add_metrics_option, check_metrics, start_metrics, start_worker_metrics
from .output import log_to_stderr

if TYPE_CHECKING:
    from hypercorn.config import Config

    from .args import Subparsers

__all__ = ["add", "main"]

_PROG = "proxyproto hypercorn"
_WORKER_CLASSES = ("asyncio", "trio")


def add(subparsers: Subparsers) -> None:
    # Every argument, options included, goes to main(), which has its own parser: no prefix
    # character here, so nothing after the command is taken for an option.
    parser = subparsers.add_parser(
        "hypercorn",
        help="run an ASGI app with Hypercorn, N workers, PROXY headers on every connection",
        add_help=False,
        prefix_chars="\0",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(run=_hypercorn, command="hypercorn")


def _hypercorn(args: argparse.Namespace) -> int:
    return main(args.argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``proxyproto hypercorn`` with ``argv`` (default: ``sys.argv[1:]``): Hypercorn's command
    line, with a PROXY handshake on every bound socket.

    Binds the sockets once, prints ``listening on HOST:PORT, ...`` (the real ports), then serves
    in this process (``--workers 1`` without ``--max-requests``) or in that many ``spawn`` worker
    processes sharing the sockets, until SIGINT or SIGTERM: each worker stops accepting, gives
    open connections ``graceful_timeout``, runs the lifespan shutdown and exits. A worker exiting
    with a failure status stops the others; one exiting cleanly (``--max-requests``) is replaced.
    Returns the exit status: 0 when stopped by a signal, 1 when it cannot start or a worker
    failed, 2 for a usage error.
    """
    parser = _make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else 0 if code is None else 1
    with require(_PROG):
        from hypercorn.utils import NoAppError, load_application, repr_socket_addr

        from .supervisor import ProxyOptions, run_in_process, supervise

    try:
        config = _hypercorn_config(args)
    except (OSError, ValueError, TypeError) as error:
        return _fail(f"invalid configuration: {error}")
    if config.worker_class not in _WORKER_CLASSES:
        return _fail(f"worker class {config.worker_class!r} is not supported: asyncio or trio")
    if config.quic_bind:
        return _fail("QUIC (quic_bind) is not supported behind the PROXY protocol")
    options = ProxyOptions(
        trusted=tuple(args.trusted or ()),
        policy=None if args.policy is None else Policy(args.policy),
        header_timeout=args.header_timeout,
        tls_extension=args.tls_extension,
    )
    options.config()  # argparse checked each part; nothing left to refuse
    if args.metrics is not None and check_metrics("hypercorn"):
        return 1

    log_to_stderr()
    try:
        # In the parent too, so that a wrong APP is one line here, not a traceback per worker.
        app = load_application(config.application_path, config.wsgi_max_body_size)
    except (NoAppError, ImportError) as error:
        return _fail(f"cannot load {config.application_path!r}: {error}")
    try:
        sockets = config.create_sockets()
    except OSError as error:
        return _fail(f"cannot listen on {', '.join(config.bind)}: {error.strerror or error}")
    listening = (*sockets.secure_sockets, *sockets.insecure_sockets)
    for sock in listening:
        # Listening before the workers start: a connection made now waits in the backlog.
        sock.listen(config.backlog)
    bound = [repr_socket_addr(sock.family, sock.getsockname()) for sock in listening]
    # A worker that has served --max-requests exits, and only a parent can replace it: then
    # even one worker gets a process of its own, as with Hypercorn's own command line.
    in_process = config.workers <= 1 and config.max_requests is None
    stop_metrics = None
    try:
        if args.metrics is not None and in_process:
            started = start_metrics(args.metrics, "hypercorn")
            if isinstance(started, int):
                return started
            stop_metrics = started
        elif args.metrics is not None:
            # The workers write their counts into a directory; /metrics serves their sums.
            shared = start_worker_metrics(args.metrics, "hypercorn")
            if isinstance(shared, int):
                return shared
            directory, stop_metrics = shared
            options = attrs.evolve(options, metrics_dir=directory)
        print(f"listening on {', '.join(bound)}", flush=True)
        if in_process:
            return run_in_process(app, config, options, sockets)
        return supervise(config, options, sockets)
    finally:
        for sock in listening:
            sock.close()
        if stop_metrics is not None:
            stop_metrics()


def _make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=(
            "Run an ASGI (or WSGI) application with Hypercorn, reading a PROXY protocol header on\n"
            "every connection first, so that scope['client'] is the client from the header.\n\n"
            "Hypercorn's options as on its own command line (a --config file first, then the\n"
            "options given here), plus the PROXY options. --workers N runs N processes sharing\n"
            "the bound sockets; SIGINT or SIGTERM stops them gracefully (--graceful-timeout).\n"
            "--metrics HOST:PORT serves Prometheus metrics of the handshakes, summed across the\n"
            "workers (each writes its counts to a temporary directory every 0.5 s).\n"
            "Exit status 0 when stopped by a signal, 1 when it cannot start or a worker failed."
        ),
        epilog=(
            "examples:\n"
            "  proxyproto hypercorn myapp:app --bind 0.0.0.0:8000 --workers 4 \\\n"
            "      --trusted 10.0.0.0/8\n"
            "  proxyproto hypercorn myapp:app --config hypercorn.toml --worker-class trio"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("application", metavar="APP", help="the application: module:attribute")
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="Hypercorn's configuration: a TOML file, file:config.py or python:module.object",
    )
    parser.add_argument(
        "-b",
        "--bind",
        action="append",
        metavar="HOST:PORT",
        help="where to listen (repeat for more; port 0 picks a free one; default 127.0.0.1:8000)",
    )
    parser.add_argument(
        "--insecure-bind",
        action="append",
        metavar="HOST:PORT",
        help="where to listen without TLS when --certfile is given (repeat for more)",
    )
    parser.add_argument("-w", "--workers", type=positive_int, metavar="N", help="worker processes")
    parser.add_argument("-k", "--worker-class", choices=_WORKER_CLASSES, help="the event loop")
    parser.add_argument("--certfile", metavar="FILE", help="TLS certificate (after the header)")
    parser.add_argument("--keyfile", metavar="FILE", help="TLS private key")
    parser.add_argument("--ca-certs", metavar="FILE", help="CA certificates for client certs")
    parser.add_argument(
        "--graceful-timeout",
        type=seconds,
        metavar="S",
        help="seconds open connections get to finish after SIGINT/SIGTERM",
    )
    parser.add_argument("--keep-alive", type=seconds, metavar="S", dest="keep_alive_timeout")
    parser.add_argument("--backlog", type=positive_int, metavar="N")
    parser.add_argument("--root-path", metavar="PATH")
    parser.add_argument("--max-requests", type=positive_int, metavar="N")
    parser.add_argument("--access-logfile", metavar="FILE", help="'-' for stdout")
    parser.add_argument("--error-logfile", metavar="FILE", help="'-' for stderr")
    parser.add_argument("--log-level", metavar="LEVEL")
    proxy = parser.add_argument_group("PROXY protocol")
    proxy.add_argument(
        "--trusted",
        action="append",
        type=network,
        metavar="CIDR",
        help="a proxy's address or network (repeat for more): they get --policy, anyone else"
        " REJECT (served directly, a header refused)",
    )
    proxy.add_argument(
        "--policy",
        choices=[policy.value for policy in Policy],
        help="the policy (for --trusted peers, with --trusted); default: require",
    )
    proxy.add_argument(
        "--header-timeout",
        type=seconds,
        metavar="S",
        help="seconds a client gets to send its header"
        f" (default {ProxyProtocolConfig().header_timeout:g})",
    )
    proxy.add_argument(
        "--tls-extension",
        action="store_true",
        help="give the app the ASGI TLS extension (scope['extensions']['tls']) from the header's"
        " SSL TLV, when it says the client's connection was TLS (TLS ending at the proxy)",
    )
    add_metrics_option(proxy)
    return parser


def _hypercorn_config(args: argparse.Namespace) -> Config:
    """Hypercorn's config as its command line builds it: the file, then the options given."""
    from hypercorn.config import Config

    path: str | None = args.config
    if path is None:
        config = Config()
    elif path.startswith("python:"):
        config = Config.from_object(path[len("python:") :])
    elif path.startswith("file:"):
        config = Config.from_pyfile(path[len("file:") :])
    else:
        config = Config.from_toml(path)
    config.application_path = args.application
    renamed = {
        "access_logfile": "accesslog",
        "error_logfile": "errorlog",
        "log_level": "loglevel",
        "bind": "bind",
        "insecure_bind": "insecure_bind",
    }
    for option in (
        "workers",
        "worker_class",
        "certfile",
        "keyfile",
        "ca_certs",
        "graceful_timeout",
        "keep_alive_timeout",
        "backlog",
        "root_path",
        "max_requests",
        *renamed,
    ):
        value = getattr(args, option)
        if value is not None:
            setattr(config, renamed.get(option, option), value)
    return config


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 1
