# Config, sample sheet and per-dataset plans, computed once at parse time from file headers.
import sys
import threading
import time
from pathlib import Path

import yaml

from ngprecomputed.cli import options_to_json
from ngprecomputed.errors import InputError
from ngprecomputed.plan import Options, make_plan
from ngprecomputed.resources import job_mem_mb
from ngprecomputed.sheet import datasets_from_rows, load_schema, read_rows
from ngprecomputed.summary import failures
from ngprecomputed.sources import open_source

BASE = Path(workflow.basedir)
SCHEMAS = BASE / "workflow" / "schemas"

for _key, _value in yaml.safe_load(
    (BASE / "config" / "config.yaml").read_text()
).items():
    config.setdefault(_key, _value)
validate(config, schema=str(SCHEMAS / "config.schema.yaml"))

RESULTS = Path(config["results"])
WORK = RESULTS / ".work"
LOGS = RESULTS / "logs"
STARTED = time.time()


def _sheet_path(value):
    """The sheet relative to the working folder, else to the workflow (its default sheet)."""
    path = Path(value)
    if not path.is_absolute() and not path.exists() and (BASE / path).exists():
        return BASE / path
    return path


def _load():
    defaults = Options(
        voxels_per_job=config["voxels_per_job"],
        chunk_voxels=config["chunk_voxels"],
        gzip=config["gzip"],
    )
    sheet = _sheet_path(config["samples"])
    try:
        rows = read_rows(sheet, load_schema("samples", SCHEMAS))  # one line per problem
        for (
            row
        ) in rows:  # Snakemake's own check, same schema: passes once read_rows has
            validate(row, schema=str(SCHEMAS / "samples.schema.yaml"))
        datasets = {d.name: d for d in datasets_from_rows(sheet, rows, defaults)}
    except InputError as e:
        sys.exit(f"ngprecomputed: error: {e}")
    plans = {}
    for name, d in datasets.items():
        try:
            plans[name] = make_plan(name, open_source(d.path), d.options)
        except InputError:
            plans[name] = None  # read_header fails with the message; the others go on
    return datasets, plans


DATASETS, PLANS = _load()


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9._-]*",
    stage="[0-9]+",
    slab="[0-9]+",


def manifest(dataset, stage, slab):
    return str(WORK / dataset / f"stage{stage}" / f"slab{slab}.json")


def source_inputs(dataset, stage, slab):
    """The source, and its gzip index where one pays, for a job that reads the source.

    The first slab starts at the beginning of the file and needs no index: it runs while the
    index is being built."""
    inputs = {"source": str(DATASETS[dataset].path)}
    if stage == 0 and slab > 0 and PLANS[dataset].gzip_index:
        inputs["gzip_index"] = str(WORK / dataset / "source.gzidx")
    return inputs


def upstream(dataset, stage, slab):
    """Manifests of the previous stage's slabs that this slab reads."""
    if stage == 0:
        return []
    return [manifest(dataset, stage - 1, i) for i in PLANS[dataset].needs(stage, slab)]


def pyramid_inputs(w):
    stage, slab = int(w.stage), int(w.slab)
    return {
        **source_inputs(w.dataset, stage, slab),
        "upstream": upstream(w.dataset, stage, slab),
    }


def finalize_inputs(w):
    """The last stage is built by the finalize job when it is one slab; else it waits for it."""
    plan = PLANS[w.dataset]
    last = len(plan.stages) - 1
    if plan.stages[last].count == 1:
        return {
            **source_inputs(w.dataset, last, 0),
            "upstream": upstream(w.dataset, last, 0),
        }
    return {
        "source": str(DATASETS[w.dataset].path),
        "upstream": [
            manifest(w.dataset, last, i) for i in range(plan.stages[last].count)
        ],
    }


def gzip_index_arg(wildcards, input):
    return f"--gzip-index {input.gzip_index}" if "gzip_index" in input.keys() else ""


def all_targets(wildcards):
    """Every dataset's info; for a dataset whose header is unreadable, the job that says why."""
    return [
        str(RESULTS / name / "info") if plan else str(WORK / name / "header.checked")
        for name, plan in PLANS.items()
    ]


def report_failures():
    lines = failures(LOGS, STARTED)
    if lines:
        print(
            f"ngprecomputed: {len(lines)} failed:", *lines, sep="\n  ", file=sys.stderr
        )


def finish(ok):
    """Say what failed; then let the process exit at once. Snakemake's job-rate limiter
    (default 100/1s) leaves a non-daemon 1 s threading.Timer behind, which delays the exit of
    every run by up to a second."""
    if not ok:
        report_failures()
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
