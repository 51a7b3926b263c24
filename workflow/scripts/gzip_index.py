# A `gzip_index` job: a .gz source decompressed once, its seek points exported.
from pathlib import Path

from ngprecomputed.job import job
from ngprecomputed.sources.volume import build_gzip_index

dataset = snakemake.wildcards.dataset
with job(snakemake.log[0], snakemake.resources.mem_mb, dataset):
    build_gzip_index(Path(snakemake.params.source), Path(snakemake.output[0]))
