# Config, sample sheet and per-dataset plans. Plans come from file headers at parse time; a
# source that does not exist yet (made by a host workflow's rule) is planned by the `plan`
# checkpoint once it does.
import re
import sys
import threading
import time
from pathlib import Path

import yaml

from ngprecomputed.batches import plan_jobs
from ngprecomputed.errors import InputError
from ngprecomputed.job import exit_without_collection, keep_pandas_out
from ngprecomputed.plan import Plan
from ngprecomputed.settings import Options, source_options
from ngprecomputed.resources import (
    IN_JOB_SNAKEMAKE_MB,
    SMALL_JOB_MEM_MB,
    gzip_index_runtime_min,
    job_mem_mb,
    job_runtime_min,
)
from ngprecomputed.schemas import load_schema
from ngprecomputed.sheet import (
    ANNOTATION_TYPES,
    config_rows,
    datasets_from_rows,
    read_rows,
)
from ngprecomputed.sources import is_precomputed, open_source
from ngprecomputed.storage import Remote, is_remote, register
from ngprecomputed.store import check_writable
from ngprecomputed.summary import failures
from ngprecomputed.workflow_files import put_environment_first

SCHEMAS = WORKFLOW_ROOT / "workflow" / "schemas"

put_environment_first()

# config.yaml holds what a user sets (a host workflow's module config replaces it); every
# other key takes its default from the schema (Snakemake's validate sets them).
for _key, _value in yaml.safe_load(
    (WORKFLOW_ROOT / "config" / "config.yaml").read_text()
).items():
    config.setdefault(_key, _value)
_SCHEMA = load_schema("config", SCHEMAS)["properties"]
# `--config qc=false` arrives as a string (Snakemake reads only True/False as booleans)
for _key in [k for k, spec in _SCHEMA.items() if spec.get("type") == "boolean"]:
    if str(config.get(_key)).lower() in ("true", "false"):
        config[_key] = str(config[_key]).lower() == "true"
validate(config, schema=str(SCHEMAS / "config.schema.json"), set_default=True)


def _results(url):
    """The results folder; for an ``s3://bucket/prefix`` URL, the local mirror of the bucket
    (bookkeeping: logs, manifests, info), registered for every job (ngprecomputed.storage).
    """
    if not is_remote(url):
        return Path(url)
    try:
        remote = Remote.from_url(url, config.get("s3_endpoint"))
        mirror = Path(config["s3_mirror"]) / remote.bucket / remote.prefix
        register(mirror, url, remote.endpoint)
        remote.check()
    except InputError as e:
        sys.exit(f"ngprecomputed: error: {e}")
    return mirror


RESULTS = _results(config["results"])


def in_job_mb():
    """A cluster job's memory also holds the Snakemake that runs the job inside it (asked when
    jobs are submitted: the executor is known by then, not while the Snakefile is parsed).
    """
    return IN_JOB_SNAKEMAKE_MB if getattr(workflow, "non_local_exec", False) else 0


try:
    check_writable(RESULTS)
except InputError as e:
    sys.exit(f"ngprecomputed: error: {e}")
WORK = RESULTS / ".work"
LOGS = RESULTS / "logs"
STARTED = time.time()
exit_without_collection()  # atexit runs once Snakemake is done


def _sheet_path(value):
    """The sheet relative to the working folder, else to the workflow (its default sheet)."""
    path = Path(value)
    if not path.is_absolute() and not path.exists() and (WORKFLOW_ROOT / path).exists():
        return WORKFLOW_ROOT / path
    return path


def _rows(samples, schema):
    """Rows of a CSV sheet, or of a list given in the config; where they come from, and the
    folder their relative paths start from."""
    if isinstance(samples, list):
        return config_rows(samples, schema), "config samples", Path.cwd()
    sheet = _sheet_path(samples)
    return read_rows(sheet, schema), str(sheet), sheet.resolve().parent


