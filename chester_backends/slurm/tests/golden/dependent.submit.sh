set -euo pipefail
scontrol show config | awk -v want='' '/^(MaxArraySize|MinJobAge|MaxJobCount|AccountingStorageType) / { print "CLUSTER " $0 } $1 == "MaxArraySize" { size = $3 } END { if (size == "") exit 1; if (want != "" && size != want) exit 3 }'
if [ -f /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part ]; then if [ "$( { sha256sum -- /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part || shasum -a 256 -- /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part || openssl dgst -sha256 -r /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part; } 2>/dev/null | cut -c1-20 )" = DIGEST ]; then chmod 644 /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part && mv -f /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part /scratch/me/proj/.chester/runtime/RUNTIME.pyz; else rm -f /scratch/me/proj/.chester/runtime/.RUNTIME.pyz.tok0000.part; fi; fi
for chester_part in /scratch/me/proj/.chester/runtime/.chester-*.part; do if [ -e "$chester_part" ]; then find /scratch/me/proj/.chester/runtime -maxdepth 1 -name '.chester-*.part' -mmin +1440 -exec rm -f {} + 2>/dev/null || :; fi; break; done
chester_probe=$( { cd /scratch/me/proj; chester_rt=; if [ -f /scratch/me/proj/.chester/runtime/RUNTIME.pyz ] && [ "$( { sha256sum -- /scratch/me/proj/.chester/runtime/RUNTIME.pyz || shasum -a 256 -- /scratch/me/proj/.chester/runtime/RUNTIME.pyz || openssl dgst -sha256 -r /scratch/me/proj/.chester/runtime/RUNTIME.pyz; } 2>/dev/null | cut -c1-20 )" = DIGEST ]; then chester_rt=1; fi; if [ -n "$chester_rt" ]; then echo 'chester-probe runtime=1'; else echo 'chester-probe runtime=0'; fi; chester_py=$(command -v python3 2>/dev/null) || chester_py=""; if [ -z "$chester_py" ]; then echo 'chester-probe python=missing'; else chester_key=$(stat -c %d.%i.%s.%Y -- "$chester_py" 2>/dev/null)/$(stat -L -c %d.%i.%s.%Y -- "$chester_py" 2>/dev/null); case "$chester_key" in /*|*/) chester_key="";; *) chester_key="$chester_key/${PYTHONHOME-}/${PYTHONPATH-}";; esac; chester_hit=; if [ -n "$chester_key" ] && [ -n "$chester_rt" ] && [ -f /scratch/me/proj/.chester/runtime/RUNTIME.pyz.probe-9e3b56d2c6415499 ]; then { IFS= read -r chester_line || :; if [ "$chester_line" = "$chester_key" ]; then chester_hit=1; while IFS= read -r chester_line; do printf '%s\n' "$chester_line"; done; fi; } < /scratch/me/proj/.chester/runtime/RUNTIME.pyz.probe-9e3b56d2c6415499 2>/dev/null || chester_hit=; fi; if [ -n "$chester_hit" ]; then :; else chester_out=$(python3 -c 'exec("import os, sys, hashlib\nprint('"'"'chester-probe python=%d.%d.%d %s'"'"' % (sys.version_info[:3] + (sys.executable,)))\nrt = '"'"'/scratch/me/proj/.chester/runtime/RUNTIME.pyz'"'"'\nok = False\ntry:\n    f = open(rt, '"'"'rb'"'"')\n    ok = hashlib.sha256(f.read()).hexdigest()[:20] == '"'"'DIGEST'"'"'\n    f.close()\nexcept Exception:\n    pass\nif ok:\n    try:\n        sys.path.insert(0, rt)\n        import chester.target.worker\n        src = os.path.abspath(chester.target.worker.__file__)\n        if not src.startswith(os.path.abspath(rt) + os.sep):\n            raise ImportError('"'"'chester was imported from %s, not from the runtime'"'"' % src)\n        print('"'"'chester-probe import=ok'"'"')\n    except BaseException as e:\n        print('"'"'chester-probe import=%s: %s'"'"' % (type(e).__name__, str(e).replace('"'"'\\n'"'"', '"'"' '"'"')))")' || echo 'chester-probe python=broken'); printf '%s\n' "$chester_out"; case "$chester_out" in *"chester-probe python=X.Y."*"chester-probe import=ok"*) if [ -n "$chester_key" ] && [ -n "$chester_rt" ] && [ "$(head -c 2 -- "$chester_py")" != "#!" ]; then { printf '%s\n%s\n' "$chester_key" "$chester_out" > /scratch/me/proj/.chester/runtime/RUNTIME.pyz.probe-9e3b56d2c6415499.$$ && mv -f /scratch/me/proj/.chester/runtime/RUNTIME.pyz.probe-9e3b56d2c6415499.$$ /scratch/me/proj/.chester/runtime/RUNTIME.pyz.probe-9e3b56d2c6415499; } 2>/dev/null || rm -f /scratch/me/proj/.chester/runtime/RUNTIME.pyz.probe-9e3b56d2c6415499.$$ 2>/dev/null; fi;; esac; fi; fi; } 2>/dev/null || true )
printf '%s\n' "$chester_probe"
case "$chester_probe" in *"chester-probe python=X.Y."*) ;; *) exit 7;; esac
case "$chester_probe" in *"chester-probe import="*) case "$chester_probe" in *"chester-probe import=ok"*) ;; *) exit 7;; esac;; esac
case "$chester_probe" in *"chester-probe runtime=0"*) exit 6;; esac
stage=/scratch/me/proj/.chester/slurm/chester-1644414db487
cd "$stage"
# a submit that ran before (a retry, a resumed launch) may have made jobs whose
# ids it never wrote down: only then ask the scheduler for them by name
known=
if [ -e .submit-started ]; then known=$(squeue -h -t all -o '%j %F' --name=chester-1644414db487-0,chester-1644414db487-1,chester-1644414db487-2 2>/dev/null || true); fi
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
jid1=""
if [ -e job-1.skip ]; then echo "SKIP 1"; jid1=; else
if [ -s job-1.id ]; then jid1=$(cat job-1.id); elif [ -n "$known" ]; then jid1=$(lookup chester-1644414db487-1); fi
if [ -z "$jid1" ] && [ -z "$limited" ] && [ -n "$jid0" ]; then
  if jid1=$(sbatch --parsable --dependency=afterok:"$jid0" job-1.sbatch 2>sbatch.err); then
    jid1=${jid1%%;*}; printf '%s\n' "$jid1" > job-1.id
  elif grep -qE '(QOS|Assoc)[A-Za-z]*Submit[A-Za-z]*Limit|job submit limit' sbatch.err; then limit_of sbatch.err; jid1=
  else cat sbatch.err >&2; exit 1; fi
