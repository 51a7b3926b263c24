"""What a job asks the scheduler for (``mem_mb``, ``runtime``), computed from its slab.

Both grow with Snakemake's ``attempt`` so that a retry (``retries`` in the SLURM profile) asks
for more than the attempt the scheduler killed.
"""

import numpy as np

from .chunks import voxels
from .plan import Plan

_BASELINE_MB = 160  # Python, numpy, nibabel
# Slowest measured throughput of a pyramid job (compressed_segmentation mode pyramids, png
# stacks: 30-60 M voxels/s on this project's 2-core benchmark machine), with room for a busy
# cluster node and a slow shared filesystem.
_VOXELS_PER_S = 5e6
_MIN_RUNTIME_MIN = 10


def job_mem_mb(plan: Plan, stage_index: int, slab_index: int, attempt: int = 1) -> int:
    """Peak memory of one pyramid job: its input box as read, a converted copy when the type
    changes, the coarser scales it makes (at most 1/4 of the box with their temporaries), and
    the interpreter; half as much again for every retry."""
    stage = plan.stages[stage_index]
    n = voxels(plan.input_box(stage_index, slab_index)) * plan.num_channels
    stored = np.dtype(plan.data_type).itemsize
    read = stored
    if stage.first == 0:
        read = 8 if plan.scaled else np.dtype(plan.source_dtype).itemsize
    converted = stored if (stage.first == 0 and (read != stored or plan.rescale)) else 0
    peak = n * (read + converted + stored / 4)
    return int((_BASELINE_MB + peak / 2**20 * 1.2) * (1 + 0.5 * (attempt - 1)))


def job_runtime_min(plan: Plan, stage_index: int, slab_index: int, attempt: int = 1) -> int:
    """Wall-time limit of one pyramid job in minutes, doubled for every retry."""
    n = voxels(plan.input_box(stage_index, slab_index)) * plan.num_channels
    minutes = _MIN_RUNTIME_MIN + int(np.ceil(n / _VOXELS_PER_S / 60))
    return minutes * 2 ** (attempt - 1)


# On a cluster each job's allocation also holds the Snakemake that runs the job there
# (`python -m snakemake --executor slurm-jobstep`, which parses this workflow again): measured
# 178 MiB peak (Snakemake 9.27, this workflow); a SLURM that enforces memory counts it.
IN_JOB_SNAKEMAKE_MB = 250

# Small jobs: planning reads a header; the gzip index keeps a few seek points per 4 MiB.
SMALL_JOB_MEM_MB = 200
_GZIP_BYTES_PER_S = 20e6  # compressed bytes decompressed per second, with room


def gzip_index_runtime_min(compressed_bytes: int, attempt: int = 1) -> int:
    """Wall-time limit of indexing a gzip source (one pass of decompression)."""
    minutes = _MIN_RUNTIME_MIN + int(np.ceil(compressed_bytes / _GZIP_BYTES_PER_S / 60))
    return minutes * 2 ** (attempt - 1)


def _largest_job_mb(plan: Plan, attempt: int) -> int:
    return max(job_mem_mb(plan, s, 0, attempt) for s in range(len(plan.stages)))


def pooled_mem_mb(plans: list[Plan], workers: int, qc: bool, attempt: int = 1) -> int:
    """Peak memory of a job that converts ``plans`` with ``workers`` forked workers: each holds
    one slab (of the largest datasets when they are many); its QC page after."""
    from .qc import qc_mem_mb

    largest = sorted((_largest_job_mb(p, attempt) for p in plans), reverse=True)[:workers]
    work = sum(largest) if len(plans) > 1 else _largest_job_mb(plans[0], attempt) * workers
    return work + (qc_mem_mb(attempt=attempt) if qc else 0)


def pooled_runtime_min(plans: list[Plan], workers: int, attempt: int = 1) -> int:
    """Wall-time limit of such a job: its slabs' times shared by the workers."""
    minutes = sum(
        job_runtime_min(p, s, i) - _MIN_RUNTIME_MIN
        for p in plans
        for s, stage in enumerate(p.stages)
        for i in range(stage.count)
    )
    return (_MIN_RUNTIME_MIN + -(-minutes // max(workers, 1))) * 2 ** (attempt - 1)
