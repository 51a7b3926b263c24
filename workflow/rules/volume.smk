# Volumes: plan -> (gzip index) -> pyramid stages, slab by slab -> info written last.


rule plan:
    input:
        source=lambda w: str(DATASETS[w.dataset].path),
    output:
        WORK / "{dataset}" / "plan.json",
    params:
        options=lambda w: options_to_json(DATASETS[w.dataset].options),
    log:
        LOGS / "{dataset}" / "plan.log",
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
    shell:
        "ngprecomputed --log {log:q} gzindex {input.source:q} {output:q}"


def pyramid_inputs(w):
    plan = PLANS[w.dataset]
    stage, slab = int(w.stage), int(w.slab)
    inputs = {"plan": str(WORK / w.dataset / "plan.json")}
    if stage == 0 and plan.gzip_index:
        inputs["gzip_index"] = str(WORK / w.dataset / "source.gzidx")
    if stage > 0:
        inputs["upstream"] = [
            manifest(w.dataset, stage - 1, i) for i in plan.stages[stage].needs[slab]
        ]
    return inputs


rule pyramid:
    input:
        unpack(pyramid_inputs),
    output:
        WORK / "{dataset}" / "stage{stage}" / "slab{slab}.json",
    params:
        root=lambda w: RESULTS / w.dataset,
        gzip_index=lambda w, input: (
            f"--gzip-index {input.gzip_index}" if "gzip_index" in input.keys() else ""
        ),
    resources:
        mem_mb=lambda w: job_mem_mb(PLANS[w.dataset], int(w.stage), int(w.slab)),
    log:
        LOGS / "{dataset}" / "stage{stage}_slab{slab}.log",
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
    params:
        root=lambda w: RESULTS / w.dataset,
    log:
        LOGS / "{dataset}" / "finalize.log",
    shell:
        "ngprecomputed --log {log:q} finalize {input.plan:q} --root {params.root:q}"
