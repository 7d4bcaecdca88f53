"""How the whole suite runs (part of the pytest plugin, loaded with it).

* Markers the fixtures apply, so nobody has to remember them: a test that uses a real server —
  ``sshd_hosts``, ``sshd_loopback``, ``aws_endpoint``, ``gpu_lab``, any ``slurm_*`` fixture, or
  any fixture that depends on one of them — is ``integration``; a test that uses a ``slurm_*``
  fixture is also in the xdist group ``slurm``, so with ``--dist loadgroup`` one worker owns
  the SLURM clusters of the run. ``slow`` (wheels, venvs, the docs site, property tests,
  long scenarios) is set by the tests themselves.
* Each session (each xdist worker) gets a slots folder of its own (``CHESTER_SLOTS_DIR``) unless
  one is set, so the local runs of one worker never wait for another worker's (or another
  session's) slots.
* Under ``CI=true`` a skipped test fails the session unless the ini option
  ``ci_allowed_skips`` lists it, as ``<node id, fnmatch pattern> | <reason>``.
* At the end of a session, network namespaces whose creating process is gone (an xdist worker
  that crashed or was killed) are removed.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import pytest

#: fixtures that start a real server; ``slurm_*`` fixtures count too (see :func:`uses_slurm`)
SERVER_FIXTURES = frozenset({"sshd_hosts", "sshd_loopback", "aws_endpoint", "gpu_lab"})
SLURM_PREFIX = "slurm_"
#: the xdist group of every test that uses a SLURM fixture
SLURM_GROUP = "slurm"
ALLOWED_SKIPS_INI = "ci_allowed_skips"


def uses_slurm(fixturenames: set[str]) -> bool:
    return any(n.startswith(SLURM_PREFIX) for n in fixturenames)


def uses_server(fixturenames: set[str]) -> bool:
    return bool(SERVER_FIXTURES & fixturenames) or uses_slurm(fixturenames)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(ALLOWED_SKIPS_INI, type="linelist", default=[],
                  help="tests that may skip under CI=true, one '<node id pattern> | <reason>' "
                       "a line; any other skip fails a CI session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: uses a real server (sshd, SLURM, moto); set by the fixtures")
    config.addinivalue_line(
        "markers", "slow: wheels, venvs, the docs site, property tests and long scenarios; "
                   "left out of `nox -s quick`")
    if not os.environ.get("CHESTER_SLOTS_DIR"):
        slots = tempfile.mkdtemp(prefix="chester-test-slots-")
        os.environ["CHESTER_SLOTS_DIR"] = slots
        config.add_cleanup(lambda: shutil.rmtree(slots, ignore_errors=True))
    allowed = [_parse_allowed(line) for line in config.getini(ALLOWED_SKIPS_INI)]
    config.pluginmanager.register(SkipCheck(allowed), "chester_testinfra.skipcheck")


@pytest.hookimpl(tryfirst=True)  # before -m deselects and before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    grouping = bool(getattr(config.option, "loadgroup", False))  # an xdist worker, loadgroup
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if uses_server(names):
            item.add_marker(pytest.mark.integration)
        if uses_slurm(names):
            item.add_marker(pytest.mark.xdist_group(SLURM_GROUP))
            if grouping:
                _group_nodeid(item, SLURM_GROUP)


def _group_nodeid(item: pytest.Item, group: str) -> None:
    """Give the node id the ``@group`` suffix by which xdist's loadgroup scheduler groups.

    xdist (3.8) adds it by setting ``item._nodeid``; since pytest 9.2 the node id is
    ``item._id`` (structured), so that no longer takes effect and every test is scheduled
    on its own (pytest-dev/pytest-xdist#1386). With an older pytest xdist's own hook does it.
    A second suffix, should a fixed xdist add one too, names the same group.
    """
    node_id = getattr(item, "_id", None)
    if node_id is None:
        return
    item._id = type(node_id).parse(f"{item.nodeid}@{group}")  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.geteuid() == 0 and shutil.which("ip"):
        from .sshd import cleanup_stale_netns

        try:
            cleanup_stale_netns()
        except Exception:
            pass


# -- CI: no silent skips --------------------------------------------------------------------

def _parse_allowed(line: str) -> tuple[str, str]:
    pattern, sep, reason = line.partition("|")
    if not sep or not pattern.strip() or not reason.strip():
        raise pytest.UsageError(
            f"{ALLOWED_SKIPS_INI}: {line!r} needs a node id pattern and a reason, "
            "as '<pattern> | <reason>'")
    return pattern.strip(), reason.strip()


def _plain_nodeid(nodeid: str) -> str:
    """The node id without the ``@group`` suffix that ``--dist loadgroup`` adds."""
    suffix = f"@{SLURM_GROUP}"
    return nodeid[:-len(suffix)] if nodeid.endswith(suffix) else nodeid


@dataclass(eq=False)  # a plugin: pluggy keeps it in sets
class SkipCheck:
    allowed: list[tuple[str, str]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (node id, reason)
    unlisted: list[tuple[str, str]] = field(default_factory=list)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else \
                str(report.longrepr)
            self.skipped.append((_plain_nodeid(report.nodeid), str(reason)))

    def listed(self, nodeid: str) -> bool:
        return any(fnmatch.fnmatchcase(nodeid, pattern) for pattern, _ in self.allowed)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if os.environ.get("CI") != "true" or hasattr(session.config, "workerinput"):
            return
        self.unlisted = [(n, r) for n, r in self.skipped if not self.listed(n)]
        if self.unlisted and session.exitstatus in (pytest.ExitCode.OK,
                                                    pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.unlisted:
            return
        terminalreporter.section("skips not allowed under CI", sep="=", red=True, bold=True)
        for nodeid, reason in self.unlisted:
            terminalreporter.write_line(f"SKIPPED {nodeid}: {reason}")
        terminalreporter.write_line(
            f"CI=true: a skip fails the run unless `{ALLOWED_SKIPS_INI}` (pyproject.toml, "
            "[tool.pytest.ini_options]) lists the test with its reason")
