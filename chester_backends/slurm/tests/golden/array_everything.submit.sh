set -euo pipefail
secrets_file=/scratch/me/proj/.chester/slurm/chester-1644414db487/secrets.sh
# removed however this ends, unless jobs wait for room under a submit limit
drop_secrets() { [ -n "${limited:-}" ] || rm -f "$secrets_file"; }
trap drop_secrets EXIT
scontrol show config | awk -v want=1001 '/^(MaxArraySize|MinJobAge|MaxJobCount|AccountingStorageType) / { print "CLUSTER " $0 } $1 == "MaxArraySize" { size = $3 } END { if (size == "") exit 1; if (want != "" && size != want) exit 3 }'
# the modules the jobs load must load here too (in a subshell: nothing changes)
( set +eu
  type module >/dev/null 2>&1 || { [ -r /etc/profile ] && . /etc/profile; } >/dev/null 2>&1
  type module >/dev/null 2>&1 || exit 0  # no module system here: nothing to check
  for m in singularity gcc/11 cuda/12.1.1; do
    module load "$m" >/dev/null 2>&1 || { echo "chester: module load $m failed on $(hostname) (check the name with: module avail $m)" >&2; exit 5; }
  done ) || exit 5
cd /scratch/me/proj
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f pyproject.toml ]; then
  if ! command -v uv >/dev/null 2>&1; then
    echo "chester: package_manager is uv but uv is not on PATH on $(hostname) (install uv there, or set package_manager: python)" >&2; exit 5
  fi
  uv sync -q >&2 || { echo "chester: uv sync failed on $(hostname)" >&2; exit 5; }
