"""Scale-out benchmark: job sizes from 10 MB to 1 TB, the DAG of a 10^4-job plan, and a 4 G voxel
volume converted in bounded memory, on 2 cores vs 1 and vs neuroglancer-scripts.

    python benchmarks/scale_out.py [--out benchmarks/out] [--skip-big]

1. Job table: ``ngprecomputed stats --shape`` (the planner, from a header alone) for cubic uint8
   volumes of 10 MB to 1 TB at the default ``voxels_per_job``: jobs, largest job's ``mem_mb`` and
   ``runtime``.
2. DAG: ``snakemake -n`` on a sparse uncompressed NIfTI (a header and a hole: no disk used) planned
   into about 10^4 jobs (``voxels_per_job`` 2^22); the wall time of the dry run.
3. Big: a 1576 x 1864 x 1512 uint8 NIfTI (4.4 G voxels, the MNI T1 repeated 8 times per axis,
   written section by section, uncompressed) converted by the workflow with ``--cores 2`` and
   ``--cores 1``, and by their ``volume-to-precomputed-pyramid``. Every job's peak (VmHWM, which
   the job logs) is compared with the ``mem_mb`` Snakemake gave it (its benchmark record's
   resources are in the log).

Results go to stdout and to benchmarks/scale_out.md (the README quotes them).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, T1, CommandFailed, measure, package_file, their_image  # noqa: E402

RESULTS_MD = ROOT / "benchmarks" / "scale_out.md"
SIZES = {"10 MB": 10**7, "100 MB": 10**8, "1 GB": 10**9, "10 GB": 10**10, "100 GB": 10**11}
SIZES["1 TB"] = 10**12
JOB_LINE = re.compile(r"(\d+) jobs, largest mem_mb (\d+), runtime (\d+) min")


def job_table() -> list[str]:
    out = [
        "| volume (uint8) | shape | pyramid jobs | largest job mem_mb | largest job runtime |",
        "|---|---|---|---|---|",
    ]
    for label, n in SIZES.items():
        side = round(n ** (1 / 3))
        text = subprocess.run(
            ["ngprecomputed", "stats", "--shape", *[str(side)] * 3, "--voxel-mm", "0.02"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        jobs, mem, runtime = JOB_LINE.search(text).groups()
        out.append(f"| {label} | {side}^3 | {jobs} | {mem} | {runtime} min |")
    return out


def sparse_nifti(path: Path, shape: tuple[int, int, int]) -> Path:
    """An uncompressed NIfTI whose data is a hole: plans like a real one, costs no disk."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_zooms((0.02, 0.02, 0.02))
    header.set_sform(np.diag([0.02, 0.02, 0.02, 1.0]), code=1)
    with path.open("wb") as f:
        header.write_to(f)
        f.write(b"\0" * (352 - f.tell()))
        f.truncate(352 + int(np.prod(shape)))
    return path


def dag_time(out: Path) -> list[str]:
    work = out / "dag"
    work.mkdir(parents=True, exist_ok=True)
    source = sparse_nifti(work / "sparse.nii", (2600, 2600, 2600))
    sheet = work / "sheet.csv"
    sheet.write_text(f"dataset,path,type\nsparse,{source},image\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--cores", "2"]
    cmd += [
        "--config",
        f"samples={sheet}",
        f"results={work / 'results'}",
        "voxels_per_job=4194304",
        "qc=false",
    ]
    start = time.perf_counter()
    text = subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    total = re.search(r"^total\s+(\d+)", text, re.M)
    jobs = total.group(1) if total else "?"
    return [
        f"- `snakemake -n` on a plan of {jobs} jobs (2600^3 uint8, voxels_per_job 2^22): "
        f"{wall:.1f} s (target < 30 s)"
    ]


