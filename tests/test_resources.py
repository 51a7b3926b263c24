"""What jobs ask the scheduler for follows from their slab, and grows on a retry."""

import numpy as np

from ngprecomputed.plan import make_plan
from ngprecomputed.resources import job_mem_mb, job_runtime_min
from ngprecomputed.settings import Options
from ngprecomputed.sources.header import HeaderOnly


def plan_of(side, dtype="uint8", voxels_per_job=2**27):
    source = HeaderOnly((side, side, side, 1), np.dtype(dtype), (0.1, 0.1, 0.1))
    return make_plan("v", source, Options(voxels_per_job=voxels_per_job))


def test_memory_follows_the_slab_not_the_volume():
    small, huge = plan_of(1024), plan_of(8192)
    assert job_mem_mb(huge, 0, 0) <= job_mem_mb(small, 0, 0) * 1.1
    assert job_mem_mb(plan_of(1024, "float32"), 0, 0) > 2 * job_mem_mb(small, 0, 0)
    # bytes the slab reads alone (2^27 voxels of uint8: 128 MiB) fit inside what is asked
    assert job_mem_mb(small, 0, 0) * 1e6 > 2**27


def test_retries_ask_for_more():
    plan = plan_of(1024)
    assert job_mem_mb(plan, 0, 0, attempt=2) == int(job_mem_mb(plan, 0, 0) * 1.5) or (
        job_mem_mb(plan, 0, 0, attempt=2) > job_mem_mb(plan, 0, 0)
    )
    assert job_runtime_min(plan, 0, 0, attempt=3) == 4 * job_runtime_min(plan, 0, 0)
