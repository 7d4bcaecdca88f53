"""EC2 backend bench: a 100-run sweep against a local moto server (nothing leaves loopback).

Prints the EC2/S3 API calls of a submit and of one status poll (counted with botocore event
hooks on the backend's own clients), and the bytes uploaded on a first launch and on a
relaunch with unchanged code.

    .venv/bin/python bench/ec2_bench.py [--runs 100] [--files 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def train(variant, log_dir, exp_name):  # never runs here: moto does not execute user-data
    pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--files", type=int, default=300, help="code files in the project")
    ap.add_argument("--runs-per-instance", type=int, default=1)
    args = ap.parse_args()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        return run(args)
    finally:
        srv.stop()


def run(args: argparse.Namespace) -> int:
    import boto3
    import yaml
    from chester_backend_ec2 import plugin

    from chester.config import load_config
    from chester.launcher.launching import launch
    from chester.plugin.testing import dispatcher_with

    tmp = Path(tempfile.mkdtemp(prefix="ec2-bench-"))
    project = tmp / "project"
    (project / ".git").mkdir(parents=True)
    (project / "pkg").mkdir()
    for i in range(args.files):
        (project / "pkg" / f"mod_{i:04d}.py").write_text(
            f"# module {i}\n" + "".join(f"def f{j}(x):\n    return x + {i * j}\n"
                                        for j in range(60)))
    (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {"ec2": {
        "type": "ec2", "bucket": "bench-bucket", "image_id": "ami-0123456789abcdef0",
        "region": "us-east-1", "instance_type": "g5.xlarge",
        "runs_per_instance": args.runs_per_instance}}}))
    cfg = load_config(project / "chester.yaml")
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bench-bucket")
    code_size = sum(p.stat().st_size for p in (project / "pkg").iterdir())

    calls: Counter = Counter()
    opts = cfg.backend("ec2").options
    backend = plugin.Ec2Backend()  # the launches below go through it, and its clients
    for kind in ("ec2", "s3"):
        c = backend.client(kind, opts)
        c.meta.events.register("before-call", lambda model, **kw: calls.update(
            [f"{model.service_model.service_name}:{model.name}"]))

    def take() -> Counter:
        out = Counter(calls)
        calls.clear()
        return out

    def fmt(c: Counter, service: str) -> str:
        items = {k.split(":")[1]: v for k, v in sorted(c.items()) if k.startswith(service)}
        return f"{sum(items.values())} ({', '.join(f'{k} {v}' for k, v in items.items())})"

    variants = [{"lr": 10 ** -(i % 5), "seed": i} for i in range(args.runs)]
    disp = dispatcher_with(backend, sleep=lambda s: None)
    t0 = time.perf_counter()
    sweep = launch(train, variants, backend="ec2", exp_prefix="bench-a", config=cfg,
                   dispatcher=disp)
    t_submit = time.perf_counter() - t0
    sub = take()
    first = dict(backend.last_submit)

    # status: no records yet, then every run reporting "running", then a steady poll
    t0 = time.perf_counter()
    sweep.status()
    t_poll = time.perf_counter() - t0
    poll_empty = take()
    s3 = boto3.client("s3", region_name="us-east-1")
    sp = plugin.sweep_prefix(opts, sweep.runs[0].handle.get("sweep"))
    for r in sweep.runs:
        s3.put_object(Bucket="bench-bucket", Key=f"{sp}ctl/status/{r.handle.token}.json",
                      Body=json.dumps({"token": r.handle.token, "state": "running",
                                       "started_at": time.time()}).encode())
    sweep.status()
    poll_records = take()
    t0 = time.perf_counter()
    states = sweep.status()
    t_steady = time.perf_counter() - t0
    poll_steady = take()

    t0 = time.perf_counter()
    launch(train, variants, backend="ec2", exp_prefix="bench-b", config=cfg, dispatcher=disp)
    t_relaunch = time.perf_counter() - t0
    rel = take()
    second = dict(backend.last_submit)

    n_inst = -(-args.runs // args.runs_per_instance)
    print(f"EC2 backend bench: {args.runs} runs, {args.runs_per_instance} run(s) per instance "
          f"({n_inst} instances); project code {args.files} files, {code_size} bytes; "
          f"moto {os.environ['AWS_ENDPOINT_URL']}")
    print(f"submit          : EC2 calls {fmt(sub, 'ec2')}; S3 calls {fmt(sub, 's3')}; "
          f"{t_submit:.2f} s")
    print(f"status poll     : EC2 calls {fmt(poll_empty, 'ec2')}; S3 calls "
          f"{fmt(poll_empty, 's3')}; {t_poll * 1000:.0f} ms (no records yet)")
    print(f"status poll     : EC2 calls {fmt(poll_records, 'ec2')}; S3 calls "
          f"{fmt(poll_records, 's3')} (first poll after {args.runs} runs started)")
    print(f"status poll     : EC2 calls {fmt(poll_steady, 'ec2')}; S3 calls "
          f"{fmt(poll_steady, 's3')}; {t_steady * 1000:.0f} ms (steady; states: "
          f"{dict(Counter(s.value for s in states.values()))})")
    print(f"first launch    : code bytes uploaded {first['code_bytes']}, run-folder bytes "
          f"{first['run_bytes']}")
    print(f"relaunch (same code, new sweep): code bytes uploaded {second['code_bytes']}, "
          f"run-folder bytes {second['run_bytes']}; EC2 calls {fmt(rel, 'ec2')}; "
          f"S3 calls {fmt(rel, 's3')}; {t_relaunch:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
