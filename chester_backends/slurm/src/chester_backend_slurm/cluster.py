"""What a submit asks of the cluster's configuration: the ``scontrol show config`` step that
opens the submit script, and its answer read back. Apart from :mod:`.scheduler` (which
keeps these names too), so a launch does not import the status side to submit.
"""

from __future__ import annotations

import re
import shlex

#: what the submit script exits with when the arrays were cut for another MaxArraySize
EXIT_RECHUNK = 3
_CLUSTER_PREFIX = "CLUSTER "


def cluster_check_lines(expected_max_array_size: int | None) -> list[str]:
    """Shell lines that open the submit script: print what we use of ``scontrol show
    config`` (``CLUSTER`` lines: MaxArraySize, MinJobAge, accounting), and, when the arrays
    were cut for an assumed MaxArraySize, stop before any ``sbatch`` if the cluster's
    differs (exit :data:`EXIT_RECHUNK`). A failed ``scontrol``, or an answer without
    MaxArraySize, stops the script too (exit 1, with scontrol's own message on stderr).
    One ``scontrol`` and one ``awk``: the login host starts as few processes as it can."""
    want = "" if expected_max_array_size is None else str(int(expected_max_array_size))
    program = ("/^(MaxArraySize|MinJobAge|MaxJobCount|AccountingStorageType) / "
               f'{{ print "{_CLUSTER_PREFIX}" $0 }} '
               '$1 == "MaxArraySize" { size = $3 } '
               'END { if (size == "") exit 1; '
               f'if (want != "" && size != want) exit {EXIT_RECHUNK} }}')
    return [f"scontrol show config | awk -v want={want or chr(39) * 2} {shlex.quote(program)}"]


def cluster_info_of(stdout: str) -> dict[str, int]:
    """The ``CLUSTER`` lines of a submit script's output, parsed."""
    return parse_cluster_info("\n".join(line[len(_CLUSTER_PREFIX):]
                                        for line in stdout.splitlines()
                                        if line.startswith(_CLUSTER_PREFIX)))


def parse_cluster_info(text: str) -> dict[str, int]:
    """The numbers we use from ``scontrol show config``; ``accounting`` is 0 or 1."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"(\w+)\s*=\s*(\S+)", line.strip())
        if not m:
            continue
        if m.group(1) == "AccountingStorageType":
            out["accounting"] = 0 if m.group(2).endswith("/none") else 1
        elif m.group(2).isdigit():
            out[m.group(1)] = int(m.group(2))
    return out
