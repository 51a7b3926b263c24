"""The SLURM profile on a real single-node SLURM (tests/slurm.py brings it up): every job goes
through sbatch, small jobs go out grouped, and the results are byte-identical to a local
``--cores 2`` run of the same sheet."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from slurm import CTLD_LOG, SlurmError, completed_job_ids, ensure_slurm

from conftest import ROOT, package_file, snakemake, write_sheet

pytestmark = pytest.mark.workflow

# The T1 in 4 slabs (a gzip index, 4 pyramid jobs, finalize); each atlas in one job (finalize).
VOXELS_PER_JOB = 8_000_000
PIAL = ("left", "right")
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.")


@pytest.fixture(scope="module")
def cluster():
    try:
        ensure_slurm()
    except SlurmError as e:
        pytest.fail(f"no SLURM to test the profile on: {e}")


def start_on_slurm(cwd: Path, *args: str) -> subprocess.Popen:
    """The workflow through the real profile, with the CI variant's few settings on top; its
    output goes to ``cwd/snakemake.log``."""
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
        "--profile", str(ROOT / "profiles" / "slurm"),
        "--workflow-profile", str(ROOT / "profiles" / "slurm-ci"),
        *args,
    ]  # fmt: skip
    with open(cwd / "snakemake.log", "w") as log:
        return subprocess.Popen(
            cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def result_files(results: Path) -> dict[str, bytes]:
    """Every file of the datasets, by relative path (not the logs and job manifests)."""
    return {
        str(p.relative_to(results)): p.read_bytes()
        for p in sorted(results.rglob("*"))
        if p.is_file() and p.relative_to(results).parts[0] not in ("logs", ".work")
    }


def test_slurm_profile_runs_every_job_through_sbatch_and_matches_a_local_run(
    tmp_path, data, cluster
):
    pial = [package_file("nilearn", f"datasets/data/fsaverage5/pial_{s}.gii.gz") for s in PIAL]
    table = tmp_path / "surfaces.csv"
    table.write_text(f"segment,path\n1,{pial[0]}\n2,{pial[1]}\n")
    sheet = write_sheet(
        tmp_path / "sheet.csv",
        [
            {"dataset": "t1", "path": data["mni_t1"], "type": "image"},
            {"dataset": "aal", "path": data["aal"], "type": "segmentation"},
            {"dataset": "aal3", "path": data["aal3"], "type": "segmentation", "meshes": table},
            {"dataset": "pial_left", "path": pial[0], "type": "mesh"},
        ],
    )
    # The datasets themselves are the targets: the QC pages (not compared) would cost one more
    # round of submissions.
    targets = [f"results/{name}/info" for name in ("t1", "aal", "aal3")]
    targets += ["results/pial_left/pial_left.vtk"]
    config = [*targets, "--config", f"samples={sheet}", f"voxels_per_job={VOXELS_PER_JOB}"]
    config += ["results=results"]
    for side in ("local", "cluster"):
        (tmp_path / side).mkdir()
    log_start = CTLD_LOG.stat().st_size if CTLD_LOG.exists() else 0

    on_cluster = start_on_slurm(tmp_path / "cluster", *config)
    snakemake(tmp_path / "local", *config)  # meanwhile (that one mostly waits for SLURM)
    code = on_cluster.wait(timeout=600)

    out = (tmp_path / "cluster" / "snakemake.log").read_text()
    assert code == 0, f"snakemake on SLURM failed:\n{out[-6000:]}"
    # No job ran on this side: every one was in a SLURM job.
    assert "localrule" not in out, out[-3000:]
    jobs = re.findall(r"^Finished jobid: \S+ \(Rule: (\w+)\)", out, re.M)
    assert sorted(set(jobs)) == ["finalize", "gzip_index", "pyramid", "surfaces", "vtk_mesh"], jobs
    submitted = SUBMITTED.findall(out)
    assert submitted, out[-3000:]
    # The small jobs went out grouped: the three finalize jobs, the surfaces and the VTK mesh in
    # one submission, the gzip index in another.
    logs = [Path(log) for _, _, log in submitted]
    assert sum("group_finish" in str(p) for p in logs) == 1, logs
    assert sum("group_prepare" in str(p) for p in logs) == 1, logs
    assert len(submitted) < len(jobs), (submitted, jobs)
    # The controller ran and completed each of them (exit 0), in its own log.
    slurm_ids = {slurm_id for _, slurm_id, _ in submitted}
    ctld = CTLD_LOG.read_bytes()[log_start:].decode(errors="replace")
    assert slurm_ids <= completed_job_ids(ctld), ctld[-3000:]
    for log in logs:  # each job's SLURM output: Snakemake's in-job step ran there
        assert "--executor slurm-jobstep" in log.read_text(), log

    local = result_files(tmp_path / "local" / "results")
    on_slurm = result_files(tmp_path / "cluster" / "results")
    assert {"t1/info", "aal/info", "aal3/info", "pial_left/pial_left.vtk"} <= set(local)
    assert sorted(on_slurm) == sorted(local)
    different = [name for name in local if on_slurm[name] != local[name]]
    assert not different, different
