"""The handshake's decisions, without I/O: the policy, the configuration and the engine that
every surface (anyio, trio, asyncio protocols, UDP) calls. Imports only :mod:`proxyproto._core`.
"""
