"""Crash safety at every write point: every job of a run is SIGKILLed (no cleanup, as a node
failure would) at a chosen point of its writing (``NGPRECOMPUTED_CRASH``, see
``ngprecomputed.crash``): after its k-th file, in the middle of a shard, after a mesh fragment,
between ``transform.json`` and ``info``. After each: the run failed and the dataset has no
``info``; a rerun is byte-identical to a clean run; a third run has nothing to do (no file is
written again)."""

import os

import pytest
from test_resume import digest

from conftest import snakemake, write_sheet

pytestmark = pytest.mark.workflow

SETTINGS = ["qc=false", "voxels_per_job=1000000"]

# case -> (dataset row beyond dataset/path/type, source, type, crash point)
CASES = {
    "raw-after-3rd-file": ({}, "mni_t1", "image", "file:3"),
    "gzip-after-3rd-file": ({"gzip": "true"}, "mni_t1", "image", "file:3"),
    "jpeg-after-3rd-file": ({"encoding": "jpeg"}, "mni_t1", "image", "file:3"),
    "cseg-after-3rd-file": ({}, "aal", "segmentation", "file:3"),
    "sharded-mid-shard": ({"sharded": "true"}, "mni_t1", "image", "shard:5"),
    "reencode-into-shards-mid-shard": ({"sharded": "true"}, "clean:t1_raw", "image", "shard:5"),
    "meshes-after-3rd-fragment": ({"meshes": "generate"}, "aal", "segmentation", "fragment:3"),
    "multilod-after-5th-fragment": ({"meshes": "multilod"}, "aal", "segmentation", "fragment:5"),
    "between-transform-and-info": ({}, "mni_t1", "image", "finalize:1"),
}


def row(case: str, data, clean) -> dict:
    extra, source, kind, _ = CASES[case]
    path = clean / source.split(":")[1] if source.startswith("clean:") else data[source]
    return {"dataset": case, "path": path, "type": kind, "chunk_size": 32, **extra}


@pytest.fixture(scope="module")
def clean(tmp_path_factory, data):
    """Every case converted once without a crash (re-encodings after their source)."""
    work = tmp_path_factory.mktemp("crash")
    out = work / "clean"
    sources = write_sheet(
        work / "sources.csv", [{"dataset": "t1_raw", "path": data["mni_t1"], "type": "image"}]
    )
    snakemake(work, "--config", f"samples={sources}", f"results={out}", *SETTINGS)
    for group in (False, True):
        cases = [c for c in CASES if CASES[c][1].startswith("clean:") == group]
        sheet = write_sheet(work / f"clean{group}.csv", [row(c, data, out) for c in cases])
        snakemake(work, "--config", f"samples={sheet}", f"results={out}", *SETTINGS)
    return work, out


@pytest.mark.parametrize("case", list(CASES))
def test_a_crash_at_every_write_point_reruns_to_identical_bytes(clean, data, case, monkeypatch):
    work, clean_out = clean
    sheet = write_sheet(work / f"{case}.csv", [row(case, data, clean_out)])
    out = work / f"crashed-{case}"
    args = ["--config", f"samples={sheet}", f"results={out}", *SETTINGS]
    monkeypatch.setenv("NGPRECOMPUTED_CRASH", CASES[case][3])
    crashed = snakemake(work, *args, check=False)
    assert crashed.returncode != 0, f"no job reached {CASES[case][3]}"
    assert not (out / case / "info").exists()
    monkeypatch.delenv("NGPRECOMPUTED_CRASH")

    snakemake(work, *args)
    want = {k: v for k, v in digest(clean_out).items() if k.split("/")[0] == case}
    assert digest(out) == want
    assert not list(out.rglob(".*.part"))
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    snakemake(work, *args)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written
    assert "NGPRECOMPUTED_CRASH" not in os.environ
