"""Exceptions shared by the core and every backend plugin."""

from __future__ import annotations


class ChesterError(Exception):
    """Base class of every error chester raises on purpose.

    ``str(err)`` is one line a user can act on; the CLI prints it and exits 2.
    """


class UserError(ChesterError):
    """Bad input from the user: config, arguments, variants. Exit status 2."""


class ConfigError(UserError):
    """A ``chester.yaml`` problem; the message names the file, the key and the fix."""

    def __init__(self, path: object, key: str | None, problem: str, fix: str | None = None):
        self.path = str(path) if path is not None else "<built-in defaults>"
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: {key}" if key else self.path
        msg = f"{where}: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class UnknownBackendError(UserError):
    """A backend name or type that no installed plugin provides."""


class PluginConflictError(ChesterError):
    """Two plugins claim one backend name."""


class HookNotImplementedError(ChesterError):
    """The backend that owns a run does not implement the hook that was called."""

    def __init__(self, backend: str, hook: str):
        super().__init__(f"backend {backend!r} does not implement {hook}")
        self.backend = backend
        self.hook = hook


class BackendError(ChesterError):
    """A permanent failure reported by a backend (auth failure, missing directory...).

    Never retried. The message names the backend and, where there is one, the host.
    """


class TransientBackendError(BackendError):
    """A failure that may go away when the call is repeated (dropped link, timeout).

    The dispatcher retries status, pull, cancel and logs on it. A submit is retried on it
    only when the backend declares ``idempotent_submit`` (it checks each run's token before
    starting it again).
    """


class ConnectError(TransientBackendError):
    """The target could not be reached *before* any side effect happened.

    Always safe to retry, submit included.
    """


class WaitTimeout(ChesterError, TimeoutError):
    """``Sweep.wait`` / ``chester monitor`` gave up after its timeout (runs still going)."""
