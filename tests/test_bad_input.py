"""Bad input gets one clear line, a non-zero exit, nothing half-written, and spares the others."""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import check_pyramid, run_failing, snakemake, write_sheet
from ngprecomputed.errors import InputError
from ngprecomputed.settings import Options
from ngprecomputed.sheet import load_sheet

pytestmark = pytest.mark.workflow


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.nii.gz"
    nib.save(
        nib.Nifti1Image(np.arange(24 * 20 * 16, dtype=np.uint16).reshape(24, 20, 16), np.eye(4)),
        path,
    )
    return path


SHEET_ERRORS = [
    ("dataset,path\nx,good.nii.gz\n", "missing column 'type'"),
    (
        "dataset,path,type\nx,good.nii.gz,image\nx,good.nii.gz,image\n",
        "row 2 (dataset x), column dataset: duplicate of row 1",
    ),
    ("dataset,path,type\n../up,good.nii.gz,image\n", "row 1 (dataset ../up), column dataset"),
    ("dataset,path,type\nx,good.nii.gz,labels\n", "row 1 (dataset x), column type"),
    ("dataset,path,type\nx,nope.nii,image\n", "row 1 (dataset x), column path: no such file"),
    (
        "dataset,path,type,max_scales\nx,good.nii.gz,image,three\n",
        "row 1 (dataset x), column max_scales",
    ),
    (
        "dataset,path,type,chunk_size\nx,good.nii.gz,image,64x64\n",
        "row 1 (dataset x), column chunk_size",
    ),
    ("dataset,path,type,colour\nx,good.nii.gz,image,red\n", "unknown column 'colour'"),
    ("dataset,path,type\nx,good.nii.gz,image,extra\n", "row 1 has 4 cells, the header 3"),
    ("# only a comment\n\n", "empty sample sheet"),
]


@pytest.mark.parametrize(("text", "message"), SHEET_ERRORS)
def test_bad_sheet_stops_before_any_job_with_one_line(tmp_path, good, text, message):
    sheet = tmp_path / "samples.csv"
    sheet.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_sheet(sheet, Options())
    proc = snakemake(tmp_path, "--config", f"samples={sheet}", "results=out", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and message in errors[0] and "samples.csv" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["samples.tsv", "samples.txt"])
def test_a_tsv_sheet(tmp_path, good, name):
    """Tab-separated sheets (Snakemake's other convention): by suffix, or a header of tabs."""
    sheet = tmp_path / name
    sheet.write_text("# a comment\ndataset\tpath\ttype\tmax_scales\nx, y\tgood.nii.gz\timage\t2\n")
    with pytest.raises(InputError, match="row 1 \\(dataset x, y\\), column dataset"):
        load_sheet(sheet, Options())  # a comma is no separator here: one (bad) name
    sheet.write_text("dataset\tpath\ttype\tmax_scales\nxy\tgood.nii.gz\timage\t2\n")
    (d,) = load_sheet(sheet, Options())
    assert (d.name, Path(d.path).name, d.options.max_scales) == ("xy", "good.nii.gz", 2)


def test_relative_paths_resolve_against_the_sheet_folder(tmp_path, good):
    (tmp_path / "sheets").mkdir()
    sheet = tmp_path / "sheets" / "s.csv"
    sheet.write_text("dataset,path,type\nx,../good.nii.gz,image\n")
    assert Path(load_sheet(sheet, Options())[0].path).resolve() == good.resolve()


def bad_files(folder):
    """Inputs that are wrong in the ways users meet, each with the words its error must say."""
    rng = np.random.default_rng(0)
    out = {}
    a = rng.integers(0, 255, (30, 30, 30), dtype=np.uint8)
    full = folder / "full.nii"
    nib.save(nib.Nifti1Image(a, np.eye(4)), full)
    data = full.read_bytes()
    (folder / "truncated.nii").write_bytes(data[: len(data) // 2])
    out["truncated"] = (folder / "truncated.nii", "truncated")
    (folder / "truncated.nii.gz").write_bytes(gzip.compress(data)[:4000])
    out["truncated_gz"] = (folder / "truncated.nii.gz", "truncated")
    (folder / "garbage.nii").write_bytes(b"not a nifti file" * 40)
    out["garbage"] = (folder / "garbage.nii", "nibabel cannot read it as NIfTI-1")
    nib.save(
        nib.Nifti1Image(rng.random((6, 6, 6, 2, 2)).astype(np.float32), np.eye(4)),
        folder / "five_d.nii",
    )
    out["five_d"] = (folder / "five_d.nii", "5D")
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6), np.uint8), np.eye(4)), folder / "zero.nii")
    with open(folder / "zero.nii", "r+b") as f:  # dim[2] = 0 (nibabel will not write it)
        f.seek(44)
        f.write(np.int16(0).tobytes())
    out["zero_axis"] = (folder / "zero.nii", "zero length")
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.complex64), np.eye(4)), folder / "complex.nii")
    out["complex"] = (folder / "complex.nii", "complex")
    return out


def test_bad_files_fail_alone_with_one_line_each(tmp_path, good):
    bad = bad_files(tmp_path)
    rows = [{"dataset": "good", "path": good, "type": "image"}]
    rows += [{"dataset": name, "path": path, "type": "image"} for name, (path, _) in bad.items()]
    sheet = write_sheet(tmp_path / "samples.csv", rows)
    out = tmp_path / "out"
    proc, errors = run_failing(tmp_path, sheet, out)
    for name, (path, words) in bad.items():
        mine = errors.get(name, [])
        assert len(mine) == 1, (name, errors)
        assert f"{path.name}:" in mine[0] and words in mine[0], mine
        assert not (out / name / "info").exists()
        assert not any((out / name).rglob("*-*_*-*_*-*")), f"{name}: chunks left behind"
    assert f"ngprecomputed: {len(bad)} failed:" in proc.stderr
    assert all(errors[name][0].startswith(f"dataset {name}: ") for name in bad), errors
    check_pyramid(out / "good")
