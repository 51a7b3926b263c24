# Volumes: [gzip index] -> pyramid stages, slab by slab -> last stage + info, written last.
# Every job plans the dataset again from the header (milliseconds), so no job waits for a plan.


rule read_header:
    # Only requested for a dataset whose header could not be read when the workflow was
    # parsed: it fails with the one-line reason, and the other datasets go on (--keep-going).
    input:
        source=lambda w: str(DATASETS[w.dataset].path),
    output:
        WORK / "{dataset}" / "header.checked",
    log:
        LOGS / "{dataset}" / "read_header.log",
    conda:
        "../envs/ngprecomputed.yaml"
    params:
        options=lambda w: options_to_json(DATASETS[w.dataset].options),
    shell:
        "ngprecomputed --log {log:q} plan {input.source:q} --dataset {wildcards.dataset}"
        " --options {params.options:q} --out {output:q}"


rule gzip_index:
    input:
        source=lambda w: str(DATASETS[w.dataset].path),
    output:
        WORK / "{dataset}" / "source.gzidx",
    log:
        LOGS / "{dataset}" / "gzip_index.log",
    benchmark:
        LOGS / "{dataset}" / "gzip_index.tsv"
    conda:
        "../envs/ngprecomputed.yaml"
    shell:
        "ngprecomputed --log {log:q} gzindex {input.source:q} {output:q}"


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
    resources:
        mem_mb=lambda w: job_mem_mb(PLANS[w.dataset], int(w.stage), int(w.slab)),
    params:
        options=lambda w: options_to_json(DATASETS[w.dataset].options),
        root=lambda w: RESULTS / w.dataset,
        gzip_index=gzip_index_arg,
    shell:
        "ngprecomputed --log {log:q} build {input.source:q} --dataset {wildcards.dataset}"
        " --options {params.options:q} --stage {wildcards.stage} --slab {wildcards.slab}"
        " --root {params.root:q} --manifest {output:q} {params.gzip_index}"


rule finalize:
    input:
        unpack(finalize_inputs),
    output:
        info=RESULTS / "{dataset}" / "info",
        transform=RESULTS / "{dataset}" / "transform.json",
        plan=WORK / "{dataset}" / "plan.json",
    log:
        LOGS / "{dataset}" / "finalize.log",
    benchmark:
        LOGS / "{dataset}" / "finalize.tsv"
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=lambda w: job_mem_mb(
            PLANS[w.dataset], len(PLANS[w.dataset].stages) - 1, 0
        ),
    params:
        options=lambda w: options_to_json(DATASETS[w.dataset].options),
        root=lambda w: RESULTS / w.dataset,
        gzip_index=gzip_index_arg,
    shell:
        "ngprecomputed --log {log:q} finalize {input.source:q} --dataset {wildcards.dataset}"
        " --options {params.options:q} --root {params.root:q} --plan-out {output.plan:q}"
        " {params.gzip_index}"
