"""Reuse: imported as a Snakemake module by another workflow, and installed as a wheel."""

import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest

from conftest import ROOT, package_file, read_tensorstore

pytestmark = pytest.mark.workflow

HOST = """\
configfile: "config.yaml"


module ngprecomputed:
    snakefile: "{snakefile}"
    config: config["ngprecomputed"]


use rule * from ngprecomputed as ng_*


rule make_labels:
    output: "derived/labels.nii.gz"
    shell: "{python} make_labels.py {{output}}"


rule all:
    input: rules.ng_all.input
    default_target: True
"""

CONFIG = """\
ngprecomputed:
  results: out/neuroglancer
  upstream_sources: true
  samples:
    - {dataset: labels, path: derived/labels.nii.gz, type: segmentation}
    - {dataset: anatomical, path: "pkg://nibabel/tests/data/anatomical.nii", type: image}
"""

MAKE_LABELS = """\
import sys
import nibabel as nib
import numpy as np
labels = (np.arange(50 * 40 * 30, dtype=np.uint32).reshape(50, 40, 30) // 997) * 1000
nib.save(nib.Nifti1Image(labels, np.diag([2.0, 2.0, 2.0, 1.0])), sys.argv[1])
"""


def test_host_workflow_imports_the_module_and_converts_its_own_output(tmp_path):
    (tmp_path / "Snakefile").write_text(
        HOST.format(snakefile=ROOT / "Snakefile", python=sys.executable)
    )
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "make_labels.py").write_text(MAKE_LABELS)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ng_plan" in proc.stderr  # the host's file was planned once it existed
    out = tmp_path / "out" / "neuroglancer"
    expected = np.asanyarray(nib.load(tmp_path / "derived" / "labels.nii.gz").dataobj)
    np.testing.assert_array_equal(read_tensorstore(out / "labels", 0)[..., 0], expected)
    anatomical = np.asanyarray(
        nib.load(package_file("nibabel", "tests/data/anatomical.nii")).dataobj
    )
    np.testing.assert_array_equal(read_tensorstore(out / "anatomical", 0)[..., 0], anatomical)
    assert not (tmp_path / "results").exists()  # outputs only where the host said


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
    )
    (path,) = dist.glob("ngprecomputed-*.whl")
    return path


def test_wheel_carries_the_workflow(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for inner in [
        "Snakefile",
        "workflow/rules/volume.smk",
        "workflow/schemas/samples.schema.json",
        "config/config.yaml",
        "profiles/local/config.yaml",
    ]:
        assert any(n.endswith(f".data/data/share/ngprecomputed/{inner}") for n in names), inner


def test_installed_wheel_runs_the_packaged_workflow_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True
    )
    where = subprocess.run(
        [
            str(python),
            "-c",
            "from ngprecomputed.workflow_files import workflow_root; print(workflow_root())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(venv)), where  # the packaged copy, not this checkout
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "sheet.csv").write_text(
        "dataset,path,type\nanat,pkg://nibabel/tests/data/anatomical.nii,image\n"
    )
    proc = subprocess.run(
        [str(venv / "bin" / "ngprecomputed"), "run", "sheet.csv", "--", "--cores", "2"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = np.asanyarray(nib.load(package_file("nibabel", "tests/data/anatomical.nii")).dataobj)
    np.testing.assert_array_equal(read_tensorstore(work / "results" / "anat", 0)[..., 0], expected)
