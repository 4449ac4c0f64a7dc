"""The ``proxyproto`` command: inspect and build PROXY protocol headers, serve and send them.

One module per subcommand (:mod:`.parse`, :mod:`.build`, :mod:`.echo`, :mod:`.send`,
:mod:`.relay`, :mod:`.hypercorn`, :mod:`.demo`), each with ``add(subparsers)``, which declares its
options and sets ``args.run``, the function that runs it and returns the exit status. The
argument types they share, and what the PROXY options turn into, are in :mod:`.args`; what they
print, in :mod:`.output`. :func:`main` dispatches. Exit statuses:

- 0: ok (``echo``, ``relay``, ``hypercorn``: stopped by SIGINT or SIGTERM);
- 1: ``parse``: an invalid or incomplete header; ``echo``, ``relay``, ``hypercorn``: it cannot
  listen (``hypercorn``: or the application cannot be loaded, or a worker failed); ``send``: the
  connection was refused or failed, or the header cannot be encoded; any command: an optional
  package it needs is not installed (the line names the extra to install); one line on stderr;
- 2: a usage error (argparse's);
- 130: ``send`` interrupted by Ctrl-C.

Addresses on the command line are ``HOST:PORT`` for IPv4, ``[HOST]:PORT`` for IPv6 and
``unix:/path`` for UNIX sockets: :func:`.args.split_address` reads them and
:func:`.output.format_address` writes them, so what ``parse`` prints can be given back to
``build``.

The subcommand modules are imported when the parser is built, not with this package: the relay
(:mod:`proxyproto._cli.relay_server`) imports :mod:`.args` and :mod:`.output`, and :mod:`.relay`
imports the relay.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence

import proxyproto as pp
from proxyproto._core.extras import missing

from .args import PROG
from .output import fail

__all__ = ["main"]


def _make_parser() -> argparse.ArgumentParser:
    from . import build, demo, echo, hypercorn, parse, relay, send

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, build, serve and send HAProxy PROXY protocol headers (v1 and v2).",
        epilog="examples:\n  proxyproto demo\n  proxyproto parse --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {pp.__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in (parse, build, echo, send, relay, hypercorn, demo):
        command.add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``proxyproto`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 ok, 1 invalid or incomplete header, 2 usage error (argparse's
    exits, for ``--help`` and ``--version`` too, become return values).
    """
    # Header fields are printed escaped (proxyproto._core.text), but a printable non-ASCII character
    # still cannot be written to an ASCII-only stdout: escape it there rather than die.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = _make_parser()
    try:
        args = parser.parse_args(argv)
        status: int = args.run(args)
    except SystemExit as exit_:
        # argparse exits for --help, --version and usage errors; return its status instead.
        code = exit_.code
        return code if isinstance(code, int) else 0 if code is None else 1
    except (ModuleNotFoundError, LookupError) as error:
        # An optional package that is not installed (trio for --backend trio, Hypercorn...).
        backend = getattr(args, "backend", None)
        message = missing(error, f"--backend {backend}" if backend == "trio" else args.command)
        if message is None:
            raise
        return fail(message)
    return status
