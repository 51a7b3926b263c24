# A `surfaces` job: mesh files tied to segments by the row's mesh table, then its record.
from ngprecomputed.job import job
from ngprecomputed.meshes.jobs import surfaces_job

plan = snakemake.params.plan
with job(snakemake.log[0], snakemake.resources.mem_mb, plan.dataset):
    surfaces_job(
        plan,
        snakemake.params.table,
        snakemake.params.root,
        snakemake.output[0],
        snakemake.params.colon,
    )
