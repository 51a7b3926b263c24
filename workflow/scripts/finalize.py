# A `finalize` job (a volume beyond job_voxels): its last stage if one slab, then info, last.
from pathlib import Path

from ngprecomputed.engine import finalize
from ngprecomputed.job import job

plan = snakemake.params.plan
with job(snakemake.log[0], snakemake.resources.mem_mb, plan.dataset):
    finalize(
        plan,
        Path(snakemake.params.root),
        snakemake.params.labels,
        getattr(snakemake.input, "gzip_index", None),
        Path(snakemake.params.scratch),
    )
