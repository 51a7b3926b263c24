# A `mesh_region` job: one region of a segmentation's labels meshed, then its record.
from ngprecomputed.job import job
from ngprecomputed.meshes.jobs import region_job

plan = snakemake.params.plan
with job(snakemake.log[0], snakemake.resources.mem_mb, plan.dataset):
    region_job(
        plan,
        snakemake.params.meshes,
        snakemake.params.voxels,
        int(snakemake.wildcards.region),
        snakemake.params.root,
        snakemake.output[0],
        getattr(snakemake.input, "gzip_index", None),
    )
