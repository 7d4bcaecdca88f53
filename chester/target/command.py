"""Command runs: a program run once per variant, its variant given as arguments.

``chester.launch(["python", "train.py"], vg, args_style="hydra")`` makes each run a
:class:`Command`: it travels in the run's payload exactly as a function does, and the worker
calls it like one, so every backend runs commands unchanged. How a variant becomes
arguments:

``"argparse"``  ``--key value`` per variant key (``--key=value`` when the value starts with
                ``-``, so argparse never takes it for an option), then ``--log_dir DIR
                --exp_name NAME`` as the earlier chester passed them to scripts.
``"hydra"``     the ``hydra_flags`` (``True`` → ``--flag``, else ``--flag=value``), then
                ``key=value`` overrides (nested dicts as ``a.b=value``), then
                ``hydra.run.dir=DIR`` so Hydra writes into the run folder. Each value is
                written so that Hydra's override parser reads back exactly that value
                (:func:`chester.hydra_grammar.hydra_value`).
``"template"``  no arguments added: ``{key}`` placeholders in the command's elements are
                filled from the variant and ``{log_dir}``, ``{exp_name}``.

``run_args=False`` leaves out the run folder arguments. Each value is one argv element,
exactly (strings as they are; other values as text, lists and dicts as JSON in
``argparse`` style; in Hydra's override grammar in ``hydra`` style); nothing is given to a
shell. The command runs in the project folder with ``CHESTER_LOG_DIR``,
``CHESTER_EXP_NAME`` and ``CHESTER_PROJECT_DIR`` set; a leading ``python``/``python3`` is
the worker's own interpreter (the backend's configured Python). Its output goes to the
run's ``stdout``/``stderr``; a non-zero exit fails the run with that exit status.

This module runs on every target: it imports nothing outside the standard library and
:mod:`chester.target.hydra_grammar` and :mod:`chester.target.attrdict`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import string
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from chester.target.attrdict import MARKERS
from chester.target.hydra_grammar import HYDRA_KEY, KEY_PART, GrammarError, hydra_value

STYLES = ("argparse", "hydra", "template")
#: Variant keys the earlier chester used as markers (``is_debug`` too); never arguments.
_MARKERS = (*MARKERS, "is_debug")


class CommandError(ValueError):
    """The command or its argument style cannot make an argv for a variant."""


class CommandFailed(Exception):
    """The command ended with a non-zero exit status (or a signal)."""

    def __init__(self, returncode: int, command: str):
        self.returncode = returncode
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = str(-returncode)
            reason = f"command `{command}` was killed by {name}"
        else:
            reason = f"command `{command}` exited with status {returncode}"
        super().__init__(reason)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _hydra_key(key: str) -> str:
    if not HYDRA_KEY.fullmatch(key):
        raise CommandError(f"the variant key {key!r} is not a Hydra override key (letters, "
                           "digits, _ - $, dots between parts, an optional leading + ++ or ~, "
                           "group/name, @package); rename it")
    return key


def _hydra_overrides(prefix: str, value: Any) -> list[str]:
    """``prefix=value``; a non-empty dict whose keys are names is given key by key
    (``model.depth=50``: Hydra merges a dict given whole, so it is the same), unless the key
    is a deletion, a config group or a package (``~x``, ``a/b``, ``x@pkg``)."""
    if isinstance(value, Mapping) and value and prefix[:1] != "~" \
            and not any(c in prefix for c in "/@") \
            and all(isinstance(k, str) and KEY_PART.fullmatch(k) for k in value):
        out: list[str] = []
        for k, v in value.items():
            out += _hydra_overrides(f"{prefix}.{k}", v)
        return out
    return [f"{prefix}={hydra_value(value)}"]


def _identity(value: Any) -> Any:
    """A hashable stand-in for ``value`` that tells apart what Hydra tells apart: types (``1``,
    ``1.0`` and ``True`` differ), floats by ``repr`` (``-0.0``, NaN), lists and dicts by their
    items in order."""
    if isinstance(value, float):
        return (float, repr(value))
    if isinstance(value, (list, tuple)):
        return (list, tuple(_identity(v) for v in value))
    if isinstance(value, Mapping):
        return (dict, tuple((_identity(k), _identity(v)) for k, v in value.items()))
    if value is None or isinstance(value, (str, bool, int)):
        return (type(value), value)
    return (type(value), repr(value))


def argv_problem(text: str) -> str | None:
    """What in ``text`` no command-line argument can carry (None when it can): a NUL ends
    a C string, and a lone surrogate has no bytes (the bytes of a ``bytes`` value, which
    arrive as surrogate escapes, do)."""
    if "\0" in text:
        return "a NUL character (\\x00)"
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate ({text[exc.start]!r})"
    return None


class _Fields(dict):
    def __missing__(self, key: str) -> Any:
        raise CommandError(f"the command's placeholder {{{key}}} names no variant key "
                           f"(keys: {', '.join(sorted(self)) or 'none'})")


class Command:
    """A command to run once per variant (see the module docstring)."""

    __slots__ = ("argv", "args_style", "hydra_flags", "run_args", "texts")

    def __init__(self, argv: str | Sequence[str], args_style: str = "argparse", *,
                 hydra_flags: Mapping[str, Any] | None = None, run_args: bool = True,
                 texts: Mapping[str, Sequence[tuple[Any, str]]] | None = None):
        """``texts`` (what ``chester launch`` keeps as typed): for a variant key, pairs of a
        value and the exact text the program receives for it (after ``key=``, or after
        ``--key``); a value not listed is written as the style writes it. A key listed here
        is one override whatever its value (a dict is not given key by key)."""
        if isinstance(argv, str):
            argv = shlex.split(argv)
        argv = list(argv)
        if not argv or not all(isinstance(a, str) for a in argv):
            raise CommandError("a command is a non-empty list of strings (or one string, "
                               f"split as a shell would split it), not {argv!r}")
        if args_style not in STYLES:
            raise CommandError(f"args_style must be one of {', '.join(STYLES)}, "
                               f"not {args_style!r}")
        if hydra_flags and args_style != "hydra":
            raise CommandError("hydra_flags applies only with args_style='hydra'")
        self.argv = argv
        self.args_style = args_style
        self.hydra_flags = dict(hydra_flags or {})
        self.run_args = bool(run_args)
        self.texts = None if texts is None else \
            {str(k): {_identity(v): str(t) for v, t in pairs} for k, pairs in texts.items()}

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict) -> None:
        for k in self.__slots__:
            setattr(self, k, state.get(k))

    def _typed(self, key: str, value: Any) -> str | None:
        """The text given for ``value`` of ``key`` in ``texts``, if any."""
        given = self.texts.get(key) if self.texts else None
        return given.get(_identity(value)) if given else None

    def __repr__(self) -> str:
        return f"Command({shlex.join(self.argv)!r}, args_style={self.args_style!r})"

    def build(self, variant: Mapping[str, Any], log_dir: str, exp_name: str | None) -> list[str]:
        """The argv for one run."""
        items = [(str(k), v) for k, v in variant.items() if k not in _MARKERS]
        if self.args_style == "template":
            fields = _Fields({k: _text(v) for k, v in items})
            fields.update(log_dir=str(log_dir), exp_name=str(exp_name or ""))
            fmt = string.Formatter()
            out = []
            for a in self.argv:
                try:
                    out.append(fmt.vformat(a, (), fields))
                except (ValueError, IndexError) as exc:
                    raise CommandError(f"bad placeholder in command element {a!r}: {exc} "
                                       "(write {{ and }} for literal braces)") from None
            return out
        argv = list(self.argv)
        texts = self.texts or {}
        if self.args_style == "argparse":
            for k, v in items:
                text = self._typed(k, v) if k in texts else None
                if text is None:
                    text = _text(v)
                argv += [f"--{k}={text}"] if text.startswith("-") else [f"--{k}", text]
            if self.run_args:
                argv += ["--log_dir", str(log_dir), "--exp_name", str(exp_name or "")]
            return argv
        for flag, v in self.hydra_flags.items():
            if v is True:
                argv.append(f"--{flag}")
            elif v is not False and v is not None:
                argv.append(f"--{flag}={_text(v)}")
        try:
            for k, v in items:
                if k in texts:
                    text = self._typed(k, v)
                    argv.append(f"{_hydra_key(k)}={hydra_value(v) if text is None else text}")
                else:
                    argv += _hydra_overrides(_hydra_key(k), v)
            if self.run_args:
                argv.append(f"hydra.run.dir={hydra_value(str(log_dir))}")
        except GrammarError as exc:
            raise CommandError(str(exc)) from None
        return argv

    def check(self, variant: Mapping[str, Any], log_dir: str, exp_name: str | None) -> None:
        """Raise :class:`CommandError` naming the key when an element of the variant's argv
        holds what no argument can carry (:func:`argv_problem`)."""
        for element in self.build(variant, log_dir, exp_name):
            problem = argv_problem(element)
            if problem is None:
                continue
            key = next((str(k) for k, v in variant.items() if k not in _MARKERS
                        and any(argv_problem(t) for t in (str(k), _text(v),
                                                          *_hydra_overrides(str(k), v)))),
                       None)
            where = f"the value of {key!r}" if key is not None else \
                f"the command's argument {element[:60]!r}"
            raise CommandError(f"{where} holds {problem}, which no command-line argument can "
                               "carry; remove it from the value (a function run gets any "
                               "value exactly)")

    def __call__(self, variant: Mapping[str, Any], log_dir: str, exp_name: str | None) -> None:
        argv = self.build(variant, log_dir, exp_name)
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = dict(os.environ)
        env.update(CHESTER_LOG_DIR=str(log_dir), CHESTER_EXP_NAME=str(exp_name or ""))
        project = env.get("CHESTER_PROJECT_DIR")
        cwd = project if project and os.path.isdir(project) else None
        sys.stdout.flush()
        sys.stderr.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:  # the worker was told to stop: stop the command too
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if code:
            shown = shlex.join(self.argv)
            raise CommandFailed(code, shown if len(shown) <= 200 else shown[:197] + "...")
