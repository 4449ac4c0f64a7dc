"""Fingerprints of a server's code that we mirror or override, for the drift tests.

A fingerprint is the SHA-256 (first 16 hex digits) of the source text of a function or class as
the installed server's file has it, without blank lines, whole-line comments, indentation of the
whole and trailing spaces: any other change, of code, signature, docstring or layout, counts. (The
syntax tree would ignore layout too, but its dump differs between Python versions.) The source
is read, not imported, so that code needing an optional dependency (Uvicorn's ``websockets``
protocols) is checked too.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import textwrap
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

__all__ = ("MISSING", "drift", "fingerprint", "fingerprints")

#: The fingerprint of an object that is gone (its module, or the name in it).
MISSING = "missing"

_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _definition(name: str) -> str | None:
    """The source lines of ``package.module.Class.method`` (or a function, with its decorators)
    as its module's file has them."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:cut]))
        except ModuleNotFoundError:  # a parent is a module, not a package
            continue
        if spec is not None and spec.origin is not None and spec.origin.endswith(".py"):
            break
    else:
        return None
    source = Path(spec.origin).read_text(encoding="utf-8")
    node: ast.AST = ast.parse(source)
    for attribute in parts[cut:]:
        body = getattr(node, "body", [])
        found = [n for n in body if isinstance(n, _DEFINITIONS) and n.name == attribute]
        if not found:
            return None
        node = found[-1]  # the last definition wins, as at run time
    assert isinstance(node, _DEFINITIONS)
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return "\n".join(source.splitlines()[start - 1 : node.end_lineno])


def fingerprint(name: str) -> str:
    """The fingerprint of the installed ``name``, or :data:`MISSING`."""
    source = _definition(name)
    if source is None:
        return MISSING
    # Line numbers and the syntax tree's shape depend on the Python version; the text does not.
    lines = [line.rstrip() for line in textwrap.dedent(source).splitlines()]
    kept = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16]


def fingerprints(names: list[str]) -> dict[str, str]:
    """Each name's :func:`fingerprint`."""
    return {name: fingerprint(name) for name in names}


def drift(
    distribution: str,
    known: Mapping[str, Mapping[str, str]],
    uses: Mapping[str, str],
    recorded_in: str,
) -> list[str]:
    """One line per object in ``uses`` whose installed code is none we know (empty: no drift).

    ``known`` maps each object to ``{fingerprint: "release release ..."}``, the releases checked
    that have it. A release not recorded passes when each object is the same as in some release
    that is (most releases change none of them); a recorded one must match its own.
    ``uses`` says, for each object, what of ours depends on it: the line names both.
    """
    version = metadata.version(distribution)
    problems = []
    for name, found in fingerprints(list(uses)).items():
        seen = known.get(name, {})
        mine = [fp for fp, releases in seen.items() if version in releases.split()]
        if found in (mine or seen):
            continue
        expected = mine[0] if mine else "one of " + ", ".join(sorted(seen)) if seen else "none"
        problems.append(
            f"{distribution} {version} changed {name} (fingerprint {found}, expected {expected}): "
            f"review {uses[name]}, then record the release in {recorded_in}"
        )
    return problems


def _release_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def record(
    names: list[str], known: Mapping[str, Mapping[str, str]], version: str
) -> dict[str, dict[str, str]]:
    """``known`` with the installed fingerprints of ``names`` recorded for ``version``."""
    updated = {name: dict(known.get(name, {})) for name in names}
    for name, found in fingerprints(names).items():
        releases = updated[name].get(found, "").split()
        if version not in releases:
            updated[name][found] = " ".join(sorted([*releases, version], key=_release_key))
    return updated
