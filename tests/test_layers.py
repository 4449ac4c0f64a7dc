"""The layout: the codec is bound into the model by its package, whatever is imported first.

The layers themselves, the sans-IO core and the absence of import cycles are checked by
``lint-imports`` (``[tool.importlinter]`` in pyproject.toml, run by ``nox -s lint``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["proxyproto._core.model", "proxyproto._core.v1", "proxyproto._core.tlv"]
)
def test_header_codec_methods_work_whatever_is_imported_first(module: str) -> None:
    # A fresh interpreter, importing one core module and nothing else of ours first.
    code = (
        f"import {module}\n"
        "from proxyproto._core.model import Header\n"
        "data = Header.proxy(('192.0.2.1', 1), ('198.51.100.7', 443)).to_bytes()\n"
        "header, size = Header.parse(data)\n"
        "assert size == len(data) and header.source == ('192.0.2.1', 1), header\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
