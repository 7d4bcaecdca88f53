"""chester's logging before and after someone configures it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys
from chester.logs import configure, get_logger
log = get_logger()
log.info("step one", n=1)
print("structlog loaded:", "structlog" in sys.modules, flush=True)
log.warning("careful", n=2)
configure(level="info")
log.info("step two", n=3)
"""


def test_unconfigured_logging_shows_warnings_only_and_configure_shows_more():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "structlog loaded: False"
    assert "step one" not in res.stderr
    assert "careful" in res.stderr and "n=2" in res.stderr
    assert "step two" in res.stderr and "n=3" in res.stderr


def test_an_application_that_configures_structlog_gets_chester_s_info_lines():
    script = ("import structlog, sys\n"
              "structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stdout))\n"
              "from chester.logs import get_logger\n"
              "get_logger().info('launched', runs=3)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "launched" in res.stdout and "runs=3" in res.stdout


def test_a_pending_warning_threshold_drops_info_without_setting_structlog_up():
    script = ("import sys\n"
              "from chester.logs import configure_lazily, get_logger\n"
              "configure_lazily(level='warning')\n"
              "log = get_logger()\n"
              "log.info('quiet', n=1)\n"
              "print('structlog loaded:', 'structlog' in sys.modules, flush=True)\n"
              "log.warning('loud', n=2)\n"
              "log.info('still quiet', n=3)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "structlog loaded: False"
    assert "loud" in res.stderr and "quiet" not in res.stderr
