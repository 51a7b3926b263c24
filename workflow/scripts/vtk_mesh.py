# A `vtk_mesh` job: one mesh file as Neuroglancer's VTK mesh.
from ngprecomputed.job import job
from ngprecomputed.meshes.jobs import vtk_job

dataset = snakemake.wildcards.dataset
with job(snakemake.log[0], snakemake.resources.mem_mb, dataset):
    vtk_job(snakemake.input[0], snakemake.output[0], dataset)
