"""Text the instance runs: user-data, the setup script, the worker command. No boto3 here.

Every value is rendered with ``shlex.quote``; only the user's own shell lines
(``bootstrap_commands``, ``prepare_commands``) are pasted as lines, as on every backend.
Nothing secret is ever rendered: the instance reaches S3 through its instance role.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from chester.plugin.records import BackendConfig
from chester.remote.sync import log_dir_exclude, select_files

USER_DATA_LIMIT = 16 * 1024


def agent_source() -> bytes:
    """The agent script, as uploaded to S3."""
    return resources.files("chester_backend_ec2").joinpath("agent.py").read_bytes()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(backend: BackendConfig) -> dict[str, Any]:
    """The content-addressed manifest of the project: ``{"files": {rel: [sha256, mode]}}``.

    Files are chosen by the same include/exclude rules rsync uses on the SSH and SLURM
    backends (plus the local log folder when it sits inside the project).
    """
    extra = log_dir_exclude(backend.project_path, backend.log_dir)
    files: dict[str, list] = {}
    paths: dict[str, str] = {}
    for rel, path in select_files(backend.project_path, backend.rsync_include,
                                  backend.rsync_exclude, extra):
        st = os.stat(path)
        digest = sha256_file(path)
        files[rel] = [digest, st.st_mode & 0o777]
        paths[digest] = str(path)
    # chester's target-side runtime travels with the code (the AMI needs no chester)
    from chester.remote import runtime

    rt = runtime.build()
    digest = sha256_file(rt.path)
    rt_rel = f"{runtime.REMOTE_SUBDIR}/{rt.name}"
    files[rt_rel] = [digest, 0o644]
    paths[digest] = str(rt.path)
    return {"files": files, "paths": paths,
            "sizes": {d: os.path.getsize(p) for d, p in paths.items()},
            # the agent fetches it ahead of the rest: it reads records by its rule
            "runtime": {"path": rt_rel, "sha256": digest}}


def manifest_bytes(snap: dict[str, Any]) -> bytes:
    return json.dumps({"files": snap["files"]}, sort_keys=True).encode()


def setup_scripts(backend: BackendConfig) -> tuple[str, str, list[str]]:
    """(setup run once in the project folder, env sourced before each worker, worker argv).

    The package manager's lines are the remote layer's (:mod:`chester.remote.shell`), as on
    every backend; the worker runs from chester's runtime, which travels in the code
    snapshot (:func:`snapshot`), so the AMI needs no chester."""
    from chester.remote import runtime, shell

    opts = backend.options
    root = "."  # the agent runs the setup and every worker in the project folder
    pm = shell.package_manager(backend)
    env = shell.setup_lines(backend, root)
    setup = ["set -e"]
    if backend.sync_on_launch:
        setup += shell.env_sync_lines(backend, root)
    setup += [*env, *backend.prepare_commands]
    python = opts.python if pm == "python" else "python"
    argv = [python, runtime.build().remote_path(root), "worker"]
    return "\n".join(setup) + "\n", "\n".join(env) + "\n", argv


def user_data(*, bucket: str, spec_key: str, agent_key: str, region: str | None,
              endpoint_url: str | None, python: str, bootstrap: Sequence[str],
              max_lifetime_s: float | None = None, attempt: int = 1) -> str:
    """The user-data script of one instance: fetch the agent from S3 and run it.

    ``attempt`` is the instance's number in its group (its ``chester:attempt`` tag; 1: the
    submit's): the agent claims runs for that instance only, never for a later one.
    With ``max_lifetime_s`` its first act is to schedule the instance's shutdown (which
    terminates it: ``InstanceInitiatedShutdownBehavior=terminate``) at that time, so the
    bound holds even if the agent never starts or dies."""
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        "# chester ec2: fetches its code and runs from S3 through the instance role.",
        "# No credentials are in this script.",
        "set -eu",
        f"export CHESTER_EC2_BUCKET={q(bucket)}",
        f"export CHESTER_EC2_SPEC={q(spec_key)}",
    ]
    if attempt > 1:
        lines.append(f"export CHESTER_EC2_ATTEMPT={int(attempt)}")
    if region:
        lines.append(f"export CHESTER_EC2_REGION={q(region)}")
    if endpoint_url:
        lines.append(f"export CHESTER_EC2_S3_ENDPOINT={q(endpoint_url)}")
    lines += [
        'root="${CHESTER_EC2_ROOT:-/}"',
        'state="${root%/}/var/lib/chester"',
        'mkdir -p "$state" "${root%/}/var/log"',
        'exec >>"${root%/}/var/log/chester-agent.log" 2>&1',
        'echo "chester: user-data starts $(date -u +%FT%TZ)"',
    ]
    if max_lifetime_s:
        secs = int(max_lifetime_s)
        mins = max(1, -(-secs // 60))
        lines += [
            f"# a hard bound on this instance's life ({secs} s), whatever becomes of the agent",
            'export CHESTER_EC2_STARTED="$(date +%s)"',
            'if [ -n "${CHESTER_EC2_POWEROFF+x}" ]; then',
            f'  (sleep {secs}; echo "chester: max_lifetime_s reached"; '
            'eval "$CHESTER_EC2_POWEROFF") &',
            "else",
            f"  shutdown -h +{mins} || true",
            "fi",
        ]
    lines += [
        "# a bootstrap that fails powers the instance off (it terminates) instead of idling",
        'trap \'echo "chester: bootstrap failed"; eval "${CHESTER_EC2_POWEROFF-shutdown -h now}"\''
        ' EXIT',
    ]
    lines += list(bootstrap)
    lines += [
        f"PY={q(python)}",
        '"$PY" -c "import boto3" 2>/dev/null || "$PY" -m pip install --quiet boto3',
        '"$PY" -c \'import os, sys, boto3\n'
        'kw = {"region_name": os.environ.get("CHESTER_EC2_REGION") or None,\n'
        '      "endpoint_url": os.environ.get("CHESTER_EC2_S3_ENDPOINT") or None}\n'
        'boto3.client("s3", **kw).download_file(sys.argv[1], sys.argv[2], sys.argv[3])\n'
        f'\' "$CHESTER_EC2_BUCKET" {q(agent_key)} "$state/agent.py"',
        "# run again on every later boot (a stopped spot instance that resumes)",
        'boot="${root%/}/var/lib/cloud/scripts/per-boot"',
        'mkdir -p "$boot"',
        '[ "$0" -ef "$boot/chester-agent.sh" ] || install -m 700 "$0" "$boot/chester-agent.sh"',
        "trap - EXIT",
        'exec "$PY" "$state/agent.py"',
    ]
    return "\n".join(lines) + "\n"


def supervisor_user_data(*, bucket: str, spec_key: str, region: str | None,
                         endpoint_url: str | None, python: str, bootstrap: Sequence[str],
                         max_lifetime_s: float | None) -> str:
    """The user-data of a sweep's supervisor instance: its bootstrap, then
    ``python -m chester_backend_ec2.supervisor``; with ``max_lifetime_s`` a shutdown (which
    terminates it) is scheduled at that time first, whatever becomes of the supervisor."""
    q = shlex.quote
    lines = ["#!/bin/bash", "# chester ec2 supervisor: no credentials are in this script.",
             "set -eu", 'root="${CHESTER_EC2_ROOT:-/}"', 'mkdir -p "${root%/}/var/log"',
             'exec >>"${root%/}/var/log/chester-supervisor.log" 2>&1']
    if region:
        lines.append(f"export CHESTER_EC2_REGION={q(region)}")
    if endpoint_url:
        lines.append(f"export CHESTER_EC2_S3_ENDPOINT={q(endpoint_url)}")
    if max_lifetime_s:
        secs = int(max_lifetime_s)
        lines += ['if [ -n "${CHESTER_EC2_POWEROFF+x}" ]; then',
                  f'  (sleep {secs}; eval "$CHESTER_EC2_POWEROFF") &',
                  f"else shutdown -h +{max(1, -(-secs // 60))} || true; fi"]
    lines += ['trap \'eval "${CHESTER_EC2_POWEROFF-shutdown -h now}"\' EXIT', *bootstrap,
              f"{q(python)} -m chester_backend_ec2.supervisor {q(bucket)} {q(spec_key)}"]
    return "\n".join(lines) + "\n"


_SECRET_PATTERNS = (
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "an AWS access key id"),
    (r"(?i)aws_secret_access_key|aws_session_token", "an AWS secret setting"),
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key"),
)


def find_secret(text: str) -> str | None:
    """What secret-looking thing ``text`` holds (None: nothing found)."""
    import re

    for pattern, what in _SECRET_PATTERNS:
        if re.search(pattern, text):
            return what
    return None


def group_token(tokens: Iterable[str]) -> str:
    """The ClientToken of the instance carrying these runs (deterministic, <= 64 chars)."""
    return "chester-" + hashlib.sha256("\n".join(tokens).encode()).hexdigest()[:40]
