"""Slice stacks through the real workflow: the same voxels as the NIfTI path, bounded memory,
and one clear line for a bad stack."""

import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from test_slices import write_ras_png, write_ria_tiff

from conftest import check_pyramid, run_failing, snakemake, write_big_stack, write_sheet
from ngprecomputed.plan import make_plan
from ngprecomputed.resources import job_mem_mb
from ngprecomputed.settings import Options
from ngprecomputed.sources import open_source

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def mni(data):
    return np.asanyarray(nib.load(data["mni_t1"]).dataobj)


def test_png_and_16bit_tiff_stacks_equal_the_nifti_path(tmp_path, data, mni):
    png = write_ras_png(tmp_path / "png", mni)  # axial sections, rows going Anterior
    tiff = write_ria_tiff(tmp_path / "tiff", mni)  # coronal, rows going Inferior, x200, 16-bit
    sheet = write_sheet(
        tmp_path / "samples.csv",
        [
            {"dataset": "nifti", "path": data["mni_t1"], "type": "image"},
            {
                "dataset": "png",
                "path": png.name,
                "type": "image",
                "voxel_size": "1",
                "orientation": "RAS",
            },
            {
                "dataset": "tiff",
                "path": tiff.name,
                "type": "image",
                "voxel_size": "1",
                "orientation": "RIA",
            },
        ],
    )
    out = tmp_path / "out"
    snakemake(tmp_path, "--config", f"samples={sheet}", f"results={out}")
    nifti = check_pyramid(out / "nifti")["scale0"]
    np.testing.assert_array_equal(check_pyramid(out / "png")["scale0"], nifti)
    tiff16 = check_pyramid(out / "tiff")
    assert tiff16["info"]["data_type"] == "uint16"
    np.testing.assert_array_equal(tiff16["scale0"], nifti.astype(np.uint16) * 200)


def test_a_slab_job_stays_within_its_declared_memory(tmp_path):
    """300 sections of 2000x2000 (1.2 GB): one job reads one slab, not the stack."""
    (tmp_path / "big").mkdir()
    stack = write_big_stack(tmp_path / "big", 300, 2000, 16)
    options = Options(voxel_size=(0.02, 0.02, 0.02), voxels_per_job=2**26)
    plan = make_plan("big", open_source(stack, voxel_size=options.voxel_size), options)
    assert plan.stages[0].count > 10
    declared = job_mem_mb(plan, 0, 3)
    log = tmp_path / "job.log"
    # one slab in a fresh interpreter, as a `pyramid` job runs it (the plan handed over)
    (tmp_path / "plan.json").write_text(plan.to_json())
    code = "\n".join(
        [
            "import sys",
            "from pathlib import Path",
            "from ngprecomputed.job import job",
            "from ngprecomputed.plan import Plan",
            "from ngprecomputed.pyramid import build_slab",
            "with job(sys.argv[2]):",
            "    build_slab(Plan.load(sys.argv[1]), Path(sys.argv[3]), 0, 3, Path(sys.argv[4]))",
        ]
    )
    args = [tmp_path / "plan.json", log, tmp_path / "out", tmp_path / "m.json"]
    subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True)
    peak = float(re.search(r"peak memory (\d+) MiB", log.read_text()).group(1))
    assert peak <= declared < 1200 / 4, (peak, declared)  # the stack is 1200 MB
    assert peak > 64  # the measurement sees the slab (64 M voxels), not only the interpreter


def bad_stacks(folder):
    """Stacks that are wrong in the ways users meet, each with the words its error must say."""
    out = {}
    for name in ("size", "dtype", "notimage"):
        (folder / name).mkdir()
        for k in range(3):
            Image.fromarray(np.zeros((8, 6), np.uint8)).save(folder / name / f"s{k}.png")
    Image.fromarray(np.zeros((9, 6), np.uint8)).save(folder / "size" / "s3.png")
    out["size"] = ("s3.png", "same size")
    Image.fromarray(np.zeros((8, 6), np.uint16)).save(folder / "dtype" / "s3.png")
    out["dtype"] = ("s3.png", "16-bit")
    (folder / "notimage" / "s3.png").write_bytes(b"this is not a png")
    out["notimage"] = ("s3.png", "not a readable image")
    (folder / "empty").mkdir()
    out["empty"] = ("empty", "no TIFF, PNG or JPEG images")
    return out


def test_bad_stacks_and_encodings_fail_alone_with_one_line(tmp_path, data):
    bad = bad_stacks(tmp_path)
    rows = [{"dataset": n, "path": n, "type": "image", "voxel_size": "1"} for n in bad]
    rows += [
        {"dataset": "jpeg_labels", "path": data["aal"], "type": "segmentation", "encoding": "jpeg"},
        {"dataset": "jpeg_float", "path": data["stat_map"], "type": "image", "encoding": "jpeg"},
        {"dataset": "good", "path": data["anatomical"], "type": "image"},
    ]
    sheet = write_sheet(tmp_path / "samples.csv", rows)
    out = tmp_path / "out"
    _, errors = run_failing(tmp_path, sheet, out)
    expect = {
        **bad,
        "jpeg_labels": ("atlas_aal.nii.gz", "jpeg"),
        "jpeg_float": ("image_10426.nii.gz", "jpeg"),
    }
    for name, (filename, phrase) in expect.items():
        mine = errors.get(name, [])
        assert len(mine) == 1 and filename in mine[0] and phrase in mine[0], (name, errors)
        assert not (out / name).exists() or not any((out / name).iterdir())
    check_pyramid(out / "good")
