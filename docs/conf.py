"""Sphinx configuration. Build with ``nox -s docs`` (warnings are errors, doctests run)."""

from importlib.metadata import version as _version

project = "proxyproto"
author = "The proxyproto developers"
copyright = "the proxyproto developers"
release = _version("proxyproto")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
]

# The docs build without network access: no inventory is downloaded. Cross-references to the
# standard library stay plain text.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"

# Docstring examples and the ``.. doctest::`` blocks run with these names in scope.
doctest_global_setup = """
import anyio
import anyio.abc
import trio
import proxyproto as pp
from proxyproto import *
"""

html_theme = "alabaster"
html_title = f"proxyproto {release}"
