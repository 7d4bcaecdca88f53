"""``array_throttle`` holds for the whole array, across its chunks (SLURM's ``%K`` is per
``sbatch``): the throttle is shared out among the chunks, or, with fewer than one per
chunk, the chunks run one task at a time and wait for each other (``afterany``)."""

from __future__ import annotations

import re

from chester_backend_slurm import render

from .test_render_golden import _backend, _runs, chester_prepare


def test_shares_of_the_throttle():
    assert render._throttle_chunks(2, 5) == [(3, None), (2, None)]
    assert render._throttle_chunks(3, 3) == [(1, None), (1, None), (1, None)]
    assert render._throttle_chunks(4, 2) == [(1, None), (1, None), (1, 0), (1, 1)]
    assert render._throttle_chunks(3, None) == [(None, None)] * 3


def test_chunks_of_one_array_share_the_throttle(tmp_path):
    backend = _backend({"max_array_size": 2, "array_throttle": 3, "remote_dir": "/s/p"})
    prepared = chester_prepare(backend, _runs(7, tmp_path), tmp_path / "a")
    arrays = [re.search(r"#SBATCH --array=(\S+)", prepared.scripts[f"job-{k}.sbatch"]).group(1)
              for k in range(4)]
    assert arrays == ["0-1%1", "0-1%1", "0-1%1", "0-0%1"]
    submit = prepared.scripts["submit.sh"]
    assert '--dependency=afterany:"$jid0" job-3.sbatch' in submit
    assert submit.count("afterany") == 1

    wide = chester_prepare(_backend({"max_array_size": 2, "array_throttle": 5,
                                     "remote_dir": "/s/p"}), _runs(4, tmp_path), tmp_path / "b")
    got = [re.search(r"#SBATCH --array=(\S+)", wide.scripts[f"job-{k}.sbatch"]).group(1)
           for k in range(2)]
    assert got == ["0-1%3", "0-1%2"] and "afterany" not in wide.scripts["submit.sh"]