def big_volume(path: Path) -> Path:
    """The MNI T1 repeated 8 times per axis, written section by section (bounded memory)."""
    img = nib.load(package_file(*T1))
    factor = 8
    shape = tuple(n * factor for n in img.shape[:3])
    if path.exists() and nib.load(path).shape == shape:
        return path
    print(f"making {path.name} {shape}", file=sys.stderr)
    data = np.asanyarray(img.dataobj).astype(np.uint8)
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    affine = img.affine.copy()
    affine[:3, :3] /= factor
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    tmp = path.with_name(f"tmp_{path.name}")
    with tmp.open("wb") as f:
        header.write_to(f)
        f.write(b"\0" * (352 - f.tell()))
        for k in range(shape[2]):
            section = np.repeat(np.repeat(data[:, :, k // factor], factor, 0), factor, 1)
            f.write(np.ascontiguousarray(section.T).tobytes())
    tmp.replace(path)
    return path


def ours_big(volume: Path, work: Path, cores: int, log: Path):
    sheet = work.with_name(f"{work.name}.csv")
    sheet.parent.mkdir(parents=True, exist_ok=True)
    sheet.write_text(f"dataset,path,type\nbig,{volume},image\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(cores)]
    cmd += ["--config", f"samples={sheet}", f"results={work / 'results'}", "qc=false"]
    return measure([cmd], work, log)


def job_memory(results: Path, log: Path) -> tuple[int, float, int]:
    """Jobs, the largest peak / mem_mb ratio, and how many jobs exceeded their mem_mb."""
    declared = {}
    text = log.read_text()
    for block in text.split("\n\n"):
        m_log = re.search(r"log: (\S+\.log)", block)
        m_mem = re.search(r"mem_mb=(\d+)", block)
        if m_log and m_mem:
            declared[Path(m_log.group(1)).name] = int(m_mem.group(1))
    worst, over, jobs = 0.0, 0, 0
    for job_log in sorted((results / "logs" / "big").glob("*.log")):
        m = re.search(r"peak memory (\d+) MiB", job_log.read_text())
        if not m or job_log.name not in declared:
            continue
        jobs += 1
        ratio = int(m.group(1)) * 2**20 / (declared[job_log.name] * 1e6)
        worst = max(worst, ratio)
        over += ratio > 1
    return jobs, worst, over


def big(out: Path) -> list[str]:
    volume = big_volume(out / "inputs" / "t1_x8.nii")
    lines = []
    runs = {}
    for cores in (2, 1):
        work = out / "ours" / f"big_cores{cores}"
        log = out / "logs" / f"ours_big_cores{cores}.log"
        runs[cores] = ours_big(volume, work, cores, log)
        jobs, worst, over = job_memory(work / "results", log)
        lines.append(
            f"- ours `--cores {cores}`: {runs[cores].wall:.1f} s wall; {jobs} jobs; largest job "
            f"peak {runs[cores].steps[0].peak:.0f} MiB tree / worst job at {worst:.0%} of its "
            f"mem_mb; {over} jobs over their mem_mb"
        )
    lines.append(
        f"- speed-up `--cores 2` vs `--cores 1`: {runs[1].wall / runs[2].wall:.2f}x "
        "(target >= 1.7x)"
    )
    try:
        theirs = measure(
            their_image(volume, out / "theirs" / "big" / "out"),
            out / "theirs" / "big",
            out / "logs" / "theirs_big.log",
        )
        lines.append(
            f"- neuroglancer-scripts volume-to-precomputed-pyramid: {theirs.wall:.1f} s wall, "
            f"peak {theirs.peak:.0f} MiB (the whole volume in memory)"
        )
    except CommandFailed as exc:
        lines.append(f"- neuroglancer-scripts failed: {str(exc).splitlines()[0]}")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    p.add_argument("--skip-big", action="store_true", help="only the job table and the DAG")
    a = p.parse_args()
    out = a.out.resolve()
    lines = ["Machine: 2 cores, 24 GiB.", "", "Job sizes (`ngprecomputed stats --shape`):", ""]
    lines += job_table() + ["", "DAG:", ""] + dag_time(out)
    if not a.skip_big:
        lines += ["", "A 4.4 G voxel uint8 volume (uncompressed NIfTI):", ""] + big(out)
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.skip_big:
        RESULTS_MD.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
