"""The SLURM profile on a real single-node SLURM (tests/slurm.py brings it up): every job goes
through sbatch, small jobs go out grouped, and the results are byte-identical to a local
``--cores 2`` run of the same sheet."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from slurm import SlurmError, ended_jobs, ensure_slurm, jobcomp_mark

from conftest import ROOT, package_file, snakemake, write_sheet

pytestmark = pytest.mark.workflow

# The T1 (8.7 M voxels) beyond job_voxels: 4 slab jobs (a gzip index, 4 pyramid jobs, finalize);
# each atlas (at most 7.1 M voxels) one `volume` job.
VOXELS_PER_JOB = 8_000_000
JOB_VOXELS = 8_000_000
PIAL = ("left", "right")
# ngprecomputed's own line in a job's log when it runs inside a SLURM job
IN_SLURM_JOB = re.compile(r" INFO SLURM job (\d+) on ")


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
    config += [f"job_voxels={JOB_VOXELS}"]
    config += ["results=results"]
    for side in ("local", "cluster"):
        (tmp_path / side).mkdir()
    mark = jobcomp_mark()
    on_cluster = start_on_slurm(tmp_path / "cluster", *config)
    snakemake(tmp_path / "local", *config)  # meanwhile (that one mostly waits for SLURM)
    code = on_cluster.wait(timeout=900)
    out = (tmp_path / "cluster" / "snakemake.log").read_text()
    assert code == 0, f"snakemake on SLURM failed:\n{out[-6000:]}"

    # Every job ran inside a SLURM job: each job's own log names it (none does on the local side).
    logs = sorted((tmp_path / "cluster" / "results" / "logs").glob("*/*.log"))
    kinds = {re.sub(r"\d+", "", p.stem) for p in logs}
    assert {"finalize", "gzip_index", "stage_slab", "surfaces", "vtk", "job"} <= kinds, kinds
    job_of = {}
    for log in logs:
        found = IN_SLURM_JOB.search(log.read_text())
        assert found, f"{log} was not written inside a SLURM job"
        job_of[log] = found[1]
    local_logs = (tmp_path / "local" / "results" / "logs").glob("*/*.log")
    assert not any(IN_SLURM_JOB.search(p.read_text()) for p in local_logs)
    # SLURM's own records: each of those jobs ended COMPLETED with exit code 0.
    ended = ended_jobs(since=mark)
    for log, job in job_of.items():
        record = ended.get(job, {})
        assert (record.get("JobState"), record.get("ExitCode")) == ("COMPLETED", "0:0"), (
            log,
            record,
        )
    # SLURM enforces memory here (tests/slurm.py): no job of the run was killed and retried.
    here = str(tmp_path / "cluster")
    states = [r["JobState"] for r in ended.values() if r.get("WorkDir") == here]
    assert states and set(states) == {"COMPLETED"}, states
    # The small jobs went out grouped: fewer SLURM jobs than workflow jobs.
    assert len(set(job_of.values())) < len(job_of), job_of

    local = result_files(tmp_path / "local" / "results")
    on_slurm = result_files(tmp_path / "cluster" / "results")
    assert {"t1/info", "aal/info", "aal3/info", "pial_left/pial_left.vtk"} <= set(local)
    assert sorted(on_slurm) == sorted(local)
    different = [name for name in local if on_slurm[name] != local[name]]
    assert not different, different


def test_a_job_given_too_little_memory_is_killed_by_slurm_and_its_retry_succeeds(
    tmp_path, data, cluster
):
    """The T1's job asks for 100 MB on its first attempt (too little: the Snakemake that runs
    it inside the job alone takes more); SLURM kills it, the profile's retry asks for more and
    the dataset comes out as a local run's."""
    sheet = write_sheet(
        tmp_path / "sheet.csv", [{"dataset": "t1", "path": data["mni_t1"], "type": "image"}]
    )
    config = ["results/t1/info", "--config", f"samples={sheet}", "results=results"]
    (tmp_path / "cluster").mkdir()
    (tmp_path / "local").mkdir()
    mark = jobcomp_mark()
    on_cluster = start_on_slurm(
        tmp_path / "cluster",
        *config,
        "--set-resources",
        "volume:mem_mb=100 if attempt == 1 else 3000",
    )
    snakemake(tmp_path / "local", *config)
    code = on_cluster.wait(timeout=900)
    out = (tmp_path / "cluster" / "snakemake.log").read_text()
    assert code == 0, f"snakemake on SLURM failed:\n{out[-6000:]}"
    runs = sorted(
        (int(job), r)
        for job, r in ended_jobs(since=mark).items()
        if r.get("WorkDir") == str(tmp_path / "cluster")
    )
    assert [r["JobState"] for _, r in runs] == ["FAILED", "COMPLETED"], runs
    assert runs[0][1]["ExitCode"].endswith(":9"), runs[0]  # killed (SIGKILL) for its memory
    assert runs[0][1]["Tres"].split("mem=")[1].startswith("100M"), runs[0]
    assert result_files(tmp_path / "cluster" / "results") == result_files(
        tmp_path / "local" / "results"
    )
