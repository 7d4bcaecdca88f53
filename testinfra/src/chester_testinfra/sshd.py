"""SSH "hosts" for the tests: key-only sshd servers, each a distinct machine as seen over ssh.

:func:`start_netns_hosts` makes each host a network namespace joined to this machine by a
veth pair (``10.253.K.1`` here, ``10.253.K.2`` there), with its own hostname (UTS namespace)
and its own mount namespace in which :data:`REMOTE` (``/remote``) is a bind mount of a
per-host folder of the test's temp dir. So over ssh every host answers ``hostname`` with its
own name and sees only its own ``/remote``, while the test can look into it from outside
(``host.local_dir``). The rest of the filesystem is shared (so the hosts run this checkout's
Python). :func:`start_loopback_host` is a plain sshd on ``127.0.0.1:<free port>``.

Fault injection (functions below, also methods of :class:`SshHost`): ``kill_sshd`` (the
listener and, by default, every ssh session: connections drop, new ones are refused),
``restart_sshd``, ``blackhole``/``unblackhole`` (nft drops every packet to the sshd port, so
connects and open connections hang), and ``accepted_connections`` (publickey logins so far,
from the sshd log at ``LogLevel VERBOSE``).

Nothing listens on or talks to any address but loopback and the namespaces' own ones.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import (
    Daemon,
    descendants_of,
    free_port,
    kill_pids,
    require,
    run,
    wait_until,
)

SSHD = "/usr/sbin/sshd"
REMOTE = "/remote"
SUBNET = "10.253"  # 10.253.K.0/24 per host; K picked free under a lock
NS_PREFIX = "chx"  # netns chx<pid>h<i>, host-side veth chx<pid>v<i>
NFT_TABLE = "chester_blackhole"
LOCK = "/run/chester-infra-netns.lock"

NEEDED = (SSHD, "ssh", "ssh-keygen", "ip", "ss", "nft", "unshare", "nsenter", "mount", "rsync")


# -- keys and configs -------------------------------------------------------------------

@dataclass(frozen=True)
class SshKeys:
    dir: Path
    host_key: Path  # the servers' host key
    key: Path  # the client's private key (ed25519, no passphrase)
    authorized_keys: Path
    other_key: Path  # a second client key that no server accepts (auth failure tests)


def make_keys(d: Path) -> SshKeys:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    keys = SshKeys(d, d / "host_ed25519", d / "id_ed25519", d / "authorized_keys",
                   d / "other_ed25519")
    for k in (keys.host_key, keys.key, keys.other_key):
        if not k.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "chester-test",
                 "-f", str(k)])
    shutil.copy(f"{keys.key}.pub", keys.authorized_keys)
    return keys


def _sshd_config(keys: SshKeys, address: str, port: int) -> str:
    return f"""\
ListenAddress {address}
Port {port}
HostKey {keys.host_key}
AuthorizedKeysFile {keys.authorized_keys}
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
# lets a client pick the SLURM cluster: ssh -o SetEnv=SLURM_CONF=... (a "login host")
AcceptEnv SLURM_CONF
# a fresh host: `python3` is the system's (pyenv, where the user's shell sets it up, resolves
# to it), with nothing of chester's installed
SetEnv PYENV_VERSION=system
LogLevel VERBOSE
"""


def _client_block(alias: str, address: str, port: int, user: str, key: Path) -> str:
    return f"""\
Host {alias}
  HostName {address}
  Port {port}
  User {user}
  IdentityFile {key}
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  ConnectTimeout 10
  LogLevel ERROR
"""


def new_host_key(path: Path, ca: Path | None = None, principals: str = "") -> Path:
    """A fresh ed25519 host key at ``path`` (for :meth:`SshHost.serve_host_key`); with the
    CA private key ``ca``, also a host certificate for ``principals`` (comma-separated host
    names), ``<path>-cert.pub``. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "chester-test-host", "-f",
         str(path)])
    if ca is not None:
        run(["ssh-keygen", "-q", "-s", str(ca), "-I", "chester-test-host", "-h",
             "-n", principals, "-V", "-5m:+1d", f"{path}.pub"])
    return path


def public_key(key: str | Path) -> str:
    """``TYPE BASE64`` of a key pair's public half (for known-hosts lines)."""
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