fi
[ -f /scratch/me/proj/.venv/bin/activate ] || { echo "chester: package_manager is uv but /scratch/me/proj/.venv is missing on $(hostname) (run uv sync in the project there, or set sync_on_launch: true or package_manager: python)" >&2; exit 5; }
if [ -f /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part ]; then if [ "$( { sha256sum -- /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part || shasum -a 256 -- /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part || openssl dgst -sha256 -r /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part; } 2>/dev/null | cut -c1-20 )" = DIGEST ]; then chmod 644 /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part && mv -f /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part /scratch/me/proj/.chester/runtime/RUNTIME.pyz; else rm -f /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part; fi; fi
for chester_part in /scratch/me/proj/.chester/runtime/.chester-*.part; do if [ -e "$chester_part" ]; then find /scratch/me/proj/.chester/runtime -maxdepth 1 -name '.chester-*.part' -mmin +1440 -exec rm -f {} + 2>/dev/null || :; fi; break; done
chester_probe=$( { cd /scratch/me/proj; if type module >/dev/null 2>&1; then module load singularity >/dev/null 2>&1; module load gcc/11 >/dev/null 2>&1; module load cuda/12.1.1 >/dev/null 2>&1; fi; export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"; if [ -f /scratch/me/proj/.venv/bin/activate ]; then . /scratch/me/proj/.venv/bin/activate; fi; export OMP_NUM_THREADS=4; export ODD='$(whoami) `id`; echo '"'"'hi'"'"''; chester_env_bin="${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"; if [ -n "$chester_env_bin" ]; then export APPTAINERENV_PREPEND_PATH="$chester_env_bin/bin" SINGULARITYENV_PREPEND_PATH="$chester_env_bin/bin"; fi; echo 'chester-probe via=singularity exec -B /usr/share/glvnd -B /scratch/me/proj -B /scratch/me/proj/data/train/exp /images/train.sif python'; if command -v singularity >/dev/null 2>&1; then singularity exec -B /usr/share/glvnd -B /scratch/me/proj -B /scratch/me/proj/data/train/exp /images/train.sif python -c 'exec("import os, sys, hashlib\nprint('"'"'chester-probe python=%d.%d.%d %s'"'"' % (sys.version_info[:3] + (sys.executable,)))\nrt = '"'"'/scratch/me/proj/.chester/runtime/RUNTIME.pyz'"'"'\nok = False\ntry:\n    f = open(rt, '"'"'rb'"'"')\n    ok = hashlib.sha256(f.read()).hexdigest()[:20] == '"'"'DIGEST'"'"'\n    f.close()\nexcept Exception:\n    pass\nif ok:\n    print('"'"'chester-probe runtime=1'"'"')\n    try:\n        sys.path.insert(0, rt)\n        import chester.target.worker\n        src = os.path.abspath(chester.target.worker.__file__)\n        if not src.startswith(os.path.abspath(rt) + os.sep):\n            raise ImportError('"'"'chester was imported from %s, not from the runtime'"'"' % src)\n        print('"'"'chester-probe import=ok'"'"')\n    except BaseException as e:\n        print('"'"'chester-probe import=%s: %s'"'"' % (type(e).__name__, str(e).replace('"'"'\\n'"'"', '"'"' '"'"')))\nelse:\n    print('"'"'chester-probe runtime=0'"'"')")' 2>&1 || echo 'chester-probe python=broken'; else echo 'chester-probe container=missing'; fi; } 2>/dev/null || true )
printf '%s\n' "$chester_probe"
case "$chester_probe" in *"chester-probe python=X.Y."*) ;; *) exit 7;; esac
case "$chester_probe" in *"chester-probe import="*) case "$chester_probe" in *"chester-probe import=ok"*) ;; *) exit 7;; esac;; esac
case "$chester_probe" in *"chester-probe runtime=0"*) exit 6;; esac
stage=/scratch/me/proj/.chester/slurm/chester-1644414db487
cd "$stage"
# the secrets go to the jobs in sbatch's environment, not as a file
if [ -e "$secrets_file" ]; then set -a; . "$secrets_file"; set +a; fi
case "${SBATCH_EXPORT:-ALL}" in ALL*) ;; *) echo "chester: SBATCH_EXPORT=$SBATCH_EXPORT on $(hostname) keeps the secrets from the jobs: unset it for chester" >&2; exit 1 ;; esac
# a submit that ran before (a retry, a resumed launch) may have made jobs whose
# ids it never wrote down: only then ask the scheduler for them by name
known=
if [ -e .submit-started ]; then known=$(squeue -h -t all -o '%j %F' --name=chester-1644414db487-0 2>/dev/null || true); fi
: > .submit-started
lookup() { printf '%s\n' "$known" | awk -v n="$1" '$1 == n { print $2; exit }'; }
limited=
# sbatch refused for a submit limit: remember which, and how many jobs are queued
limit_of() { limited=$(grep -oE '(QOS|Assoc)[A-Za-z]*Submit[A-Za-z]*Limit|job submit limit' "$1" | head -n 1); limited=${limited// /_}; queued=$(squeue -h -r -u "$(id -un)" 2>/dev/null | wc -l); }
# the supervisor first: it holds one slot of a submit limit, never one it waits for
if [ ! -s supervise.id ]; then
  if sup=$(sbatch --parsable --begin=now+60 supervise.sbatch 2>sbatch.err); then
    printf '%s\n' "${sup%%;*}" > supervise.id
  else echo "SUPERVISE none $(tr '\n ' '__' < sbatch.err | cut -c1-200)"; fi
fi
jid0=""
if [ -e job-0.skip ]; then echo "SKIP 0"; jid0=; else
if [ -s job-0.id ]; then jid0=$(cat job-0.id); elif [ -n "$known" ]; then jid0=$(lookup chester-1644414db487-0); fi
if [ -z "$jid0" ] && [ -z "$limited" ]; then
  if jid0=$(sbatch --parsable job-0.sbatch 2>sbatch.err); then
    jid0=${jid0%%;*}; printf '%s\n' "$jid0" > job-0.id
  elif grep -qE '(QOS|Assoc)[A-Za-z]*Submit[A-Za-z]*Limit|job submit limit' sbatch.err; then limit_of sbatch.err; jid0=
  else cat sbatch.err >&2; exit 1; fi
fi
if [ -n "$jid0" ]; then echo "JOB 0 $jid0"; else echo "WAIT 0 ${limited:-dependency} ${queued:-0}"; fi
fi
# nothing held back: the supervisor is not needed (it never ran)
if [ -z "$limited" ] && [ -s supervise.id ] && [ ! -e supervise.jsonl ]; then
  scancel "$(cat supervise.id)" 2>/dev/null && rm -f supervise.id && echo "SUPERVISE none not needed"; fi
if [ -s supervise.id ]; then echo "SUPERVISE $(cat supervise.id)"; fi
