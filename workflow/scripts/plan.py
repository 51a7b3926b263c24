# The `plan` checkpoint: a dataset whose source did not exist (or could not be read) when the
# workflow was parsed, planned now from its header.
from ngprecomputed.job import job
from ngprecomputed.plan import plan_dataset

dataset = snakemake.wildcards.dataset
with job(snakemake.log[0], snakemake.resources.mem_mb, dataset):
    plan_dataset(dataset, snakemake.params.source, snakemake.params.options).save(
        snakemake.output[0]
    )