# -- a host -----------------------------------------------------------------------------

@dataclass(eq=False)
class SshHost:
    """One SSH host. Connect with ``ssh -F host.ssh_config host.alias`` or, without the
    config file, to ``host.address:host.port`` as ``host.user`` with ``host.key``."""

    alias: str  # Host name in ssh_config
    hostname: str  # what `hostname` prints over ssh
    address: str  # IP address to connect to
    port: int
    user: str
    key: str  # client private key path
    ssh_config: str  # file for `ssh -F`
    remote_dir: str  # this host's private base folder, as seen over ssh
    local_dir: Path  # the same folder as seen by the test process
    log: Path  # sshd log (LogLevel VERBOSE)
    netns: str | None = None  # network namespace, None for the loopback host
    other_key: str = ""  # a private key this host does not accept
    _config: Path = field(default=Path(), repr=False)
    _holder: Daemon | None = field(default=None, repr=False)
    _sshd: Daemon | None = field(default=None, repr=False)
    _veth: str | None = field(default=None, repr=False)
    _first_host_key: Path | None = field(default=None, repr=False)

    # -- use ----------------------------------------------------------------------------
    def ssh_argv(self, *command: str, options: dict[str, str] | None = None) -> list[str]:
        """``ssh -F config [-o K=V ...] alias [command...]``."""
        argv = ["ssh", "-F", self.ssh_config]
        for k, v in (options or {}).items():
            argv += ["-o", f"{k}={v}"]
        return [*argv, self.alias, *command]

    def run(self, command: str, *, check: bool = True, timeout: float = 60,
            options: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run one shell command on the host over ssh (text output captured)."""
        return run(self.ssh_argv(command, options=options), check=check, timeout=timeout)

    @property
    def connect_kwargs(self) -> dict:
        """``connect_kwargs`` for fabric/paramiko (key only, no agent, no key search)."""
        return {"key_filename": self.key, "look_for_keys": False, "allow_agent": False}

    def fabric(self, **kw):
        """A ``fabric.Connection`` to this host (fabric imported here, lazily)."""
        from fabric import Connection

        kw.setdefault("connect_timeout", 10)
        return Connection(self.address, user=self.user, port=self.port,
                          connect_kwargs=self.connect_kwargs, **kw)

    # -- state --------------------------------------------------------------------------
    @property
    def sshd_pid(self) -> int | None:
        """The listener's pid, or None when it is not running."""
        return self._sshd.pid if self._sshd is not None and self._sshd.alive() else None

    def accepted_connections(self) -> int:
        """How many ssh logins this host's sshd accepted so far (all restarts included)."""
        try:
            return self.log.read_text(errors="replace").count("Accepted publickey for ")
        except FileNotFoundError:
            return 0

    # -- faults -------------------------------------------------------------------------
    def start_sshd(self) -> None:
        """Start the listener (no-op when it runs) and wait until it accepts connections."""
        if self.sshd_pid is not None:
            return
        before = self._listening_lines()
        argv = [SSHD, "-D", "-f", str(self._config), "-E", str(self.log)]
        if self.netns is not None:
            assert self._holder is not None and self._holder.alive(), \
                f"the namespaces of {self.alias} are gone"
            argv = ["nsenter", "-t", str(self._holder.pid), "-m", "-u", "-n", *argv]
        self._sshd = d = Daemon(argv, self.log.with_suffix(".out"))
        try:
            wait_until(lambda: self._listening_lines() > before or not d.alive(),
                       10, f"sshd of {self.alias} to listen")
        except TimeoutError:
            pass
        if not d.alive() or self._listening_lines() <= before:
            raise RuntimeError(f"sshd of {self.alias} did not start: "
                               f"{d.tail()} {self._tail_log()}")

    def kill_sshd(self, sessions: bool = True) -> None:
        """SIGKILL the listener; with ``sessions`` also every sshd process serving a
        connection (open connections drop). Commands started over ssh keep running."""
        d = self._sshd
        if d is None or not d.alive():
            return
        kids = [p for p in descendants_of(d.pid) if _comm(p) == "sshd"] if sessions else []
        kill_pids([d.pid, *kids])
        d.proc.wait(5)

    def restart_sshd(self, sessions: bool = False) -> None:
        """Stop the listener (and the sessions if asked), then start it again."""
        self.kill_sshd(sessions=sessions)
        self.start_sshd()

    # -- host keys ----------------------------------------------------------------------
    @property
    def host_key(self) -> Path:
        """The private host key sshd presents now (its ``.pub`` beside it)."""
        for line in self._config.read_text().splitlines():
            if line.startswith("HostKey "):
                return Path(line.split(None, 1)[1])
        raise RuntimeError(f"no HostKey in {self._config}")

    def serve_host_key(self, key: str | Path, certificate: str | Path | None = None) -> None:
        """From now on sshd presents ``key`` (a private host key; with ``certificate``, also
        that host certificate: ``HostCertificate``) — an impostor, or a reinstalled host.
        The listener restarts; open sessions stay. :meth:`restore_host_key` undoes it."""
        lines = [ln for ln in self._config.read_text().splitlines()
                 if not ln.startswith(("HostKey ", "HostCertificate "))]
        if self._first_host_key is None:
            self._first_host_key = self.host_key
        lines.insert(0, f"HostKey {key}")
        if certificate is not None:
            lines.insert(1, f"HostCertificate {certificate}")
        self._config.write_text("\n".join(lines) + "\n")
        self.restart_sshd()

    @property
    def known_name(self) -> str:
        """The host as known-hosts files name it (``[address]:port`` off port 22)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def strict_config(self, folder: Path, *, alias: str = "strict", policy: str | None = "yes",
                      known: bool = True) -> Path:
        """An ssh_config of its own under ``folder`` that reaches this host as ``alias`` and
        checks its key as a careful user's does: ``StrictHostKeyChecking policy`` (None:
        OpenSSH's default) against ``folder/known_hosts`` (with the key the host presents now
        when ``known``), no global known-hosts file. Returns the config's path."""
        folder.mkdir(parents=True, exist_ok=True)
        kh = folder / "known_hosts"
        kh.write_text(f"{self.known_name} {public_key(self.host_key)}\n" if known else "")
        cfg = folder / "ssh_config"
        cfg.write_text(
            f"Host {alias}\n  HostName {self.address}\n  Port {self.port}\n  User {self.user}\n"
            f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n"
            "  GlobalKnownHostsFile /dev/null\n  ConnectTimeout 10\n"
            + (f"  StrictHostKeyChecking {policy}\n" if policy else ""))
        return cfg

    def restore_host_key(self) -> None:
        """Present the session's own host key again (no-op when it was never changed)."""
        if self._first_host_key is not None and (
                self.host_key != self._first_host_key
                or "HostCertificate " in self._config.read_text()):
            self.serve_host_key(self._first_host_key)

    def blackhole(self) -> None:
        """Drop every packet to the sshd port: connects and open connections hang."""
        if self.netns is not None:
            nft = ["ip", "netns", "exec", self.netns, "nft"]
            table, match = NFT_TABLE, f"tcp dport {self.port} drop"
        else:
            nft = ["nft"]  # loopback host: a table of its own in this namespace, its port only
            table = f"{NFT_TABLE}_{self.port}"
            match = f'iif "lo" ip daddr {self.address} tcp dport {self.port} drop'
        run([*nft, "-f", "-"], input=f"""\
table inet {table} {{
  chain input {{
    type filter hook input priority -10; policy accept;
    {match}
  }}
}}
""")

    def unblackhole(self) -> None:
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, "nft", "delete", "table", "inet",
                    NFT_TABLE]
        else:
            argv = ["nft", "delete", "table", "inet", f"{NFT_TABLE}_{self.port}"]
        run(argv, check=False)

    # -- internals ----------------------------------------------------------------------
    def _listening_lines(self) -> int:
        try:
            return self.log.read_text(errors="replace").count("Server listening on ")
        except FileNotFoundError:
            return 0

    def _tail_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop everything of this host: blackhole, sshd, sessions, every process left in
        its namespaces, the namespace and the veth pair. Idempotent."""
        try:
            self.unblackhole()
        except Exception:
            pass
        if self._sshd is not None:
            kill_pids(descendants_of(self._sshd.pid))
            self._sshd.stop(timeout=2, sig=signal.SIGKILL)
        if self.netns is not None:
            _destroy_netns(self.netns, self._veth)
        if self._holder is not None:
            self._holder.stop(timeout=2, sig=signal.SIGKILL)


# -- module-level fault helpers (same as the methods) ----------------------------------

def kill_sshd(host: SshHost, sessions: bool = True) -> None:
    host.kill_sshd(sessions=sessions)


def restart_sshd(host: SshHost, sessions: bool = False) -> None:
    host.restart_sshd(sessions=sessions)


def start_sshd(host: SshHost) -> None:
    host.start_sshd()


def blackhole(host: SshHost) -> None:
    host.blackhole()


def unblackhole(host: SshHost) -> None:
    host.unblackhole()


def accepted_connections(host: SshHost) -> int:
    return host.accepted_connections()


# -- a group of hosts -------------------------------------------------------------------

@dataclass(eq=False)
class SshHosts:
    """What the ``sshd_hosts`` fixture yields: the hosts (index them by number or alias)
    plus the shared ``ssh_config``, ``key``, ``other_key`` (accepted by no host) and
    ``user``, and the fault helpers."""

    hosts: list[SshHost]
    ssh_config: str
    key: str
    user: str
    base: Path
    other_key: str = ""

    def __getitem__(self, which: int | str) -> SshHost:
        if isinstance(which, int):
            return self.hosts[which]
        for h in self.hosts:
            if which in (h.alias, h.hostname, h.address):
                return h
        raise KeyError(which)

    def __iter__(self) -> Iterator[SshHost]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def _h(self, host: SshHost | int | str) -> SshHost:
        return host if isinstance(host, SshHost) else self[host]

    def kill_sshd(self, host: SshHost | int | str, sessions: bool = True) -> None:
        self._h(host).kill_sshd(sessions=sessions)

    def restart_sshd(self, host: SshHost | int | str, sessions: bool = False) -> None:
        self._h(host).restart_sshd(sessions=sessions)

    def start_sshd(self, host: SshHost | int | str) -> None:
        self._h(host).start_sshd()

    def blackhole(self, host: SshHost | int | str) -> None:
        self._h(host).blackhole()

    def unblackhole(self, host: SshHost | int | str) -> None:
        self._h(host).unblackhole()

    def accepted_connections(self, host: SshHost | int | str) -> int:
        return self._h(host).accepted_connections()

    def heal(self) -> None:
        """Undo every fault: unblackhole all hosts, start any sshd that is down, and give
        back each host's own host key."""
        for h in self.hosts:
            h.unblackhole()
            h.start_sshd()
            h.restore_host_key()

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()


