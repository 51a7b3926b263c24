"""The end-of-run summary reads the job logs of this run only."""

import os
import time

from ngprecomputed.summary import failures


def test_failures_name_dataset_and_message_of_this_run_only(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "plan.log").write_text("t INFO fine\nt ERROR dataset a: x.nii: truncated\n")
    old = tmp_path / "b" / "plan.log"
    old.write_text("t ERROR dataset b: old failure\n")
    os.utime(old, (0, 0))
    (tmp_path / "b" / "stage0_slab0.log").write_text("t INFO all good\n")
    lines = failures(tmp_path, since=time.time() - 60)
    assert len(lines) == 1 and lines[0].startswith("a: dataset a: x.nii: truncated")
