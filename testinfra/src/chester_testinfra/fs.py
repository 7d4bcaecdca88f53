"""File systems that fail for real: a tiny tmpfs that fills up, a read-only bind mount, and
a process that cannot override file permissions although it runs as root.

Each mount is undone when its ``with`` block ends, also when the test fails. Without root
(or without ``mount``/``setpriv``) the helpers skip, or fail under ``CI=true``
(:func:`chester_testinfra.skip_or_fail`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from chester_testinfra import skip_or_fail

#: ``setpriv`` arguments that run a command as root without the capabilities that let root
#: ignore file modes: a 0444 file is then read-only to it, as to its owner
NO_DAC_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                   "--inh-caps=-dac_override,-dac_read_search"]


def _need(*binaries: str) -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root (mounts)")
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        skip_or_fail(f"needs {', '.join(missing)}")


def _umount(path: Path) -> None:
    r = subprocess.run(["umount", str(path)], capture_output=True, text=True)
    if r.returncode != 0:  # still busy (a process of a failed test): detach it
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (made if missing)."""
    _need("mount", "umount")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        _umount(path)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder`` until at most ``leave`` bytes are free."""
    st = os.statvfs(folder)
    want = max(0, st.f_bavail * st.f_frsize - leave)
    chunk = b"\0" * 65536
    fd = os.open(Path(folder) / ".filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while want > 0 or leave == 0:
            try:
                n = os.write(fd, chunk[:max(1, min(len(chunk), want))] if leave else chunk)
            except OSError:
                if leave or len(chunk) == 1:
                    break
                chunk = chunk[:max(1, len(chunk) // 16)]  # the last few blocks
                continue
            want -= n
    finally:
        os.close(fd)


def unfill(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (Path(folder) / ".filler").unlink()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (a folder) made read-only in place by a read-only bind mount of itself."""
    _need("mount", "umount")
    path = Path(path)
    r = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        skip_or_fail(f"cannot bind-mount here: {r.stderr.strip()}")
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            skip_or_fail(f"cannot remount read-only here: {r.stderr.strip()}")
        yield path
    finally:
        _umount(path)


def without_dac_override() -> list[str]:
    """The prefix (:data:`NO_DAC_OVERRIDE`) that runs a command as root that file modes
    bind; skips when ``setpriv`` is missing or not root."""
    _need("setpriv")
    return list(NO_DAC_OVERRIDE)
