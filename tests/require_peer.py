"""Skip, or fail under CI, when a real peer (haproxy, nginx) is not there.

The interop tests must run in CI: ``.ci/run`` installs the peers and sets ``CI=true``, and a
missing peer there is a failure, not a skip. On a developer's machine it is a skip with the
reason. HAProxy's case is ``interop.require_haproxy``; curl's (a client) is :func:`require_curl`.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

__all__ = ["ci_is_set", "require_binary", "require_curl"]


def ci_is_set() -> bool:
    """Whether the environment variable ``CI`` is set to something truthy."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_binary(
    name: str,
    binary: str | None,
    *,
    ci: bool,
    install: str,
    problem: str | None = None,
) -> str:
    """Return ``binary``; without one (or with a ``problem``), skip, or fail when ``ci``.

    ``install`` says how to get it (``"apt-get install nginx libnginx-mod-stream"``);
    ``problem`` describes why an installed binary cannot be used (a missing module, say).
    """
    if binary is not None and problem is None:
        return binary
    why = problem if binary is not None and problem is not None else f"{name} is not installed"
    if ci:
        pytest.fail(
            f"{why}, and CI is set: the {name} interop tests must run in CI "
            f"({install}; .ci/run does)",
            pytrace=False,
        )
    pytest.skip(f"{why} ({install}); with CI=true this fails")


def require_curl() -> str:
    """The curl binary if it has ``--haproxy-protocol`` (curl >= 7.60); else skip, or fail in CI."""
    curl = shutil.which("curl")
    problem = None
    if curl is not None:
        usage = subprocess.run(
            [curl, "--help", "all"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        if "--haproxy-protocol" not in usage:
            problem = "this curl has no --haproxy-protocol (curl >= 7.60 has)"
    return require_binary(
        "curl", curl, ci=ci_is_set(), install="apt-get install curl", problem=problem
    )
