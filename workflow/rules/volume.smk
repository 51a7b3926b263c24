# Volumes. A dataset is one `volumes` job (its slabs in parallel), small ones many to a job.
# A volume beyond `job_voxels` fans out: [gzip index] -> pyramid stages, slab by slab -> last
# stage + info, written last; every such job plans the dataset again from the header.


rule volume:
    # one dataset: its slabs in workers, then its info (and QC page) last
    input:
        unpack(job_inputs),
    output:
        **(
            {
                "qc": report(
                    WORK / "{dataset}" / "qc" / "{dataset}.html",
                    caption="../report/qc.rst",
                    category="QC",
                    subcategory="{dataset}",
                    labels={"dataset": "{dataset}"},
                )
            }
            if config["qc"]
            else {}
        ),
        info=RESULTS / "{dataset}" / "info",
    log:
        LOGS / "{dataset}" / "job.log",
    benchmark:
        LOGS / "{dataset}" / "job.tsv"
    wildcard_constraints:
        dataset=names_regex(BATCH_OF),
    conda:
        "../envs/ngprecomputed.yaml"
    threads: job_workers
    resources:
        mem_mb=job_mem_mb_of,
        runtime=job_runtime_min_of,
    params:
        works=job_works,
    script:
        "../scripts/volume.py"


rule volumes:
    # small datasets, many to a job, `threads` at a time; a dataset that fails leaves the others
    # done (their info is theirs, not the job's output) and says why in its own log
    input:
        unpack(job_inputs),
    output:
        manifest=WORK / "jobs" / "{batch}.json",
        qc=report(
            directory(WORK / "jobs" / "{batch}" / "qc"),
            patterns=["{name}.html"],
            caption="../report/qc.rst",
            category="QC",
            subcategory="{name}",
            labels={"dataset": "{name}"},
        ),
    log:
        LOGS / "{batch}" / "job.log",
    benchmark:
        LOGS / "{batch}" / "job.tsv"
    wildcard_constraints:
        batch=names_regex(SHARED),
    conda:
        "../envs/ngprecomputed.yaml"
    threads: job_workers
    resources:
        mem_mb=job_mem_mb_of,
        runtime=job_runtime_min_of,
    params:
        works=job_works,
    script:
        "../scripts/volumes.py"


checkpoint plan:
    # Only needed for a dataset whose header could not be read when the workflow was parsed:
    # its source is made by another rule (planned once it exists), or it is unreadable (the
    # job fails with the one-line reason; the other datasets go on with --keep-going).
    input:
        source=dataset_source,
    output:
        WORK / "{dataset}" / "plan.json",
    log:
        LOGS / "{dataset}" / "plan.log",
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=small_job_mem_mb,
        runtime=10,
    params:
        source=source_spec,
        options=dataset_options,
    script:
        "../scripts/plan.py"


rule gzip_index:
    input:
        source=dataset_source,
    output:
        WORK / "{dataset}" / "source.gzidx",
    log:
        LOGS / "{dataset}" / "gzip_index.log",
    benchmark:
        LOGS / "{dataset}" / "gzip_index.tsv"
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=small_job_mem_mb,
        runtime=source_pass_runtime_min,
    params:
        source=source_spec,
    script:
        "../scripts/gzip_index.py"


rule decompress:
    input:
        source=dataset_source,
    output:
        temp(WORK / "{dataset}" / "source.raw"),
    log:
        LOGS / "{dataset}" / "decompress.log",
    benchmark:
        LOGS / "{dataset}" / "decompress.tsv"
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=small_job_mem_mb,
        runtime=source_pass_runtime_min,
    params:
        source=source_spec,
    script:
        "../scripts/decompress.py"


rule pyramid:
    input:
        unpack(pyramid_inputs),
    output:
        WORK / "{dataset}" / "stage{stage}" / "slab{slab}.json",
    log:
        LOGS / "{dataset}" / "stage{stage}_slab{slab}.log",
    benchmark:
        LOGS / "{dataset}" / "stage{stage}_slab{slab}.tsv"
    conda:
        "../envs/ngprecomputed.yaml"
    # the slab is the job's only work: two threads encode and write its chunks
    threads: min(2, workflow.cores)
    resources:
        mem_mb=slab_mem_mb,
        runtime=slab_runtime_min,
    params:
        plan=plan_param,
        root=dataset_root,
        scratch=dataset_scratch,
    script:
        "../scripts/pyramid.py"


rule finalize:
    input:
        unpack(finalize_inputs),
    output:
        info=RESULTS / "{dataset}" / "info",
        transform=RESULTS / "{dataset}" / "transform.json",
    log:
        LOGS / "{dataset}" / "finalize.log",
    benchmark:
        LOGS / "{dataset}" / "finalize.tsv"
    wildcard_constraints:
        dataset=names_regex(FANNED),
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=last_stage_mem_mb,
        runtime=last_stage_runtime_min,
    params:
        plan=plan_param,
        root=dataset_root,
        scratch=dataset_scratch,
        labels=dataset_labels,
    script:
        "../scripts/finalize.py"


rule reencode:
    input:
        info=precomputed_info,
    output:
        info=RESULTS / "{dataset}" / "info",
    log:
        LOGS / "{dataset}" / "reencode.log",
    # A sheet row whose path is a precomputed dataset: its chunks, re-encoded, in parallel.
    wildcard_constraints:
        dataset=names_regex(REENCODED),
    conda:
        "../envs/ngprecomputed.yaml"
    threads: workflow.cores
    resources:
        mem_mb=reencode_mem_mb,
        runtime=reencode_runtime_min,
    params:
        source=source_spec,
        root=dataset_root,
        options=dataset_options,
    script:
        "../scripts/reencode.py"
