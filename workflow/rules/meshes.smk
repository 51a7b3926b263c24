# Meshes: mesh files tied to segments by a mesh table; meshes generated from the labels, region
# by region; single mesh files as VTK.


rule surfaces:
    input:
        source=dataset_source,
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
        mem_mb=first_slab_mem_mb,
        runtime=first_slab_runtime_min,
    params:
        plan=plan_param,
        table=meshes_option,
        root=dataset_root,
        colon=config["colon_names"],
    script:
        "../scripts/surfaces.py"


rule mesh_region:
    # One region of a segmentation's labels meshed (meshes: generate or multilod), in parallel
    # with the pyramid; fragments go straight to the dataset (legacy) or beside the record.
    input:
        unpack(mesh_region_inputs),
    output:
        WORK / "{dataset}" / "meshes" / "region{region}.json",
    log:
        LOGS / "{dataset}" / "mesh_region{region}.log",
    benchmark:
        LOGS / "{dataset}" / "mesh_region{region}.tsv"
    wildcard_constraints:
        region="[0-9]+",
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=mesh_region_mem_mb,
        runtime=mesh_region_runtime_min,
    params:
        plan=plan_param,
        meshes=meshes_option,
        root=dataset_root,
        voxels=config["mesh_region_voxels"],
    script:
        "../scripts/mesh_region.py"


rule meshes:
    # Every segment's manifest and mesh/info from the regions' records; finalize waits for it.
    input:
        mesh_region_records,
    output:
        WORK / "{dataset}" / "meshes.json",
    log:
        LOGS / "{dataset}" / "meshes.log",
    benchmark:
        LOGS / "{dataset}" / "meshes.tsv"
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=meshes_mem_mb,
        runtime=meshes_runtime_min,
    params:
        plan=plan_param,
        meshes=meshes_option,
        root=dataset_root,
        voxels=config["mesh_region_voxels"],
        regions=mesh_records_folder,
        colon=config["colon_names"],
    script:
        "../scripts/meshes.py"


rule vtk_mesh:
    input:
        dataset_path,
    output:
        RESULTS / "{dataset}" / "{dataset}.vtk",
    log:
        LOGS / "{dataset}" / "vtk.log",
    wildcard_constraints:
        dataset=names_regex(MESH_FILES),
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=mesh_file_mem_mb,
        runtime=10,
    script:
        "../scripts/vtk_mesh.py"
