"""Every job type stays under the memory it declares (``mem_mb``), measured on inputs larger than
its slab: each job logs its exact peak (the kernel's VmHWM) beside what it was given. NIfTI
slabs, ``.nii.gz`` slabs through the gzip index, the sharded path (decompressed once, cube
slabs), re-encoding, mesh regions, surfaces, finalize and QC; and a dataset's job with its slabs
in forked workers (the main process and its workers together), small datasets two to a job."""

import re
from collections import defaultdict

import nibabel as nib
import numpy as np
import pytest

from conftest import snakemake, write_sheet

pytestmark = pytest.mark.workflow

PEAK = re.compile(r"peak memory (\d+) MiB of (\d+) MB given")
WORKERS = re.compile(r"worker processes: peak memory up to (\d+) MiB each")
VOXELS_PER_JOB = 2_000_000  # the MNI T1 has 8.7 M voxels: several slabs


@pytest.fixture(scope="module")
def job_logs(tmp_path_factory, data):
    work = tmp_path_factory.mktemp("memory")
    t1 = nib.load(data["mni_t1"])
    nii = work / "t1.nii"  # uncompressed: read by offset
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj), t1.affine, t1.header), nii)
    out = work / "out"
    settings = [f"results={out}", f"voxels_per_job={VOXELS_PER_JOB}", "mesh_region_voxels=200000"]
    # each slab a job of its own (as for a volume beyond job_voxels)
    fanned = [*settings, "job_voxels=1"]
    first = write_sheet(
        work / "first.csv",
        [
            {"dataset": "t1_nii", "path": nii, "type": "image"},
            {"dataset": "t1_gz", "path": data["mni_t1"], "type": "image"},
            {"dataset": "t1_sharded", "path": data["mni_t1"], "type": "image", "sharded": "true"},
            {"dataset": "aal", "path": data["aal"], "type": "segmentation", "meshes": "generate"},
        ],
    )
    snakemake(work, "--config", f"samples={first}", *fanned)
    # one job per dataset with its slabs in two workers; small datasets two to a job
    pooled = write_sheet(
        work / "pooled.csv",
        [
            {"dataset": "t1_pooled", "path": nii, "type": "image"},
            {"dataset": "t1_pooled_gz", "path": data["mni_t1"], "type": "image"},
            {"dataset": "small_a", "path": data["aal"], "type": "segmentation"},
            {"dataset": "small_b", "path": data["anatomical"], "type": "image"},
        ],
    )
    snakemake(work, "--config", f"samples={pooled}", f"results={out}", "voxels_per_job=20000000")
    second = write_sheet(
        work / "second.csv",
        [{"dataset": "t1_png", "path": out / "t1_nii", "type": "image", "encoding": "png"}],
    )
    snakemake(work, "--config", f"samples={second}", *fanned, "qc=false")
    return out / "logs"


def job_type(log) -> str:
    return re.sub(r"\d+", "", log.stem)


def test_every_job_stays_under_its_declared_memory(job_logs):
    peaks: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for log in sorted(job_logs.glob("*/*.log")):
        if log.name == "convert.log":  # a dataset's own log inside a job of several
            continue
        text = log.read_text()
        found = PEAK.search(text)
        assert found, f"{log}: no peak memory line"
        peak_mib, given_mb = int(found[1]), int(found[2])
        workers = WORKERS.search(text)  # forked workers (two at most: --cores 2) hold slabs too
        if workers:
            peak_mib += 2 * int(workers[1])
        peaks[job_type(log)].append((peak_mib, given_mb, f"{log.parent.name}/{log.name}"))
        assert peak_mib * 2**20 <= given_mb * 1e6, f"{log}: {peak_mib} MiB > {given_mb} MB"
    wanted = {"stage_slab", "gzip_index", "decompress", "finalize", "mesh_region", "meshes"}
    wanted |= {"reencode", "qc", "job"}
    assert wanted <= set(peaks), sorted(peaks)
    for kind, rows in sorted(peaks.items()):  # the table of the closing note (pytest -s)
        peak, given, where = max(rows)
        print(f"| {kind} | {given} | {peak} | {where} | {len(rows)} jobs |")


def test_slabs_are_smaller_than_the_volume(job_logs):
    """The pyramid jobs really read parts: several stage-0 slabs per T1 dataset."""
    for name in ("t1_nii", "t1_gz", "t1_sharded"):
        assert len(list((job_logs / name).glob("stage0_slab*.log"))) > 2, name