def _load():
    defaults = Options(
        voxels_per_job=config["voxels_per_job"],
        chunk_voxels=config["chunk_voxels"],
        gzip=config["gzip"],
    )
    try:
        rows, where, base = _rows(config["samples"], load_schema("samples", SCHEMAS))
        # Snakemake's own check of the rows (passed by now) gives empty cells their defaults
        for row in rows:
            validate(row, schema=str(SCHEMAS / "samples.schema.json"), set_default=True)
        datasets = datasets_from_rows(
            where, base, rows, defaults, require_files=not config["upstream_sources"]
        )
    except InputError as e:
        sys.exit(f"ngprecomputed: error: {e}")
    items = []
    for d in datasets:
        if is_precomputed(d.path) or d.options.type in ("mesh", *ANNOTATION_TYPES):
            continue  # re-encoded chunk by chunk, a mesh file or annotations: no plan
        try:
            items.append(
                (d.name, open_source(d.path, **source_options(d.options)), d.options)
            )
        except (InputError, FileNotFoundError):
            pass  # the plan checkpoint plans it later, or fails with the reason
    plans, batches = plan_jobs(items, workflow.cores or 1, config["job_voxels"])
    return {d.name: d for d in datasets}, plans, {b.name: b for b in batches}


DATASETS, PLANS, BATCHES = _load()
REENCODED = [name for name, d in DATASETS.items() if is_precomputed(d.path)]
MESH_FILES = [name for name, d in DATASETS.items() if d.options.type == "mesh"]
ANNOTATIONS = [n for n, d in DATASETS.items() if d.options.type in ANNOTATION_TYPES]
VOLUMES = [n for n in DATASETS if n not in REENCODED + MESH_FILES + ANNOTATIONS]
# A volume is one `volume` job (its slabs in workers), small ones go many to a `volumes` job
# (SHARED); the others fan out over `pyramid` jobs and a `finalize` (FANNED).
BATCH_OF = {name: b for b in BATCHES.values() for name in b.datasets}
FANNED = [name for name in VOLUMES if name not in BATCH_OF]
SHARED = {name: b for name, b in BATCHES.items() if len(b.datasets) > 1}


def names_regex(names):
    """A wildcard constraint matching exactly these dataset names (none: matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9._-]*",
    stage="[0-9]+",
    slab="[0-9]+",


def plan_of(dataset):
    """The dataset's plan: from parse time, else from the plan checkpoint's output."""
    if dataset not in PLANS:
        PLANS[dataset] = Plan.load(checkpoints.plan.get(dataset=dataset).output[0])
    return PLANS[dataset]


SOURCE_PATHS = {}


def source_path(dataset):
    """The source's files and folders as Snakemake should see them: relative to the working
    folder when inside it, so that a host workflow's rule whose output it is is found (made
    once per dataset: 10^4 jobs ask).
    """
    if dataset not in SOURCE_PATHS:
        cwd, paths = Path.cwd().resolve(), []
        for path in map(Path, DATASETS[dataset].inputs):
            try:
                paths.append(str(path.resolve().relative_to(cwd)))
            except ValueError:
                paths.append(str(path))
        SOURCE_PATHS[dataset] = paths
    return list(SOURCE_PATHS[dataset])


def dataset_options(wildcards):
    """The row's settings, as the job's script gets them (an ``Options``)."""
    return DATASETS[wildcards.dataset].options


def source_spec(wildcards):
    """The source as ``open_source`` takes it (a slice stack: folders/patterns, ';')."""
    return DATASETS[wildcards.dataset].path


def manifest(dataset, stage, slab):
    return str(WORK / dataset / f"stage{stage}" / f"slab{slab}.json")


def source_inputs(dataset, stage, slab):
    """The source, and its gzip index where one pays, for a job that reads the source.

    The first slab starts at the beginning of the file and needs no index: it runs while the
    index is being built. Sharded datasets' cube slabs read the file decompressed once.
    """
    inputs = {"source": source_path(dataset)}
    if stage == 0 and slab > 0 and plan_of(dataset).gzip_index:
        inputs["gzip_index"] = str(WORK / dataset / "source.gzidx")
    if stage == 0 and plan_of(dataset).decompress:
        inputs["decompressed"] = str(WORK / dataset / "source.raw")
    return inputs


def upstream(dataset, stage, slab):
    """Manifests of the previous stage's slabs that this slab reads."""
    if stage == 0:
        return []
    return [
        manifest(dataset, stage - 1, i) for i in plan_of(dataset).needs(stage, slab)
    ]


