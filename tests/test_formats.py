"""Every volume format nibabel reads converts to nibabel's values, from nibabel's own packaged
test files (found in the installed package, never copied): NIfTI-1/2, MGH/MGZ, MINC1, MINC2,
PAR/REC, AFNI (``.BRIK`` and ``.BRIK.gz``), ECAT; scaled files, 4D files.

What scale 0 must be is computed here from ``np.asanyarray(img.dataobj)`` and the documented
type rules (nibabel returns another type than it stores: scaled, stored float32; float64:
float32; other axes than the three spatial ones: channels), with the spatial axes found from the
files themselves (a MINC file's dimension names read with h5py or scipy's netCDF reader).
"""

import gzip
import importlib.util
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import check_pyramid, run_failing, snakemake, write_sheet
from ngprecomputed.errors import InputError
from ngprecomputed.plan import make_plan
from ngprecomputed.settings import Options
from ngprecomputed.sources import open_source
from ngprecomputed.values import ValueMismatch, check_sample, to_stored

NIB_DATA = Path(next(iter(importlib.util.find_spec("nibabel").submodule_search_locations)))
NIB_DATA = NIB_DATA / "tests" / "data"
DATA_FILES = (".BRIK", ".BRIK.gz", ".REC", ".img", ".img.gz")  # read through their header


def _load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel warns about some of its odd test files
        return nib.ecat.load(path) if path.suffix == ".v" else nib.load(path)


def volume_files() -> list[Path]:
    """nibabel's test files that nibabel itself reads whole as a volume of at most 4D."""
    out = []
    for path in sorted(NIB_DATA.iterdir()):
        if not path.is_file() or path.name.endswith(DATA_FILES) or path.suffix in (".py", ".m"):
            continue
        try:
            img = _load(path)
            if not isinstance(img, nib.spatialimages.SpatialImage) or len(img.shape) > 4:
                continue
            data = np.asanyarray(img.dataobj)
        except Exception:
            continue  # not a volume, or a file nibabel itself cannot read
        if data.dtype.kind in "uifb" and data.size:
            out.append(path)
    return out


FILES = volume_files()


def minc_dimensions(path: Path) -> list[str] | None:
    """A MINC file's dimension names, read without nibabel (HDF5 for MINC2, netCDF for MINC1)."""
    if path.suffix != ".mnc":
        return None
    with open(path, "rb") as f:
        hdf5 = f.read(8) == b"\x89HDF\r\n\x1a\n"
    if hdf5:
        import h5py

        with h5py.File(path, "r") as f:
            order = f["minc-2.0/image/0/image"].attrs["dimorder"]
            order = order.decode() if isinstance(order, bytes) else str(order)
            return order.split(",")
    from scipy.io import netcdf_file

    with netcdf_file(path, "r", mmap=False) as f:
        return [d.decode() if isinstance(d, bytes) else d for d in f.variables["image"].dimensions]


def expected(path: Path) -> np.ndarray:
    """Scale 0 as the documented rules make it from nibabel's array: ``[x, y, z, channel]``."""
    img = _load(path)
    data = np.asanyarray(img.dataobj)
    stored = img.get_data_dtype(0) if isinstance(img, nib.ecat.EcatImage) else img.get_data_dtype()
    names = minc_dimensions(path)
    if names is not None:  # spatial axes first, in the file's order, then the others
        spatial = [i for i, n in enumerate(names) if n.endswith("space")]
        data = np.transpose(data, spatial + [i for i in range(data.ndim) if i not in spatial])
    data = data.reshape(*data.shape[:3], *[1] * (3 - data.ndim), -1, order="F")
    scaled = data.dtype.newbyteorder("=") != np.dtype(stored).newbyteorder("=")
    if scaled or data.dtype.kind == "f":
        return data.astype(np.float32)
    return data.astype(data.dtype.newbyteorder("="))


