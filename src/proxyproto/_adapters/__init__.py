"""The I/O adapters: anyio's listener and streams, the asyncio-protocol handshake, UDP, and the
accept loop and read bound they share. Built on :mod:`proxyproto._handshake`.
"""
