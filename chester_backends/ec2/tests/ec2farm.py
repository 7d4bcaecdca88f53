"""Fixtures of the ec2 backend tests: a moto server on loopback, and a "farm" that plays EC2.

moto stores user-data but never runs it. The farm watches moto for instances chester
launched, reads each one's user-data back (``describe_instance_attribute``) and runs it in a
sandbox folder playing the instance's disk, with a small IMDSv2 server on 127.0.0.1 standing
in for 169.254.169.254 and the same S3 endpoint. When the instance powers off (the script
runs ``$CHESTER_EC2_POWEROFF``, which creates ``powered-off`` in its folder), the farm
terminates the instance in moto; a script that just ends (an agent killed) leaves the
instance running, as on EC2; when moto says an instance is terminated (cancel), the farm
SIGTERMs every process of that "instance" (its session), then SIGKILLs what is left. Nothing
ever connects to the addresses moto hands out.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REGION = "us-east-1"
INSTANCE_CREDS = {"AWS_ACCESS_KEY_ID": "instance-role-key", "AWS_SECRET_ACCESS_KEY": "instance-role"}


@pytest.fixture(scope="session")
def moto_endpoint(aws_endpoint) -> str:
    """The URL of the session's moto server (chester_testinfra's ``aws_endpoint``)."""
    return aws_endpoint.url


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """Environment pointing boto3 at moto, a fresh state, and a bucket; and a fresh plugin
    manager for the process (a new ec2 backend instance: no client, record or template an
    earlier test's moto state left in it), which every launch, status poll and ``chester``
    command of the test uses."""
    from chester.plugin.manager import build_plugin_manager, set_plugin_manager

    urllib.request.urlopen(urllib.request.Request(moto_endpoint + "/moto-api/reset",
                                                  method="POST"), timeout=60).read()  # slow on a loaded machine
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    set_plugin_manager(build_plugin_manager())
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="chester-test")
    yield moto_endpoint
    set_plugin_manager(None)


@pytest.fixture
def ec2_backend(aws):
    """The test's ec2 backend instance (the process's plugin manager's, see ``aws``): its
    clients are the ones the launches use, so AWS's answers can be shaped on them."""
    from chester.plugin.manager import get_plugin_manager

    return get_plugin_manager().get_backend("ec2").plugin


# -- IMDSv2 stand-in -----------------------------------------------------------------------------
class FakeImds:
    def __init__(self, instance_id: str):
        self.instance_id = instance_id
        self.action: str | None = None
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        imds = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, code, body=b""):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                imds.requests.append(("PUT", self.path))
                if self.path != "/latest/api/token" or \
                        not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(400)
                tok = uuid.uuid4().hex
                imds.tokens.add(tok)
                self._send(200, tok.encode())

            def do_GET(self):
                imds.requests.append(("GET", self.path))
                if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
                    return self._send(401)  # IMDSv2 only: no token, no answer
                p = self.path
                if p == "/latest/meta-data/instance-id":
                    return self._send(200, imds.instance_id.encode())
                if p == "/latest/meta-data/placement/region":
                    return self._send(200, REGION.encode())
                if p == "/latest/meta-data/spot/instance-action" and imds.action:
                    return self._send(200, imds.action.encode())
                self._send(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def agent_in_process(tmp_path, monkeypatch, imds: FakeImds, spec: dict):
    """The agent as an instance starts it, in this process: a fresh copy of agent.py reading
    the environment an instance's user-data sets (``spec`` in the test bucket, ``tmp_path``
    as its disk, ``imds`` as its metadata service). Returns the ``Agent``, not started."""
    import importlib.util

    import boto3
    from chester_backend_ec2 import agent as installed

    boto3.client("s3", region_name=REGION).put_object(
        Bucket="chester-test", Key="spec.json", Body=json.dumps(spec).encode())
    for k, v in {"CHESTER_EC2_BUCKET": "chester-test", "CHESTER_EC2_SPEC": "spec.json",
                 "CHESTER_EC2_REGION": REGION, "CHESTER_EC2_IMDS": imds.url,
                 "CHESTER_EC2_ROOT": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    found = importlib.util.spec_from_file_location("chester_ec2_agent_under_test",
                                                   installed.__file__)
    assert found is not None and found.loader is not None
    mod = importlib.util.module_from_spec(found)
    found.loader.exec_module(mod)
    return mod.Agent()


def _session_pids(sid: int) -> list[int]:
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            data = open(f"/proc/{e}/stat", "rb").read()
        except OSError:
            continue
        f = data[data.rfind(b")") + 2:].split()
        if int(f[3]) == sid and f[0] not in (b"Z", b"X"):
            out.append(int(e))
    return out


def kill_session(sid: int, sig: int) -> None:
    for pid in _session_pids(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Instance:
    def __init__(self, iid: str, root: Path, imds: FakeImds, proc: subprocess.Popen,
                 user_data: str):
        self.id = iid
        self.root = root
        self.imds = imds
        self.proc = proc
        self.user_data = user_data
        self.killed_at: float | None = None
        self.done = False
        self.stopped = False  # stopped (not terminated): may be started again
        self.boots = 1


class Farm:
    """Plays EC2: runs the user-data of every instance chester launches in moto."""

    def __init__(self, base: Path, endpoint: str, *, paused: bool = False):
        #: give instances AWS_ENDPOINT_URL (False: they must use the endpoint in user-data)
        self.endpoint_env = True
        import boto3

        self.base = base
        self.endpoint = endpoint
        self.paused = paused
        self.ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint,
                                aws_access_key_id="farm", aws_secret_access_key="farm")
        self.instances: dict[str, Instance] = {}
        self.skip: set[str] = set()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop.is_set():
            try:
                self.tick()
            except BaseException as exc:  # surfaced at teardown
                self.errors.append(exc)
            self.stop.wait(0.2)

    def tick(self):
        res = self.ec2.describe_instances(
            Filters=[{"Name": "tag-key", "Values": ["chester:sweep"]}])
        for r in res["Reservations"]:
            for inst in r["Instances"]:
                iid, state = inst["InstanceId"], inst["State"]["Name"]
                known = self.instances.get(iid)
                if known is None and state in ("pending", "running") and not self.paused \
                        and iid not in self.skip:
                    self.boot(iid)
                elif known is not None and state in ("shutting-down", "terminated", "stopped",
                                                     "stopping") and not known.done:
                    known.stopped = state in ("stopped", "stopping")
                    self.power_cut(known)
                elif known is not None and state == "running" and known.done and known.stopped:
                    self.restart(known)
        for inst in list(self.instances.values()):
            if inst.done:
                continue
            if inst.killed_at is None and (inst.root / "powered-off").exists():
                # the instance powered itself off: with shutdown behaviour terminate, it goes
                inst.done = True
                kill_session(inst.proc.pid, signal.SIGKILL)
                self.ec2.terminate_instances(InstanceIds=[inst.id])
            elif inst.killed_at is not None and (inst.proc.poll() is not None or
                                                 time.time() - inst.killed_at > 20):
                kill_session(inst.proc.pid, signal.SIGKILL)
                inst.done = True

    def boot(self, iid: str):
        ud = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        text = base64.b64decode(ud["UserData"]["Value"]).decode()
        root = self.base / iid
        root.mkdir(parents=True)
        (root / "user-data.sh").write_text(text)
        imds = FakeImds(iid)
        proc = subprocess.Popen(["bash", str(root / "user-data.sh")], cwd=root,
                                env=self._env(root, imds),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.instances[iid] = Instance(iid, root, imds, proc, text)

    def _env(self, root: Path, imds: FakeImds) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        if self.endpoint_env:
            env["AWS_ENDPOINT_URL"] = self.endpoint
        env.update(INSTANCE_CREDS, AWS_DEFAULT_REGION=REGION,
                   CHESTER_EC2_IMDS=imds.url, CHESTER_EC2_ROOT=str(root),
                   CHESTER_EC2_POWEROFF=f"touch {root}/powered-off",
                   PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}")
        return env

    def restart(self, inst: Instance):
        """A stopped instance starts again: cloud-init runs the per-boot scripts only."""
        scripts = sorted((inst.root / "var/lib/cloud/scripts/per-boot").glob("*"))
        inst.imds.action = None
        inst.boots += 1
        inst.done = inst.stopped = False
        inst.killed_at = None
        (inst.root / "powered-off").unlink(missing_ok=True)
        inst.proc = subprocess.Popen(["bash", str(scripts[0])], cwd=inst.root,
                                     env=self._env(inst.root, inst.imds),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def power_cut(self, inst: Instance):
        """The instance is going away: SIGTERM everything on it (a shutdown), KILL later."""
        if inst.killed_at is None:
            inst.killed_at = time.time()
            kill_session(inst.proc.pid, signal.SIGTERM)

    def crash(self, iid: str):
        """The machine dies at once (no shutdown): SIGKILL everything, then terminate."""
        inst = self.instances[iid]
        inst.done = True
        kill_session(inst.proc.pid, signal.SIGKILL)
        inst.proc.wait(10)
        self.ec2.terminate_instances(InstanceIds=[iid])

    def kill_agent(self, iid: str):
        """SIGKILL the agent alone (user-data exec'd it): its runs and the machine go on."""
        os.kill(self.instances[iid].proc.pid, signal.SIGKILL)

    def interrupt(self, iid: str):
        """Post a spot interruption notice on the instance's metadata."""
        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
        self.instances[iid].imds.action = json.dumps({"action": "terminate", "time": t})

    def wait_booted(self, n: int = 1, timeout: float = 30) -> list[Instance]:
        end = time.time() + timeout
        while len(self.instances) < n:
            assert time.time() < end, f"only {len(self.instances)} instances booted"
            time.sleep(0.1)
        return list(self.instances.values())

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for inst in self.instances.values():
            kill_session(inst.proc.pid, signal.SIGKILL)
            try:
                inst.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            inst.imds.close()
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def farm(aws, tmp_path):
    f = Farm(tmp_path / "instances", aws)
    yield f
    f.close()


def ec2_config(**over):
    """A chester.yaml ``backends`` entry for the tests."""
    opts = {"type": "ec2", "bucket": "chester-test", "image_id": "ami-0123456789abcdef0",
            "region": REGION, "instance_type": "t3.micro", "python": sys.executable,
            "sync_interval_s": 0.5, "watch_interval_s": 0.2, "security_group_ids": [],
            "tags": {"team": "ml"}}
    opts.update(over)
    return {"backends": {"ec2": opts}}


# -- the test files' own project module, launches and waits ---------------------------------
def project_env(tmp_path, module: str, source: str, **over):
    """A conformance project for the ec2 backend whose ``<module>.py`` holds ``source``."""
    from chester.testing import ConformanceEnv

    env = ConformanceEnv.create(tmp_path, backend="ec2", config=ec2_config(**over))
    (env.project / f"{module}.py").write_text(source)
    return env


def importable(tmp_path, monkeypatch, module: str):
    """Make the project's ``module`` importable for one test (a generator for a fixture)."""
    monkeypatch.syspath_prepend(str(tmp_path / "project"))
    sys.modules.pop(module, None)
    yield
    sys.modules.pop(module, None)


def launch_fn(env, module: str, fn: str, variants, prefix: str, **kw):
    """Launch the project module's ``fn`` over ``variants`` on ec2, retries without sleeping."""
    import importlib

    from chester.dispatch import Dispatcher
    from chester.launcher import launch

    disp = kw.pop("dispatcher", None) or Dispatcher(sleep=lambda s: None)
    importlib.invalidate_caches()
    mod = importlib.import_module(module)
    return launch(getattr(mod, fn), variants, backend="ec2", exp_prefix=prefix,
                  config=env.config, dispatcher=disp, **kw)


def until(fn, timeout=45.0, what="condition"):
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def s3_keys(prefix=""):
    """Every key of the test bucket under ``prefix``."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="chester-test",
                                                             Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", ())]
    return out


def status_record(run) -> dict:
    """The run's status record in the test bucket, as the agent last published it (``{}``
    before the first)."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    key = f"chester/sweeps/{run.handle.get('sweep')}/ctl/status/{run.token}.json"
    try:
        return json.loads(s3.get_object(Bucket="chester-test", Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return {}
