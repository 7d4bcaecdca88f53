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


#: the pages generated from the code (docs/contributing.md)
DOC_GENERATORS = ("hooks", "records", "cli", "config", "target")


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate the reference pages from the code, then build the site with mkdocs
    (warnings are errors) into $CHESTER_DOCS_SITE, default .nox/docs-site/ (outside the
    sources; open its index.html, or serve it).

    `nox -s docs -- serve`: serve the docs on http://127.0.0.1:8000/, rebuilt on each edit.
    `nox -s docs -- update`: also run the getting-started page's blocks against the test
    servers and write the outputs they print into the page (CHESTER_UPDATE_DOCS=1), then
    build: the one command after a change to what chester prints."""
    _install_workspace(session)
    env = {"NO_MKDOCS_2_WARNING": "1"}
    for name in DOC_GENERATORS:
        session.run("python", f"docs/gen_{name}.py")
    if "update" in session.posargs:
        session.run("pytest", "-q", "tests/test_docs.py",
                    "tests/test_getting_started.py", env={**env, "CHESTER_UPDATE_DOCS": "1"})
    if "serve" in session.posargs:
        session.run("mkdocs", "serve", "--strict", "-a", "127.0.0.1:8000", env=env)
        return
    site = os.environ.get("CHESTER_DOCS_SITE", os.path.join(".nox", "docs-site"))
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env=env)
    session.log(f"the site is in {site}/ (index.html)")
