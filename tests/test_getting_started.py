"""docs/getting-started.md is true: its blocks run against real servers and print what the
page shows.

The page marks its blocks with HTML comments (invisible on the site):
``<!-- file: NAME -->`` before a block that is a file of the project (written as it is),
``<!-- run: STEP -->`` before a ``bash`` block the reader types, and ``<!-- output -->``
before the ``text`` block that shows what it prints. This test follows the page in order in
one project folder: it writes the files, runs each block with bash (stdout and stderr
together, as a terminal shows them) and compares the output, normalised, with the page.
``CHESTER_UPDATE_DOCS=1`` writes the outputs into the page instead (docs/contributing.md).

The servers are testinfra's: the SSH host ``gpu1`` is an ``sshd_hosts`` host, the login
host ``login.cluster`` the loopback sshd in front of the session's SLURM cluster, and AWS the
moto endpoint with the ec2 tests' "farm" playing the instances. What the test changes
between the page and the run, and back, is all in this module's ADAPT and NORMALISE:

* ``pip install`` lines are not run: every backend is installed from this checkout;
* ``chester.yaml``: each backend's ``host`` becomes the fixture's alias with its
  ``ssh_config``; the cluster's ``remote_dir`` (``/home/me/...``) a folder of the test, its
  ``scheduler_env`` the cluster's ``SLURM_CONF`` and ``poll_interval`` 0.3 s; the ec2
  backend's ``python`` the test's interpreter and its sync and watch intervals short;
* outputs (``normalise``): the fixtures' names, the project's temporary folder, this
  machine's host name (``my-laptop``; ``node-017`` in the cluster's rows, whose node is this
  machine here), ages ("3s ago"), durations, SLURM job ids and job names, EC2 instance ids,
  sweep keys and spot prices (moto's is a stand-in), the code's size in bytes and tokens are
  written as the page writes them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "getting-started.md"
UPDATE = os.environ.get("CHESTER_UPDATE_DOCS") == "1"
MARK = re.compile(r"<!-- (?P<kind>file|run|output)(?::\s*(?P<arg>[^ ]+))? -->\n"
                  r"```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
#: the page's names for the test's servers
PAGE_HOST, PAGE_LOGIN, PAGE_HOME = "gpu1", "login.cluster", "/home/me"
PAGE_PROJECT = "~/project"
PAGE_MACHINE = "my-laptop"

sys.path.insert(0, str(ROOT / "chester_backends" / "ec2" / "tests"))


def blocks(text: str) -> list[re.Match[str]]:
    return list(MARK.finditer(text))


class Servers:
    """What ADAPT and NORMALISE need to know about this session's servers."""

    def __init__(self, project: Path, home: Path, ssh_host, login, cluster_env: dict):
        self.project, self.home = project, home
        self.ssh_host, self.login, self.cluster_env = ssh_host, login, cluster_env


def adapt_config(text: str, s: Servers) -> str:
    """The page's chester.yaml as the test runs it (ADAPT, in the module's text)."""
    cfg = yaml.safe_load(text)
    for b in cfg.get("backends", {}).values():
        if b.get("host") == PAGE_HOST:
            b.update(host=s.ssh_host.alias, ssh_config=s.ssh_host.ssh_config)
        elif b.get("host") == PAGE_LOGIN:
            b.update(host=s.login.alias, ssh_config=s.login.ssh_config,
                     scheduler_env=dict(s.cluster_env), poll_interval=0.3)
        if str(b.get("remote_dir", "")).startswith(PAGE_HOME):
            b["remote_dir"] = str(s.home) + b["remote_dir"][len(PAGE_HOME):]
        if b.get("type") == "ec2":
            b.update(python=sys.executable, sync_interval_s=0.5, watch_interval_s=0.2)
    return yaml.safe_dump(cfg, sort_keys=False)


def adapt_commands(body: str) -> str:
    return "\n".join(line for line in body.splitlines()
                     if not line.strip().startswith("pip install"))


