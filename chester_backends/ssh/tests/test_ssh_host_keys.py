"""The SSH transport trusts a host's key exactly when the user's OpenSSH would (batch mode).

Each test writes its own ssh_config and known-hosts files (never this machine's ``~/.ssh``)
and serves the real sshd of a test host with a key of its choosing: its own, an impostor's
(the host key swapped between two launches), or a key with a host certificate. The verdict of
chester's transport is compared with what ``ssh -o BatchMode=yes`` says for the very same
files, and with what OpenSSH's rules say it must be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import yaml
from chester_testinfra.sshd import new_host_key, public_key

from chester.config import load_config
from chester.errors import BackendError, ConnectError
from chester.launcher import launch
from chester.remote.ssh import SSHTarget, Transport

cloudpickle.register_pickle_by_value(sys.modules[__name__])
CHESTER = str(Path(sys.executable).parent / "chester")
ALIAS = "hk"


@pytest.fixture
def host(sshd_hosts):
    h = sshd_hosts[1]
    try:
        yield h
    finally:
        h.restore_host_key()


def ssh_config(d: Path, host, *, policy: str | None, extra: str = "",
               known_file: bool = True) -> Path:
    """An ssh_config of the test's own: the host as ``hk``, known hosts in ``d`` (without
    ``known_file``, the user's known-hosts file is left to ``extra`` to name)."""
    d.mkdir(parents=True, exist_ok=True)
    for f in ("known_hosts", "global_known_hosts"):
        (d / f).touch()
    lines = [f"Host {ALIAS}", f"  HostName {host.address}", f"  Port {host.port}",
             f"  User {host.user}", f"  IdentityFile {host.key}", "  IdentitiesOnly yes",
             *([f"  UserKnownHostsFile {d}/known_hosts"] if known_file else []),
             f"  GlobalKnownHostsFile {d}/global_known_hosts", "  ConnectTimeout 5"]
    if policy is not None:
        lines.append(f"  StrictHostKeyChecking {policy}")
    cfg = d / "ssh_config"
    cfg.write_text("\n".join(lines) + "\n" + extra)
    return cfg


def openssh_connects(cfg: Path) -> bool:
    r = subprocess.run(["ssh", "-F", str(cfg), "-o", "BatchMode=yes", ALIAS, "true"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return r.returncode == 0


def chester_verdict(cfg: Path, host) -> tuple[bool, str, int]:
    """(connected, the error's text, logins the host accepted meanwhile)."""
    before = host.accepted_connections()
    tr = Transport(SSHTarget(host=ALIAS, ssh_config=str(cfg), connect_timeout=5),
                   backend="hk")
    try:
        out = tr.run(["echo", "through"]).stdout
        assert out == "through\n"
        return True, "", host.accepted_connections() - before
    except BackendError as exc:
        assert not isinstance(exc, ConnectError), exc  # permanent: retrying cannot help
        assert tr._ctl_dir is None, "a refused login left its folder behind"
        return False, str(exc), host.accepted_connections() - before
    finally:
        tr.close()


def _entries(path: Path) -> list[str]:
    """A known-hosts file's lines, hashed host names (salted at random) shown as hashed."""
    return ["|1|<hashed>" + ln[ln.index(" "):] if ln.startswith("|1|") else ln
            for ln in path.read_text().splitlines()]


def compare(tmp_path: Path, host, name: str, policy: str | None, setup, expect: bool,
            extra: str = "", known_file: bool = True) -> str:
    """Run chester and OpenSSH on copies of the same files; both must give ``expect``.
    Returns chester's error (empty when it connected)."""
    runs = {}
    for who in ("openssh", "chester"):
        d = tmp_path / f"{name}-{policy}-{who}"
        cfg = ssh_config(d, host, policy=policy, extra=extra.format(d=d),
                         known_file=known_file)
        setup(d)
        if who == "openssh":
            runs[who] = (openssh_connects(cfg), "", 0)
        else:
            runs[who] = chester_verdict(cfg, host)
        runs[who + "_known"] = _entries(d / "known_hosts")
    ok, err, logins = runs["chester"]
    assert runs["openssh"][0] is expect, (name, policy, "openssh disagrees with the rules")
    assert ok is expect, (name, policy, err)
    if not ok:
        assert logins == 0, "a refused host saw a login"
        assert "\n" not in err and err.startswith("ssh backend 'hk' ("), err
    # accept-new writes the key where OpenSSH writes it, as OpenSSH writes it
    assert runs["chester_known"] == runs["openssh_known"], (name, policy)
    return err


POLICIES = ["yes", "accept-new", "ask", None, "no"]  # None: OpenSSH's default (ask)


def test_an_unknown_host(tmp_path, host):
    for policy in POLICIES:
        err = compare(tmp_path, host, "unknown", policy, lambda d: None,
                      expect=policy in ("accept-new", "no"))
        if policy in ("yes", "ask", None):
            assert f"the host key of {host.address} is not in your known-hosts files" in err
            assert f"`ssh -F {tmp_path}/unknown-{policy}-chester/ssh_config hk`" in err
            assert "StrictHostKeyChecking accept-new" in err
    d = tmp_path / "unknown-accept-new-chester"
    assert public_key(host.host_key) in (d / "known_hosts").read_text()


def _known(line: str, file: str = "known_hosts"):
    def setup(d: Path) -> None:
        with open(d / file, "a") as f:
            f.write(line.format(d=d) + "\n")
    return setup


def test_known_hosts_entries_are_read_as_openssh_reads_them(tmp_path, host):
    """Each form of entry (plain, hashed, wildcard, in the global file, under a
    ``HostKeyAlias``, in a file named by an ``Include``d config) lets the host in when it is
    the host's, and is no use for the host when it names another."""
    key = public_key(host.host_key)
    a = host.address
    near = a.rsplit(".", 1)[0] + ".250"  # another address of the same network

    def hashed(name: str):
        def setup(d: Path) -> None:
            (d / "known_hosts").write_text(f"{name} {key}\n")
            subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(d / "known_hosts")],
                           check=True, capture_output=True)
            assert name not in (d / "known_hosts").read_text()
        return setup

    def included(name: str):
        def setup(d: Path) -> None:
            (d / "inc_known_hosts").write_text(f"{name} {key}\n")
            (d / "more.conf").write_text(f"UserKnownHostsFile {d}/inc_known_hosts\n")
        return setup

    # the main block names no UserKnownHostsFile here: the included file's is the one
    include = "Include {d}/more.conf\n"
    cases = {  # name: (setup for the host's own entry, for another host's entry, extra)
        "plain": (_known(f"{a} {key}"), _known(f"{near} {key}"), ""),
        "hashed": (hashed(a), hashed(near), ""),
        "wildcard": (_known(f"{a.rsplit('.', 2)[0]}.* {key}"), _known(f"10.254.* {key}"), ""),
        "negated": (_known(f"*,!{near} {key}"), _known(f"*,!{a} {key}"), ""),
        "global": (_known(f"{a} {key}", "global_known_hosts"),
                   _known(f"{near} {key}", "global_known_hosts"), ""),
        "alias": (_known(f"lab-box {key}"), _known(f"{a} {key}"),
                  "Host hk\n  HostKeyAlias lab-box\n"),
        "include": (included(a), included(near), include),
    }
    for name, (own, other, extra) in cases.items():
        for policy in ("yes", None):
            compare(tmp_path, host, f"{name}-own", policy, own, expect=True, extra=extra,
                    known_file=name != "include")
            err = compare(tmp_path, host, f"{name}-other", policy, other, expect=False,
                          extra=extra, known_file=name != "include")
            assert "is not in your known-hosts files" in err, (name, err)


