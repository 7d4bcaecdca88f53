"""The target's environment: package manager, prepare commands, env variables, secrets.

Every shell backend renders the same text from the same options:

* :func:`setup_lines` — POSIX ``sh`` lines that put the package manager's Python first on
  ``PATH`` (sourced before each run and before each call of the target tools);
* :func:`env_sync_lines` — the once-per-launch environment sync (``uv sync``,
  ``conda env update --prune``), which fails loudly when the tool is missing;
* :func:`render_env_file` — the file sourced before each run: package manager, env
  variables, prepare commands and prepare script. Never holds a secret;
* :func:`secret_values` / :func:`render_secrets` — secrets read on this machine and written
  on the target as a 0600 file that the run's shell sources and removes.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from chester.plugin.errors import UserError
from chester.plugin.records import BackendConfig

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: where ``uv`` installs itself (its installer's default places)
UV_PATH = 'export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"'


def package_manager(backend: BackendConfig) -> str:
    """The backend's ``package_manager`` option, else the top-level one, else ``python``."""
    return getattr(backend.options, "package_manager", None) or backend.package_manager \
        or "python"


def setup_lines(backend: BackendConfig, root: str) -> list[str]:
    """Lines that activate the package manager's environment for the project at ``root``."""
    pm = package_manager(backend)
    q = shlex.quote
    if pm == "uv":
        act = str(PurePosixPath(root) / ".venv" / "bin" / "activate")
        return [UV_PATH, f"if [ -f {q(act)} ]; then . {q(act)}; fi"]
    if pm == "conda":
        if not backend.conda_env:
            return []
        cmd = shlex.join([backend.conda_command, "shell.posix", "activate", backend.conda_env])
        return [f'eval "$({cmd})"']
    return []


def require_env_lines(backend: BackendConfig, root: str) -> list[str]:
    """Lines that stop a job (exit 5, one ``chester:`` line on stderr) when the package
    manager's environment is missing: with ``uv``, the project's ``.venv``. The activation
    in :func:`setup_lines` skips a missing ``.venv`` (the launch's own check is made before
    the sync that creates it); a job must not run on whatever ``python`` comes first."""
    if package_manager(backend) != "uv":
        return []
    act = str(PurePosixPath(root) / ".venv" / "bin" / "activate")
    return [f"[ -f {shlex.quote(act)} ] || {{ echo \"chester: package_manager is uv but "
            f"{shlex.quote(str(PurePosixPath(root) / '.venv'))} is missing on $(hostname) (run "
            "uv sync in the project there, or set sync_on_launch: true or package_manager: "
            "python)\" >&2; exit 5; }"]


def env_sync_lines(backend: BackendConfig, root: str) -> list[str]:
    """The environment sync run once per launch in ``root`` (stderr shows its output).

    ``uv`` or ``conda`` missing while the project asks for it is an error that names the
    host and the fix, not a silent skip: every run would otherwise start with the wrong
    Python."""
    pm = package_manager(backend)
    q = shlex.quote
    if pm == "uv":
        return [f"cd {q(root)}", UV_PATH,
                "if [ -f pyproject.toml ]; then",
                "  if ! command -v uv >/dev/null 2>&1; then",
                '    echo "chester: package_manager is uv but uv is not on PATH on '
                '$(hostname) (install uv there, or set package_manager: python)" >&2; exit 5',
                "  fi",
                "  uv sync -q >&2 || { echo \"chester: uv sync failed on $(hostname)\" >&2; "
                "exit 5; }",
                "fi"]
    if pm == "conda" and backend.conda_env:
        c = q(backend.conda_command)
        return [f"cd {q(root)}",
                "if [ -f environment.yml ]; then",
                f"  if ! command -v {c} >/dev/null 2>&1; then",
                f'    echo "chester: package_manager is conda but {backend.conda_command} is '
                'not on PATH on $(hostname) (set conda_command, or package_manager: python)" '
                ">&2; exit 5",
                "  fi",
                f"  {c} env update -q -n {q(backend.conda_env)} -f environment.yml --prune >&2 "
                f"|| {{ echo \"chester: conda env update failed on $(hostname)\" >&2; exit 5; }}",
                "fi"]
    return []


def env_failure(stderr: str, exit_code: int) -> str:
    """What a failed environment sync says, in one line: chester's own words, then the
    last lines the tool printed."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    said = [ln[len("chester:"):].strip() for ln in lines if ln.startswith("chester:")]
    other = [ln for ln in lines if not ln.startswith("chester:")]
    parts = said[-1:] + other[-3:]
    return (" | ".join(parts) or f"exit status {exit_code}")[-800:]


def check_env_names(backend: BackendConfig, env: Mapping[str, Any]) -> None:
    for k in env:
        if not ENV_NAME.match(str(k)):
            raise UserError(f"{backend.type} backend {backend.name!r}: env name {k!r} is not a "
                            "valid variable name")


def env_export_lines(backend: BackendConfig) -> list[str]:
    """``export KEY=value`` lines of the backend's ``env`` option (names checked)."""
    env = dict(getattr(backend.options, "env", {}) or {})
    check_env_names(backend, env)
    return [f"export {k}={shlex.quote(str(v))}" for k, v in env.items()]


