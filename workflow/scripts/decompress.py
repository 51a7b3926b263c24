# A `decompress` job: a .gz source decompressed once for the cube slabs of a sharded dataset.
from pathlib import Path

from ngprecomputed.job import job
from ngprecomputed.sources.volume import decompress

dataset = snakemake.wildcards.dataset
with job(snakemake.log[0], snakemake.resources.mem_mb, dataset):
    decompress(Path(snakemake.params.source), Path(snakemake.output[0]))
