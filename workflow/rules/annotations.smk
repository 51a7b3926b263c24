# Annotations: points tables (coordinates, electrodes) and tractograms as precomputed
# annotation collections (by_id, a multi-level spatial index, relationships to a segmentation).


rule annotations:
    input:
        unpack(annotation_inputs),
    output:
        RESULTS / "{dataset}" / "info",
    log:
        LOGS / "{dataset}" / "annotations.log",
    benchmark:
        LOGS / "{dataset}" / "annotations.tsv"
    wildcard_constraints:
        dataset=names_regex(ANNOTATIONS),
    conda:
        "../envs/ngprecomputed.yaml"
    resources:
        mem_mb=annotation_mem_mb,
        runtime=annotation_runtime_min,
    params:
        kind=annotation_kind,
        segmentation=annotation_segmentation,
        sharded=annotation_sharded,
        scratch=dataset_scratch,
    script:
        "../scripts/annotations.py"
