"""``chester plugins new NAME``: a ready-to-install backend package.

The package installs, registers its backend through the entry-point group ``chester`` and
lists as ``active`` before its author writes a line; its hooks raise ``NotImplementedError``
naming the contract each must meet, and its conformance test runs chester's suite
(:class:`chester.plugin.testing.BackendConformance`) against it, with ``broken_options``
filled in (a Python that does not exist), so no check of the suite is skipped.

The files it writes are :data:`LAYOUT`; docs/plugins.md shows the same tree.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from chester import __version__
from chester.plugin.errors import UserError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

PYPROJECT = '''\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "chester-backend-{dash}"
version = "0.1.0"
description = "chester backend: {name} (describe where it runs)."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["chester-ml>={version},<{next_minor}"]

[project.optional-dependencies]
test = ["chester-ml[testing]>={version},<{next_minor}"]

[project.entry-points.chester]
{name} = "chester_backend_{name}.plugin:{cls}Backend"

[tool.hatch.build.targets.wheel]
packages = ["src/chester_backend_{name}"]
'''

README = '''\
# chester-backend-{dash}

A [chester](https://pypi.org/project/chester-ml/) backend: `{name}`.

```bash
pip install -e ".[test]"
chester plugins list          # {name} is listed active
pytest tests                  # chester's conformance suite against this backend
```

```yaml
# chester.yaml
backends:
  mine:
    type: {name}
```

Each hook in `src/chester_backend_{name}/plugin.py` says what it must do; chester's
`docs/plugins.md`, `docs/hooks.md` and `docs/remote.md` have the details.
'''

OPTIONS = '''\
"""Options of the ``{name}`` backend (``chester plugins list`` imports this: keep it light)."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class {cls}Options:
    """What a ``type: {name}`` entry of chester.yaml may set. Every field needs a default or
    is required; ``metadata["help"]`` is shown in config errors and ``chester plugins list
    --verbose``. To run on remote hosts, inherit the remote layer's groups instead, e.g.
    ``class {cls}Options(EnvOptions, SecretsOptions, ContainerOptions)`` from
    ``chester.remote.options``."""

    max_parallel: int = attrs.field(default=1, metadata={{"help": "runs at once"}})
    python: str = attrs.field(default="python3", metadata={{
        "help": "the Python that starts each run's worker (python -m chester.target.worker)"}})
