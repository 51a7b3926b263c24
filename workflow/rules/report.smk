# QC: one page per volume dataset, read back from what was written; `snakemake --report`
# shows them under "QC", one subcategory per dataset.
from ngprecomputed.qc import qc_mem_mb, qc_runtime_min


rule qc:
    input:
        info=RESULTS / "{dataset}" / "info",
    output:
        report(
            WORK / "{dataset}" / "qc" / "{dataset}.html",
            caption="../report/qc.rst",
            category="QC",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}"},
        ),
    log:
        LOGS / "{dataset}" / "qc.log",
    benchmark:
        LOGS / "{dataset}" / "qc.tsv"
    wildcard_constraints:
        dataset=names_regex(FANNED + REENCODED),
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=lambda w, attempt: in_job_mb() + qc_mem_mb(attempt=attempt),
        runtime=lambda w, attempt: qc_runtime_min(scale0_voxels(w.dataset), attempt),
    params:
        root=lambda w: RESULTS / w.dataset,
    script:
        "../scripts/qc.py"