def test_a_changed_key_is_refused_naming_file_line_and_fix(tmp_path, host):
    key = public_key(host.host_key)
    a = host.address
    impostor = new_host_key(tmp_path / "impostor" / "host_ed25519")
    host.serve_host_key(impostor)
    setup = _known(f"# the lab's hosts\n{a} {key}")  # the entry is on line 2
    for policy in ["yes", "accept-new", "ask", None]:
        err = compare(tmp_path, host, "changed", policy, setup, expect=False)
        kh = tmp_path / f"changed-{policy}-chester" / "known_hosts"
        assert f"the host key of {a} has CHANGED, so nothing was sent" in err
        assert f"ED25519 key in {kh}:2" in err
        assert f"`ssh-keygen -f {kh} -R {a}`" in err
    # only an explicit `no` connects, and says so
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        compare(tmp_path, host, "changed", "no", setup, expect=True)
    warned = [e for e in logs if e["event"] == "ssh_host_key_not_trusted"]
    assert len(warned) == 1, logs
    assert "has CHANGED" in warned[0]["detail"] and "StrictHostKeyChecking is no" in \
        warned[0]["detail"]


def test_a_revoked_key_is_refused(tmp_path, host):
    key = public_key(host.host_key)
    a = host.address
    setup = _known(f"{a} {key}\n@revoked * {key}")
    for policy in ["yes", "accept-new", None]:
        err = compare(tmp_path, host, "revoked", policy, setup, expect=False)
        assert f"the ED25519 host key of {a} is marked @revoked" in err
    compare(tmp_path, host, "revoked", "no", setup, expect=True)  # as OpenSSH 9 does


def test_a_host_certificate_signed_by_a_known_authority(tmp_path, host):
    ca = tmp_path / "ca" / "ca_ed25519"
    new_host_key(ca)  # a key pair; the CA signs with its private half
    other_ca = new_host_key(tmp_path / "ca" / "other_ed25519")
    key = new_host_key(tmp_path / "certified" / "host_ed25519", ca=ca, principals=host.address)
    host.serve_host_key(key, Path(f"{key}-cert.pub"))
    for policy in ["yes", None, "accept-new"]:
        compare(tmp_path, host, "ca", policy, _known(f"@cert-authority * {public_key(ca)}"),
                expect=True)
        err = compare(tmp_path, host, "other-ca", policy,
                      _known(f"@cert-authority * {public_key(other_ca)}"),
                      expect=policy == "accept-new")
        if policy != "accept-new":
            assert "host key" in err


