# A `meshes` job: every segment's manifest and mesh/info from the regions' records, then its own.
from ngprecomputed.job import job
from ngprecomputed.meshes.jobs import meshes_job

plan = snakemake.params.plan
with job(snakemake.log[0], snakemake.resources.mem_mb, plan.dataset):
    meshes_job(
        plan,
        snakemake.params.meshes,
        snakemake.params.voxels,
        snakemake.params.regions,
        snakemake.params.root,
        snakemake.output[0],
        snakemake.params.colon,
    )
