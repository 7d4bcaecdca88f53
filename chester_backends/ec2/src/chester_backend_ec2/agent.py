"""The instance-side agent of chester's EC2 backend (stdlib, boto3 and chester's runtime;
Python >= 3.8).

The user-data script downloads this file from S3 and runs it as ``python3 agent.py``.
First it fetches chester's runtime (which travels in the code snapshot) and puts it first on
``sys.path``: the agent reads the runs' records by the one rule from records to states
(:mod:`chester.target.states`) and publishes what that rule says. Then it

1. reads the instance spec (``$CHESTER_EC2_SPEC`` in ``$CHESTER_EC2_BUCKET``) through the
   instance role: the code manifest, the runs, the setup script;
2. materialises the project from the content-addressed code snapshot and each run folder;
3. runs the setup script once (package manager, ``prepare_commands``), then
   ``python -m chester.worker RUN_DIR`` for each run (``gpus_per_run`` each when packed);
4. every ``watch_interval`` checks IMDSv2 ``spot/instance-action`` and the sweep's cancel
   markers; every ``sync_interval`` (and whenever a status changes) uploads changed files of
   the run folders and the status records;
5. on a spot interruption notice records ``preempted`` and syncs everything at once; on
   SIGTERM (the instance is going away) stops the runs and syncs;
6. when every run has ended, syncs a last time and powers the instance off.

Exactly once: before starting a run the agent claims its next attempt n with a conditional
write (``If-None-Match: *``) of ``ctl/claims/<token>/<n>``, which only one writer can create.
The instance knows its number in its group (``$CHESTER_EC2_ATTEMPT``, the ``chester:attempt``
tag it was launched with; 1 when unset): a run that an instance of another group ever claimed,
or that another instance of this group numbered as this one or later claimed (a twin of the
same launch, or the instance that replaced this one), is left to that one. A run's status
record is never a reason to start another attempt; a final one (an earlier instance's) is a
reason not to, but for the launcher's ``lost`` verdict with ``instance_lost`` (the group's
earlier instance went while the run ran: this one was started to run it again). While the
instance goes down the agent leaves a record alone that is the launcher's verdict on it or
a later attempt's, and writes its last one only over the record it read (If-Match). On a
packed instance (``slots`` > 1) a freed slot takes the next run of the sweep that no instance has
claimed yet (an instance not booted yet, or refused at launch), read from the sweep's
instance specs; the runs taken are listed in ``ctl/stolen/<group>.json`` so the group's next
instance (a requeue) resumes them too.

Bounds (none of them needs the launcher): a run past its ``time_limit_s`` is stopped and
recorded ``timeout``; at ``max_lifetime_s`` after the agent started every run still going is
stopped (``timeout``), synced, and the instance powers off (user-data also scheduled a
shutdown at that time, for when this agent is gone). A watch thread, never blocked by
uploads, checks the spot notice and writes ``ctl/heartbeat/<group>.json`` every
``heartbeat_interval_s``; the launcher terminates an instance whose heartbeat stopped.

On a spot interruption notice each running run is told the way SLURM's time-limit warning
tells it: ``SIGUSR1`` goes to chester's worker, which turns it into ``chester.preempted()``;
the marker ``<run>/.chester/preempt`` (also ``$CHESTER_PREEMPT_FILE``) appears holding the
notice, and with ``preempt_signal`` set that signal also goes to the worker's process group.
The watch thread only flags, signals and publishes the records; the main loop then syncs
every run folder at once and every ``watch_interval_s`` after. A run that saved a checkpoint
and called ``chester.requeue()`` ends (``CHESTER_REQUEUE_BY`` tells the worker the agent
queues it again): its record reads ``preempted``, and the next instance of the group runs
attempt 2 (``CHESTER_ATTEMPT=2``, ``CHESTER_RESUMED=1``).

Test hooks, all environment variables: ``CHESTER_EC2_IMDS`` (metadata endpoint, default
``http://169.254.169.254``), ``CHESTER_EC2_ROOT`` (a folder playing the instance's disk, default
``/``), ``CHESTER_EC2_POWEROFF`` (argv run at the end, default ``shutdown -h now``; empty: just
exit) and boto3's own ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: nothing here is evaluated on the instance's Python
    from collections.abc import Iterable
    from types import FrameType

    Json = dict[str, Any]

IMDS = os.environ.get("CHESTER_EC2_IMDS", "http://169.254.169.254").rstrip("/")
ROOT = os.environ.get("CHESTER_EC2_ROOT", "/")
STATUS = ".chester/status.json"
PAYLOAD = ".chester/payload.pkl"
DONE = ".done"


def log(msg: str) -> None:
    sys.stderr.write("chester-agent %s %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def on_disk(path: str) -> str:
    """An absolute instance path, under ROOT."""
    return os.path.join(ROOT, path.lstrip("/"))


# -- IMDSv2 ---------------------------------------------------------------------------------
class Imds:
    """The instance metadata service (IMDSv2: a session token first)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None
        self.token_at = 0.0

    def _token(self) -> str:
        if self.token is None or time.time() - self.token_at > 300:
            req = urllib.request.Request(self.base + "/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "600"})
            with urllib.request.urlopen(req, timeout=2) as r:
                self.token = r.read().decode()
            self.token_at = time.time()
        return self.token

    def get(self, path: str) -> str | None:
        """The text at ``/latest/meta-data/<path>``, or None when absent (404)."""
        for _ in range(2):
            req = urllib.request.Request(self.base + "/latest/meta-data/" + path,
                                         headers={"X-aws-ec2-metadata-token": self._token()})
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    return r.read().decode()
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                if e.code == 401:
                    self.token = None
                    continue
                raise
        return None


# -- S3 ---------------------------------------------------------------------------------------
class Store:
    """The sweep's bucket, through the instance role."""

    def __init__(self, bucket: str, region: str | None, endpoint: str | None) -> None:
        import boto3

        kw: dict[str, str] = {}
        if region:
            kw["region_name"] = region
        if endpoint:
            kw["endpoint_url"] = endpoint
        self.s3 = boto3.client("s3", **kw)
        self.bucket = bucket

    def get_json(self, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet: True if this call created it."""
        from botocore.exceptions import ClientError

        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if err.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or \
                    status in (409, 412):
                return False
            raise

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def read(self, key: str) -> tuple[Any, str | None]:
        """``key``'s JSON (None when absent, unreadable or not JSON) and its ETag (None when
        it could not be read)."""
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=key)
            etag = got.get("ETag")
            body = got["Body"].read()
        except Exception:
            return None, None
        try:
            return json.loads(body), etag
        except ValueError:
            return None, etag

    def replace(self, key: str, data: bytes, etag: str | None) -> bool:
        """Write ``key`` only if it is still the object read (ETag ``etag``; absent when
        None): True if this call wrote it, False if it changed or went since."""
        from botocore.exceptions import ClientError, ParamValidationError

        cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, **cond)
            return True
        except ParamValidationError:  # a boto3 older than If-Match on PutObject (late 2024)
            log("this boto3 cannot write on a condition; %s written without one" % key)
            self.put(key, data)
            return True
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if err.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                   "NoSuchKey") or status in (404, 409, 412):
                return False
            raise

    def download(self, key: str, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".chester-part"
        self.s3.download_file(self.bucket, key, tmp)
        os.replace(tmp, path)

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", ()))
        return out


#: files that only ever grow (logs, metrics): stored in S3 as segments, each sync sends only
#: the bytes added since the last one (S3 has no append)
APPENDABLE = (".log", ".txt", ".csv", ".jsonl", ".out", ".err")
#: a growing file ``<rel>`` is stored as ``<rel>.chester-seg/<gen>/<offset>`` objects: the
#: bytes from ``offset`` on, written in one sync; the file is the highest generation's
#: segments joined from offset 0 while each starts where the one before ended. A file that
#: was rewritten or truncated starts a new generation at offset 0 (instances may not delete).
SEG = ".chester-seg/"
#: bytes at the end of what went up that must be unchanged for the file to count as grown
TAIL = 65536


def seg_key(key: str, gen: int, offset: int) -> str:
    return "%s%s%04d/%016d" % (key, SEG, gen, offset)


def parse_seg(rel: str) -> tuple[str, int, int] | None:
    """``(base rel, gen, offset)`` of a segment's rel path, else None."""
    base, sep, rest = rel.partition(SEG)
    if not sep or not base:
        return None
    gen, _, off = rest.partition("/")
    try:
        return base, int(gen), int(off)
    except ValueError:
        return None


def join_segments(rels: Iterable[str]) -> dict[str, tuple[int, list[tuple[int, str]]]]:
    """``{base: (gen, [(offset, rel), ...])}``: each file's newest generation, its segments
    by offset (a reader stops at a gap: each segment starts where the one before ended)."""
    found: dict[str, dict[int, list[tuple[int, str]]]] = {}
    for rel in rels:
        p = parse_seg(rel)
        if p:
            found.setdefault(p[0], {}).setdefault(p[1], []).append((p[2], rel))
    out = {}
    for base, gens in found.items():
        gen = max(gens)
        out[base] = (gen, sorted(gens[gen]))
    return out


def copy_body(body: Any, out: IO[bytes]) -> int:
    """Copy a streamed S3 object body into the open file ``out``; the bytes copied."""
    n = 0
    for block in iter(lambda: body.read(1 << 20), b""):
        out.write(block)
        n += len(block)
    return n


def tail_sha256(f: IO[bytes], n: int) -> str | None:
    f.seek(max(0, n - TAIL))
    data = f.read(n - max(0, n - TAIL))
    return hashlib.sha256(data).hexdigest() if len(data) == n - max(0, n - TAIL) else None


class Limited:
    """The first ``n`` bytes of a file, for an upload of exactly what was there."""

    def __init__(self, f: IO[bytes], n: int) -> None:
        self.f = f
        self.left = n

    def read(self, size: int | None = -1) -> bytes:
        if self.left <= 0:
            return b""
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.f.read(size)
        self.left -= len(data)
        return data


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- runs ---------------------------------------------------------------------------------------
class Run:
    """One run on this instance: its spec, its worker process and what went up of it."""

    def __init__(self, spec: Json, slot: int | None, attempt: int = 1) -> None:
        self.spec = spec
        self.attempt = attempt
        self.token: str = spec["token"]
        self.dir = on_disk(spec["remote_dir"])
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: str | None = None  # agent's view: None, running, ended
        self.cancelled = False
        self.preempted = False
        self.synced: dict[str, tuple[int, int]] = {}  # rel path -> (size, mtime_ns)
        #: rel of a growing file -> (generation, bytes in S3, their tail's sha256)
        self.sent: dict[str, tuple[int, int, str | None]] = {}
        self.last_record: bytes | None = None
        self.frozen = False  # its final record is in S3 and must not change
        self.started: float | None = None  # time.time() when the worker started
        self.limit: float | None = spec.get("time_limit_s")  # seconds, or None
        self.timed_out: str | None = None  # the reason, once a time bound stopped it
        # who runs it (in its records)
        self.group: str | None = None
        self.instance: str | None = None
        self.launch: int | None = None
        self.claimed = False  # this instance holds the claim of its attempt

    def preempt_file(self) -> str:
        return os.path.join(self.dir, ".chester", "preempt")

    def exited(self) -> bool:
        """True once the worker this agent started has exited."""
        return self.proc is not None and self.proc.poll() is not None

    def record(self) -> Json:
        """The status record to publish: the worker's, read by the one rule
        (:mod:`chester.target.states`: its end, or why it has none once its process
        ended), plus what the agent knows (a cancel, a time bound, a spot notice)."""
        from chester.target import rundir, states

        try:
            with open(os.path.join(self.dir, STATUS), encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError):
            raw = None
        worker = states.current({"token": self.token, "attempt": self.attempt}, raw)
        rec: Json = dict(worker) if worker is not None else \
            {"token": self.token, "state": "queued", "attempt": self.attempt}
        done = os.path.exists(os.path.join(self.dir, DONE))
        rec["done"] = done
        if states.ended(rec):
            v = states.from_end(rec, done=done, cancel=self.cancelled)
            if not v.get("stopped"):  # "terminated": the launcher knows whether spot did it
                rec.update(state=v["state"], reason=v["reason"])
        elif self.exited():
            assert self.proc is not None
            rc = self.proc.returncode
            if rc in (137, 143):  # bash's word for a signal (128 + its number)
                rc = 128 - rc
            found: Json = {"returncode": rc, "tail": tail(os.path.join(self.dir, "stderr.log")),
                           "free_bytes": rundir.free_bytes(self.dir), "run_dir": self.dir}
            if self.cancelled:
                v = states.cancelled(started=worker is not None, exit_code=states.exit_code(rc))
            elif worker is None:
                v = states.not_started(**found) or states.died(**found)
            else:
                v = states.died(**found)
            # killed by a signal: the instance's shutdown, a spot reclaim (the launcher knows)
            rec.update(state=states.TERMINATED if v.get("signal") and not self.cancelled
                       else v["state"], reason=v["reason"], exit_code=v["exit_code"],
                       ended_at=time.time())
        elif self.cancelled and self.proc is None:  # cancelled before this agent started it
            rec.update(states.cancelled(started=worker is not None))
        if self.cancelled and rec.get("state") != states.SUCCEEDED:
            rec["cancel_requested"] = True
        if self.timed_out and rec.get("state") != states.SUCCEEDED and \
                (self.proc is None or self.exited()):
            rec.update(state=states.TIMEOUT, reason=self.timed_out,
                       ended_at=rec.get("ended_at") or time.time())
        rec["group"], rec["instance"], rec["launch"] = self.group, self.instance, self.launch
        if self.preempted or rec.get("requeue"):
            rec["preempted"] = True  # chester.requeue(): the group's next instance resumes it
        if rec.get("state") in (states.FAILED, states.TERMINATED, states.TIMEOUT, states.OOM):
            rec["stderr_tail"] = tail(os.path.join(self.dir, "stderr.log"))
        return rec


def tail(path: str, lines: int = 20, max_bytes: int = 8192) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", "replace").rstrip("\n")
    except OSError:
        return None
    return "\n".join(text.splitlines()[-lines:]) or None


class Agent:
    """The agent of one instance: claims its runs, runs them, publishes their records."""

    def __init__(self) -> None:
        self.bucket = os.environ["CHESTER_EC2_BUCKET"]
        self.store = Store(self.bucket, os.environ.get("CHESTER_EC2_REGION") or None,
                           os.environ.get("CHESTER_EC2_S3_ENDPOINT") or None)
        self.imds = Imds(IMDS)
        self.spec: Json = self.store.get_json(os.environ["CHESTER_EC2_SPEC"])
        self.sweep = self.spec["sweep_prefix"].rstrip("/") + "/"
        self.boot = self.count_boot()
        self.runs = [Run(r, i, self.boot) for i, r in enumerate(self.spec["runs"])]
        self.slots = max(int(self.spec.get("slots") or 1), len(self.runs))
        self.group: str = self.spec["group"]
        #: this instance's number in its group (its chester:attempt tag)
        self.launch = int(os.environ.get("CHESTER_EC2_ATTEMPT") or 1)
        self.nonce = os.urandom(8).hex()  # this agent process, in its claims
        #: another instance of this group, numbered as this one or later, claimed a run of
        #: it: this one is a twin of its launch, or was replaced; it leaves every run alone
        self.superseded = False
        self.beating = False  # the heartbeat starts once this instance holds its runs
        self.instance_id: str | None
        try:
            self.instance_id = self.imds.get("instance-id")
        except Exception:
            self.instance_id = None
        self.stolen: list[Json] = []  # specs of the runs taken from other groups (and earlier instances)
        self.steal_done = self.slots < 2  # no unclaimed run of the sweep is left
        self.cancelled_tokens: set[str] = set()
        self.specs: dict[str, Json] = {}  # the sweep's instance specs (they never change)
        self.code_dir: str | None = None
        self.script: str | None = None
        for run in self.runs:
            self.own(run)
        self.stop = threading.Event()
        self.bytes_sent = 0  # of growing files
        self.wake = threading.Event()  # the main loop's sleep, cut short by a notice
        self.sync_now = False  # set with wake: sync every run folder at once
        self.preempted = False
        self.lock = threading.Lock()
        self.born = float(os.environ.get("CHESTER_EC2_STARTED") or time.time())
        life = float(self.spec.get("max_lifetime_s") or 0)
        # stop the runs a little before user-data's shutdown, so their folders get synced
        self.lifetime = max(life * 0.5, life - min(120.0, life * 0.05)) if life else 0.0
        self.lifetime_over = False

    @staticmethod
    def count_boot() -> int:
        """1 on the first start; n after n-1 restarts (a stopped spot instance resumed)."""
        path = on_disk("/var/lib/chester/boots")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with open(path) as f:
                n = int(f.read().strip() or 0) + 1
        except (OSError, ValueError):
            n = 1
        with open(path, "w") as f:
            f.write(str(n))
        return n

    def earlier(self, run: Run) -> Json | None:
        """The run's record in S3 from an earlier instance or boot, or None."""
        try:
            return self.store.get_json(self.status_key(run))
        except Exception:
            return None

    # -- paths in S3
    def run_key(self, run: Run, rel: str) -> str:
        return "%sruns/%s/%s" % (self.sweep, run.token, rel)

    def status_key(self, run: Run) -> str:
        return "%sctl/status/%s.json" % (self.sweep, run.token)

    def heartbeat_key(self) -> str:
        return "%sctl/heartbeat/%s.json" % (self.sweep, self.spec["group"])

    def cancel_prefix(self) -> str:
        return "%sctl/cancel/" % self.sweep

    def claims_prefix(self, token: str = "") -> str:
        return "%sctl/claims/%s" % (self.sweep, token + "/" if token else "")

    def stolen_key(self) -> str:
        return "%sctl/stolen/%s.json" % (self.sweep, self.group)

    # -- exactly once: claims
    def own(self, run: Run) -> None:
        run.group, run.instance, run.launch = self.group, self.instance_id, self.launch

    def claim(self, run: Run) -> bool:
        """Claim the run's next attempt for this instance: True when it is this instance's to
        run (``run.attempt`` is set), False when it is left to another instance."""
        if self.superseded:
            return False
        held: dict[int, Json] = {}
        for key in self.store.keys(self.claims_prefix(run.token)):
            try:
                n = int(key.rsplit("/", 1)[-1])
            except ValueError:
                continue
            try:
                held[n] = self.store.get_json(key)
            except Exception:
                held[n] = {}  # unreadable: it still holds its number, for someone else
        for n, h in sorted(held.items()):
            if h.get("agent") == self.nonce:
                run.attempt, run.claimed = n, True  # claimed by this very process before
                return True
            why = self.not_mine(h)
            if why:
                log("%s: attempt %d was claimed by %s; left to it" % (run.token, n, why))
                return False
        n = max(held, default=0) + 1
        key = self.claims_prefix(run.token) + str(n)
        body = json.dumps({"group": self.group, "instance": self.instance_id,
                           "launch": self.launch, "boot": self.boot, "agent": self.nonce,
                           "at": time.time()}).encode()
        if not self.store.create(key, body):
            try:
                h = self.store.get_json(key)
            except Exception:
                h = {}
            if h.get("agent") != self.nonce:  # else: our own write, its answer lost
                log("%s: attempt %d was claimed by %s; left to it"
                    % (run.token, n, self.not_mine(h) or "another instance"))
                return False
        run.attempt, run.claimed = n, True
        log("%s: claimed attempt %d" % (run.token, n))
        return True

    def not_mine(self, held: Json) -> str | None:
        """Why a claim of another agent process keeps this instance off the run (None: it
        does not: this instance's own earlier boot, or the instance this one replaced)."""
        if held.get("group") != self.group:
            return "group %s (instance %s)" % (held.get("group"), held.get("instance"))
        if self.instance_id and held.get("instance") == self.instance_id:
            return None  # this instance before a restart (a stopped spot instance resumed)
        try:
            launch = int(held.get("launch") or 1)
        except (TypeError, ValueError):
            launch = self.launch
        if launch >= self.launch:
            self.superseded = True
            return "instance %s of this group (number %d; this is %s, number %d)" % (
                held.get("instance"), launch, self.instance_id, self.launch)
        return None

    def free_slot(self) -> int | None:
        busy = {r.slot for r in self.runs if r.state != "ended"}
        return next((i for i in range(self.slots) if i not in busy), None)

    def steal(self) -> bool:
        """Start the sweep's next run no instance claimed on a free slot; False when none
        is left (or there is no free slot)."""
        if self.steal_done or self.preempted or self.stop.is_set() or self.lifetime_over or \
                self.superseded:
            return False
        slot = self.free_slot()
        if slot is None:
            return False
        claimed = {k[len(self.claims_prefix()):].split("/", 1)[0]
                   for k in self.store.keys(self.claims_prefix())}
        mine = {r.token for r in self.runs}
        todo: list[Json] = []
        for key in sorted(self.store.keys("%sinstances/" % self.sweep)):
            spec = self.specs.get(key)
            if spec is None:
                try:
                    spec = self.specs[key] = self.store.get_json(key)
                except Exception:
                    continue
            todo += [r for r in spec.get("runs", ()) if r["token"] not in claimed and
                     r["token"] not in mine and r["token"] not in self.cancelled_tokens]
        todo.sort(key=lambda r: r.get("index", 0))
        for entry in todo:
            run = Run(entry, slot, 1)
            self.own(run)
            if self.earlier(run) is not None or not self.claim(run):
                continue
            self.stolen.append(entry)
            try:
                self.store.put(self.stolen_key(), json.dumps(self.stolen).encode())
            except Exception as exc:
                log("could not record the runs taken: %s" % type(exc).__name__)
            os.makedirs(run.dir, exist_ok=True)
            self.fetch_run(run)
            self.runs = self.runs + [run]
            log("%s: taken from another group onto slot %d" % (run.token, slot))
            self.publish(run, force=True)
            assert self.code_dir is not None and self.script is not None  # set up before
            self.start(run, self.code_dir, self.script)
            return True
        self.steal_done = True
        log("no unclaimed run left in the sweep")
        return False

    # -- setup
    def fetch_code(self) -> str:
        code = self.spec["code"]
        manifest = self.store.get_json(code["manifest_key"])
        dest = on_disk(self.spec["code_dir"])
        n = 0
        for rel, (digest, mode) in sorted(manifest["files"].items()):
            path = os.path.join(dest, rel)
            if os.path.exists(path) and sha256_file(path) == digest:
                continue
            self.store.download(code["objects_prefix"] + digest, path)
            os.chmod(path, mode & 0o777)
            n += 1
        log("code: %d files in %s (%d fetched)" % (len(manifest["files"]), dest, n))
        return dest

    def fetch_run(self, run: Run) -> None:
        """Download the run folder; after a restart the local files (newer) are kept. A
        growing file's segments are joined, and only bytes added after them go up later."""
        prefix = self.run_key(run, "")
        keys = self.store.keys(prefix)
        for rel, (gen, segs) in join_segments([k[len(prefix):] for k in keys]).items():
            path = os.path.join(run.dir, rel)
            if os.path.exists(path):  # kept: its next upload starts a new generation
                run.sent[rel] = (gen, -1, None)
                st = os.stat(path)
                run.synced[rel] = (st.st_size, st.st_mtime_ns)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".chester-part"
            size = 0
            with open(tmp, "wb") as out:
                for offset, srel in segs:
                    if offset != size:
                        break
                    copy_body(self.store.s3.get_object(Bucket=self.bucket,
                                                       Key=prefix + srel)["Body"], out)
                    size = out.tell()
            os.replace(tmp, path)
            with open(path, "rb") as f:
                run.sent[rel] = (gen, size, tail_sha256(f, size))
            st = os.stat(path)
            run.synced[rel] = (st.st_size, st.st_mtime_ns)
        for key in keys:
            rel = key[len(prefix):]
            if parse_seg(rel):
                continue
            path = os.path.join(run.dir, rel)
            if not os.path.exists(path):
                self.store.download(key, path)
            if rel == PAYLOAD:
                os.chmod(path, 0o600)
            st = os.stat(path)
            run.synced[rel] = (st.st_size, st.st_mtime_ns)

    def setup(self, code_dir: str) -> tuple[int, str, str]:
        script = on_disk("/var/lib/chester/setup.sh")
        env_script = on_disk("/var/lib/chester/env.sh")
        os.makedirs(os.path.dirname(script), exist_ok=True)
        with open(script, "w") as f:
            f.write(self.spec["setup_script"])
        with open(env_script, "w") as f:
            f.write(self.spec["env_script"])
        logf = on_disk("/var/log/chester-setup.log")
        os.makedirs(os.path.dirname(logf), exist_ok=True)
        with open(logf, "ab") as out:
            rc = subprocess.call(["bash", "-c", 'source "$0"', script], cwd=code_dir,
                                 stdout=out, stderr=subprocess.STDOUT,
                                 env=self.env(code_dir, None))
        return rc, env_script, logf

    def env(self, code_dir: str, run: Run | None) -> dict[str, str]:
        env = dict(os.environ)
        for k in ("CHESTER_EC2_SPEC", "CHESTER_EC2_BUCKET"):
            env.pop(k, None)
        env["CHESTER_ATTEMPT"] = str(run.attempt if run is not None else self.boot)
        env["PYTHONPATH"] = code_dir + (os.pathsep + env["PYTHONPATH"]
                                        if env.get("PYTHONPATH") else "")
        if run is not None:
            env["CHESTER_PREEMPT_FILE"] = run.preempt_file()
            env["CHESTER_REQUEUE_BY"] = "ec2-agent"
            g = int(self.spec.get("gpus_per_run") or 0)
            if g and self.slots > 1 and run.slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(
                    str(run.slot * g + i) for i in range(g))
        return env

    def start(self, run: Run, code_dir: str, script: str) -> None:
        try:  # an earlier attempt's notice (synced, then fetched again) is not this one's
            os.unlink(run.preempt_file())
        except OSError:
            pass
        argv = list(self.spec["worker_argv"]) + [run.dir]
        wrapped = ["bash", "-c", 'source "$0" >/dev/null 2>&1 || true; exec "$@"', script] + argv
        out = open(os.path.join(run.dir, "stdout.log"), "ab")
        err = open(os.path.join(run.dir, "stderr.log"), "ab")
        run.proc = subprocess.Popen(wrapped, cwd=code_dir, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, env=self.env(code_dir, run),
                                    preexec_fn=os.setpgrp)
        out.close()
        err.close()
        run.started = time.time()
        run.state = "running"
        log("started %s (pid %d)" % (run.token, run.proc.pid))

    # -- sync
    def sync_run(self, run: Run, force_record: bool = False) -> None:
        """Upload what changed in the run folder, then its status record if it changed.

        A final record is published only when the worker had exited before the files were
        walked, so a launcher that sees it finds every file of the run in S3."""
        exited = run.proc is None or run.proc.poll() is not None
        for dirpath, _dirs, filenames in os.walk(run.dir):
            for name in filenames:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, run.dir).replace(os.sep, "/")
                if rel == PAYLOAD or name.endswith(".chester-part") or name.startswith(".status"):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                sig = (st.st_size, st.st_mtime_ns)
                if run.synced.get(rel) == sig:
                    continue
                try:
                    if name.endswith(APPENDABLE):
                        self.upload_growing(run, rel, path, st.st_size)
                    else:
                        self.store.s3.upload_file(path, self.bucket, self.run_key(run, rel))
                except Exception as exc:  # keep going: the next sync retries
                    log("upload of %s failed: %s" % (rel, type(exc).__name__))
                    continue
                try:
                    after = os.stat(path)
                except OSError:
                    continue
                if (after.st_size, after.st_mtime_ns) == sig:
                    run.synced[rel] = sig  # else: written to while it went up, sent again
        if exited or not run.record().get("ended_at"):
            self.publish(run, force_record)

    def upload_growing(self, run: Run, rel: str, path: str, size: int) -> None:
        """Send what a growing file gained since the last sync as one segment object; a
        file that shrank or whose last sent bytes changed starts a new generation, whole."""
        old = run.sent.get(rel)
        with open(path, "rb") as f:
            if old and 0 <= old[1] <= size and tail_sha256(f, old[1]) == old[2]:
                gen, start = old[0], old[1]
                if start == size:
                    return  # touched, not grown
            else:
                gen, start = (old[0] + 1 if old else 1), 0
            f.seek(start)
            self.store.s3.upload_fileobj(Limited(f, size - start), self.bucket,
                                         seg_key(self.run_key(run, rel), gen, start))
            run.sent[rel] = (gen, size, tail_sha256(f, size))
        self.bytes_sent += size - start
        log("%s: sent bytes %d-%d of %s (generation %d)" % (run.token, start, size, rel, gen))

    def publish(self, run: Run, force: bool = False) -> None:
        if run.frozen or not run.claimed:  # never another instance's run
            return
        rec = run.record()
        body = json.dumps(rec, sort_keys=True, default=repr).encode()
        if force or body != run.last_record:
            if self.stop.is_set():
                self.publish_last(run, body)
                return
            try:
                self.store.put(self.status_key(run), body)
                run.last_record = body
            except Exception as exc:
                log("status upload failed: %s" % type(exc).__name__)

    def publish_last(self, run: Run, body: bytes, tries: int = 3) -> None:
        """While the instance goes down: write the run's record only over the one just read
        (If-Match on its ETag), and only if that one is not the launcher's verdict or a
        later attempt's; one written in between (a status poll's verdict) is read and
        judged again."""
        key = self.status_key(run)
        for _ in range(tries):
            rec, etag = self.store.read(key)
            if self.overtaken(run, rec):
                log("%s: its record is the launcher's or a later attempt's; left as it is"
                    % run.token)
                run.frozen = True
                return
            try:
                if self.store.replace(key, body, etag):
                    run.last_record = body
                    return
            except Exception as exc:
                log("status upload failed: %s" % type(exc).__name__)
                return
            log("%s: its record changed since it was read; reading it again" % run.token)

    def sync_all(self, force: bool = False) -> None:
        with self.lock:
            for run in self.runs:
                if run.state is not None or force:
                    self.sync_run(run)

    # -- watching
    def check_cancel(self) -> None:
        try:
            keys = self.store.keys(self.cancel_prefix())
        except Exception:
            return
        wanted = {k.rsplit("/", 1)[-1] for k in keys}
        self.cancelled_tokens = wanted
        for run in self.runs:
            if run.token in wanted and not run.cancelled:
                run.cancelled = True
                log("cancel requested for %s" % run.token)
                self.kill(run)

    def kill(self, run: Run, grace: float = 10.0) -> None:
        if run.proc is None or run.proc.poll() is not None:
            return
        try:
            os.killpg(run.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        end = time.time() + grace
        while run.proc.poll() is None and time.time() < end:
            time.sleep(0.05)
        try:
            os.killpg(run.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        run.proc.wait()

    def check_spot(self) -> bool:
        try:
            action = self.imds.get("spot/instance-action")
        except Exception:
            return False
        if action and not self.preempted:
            self.preempted = True
            log("spot interruption notice: %s" % action.strip())
            for run in self.runs:
                if run.state == "running" or run.state is None:
                    run.preempted = True
                    self.tell_preempted(run, action)
            for run in self.runs:  # small PUTs; the folders are synced by the main loop
                self.publish(run, force=True)
            self.sync_now = True
            self.wake.set()
        elif not action and self.preempted:
            # the notice is gone and we are still here: a hibernated instance resumed
            log("spot interruption notice withdrawn; the runs go on")
            self.preempted = False
            for run in self.runs:
                run.preempted = False
                try:
                    os.unlink(run.preempt_file())
                except OSError:
                    pass
                self.publish(run)
        return bool(action)

    def tell_preempted(self, run: Run, action: str) -> None:
        """The run sees the notice: the marker appears, the worker gets SIGUSR1 (its
        ``chester.preempted()``), and the process group the configured ``preempt_signal``."""
        path = run.preempt_file()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write(action)
            os.replace(path + ".tmp", path)
        except OSError as exc:
            log("could not write %s: %s" % (path, exc))
        pid = self.worker_pid(run)
        if pid:
            try:
                os.kill(pid, signal.SIGUSR1)
                log("%s: told worker %d (SIGUSR1)" % (run.token, pid))
            except OSError:
                pass
        name = self.spec.get("preempt_signal")
        if name and run.proc is not None and run.proc.poll() is None:
            try:
                os.killpg(run.proc.pid, getattr(signal, name))
            except (ProcessLookupError, AttributeError):
                pass

    @staticmethod
    def worker_pid(run: Run) -> int | None:
        """The pid of the run's chester worker once it handles SIGUSR1 (it installs the
        handler before recording ``running``), in the process group the agent started; else
        None (the marker file alone tells it: ``chester.preempted()`` reads it too)."""
        if run.proc is None or run.proc.poll() is not None:
            return None
        try:
            with open(os.path.join(run.dir, STATUS), encoding="utf-8") as f:
                rec = json.load(f)
            pid = int(rec.get("pid") or 0)
            if rec.get("token") != run.token or rec.get("state") != "running" or \
                    int(rec.get("attempt") or 1) != run.attempt or not pid:
                return None
            return pid if os.getpgid(pid) == run.proc.pid else None
        except (OSError, ValueError, TypeError):
            return None

    # -- bounds and heartbeat (the watch thread)
    def check_bounds(self) -> None:
        now = time.time()
        if self.lifetime and not self.lifetime_over and now - self.born >= self.lifetime:
            self.lifetime_over = True
            log("max_lifetime_s reached: stopping every run")
            for run in self.runs:
                if run.state != "ended" and run.timed_out is None:
                    run.timed_out = ("the instance reached max_lifetime_s=%g; the run was "
                                     "stopped" % float(self.spec["max_lifetime_s"]))
                    self.kill(run)
            for run in self.runs:
                if run.state is None:
                    run.state = "ended"
        for run in self.runs:
            if run.limit and run.started and run.timed_out is None and \
                    not run.exited() and now - run.started >= float(run.limit):
                run.timed_out = "the run passed its time_limit_s=%g and was stopped" % \
                    float(run.limit)
                log("%s: time limit reached" % run.token)
                self.kill(run)

    def heartbeat(self) -> None:
        try:
            self.store.put(self.heartbeat_key(), json.dumps(
                {"at": time.time(), "boot": self.boot, "born": self.born}).encode())
        except Exception as exc:
            log("heartbeat upload failed: %s" % type(exc).__name__)

    def watch_loop(self) -> None:
        watch = float(self.spec.get("watch_interval_s", 5))
        beat = float(self.spec.get("heartbeat_interval_s") or 60)
        next_beat = 0.0
        while not self.stop.is_set():
            try:
                if time.time() >= next_beat and self.beating:
                    self.heartbeat()
                    next_beat = time.time() + beat
                self.check_spot()
                self.check_bounds()
            except Exception as exc:  # the watch goes on whatever one check did
                log("watch: %s: %s" % (type(exc).__name__, exc))
            self.stop.wait(watch)

    def on_term(self, signum: int, frame: FrameType | None) -> None:
        log("signal %d: stopping the runs and syncing" % signum)
        self.stop.set()
        self.wake.set()

    # -- main loop
    def use_runtime(self) -> None:
        """Put chester's runtime first on ``sys.path``: fetched ahead of the rest of the code
        snapshot it travels in (the spec names its path and digest; a spec of an earlier
        chester does not, and the manifest does), so the agent reads records by the one
        rule from its first look at a record on."""
        ref = self.spec.get("runtime")
        if ref:
            rel, digest = ref["path"], ref["sha256"]
        else:
            files = self.store.get_json(self.spec["code"]["manifest_key"])["files"]
            rel = next(os.path.normpath(a) for a in self.spec["worker_argv"]
                       if os.path.normpath(a) in files)
            digest = files[rel][0]
        path = os.path.join(on_disk(self.spec["code_dir"]), rel)
        if not (os.path.exists(path) and sha256_file(path) == digest):
            self.store.download(self.spec["code"]["objects_prefix"] + digest, path)
            os.chmod(path, 0o644)
        if path not in sys.path:
            sys.path.insert(0, path)

    def main(self) -> int:
        """The agent's life, one named step after another: put chester's runtime on the
        path, start the watch, take the runs this instance is to run, fetch their folders
        and the code, set up, start them, watch them until each has ended (or a signal stops
        them), sync, and power off. Returns the exit status of the agent."""
        self.use_runtime()
        # the one rule, imported here first: a runtime that does not import stops the agent
        # before anything starts (the steps import it again, from sys.modules)
        from chester.target import rundir, states  # noqa: F401
        self.start_watch()
        self.take_runs()
        if self.superseded:
            log("another instance of group %s runs its runs: this one leaves them alone"
                % self.group)
            self.runs = []
            self.steal_done = True
        if self.steal_done and all(r.frozen for r in self.runs):
            log("no run left for this instance")
            return self.finish()
        self.beating = True
        self.heartbeat()
        self.fetch_runs()
        code_dir = self.fetch_code()
        rc, script, logf = self.setup(code_dir)
        if rc != 0:
            self.fail_setup(rc, logf, code_dir)
            return self.finish()
        self.code_dir, self.script = code_dir, script
        self.start_runs(code_dir, script)
        self.watch_runs()
        if self.stop.is_set():
            self.stop_runs()
        self.sync_all(force=True)
        if self.stop.is_set():
            return 0
        return self.finish()

    def start_watch(self) -> None:
        """SIGTERM and SIGINT stop the runs (and sync them); the watch thread checks the spot
        notice, the bounds and the heartbeat from now on."""
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        threading.Thread(target=self.watch_loop, name="chester-watch", daemon=True).start()

    def take_runs(self) -> None:
        """Decide which runs are this instance's: its spec's runs and those an earlier
        instance of its group took from others; a run whose earlier record is final is kept
        as ended (frozen), never run again, but for the launcher's ``lost`` verdict on an
        earlier instance of this group that went while the run ran (:meth:`resumes`: this
        instance was started to run its next attempt); of the others only those this
        instance claims stay, the rest are another instance's and not touched at all."""
        from chester.target import states

        try:  # runs an earlier instance of this group took from others: this one's too
            self.stolen = list(self.store.get_json(self.stolen_key()))
        except Exception:
            self.stolen = []
        taken = {r.token for r in self.runs}
        self.runs = self.runs + [Run(r, len(self.runs) + i, self.boot)
                                 for i, r in enumerate(x for x in self.stolen
                                                       if x["token"] not in taken)]
        for run in self.runs:
            self.own(run)
        self.check_cancel()
        for run in self.runs:
            rec = self.earlier(run)
            if rec and rec.get("state") in states.FINAL and not self.resumes(rec):
                run.state = "ended"  # it ended before a restart or a requeue
                run.frozen = True
        self.runs = [r for r in self.runs if r.frozen or self.claim(r)]

    def resumes(self, rec: Json) -> bool:
        """A ``lost`` verdict the launcher wrote when it terminated an earlier instance of this
        group whose agent stopped its heartbeat while the run ran (``instance_lost``): this
        instance was started to run the run's next attempt, as after a preemption."""
        try:
            launch = int(rec.get("launch") or 1)
        except (TypeError, ValueError):
            return False
        return bool(rec.get("instance_lost")) and rec.get("by") == "launcher" and \
            launch < self.launch

    def overtaken(self, run: Run, rec: Json | None) -> bool:
        """While the instance goes down: the run's record in S3 (``rec``, as read) is no
        longer this agent's to replace, being the launcher's verdict on this instance (a
        bound, a stopped heartbeat) or a later attempt's (the group's next instance already
        runs it)."""
        if not rec or not isinstance(rec, dict):
            return False
        try:
            attempt, launch = int(rec.get("attempt") or 1), int(rec.get("launch") or 1)
        except (TypeError, ValueError):
            return False
        if rec.get("by") == "launcher":  # its verdict on this instance (or a later one)
            return launch >= self.launch
        return attempt > run.attempt or launch > self.launch

    def fetch_runs(self) -> None:
        """Fetch each run's folder and give the runs still to run a slot, in order; a
        requeue may bring more runs than slots (runs taken earlier): the rest wait for one
        (slot None)."""
        for run in self.runs:
            os.makedirs(run.dir, exist_ok=True)
            self.fetch_run(run)
        for run in self.runs:
            run.slot = None
        for run in self.runs:
            if not run.frozen:
                run.slot = self.free_slot()

    def fail_setup(self, rc: int, logf: str, code_dir: str) -> None:
        """The setup script failed: every run still to run ends ``failed`` with the setup's
        reason (its ``chester:`` line by the one rule, else the end of its log), written to
        the run's stderr and its status record, and synced."""
        from chester.target import rundir, states

        said = states.not_started(tail=tail(logf, 10), run_dir=code_dir,
                                  free_bytes=rundir.free_bytes(code_dir))
        reason = "instance setup failed (exit %d): %s" % (
            rc, said["reason"] if said else tail(logf, 10) or "")
        for run in self.runs:
            if run.frozen:
                continue
            with open(os.path.join(run.dir, "stderr.log"), "a") as f:
                f.write(reason + "\n")
            run.state = "ended"
            run.frozen = True
            self.store.put(self.status_key(run), json.dumps({
                "token": run.token, "state": "failed", "reason": reason[:2000],
                "ended_at": time.time(), "stderr_tail": tail(logf)}).encode())
            self.sync_run(run)

    def start_runs(self, code_dir: str, script: str) -> None:
        """Publish each run still to run as queued in this attempt (which clears an old
        preemption) and start those with a slot; one cancelled, or arriving after a stop or
        past the instance's lifetime, ends without starting."""
        for run in self.runs:
            if run.frozen:
                continue
            self.publish(run, force=True)
            if run.slot is None:
                continue  # no slot free yet: started when one is
            if not run.cancelled and not self.stop.is_set() and not self.lifetime_over:
                self.start(run, code_dir, script)
            else:
                run.state = "ended"
                self.publish(run, force=True)

    def watch_runs(self) -> None:
        """The main loop, every ``watch_interval_s`` (sooner on a notice) until every run
        has ended or a signal stops the agent: read the cancel markers, publish what changed,
        sync when due, fill the freed slots, take the sweep's next runs."""
        watch = float(self.spec.get("watch_interval_s", 5))
        sync = float(self.spec.get("sync_interval_s", 60))
        last_sync = time.time()
        seen: dict[str, int | None] = {}
        while not self.stop.is_set():
            self.check_cancel()
            self.publish_changes(seen)
            last_sync = self.sync_when_due(last_sync, sync, watch)
            self.fill_slots()
            self.take_next_runs()
            if all(r.state == "ended" for r in self.runs):
                break
            self.wake.wait(watch)
            self.wake.clear()

    def publish_changes(self, seen: dict[str, int | None]) -> None:
        """A run whose worker exited ends and is synced; once a running run's status file
        changed (``seen``: each run's last mtime), it and the running runs after it are
        published, except a final record, which waits for the run's files (synced with
        them)."""
        changed = False
        for run in self.runs:
            if run.state == "running":
                st = os.path.join(run.dir, STATUS)
                try:
                    m = os.stat(st).st_mtime_ns
                except OSError:
                    m = None
                if seen.get(run.token) != m:
                    seen[run.token] = m
                    changed = True
                if run.exited():
                    run.state = "ended"
                    with self.lock:
                        self.sync_run(run)
                    continue
                if changed and not run.record().get("ended_at"):
                    self.publish(run)

    def sync_when_due(self, last_sync: float, sync: float, watch: float) -> float:
        """Sync every run folder every ``sync`` seconds, at once when a notice asks, and
        every ``min(sync, watch)`` after a spot notice (what the runs write, a checkpoint,
        goes up at once); returns when the last sync was."""
        if self.sync_now or \
                time.time() >= (last_sync + min(sync, watch) if self.preempted
                                else last_sync + sync):
            self.sync_now = False
            self.sync_all()
            return time.time()
        return last_sync

    def fill_slots(self) -> None:
        """A freed slot goes to the next run of this group waiting for one; a run cancelled,
        past the lifetime or after a spot notice ends there without starting."""
        for run in self.runs:
            if run.state is None and not run.frozen and run.slot is None:
                run.slot = self.free_slot()
                if run.slot is None:
                    return
                if run.cancelled or self.lifetime_over or self.preempted:
                    run.state = "ended"
                    self.publish(run, force=True)
                else:
                    # set up before the main loop
                    assert self.code_dir is not None and self.script is not None
                    self.start(run, self.code_dir, self.script)

    def take_next_runs(self) -> None:
        """Each slot still free takes the sweep's next run no instance claimed; S3 trouble
        leaves the runs going and is tried again next time round."""
        try:
            while self.steal():
                pass
        except Exception as exc:
            log("taking the next run: %s: %s" % (type(exc).__name__, exc))

    def stop_runs(self) -> None:
        """After a stop signal: a shutdown signals every process, so the workers get 3 s to
        record their end on their own before a second SIGTERM could cut that short; then
        each run still going is stopped and ends, and the cancel markers are read once more."""
        end = time.time() + 3.0
        while time.time() < end and any(
                r.proc is not None and r.proc.poll() is None for r in self.runs):
            time.sleep(0.05)
        for run in self.runs:
            self.kill(run, grace=5.0)
            if run.state == "running":
                run.state = "ended"
        self.check_cancel()

    def finish(self) -> int:
        argv = shlex.split(os.environ.get("CHESTER_EC2_POWEROFF", "shutdown -h now"))
        if not self.spec.get("shutdown_when_done", True) or not argv:
            log("all runs ended")
            return 0
        log("all runs ended; powering off")
        return subprocess.call(argv)


def run_agent() -> int:
    """Run the agent; whatever goes wrong, record it and power off (an idle instance costs)."""
    agent = None
    try:
        agent = Agent()
        return agent.main()
    except BaseException as exc:  # the agent itself failed: say so in every run's record
        import traceback

        tb = traceback.format_exc()
        log("agent failed: %s" % tb)
        if agent is not None:
            # a run not claimed (yet) may be another instance's: never touched
            for run in agent.runs:
                if not run.claimed or run.frozen:
                    continue
                agent.kill(run, grace=5.0)
                try:
                    agent.store.put(agent.status_key(run), json.dumps({
                        "token": run.token, "state": "failed", "ended_at": time.time(),
                        "reason": ("chester agent failed on the instance: %s: %s"
                                   % (type(exc).__name__, exc))[:2000],
                        "stderr_tail": tb[-4000:]}).encode())
                except Exception:
                    pass
            return agent.finish()
        return finish_argv(True)


def finish_argv(shutdown: bool) -> int:
    argv = shlex.split(os.environ.get("CHESTER_EC2_POWEROFF", "shutdown -h now"))
    if not shutdown or not argv:
        return 1
    return subprocess.call(argv)


if __name__ == "__main__":
    sys.exit(run_agent())