def pyramid_inputs(w):
    stage, slab = int(w.stage), int(w.slab)
    return {
        **source_inputs(w.dataset, stage, slab),
        "upstream": upstream(w.dataset, stage, slab),
    }


def finalize_inputs(w):
    """The last stage is built by the finalize job when it is one slab; else it waits for it.
    Meshes and names come first too: the info, written last, names them."""
    plan = plan_of(w.dataset)
    last = len(plan.stages) - 1
    side = {**mesh_outputs(w.dataset)}
    if DATASETS[w.dataset].options.labels:
        side["labels"] = DATASETS[w.dataset].options.labels
    if plan.stages[last].count == 1:
        return {
            **source_inputs(w.dataset, last, 0),
            "upstream": upstream(w.dataset, last, 0),
            **side,
        }
    return {
        "source": source_path(w.dataset),
        "upstream": [
            manifest(w.dataset, last, i) for i in range(plan.stages[last].count)
        ],
        **side,
    }


def mesh_outputs(dataset):
    """What the dataset's meshes are made by (a mesh table, or generated from its labels)."""
    meshes = DATASETS[dataset].options.meshes
    if not meshes:
        return {}
    if meshes in ("generate", "multilod"):
        return {"meshes": str(WORK / dataset / "meshes.json")}
    return {"meshes": str(WORK / dataset / "surfaces.json")}


def mesh_table_files(w):
    """The mesh table and the files it names (if it parses now; else its job says why)."""
    from ngprecomputed.meshes.surfaces import read_mesh_table

    table = Path(DATASETS[w.dataset].options.meshes)
    try:
        files = [str(p) for items in read_mesh_table(table).values() for p, _ in items]
    except InputError:
        files = []
    return [str(table), *files]


def mesh_regions(dataset):
    """How the dataset's labels are cut into regions for meshing (from its plan)."""
    from ngprecomputed.meshes.generate import plan_regions

    return plan_regions(plan_of(dataset).scales[0].size, config["mesh_region_voxels"])


def mesh_region_inputs(w):
    """The source, and its gzip index where the pyramid makes one (a region deep in a large
    .gz file is then read without decompressing everything before it)."""
    inputs = {"source": source_path(w.dataset)}
    if plan_of(w.dataset).gzip_index:
        inputs["gzip_index"] = str(WORK / w.dataset / "source.gzidx")
    return inputs


def mesh_region_records(w):
    count = mesh_regions(w.dataset).count
    return [str(WORK / w.dataset / "meshes" / f"region{i}.json") for i in range(count)]


def mesh_region_resources(w, attempt):
    from ngprecomputed.meshes.generate import region_mem_mb, region_runtime_min

    regions = mesh_regions(w.dataset)
    multi = DATASETS[w.dataset].options.meshes == "multilod"
    return (
        region_mem_mb(plan_of(w.dataset), regions, attempt),
        region_runtime_min(regions, multi, attempt),
    )


def plan_param(w):
    """The dataset's plan, handed to the job's script as it is (no JSON, no planning again)."""
    return plan_of(w.dataset)


def dataset_root(w):
    return RESULTS / w.dataset


def dataset_scratch(w):
    """Raw copies of a lossy dataset's scales, and a decompressed source."""
    return WORK / w.dataset / "raw"


# --- input functions and resources of the rules (named: what a rule asks for, said once) ------


def dataset_source(w):
    return source_path(w.dataset)


def dataset_path(w):
    return DATASETS[w.dataset].path


