# A `pyramid` job (a volume beyond job_voxels): one slab of one stage, then its manifest.
from pathlib import Path

from ngprecomputed.errors import naming
from ngprecomputed.job import job
from ngprecomputed.pyramid import build_slab

plan = snakemake.params.plan
with job(snakemake.log[0], snakemake.resources.mem_mb, plan.dataset), naming(plan.dataset):
    build_slab(
        plan,
        Path(snakemake.params.root),
        int(snakemake.wildcards.stage),
        int(snakemake.wildcards.slab),
        manifest=Path(snakemake.output[0]),
        gzip_index=getattr(snakemake.input, "gzip_index", None),
        scratch=Path(snakemake.params.scratch),
        decompressed=getattr(snakemake.input, "decompressed", None),
        threads=snakemake.threads,
    )
