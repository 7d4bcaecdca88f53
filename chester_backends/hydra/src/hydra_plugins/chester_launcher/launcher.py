"""``ChesterLauncher``: Hydra's launcher interface on top of :func:`chester.launch`.

Each job of a multirun becomes one chester run whose folder is the job's Hydra output folder
(``hydra.sweep.dir``/``hydra.sweep.subdir``). The job's config is composed here, as Hydra's
own launchers compose it, and travels in the run's payload; on the target the run calls
Hydra's ``run_job`` with it and leaves the ``JobReturn`` in the run folder
(``chester_job_return.pkl``), which comes home with the run and is returned to Hydra. A run
that ends without one (cancelled, killed, lost) returns a failed ``JobReturn`` that says
why. Jobs run wherever the backend runs them; hydra-core and this plugin must be importable
there, as chester is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

#: The file in each run folder that holds the job's pickled ``JobReturn``.
RETURN_FILE = "chester_job_return.pkl"


class ChesterJobFailed(RuntimeError):
    """A job's chester run ended without a result (cancelled, killed, lost, ...)."""


class JobRunner:
    """What each chester run calls: run one Hydra job from its composed config."""

    def __init__(self, hydra_context: HydraContext, task_function: TaskFunction,
                 singleton_state: dict[Any, Any]):
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.singleton_state = singleton_state

    def __call__(self, variant: dict[str, Any], log_dir: str, exp_name: str) -> None:
        import cloudpickle
        from hydra.core.utils import run_job

        Singleton.set_state(self.singleton_state)
        setup_globals()
        config: DictConfig = variant["hydra_config"]
        out = Path(log_dir)
        with read_write(config.hydra), open_dict(config.hydra):
            # the job's output folder is the run's folder, wherever that is on the target
            config.hydra.sweep.dir = str(out.parent)
            config.hydra.sweep.subdir = out.name
            config.hydra.job.id = os.environ.get("SLURM_JOB_ID") or exp_name
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                      config=config, job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")
        tmp = out / f".{RETURN_FILE}.{os.getpid()}"
        try:
            data = cloudpickle.dumps(ret)
        except Exception as exc:  # an unpicklable return value: keep the status, say why
            ret.return_value = None if ret.status == JobStatus.COMPLETED else \
                RuntimeError(f"the job's result could not be pickled: {exc}")
            data = cloudpickle.dumps(ret)
        tmp.write_bytes(data)
        os.replace(tmp, out / RETURN_FILE)
        if ret.status == JobStatus.FAILED:  # the run fails too, with the job's traceback
            raise ret._return_value


class ChesterLauncher(Launcher):
    def __init__(self, backend: str = "local", exp_prefix: str | None = None,
                 resources: Any = None, env: Any = None, timeout: float | None = None,
                 poll_interval: float | None = None) -> None:
        self.backend = backend
        self.exp_prefix = exp_prefix
        self.resources = _plain(resources) or {}
        self.env = {str(k): str(v) for k, v in (_plain(env) or {}).items()}
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.hydra_config import HydraConfig
        from hydra.errors import CompactHydraException

        from chester.launcher.launching import LaunchRequest, run_request, say
        from chester.plugin.errors import ChesterError
        from chester.variants.naming import safe_component

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        prefix = safe_component(self.exp_prefix or str(self.config.hydra.job.name))
        log.info(f"Launching {len(job_overrides)} jobs as chester runs on backend "
                 f"{self.backend!r} (sweep {prefix!r})")
        variants: list[dict[str, Any]] = []
        dirs: list[str] = []
        names: list[str] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            shown = " ".join(filter_overrides(overrides))
            log.info(f"\t#{idx} : {shown}")
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                    list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            HydraConfig.instance().set_config(cfg)
            subdir = str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
            dirs.append(str(sweep_dir / subdir))
            names.append(safe_component(f"{prefix}_{idx}_{shown}" if shown else
                                        f"{prefix}_{idx}"))
            variants.append({"job_num": idx, "overrides": list(overrides),
                             "hydra_config": cfg})
        HydraConfig.instance().set_config(self.config)
        runner = JobRunner(self.hydra_context, self.task_function, Singleton.get_state())
        # as Hydra's own launchers: each multirun launches anew into its output folders,
        # taking over those of earlier runs that ended (a multirun stopped half-way is
        # completed, never run twice); a folder whose run is still going is one line
        request = LaunchRequest.of(runner, variants, backend=self.backend, exp_prefix=prefix,
                                   run_dirs=dirs, exp_names=names, env=self.env,
                                   resources=self.resources, resume="incomplete",
                                   take_over=True, surface="hydra",
                                   variant_keys=[v["overrides"] for v in variants])
        try:
            sweep = run_request(request)
        except ChesterError as exc:
            raise CompactHydraException(f"chester: {exc}") from exc
        say(sweep.notices)
        sweep.wait(timeout=self.timeout, poll_interval=self.poll_interval, pull=True)
        return [_job_return(row, v["overrides"])
                for row, v in zip(sorted(sweep.rows(), key=lambda r: r.idx), variants,
                                  strict=True)]


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return dict(value) if value else value


def _job_return(row: Any, overrides: list[str]) -> JobReturn:
    import cloudpickle

    path = Path(row.local_dir) / RETURN_FILE
    if path.exists():
        with open(path, "rb") as f:
            ret = cloudpickle.load(f)
        if isinstance(ret, JobReturn):
            _home(ret, str(row.remote_dir), str(row.local_dir))
            return ret
    why = f"chester run {row.name} ended {row.state.value} without a result"
    if row.reason:
        why += f": {row.reason}"
    if row.stderr_tail:
        why += "\n" + "\n".join(row.stderr_tail.splitlines()[-10:])
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    ret.return_value = ChesterJobFailed(why)
    ret.status = JobStatus.FAILED
    return ret


def _home(ret: JobReturn, there: str, here: str) -> None:
    """Point the job's output folder at the local copy of the run (it ran in ``there``)."""
    if there == here:
        return
    if ret.working_dir == there:
        ret.working_dir = here
    cfg = ret.hydra_cfg
    if cfg is not None and OmegaConf.select(cfg, "hydra.runtime.output_dir") == there:
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = here
