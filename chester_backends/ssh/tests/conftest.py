"""Real SSH hosts for the ssh backend's tests.

Each host is a network namespace with its own address, hostname (UTS namespace) and a
private ``/remote`` (a mount namespace where ``/remote`` is a bind mount of a per-host
folder the test can read from outside), running a key-only sshd with ``LogLevel VERBOSE``.
The rest of the filesystem is shared, so the host's Python is this checkout's venv.

Helpers per host: ``kill()`` (listener and every session), ``start()``, ``blackhole()`` /
``unblackhole()`` (nft drop of port 22 inside the namespace), ``accepted()`` (connections
accepted so far, from the sshd log).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REMOTE = "/remote"
SSHD = "/usr/sbin/sshd"


def _sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, **kw)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for exe in (SSHD, shutil.which("ip"), shutil.which("rsync"), shutil.which("ssh"),
                shutil.which("nsenter"), shutil.which("unshare")):
        if not exe or not os.path.exists(exe):
            return f"missing binary {exe}"
    return None


class Host:
    def __init__(self, base: Path, index: int, subnet: int, tag: str):
        self.index = index
        self.name = f"{tag}h{index}"  # alias in ssh_config and hostname
        self.ns = f"{tag}n{index}"
        self.veth = f"{tag}v{index}"
        self.addr = f"10.252.{subnet}.2"
        self.gw = f"10.252.{subnet}.1"
        self.base = base
        self.root = base / f"remote-{index}"  # what the host sees as /remote
        self.conf = base / f"sshd_config-{index}"
        self.log = base / f"sshd-{index}.log"
        self.pidfile = base / f"sshd-{index}.pid"
        self.holder: subprocess.Popen | None = None

    # -- life cycle ---------------------------------------------------------------------
    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _sh("ip", "netns", "add", self.ns)
        _sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
            "netns", self.ns)
        _sh("ip", "addr", "add", f"{self.gw}/24", "dev", self.veth)
        _sh("ip", "link", "set", self.veth, "up")
        _sh("ip", "-n", self.ns, "addr", "add", f"{self.addr}/24", "dev", "eth0")
        _sh("ip", "-n", self.ns, "link", "set", "eth0", "up")
        _sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        base_conf = (self.base / "sshd_config").read_text()
        self.conf.write_text(base_conf.replace("@ADDR@", self.addr).replace(
            "@PID@", str(self.pidfile)))
        os.makedirs(REMOTE, exist_ok=True)
        # a process that holds the host's mount + UTS namespaces for the whole session
        script = (f"hostname {self.name} && mount --bind {self.root} {REMOTE} && "
                  "exec sleep 100000")
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--uts", "--mount",
             "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self._holder_pid() is not None:
                break
            time.sleep(0.05)
        self.start()

    def _holder_pid(self) -> int | None:
        """The pid of the `sleep` inside the namespaces (ip netns exec → unshare → sleep)."""
        if self.holder is None:
            return None
        pid = self.holder.pid
        for _ in range(3):
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                return None
            if exe.endswith("sleep"):
                return pid
            kids = _sh("pgrep", "-P", str(pid), check=False).stdout.split()
            if not kids:
                return None
            pid = int(kids[0])
        return None

    def start(self) -> None:
        hp = self._holder_pid()
        assert hp is not None, "namespace holder died"
        _sh("nsenter", "-t", str(hp), "-m", "-u", "-n", SSHD, "-f", str(self.conf),
            "-E", str(self.log))
        for _ in range(100):
            r = _sh("ip", "netns", "exec", self.ns, "ss", "-ltnH", check=False).stdout
            if f"{self.addr}:22 " in r:
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd on {self.name} did not start")

    def sshd_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """Kill the listener and every session process (connections drop)."""
        pid = self.sshd_pid()
        if pid is None:
            return
        kids = [int(k) for k in _sh("pgrep", "-P", str(pid), check=False).stdout.split()]
        for p in [pid, *kids]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.pidfile.unlink()
        except FileNotFoundError:
            pass

    def restart(self) -> None:
        self.kill()
        time.sleep(0.2)
        self.start()

    def blackhole(self) -> None:
        ns = ["ip", "netns", "exec", self.ns, "nft"]
        _sh(*ns, "add", "table", "inet", "chflaky")
        _sh(*ns, "add", "chain", "inet", "chflaky", "input",
            "{ type filter hook input priority 0; }")
        _sh(*ns, "add", "rule", "inet", "chflaky", "input", "tcp", "dport", "22", "drop")

    def unblackhole(self) -> None:
        _sh("ip", "netns", "exec", self.ns, "nft", "delete", "table", "inet", "chflaky",
            check=False)

    def accepted(self) -> int:
        try:
            return self.log.read_text().count("Accepted publickey")
        except FileNotFoundError:
            return 0

    def destroy(self) -> None:
        self.unblackhole()
        self.kill()
        # stop what the runs left behind on this host (their queue runners / workers): they
        # live in this host's mount namespace; find them by it, by pid
        hp = self._holder_pid()
        if hp is not None:
            try:
                mnt = os.readlink(f"/proc/{hp}/ns/mnt")
            except OSError:
                mnt = None
            if mnt:
                for entry in os.listdir("/proc"):
                    if not entry.isdigit() or int(entry) == hp:
                        continue
                    try:
                        if os.readlink(f"/proc/{entry}/ns/mnt") == mnt:
                            os.kill(int(entry), signal.SIGKILL)
                    except OSError:
                        pass
        if self.holder is not None:
            for p in (hp, self.holder.pid):
                if p:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.holder.wait(5)
        _sh("ip", "link", "del", self.veth, check=False)
        _sh("ip", "netns", "del", self.ns, check=False)


class Hosts:
    def __init__(self, base: Path, hosts: list[Host]):
        self.base = base
        self.hosts = hosts
        self.ssh_config = str(base / "ssh_config")
        self.key = str(base / "id_ed25519")

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]


def _free_subnets(n: int) -> list[int]:
    used = _sh("ip", "-o", "addr", check=False).stdout
    out = []
    for k in range(10, 250):
        if f"10.252.{k}." not in used:
            out.append(k)
        if len(out) == n:
            return out
    raise RuntimeError("no free 10.252.x.0/24 subnet")


def create_hosts(base: Path, n: int = 2) -> Hosts:
    """Start ``n`` hosts with keys and configs under ``base``; call ``destroy_hosts`` after."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o700)
    os.makedirs("/run/sshd", exist_ok=True)
    for key in ("host_ed25519", "id_ed25519", "other_ed25519"):
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / key))
    shutil.copy(base / "id_ed25519.pub", base / "authorized_keys")
    (base / "sshd_config").write_text(f"""ListenAddress @ADDR@
Port 22
HostKey {base}/host_ed25519
PidFile @PID@
AuthorizedKeysFile {base}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    tag = f"cs{os.getpid() % 10000}"
    subnets = _free_subnets(n)
    hosts = Hosts(base, [Host(base, i + 1, subnets[i], tag) for i in range(n)])
    cfg = []
    try:
        for h in hosts.hosts:
            h.create()
            cfg.append(f"""Host {h.name}
  HostName {h.addr}
  Port 22
  User root
  IdentityFile {base}/id_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
""")
        (base / "ssh_config").write_text("".join(cfg))
    except BaseException:
        destroy_hosts(hosts)
        raise
    return hosts


def destroy_hosts(hosts: Hosts) -> None:
    for h in hosts.hosts:
        try:
            h.destroy()
        except Exception:
            pass


@pytest.fixture(scope="session")
def ssh_hosts(tmp_path_factory):
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    hosts = create_hosts(tmp_path_factory.mktemp("sshd"), 2)
    try:
        yield hosts
    finally:
        destroy_hosts(hosts)


@pytest.fixture
def python_exe() -> str:
    return sys.executable
