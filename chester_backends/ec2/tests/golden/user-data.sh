#!/bin/bash
# chester ec2: fetches its code and runs from S3 through the instance role.
# No credentials are in this script.
set -eu
export CHESTER_EC2_BUCKET=my-bucket
export CHESTER_EC2_SPEC=chester/sweeps/s-1/instances/g.json
export CHESTER_EC2_REGION=eu-west-1
root="${CHESTER_EC2_ROOT:-/}"
state="${root%/}/var/lib/chester"
mkdir -p "$state" "${root%/}/var/log"
exec >>"${root%/}/var/log/chester-agent.log" 2>&1
echo "chester: user-data starts $(date -u +%FT%TZ)"
# a hard bound on this instance's life (7200 s), whatever becomes of the agent
export CHESTER_EC2_STARTED="$(date +%s)"
if [ -n "${CHESTER_EC2_POWEROFF+x}" ]; then
  (sleep 7200; echo "chester: max_lifetime_s reached"; eval "$CHESTER_EC2_POWEROFF") &
else
  shutdown -h +120 || true
fi
# a bootstrap that fails powers the instance off (it terminates) instead of idling
trap 'echo "chester: bootstrap failed"; eval "${CHESTER_EC2_POWEROFF-shutdown -h now}"' EXIT
pip install chester-ml==0.3.0
PY=/opt/conda/bin/python3
"$PY" -c "import boto3" 2>/dev/null || "$PY" -m pip install --quiet boto3
"$PY" -c 'import os, sys, boto3
kw = {"region_name": os.environ.get("CHESTER_EC2_REGION") or None,
      "endpoint_url": os.environ.get("CHESTER_EC2_S3_ENDPOINT") or None}
boto3.client("s3", **kw).download_file(sys.argv[1], sys.argv[2], sys.argv[3])
' "$CHESTER_EC2_BUCKET" chester/agent/abc.py "$state/agent.py"
# run again on every later boot (a stopped spot instance that resumes)
boot="${root%/}/var/lib/cloud/scripts/per-boot"
mkdir -p "$boot"
[ "$0" -ef "$boot/chester-agent.sh" ] || install -m 700 "$0" "$boot/chester-agent.sh"
trap - EXIT
exec "$PY" "$state/agent.py"
