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
        mem_mb=qc_job_mem_mb,
        runtime=qc_job_runtime_min,
    params:
        root=dataset_root,
    script:
        "../scripts/qc.py"
