"""The remote layer: what every backend that runs code somewhere else shares.

Each idea lives here once and every backend composes it; no backend imports another
backend's plugin module. Importing this package (or any module of it) loads no boto3 or
rich: those are imported when a call needs them.

* :mod:`chester.remote.options` — option fields shared by the shell backends (the Python and
  package manager of the target, prepare commands, environment, secrets, containers), with
  one meaning on every backend;
* :mod:`chester.remote.shell` — package-manager setup, the environment file sourced before
  each run, secrets (read locally, sent as a 0600 file that is removed once read);
* :mod:`chester.remote.container` — Singularity/Apptainer wrapping of the worker command;
* :mod:`chester.remote.paths` — the run files a submit sends, what a pull never brings back,
  and local ↔ remote run-folder mapping;
* :mod:`chester.remote.codesync` — which project files travel and the rsync of them;
* :mod:`chester.remote.runtime` — chester's target-side runtime (worker, runner, target tools
  and cloudpickle) as one content-addressed zip, so the target needs no chester installed,
  and the check of the target's Python before anything is submitted;
* :mod:`chester.remote.follow` — following a log until its run ends;
* :mod:`chester.remote.progress` — progress bars for transfers (on a terminal only);
* :mod:`chester.remote.pulled` — the record of what each pull brought into a run's folder,
  so that no pull overwrites a file changed here since;
* :mod:`chester.remote.ssh` — the SSH transport (the system's OpenSSH: one master connection
  per operation that every command and rsync rides; host keys checked as ``ssh`` checks
  them).
"""
