"""A GPU lab for the autobot tests: a login host and GPU nodes that share a filesystem.

The login host is the loopback sshd (this machine's namespaces); the nodes are the network
namespace hosts of :mod:`chester_testinfra.sshd` (their own hostname and address, this machine's
filesystem outside ``/remote``), reachable by ssh from the login host with the hosts'
``ssh_config``. Each node's ``nvidia-smi`` is a stand-in (:func:`write_nvidia_smi`) that
answers ``--query-gpu`` and ``--query-compute-apps`` from ``<state_dir>/<hostname>.json``,
which the test writes: GPU count, memory used, and the compute processes on each GPU
(another user's process holding a GPU, a GPU freed mid-sweep)::

    {"gpus": [{"used": 0, "total": 16384, "procs": [4242]}, ...]}
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sshd import SshHost, SshHosts

NVIDIA_SMI = '''\
#!{python}
"""Stand-in nvidia-smi: answers from {state}/<hostname>.json (written by the test)."""
import json, socket, sys
state = json.load(open("{state}/" + socket.gethostname() + ".json"))
args = " ".join(sys.argv[1:])
with open("{state}/calls.log", "a") as f:
    f.write(socket.gethostname() + " " + args + "\\n")
gpus = state.get("gpus", [])
if "--query-gpu" in args:
    for i, g in enumerate(gpus):
        print("%d, GPU-%s-%d, %d, %d" % (i, socket.gethostname(), i, g.get("used", 0),
                                          g.get("total", 16384)))
elif "--query-compute-apps" in args:
    for i, g in enumerate(gpus):
        for pid in g.get("procs", []):
            print("GPU-%s-%d, %d" % (socket.gethostname(), i, pid))
else:
    sys.exit("stand-in nvidia-smi: unsupported arguments " + args)
'''


def write_nvidia_smi(folder: Path, state_dir: Path) -> Path:
    """Write the stand-in (run with this test's Python) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = folder / "nvidia-smi"
    path.write_text(NVIDIA_SMI.format(python=sys.executable, state=state_dir))
    path.chmod(0o755)
    return path


@dataclass
class GpuLab:
    """The login host, the nodes, and the nodes' GPU state."""

    login: SshHost
    hosts: SshHosts
    nvidia_smi: Path
    state_dir: Path
    shared: Path  # a folder every host sees at the same path (not under /remote)

    @property
    def nodes(self) -> list[str]:
        return [h.alias for h in self.hosts]

    def set_gpus(self, node: str, gpus: list[dict]) -> None:
        """Write a node's GPU state (atomically: the stand-in may be reading it)."""
        path = self.state_dir / f"{self.hosts[node].hostname}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpus": gpus}))
        os.replace(tmp, path)

    def free_gpus(self, node: str, n: int) -> None:
        self.set_gpus(node, [{"used": 0} for _ in range(n)])

    def node_ssh_options(self) -> list[str]:
        return ["-F", self.hosts.ssh_config]

    def smi_calls(self) -> list[str]:
        try:
            return (self.state_dir / "calls.log").read_text().splitlines()
        except FileNotFoundError:
            return []


# -- a project whose backend is the lab (the autobot tests and bench) ---------------------


def lab_backend(lab, remote_dir: Path, **opts: Any) -> dict[str, Any]:
    return {"type": "autobot", "host": lab.login.alias, "ssh_config": lab.login.ssh_config,
            "remote_dir": str(remote_dir), "nodes": lab.nodes,
            "nvidia_smi": str(lab.nvidia_smi), "node_ssh_options": lab.node_ssh_options(),
            "connect_timeout": 5, "node_timeout": 3, **opts}


def make_project(tmp_path: Path, lab, name: str = "lab", **opts: Any):
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    (project / "train.py").write_text("print('code')\n")
    remote = tmp_path / "shared" / "proj"
    import yaml

    cfg = {"backends": {name: lab_backend(lab, remote, **opts)}}
    (project / "chester.yaml").write_text(yaml.safe_dump(cfg))
    from chester.config import load_config

    return project, load_config(project / "chester.yaml"), remote


def gpu_intervals(remote: Path) -> list[tuple[str, str, float, float]]:
    """(host, gpu, start, end) of every run under ``remote``, from the runs' own records."""
    out = []
    for st in remote.rglob(".chester/status.json"):
        rec = json.loads(st.read_text())
        if rec.get("started_at") is None:
            continue
        end = rec.get("ended_at") or time.time()
        for g in (rec.get("cuda_visible_devices") or "").split(","):
            out.append((rec["host"], g, rec["started_at"], end))
    return out


def overlaps(intervals) -> list[tuple]:
    """Pairs of runs that held one GPU of one host at the same moment."""
    bad = []
    by: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for host, g, a, b in intervals:
        by.setdefault((host, g), []).append((a, b))
    for key, ivs in by.items():
        ivs.sort()
        for (a1, b1), (a2, b2) in zip(ivs, ivs[1:], strict=False):
            if a2 < b1:
                bad.append((key, (a1, b1), (a2, b2)))
    return bad
