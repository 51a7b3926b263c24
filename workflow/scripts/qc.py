# A `qc` job (a fanned-out or re-encoded dataset): its QC page, read back from what was written.
from pathlib import Path

from ngprecomputed.job import job
from ngprecomputed.report import write_qc

with job(snakemake.log[0], snakemake.resources.mem_mb, snakemake.wildcards.dataset):
    write_qc(Path(snakemake.params.root), Path(snakemake.output[0]))
