"""What a job asks the scheduler for, computed from its slab (not guessed)."""

import numpy as np

from .chunks import voxels
from .plan import Plan

_BASELINE_MB = 160  # Python, numpy, nibabel


def job_mem_mb(plan: Plan, stage_index: int, slab_index: int) -> int:
    """Peak memory of one pyramid job: its input box as read, a converted copy when the type
    changes, the coarser scales it makes (at most 1/4 of the box with their temporaries), and
    the interpreter."""
    stage = plan.stages[stage_index]
    n = voxels(plan.input_box(stage_index, slab_index)) * plan.num_channels
    stored = np.dtype(plan.data_type).itemsize
    read = stored
    if stage.first == 0:
        read = 8 if plan.scaled else np.dtype(plan.source_dtype).itemsize
    converted = stored if (stage.first == 0 and (read != stored or plan.rescale)) else 0
    peak = n * (read + converted + stored / 4)
    return int(_BASELINE_MB + peak / 2**20 * 1.2)