# -- the ssh backend: a key swapped between two launches -----------------------------------

def fn_read_token(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    with open(_o.path.join(log_dir, "token.txt"), "w") as f:
        f.write(_o.environ.get("MY_TOKEN", "absent"))
    _t.sleep(variant.get("sleep", 0))


def _project(tmp_path: Path, host, cfg: Path, sync: bool) -> Path:
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    (project / "train.py").write_text("print('code')\n")
    (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {"box": {
        "type": "ssh", "host": ALIAS, "ssh_config": str(cfg),
        "remote_dir": f"/remote/{tmp_path.name}", "connect_timeout": 5,
        "sync": sync, "secrets": ["MY_TOKEN"]}}}))
    return project


@pytest.mark.parametrize("sync", [False, True])
def test_an_impostor_gets_neither_the_secret_nor_the_code(tmp_path, host, sync, monkeypatch):
    token = f"tok-{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("MY_TOKEN", token)
    cfg = ssh_config(tmp_path / "ssh", host, policy="yes")
    (tmp_path / "ssh" / "known_hosts").write_text(f"{host.address} {public_key(host.host_key)}\n")
    project = _project(tmp_path, host, cfg, sync)
    config = load_config(project / "chester.yaml")
    first = launch(fn_read_token, [{"i": 0, "sleep": 60}], backend="box", exp_prefix="first",
                   config=config)
    on_host = host.local_dir / first.runs[0].remote_dir[len("/remote/"):] / "token.txt"
    deadline = time.monotonic() + 60
    # the genuine host's run has the secret, and goes on (the file is there as the run
    # opens it, its text once the run closes it)
    while not (on_host.exists() and on_host.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert on_host.read_text() == token
    # the host is replaced by an impostor with a key of its own
    host.serve_host_key(new_host_key(tmp_path / "impostor" / "host_ed25519"))
    remote = host.local_dir / tmp_path.name
    before = host.accepted_connections()
    files_before = sorted(p for p in remote.rglob("*"))
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    r = subprocess.run([CHESTER, "launch", "-b", "box", "-p", "second", "--", "sh", "-c",
                        'printf %s "$MY_TOKEN" > token.txt', "i=1"],
                       cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("chester: error: ")]
    assert len(lines) == 1 and "has CHANGED, so nothing was sent" in lines[0], r.stderr
    assert f"{tmp_path}/ssh/known_hosts:1" in lines[0] and "ssh-keygen -f" in lines[0]
    assert host.accepted_connections() == before  # no login: nothing reached the impostor
    assert sorted(p for p in remote.rglob("*")) == files_before
    # and `chester status` does not take the impostor's word on the run still going
    st = subprocess.run([CHESTER, "status", "first", "--json"], cwd=project, env=env,
                        capture_output=True, text=True, timeout=120)
    assert st.returncode != 0, st.stdout + st.stderr
    lines = [ln for ln in st.stderr.splitlines() if ln.startswith("chester: error: ")]
    assert len(lines) == 1 and "has CHANGED, so nothing was sent" in lines[0], st.stderr
    assert host.accepted_connections() == before
    # once the user accepts the new key on purpose, the host is reached again
    subprocess.run(["ssh-keygen", "-f", str(tmp_path / "ssh" / "known_hosts"), "-R",
                    host.address], check=True, capture_output=True)
    with open(tmp_path / "ssh" / "known_hosts", "a") as f:
        f.write(f"{host.address} {public_key(host.host_key)}\n")
    assert first.status()[first.runs[0].name].value == "running"
    first.cancel()


def test_a_new_host_is_refused_until_the_user_accepts_it(tmp_path, host, monkeypatch):
    """StrictHostKeyChecking unset (ask) and nothing known: one line that says what to do;
    after `ssh HOST` once (here: the accept-new the line offers), the launch works."""
    cfg = ssh_config(tmp_path / "ssh", host, policy=None)
    project = _project(tmp_path, host, cfg, sync=False)
    config = load_config(project / "chester.yaml")
    monkeypatch.setenv("MY_TOKEN", "t")
    with pytest.raises(BackendError) as ei:
        launch(fn_read_token, [{"i": 0}], backend="box", exp_prefix="new", config=config)
    msg = str(ei.value)
    assert "\n" not in msg and "is not in your known-hosts files" in msg
    assert f"ssh -F {cfg} hk" in msg and "accept-new" in msg
    cfg.write_text(cfg.read_text() + "  StrictHostKeyChecking accept-new\n")  # the choice
    sw = launch(fn_read_token, [{"i": 0}], backend="box", exp_prefix="new", config=config)
    states = sw.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert [s.value for s in states.values()] == ["succeeded"]
    assert public_key(host.host_key) in (tmp_path / "ssh" / "known_hosts").read_text()