def prepare_script_path(backend: BackendConfig, root: str) -> str | None:
    """Where the backend's ``prepare_script`` is on the host (sourced before each run when
    it is there), or None without one."""
    script = getattr(backend.options, "prepare_script", None)
    if not script:
        return None
    return script if script.startswith("/") else str(PurePosixPath(root) / script)


def render_env_file(backend: BackendConfig, root: str, pre_commands: Sequence[str] = ()) -> str:
    """The file sourced (by ``/bin/sh``) before each run: package manager, environment,
    prepare commands, prepare script. Secrets are never in it."""
    o = backend.options
    lines = ["# chester: sourced before each run of this sweep", *setup_lines(backend, root)]
    lines += env_export_lines(backend)
    lines += [str(c) for c in (*backend.prepare_commands, *getattr(o, "prepare_commands", ()),
                               *pre_commands)]
    p = prepare_script_path(backend, root)
    if p:
        lines.append(f"if [ -f {shlex.quote(p)} ]; then . {shlex.quote(p)}; fi")
    lines.append(":")  # the file's status is 0 unless a prepare line failed just before
    return "\n".join(lines) + "\n"


# -- secrets -----------------------------------------------------------------------------------
def _secret_path(backend: BackendConfig, item: str) -> Path:
    path = Path(os.path.expanduser(item))
    return path if path.is_absolute() else Path(backend.project_path) / path


def secret_files(backend: BackendConfig) -> list[Path]:
    """The local files named in ``secrets`` (the code sync never sends them)."""
    return [_secret_path(backend, item) for item in getattr(backend.options, "secrets", ())
            if not ENV_NAME.match(item)]


def check_secrets(backend: BackendConfig) -> None:
    """Names are set and files readable (values are read only at submit)."""
    who = f"{backend.type} backend {backend.name!r}"
    for item in getattr(backend.options, "secrets", ()):
        if ENV_NAME.match(item):
            if item not in os.environ:
                raise UserError(f"{who}: secret {item!r} is not set in the local environment")
        elif not os.access(_secret_path(backend, item), os.R_OK):
            raise UserError(f"{who}: cannot read secrets file "
                            f"{str(_secret_path(backend, item))!r}")


def secret_values(backend: BackendConfig) -> dict[str, str]:
    """Read the secrets' values locally (names of env vars, or KEY=VALUE files)."""
    who = f"{backend.type} backend {backend.name!r}"
    out: dict[str, str] = {}
    for item in getattr(backend.options, "secrets", ()):
        if ENV_NAME.match(item):
            if item not in os.environ:
                raise UserError(f"{who}: secret {item!r} is not set in the local environment")
            out[item] = os.environ[item]
            continue
        path = _secret_path(backend, item)
        try:
            text = path.read_text()
        except OSError as exc:
            raise UserError(f"{who}: cannot read secrets file {str(path)!r}: "
                            f"{exc.strerror}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[7:].lstrip()
            k, sep, v = line.partition("=")
            k = k.strip()
            if not sep or not ENV_NAME.match(k):
                raise UserError(f"{who}: {path}:{n}: expected KEY=VALUE")
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            out[k] = v
    return out


def render_secrets(values: Mapping[str, str]) -> bytes:
    """The secrets file's text: ``KEY='value'`` lines for ``set -a; . FILE``."""
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()).encode()


def source_secrets_line(path: str, *, remove: bool) -> str:
    """Shell text that exports the secrets file's values (and removes the file)."""
    q = shlex.quote(path)
    return f"set -a; . {q}; set +a" + (f"; rm -f {q}" if remove else "")


def remove_secrets(transport: Any, path: str | None) -> None:
    """Remove a secrets file from the host after a submit failed (best effort: the submit's
    own error is the one to report)."""
    if not path:
        return
    try:
        transport.run(["rm", "-f", path], timeout=30, check=False)
    except Exception:
        pass


__all__ = ["ENV_NAME", "remove_secrets", "UV_PATH", "check_env_names", "env_export_lines", "env_failure", "check_secrets", "env_sync_lines",
           "package_manager", "require_env_lines", "render_env_file", "render_secrets", "secret_files",
           "secret_values", "setup_lines", "source_secrets_line"]
