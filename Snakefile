# ngprecomputed: sample sheet in, Neuroglancer precomputed datasets out.
# Every path below is resolved from this file's folder, so the workflow also runs as a module.
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


report: "workflow/report/workflow.rst"


# This folder, also when the workflow is imported as a module from another one.
WORKFLOW_ROOT = Path(workflow.current_basedir.get_path_or_uri(secret_free=True))


include: "workflow/rules/common.smk"
include: "workflow/rules/volume.smk"
include: "workflow/rules/meshes.smk"
include: "workflow/rules/annotations.smk"
include: "workflow/rules/serve.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets,


onstart:
    keep_pandas_out()


onsuccess:
    finish(ok=True)


onerror:
    finish(ok=False)