# -- network namespaces ------------------------------------------------------------------

def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _netns_pids(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split()]


def _destroy_netns(ns: str, veth: str | None) -> None:
    for _ in range(3):
        pids = _netns_pids(ns)
        if not pids:
            break
        kill_pids(pids)
        time.sleep(0.05)
    if veth:
        run(["ip", "link", "del", veth], check=False)
    run(["ip", "netns", "del", ns], check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_netns() -> None:
    """Remove namespaces (and their processes and veths) left by a test session that died."""
    out = run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        m = re.match(rf"^({NS_PREFIX}(\d+)h(\d+))\b", line)
        if m and not _pid_alive(int(m.group(2))):
            _destroy_netns(m.group(1), f"{NS_PREFIX}{m.group(2)}v{m.group(3)}")


def _free_subnets(n: int) -> list[int]:
    used = run(["ip", "-o", "-4", "addr"], check=False).stdout
    routes = run(["ip", "-4", "route"], check=False).stdout
    out = []
    for k in range(1, 255):
        if f"{SUBNET}.{k}." not in used and f"{SUBNET}.{k}." not in routes:
            out.append(k)
            if len(out) == n:
                return out
    raise RuntimeError(f"no free {SUBNET}.K.0/24 subnet")


def _create_netns_host(i: int, k: int, base: Path, keys: SshKeys, user: str,
                       ssh_config: Path) -> SshHost:
    tag = f"{NS_PREFIX}{os.getpid()}"
    ns, veth = f"{tag}h{i}", f"{tag}v{i}"
    name = f"chost{i}"
    here, there = f"{SUBNET}.{k}.1", f"{SUBNET}.{k}.2"
    hdir = base / name
    local = hdir / "remote"
    local.mkdir(parents=True, exist_ok=True)
    host = SshHost(alias=name, hostname=name, address=there, port=22, user=user,
                   key=str(keys.key), ssh_config=str(ssh_config), remote_dir=REMOTE,
                   local_dir=local, log=hdir / "sshd.log", netns=ns,
                   other_key=str(keys.other_key), _config=hdir / "sshd_config", _veth=veth)
    host._config.write_text(_sshd_config(keys, there, 22))
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "addr", "add", f"{here}/24", "dev", veth])
        run(["ip", "link", "set", veth, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{there}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # A process that holds the host's UTS and mount namespaces for the whole session;
        # sshd is started (and restarted) inside them with nsenter. Every step execs, so
        # the holder's pid ends up being the `sleep`.
        setup = (f"hostname {name} && mount --bind {local} {REMOTE} && "
                 "exec sleep infinity")
        host._holder = holder = Daemon(
            ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--propagation",
             "private", "sh", "-c", setup], hdir / "holder.log")
        wait_until(lambda: _comm(holder.pid) == "sleep" or not holder.alive(),
                   10, f"namespaces of {name}")
        if not holder.alive():
            raise RuntimeError(f"could not set up {name}: {holder.tail()}")
        host.start_sshd()
    except BaseException:
        host.stop()
        raise
    return host


def start_netns_hosts(base: Path, n: int = 2, keys: SshKeys | None = None,
                      user: str = "root") -> SshHosts:
    """Start ``n`` hosts (``chost1``...) under ``base``; call ``.stop()`` on the result."""
    require(root=True, binaries=NEEDED)
    base.mkdir(parents=True, exist_ok=True)
    keys = keys or make_keys(base / "keys")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation folder
    os.makedirs(REMOTE, exist_ok=True)  # mount point of each host's private folder
    ssh_config = base / "ssh_config"
    group = SshHosts([], str(ssh_config), str(keys.key), user, base, str(keys.other_key))
    try:
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # subnet choice + creation, against other sessions
            cleanup_stale_netns()
            for i, k in enumerate(_free_subnets(n), start=1):
                group.hosts.append(_create_netns_host(i, k, base, keys, user, ssh_config))
        ssh_config.write_text("".join(
            _client_block(h.alias, h.address, h.port, user, keys.key) for h in group.hosts))
        # The hosts must be reachable at their namespace address and nowhere else.
        for h in group.hosts:
            assert h.netns is not None
            listen = run(["ip", "netns", "exec", h.netns, "ss", "-ltnH"]).stdout.split()
            assert f"{h.address}:22" in listen, listen
    except BaseException:
        group.stop()
        raise
    return group


def start_loopback_host(base: Path, keys: SshKeys | None = None,
                        user: str = "root") -> SshHost:
    """A key-only sshd on ``127.0.0.1:<free port>``; its remote folder is ``base/remote``."""
    require(root=True, binaries=(SSHD, "ssh", "ssh-keygen"))
    base.mkdir(parents=True, exist_ok=True)
    keys = keys or make_keys(base / "keys")
    os.makedirs("/run/sshd", exist_ok=True)
    remote = base / "remote"
    remote.mkdir(exist_ok=True)
    last: Exception | None = None
    for _ in range(3):  # the free port may be taken between the probe and sshd's bind
        port = free_port()
        host = SshHost(alias="loopback", hostname=socket.gethostname(), address="127.0.0.1",
                       port=port, user=user, key=str(keys.key),
                       ssh_config=str(base / "ssh_config"), remote_dir=str(remote),
                       local_dir=remote, log=base / "sshd.log", other_key=str(keys.other_key),
                       _config=base / "sshd_config")
        host._config.write_text(_sshd_config(keys, "127.0.0.1", port))
        Path(host.ssh_config).write_text(
            _client_block(host.alias, host.address, port, user, keys.key))
        try:
            host.start_sshd()
            return host
        except RuntimeError as e:
            last = e
            host.stop()
    raise RuntimeError(f"loopback sshd did not start: {last}")

