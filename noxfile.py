"""Development sessions: `nox -s quick`, `nox -s tests`, `nox -s lint typing`, `nox -s bench`,
`nox -s docs`."""

from __future__ import annotations

import glob
import os

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

BACKENDS = sorted(os.path.dirname(p) for p in glob.glob("chester_backends/*/pyproject.toml"))
#: the test fixtures, markers and CI skip check (a pytest plugin), see testinfra/README.md
TESTINFRA = "testinfra"
#: xdist workers of the whole suite: most tests wait on servers, processes and sleeps, not on
#: the CPU, so there are more workers than this machine's 2 cores
WORKERS = "4"


def _install_workspace(session: nox.Session, *extra: str) -> None:
    editable = []
    for b in [*BACKENDS, TESTINFRA]:
        editable += ["-e", b]
    session.install("-e", ".[test,docs]", *editable, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: core, every backend, real servers where installed. In parallel:
    each xdist worker starts its own sshd hosts and moto; the tests of the SLURM fixtures all
    run on one worker (the xdist group `slurm`), which owns the clusters."""
    _install_workspace(session)
    session.run("pytest", "-n", WORKERS, "--dist", "loadgroup", "--durations=25",
                *session.posargs)


@nox.session
def quick(session: nox.Session) -> None:
    """The fast signal: unit tests and the local backend's, no real servers and nothing slow
    (`-m "not integration and not slow"`), on every core."""
    _install_workspace(session)
    session.run("pytest", "-m", "not integration and not slow", "-n", "auto",
                "--durations=25", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "chester", "chester_backends", "tests", "bench", TESTINFRA)


@nox.session
def typing(session: nox.Session) -> None:
    _install_workspace(session, "mypy", "types-PyYAML")
    session.run("mypy", "chester", *(f"{b}/src" for b in [*BACKENDS, TESTINFRA]))


@nox.session
def bench(session: nox.Session) -> None:
    """Measure the targets of DESIGN §9 that need no servers (see bench/README.md)."""
    _install_workspace(session)
    session.run("python", "bench/core_bench.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate docs/hooks.md and docs/records.md from the code, then build the site (mkdocs,
    warnings are errors: a broken link or a stale reference fails)."""
    _install_workspace(session)
    session.run("python", "docs/gen_hooks.py")
    session.run("python", "docs/gen_records.py")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
