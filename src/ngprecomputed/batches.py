"""How a sheet's volumes become jobs: a dataset per job with its slabs in a pool, small datasets
many to a job, and only volumes beyond ``job_voxels`` fanned out over one job per slab.

Sizes are input voxels times channels, the unit of ``voxels_per_job`` (what one job holds in
memory at once: ``workers`` slabs of ``voxels_per_job / (2 workers)`` voxels, each worker's peak
about twice its slab: the slab, its coarser scales and temporaries).
"""

from dataclasses import dataclass, replace

from .errors import InputError
from .plan import Plan, make_plan
from .settings import Options

SLAB_SHARE = 2  # a worker's peak is about twice its slab (measured: 76 MiB for 32 M uint8)
SPLIT_VOXELS = 2**24  # a dataset alone in its job is cut into slabs above this (16 M voxels)
BATCH_DATASETS = 64  # small datasets in one job at most (a failure reruns them all)


@dataclass(frozen=True)
class Batch:
    """One job: its datasets (several only when each is one small slab), its workers."""

    name: str  # the first dataset's name: the job's manifest and rule are named for it
    datasets: tuple[str, ...]
    workers: int


def voxels_of(plan: Plan) -> int:
    x, y, z = plan.scales[0].size
    return x * y * z * plan.num_channels


def pooled_plan(dataset: str, source, opts: Options, cores: int) -> tuple[Plan, int]:
    """The plan of a dataset converted by one job of up to ``cores`` workers, and its workers:
    slabs of ``voxels_per_job / (SLAB_SHARE workers)`` voxels, so that the job holds about
    ``voxels_per_job`` at most (measured on the 555 M-voxel T1: 135 MiB for the job's processes
    with slabs of 2^25, 187 MiB with 2^26, no slower)."""
    plan = make_plan(dataset, source, opts)
    n = voxels_of(plan)
    if cores < 2 or (n <= SPLIT_VOXELS and plan.jobs == len(plan.stages)):
        return plan, 1  # one slab a stage: too small to be worth cutting
    per_slab = max(min(opts.voxels_per_job // (SLAB_SHARE * cores), -(-n // cores)), 1)
    plan = make_plan(dataset, source, replace(opts, voxels_per_job=per_slab))
    return plan, max(1, min(cores, max(st.count for st in plan.stages)))


def is_small(plan: Plan, opts: Options) -> bool:
    """Converted whole by one worker, beside other small datasets in the same job. Decided
    without the cores, so that a cluster job's own parse of the workflow finds the same jobs."""
    return voxels_of(plan) <= min(SPLIT_VOXELS, opts.voxels_per_job)


def make_batches(
    small: list[str], sizes: dict[str, int], cores: int, job_voxels: int
) -> list[Batch]:
    """Small datasets, in sheet order, grouped into jobs of at most ``job_voxels`` voxels and
    ``BATCH_DATASETS`` datasets, each job running ``cores`` of them at a time."""
    out: list[Batch] = []
    group: list[str] = []
    total = 0
    for name in small:
        if group and (total + sizes[name] > job_voxels or len(group) == BATCH_DATASETS):
            out.append(Batch(group[0], tuple(group), min(cores, len(group))))
            group, total = [], 0
        group.append(name)
        total += sizes[name]
    if group:
        out.append(Batch(group[0], tuple(group), min(cores, len(group))))
    return out


def plan_jobs(items, cores: int, job_voxels: int) -> tuple[dict[str, Plan], list[Batch]]:
    """Plans of the datasets ``items`` (name, source, options) and the jobs that convert them;
    a dataset in no job fans out (``job_voxels``). A dataset whose plan fails is left out: the
    plan checkpoint says why."""
    plans: dict[str, Plan] = {}
    batches: list[Batch] = []
    small: list[str] = []
    for name, source, opts in items:
        try:
            plan = make_plan(name, source, opts)
            if voxels_of(plan) <= job_voxels and is_small(plan, opts) and not opts.meshes:
                small.append(name)
            elif voxels_of(plan) <= job_voxels:
                plan, workers = pooled_plan(name, source, opts, cores)
                batches.append(Batch(name, (name,), workers))
            plans[name] = plan  # beyond job_voxels: no job of its own, it fans out
        except InputError:
            continue
    sizes = {name: voxels_of(plans[name]) for name in small}
    return plans, batches + make_batches(small, sizes, cores, job_voxels)
