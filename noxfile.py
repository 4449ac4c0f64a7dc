"""Developer tasks. ``nox`` alone runs lint, typing, docs, the tests on CPython 3.10-3.13 and the
server integration tests on the oldest, one middle and the newest Uvicorn and Hypercorn.

``nox -s bench`` and ``nox -s fuzz -- 600`` are run by hand: they take a while and print numbers
rather than pass or fail.

The tests need one interpreter per supported Python version. nox looks them up as ``python3.X``
on ``PATH``; where they come from pyenv, only the active version answers through the shims, so
this file puts the real ``$PYENV_ROOT/versions/3.X.Y/bin`` directories in front (see
:func:`_expose_pyenv_interpreters`). Under ``CI=true`` nox fails on a missing interpreter instead
of skipping it, so CI proves every version ran.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

# Tools are pinned so that a new release cannot turn a green tree red overnight; bump on purpose.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
IMPORT_LINTER = "import-linter==2.17"
# atheris ships wheels for each of our Pythons; 3.12 has the newest atheris release built for it.
FUZZ_PYTHON = "3.12"

# The extras the test suite needs; later issues add the adapters' extras here.
TEST_EXTRAS = "test,hypercorn,uvicorn,testing,pcap,prometheus,opentelemetry"

# Two pytest processes (pytest-xdist): most of a test's time is spent waiting on sockets and
# server processes, so two share a 2-core machine well (the suite takes about 3/4 of the time).
XDIST = ["-n", "2"]

LINT_PATHS = ["src", "tests", "bench", "examples", "docs", "fuzz", "noxfile.py"]
TYPED_PATHS = ["src", "tests", "examples", "fuzz"]

nox.needs_version = ">=2024.3.2"
nox.options.sessions = ["lint", "typing", "docs", "tests", "servers"]

# The releases of each server ``servers`` tests: the oldest the extra admits, one between, and the
# newest on the registry (the bare name: pip's newest). Raise the oldest with the extra's lower
# bound in pyproject.toml; the drift test records each version's fingerprints.
SERVER_RELEASES = {
    "uvicorn": ["uvicorn==0.36.0", "uvicorn==0.45.0", "uvicorn"],
    "hypercorn": ["hypercorn==0.17.0", "hypercorn==0.17.3", "hypercorn"],
}
# The test files that start the servers; ``-k <server>`` picks each server's tests in the shared
# files (and every test of the server's own files, whose names hold it).
SERVER_TESTS = [
    "tests/test_uvicorn.py",
    "tests/test_hypercorn.py",
    "tests/test_hypercorn_cli.py",
    "tests/test_asgi_websocket.py",
    "tests/test_asgi_extension.py",
    "tests/test_addresses.py",
    "tests/test_server_compat.py",
]


def _expose_pyenv_interpreters() -> None:
    """Make each wanted ``python3.X`` from pyenv findable on ``PATH``.

    A pyenv shim for an inactive version is found by ``shutil.which`` but fails when run, so a
    version counts as present only when ``which`` finds a real binary. For each missing one, the
    newest ``$PYENV_ROOT/versions/3.X.Y/bin`` (plain CPython, not ``t`` free-threaded builds) goes
    in front of ``PATH``. Nothing changes on machines without pyenv.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found: list[str] = []
    for minor in PYTHONS:
        where = shutil.which(f"python{minor}")
        if where is not None and "shims" not in Path(where).parts:
            continue
        pattern = re.compile(rf"{re.escape(minor)}\.(\d+)")
        candidates = [
            (int(m.group(1)), bin_dir)
            for bin_dir in root.glob(f"versions/{minor}.*/bin")
            if (m := pattern.fullmatch(bin_dir.parent.name))
            and (bin_dir / f"python{minor}").is_file()
        ]
        if candidates:
            found.append(str(max(candidates)[1]))
    if found:
        os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_expose_pyenv_interpreters()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite; arguments after ``--`` go to pytest (``nox -s tests-3.12 -- -k v1``)."""
    session.install(f".[{TEST_EXTRAS}]")
    session.run("pytest", *XDIST, *session.posargs)


@nox.session(python=PYTHONS[-1])
def servers(session: nox.Session) -> None:
    """The Uvicorn and Hypercorn integration tests on each release in :data:`SERVER_RELEASES`, in
    turn, on one Python (arguments after ``--`` go to each pytest run)."""
    session.install(f".[{TEST_EXTRAS}]")
    for server, releases in SERVER_RELEASES.items():
        for release in releases:
            session.install("--upgrade", release)
            session.run(
                "python",
                "-c",
                f"import importlib.metadata as m; print('{server}', m.version('{server}'))",
            )
            session.run(
                "pytest",
                *XDIST,
                "-p",
                "no:cacheprovider",
                "-k",
                server,
                *SERVER_TESTS,
                *session.posargs,
            )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting, checked, never rewritten; then the import contract (the
    layers, the sans-IO core, no cycles: ``[tool.importlinter]`` in pyproject.toml)."""
    session.install(RUFF, IMPORT_LINTER)
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)
    # import-linter reads the source, it imports nothing: the package need only be findable.
    session.run("lint-imports", env={"PYTHONPATH": "src"})


