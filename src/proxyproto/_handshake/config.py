"""How a server reads PROXY headers: one value shared by every adapter."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import attrs

from proxyproto._core.model import Header
from proxyproto._core.parser import MAX_HEADER_SIZE

from .policy import PeerAddress, Policy, PolicyCallable

__all__ = ["ProxyProtocolConfig", "Validator"]

#: Called with the parsed header and the real peer's address; returns (or awaits) ``True`` to
#: accept. It may also raise :class:`HeaderRejected` with its own reason.
Validator: TypeAlias = Callable[[Header, PeerAddress], bool | Awaitable[bool]]


def _positive_finite(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of seconds, not {value!r}")
    if not (0 < value < math.inf):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, not {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of seconds, not {value!r}")
    if not 0 <= value < math.inf:
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, not {value!r}")


def _header_size(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_header_size must be an int, not {value!r}")
    if not 16 <= value <= MAX_HEADER_SIZE:
        raise ValueError(f"max_header_size must be from 16 to {MAX_HEADER_SIZE}, not {value}")


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_pending_handshakes must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"max_pending_handshakes must be at least 1, not {value!r}")


def _to_versions(value: int | Iterable[int]) -> frozenset[int]:
    if isinstance(value, int):
        return frozenset((value,))
    return frozenset(value)


def _versions(instance: object, attribute: attrs.Attribute[frozenset[int]], value: Any) -> None:
    if not value or not value <= {1, 2}:
        raise ValueError(f"versions must be a non-empty subset of {{1, 2}}, not {set(value)}")


def _policy(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Policy) and not callable(value):
        raise TypeError(f"policy must be a Policy or a callable of the peer address, not {value!r}")


def _validator(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"validator must be a callable or None, not {value!r}")


@attrs.frozen(kw_only=True)
class ProxyProtocolConfig:
    """How to read PROXY headers on a server. Checked when built; every field has a default.

    >>> config = ProxyProtocolConfig(policy=trusted_proxies(["10.0.0.0/8"]), header_timeout=3)
    >>> config.max_header_size
    4096
    """

    #: Seconds a connection gets to deliver its header, waiting for a handshake slot included.
    header_timeout: float = attrs.field(default=5.0, validator=_positive_finite)
    #: The largest header accepted, in bytes (16 to 65551). The default leaves room for every
    #: TLV a balancer sends; raise it if yours forwards large client certificates.
    max_header_size: int = attrs.field(default=4096, validator=_header_size)
    #: How many partial headers a listener keeps before it evicts old ones (a connection whose
    #: first bytes did not complete its header). Connections that sent nothing are not counted.
    max_pending_handshakes: int = attrs.field(default=1024, validator=_at_least_one)
    #: A full listener evicts the partial handshakes that have been partial this long (seconds),
    #: oldest first; younger ones are left alone, so a burst of real clients never evict each
    #: other.
    eviction_age: float = attrs.field(default=0.5, validator=_non_negative)
    #: Which versions to recognise: ``{1, 2}``, ``{1}`` or ``{2}``.
    versions: frozenset[int] = attrs.field(
        default=frozenset((1, 2)), converter=_to_versions, validator=_versions
    )
    #: A :class:`Policy`, or a callable choosing one from the peer's address (see
    #: :func:`trusted_proxies`).
    policy: Policy | PolicyCallable = attrs.field(default=Policy.REQUIRE, validator=_policy)
    #: Called with each parsed header and the real peer; may refuse it.
    validator: Validator | None = attrs.field(default=None, validator=_validator)
