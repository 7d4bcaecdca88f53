"""Option fields the shell backends share, so a key means the same on every backend.

A backend's options class inherits the groups it supports (attrs collects fields along the
class's MRO)::

    @attrs.frozen(kw_only=True)
    class MyOptions(EnvOptions, SecretsOptions, ContainerOptions):
        host: str = attrs.field(...)

Imports nothing heavy: ``chester plugins list`` loads every options class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

PACKAGE_MANAGERS = ("uv", "conda", "python")
CONTAINER_RUNTIMES = ("apptainer", "singularity")


def check_package_manager(inst: object, attr: attrs.Attribute, value: str | None) -> None:
    if value is not None and value not in PACKAGE_MANAGERS:
        raise ValueError(f"{attr.name} must be uv, conda or python, not {value!r}")


def _check_runtime(inst: object, attr: attrs.Attribute, value: str) -> None:
    if value.rstrip("/").rsplit("/", 1)[-1] not in CONTAINER_RUNTIMES:
        raise ValueError(f"container runtime must be apptainer or singularity, not {value!r}")


def str_tuple(value: Any) -> tuple[str, ...]:
    """A list of strings; the seed's single string (``"a b"`` or ``"a"``) is accepted."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split() if v) if " " in value.strip() else (value,)
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class Container:
    """A Singularity/Apptainer image the worker runs in (``container:`` of a backend)."""

    image: str = attrs.field(metadata={"help": "image file (.sif/.simg) or URI on the target"})
    binds: tuple[str, ...] = attrs.field(default=(), converter=str_tuple, metadata={
        "help": "extra bind mounts (src[:dst[:opts]]); the project and run folders are "
                "always bound"})
    nv: bool | None = attrs.field(default=None, metadata={
        "help": "pass --nv (NVIDIA GPUs); default: when the run asks for GPUs"})
    runtime: str = attrs.field(default="apptainer", validator=_check_runtime, metadata={
        "help": "apptainer or singularity (a name on PATH or a path to one)"})
    options: tuple[str, ...] = attrs.field(default=(), converter=str_tuple, metadata={
        "help": "more options for `exec`, e.g. ['--cleanenv']"})


@attrs.frozen(kw_only=True, slots=False)  # a mixin: several may be combined
class EnvOptions:
    """How the target gets its Python and environment."""

    python: str = attrs.field(default="python3", metadata={
        "help": "Python on the target (it needs only the project's own dependencies: chester "
                "brings its runtime)"})
    package_manager: str | None = attrs.field(default=None, validator=check_package_manager, metadata={
        "help": "uv, conda or python (default: the top-level package_manager)"})
    prepare_commands: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "shell lines run before each run (after the top-level ones)"})
    prepare_script: str | None = attrs.field(default="prepare.sh", metadata={
        "help": "file under remote_dir sourced before each run when it exists"})
    env: Mapping[str, str] = attrs.field(factory=dict, metadata={
        "help": "environment variables set for every run"})


@attrs.frozen(kw_only=True, slots=False)  # a mixin: several may be combined
class SecretsOptions:
    """Values that reach the runs without being written into the project."""

    secrets: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "names of local environment variables, or paths of local KEY=VALUE files, "
                "whose values reach the runs through a 0600 file removed once read (never a "
                "command line; a file named here is never synced)"})


@attrs.frozen(kw_only=True, slots=False)  # a mixin: several may be combined
class ContainerOptions:
    """Run the worker inside a Singularity/Apptainer image.

    ``container`` is the option; ``use_singularity``/``simg_path``/``remote_mount_option``/
    ``singularity_command`` are the earlier chester's keys and map onto it.
    """

    container: Container | None = attrs.field(default=None, metadata={
        "help": "run inside an image: {image: PATH, binds: [...], nv: true|false, "
                "runtime: apptainer|singularity, options: [...]}"})
    use_singularity: bool = attrs.field(default=False, metadata={
        "help": "seed: run inside simg_path"})
    simg_path: str | None = attrs.field(default=None, metadata={
        "help": "seed: Singularity/Apptainer image (with use_singularity)"})
    remote_mount_option: str | tuple[str, ...] | None = attrs.field(
        default=(), converter=str_tuple, metadata={
            "help": "seed: bind mounts (src[:dst]) added to the run and project folders"})
    singularity_command: str = attrs.field(default="singularity", metadata={
        "help": "seed: singularity or apptainer (with use_singularity)"})


__all__ = ["CONTAINER_RUNTIMES", "PACKAGE_MANAGERS", "Container", "ContainerOptions", "check_package_manager", "str_tuple",
           "EnvOptions", "SecretsOptions"]