def test_every_format_scaled_and_4d_files_are_covered():
    """The files below cover what the issue names; if nibabel stops shipping one, this says so
    instead of the other tests passing on fewer formats."""
    by_format: dict[str, list[Path]] = {}
    for path in FILES:
        by_format.setdefault(type(_load(path)).__name__, []).append(path)
    wanted = ["Nifti1Image", "Nifti2Image", "MGHImage", "Minc1Image", "Minc2Image"]
    wanted += ["PARRECImage", "AFNIImage", "EcatImage"]
    assert set(wanted) <= set(by_format), sorted(by_format)
    for klass in ["Nifti1Image", "Minc1Image", "Minc2Image", "PARRECImage", "AFNIImage"]:
        assert any(
            np.asanyarray(_load(p).dataobj).dtype != _load(p).get_data_dtype()
            for p in by_format[klass]
        ), f"no scaled {klass} file"
    for klass in ["Nifti1Image", "Minc1Image", "Minc2Image", "PARRECImage", "AFNIImage"]:
        assert any(len(_load(p).shape) == 4 for p in by_format[klass]), f"no 4D {klass} file"
    assert any(p.with_name(p.name[: -len(".HEAD")] + ".BRIK.gz").exists() for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_reads_equal_nibabel_after_the_type_rules(path):
    want = expected(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = open_source(path)
        plan = make_plan("d", source, Options())
        assert source.shape == want.shape
        assert plan.data_type == want.dtype.name
        # what the reader says it returns is what nibabel returns for the whole volume
        img = _load(path)
        if type(img.dataobj) is nib.arrayproxy.ArrayProxy and not img.get_data_dtype().names:
            # told without a read for these: the same as what nibabel returns for the whole
            returned, stored = np.asanyarray(img.dataobj).dtype, img.dataobj.dtype
            assert source.scaled == (returned.newbyteorder("=") != stored.newbyteorder("="))
        whole = tuple((0, n) for n in source.shape[:3])
        np.testing.assert_array_equal(to_stored(source.read(whole), plan), want)
        # a box inside, of every axis (slabs read only their part)
        box = tuple((n // 3, max(n // 3 + 1, n - n // 4)) for n in source.shape[:3])
        part = want[tuple(slice(lo, hi) for lo, hi in box)]
        np.testing.assert_array_equal(to_stored(source.read(box), plan), part)


def test_the_sample_check_catches_unscaled_values():
    """The check in the scale-0 job: values read without nibabel's scaling (the bug that wrote
    a MINC1 file of values near 0.21 as zeros) are refused, nibabel's own values pass."""
    path = NIB_DATA / "minc1_1_scale.mnc"
    source = open_source(path)
    plan = make_plan("d", source, Options())
    box = tuple((0, n) for n in source.shape[:3])
    good = to_stored(source.read(box), plan)
    check_sample(source, plan, box, good)
    from scipy.io import netcdf_file

    with netcdf_file(path, "r", mmap=False) as f:  # the stored integers, unscaled
        raw = np.array(f.variables["image"][:])[..., None]
    assert raw.shape == good.shape and raw.max() > 1
    with pytest.raises(ValueMismatch, match="nibabel reads"):
        check_sample(source, plan, box, raw.astype(np.float32))
    wrong = replace_plan(plan, data_type="uint8", exact=True)  # stored in uint8, as the bug did
    with pytest.raises(ValueMismatch, match=r"minc1_1_scale\.mnc: voxel"):
        check_sample(source, wrong, box, to_stored(source.read(box), wrong))
    asked = replace_plan(plan, data_type="uint8", exact=False)  # data_type asked for: rounding
    check_sample(source, asked, box, to_stored(source.read(box), asked))


def replace_plan(plan, **fields):
    from dataclasses import replace

    return replace(plan, **fields)


def test_unreadable_files_name_the_file_and_the_format(tmp_path):
    par = tmp_path / "T1.PAR"
    shutil.copy(NIB_DATA / "T1.PAR", par)  # its .REC is missing
    with pytest.raises(InputError, match=r"T1\.PAR: nibabel cannot read it as PAR/REC"):
        open_source(par)
    bad = tmp_path / "scan.mnc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(InputError, match=r"scan\.mnc: nibabel cannot read it as MINC2"):
        open_source(bad)
    odd = tmp_path / "scan.xyz"
    odd.write_bytes(b"hello")
    with pytest.raises(InputError, match=r"scan\.xyz: not a format nibabel reads"):
        open_source(odd)
    head = tmp_path / "example4d+orig.HEAD"
    shutil.copy(NIB_DATA / head.name, head)  # and no .BRIK
    with pytest.raises(InputError, match=r"example4d\+orig\.HEAD"):
        open_source(head)


def sheet_rows(files: list[Path]) -> list[dict]:
    return [
        {"dataset": p.name.replace("+", "_"), "path": p, "type": "image", "chunk_size": 8}
        for p in files
    ]


def check_against_nibabel(out: Path, rows: list[dict]) -> None:
    for row in rows:
        result = check_pyramid(out / row["dataset"])
        np.testing.assert_array_equal(result["scale0"], expected(Path(row["path"])), row["dataset"])


@pytest.mark.workflow
def test_sheet_of_every_format_converts_to_nibabel_values(tmp_path):
    """One real run over every file above (small chunks: several scales): TensorStore (strict)
    and CloudVolume read scale 0 as nibabel's values, each coarser scale as the mean of the one
    above."""
    rows = sheet_rows(FILES)
    sheet = write_sheet(tmp_path / "formats.csv", rows)
    out = tmp_path / "out"
    snakemake(tmp_path, "--config", f"samples={sheet}", f"results={out}", "qc=false")
    check_against_nibabel(out, rows)


@pytest.mark.workflow
@pytest.mark.parametrize("fanned", [True, False], ids=["a-job-per-slab", "slabs-in-one-job"])
def test_slabs_of_other_formats_read_their_part(tmp_path, fanned):
    """Many slabs per dataset: of MINC, PAR/REC and AFNI files, a .BRIK.gz (through its gzip
    index when each slab is a job, decompressed once when one job does them all), and sharded
    (its cube slabs read it decompressed once)."""
    names = ["example4d+orig.HEAD", "minc2_4d.mnc", "minc1_4d.mnc", "phantom_varscale.PAR"]
    rows = sheet_rows([NIB_DATA / n for n in names])
    rows.append({**rows[0], "dataset": "brik_gz_sharded", "sharded": "true"})
    sheet = write_sheet(tmp_path / "formats.csv", rows)
    out = tmp_path / "out"
    snakemake(
        tmp_path,
        "--config",
        f"samples={sheet}",
        f"results={out}",
        "voxels_per_job=4096",
        f"job_voxels={1 if fanned else 2**33}",
        "qc=false",
    )
    work = out / ".work" / rows[0]["dataset"]
    assert (work / "source.gzidx").is_file() == fanned
    assert len(list((work / "stage0").glob("*.json"))) > (2 if fanned else -1)
    if not fanned:  # one job, with its slabs in workers
        assert "worker processes" in (out / "logs" / rows[0]["dataset"] / "job.log").read_text()
    check_against_nibabel(out, rows)


@pytest.mark.workflow
def test_bad_files_of_other_formats_fail_alone_with_one_line(tmp_path):
    par = tmp_path / "T2.PAR"
    shutil.copy(NIB_DATA / "T2.PAR", par)  # no .REC
    head = tmp_path / "example4d+orig.HEAD"
    shutil.copy(NIB_DATA / head.name, head)
    whole = (NIB_DATA / "example4d+orig.BRIK.gz").read_bytes()
    brik = gzip.decompress(whole)
    # a .BRIK.gz cut short: its size says nothing, its decompression does
    (tmp_path / "example4d+orig.BRIK.gz").write_bytes(gzip.compress(brik)[: len(whole) // 2])
    sheet = write_sheet(
        tmp_path / "bad.csv",
        [
            {"dataset": "par", "path": par.name, "type": "image"},
            {"dataset": "afni", "path": head.name, "type": "image"},
            {"dataset": "good", "path": NIB_DATA / "minc2_4d.mnc", "type": "image"},
        ],
    )
    out = tmp_path / "out"
    proc, errors = run_failing(tmp_path, sheet, out)
    assert set(errors) == {"par", "afni"}, proc.stderr[-3000:]
    assert "T2.PAR" in errors["par"][0] and "PAR/REC" in errors["par"][0]
    assert "example4d+orig" in errors["afni"][0] and "truncated" in errors["afni"][0]
    assert not (out / "afni" / "info").exists()
    check_pyramid(out / "good")
