# An `annotations` job: a points table or a tractogram as a precomputed annotation collection.
from pathlib import Path

from ngprecomputed.annotations.convert import convert
from ngprecomputed.job import job

p = snakemake.params
folder = Path(snakemake.output[0]).parent
with job(snakemake.log[0], snakemake.resources.mem_mb, snakemake.wildcards.dataset):
    convert(p.kind, snakemake.input.source, folder, p.segmentation, p.sharded, p.scratch)