def dataset_labels(w):
    return DATASETS[w.dataset].options.labels


def precomputed_info(w):
    """The info of a sheet row's precomputed source (re-encoded)."""
    return Path(DATASETS[w.dataset].path) / "info"


def mesh_records_folder(w):
    return WORK / w.dataset / "meshes"


def meshes_option(w):
    """The row's ``meshes``: a mesh table (files by segment), or generate / multilod."""
    return DATASETS[w.dataset].options.meshes


def small_job_mem_mb(w, attempt):
    return in_job_mb() + SMALL_JOB_MEM_MB * attempt


def source_pass_runtime_min(w, input, attempt):
    """One pass over the source file (indexing or decompressing it)."""
    return gzip_index_runtime_min(
        sum(Path(f).stat().st_size for f in input.source), attempt
    )


def slab_mem_mb(w, attempt):
    return in_job_mb() + job_mem_mb(
        plan_of(w.dataset), int(w.stage), int(w.slab), attempt
    )


def slab_runtime_min(w, attempt):
    return job_runtime_min(plan_of(w.dataset), int(w.stage), int(w.slab), attempt)


def first_slab_mem_mb(w, attempt):
    return in_job_mb() + job_mem_mb(plan_of(w.dataset), 0, 0, attempt)


def first_slab_runtime_min(w, attempt):
    return job_runtime_min(plan_of(w.dataset), 0, 0, attempt)


def last_stage_mem_mb(w, attempt):
    plan = plan_of(w.dataset)
    return in_job_mb() + job_mem_mb(plan, len(plan.stages) - 1, 0, attempt)


def last_stage_runtime_min(w, attempt):
    plan = plan_of(w.dataset)
    return job_runtime_min(plan, len(plan.stages) - 1, 0, attempt)


def reencode_mem_mb(w, threads, attempt):
    """Processes of ~50 MiB that each hold a chunk or two."""
    return in_job_mb() + (SMALL_JOB_MEM_MB + 100 * threads) * attempt


def reencode_runtime_min(w, attempt):
    return 60 * attempt


def mesh_region_mem_mb(w, attempt):
    return in_job_mb() + mesh_region_resources(w, attempt)[0]


def mesh_region_runtime_min(w, attempt):
    return mesh_region_resources(w, attempt)[1]


def meshes_mem_mb(w, attempt):
    """The regions' records in memory, fragments copied one at a time."""
    return in_job_mb() + SMALL_JOB_MEM_MB * 2 * attempt