fi
if [ -n "$jid1" ]; then echo "JOB 1 $jid1"; else echo "WAIT 1 ${limited:-dependency} ${queued:-0}"; fi
fi
jid2=""
if [ -e job-2.skip ]; then echo "SKIP 2"; jid2=; else
if [ -s job-2.id ]; then jid2=$(cat job-2.id); elif [ -n "$known" ]; then jid2=$(lookup chester-1644414db487-2); fi
if [ -z "$jid2" ] && [ -z "$limited" ] && [ -n "$jid1" ]; then
  if jid2=$(sbatch --parsable --dependency=afterok:"$jid1" job-2.sbatch 2>sbatch.err); then
    jid2=${jid2%%;*}; printf '%s\n' "$jid2" > job-2.id
  elif grep -qE '(QOS|Assoc)[A-Za-z]*Submit[A-Za-z]*Limit|job submit limit' sbatch.err; then limit_of sbatch.err; jid2=
  else cat sbatch.err >&2; exit 1; fi
fi
if [ -n "$jid2" ]; then echo "JOB 2 $jid2"; else echo "WAIT 2 ${limited:-dependency} ${queued:-0}"; fi
fi
# nothing held back: the supervisor is not needed (it never ran)
if [ -z "$limited" ] && [ -s supervise.id ] && [ ! -e supervise.jsonl ]; then
  scancel "$(cat supervise.id)" 2>/dev/null && rm -f supervise.id && echo "SUPERVISE none not needed"; fi
if [ -s supervise.id ]; then echo "SUPERVISE $(cat supervise.id)"; fi
