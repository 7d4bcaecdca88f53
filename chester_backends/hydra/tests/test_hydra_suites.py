"""Hydra's own launcher test suites (``hydra.test_utils.launcher_common_tests``, as every
official Hydra launcher plugin runs them, e.g. hydra_joblib_launcher's and
hydra_submitit_launcher's tests) against ``hydra/launcher=chester``: on the local backend,
and on the ssh backend through a real loopback sshd (testinfra's ``sshd_loopback``), where
each job runs in its own copy of the project (``remote_dir``) and comes home.

Each test's ``tmpdir`` is a chester project (its ``chester.yaml`` names the backend): the
in-process ``LauncherTestSuite`` finds it through ``CHESTER_CONFIG_PATH``, the apps the
``IntegrationTestSuite`` starts inherit that variable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("hydra")
pytest.importorskip("hydra_plugins.chester_launcher")

from hydra.core.plugins import Plugins  # noqa: E402
from hydra.plugins.launcher import Launcher  # noqa: E402
from hydra.test_utils.launcher_common_tests import (  # noqa: E402
    IntegrationTestSuite,
    LauncherTestSuite,
)

from chester import config as chester_config  # noqa: E402

#: The launcher's settings for the suites: poll often (the jobs take a fraction of a second).
POLL = "hydra.launcher.poll_interval=0.2"
#: The integration suite's command line, as hydra_submitit_launcher's tests give it.
INTEGRATION_FLAGS = ["-m", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled",
                     "hydra/launcher=chester", "hydra.launcher.backend=box", POLL]


@pytest.fixture
def use_project(monkeypatch: Any) -> Any:
    """``use_project(project, backend)``: make ``project`` a chester project whose backend
    ``box`` is ``backend``, used by this process and the apps it starts (until the test
    ends)."""
    def use(project: Path, backend: dict[str, Any]) -> None:
        project.mkdir(parents=True, exist_ok=True)
        (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {"box": backend}}))
        monkeypatch.setenv("CHESTER_CONFIG_PATH", str(project / "chester.yaml"))
        chester_config.reload_config()

    yield use
    monkeypatch.undo()
    chester_config.reload_config()


def _local() -> dict[str, Any]:
    return {"type": "local", "max_parallel": 2}


def _ssh(host: Any, remote: str) -> dict[str, Any]:
    return {"type": "ssh", "host": host.alias, "ssh_config": host.ssh_config,
            "python": sys.executable, "remote_dir": remote}


def test_discovery() -> None:
    from hydra_plugins.chester_launcher.launcher import ChesterLauncher

    assert ChesterLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


# -- the local backend ---------------------------------------------------------------------
@pytest.mark.parametrize("launcher_name, overrides",
                         [("chester", ["hydra.launcher.backend=box", POLL])])
class TestChesterLauncherLocal(LauncherTestSuite):
    """Hydra's launcher suite, each job a chester run on this machine."""

    @pytest.fixture(autouse=True)
    def _project(self, tmp_path_factory: Any, use_project: Any) -> None:
        # (the suite's sweeps delete their tmpdir as they end: the project lives apart)
        use_project(tmp_path_factory.mktemp("chester-project"), _local())


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, INTEGRATION_FLAGS)])
class TestChesterLauncherLocalIntegration(IntegrationTestSuite):
    """Hydra's integration suite: real apps, run as Hydra runs them, twice into one fixed
    sweep folder too (``test_to_absolute_path_multirun``)."""

    @pytest.fixture(autouse=True)
    def _project(self, tmpdir: Any, use_project: Any) -> None:
        use_project(Path(str(tmpdir)), _local())


# -- the ssh backend: a loopback sshd, each job in the host's copy of the project ----------------
class _Remote:
    """Where the tests' jobs run: the project's copy under the host's ``remote_dir``."""

    remote: Path

    @pytest.fixture(autouse=True)
    def _project(self, tmpdir: Any, use_project: Any, sshd_loopback: Any) -> None:
        here = Path(str(tmpdir))
        self.remote = Path(sshd_loopback.remote_dir) / f"hydra-{here.name}-{os.getpid()}"
        use_project(here, _ssh(sshd_loopback, str(self.remote)))


@pytest.mark.parametrize("launcher_name, overrides",
                         [("chester", ["hydra.launcher.backend=box", POLL])])
class TestChesterLauncherSsh(_Remote, LauncherTestSuite):
    """Hydra's launcher suite, each job a chester run on an ssh host."""


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, INTEGRATION_FLAGS)])
class TestChesterLauncherSshIntegration(_Remote, IntegrationTestSuite):
    """Hydra's integration suite on an ssh host: a job's working folder is its output
    folder there (``get_test_app_working_dir``, as Hydra's remote launchers say)."""

    def get_test_app_working_dir(self) -> Path | None:
        return self.remote
