# A `volumes` job: its datasets converted (ngprecomputed.engine), then its manifest, last.
from pathlib import Path

from ngprecomputed.engine import convert_all
from ngprecomputed.job import job

with job(snakemake.log[0], snakemake.resources.mem_mb):
    convert_all(
        snakemake.params.works,
        snakemake.threads,
        manifest=Path(snakemake.output.manifest),
        qc=Path(snakemake.output.qc),
    )
