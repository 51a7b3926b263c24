# ngprecomputed: sample sheet in, Neuroglancer precomputed datasets out.
# Every path below is resolved from this file's folder, so the workflow also runs as a module.
from snakemake.utils import min_version, validate

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/volume.smk"


rule all:
    default_target: True
    input:
        all_targets,


onsuccess:
    finish(ok=True)


onerror:
    finish(ok=False)