def meshes_runtime_min(w, attempt):
    return (10 + mesh_regions(w.dataset).count // 100) * 2 ** (attempt - 1)


def mesh_file_mem_mb(w, attempt):
    return in_job_mb() + 1000 * attempt


def qc_job_mem_mb(w, attempt):
    return in_job_mb() + qc_mem_mb(attempt=attempt)


def qc_job_runtime_min(w, attempt):
    return qc_runtime_min(scale0_voxels(w.dataset), attempt)


def annotation_inputs(w):
    """An annotation dataset's source, and its segmentation's source (the labels it is
    related to, read with nibabel)."""
    d = DATASETS[w.dataset]
    out = {"source": d.path}
    if d.options.segmentation:
        out["labels"] = DATASETS[d.options.segmentation].path
    return out


def annotation_kind(w):
    return DATASETS[w.dataset].options.type


def annotation_sharded(w):
    """The sheet's ``sharded``: yes; else sharded above ``SHARD_ABOVE`` annotations (None)."""
    return True if DATASETS[w.dataset].options.sharded else None


def annotation_segmentation(w):
    """``(relationship id, labels file)``: the segmentation dataset's name and source."""
    name = DATASETS[w.dataset].options.segmentation
    return (name, DATASETS[name].path) if name else None


def annotation_mem_mb(w, attempt):
    """The source's arrays, their records and the spatial pairs: about 8x the file."""
    size = Path(DATASETS[w.dataset].path).stat().st_size
    return in_job_mb() + (300 + 8 * size // 2**20) * attempt


def annotation_runtime_min(w, attempt):
    size = Path(DATASETS[w.dataset].path).stat().st_size
    return (5 + size // 2**26) * attempt


def in_shared_job(name):
    return name in BATCH_OF and BATCH_OF[name].name in SHARED


def all_targets(wildcards):
    """Every dataset's info, or the manifest of the shared job that writes it; QC pages (a
    shared job's are in its own folder, named by its manifest)."""
    done = [str(WORK / "jobs" / f"{name}.json") for name in SHARED]
    for name in DATASETS:
        if name in MESH_FILES:
            done.append(str(RESULTS / name / f"{name}.vtk"))
        elif not in_shared_job(name):
            done.append(str(RESULTS / name / "info"))
    qc = (
        [n for n in VOLUMES + REENCODED if not in_shared_job(n)] if config["qc"] else []
    )
    return done + [str(WORK / name / "qc" / f"{name}.html") for name in qc]


def job_datasets(w):
    """A `volumes` job's datasets, or the one dataset of a `volume` job."""
    return BATCHES[w.batch].datasets if "batch" in w.keys() else (w.dataset,)


def job_workers(w):
    if "batch" in w.keys():
        return BATCHES[w.batch].workers
    batch = BATCH_OF[w.dataset]
    return batch.workers if batch.datasets == (w.dataset,) else 1


def job_inputs(w):
    """Every source of the job's datasets, their label tables and what makes their meshes."""
    inputs = {"source": [], "labels": [], "meshes": []}
    for name in job_datasets(w):
        inputs["source"] += source_path(name)
        if DATASETS[name].options.labels:
            inputs["labels"].append(DATASETS[name].options.labels)
        inputs["meshes"] += list(mesh_outputs(name).values())
    return inputs


def job_works(w):
    """What the job converts (the script gets these objects: no plan to make again)."""
    from ngprecomputed.engine import Work

    names = job_datasets(w)
    shared = len(names) > 1

    def qc_page(name):
        if not config["qc"]:
            return None
        return WORK / "jobs" / w.batch / "qc" if shared else WORK / name / "qc"

    return [
        Work(
            plan_of(name),
            RESULTS / name,
            WORK / name / "raw",
            labels=DATASETS[name].options.labels,
            qc=qc_page(name) / f"{name}.html" if qc_page(name) else None,
            log=LOGS / name / "convert.log" if shared else None,
        )
        for name in names
    ]


def job_mem_mb_of(w, attempt):
    from ngprecomputed.resources import pooled_mem_mb

    plans = [plan_of(name) for name in job_datasets(w)]
    return in_job_mb() + pooled_mem_mb(plans, job_workers(w), config["qc"], attempt)


def job_runtime_min_of(w, attempt):
    from ngprecomputed.resources import pooled_runtime_min

    plans = [plan_of(name) for name in job_datasets(w)]
    return pooled_runtime_min(plans, job_workers(w), attempt)


def scale0_voxels(dataset):
    """Voxels (times channels) of scale 0 of a volume dataset (the QC job reads them all)."""
    if dataset in REENCODED:
        from ngprecomputed.reencode import read_info

        info = read_info(DATASETS[dataset].path)
        size, channels = info["scales"][0]["size"], info["num_channels"]
    else:
        size, channels = plan_of(dataset).scales[0].size, plan_of(dataset).num_channels
    return size[0] * size[1] * size[2] * channels


def report_failures():
    lines = failures(LOGS, STARTED)
    if lines:
        print(
            f"ngprecomputed: {len(lines)} failed:", *lines, sep="\n  ", file=sys.stderr
        )


def finish(ok):
    """Say what failed; then let the process exit at once: Snakemake's job-rate limiter
    (default 100/1s) leaves a non-daemon 1 s threading.Timer behind, which delays the exit of
    every run by up to a second (the interpreter waits for it before atexit)."""
    if not ok:
        report_failures()
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
