"""Header fields as text for people: log lines, the command line's output, its JSON.

A header's text fields come from the wire: an AUTHORITY can hold ANSI escapes or a newline, a UNIX
path any byte (the parser keeps a byte that is not UTF-8 as a lone surrogate, as ``os.fsdecode``
does, so that the path still names the same file). Printed as they are, they forge log lines,
drive the terminal or fail to encode. Everything that shows a field to a person goes through
:func:`printable` (addresses through :func:`format_address`); JSON goes through :func:`json_text`.
Neither raises, whatever the string.

This is about text for humans and logs only; what a server expects as its client address
(``scope["client"]``) is decided elsewhere.
"""

from __future__ import annotations

__all__ = ["format_address", "json_text", "printable"]

#: An address as the header model and anyio give it: ``(host, port)`` (anyio's IPv6 tuples have
#: two more items, ignored), a UNIX path, or ``None``.
Address = tuple[object, ...] | str | None

# surrogateescape writes byte 0xNN (0x80-0xFF) that is not UTF-8 as U+DC00 + 0xNN.
_ESCAPED_BYTES = range(0xDC80, 0xDD00)


def _escape(char: str) -> str:
    """One character as ``repr`` writes it, or the byte it stands for as ``\\xNN``."""
    code = ord(char)
    if code in _ESCAPED_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    if char == "\\":
        return "\\\\"
    return repr(char)[1:-1]  # \n, \t, \x1b, \u202e, \udfff, ...


def printable(text: str) -> str:
    """``text`` with what a terminal or a log would not show as itself written as an escape.

    Control and format characters (``\\x1b``, ``\\n``, ``\\u202e``, ...) are written as ``repr``
    writes them, a byte that is not UTF-8 as ``\\xNN``, and the backslash as ``\\\\``, so that an
    escape in the output always means one in the field. Printable text, non-ASCII included, is
    unchanged.

    >>> printable("example.com")
    'example.com'
    >>> print(printable("a\\x1b[2Jb\\n/tmp/\\udcff"))
    a\\x1b[2Jb\\n/tmp/\\xff
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(char if char.isprintable() and char != "\\" else _escape(char) for char in text)


def json_text(text: str) -> str:
    """``text`` for a JSON string: a byte that is not UTF-8 as the four characters ``\\xNN``.

    JSON writes control characters itself (``\\u001b``); a lone surrogate, though, is not text,
    and JSON parsers other than Python's refuse or replace it. Other text is unchanged.

    >>> json_text("/tmp/\\udcff")
    '/tmp/\\\\xff'
    """
    if not any("\ud800" <= char <= "\udfff" for char in text):
        return text
    return "".join(_escape(char) if "\ud800" <= char <= "\udfff" else char for char in text)


def format_address(address: Address, *, unix_prefix: str = "") -> str:
    """``host:port``, ``[ipv6]:port``, a UNIX path (after ``unix_prefix``), or ``-`` for none.

    Printable whatever the address holds (:func:`printable`); an empty UNIX path (an unnamed
    socket) is ``unix_prefix`` followed by ``(unnamed)``.

    >>> format_address(("2001:db8::1", 443))
    '[2001:db8::1]:443'
    >>> format_address("\\x00abstract", unix_prefix="unix:")
    'unix:\\\\x00abstract'
    """
    if address is None:
        return "-"
    if isinstance(address, str):
        return unix_prefix + (printable(address) if address else "(unnamed)")
    host, port = printable(str(address[0])), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