# The oldest supported Python: pyproject's mypy ``python_version`` is 3.10, and the backports that
# only 3.10 installs (exceptiongroup, typing_extensions) must be there for mypy to see them.
@nox.session(python=PYTHONS[0])
def typing(session: nox.Session) -> None:
    """mypy --strict (configured in pyproject.toml) on the library, the tests and the examples."""
    session.install(MYPY, f".[{TEST_EXTRAS}]")
    session.run("mypy", *(session.posargs or TYPED_PATHS))


@nox.session
def docs(session: nox.Session) -> None:
    """Sphinx, warnings as errors, then every example in the docs run as a doctest."""
    # The integrations are documented from their docstrings: autodoc imports them (and the
    # pytest plugin, pytest).
    session.install(".[docs,test,trio,hypercorn,uvicorn,testing,prometheus,opentelemetry]")
    common = ["-W", "--keep-going", "-E", "docs"]
    session.run("sphinx-build", "-b", "html", *common, "docs/_build/html")
    session.run("sphinx-build", "-b", "doctest", *common, "docs/_build/doctest")


@nox.session
def bench(session: nox.Session) -> None:
    """Parse/build timings beside the Python peers, the anyio adapter against plain anyio,
    Hypercorn/Uvicorn with vs without proxyproto, ``proxyproto relay`` against HAProxy, the
    servers under attack (a peer that never reads, no descriptors left, a slowloris flood), and
    the listener with vs without the Prometheus exporter.

    Arguments go to every script (``nox -s bench -- --quick``).
    """
    session.install(
        ".[hypercorn,uvicorn,prometheus]",
        "proxy-protocol",
        "gunicorn",
        "twisted",
        "trio",
        "trustme",
    )
    session.run("python", "bench/bench_core.py", *session.posargs)
    session.run("python", "bench/bench_anyio.py", "--json-merge", *session.posargs)
    session.run("python", "bench/bench_asgi.py", "--json-merge", *session.posargs)
    # needs haproxy on PATH (or /usr/sbin); without it the script says so and exits 0
    session.run("python", "bench/bench_relay.py", "--json-merge", *session.posargs)
    session.run("python", "bench/bench_attacks.py", "--json-merge", *session.posargs)
    # connections/s with and without proxyproto.prometheus (prints only; no --json yet)
    session.run("python", "bench/bench_metrics.py")
    # instruction counts per connection, which load does not move (prints only; needs valgrind)
    if shutil.which("valgrind"):
        session.run("python", "bench/callgrind_listeners.py")
        session.run("python", "bench/callgrind_uvicorn.py")
    else:
        session.log("valgrind not found: the callgrind counts are left out")


@nox.session(python=FUZZ_PYTHON)
def fuzz(session: nox.Session) -> None:
    """Fuzz the parser with atheris: ``nox -s fuzz -- 600`` runs for 600 s (default 60).

    Further arguments go to libFuzzer (``nox -s fuzz -- 600 -jobs=2``). New inputs are kept in
    fuzz/corpus/, crashes are written as fuzz/crash-* (both ignored by git).
    """
    args = list(session.posargs)
    seconds = args.pop(0) if args and args[0].isdigit() else "60"
    session.install("atheris", ".")
    Path("fuzz/corpus").mkdir(exist_ok=True)
    session.run(
        "python",
        "fuzz/fuzz_parser.py",
        f"-max_total_time={seconds}",
        "-artifact_prefix=fuzz/",
        "-dict=fuzz/proxyproto.dict",
        *args,
        "fuzz/corpus",
    )
