"""Optional packages: which extra brings a missing module, and the one line that says so.

The integrations need packages the core does not (``pyproject.toml``'s optional dependencies):
when one is missing, the user is told the extra to install, with the command that works from a
checkout (the package is not on PyPI), instead of a traceback ending in ``No module named
'sniffio'`` or anyio's ``LookupError: No such backend: trio``. :func:`require` wraps an import in
the integrations' modules; the command line turns the error into one line with :func:`missing`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["install_command", "missing", "require"]

#: The top-level module -> the extra that installs it.
_EXTRA_OF = {
    "trio": "trio",
    "hypercorn": "hypercorn",
    "sniffio": "hypercorn",
    "uvicorn": "uvicorn",
    "httptools": "uvicorn",
    "httpx": "testing",
    "httpcore": "testing",
    "scapy": "pcap",
    "prometheus_client": "prometheus",
    "opentelemetry": "opentelemetry",
}


def install_command(extra: str) -> str:
    """The command that installs ``extra`` from a checkout of the repository."""
    return f"pip install '.[{extra}]'"


def _message(module: str, extra: str, needed_by: str) -> str:
    return f"{needed_by} needs {module}, which is not installed: {install_command(extra)}"


def missing(error: BaseException, needed_by: str) -> str | None:
    """The one line for ``error`` if it (or what caused it) is a missing optional module.

    ``needed_by`` names what needs it (``proxyproto echo --backend trio``, ``proxyproto.trio``).

    Recognises :class:`ModuleNotFoundError` for a module of an extra, and anyio's
    :class:`LookupError` for a backend whose package is missing (anyio raises it *from* the
    :class:`ModuleNotFoundError`). ``None`` for anything else: the caller re-raises it.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            module = seen.name.partition(".")[0]
            extra = _EXTRA_OF.get(module)
            if extra is not None:
                return _message(module, extra, needed_by)
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def require(needed_by: str) -> Iterator[None]:
    """Around an integration's imports: a missing module's error names the extra to install.

    >>> with require("proxyproto.trio"):  # doctest: +SKIP
    ...     import trio
    ModuleNotFoundError: proxyproto.trio needs trio, which is not installed: pip install '.[trio]'
    """
    try:
        yield
    except ModuleNotFoundError as error:
        message = missing(error, needed_by)
        if message is None:
            raise
        raise ModuleNotFoundError(message, name=error.name) from None