def normalise(out: str, s: Servers) -> str:
    """What legitimately differs from run to run, written as the page writes it."""
    subs = [
        (str(s.home), PAGE_HOME),
        (str(s.project), PAGE_PROJECT),
        (s.ssh_host.alias, PAGE_HOST),
        (s.login.alias, PAGE_LOGIN),
    ]
    for real, shown in subs:
        out = out.replace(real, shown)
    out = re.sub(rf"\b{re.escape(socket.gethostname())}\b", PAGE_MACHINE, out)
    out = re.sub(r"\b\d+(?:\.\d+)?(s|m|h|d) ago\b", r"5\1 ago", out)  # ages
    out = re.sub(r"\bin \d+(?:\.\d+)? ?s\b", "in 2.0 s", out)  # durations
    # --wait's first progress line is printed as the runs start (how many ended by then
    # varies); the later ones, one per 10 s, come as fast as this machine runs them
    seen: set[str] = set()

    def progress(m: re.Match) -> str:
        first = m.group(1) not in seen
        seen.add(m.group(1))
        return f"{m.group(1)}: 0/{m.group(2)} ended ({m.group(2)} queued), 0s elapsed\n" \
            if first else ""

    out = re.sub(r"(?m)^(\S+): \d+/(\d+) ended \([^)]*\), \d+s elapsed\n", progress, out)
    out = re.sub(r"\bi-[0-9a-f]{8,17}\b", "i-0123456789abcdef0", out)  # EC2 instances
    out = re.sub(r"\b[0-9a-f]{32}\b", "0" * 32, out)  # tokens
    out = re.sub(r"(?m)(\t|^)(\d+)_(\d+)(?=\t)", lambda m: f"{m.group(1)}123_{m.group(3)}",
                 out)  # SLURM array job ids in the status table's "Remote id"
    out = re.sub(r"\bjob(s?) [\d, ]+\d\b", r"job\1 123", out)
    out = re.sub(r"chester-[0-9a-f]{8,}-(\d+)", r"chester-abcdef12-\1", out)  # job names
    out = re.sub(r"\b(\d+) files \(\d+ bytes\)", r"\1 files (139712 bytes)", out)  # code size
    out = re.sub(r"\b([\w-]+)-[0-9a-f]{10}\b(?=:)", r"\1-0a1b2c3d4e", out)  # EC2 sweep keys
    # moto's spot price is a stand-in: show one of the kind AWS quotes for the type
    out = re.sub(r"about \$[\d.]+/h \(spot price now", "about $2.13/h (spot price now", out)
    # the test's SLURM node is this machine: the page names a compute node
    out = "\n".join(line.replace(f"\t{PAGE_MACHINE}\t", "\tnode-017\t")
                    if "\tcluster\t" in line else line for line in out.split("\n"))
    return out.rstrip() + "\n"


def run_block(body: str, project: Path, env: dict) -> str:
    r = subprocess.run(["bash", "-c", "set -eo pipefail\n" + adapt_commands(body)],
                       cwd=project, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=240)
    assert r.returncode == 0, f"this block of the page failed ({r.returncode}):\n{body}\n" \
                              f"{r.stdout[-3000:]}"
    return r.stdout


@pytest.mark.slow  # four backends, one sweep each
@pytest.mark.timeout(600)
def test_the_getting_started_page_runs_as_written(tmp_path, sshd_hosts, sshd_loopback,
                                                   slurm_cluster, aws_endpoint):
    from ec2farm import REGION, Farm  # type: ignore[import-not-found]

    text = PAGE.read_text()
    found = blocks(text)
    assert [m["arg"] for m in found if m["kind"] == "run"] == \
        ["laptop", "laptop", "ssh", "slurm", "ec2"], "the page's steps changed: update this test"
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    home = tmp_path / "login-home"
    s = Servers(project, home, sshd_hosts[0], sshd_loopback, slurm_cluster.env)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHESTER_", "AWS_", "SLURM_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               HOME=str(tmp_path / "home"), CHESTER_SLOTS_DIR=str(tmp_path / "slots"),
               CHESTER_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="200",
               AWS_ENDPOINT_URL=aws_endpoint.url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    (tmp_path / "home").mkdir()
    import boto3

    aws_endpoint.reset()
    boto3.client("s3", region_name=REGION, endpoint_url=aws_endpoint.url,
                 aws_access_key_id="testing", aws_secret_access_key="testing") \
        .create_bucket(Bucket="my-chester-bucket")
    farm = Farm(tmp_path / "instances", aws_endpoint.url)
    new_text, pos, last_run = [], 0, None
    try:
        for m in found:
            if m["kind"] == "file":
                body = m["body"]
                if m["arg"] == "chester.yaml":
                    body = adapt_config(body, s)
                (project / m["arg"]).write_text(body)
            elif m["kind"] == "run":
                last_run = normalise(run_block(m["body"], project, env), s)
            else:
                assert last_run is not None, "an output block with no run block before it"
                start, end = m.span("body")
                new_text += [text[pos:start], last_run]
                pos = end
                if not UPDATE:
                    assert m["body"] == last_run, (
                        "docs/getting-started.md shows another output than its block prints "
                        "now; if the change is meant, regenerate with `nox -s docs -- update` "
                        f"(docs/contributing.md).\n--- page:\n{m['body']}--- now:\n{last_run}")
                last_run = None
    finally:
        farm.close()
    new_text.append(text[pos:])
    if UPDATE:
        PAGE.write_text("".join(new_text))
