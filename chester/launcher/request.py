"""A launch as a validated request: every argument of :func:`chester.launch`, checked before
anything is written (a bad one leaves nothing behind), and ``resume`` as a :class:`Resume`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from chester.plugin.errors import UserError


class Resume(enum.Enum):
    """What running a launch again does (``chester.launch(..., resume=...)``).

    A launch that stopped while submitting is completed by running it again, never
    duplicated, whatever the mode but ``NEW``.
    """

    #: ``"auto"`` (the default): reattach to the latest launch of the same variants when
    #: what runs (the function or command, and the project's code) is unchanged — nothing
    #: runs; when it changed, a new launch ``PREFIX@N+1``
    AUTO = "auto"
    #: ``True``: reattach to the latest launch of the same variants, whatever runs now
    VARIANTS = "variants"
    #: ``False``: always a new launch with new numbered runs
    NEW = "new"
    #: ``"incomplete"``: reattach only to a launch that stopped while submitting, else a new
    #: launch (the seed API and Hydra: each completed invocation launches anew)
    INCOMPLETE = "incomplete"
    #: ``"retry"``: reattach on the variants and submit its ``lost`` runs again
    RETRY = "retry"
    #: ``"retry-failed"``: also its failed, timed-out and out-of-memory runs, with the
    #: function as it is now
    RETRY_FAILED = "retry-failed"

    @classmethod
    def of(cls, value: Any) -> Resume:
        """The mode for a ``resume=`` value: a :class:`Resume`, ``True``, ``False`` or one
        of the strings ``"auto"``, ``"incomplete"``, ``"retry"``, ``"retry-failed"``."""
        if isinstance(value, cls):
            return value
        if value is True:
            return cls.VARIANTS
        if value is False:
            return cls.NEW
        if isinstance(value, str) and value in _BY_TEXT:
            return _BY_TEXT[value]
        raise UserError("resume must be 'auto', 'incomplete', 'retry', 'retry-failed', True or "
                        f"False, not {value!r}")

    @property
    def retries(self) -> bool:
        return self in (Resume.RETRY, Resume.RETRY_FAILED)


_BY_TEXT = {"auto": Resume.AUTO, "incomplete": Resume.INCOMPLETE, "retry": Resume.RETRY,
            "retry-failed": Resume.RETRY_FAILED}


# -- validators: the checks a launch makes before it writes anything -------------------------
def _name(what: str, *, path: bool = False) -> Callable[[Any, Any, Any], None]:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        from chester.variants.naming import check_name

        check_name(what, value, path=path)
    return check


def _optional_path(_inst: Any, _attr: Any, value: Any) -> None:
    from chester.variants.naming import check_path

    if value is not None:
        check_path("log_dir", value)


def _names(_inst: Any, _attr: Any, value: list[str] | None) -> None:
    from chester.variants.naming import check_name

    for n in value or ():
        check_name("exp_name", n, cleaned=True)


def _dirs(_inst: Any, _attr: Any, value: list[Any] | None) -> None:
    from chester.variants.naming import check_path

    for d in value or ():
        check_path("run_dirs entry", d)


def _env(_inst: Any, _attr: Any, env: dict[Any, Any]) -> None:
    for k, val in env.items():
        if not isinstance(k, str) or not isinstance(val, str):
            raise UserError(f"env must map strings to strings, got {k!r}: {val!r}")
        if not k or "=" in k or "\0" in k or "\0" in val:
            raise UserError(f"env name {k!r} is not a valid environment variable name")
        try:
            (k + val).encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"env {k!r} holds a character an environment cannot carry "
                            "(a lone surrogate)") from None


def _order(_inst: Any, _attr: Any, value: str) -> None:
    if value not in ("parallel", "dependent"):
        raise UserError(f"order must be 'parallel' or 'dependent', not {value!r}")


def _resources(_inst: Any, _attr: Any, value: Any) -> None:
    if value is None or isinstance(value, Mapping):
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise UserError("resources must be one mapping, or one mapping per variant, not "
                        f"{type(value).__name__}")


def _resume(value: Any) -> Resume:
    return Resume.of(value)


def _listed(value: Any) -> list[Any] | None:
    return None if value is None else list(value)


def _dict(value: Any) -> dict[Any, Any]:
    return dict(value or {})


def _tupled(value: Any) -> tuple[Any, ...]:
    return tuple(value or ())


@attrs.frozen(kw_only=True)
class LaunchRequest:
    """Every argument of one launch, validated (see :func:`chester.launch` for each one's
    meaning). Build it with :meth:`of`, which also turns a command given as an argv list or
    a string into a :class:`~chester.target.command.Command`; the variants are expanded and
    checked against the other arguments (one name, folder and resources entry each, string
    keys, what a command can take) when the request is made.

    ``take_over`` is for the surfaces whose ecosystem reuses fixed run folders (the seed
    API's ``log_dir``/``exp_name``, Hydra's sweep folder): their runs take over the folders
    of earlier runs that ended. ``surface`` names the caller in the lines a launch prints
    (``"script"``, ``"cli"``, ``"seed"``, ``"hydra"``).
    """

    fn: Callable[..., Any] = attrs.field()
    variants: Any
    backend: str = "local"
    exp_prefix: str = attrs.field(default="experiment", validator=_name("exp_prefix"))
    sub_dir: str = attrs.field(default="train", validator=_name("sub_dir", path=True))
    log_dir: str | os.PathLike[str] | None = attrs.field(default=None,
                                                         validator=_optional_path)
    order: str = attrs.field(default="parallel", validator=_order)
    resume: Resume = attrs.field(default=Resume.AUTO, converter=_resume)
    env: dict[str, str] = attrs.field(factory=dict, converter=_dict, validator=_env)
    variations: list[str] | None = attrs.field(default=None, converter=_listed)
    exp_names: list[str] | None = attrs.field(default=None, converter=_listed,
                                              validator=_names)
    run_dirs: list[str | os.PathLike[str]] | None = attrs.field(default=None,
                                                                converter=_listed,
                                                                validator=_dirs)
    extra_pull_dirs: tuple[str, ...] = attrs.field(default=(), converter=_tupled)
    resources: Any = attrs.field(default=None, validator=_resources)
    dry_run: bool = False
    config: Any = None
    dispatcher: Any = None
    take_over: bool = False
    surface: str = "script"
    #: what tells each variant apart when the launch is compared with earlier ones (one per
    #: variant; default: the variant itself). Hydra's launcher gives each job's overrides:
    #: its composed config holds the time the multirun started (OmegaConf's resolver cache).
    variant_keys: list[Any] | None = attrs.field(default=None, converter=_listed)
    #: the variants as a list of dicts (expanded when the request is made)
    vlist: list[dict[str, Any]] = attrs.field(init=False, repr=False)
    #: one resources mapping per variant
    res_list: list[dict[str, Any]] = attrs.field(init=False, repr=False)

    @fn.validator
    def _callable(self, _attr: Any, value: Any) -> None:
        if not callable(value):
            raise UserError("launch() needs a callable fn(variant, log_dir, exp_name) or a "
                            "command (an argv list or a string)")

    def __attrs_post_init__(self) -> None:
        from chester.variants import expand

        vlist = expand(self.variants)
        for v in vlist:
            bad = [k for k in v if not isinstance(k, str)]
            if bad:
                raise UserError(f"variant keys must be strings, got {bad[0]!r}")
        object.__setattr__(self, "vlist", vlist)
        self._check_command()
        for what, given in (("exp_names", self.exp_names), ("run_dirs", self.run_dirs),
                            ("variant_keys", self.variant_keys)):
            if given is not None and len(given) != len(vlist):
                unit = {"exp_names": "names", "run_dirs": "folders"}.get(what, "keys")
                raise UserError(f"{what} has {len(given)} {unit} for {len(vlist)} variants")
        object.__setattr__(self, "res_list", self._per_variant_resources())

    def _check_command(self) -> None:
        """A variant the command cannot take fails here, before any submit."""
        from chester.target.command import Command, CommandError

        if not isinstance(self.fn, Command):
            return
        for i, v in enumerate(self.vlist):
            try:
                self.fn.check(v, "LOG_DIR", "EXP_NAME")
            except CommandError as exc:
                raise UserError(f"variant {i + 1} of {len(self.vlist)}: {exc}") from None

    def _per_variant_resources(self) -> list[dict[str, Any]]:
        n = len(self.vlist)
        if isinstance(self.resources, Mapping) or self.resources is None:
            out = [dict(self.resources or {})] * n
        else:
            try:
                out = [dict(r) for r in self.resources]
            except (TypeError, ValueError):
                raise UserError("resources must be one mapping, or one mapping per variant, "
                                f"not {type(self.resources).__name__}") from None
            if len(out) != n:
                raise UserError(f"resources has {len(out)} entries for {n} variants")
        for r in out:
            bad = [k for k in r if not isinstance(k, str)]
            if bad:
                raise UserError(f"resources keys must be strings, got {bad[0]!r}")
        return out

    @classmethod
    def of(cls, fn: Any, variants: Any, *, args_style: str = "argparse",
           hydra_flags: Mapping[str, Any] | None = None, run_args: bool = True,
           **options: Any) -> LaunchRequest:
        """The request for ``launch(fn, variants, **options)``: a command given as an argv
        list or a string becomes a :class:`~chester.target.command.Command` (``args_style``,
        ``hydra_flags`` and ``run_args`` apply to commands only)."""
        from chester.target.command import Command, CommandError

        if isinstance(fn, (str, list, tuple)):
            try:
                fn = Command(fn, args_style, hydra_flags=hydra_flags, run_args=run_args)
            except CommandError as exc:
                raise UserError(str(exc)) from None
        elif (args_style != "argparse" or hydra_flags) and not isinstance(fn, Command):
            raise UserError("args_style= and hydra_flags= apply to commands (an argv list "
                            "or a string), not to a function")
        return cls(fn=fn, variants=variants, **options)

    @property
    def is_command(self) -> bool:
        from chester.target.command import Command

        return isinstance(self.fn, Command)


__all__ = ["LaunchRequest", "Resume"]
