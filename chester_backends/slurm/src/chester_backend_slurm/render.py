"""Job scripts and the submit script, rendered from options and runs (pure functions).

Every value that reaches a shell goes through :func:`shlex.quote`; values that go into
``#SBATCH`` lines (which sbatch reads, not a shell) are checked to be one line of plain text.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from chester.digests import sha256
from chester.plugin.errors import UserError
from chester_backend_slurm.options import GPU_DIRECTIVES, RESOURCE_KEYS, SlurmOptions

_SBATCH_VALUE = re.compile(r"[^\x00-\x1f\x7f]+\Z")
q = shlex.quote

#: ``#SBATCH`` flag of each structured resource (gpus is handled by the GPU directive).
_FLAGS = {"partition": "--partition", "time": "--time", "nodes": "--nodes",
          "ntasks_per_node": "--ntasks-per-node", "cpus_per_task": "--cpus-per-task",
          "cpus_per_gpu": "--cpus-per-gpu", "mem": "--mem", "mem_per_gpu": "--mem-per-gpu",
          "account": "--account", "qos": "--qos", "constraint": "--constraint",
          "exclude": "--exclude", "mail_user": "--mail-user", "mail_type": "--mail-type"}


@attrs.frozen(kw_only=True)
class Job:
    """One ``sbatch``: an array chunk, a single run (dependent order) or serial steps."""

    index: int
    name: str
    kind: str  # array | single | serial
    tokens: tuple[str, ...]
    run_dirs: tuple[str, ...]
    resources: Mapping[str, Any]
    after: int | None = None  # index of the job this one depends on (afterok)
    throttle: int | None = None  # --array=...%K: this chunk's share of array_throttle
    after_any: int | None = None  # a chunk that must end first (afterany): the throttle

    @property
    def script(self) -> str:
        return f"job-{self.index}.sbatch"

    @property
    def manifest(self) -> str:
        return f"job-{self.index}.txt"


def _check_line(key: str, value: Any) -> str:
    text = str(value)
    if not _SBATCH_VALUE.match(text) or text != text.strip():
        raise UserError(f"slurm: {key}={value!r} must be one line of text without control "
                        "characters or surrounding spaces")
    return text


def _gpus(res: Mapping[str, Any]) -> int:
    try:
        return int(res.get("gpus") or 0)
    except (TypeError, ValueError):
        raise UserError(f"slurm: gpus={res.get('gpus')!r} must be a whole number") from None


#: ``#SBATCH`` flags (long and short) that set each structured resource.
_HEADER_FLAGS = {"partition": ("--partition", "-p"), "time": ("--time", "-t"),
                 "nodes": ("--nodes", "-N"), "ntasks_per_node": ("--ntasks-per-node",),
                 "gpus": ("--gpus", "-G", "--gres", "--gpus-per-node", "--gpus-per-task"),
                 "cpus_per_task": ("--cpus-per-task", "-c"), "cpus_per_gpu": ("--cpus-per-gpu",),
                 "mem": ("--mem",), "mem_per_gpu": ("--mem-per-gpu",),
                 "account": ("--account", "-A"), "qos": ("--qos", "-q"),
                 "constraint": ("--constraint", "-C"), "exclude": ("--exclude", "-x"),
                 "mail_user": ("--mail-user",), "mail_type": ("--mail-type",)}
_GPU_ONLY = ("cpus_per_gpu", "mem_per_gpu")


def header_keys(lines: Sequence[str]) -> set[str]:
    """Structured resources that the raw header already sets."""
    flags = set()
    for line in lines:
        m = re.match(r"#SBATCH\s+(--?[A-Za-z][\w-]*)", line.strip())
        if m:
            flags.add(m.group(1))
    return {k for k, fs in _HEADER_FLAGS.items() if flags & set(fs)}


def sbatch_lines(options: SlurmOptions, res: Mapping[str, Any],
                 skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """The structured ``#SBATCH`` lines of one resource set (plus raw extra lines).

    ``skip``: resources the seed's ``remote_header`` already sets (a per-run override still
    wins); per-GPU resources appear only when the run asks for GPUs.
    """
    lines = []
    overrides = set(res.get("_overrides") or ())
    for key in RESOURCE_KEYS:
        value = res.get(key)
        if value is None or value == "":
            continue
        if key in skip and key not in overrides:
            continue
        if key in _GPU_ONLY and not _gpus(res):
            continue
        if key == "gpus":
            n = _gpus(res)
            if n:
                count = f"{_check_line('gpu_type', res['gpu_type'])}:{n}" \
                    if res.get("gpu_type") else str(n)
                lines.append("#SBATCH " + GPU_DIRECTIVES[options.gpu_directive].format(n=count))
            continue
        lines.append(f"#SBATCH {_FLAGS[key]}={_check_line(key, value)}")
    raws = list(res.get("sbatch") or ()) + (list(res.get("gpu_sbatch") or ()) if _gpus(res)
                                             else [])
    for raw in raws:
        text = _check_line("sbatch", raw)
        lines.append("#SBATCH " + (text if text.startswith("-") else f"--{text}"))
    return lines


def header(options: SlurmOptions, res: Mapping[str, Any], variant_gpus: Any = None) -> list[str]:
    """The seed's ``remote_header`` with ``$gpus`` substituted (shebang first)."""
    if not options.remote_header:
        return ["#!/bin/bash"]
    gpus = _gpus(res) or (variant_gpus if isinstance(variant_gpus, int) else 1)
    text = re.sub(r"\$\{gpus\}|\$gpus\b", str(int(gpus)), options.remote_header.strip("\n"))
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#!"):
        lines.insert(0, "#!/bin/bash")
    for line in lines[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            raise UserError(f"slurm: remote_header may hold only #SBATCH and comment lines, "
                            f"not {line!r}")
    return lines


def worker_command(options: SlurmOptions, res: Mapping[str, Any], project_dir: str,
                   stage_root: str, spec_file: str | None = None,
                   runtime_path: str | None = None) -> str:
    """``python RUNTIME worker "$RUN_DIR" [--spec SPEC]``, inside the container when asked.

    ``RUNTIME`` is chester's target-side runtime under the project (the cluster needs no
    chester installed). Only the worker runs in the container (the remote layer's
    :mod:`chester.remote.container`); the project and run folders are bound into it, so the
    worker's record lands in the same folder the status query reads on the host. With the
    sweep spec, the worker writes the run folder from it first.
    """
    from chester.remote import container as ctr

    argv = [options.python, runtime_path, "worker"] if runtime_path else \
        [options.python, "-m", "chester.target.worker"]
    c = ctr.resolve(options, res, backend="slurm")
    argv = ctr.wrap(argv, c, binds=[project_dir, stage_root], gpus=bool(_gpus(res)))
    return shlex.join(argv) + ' "$RUN_DIR"' + (f" --spec {q(spec_file)}" if spec_file else "")


#: Exit status of a job whose setup failed (a ``chester:`` line on stderr says what).
EXIT_SETUP = 3


def _fail(what: str) -> str:
    """``|| ...`` text: one ``chester:`` line naming the failure and the node, then exit."""
    what = re.sub(r'([\\$`"])', r"\\\1", what)  # literal inside the double quotes
    return f'{{ echo "chester: {what} on $(hostname)" >&2; exit {EXIT_SETUP}; }}'


def setup_lines(options: SlurmOptions, res: Mapping[str, Any], *, project_dir: str,
                env_file: str, require_env: Sequence[str] = ()) -> list[str]:
    """Shell lines run on the compute node before the worker; any failure ends the job
    with one ``chester:`` line on stderr (the run's reason) instead of running the worker
    with the wrong environment.

    Modules first (the environment may need them; each ``module load`` is checked and
    named), then the sweep's env file — the SSH backend's: package manager, env, prepare
    commands, prepare script — then ``require_env`` (the environment must exist) and the
    run's own pre-commands and compile step (the seed's run_experiment_lite), all under
    ``set -e``. The secrets are already in the job's environment (see
    :func:`submit_script`): no job reads a file of them.
    """
    lines = [f"cd {q(project_dir)} || " + _fail(f"cannot enter {project_dir}")]
    mods = list(options.modules)
    if _gpus(res) and options.cuda_module:
        mods.append(options.cuda_module)
    for m in mods:
        name = _check_line('modules', m)
        what = f"module load {name} failed (check the name with: module avail {name})"
        lines.append(f"module load {q(name)} || " + _fail(what))
    lines.append("# setup: the first failing command ends the job and is named")
    lines.append("set -eE; trap 'echo \"chester: the job setup failed on $(hostname) at: "
                 "$BASH_COMMAND\" >&2' ERR")
    lines.append(f"set +u; . {q(env_file)}; set -u")
    lines.extend(require_env)
    lines.extend(str(c) for c in (res.get("pre_commands") or ()))
    if res.get("compile_script"):
        lines.append(str(res["compile_script"]))
        if res.get("wait_compile"):
            lines.append(f"sleep {int(res['wait_compile'])}")
    lines.append("trap - ERR; set +eE")
    return lines


def job_script(job: Job, options: SlurmOptions, *, stage_dir: str, stage_root: str,
               project_dir: str, env_file: str,
               spec_file: str | None = None, variant_gpus: Any = None,
               runtime_path: str | None = None, require_env: Sequence[str] = ()) -> str:
    """The batch script of one job."""
    res = job.resources
    lines = header(options, res, variant_gpus)
    lines.append(f"#SBATCH --job-name={job.name}")
    manifest = f"{stage_dir}/{job.manifest}"
    if job.kind == "array":
        spec = f"0-{len(job.run_dirs) - 1}"
        if job.throttle:
            spec += f"%{int(job.throttle)}"
        lines.append(f"#SBATCH --array={spec}")
        lines.append(f"#SBATCH --output={_check_line('stage', stage_dir)}/slurm-%A_%a.out")
    else:
        lines.append(f"#SBATCH --output={_check_line('stage', stage_dir)}/slurm-%j.out")
    lines.extend(sbatch_lines(options, res, header_keys(lines)))
    if options.signal_lead and not any(ln.split("=")[0] in ("#SBATCH --signal",)
                                       for ln in lines):
        # the batch shell (the worker itself, which exec's) is warned before the time
        # limit; without B: the signal would go only to job steps, and there are none
        lines.append(f"#SBATCH --signal=B:USR1@{int(options.signal_lead)}")
    lines.append("#SBATCH --requeue")
    lines.append("set -uo pipefail")
    from chester.remote import container as ctr

    setup = setup_lines(options, res, project_dir=project_dir, env_file=env_file,
                        require_env=require_env)
    setup += ctr.env_lines(ctr.resolve(options, res, backend="slurm"))
    worker = worker_command(options, res, project_dir, stage_root, spec_file, runtime_path)
    if job.kind == "serial":
        lines.append("# serial steps in one allocation: each starts when the one before succeeded")
        lines.extend(setup)
        lines.append("# the shell outlives each step, so SLURM's signals reach the worker and "
                     "the shell waits for its end")
        lines.append("trap 'kill -TERM \"$step\" 2>/dev/null' TERM")
        lines.append("trap 'kill -USR1 \"$step\" 2>/dev/null' USR1")
        lines.append("while IFS= read -r RUN_DIR; do")
        lines.append('  mkdir -p "$RUN_DIR"')
        lines.append(f'  {worker} >>"$RUN_DIR/stdout.log" 2>>"$RUN_DIR/stderr.log" &')
        lines.append("  step=$!")
        lines.append('  while wait "$step"; rc=$?; kill -0 "$step" 2>/dev/null; do :; done')
        lines.append('  [ "$rc" -eq 0 ] || exit "$rc"')
        lines.append(f"done < {q(manifest)}")
    else:
        if job.kind == "array":
            # read by bash itself: a `sed` costs each task a process start
            lines.append("# the task's run folder: line SLURM_ARRAY_TASK_ID+1 of the manifest")
            lines.append(f'mapfile -t -s "$SLURM_ARRAY_TASK_ID" -n 1 RUN_DIR < {q(manifest)}')
            lines.append('RUN_DIR=${RUN_DIR[0]:-}')
        else:
            lines.append(f"RUN_DIR=$(sed -n 1p {q(manifest)})")
        lines.append('[ -n "$RUN_DIR" ] || { echo "chester: no run folder for this task" >&2; '
                     'exit 2; }')
        lines.append('mkdir -p "$RUN_DIR" || exit 2')
        lines.append('exec >>"$RUN_DIR/stdout.log" 2>>"$RUN_DIR/stderr.log"')
        lines.extend(setup)
        lines.append(f"exec {worker}")  # the worker is the job's process: signals reach it
    return "\n".join(lines) + "\n"


#: sbatch's words for a per-user or per-account submit limit (each array task counts):
#: not transient, it lasts until queued jobs end
SUBMIT_LIMIT_RE = r"(QOS|Assoc)[A-Za-z]*Submit[A-Za-z]*Limit|job submit limit"


#: The sweep's secrets in its stage folder, read by the submit scripts only.
SECRETS_NAME = "secrets.sh"


def check_export(options: SlurmOptions, resources: Sequence[Mapping[str, Any]]) -> None:
    """With ``secrets``, the jobs get them through sbatch's exported environment: an
    ``--export`` other than ``ALL[,...]`` in the header or the sbatch options would keep
    them out; a :class:`UserError` at prepare says so."""
    texts = list((options.remote_header or "").splitlines())
    for res in resources:
        texts += [str(x) for x in (res.get("sbatch") or ())]
        texts += [str(x) for x in (res.get("gpu_sbatch") or ())]
    for text in texts:
        m = re.search(r"--export[= ]+(\S+)", text)
        if m and not m.group(1).startswith("ALL"):
            raise UserError(f"slurm: `{text.strip()}` keeps the environment from the jobs, "
                            "and `secrets` reach them through it: use --export=ALL[,...], or "
                            "drop secrets and set the values another way")


#: The supervisor job's files in the stage folder (see :mod:`chester_backend_slurm.supervisor`).
SUPERVISE_SCRIPT = "supervise.sbatch"
SUPERVISE_ID = "supervise.id"
#: The stage's submit lease: whoever holds it (a polling laptop, the supervisor) submits the
#: held-back jobs; the other reads what was submitted and leaves the rest waiting.
LEASE = ".submit.lease"
#: A lease older than this is a submitter that died holding it (a submit takes seconds).
LEASE_STALE_MIN = 10


def supervise_script(options: SlurmOptions, stage_dir: str, name: str, interval: float) -> str:
    """The supervisor job: one CPU, a few minutes at most per cycle, the account, partition
    and QOS of the runs (never their GPUs). It runs one cycle (``supervise.py``) and, while
    the sweep needs it, requeues itself: SLURM ends the cycle with TERM, and the trap sets
    the job's begin time ``interval`` seconds on (without it SLURM's own requeue delay
    applies, about two minutes). One job id, one submit slot for the whole sweep."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={_check_line('name', name)}",
             f"#SBATCH --output={_check_line('stage', stage_dir)}/supervise.out",
             "#SBATCH --open-mode=append", "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=1",
             "#SBATCH --time=5", "#SBATCH --requeue"]
    for key in ("partition", "account", "qos"):
        value = options.cpu_resources.get(key) or getattr(options, key)
        if value:
            lines.append(f"#SBATCH {_FLAGS[key]}={_check_line(key, value)}")
    wait = max(5, round(float(interval)))  # a node refuses a start within seconds of a requeue
    lines += [
        "set -u",
        f"cd {q(stage_dir)} || exit 1",
        "# SLURM ends this cycle with TERM once it took the requeue: the next begins later",
        f"trap 'scontrol update JobId=\"$SLURM_JOB_ID\" StartTime=now+{wait} >/dev/null 2>&1; "
        "exit 0' TERM",
        "py=$(command -v python3 || command -v python) || "
        '{ echo "chester: no python3 on $(hostname)" >&2; exit 1; }',
        '"$py" supervise.py "$PWD"',
        "rc=$?",
        f'if [ "$rc" -eq {AGAIN} ]; then',
        '  scontrol requeue "$SLURM_JOB_ID" || exit 1',
        "  sleep 300 & wait",
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


#: The supervisor's exit status for "the sweep needs another cycle".
AGAIN = 75


def _lease_lines(secrets: bool) -> list[str]:
    """Take the stage's submit lease (``mkdir``: atomic, also on NFS) or read only: a
    submitter that holds it submits; the other prints the jobs submitted so far and leaves
    the rest waiting (``WAIT K busy``)."""
    return ["busy=",
            f"if ! mkdir {LEASE} 2>/dev/null; then",
            f"  if [ -n \"$(find {LEASE} -maxdepth 0 -mmin +{LEASE_STALE_MIN} 2>/dev/null)\" ]"
            f"; then rmdir {LEASE} 2>/dev/null; mkdir {LEASE} 2>/dev/null || busy=1; "
            "else busy=1; fi",
            "fi",
            f"[ -n \"$busy\" ] || trap 'rmdir {LEASE} 2>/dev/null || true"
            + ("; drop_secrets" if secrets else "") + "' EXIT"]


def submit_script(jobs: Sequence[Job], stage_dir: str, prelude: Sequence[str] = (),
                  checks: Sequence[str] = (), secrets: bool = False, lease: bool = False,
                  supervise: str | None = None) -> str:
    """Bash run on the login host: ``checks`` first (the cluster's configuration), then
    ``prelude`` (the environment sync), then one ``sbatch`` per job, skipping jobs already
    submitted.

    A job counts as submitted when its id file exists or the scheduler knows its name (a
    submit that was cut off after ``sbatch`` and is being retried; the scheduler is asked
    only when a submit started in this stage folder before). Prints ``JOB <index> <job id>``
    lines. When sbatch refuses a job for a submit limit (``QOSMaxSubmitJobPerUserLimit``,
    ``AssocMaxSubmitJobLimit``, ...), that job and the ones after it are not submitted now:
    ``WAIT <index> <limit> <jobs of the user in the queue>`` lines, exit 0 (the same script,
    run again later, submits them). A job cancelled before it was submitted (``job-K.skip``)
    prints ``SKIP <index>``.

    With ``lease`` (the script that submits held-back jobs, run by polls and by the
    supervisor), only the holder of the stage's submit lease calls sbatch. With
    ``supervise`` (``"auto"`` or ``"on"``), the supervisor job is submitted before any run
    (so it never waits for the slot it supervises) with its first cycle an interval on;
    under ``"auto"`` it is cancelled again at the end when no job was held back (pending,
    it never ran: it cost nothing). ``SUPERVISE <job id>`` or ``SUPERVISE none <why>``.

    With ``secrets``, the stage's ``secrets.sh`` (mode 0600) is read into this shell and
    reaches the jobs through sbatch's exported environment (``--export=ALL``, SLURM's
    default; a requeued job keeps it). The file is removed when the script ends, whatever
    the outcome, unless a submit limit left jobs to submit later (the same script, run
    again, reads it then). So no file of secrets stays on the cluster once every job is in.
    """
    names = ",".join(j.name for j in jobs)
    head = ["set -euo pipefail"]
    read_secrets: list[str] = []
    if secrets:
        head += [f"secrets_file={q(f'{stage_dir}/{SECRETS_NAME}')}",
                 "# removed however this ends, unless jobs wait for room under a submit limit",
                 'drop_secrets() { [ -n "${limited:-}" ] || rm -f "$secrets_file"; }',
                 "trap drop_secrets EXIT"]
        read_secrets = ["# the secrets go to the jobs in sbatch's environment, not as a file",
                        'if [ -e "$secrets_file" ]; then set -a; . "$secrets_file"; set +a; fi',
                        'case "${SBATCH_EXPORT:-ALL}" in ALL*) ;; *) echo "chester: '
                        'SBATCH_EXPORT=$SBATCH_EXPORT on $(hostname) keeps the secrets from '
                        'the jobs: unset it for chester" >&2; exit 1 ;; esac']
    lines = [*head, *checks, *prelude, f"stage={q(stage_dir)}", 'cd "$stage"',
             *(_lease_lines(secrets) if lease else []), *read_secrets,
             "# a submit that ran before (a retry, a resumed launch) may have made jobs whose",
             "# ids it never wrote down: only then ask the scheduler for them by name",
             "known=",
             f"if [ -e .submit-started ]; then known=$(squeue -h -t all -o '%j %F' "
             f"--name={q(names)} 2>/dev/null || true); fi",
             ": > .submit-started",
             "lookup() { printf '%s\\n' \"$known\" | awk -v n=\"$1\" '$1 == n { print $2; exit }'; }",
             "limited=",
             "# sbatch refused for a submit limit: remember which, and how many jobs are queued",
             f"limit_of() {{ limited=$(grep -oE {q(SUBMIT_LIMIT_RE)} \"$1\" | head -n 1); "
             "limited=${limited// /_}; "
             'queued=$(squeue -h -r -u "$(id -un)" 2>/dev/null | wc -l); }']
    if lease:  # read only: as if every job not yet submitted waited for room
        lines.append('[ -z "$busy" ] || limited=busy')
    if supervise:
        lines += [
            "# the supervisor first: it holds one slot of a submit limit, never one it waits for",
            f"if [ ! -s {SUPERVISE_ID} ]; then",
            f"  if sup=$(sbatch --parsable --begin=now+{_begin(supervise)} {SUPERVISE_SCRIPT} "
            "2>sbatch.err); then",
            f"    printf '%s\\n' \"${{sup%%;*}}\" > {SUPERVISE_ID}",
            "  else echo \"SUPERVISE none $(tr '\\n ' '__' < sbatch.err | cut -c1-200)\"; fi",
            "fi"]
    for j in jobs:
        var = f"jid{j.index}"
        deps = [f'afterok:"$jid{j.after}"'] if j.after is not None else []
        deps += [f'afterany:"$jid{j.after_any}"'] if j.after_any is not None else []
        dep = f" --dependency={','.join(deps)}" if deps else ""
        ready = "".join(f' && [ -n "$jid{k}" ]' for k in (j.after, j.after_any)
                        if k is not None)
        lines += [
            f'{var}=""',
            f'if [ -e job-{j.index}.skip ]; then echo "SKIP {j.index}"; {var}=; else',
            f'if [ -s job-{j.index}.id ]; then {var}=$(cat job-{j.index}.id); '
            f'elif [ -n "$known" ]; then {var}=$(lookup {q(j.name)}); fi',
            f'if [ -z "${var}" ] && [ -z "$limited" ]{ready}; then',
            f'  if {var}=$(sbatch --parsable{dep} {j.script} 2>sbatch.err); then',
            f'    {var}=${{{var}%%;*}}; printf \'%s\\n\' "${var}" > job-{j.index}.id',
            f"  elif grep -qE {q(SUBMIT_LIMIT_RE)} sbatch.err; then limit_of sbatch.err; {var}=",
            "  else cat sbatch.err >&2; exit 1; fi",
            "fi",
            f'if [ -n "${var}" ]; then echo "JOB {j.index} ${var}"; '
            f'else echo "WAIT {j.index} ${{limited:-dependency}} ${{queued:-0}}"; fi',
            "fi",
        ]
    if supervise:
        mode = supervise.split(":", 1)[0]
        if mode == "auto":
            lines += ["# nothing held back: the supervisor is not needed (it never ran)",
                      f'if [ -z "$limited" ] && [ -s {SUPERVISE_ID} ] && '
                      f'[ ! -e supervise.jsonl ]; then',
                      f'  scancel "$(cat {SUPERVISE_ID})" 2>/dev/null && rm -f {SUPERVISE_ID} '
                      '&& echo "SUPERVISE none not needed"; fi']
        lines.append(f'if [ -s {SUPERVISE_ID} ]; then echo "SUPERVISE $(cat {SUPERVISE_ID})"; fi')
    return "\n".join(lines) + "\n"


def _begin(supervise: str) -> int:
    """``"auto:60"`` / ``"on:60"``: the first cycle's delay in seconds."""
    return max(1, round(float(supervise.split(":", 1)[1]))) if ":" in supervise else 60


def module_check_lines(modules: Sequence[str]) -> list[str]:
    """Submit-script lines: each module the jobs load must load on the login host too
    (exit 5 with one line naming it), checked where a module system is found (a login
    shell's ``/etc/profile`` defines ``module`` on most clusters); nothing is checked
    without one. All of it runs in a subshell: the submit's own environment (``PATH``,
    ``/etc/profile``'s settings) is unchanged."""
    if not modules:
        return []
    names = " ".join(q(_check_line("modules", m)) for m in modules)
    return [
        "# the modules the jobs load must load here too (in a subshell: nothing changes)",
        "( set +eu",
        "  type module >/dev/null 2>&1 || { [ -r /etc/profile ] && . /etc/profile; } "
        ">/dev/null 2>&1",
        "  type module >/dev/null 2>&1 || exit 0  # no module system here: nothing to check",
        f"  for m in {names}; do",
        '    module load "$m" >/dev/null 2>&1 || { echo "chester: module load $m failed on '
        '$(hostname) (check the name with: module avail $m)" >&2; exit 5; }',
        "  done ) || exit 5",
    ]


def job_name(tokens: Sequence[str], index: int) -> str:
    """A job name unique to these runs: a retried submit finds the job by it."""
    h = sha256("\0".join(sorted(tokens)).encode()).hexdigest()[:12]
    return f"chester-{h}-{index}"


def resource_key(res: Mapping[str, Any]) -> str:
    return json.dumps(res, sort_keys=True, default=repr)


def _throttle_chunks(n_chunks: int, throttle: int | None
                    ) -> list[tuple[int | None, int | None]]:
    """(``%K``, afterany chunk) for each chunk of one array, so that at most ``throttle``
    tasks of the whole array run at once: ``K`` is shared out among the chunks; with fewer
    than one per chunk, each chunk runs one task at a time and chunk ``i`` waits for chunk
    ``i - throttle`` to end."""
    if not throttle:
        return [(None, None)] * n_chunks
    if throttle >= n_chunks:
        base, extra = divmod(throttle, n_chunks)
        return [(base + (1 if i < extra else 0), None) for i in range(n_chunks)]
    return [(1, i - throttle if i >= throttle else None) for i in range(n_chunks)]


def plan_jobs(runs: Sequence[Any], resources: Sequence[Mapping[str, Any]],
              max_array_size: int, throttle: int | None = None) -> list[Job]:
    """Group runs into jobs.

    Runs with ``order_after`` get one job each, chained with ``afterok``; runs with the same
    ``serial_group`` resource share one job (steps in one allocation); the others go into
    arrays of equal resources, chunked so that no index reaches ``max_array_size``.
    """
    all_tokens = [r.token for r in runs]
    jobs: list[Job] = []
    by_token: dict[str, int] = {}

    def add(kind: str, members: list[int], res: Mapping[str, Any], after: int | None,
            throttle: int | None = None, after_any: int | None = None) -> None:
        idx = len(jobs)
        job = Job(index=idx, name=job_name(all_tokens, idx), kind=kind,
                  tokens=tuple(runs[i].token for i in members),
                  run_dirs=tuple(runs[i].remote_dir for i in members),
                  resources=res, after=after, throttle=throttle, after_any=after_any)
        jobs.append(job)
        for i in members:
            by_token[runs[i].token] = idx

    groups: dict[str, list[int]] = {}
    serial: dict[str, list[int]] = {}
    order: list[tuple[str, str]] = []
    depended_on = {t for r in runs for t in r.order_after}
    keys: dict[int, str] = {}  # resource_key of each distinct mapping, once
    for i, (r, res) in enumerate(zip(runs, resources, strict=True)):
        if "\n" in r.remote_dir:
            raise UserError(f"slurm: run folder {r.remote_dir!r} holds a newline")
        if r.order_after or r.token in depended_on:
            key = ("dep", str(i))
            order.append(key)
        elif res.get("serial_group") is not None:
            k = resource_key({**res, "serial_group": None}) + "|" + str(res["serial_group"])
            if k not in serial:
                serial[k] = []
                order.append(("serial", k))
            serial[k].append(i)
        else:
            k = keys.get(id(res)) or keys.setdefault(id(res), resource_key(res))
            if k not in groups:
                groups[k] = []
                order.append(("array", k))
            groups[k].append(i)
    size = max(1, int(max_array_size))  # indices 0..MaxArraySize-1
    for kind, k in order:
        if kind == "array":
            members = groups[k]
            starts = range(0, len(members), size)
            first = len(jobs)
            for (pct, any_of), start in zip(_throttle_chunks(len(starts), throttle), starts,
                                            strict=True):
                add("array", members[start:start + size], resources[members[0]], None,
                    pct, None if any_of is None else first + any_of)
        elif kind == "serial":
            members = serial[k]
            res = {kk: v for kk, v in resources[members[0]].items() if kk != "serial_group"}
            add("serial", members, res, None)
        else:
            i = int(k)
            after = by_token.get(runs[i].order_after[-1]) if runs[i].order_after else None
            add("single", [i], resources[i], after)
    return jobs
