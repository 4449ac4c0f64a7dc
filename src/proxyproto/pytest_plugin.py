"""The pytest plugin of :mod:`proxyproto.testing`: fixtures for testing a server behind the PROXY
protocol, registered under the ``pytest11`` entry point ``proxyproto.pytest_plugin`` (the name
of its module), so that every project that installs proxyproto has them, with no
``conftest.py`` import; naming it again (``-p proxyproto.pytest_plugin``, ``pytest_plugins``)
is harmless.

- ``fake_balancer``: an async factory; ``await fake_balancer(target, header, **options)`` starts a
  :func:`proxyproto.testing.fake_balancer` in front of ``target`` and returns the
  :class:`~proxyproto.testing.FakeBalancer`; every balancer started stops after the test.
- ``proxy_connection``: an async factory; ``await proxy_connection(host, port, header,
  payload)`` is :func:`proxyproto.testing.open_connection`, and the stream is closed after the
  test.

Both are async fixtures for tests marked ``@pytest.mark.anyio`` (anyio's own pytest plugin, which
anyio installs, runs them on the ``anyio_backend`` of the test: asyncio and trio).

This module imports only pytest when pytest loads it: proxyproto's adapters, anyio and httpx are
imported when a fixture runs, so the plugin costs nothing to projects that do not use it, and a
missing optional package fails the test that needs it, naming the extra to install. Disable it
with ``-p no:proxyproto.pytest_plugin``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from anyio.abc import ByteStream

    from proxyproto.testing import FakeBalancer, HeaderChoice, HeaderSpec

__all__ = ["fake_balancer", "proxy_connection"]


@pytest.fixture
async def fake_balancer(anyio_backend: Any) -> AsyncIterator[Any]:
    """``await fake_balancer(("127.0.0.1", port), header, split_at=[...])``: a
    :class:`~proxyproto.testing.FakeBalancer` in front of the server under test, stopped after
    the test. The arguments are :func:`proxyproto.testing.fake_balancer`'s."""
    import anyio

    from proxyproto import testing

    # The balancers serve in this task group, which outlives the test: a test may start one
    # inside scopes of its own (a server's task group) and leave them before the teardown.
    async with anyio.create_task_group() as task_group:

        async def start(
            target: tuple[str, int], header: HeaderChoice = None, **options: Any
        ) -> FakeBalancer:
            host = options.pop("host", "127.0.0.1")
            balancer = testing.FakeBalancer(target, header, **options)
            await balancer.start(task_group, host)
            return balancer

        yield start
        task_group.cancel_scope.cancel()


@pytest.fixture
async def proxy_connection(anyio_backend: Any) -> AsyncIterator[Any]:
    """``await proxy_connection(host, port, header, payload)``: a stream that has sent ``header``
    and ``payload`` (:func:`proxyproto.testing.open_connection`), closed after the test."""
    from proxyproto import testing

    async with AsyncExitStack() as stack:

        async def connect(
            host: str, port: int, header: HeaderSpec, payload: bytes = b"", **options: Any
        ) -> ByteStream:
            stream = await testing.open_connection(host, port, header, payload, **options)
            return await stack.enter_async_context(stream)

        yield connect
