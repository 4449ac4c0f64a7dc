"""The sans-IO protocol core: the header model, the v1/v2 codecs, the parser and the builder.

Nothing here imports an I/O framework (anyio, trio, sniffio, asyncio); everything above builds on
it. Layers and their contract: ``[tool.importlinter]`` in pyproject.toml.

:class:`~proxyproto.Header`'s codec methods (``proxy``, ``parse``, ``to_bytes``) call the builder
and the parser, which build Headers: the model cannot import them, so this package, imported
before any of its modules, binds them into the model once all three are loaded.
"""

from . import builder, model, parser

# (the model declares the two names for the type checker, as imports under TYPE_CHECKING)
model._builder = builder  # type: ignore[attr-defined]
model._parser = parser  # type: ignore[attr-defined]
