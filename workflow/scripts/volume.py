# A `volume` job: one dataset converted, its slabs in the job's threads (ngprecomputed.engine).
from ngprecomputed.engine import convert
from ngprecomputed.job import job

(work,) = snakemake.params.works
with job(snakemake.log[0], snakemake.resources.mem_mb, work.plan.dataset):
    convert(work, snakemake.threads)
