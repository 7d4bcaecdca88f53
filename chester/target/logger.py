"""``chester.logger``: the earlier chester's key/value logger (OpenAI baselines' design).

A run records diagnostics per iteration and writes them in every configured format::

    from chester import logger

    def train(variant, log_dir, exp_name):
        logger.configure(dir=log_dir, format_strs=["stdout", "log", "csv"])
        for epoch in range(3):
            logger.logkv("epoch", epoch)
            logger.logkv_mean("loss", 0.5)      # averaged over the calls of this iteration
            logger.dumpkvs()                    # one row / one table per call
        logger.log("done")
        logger.reset()

Formats (``format_strs``, else ``$OPENAI_LOG_FORMAT`` comma-separated, else
``stdout,log,csv``), written exactly as the earlier chester wrote them:

``stdout``       a table per ``dumpkvs()`` (keys sorted, floats ``%-8.3g``, names and values
                 over 33 characters cut to 30 + ``...``, a dashed rule holding the local time)
                 and each ``log()`` line
``log``          the same into ``<dir>/log.txt``
``csv``          ``<dir>/progress.csv``: a header of the keys in the order they first
                 appeared, one line per ``dumpkvs()``; a new key rewrites the header and pads
                 the earlier lines with commas; values are ``str(value)``, ``None`` is empty
``json``         ``<dir>/progress.json``: one JSON object per ``dumpkvs()``, keys in the order
                 they were logged (numpy scalars as floats)
``tensorboard``  ``<dir>/tb/events.out.tfevents.*``: one scalar per key at steps 1, 2, ...;
                 needs the ``tensorboard`` package (nothing else does)

``configure(dir=None)`` uses ``$OPENAI_LOGDIR``, else a new ``chester-<time>`` folder in the
temporary folder. Before ``configure`` (and after ``reset()``) the logger writes to stdout
only. ``record_tabular``/``dump_tabular`` are ``logkv``/``dumpkvs``; ``ProfileKV`` and
``@profile`` add the time spent in a block to ``wait_<name>``; ``read_json``/``read_csv``
(pandas) and ``read_tb`` (pandas, numpy, tensorboard) read the files back.

This module is in the runtime chester ships to targets: it imports the standard library only
(tensorboard, pandas and numpy when asked for, on the target).
"""

from __future__ import annotations

import datetime
import json
import os
import os.path as osp
import sys
import tempfile
import time
from collections import defaultdict
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

LOG_OUTPUT_FORMATS = ["stdout", "log", "csv"]
#: every format ``configure`` takes
FORMATS = ("stdout", "log", "csv", "json", "tensorboard")

DEBUG = 10
INFO = 20
WARN = 30
ERROR = 40
DISABLED = 50


