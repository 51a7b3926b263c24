# A `reencode` job: a precomputed dataset (any writer's) re-encoded as its row says, info last.
from ngprecomputed.job import job
from ngprecomputed.reencode import reencode_as

dataset = snakemake.wildcards.dataset
with job(snakemake.log[0], snakemake.resources.mem_mb, dataset):
    reencode_as(
        snakemake.params.source,
        snakemake.params.root,
        snakemake.params.options,
        snakemake.threads,
    )
