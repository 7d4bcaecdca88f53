set -euo pipefail
scontrol show config | awk -v want=1001 '/^(MaxArraySize|MinJobAge|MaxJobCount|AccountingStorageType) / { print "CLUSTER " $0 } $1 == "MaxArraySize" { size = $3 } END { if (want != "" && size != want) exit 3 }'
cd /scratch/me/proj
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f pyproject.toml ] && command -v uv >/dev/null; then uv sync -q >&2; fi
stage=/scratch/me/proj/.chester/slurm/chester-1644414db487
cd "$stage"
# a submit that ran before (a retry, a resumed launch) may have made jobs whose
# ids it never wrote down: only then ask the scheduler for them by name
known=
if [ -e .submit-started ]; then known=$(squeue -h -t all -o '%j %F' --name=chester-1644414db487-0 2>/dev/null || true); fi
: > .submit-started
lookup() { printf '%s\n' "$known" | awk -v n="$1" '$1 == n { print $2; exit }'; }
jid0=""
if [ -s job-0.id ]; then jid0=$(cat job-0.id); elif [ -n "$known" ]; then jid0=$(lookup chester-1644414db487-0); fi
if [ -z "$jid0" ]; then jid0=$(sbatch --parsable job-0.sbatch); jid0=${jid0%%;*}; printf '%s\n' "$jid0" > job-0.id; fi
echo "JOB 0 $jid0"