class KVWriter:
    """A format that writes the key/value rows of ``dumpkvs``."""

    def writekvs(self, kvs: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SeqWriter:
    """A format that writes the lines of ``log``."""

    def writeseq(self, seq: Iterable[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def put_in_middle(str1: str, str2: str) -> str:
    """``str2`` written over the middle of ``str1`` (``str2`` alone when it is as long)."""
    n, m = len(str1), len(str2)
    if n <= m:
        return str2
    start = (n - m) // 2
    return str1[:start] + str2 + str1[start + m:]


def _timestamp() -> str:
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S.%f %Z")


class HumanOutputFormat(KVWriter, SeqWriter):
    """Tables and lines for people: a file name, an open file, or None for the standard
    output of the moment (so a run whose stdout is redirected later still writes there)."""

    def __init__(self, filename_or_file: str | IO[str] | None):
        self._file: IO[str] | None
        if isinstance(filename_or_file, str):
            self._file = open(filename_or_file, "w")  # noqa: SIM115 (closed by close())
            self.own_file = True
        else:
            if filename_or_file is not None and not hasattr(filename_or_file, "write"):
                raise TypeError(f"expected a file or a file name, got {filename_or_file!r}")
            self._file = filename_or_file
            self.own_file = False

    @property
    def file(self) -> IO[str]:
        return self._file if self._file is not None else sys.stdout

    def writekvs(self, kvs: dict) -> None:
        key2str = {}
        for key, val in sorted(kvs.items()):
            valstr = "%-8.3g" % (val,) if isinstance(val, float) else str(val)
            key2str[self._truncate(key)] = self._truncate(valstr)
        if not key2str:
            print("WARNING: tried to write empty key-value dict")
            return
        keywidth = max(map(len, key2str))
        valwidth = max(map(len, key2str.values()))
        dashes = "-" * (keywidth + valwidth + 7)
        lines = [put_in_middle(dashes, _timestamp())]
        for key, val in sorted(key2str.items()):
            lines.append("| %s%s | %s%s |" % (key, " " * (keywidth - len(key)), val,
                                              " " * (valwidth - len(val))))
        lines.append(dashes)
        self.file.write("\n".join(lines) + "\n")
        self.file.flush()

    @staticmethod
    def _truncate(s: str) -> str:
        return s[:30] + "..." if len(s) > 33 else s

    def writeseq(self, seq: Iterable[str]) -> None:
        f = self.file
        for arg in seq:
            f.write(arg)
        f.write("\n")
        f.flush()

    def close(self) -> None:
        if self.own_file and self._file is not None:
            self._file.close()


def _plain(value: Any) -> Any:
    """A numpy scalar (anything with a ``dtype``) as the float JSON can write."""
    if hasattr(value, "dtype"):
        value = value.tolist()
        return float(value) if not isinstance(value, list) else value
    return value


class JSONOutputFormat(KVWriter):
    """``progress.json``: one JSON object per row."""

    def __init__(self, filename: str):
        self.file = open(filename, "w")  # noqa: SIM115 (closed by close())

    def writekvs(self, kvs: dict) -> None:
        row = {k: _plain(v) for k, v in kvs.items()}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class CSVOutputFormat(KVWriter):
    """``progress.csv``: keys in the order they first appeared; a row written as soon as
    ``dumpkvs`` is called, the header rewritten when a key is new."""

    def __init__(self, filename: str):
        self.file = open(filename, "w+")  # noqa: SIM115 (closed by close())
        self.keys: list[str] = []
        self.sep = ","

    def writekvs(self, kvs: dict) -> None:
        extra_keys = [k for k in kvs if k not in self.keys]
        if extra_keys:
            self.keys.extend(extra_keys)
            self.file.seek(0)
            lines = self.file.readlines()
            self.file.seek(0)
            self.file.write(self.sep.join(self.keys) + "\n")
            for line in lines[1:]:
                self.file.write(line[:-1] + self.sep * len(extra_keys) + "\n")
            self.file.truncate()
        self.file.write(self.sep.join("" if kvs.get(k) is None else str(kvs[k])
                                      for k in self.keys) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardOutputFormat(KVWriter):
    """TensorBoard's event files under ``<dir>/tb``: each key a scalar, one step per row."""

    def __init__(self, dir: str):
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise ImportError("chester.logger: the 'tensorboard' format needs the tensorboard "
                              "package where the run runs (pip install tensorboard), or "
                              "leave it out of format_strs") from None
        os.makedirs(dir, exist_ok=True)
        self.dir = dir
        self.step = 1
        self._event, self._summary = Event, Summary
        self.writer: Any = EventFileWriter(osp.abspath(dir))

    def writekvs(self, kvs: dict) -> None:
        values = [self._summary.Value(tag=k, simple_value=float(v)) for k, v in kvs.items()
                  if v is not None]
        event = self._event(wall_time=time.time(), step=self.step,
                            summary=self._summary(value=values))
        self.writer.add_event(event)
        self.writer.flush()
        self.step += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def make_output_format(format: str, ev_dir: str, log_suffix: str = "") -> KVWriter:
    """The writer of one format (one of :data:`FORMATS`) into folder ``ev_dir``."""
    os.makedirs(ev_dir, exist_ok=True)
    if format == "stdout":
        return HumanOutputFormat(None)
    if format == "log":
        return HumanOutputFormat(osp.join(ev_dir, f"log{log_suffix}.txt"))
    if format == "json":
        return JSONOutputFormat(osp.join(ev_dir, f"progress{log_suffix}.json"))
    if format == "csv":
        return CSVOutputFormat(osp.join(ev_dir, f"progress{log_suffix}.csv"))
    if format == "tensorboard":
        return TensorBoardOutputFormat(osp.join(ev_dir, f"tb{log_suffix}"))
    raise ValueError(f"Unknown format specified: {format!r} (known: {', '.join(FORMATS)})")


# ================================================================ the API
def logkv(key: str, val: Any) -> None:
    """Record a value for this iteration (called again, the last value counts)."""
    Logger.CURRENT.logkv(key, val)


def logkv_mean(key: str, val: Any) -> None:
    """Like :func:`logkv`, but the values of this iteration's calls are averaged."""
    Logger.CURRENT.logkv_mean(key, val)


def logkvs(d: dict) -> None:
    """Record every key/value pair of ``d``."""
    for k, v in d.items():
        logkv(k, v)


def dumpkvs() -> None:
    """Write this iteration's values in every format and start the next iteration."""
    Logger.CURRENT.dumpkvs()


def getkvs() -> dict:
    """The values recorded so far in this iteration."""
    return Logger.CURRENT.name2val


def log(*args: Any, level: int = INFO) -> None:
    """Write ``args`` (no separators) to stdout and the ``log`` file, at or above the level."""
    Logger.CURRENT.log(*args, level=level)


def debug(*args: Any) -> None:
    log(*args, level=DEBUG)


def info(*args: Any) -> None:
    log(*args, level=INFO)


def warn(*args: Any) -> None:
    log(*args, level=WARN)


def error(*args: Any) -> None:
    log(*args, level=ERROR)


def set_level(level: int) -> None:
    """Log only messages at or above ``level`` (``DISABLED`` also stops ``dumpkvs``)."""
    Logger.CURRENT.set_level(level)


def get_dir() -> str | None:
    """The folder being written to (None before :func:`configure`)."""
    return Logger.CURRENT.get_dir()


record_tabular = logkv
dump_tabular = dumpkvs


class ProfileKV:
    """``with logger.ProfileKV("step"): ...`` adds the block's seconds to ``wait_step``."""

    def __init__(self, n: str):
        self.n = "wait_" + n

    def __enter__(self) -> None:
        self.t1 = time.time()

    def __exit__(self, *exc: object) -> None:
        Logger.CURRENT.name2val[self.n] += time.time() - self.t1


def profile(n: str) -> Callable[[Callable], Callable]:
    """``@logger.profile("step")``: each call's seconds added to ``wait_step``."""

    def decorator_with_name(func: Callable) -> Callable:
        def func_wrapper(*args: Any, **kwargs: Any) -> Any:
            with ProfileKV(n):
                return func(*args, **kwargs)

        return func_wrapper

    return decorator_with_name


# ================================================================ the logger
class Logger:
    """Values of the current iteration and the formats they are written in."""

    #: the logger with no files (stdout only): what the free functions use before configure
    DEFAULT: Logger
    #: the logger the free functions use
    CURRENT: Logger

    def __init__(self, dir: str | None, output_formats: list):
        self.name2val: dict[str, Any] = defaultdict(float)  # values this iteration
        self.name2cnt: dict[str, int] = defaultdict(int)
        self.level = INFO
        self.dir = dir
        self.output_formats = output_formats

    def logkv(self, key: str, val: Any) -> None:
        self.name2val[key] = val

    def logkv_mean(self, key: str, val: Any) -> None:
        if val is None:
            self.name2val[key] = None
            return
        oldval, cnt = self.name2val[key], self.name2cnt[key]
        self.name2val[key] = oldval * cnt / (cnt + 1) + val / (cnt + 1)
        self.name2cnt[key] = cnt + 1

    def dumpkvs(self) -> None:
        if self.level == DISABLED:
            return
        for fmt in self.output_formats:
            if isinstance(fmt, KVWriter):
                fmt.writekvs(self.name2val)
        self.name2val.clear()
        self.name2cnt.clear()

    def log(self, *args: Any, level: int = INFO) -> None:
        if self.level <= level:
            self._do_log(args)

    def set_level(self, level: int) -> None:
        self.level = level

    def get_dir(self) -> str | None:
        return self.dir

    def close(self) -> None:
        for fmt in self.output_formats:
            fmt.close()

    def _do_log(self, args: tuple) -> None:
        for fmt in self.output_formats:
            if isinstance(fmt, SeqWriter):
                fmt.writeseq(map(str, args))


Logger.DEFAULT = Logger.CURRENT = Logger(dir=None, output_formats=[HumanOutputFormat(None)])


def configure(dir: str | None = None, format_strs: list[str] | None = None,
              exp_name: str | None = None) -> None:
    """Write to folder ``dir`` in the formats ``format_strs`` from now on (see the module
    docstring for the defaults). ``exp_name`` is accepted as the earlier chester did."""
    if dir is None:
        dir = os.getenv("OPENAI_LOGDIR")
    if dir is None:
        dir = osp.join(tempfile.gettempdir(),
                       datetime.datetime.now().strftime("chester-%Y-%m-%d-%H-%M-%S"))
    dir = os.fspath(dir)
    if format_strs is None:
        strs = os.getenv("OPENAI_LOG_FORMAT")
        format_strs = strs.split(",") if strs else LOG_OUTPUT_FORMATS
    unknown = [f for f in format_strs if f not in FORMATS]
    if unknown:  # before anything is opened: a typo leaves no half-configured logger
        raise ValueError(f"chester.logger.configure: unknown format {unknown[0]!r} "
                         f"(known: {', '.join(FORMATS)})")
    os.makedirs(dir, exist_ok=True)
    output_formats = [make_output_format(f, dir) for f in format_strs]
    Logger.CURRENT = Logger(dir=dir, output_formats=output_formats)
    log("Logging to %s" % dir)


def reset() -> None:
    """Close the files and go back to the stdout-only logger."""
    if Logger.CURRENT is not Logger.DEFAULT:
        Logger.CURRENT.close()
        Logger.CURRENT = Logger.DEFAULT
        log("Reset logger")


class scoped_configure:
    """``with logger.scoped_configure(dir, format_strs): ...``: configure for the block,
    then back to the logger before it."""

    def __init__(self, dir: str | None = None, format_strs: list[str] | None = None):
        self.dir = dir
        self.format_strs = format_strs
        self.prevlogger: Logger | None = None

    def __enter__(self) -> None:
        self.prevlogger = Logger.CURRENT
        configure(dir=self.dir, format_strs=self.format_strs)

    def __exit__(self, *args: object) -> None:
        Logger.CURRENT.close()
        assert self.prevlogger is not None
        Logger.CURRENT = self.prevlogger


# ================================================================ readers
def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("chester.logger: reading the files back needs pandas "
                          "(pip install pandas)") from None
    return pandas


def read_json(fname: str) -> Any:
    """``progress.json`` as a pandas DataFrame."""
    pandas = _pandas()
    with open(fname) as fh:
        return pandas.DataFrame([json.loads(line) for line in fh])


def read_csv(fname: str) -> Any:
    """``progress.csv`` as a pandas DataFrame."""
    return _pandas().read_csv(fname, index_col=None, comment="#")


def read_tb(path: str) -> Any:
    """The scalars of a TensorBoard event file (or of every ``events.*`` file in a folder)
    as a pandas DataFrame, one row per step."""
    import glob

    import numpy as np

    pandas = _pandas()
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    if osp.isdir(path):
        fnames = glob.glob(osp.join(path, "events.*"))
    elif osp.basename(path).startswith("events."):
        fnames = [path]
    else:
        raise ValueError(f"expected a TensorBoard event file or a folder of them, got {path}")
    tag2pairs: dict[str, list[tuple[int, float]]] = defaultdict(list)
    maxstep = 0
    for fname in fnames:
        for event in EventFileLoader(fname).Load():
            if event.step > 0:
                for v in event.summary.value:
                    tag2pairs[v.tag].append((event.step, v.simple_value))
                maxstep = max(event.step, maxstep)
    data = np.empty((maxstep, len(tag2pairs)))
    data[:] = np.nan
    tags = sorted(tag2pairs)
    for colidx, tag in enumerate(tags):
        for step, value in tag2pairs[tag]:
            data[step - 1, colidx] = value
    return pandas.DataFrame(data, columns=tags)


__all__ = [
    "DEBUG", "DISABLED", "ERROR", "FORMATS", "INFO", "LOG_OUTPUT_FORMATS", "WARN",
    "CSVOutputFormat", "HumanOutputFormat", "JSONOutputFormat", "KVWriter", "Logger",
    "ProfileKV", "SeqWriter", "TensorBoardOutputFormat", "configure", "debug", "dump_tabular",
    "dumpkvs", "error", "get_dir", "getkvs", "info", "log", "logkv", "logkv_mean", "logkvs",
    "make_output_format", "profile", "put_in_middle", "read_csv", "read_json", "read_tb",
    "record_tabular", "reset", "scoped_configure", "set_level", "warn",
]
