"""``ngprecomputed stats``: what a sheet, a volume or a shape will make, before anything is
written: scales, chunk files and bytes, the pyramid jobs and their largest requests."""

from pathlib import Path

import numpy as np

from .errors import InputError
from .plan import chunk_counts, make_plan
from .resources import job_mem_mb, job_runtime_min
from .settings import Options, source_options
from .sources import open_source
from .sources.header import HeaderOnly


def _items(source: Path | None, shape, channels: int, dtype: str, voxel_mm: float, opts):
    if shape:
        header = HeaderOnly((*shape, channels), np.dtype(dtype), (voxel_mm,) * 3)
        return [("x".join(map(str, shape)), header, opts)]
    if source is None:
        raise InputError("stats: give a sample sheet, a volume file, or --shape")
    if Path(source).suffix == ".csv":
        from .sheet import load_sheet

        return [(d.name, d.path, d.options) for d in load_sheet(Path(source), opts)]
    return [(Path(source).name, source, opts)]


def print_stats(
    source: Path | None,
    shape=None,
    channels: int = 1,
    dtype: str = "uint8",
    voxel_mm: float = 1.0,
    type: str | None = None,
    voxels_per_job: int | None = None,
) -> None:
    """One line per scale of every dataset, then its pyramid jobs."""
    opts = Options(type=type, voxels_per_job=voxels_per_job)
    print(f"{'dataset':<24} {'scale':<28} {'size':<18} {'chunk':<14} {'files':>8} {'MiB':>10}")
    for name, src, o in _items(source, shape, channels, dtype, voxel_mm, opts):
        if not isinstance(src, HeaderOnly):
            src = open_source(src, **source_options(o))
        plan = make_plan(name, src, o)
        for row in chunk_counts(plan):
            size = "x".join(map(str, row["size"]))
            chunk = "x".join(map(str, row["chunk"]))
            print(
                f"{name:<24} {row['key']:<28} {size:<18} {chunk:<14} {row['files']:>8} "
                f"{row['bytes'] / 2**20:>10.1f}"
            )
        jobs = [(s, i) for s, stage in enumerate(plan.stages) for i in range(stage.count)]
        mem = max(job_mem_mb(plan, s, i) for s, i in jobs)
        runtime = max(job_runtime_min(plan, s, i) for s, i in jobs)
        print(
            f"{name:<24} {'(pyramid jobs)':<28} {plan.jobs} jobs, largest mem_mb {mem}, "
            f"runtime {runtime} min"
        )
