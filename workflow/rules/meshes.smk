# Meshes: mesh files tied to segments by a mesh table; single mesh files as VTK.


rule surfaces:
    input:
        source=lambda w: source_path(w.dataset),
        table=mesh_table_files,
    output:
        WORK / "{dataset}" / "surfaces.json",
    log:
        LOGS / "{dataset}" / "surfaces.log",
    benchmark:
        LOGS / "{dataset}" / "surfaces.tsv"
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=lambda w, attempt: job_mem_mb(plan_of(w.dataset), 0, 0, attempt),
        runtime=lambda w, attempt: job_runtime_min(plan_of(w.dataset), 0, 0, attempt),
    params:
        source=source_spec,
        options=options_json,
        root=lambda w: RESULTS / w.dataset,
        colon="" if config["colon_names"] else "--no-colon",
    shell:
        "ngprecomputed --log {log:q} surfaces {params.source:q} --dataset {wildcards.dataset}"
        " --options {params.options:q} --root {params.root:q} --manifest {output:q}"
        " {params.colon}"


rule vtk_mesh:
    input:
        lambda w: DATASETS[w.dataset].path,
    output:
        RESULTS / "{dataset}" / "{dataset}.vtk",
    log:
        LOGS / "{dataset}" / "vtk.log",
    wildcard_constraints:
        dataset=names_regex(MESH_FILES),
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=lambda w, attempt: 1000 * attempt,
        runtime=10,
    shell:
        "ngprecomputed --log {log:q} vtk {input:q} {output:q} --dataset {wildcards.dataset}"
