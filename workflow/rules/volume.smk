# Volumes: plan -> (gzip index) -> pyramid stages, slab by slab -> info written last.


rule plan:
    input:
        source=lambda w: str(DATASETS[w.dataset].path),
    output:
        WORK / "{dataset}" / "plan.json",
    log:
        LOGS / "{dataset}" / "plan.log",
    benchmark:
        LOGS / "{dataset}" / "plan.tsv"
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
        root=lambda w: RESULTS / w.dataset,
        gzip_index=lambda w, input: (
            f"--gzip-index {input.gzip_index}" if "gzip_index" in input.keys() else ""
        ),
    shell:
        "ngprecomputed --log {log:q} build {input.plan:q} --stage {wildcards.stage}"
        " --slab {wildcards.slab} --root {params.root:q} --manifest {output:q} {params.gzip_index}"


rule finalize:
    input:
        plan=WORK / "{dataset}" / "plan.json",
        manifests=lambda w: [
            manifest(w.dataset, s, i)
            for s, stage in enumerate(PLANS[w.dataset].stages)
            for i in range(len(stage.slabs))
        ],
    output:
        info=RESULTS / "{dataset}" / "info",
        transform=RESULTS / "{dataset}" / "transform.json",
    log:
        LOGS / "{dataset}" / "finalize.log",
    benchmark:
        LOGS / "{dataset}" / "finalize.tsv"
    conda:
        "../envs/ngprecomputed.yaml"
    params:
        root=lambda w: RESULTS / w.dataset,
    shell:
        "ngprecomputed --log {log:q} finalize {input.plan:q} --root {params.root:q}"
