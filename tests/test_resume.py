"""A run killed mid-way, rerun, ends byte-identical to a clean run; one more run does nothing."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest

from conftest import ROOT, check_pyramid, snakemake, write_sheet

# small slabs, each a job of its own: a run to kill half-way
SETTINGS = ["voxels_per_job=400000", "job_voxels=1"]


pytestmark = pytest.mark.workflow


def digest(folder):
    """Every file of the datasets (not logs or bookkeeping) and its bytes' hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] not in ("logs", ".work")
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(7)
    img = rng.integers(0, 255, (160, 150, 140), dtype=np.uint8)
    labels = rng.integers(0, 40, (120, 110, 100), dtype=np.uint16)
    nib.save(nib.Nifti1Image(img, np.eye(4)), folder / "img.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), folder / "labels.nii")
    sheet = write_sheet(
        folder / "samples.csv",
        [
            {"dataset": "img", "path": folder / "img.nii.gz", "type": "image"},
            {"dataset": "labels", "path": folder / "labels.nii", "type": "segmentation"},
        ],
    )
    clean = folder / "clean"
    snakemake(
        folder,
        "--config",
        f"samples={sheet}",
        f"results={clean}",
        *SETTINGS,
    )
    return folder, sheet, digest(clean)


def start(folder, sheet, results):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--cores",
        "1",
        "--config",
        f"samples={sheet}",
        f"results={results}",
        *SETTINGS,
    ]
    return subprocess.Popen(
        cmd,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_for_build_job(proc, skip=2, timeout=120):
    """The PID of the (skip+1)-th pyramid job to start, once it runs."""
    seen = set()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            # a pyramid job: Snakemake runs the rule's script (a copy named after it)
            python = bool(cmd) and Path(cmd[0]).name.startswith("python")
            if python and cmd[-1].endswith("pyramid.py") and child.pid not in seen:
                seen.add(child.pid)
                if len(seen) > skip:
                    return child.pid
        time.sleep(0.01)
    raise AssertionError("no pyramid job started")


@pytest.mark.parametrize("victim", ["job", "snakemake"])
def test_killed_run_reruns_to_identical_bytes(inputs, victim):
    folder, sheet, clean = inputs
    results = folder / f"killed_{victim}"
    proc = start(folder, sheet, results)
    pid = wait_for_build_job(proc)
    os.kill(pid if victim == "job" else proc.pid, signal.SIGKILL)
    if victim == "snakemake":
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)
    assert not (results / "img" / "info").exists() or not (results / "labels" / "info").exists()
    if victim == "snakemake":  # Snakemake's own lock outlives a SIGKILL: the documented unlock
        snakemake(folder, "--unlock", "--config", f"samples={sheet}", f"results={results}")
    snakemake(
        folder,
        "--config",
        f"samples={sheet}",
        f"results={results}",
        *SETTINGS,
    )
    assert digest(results) == clean
    assert not list(results.rglob(".*.part"))
    check_pyramid(results / "img")
    written = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    snakemake(
        folder,
        "--config",
        f"samples={sheet}",
        f"results={results}",
        *SETTINGS,
    )
    # nothing left to do: no job ran, so no file was written again
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()} == written