'''

PLUGIN = '''\
"""The ``{name}`` backend plugin for chester.

The backend is a class; chester's plugin manager makes one instance of it (the entry point
names the class) and calls its hook methods, each only for backends of type ``{name}``.
What the backend keeps between calls (clients, caches) goes on ``self``, never in module
globals. Each hook raises ``NotImplementedError`` until written; the text says what the
contract asks (see chester's docs/hooks.md for the whole of it). Hook methods take no
default arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from chester.plugin.manager import hookimpl
from chester.plugin.records import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    PreparedSweep,
    PullPatterns,
    PullResult,
    RunHandle,
    RunSpec,
    RunStatus,
)
from chester.remote.backend import Backend
from chester_backend_{name}.options import {cls}Options

NAME = "{name}"


class {cls}Backend(Backend):
    """The ``{name}`` backend: describe where its runs go."""

    name = NAME

    def __init__(self) -> None:
        super().__init__()
        # state this backend keeps between calls goes here (made lazily: keep this cheap)

    def spec(self) -> BackendSpec:
        """Declare the backend type, its options class and what it can do."""
        return BackendSpec(name=NAME, summary="{name}: describe where runs go",
                           options_cls={cls}Options,
                           capabilities=Capabilities(remote=False, idempotent_submit=False))

    @hookimpl
    def chester_prepare(self, backend: BackendConfig, runs: Sequence[RunSpec],
                        staging_dir: Path) -> PreparedSweep:
        """Render what the submit will send; no side effects outside ``staging_dir``.

        Each ``RunSpec`` has ``run_id``, ``token``, ``name``, ``local_dir`` (holding
        ``variant.json`` and ``.chester/``) and ``remote_dir`` (where the folder lives on the
        target). ``--dry-run`` stops after this hook and shows ``scripts``."""
        raise NotImplementedError("chester_prepare must return a PreparedSweep for these runs")

    @hookimpl
    def chester_submit(self, backend: BackendConfig, prepared: PreparedSweep
                       ) -> list[RunHandle]:
        """Start every run of ``prepared.runs`` (the worker is ``backend.options.python -m
        chester.target.worker RUN_DIR`` where chester is installed, or ``python <runtime>
        worker RUN_DIR`` with the runtime from ``chester.remote.runtime.build()``) and return
        one ``RunHandle`` per run, carrying the run's ``token``. A retried submit must never
        start a run twice. With ``python`` pointing nowhere (the conformance test's
        ``broken_options``), the launch must fail in one line, or the runs must end failed
        with a reason."""
        raise NotImplementedError("chester_submit must start each run once and return its "
                                  "handle")

    @hookimpl
    def chester_status(self, backend: BackendConfig, handles: Sequence[RunHandle]
                       ) -> dict[str, RunStatus]:
        """The state of every handle, in ONE call (``chester.target.probe`` reads a run
        folder): ``{{token: RunStatus}}``. A failed run carries ``reason`` and
        ``stderr_tail``; a run whose worker never started must end ``failed`` or ``lost``
        with a reason, never stay queued."""
        raise NotImplementedError("chester_status must return a RunStatus for every handle's "
                                  "token")

    @hookimpl
    def chester_cancel(self, backend: BackendConfig, handles: Sequence[RunHandle]
                       ) -> dict[str, bool]:
        """Stop the runs (queued ones never start); ``{{token: True}}`` for each run
        cancelled."""
        raise NotImplementedError("chester_cancel must stop each live run and report it by "
                                  "token")

    @hookimpl
    def chester_pull(self, backend: BackendConfig, handles: Sequence[RunHandle], dest: Path,
                     patterns: PullPatterns) -> list[PullResult]:
        """Bring each run's folder home into its ``local_dir`` (incremental, never deleting)
        and say per run whether all its files are home (``complete``).

        Runs that write their folders on this machine (``remote_dir`` is ``local_dir``, as
        this stub's backend does) have nothing to bring: return ``complete=True`` for every
        run whose folder is there (``.chester/run.json`` exists), ended or not, as the local
        backend does. Waiting for an end record instead would leave a run that never started
        unpulled for ever. A remote backend copies the folder and says ``complete=True`` once
        the run's final files (its end record; for a run that never started, its folder as it
        is) are home."""
        raise NotImplementedError("chester_pull must copy each run folder home and say what "
                                  "came")

    @hookimpl
    def chester_logs(self, backend: BackendConfig, handle: RunHandle, follow: bool,
                     stream: str, out: TextIO) -> bool:
        """Write the run's ``stdout.log``/``stderr.log`` to ``out``; with ``follow``, until
        the run ends. Write through ``cursor = self.log_cursor(handle, stream, out)``
        (``chester.remote.follow.follow(read, finished, cursor, follow=follow)`` does the
        loop, ``read(offset)`` returning the log's bytes from that byte on): a call the
        dispatcher retries after a dropped link then goes on from ``cursor.offset``, never
        repeating nor skipping a byte."""
        raise NotImplementedError("chester_logs must copy the run's log to out")
'''

TEST = '''\
"""chester's conformance suite against the ``{name}`` backend."""

import pytest

from chester.plugin.testing import BackendConformance, ConformanceEnv


class Test{cls}(BackendConformance):
    @pytest.fixture
    def chester_env(self, tmp_path):
        return ConformanceEnv.create(
            tmp_path, backend="{name}",
            config={{"backends": {{"{name}": {{"type": "{name}"}}}}}},
            timeout=60, poll_interval=0.2,
            # options that keep the workers from starting: the suite checks such a launch
            # fails in one line or its runs end failed with a reason. Change them if your
            # backend breaks another way (a wrong host, a missing image); never leave None,
            # which skips that check
            broken_options={{"python": "/nonexistent/python3"}})
'''

#: the files ``chester plugins new NAME`` writes, under ``chester-backend-NAME/``
LAYOUT = ("pyproject.toml", "README.md", "src/chester_backend_{name}/__init__.py",
          "src/chester_backend_{name}/options.py", "src/chester_backend_{name}/plugin.py",
          "tests/test_{name}_conformance.py")


def new_plugin(name: str, dest: Path) -> Path:
    """Write the package for backend ``name`` under ``dest/chester-backend-NAME``."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise UserError(f"plugin name {name!r}: use lower-case letters, digits and _ "
                        "(a Python identifier starting with a letter)")
    root = Path(dest) / f"chester-backend-{name.replace('_', '-')}"
    if root.exists():
        raise UserError(f"{root} already exists; choose another name or folder (--dir)")
    cls = "".join(p.capitalize() for p in name.split("_"))
    major, minor = (int(x) for x in __version__.split(".")[:2])
    fmt = {"name": name, "dash": name.replace("_", "-"), "cls": cls,
           "version": __version__, "next_minor": f"{major}.{minor + 1}"}
    texts = (PYPROJECT, README, '"""chester backend: {name}."""\n', OPTIONS, PLUGIN, TEST)
    files = {rel.format(name=name): text for rel, text in zip(LAYOUT, texts, strict=True)}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**fmt))
    return root


__all__ = ["LAYOUT", "new_plugin"]
