# Config, sample sheet and per-dataset plans, computed once at parse time from file headers.
import sys
import time
from pathlib import Path

import yaml

from ngprecomputed.cli import options_to_json
from ngprecomputed.errors import InputError
from ngprecomputed.plan import Options, make_plan
from ngprecomputed.resources import job_mem_mb
from ngprecomputed.sheet import load_sheet
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
    try:
        datasets = {
            d.name: d for d in load_sheet(_sheet_path(config["samples"]), defaults)
        }
    except InputError as e:
        sys.exit(f"ngprecomputed: error: {e}")
    plans = {}
    for name, d in datasets.items():
        try:
            plans[name] = make_plan(name, open_source(d.path), d.options)
        except InputError:
            plans[name] = None  # its plan job fails with the message; the others go on
    return datasets, plans


DATASETS, PLANS = _load()


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9._-]*",
    stage="[0-9]+",
    slab="[0-9]+",


def manifest(dataset, stage, slab):
    return str(WORK / dataset / f"stage{stage}" / f"slab{slab}.json")


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


def all_targets(wildcards):
    return [
        str(RESULTS / name / "info") if plan else str(WORK / name / "plan.json")
        for name, plan in PLANS.items()
    ]


def report_failures():
    lines = failures(LOGS, STARTED)
    if lines:
        print(
            f"ngprecomputed: {len(lines)} failed:", *lines, sep="\n  ", file=sys.stderr
        )
