"""The sans-IO protocol core: the header model, the v1/v2 codecs, the parser and the builder.

Nothing here imports an I/O framework (anyio, trio, sniffio, asyncio); everything above builds on
it. Layers and their contract: ``[tool.importlinter]`` in pyproject.toml.
"""
