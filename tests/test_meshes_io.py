"""Mesh inputs (GIfTI, FreeSurfer, VTK/OBJ/PLY/STL/OFF), legacy precomputed meshes, VTK output.

Inputs are written by independent writers (nibabel, plain text, VTK's writers); legacy meshes
are read back by CloudVolume (also through ``ngprecomputed serve`` for ``<id>.json``
manifests) and by neuroglancer-scripts; expected coordinates come from plain numpy.
"""

import json
import re
import threading
import warnings

import nibabel as nib
import numpy as np
import pytest
from cloudvolume import CloudVolume

from conftest import package_file
from ngprecomputed.errors import InputError
from ngprecomputed.meshes import legacy
from ngprecomputed.meshes.legacy import (
    fragment_bytes,
    to_model_space,
    vtk_ascii,
    write_mesh_info,
    write_segment,
    write_vtk,
)
from ngprecomputed.meshes.mesh import Mesh
from ngprecomputed.meshes.read import read_mesh
from ngprecomputed.serve import make_server

PIAL = {
    side: ("nilearn", f"datasets/data/fsaverage5/pial_{side}.gii.gz") for side in ("left", "right")
}

# model (voxel corners, nm) -> world (nm) of a 2 mm volume with a mirrored x axis, like
# transform.json of an MNI-space NIfTI (the half-voxel shift is part of the translation)
TRANSFORM_NM = [
    [-1.0, 0.0, 0.0, 91e6],
    [0.0, 1.0, 0.0, -127e6],
    [0.0, 0.0, 1.0, -73e6],
    [0.0, 0.0, 0.0, 1.0],
]
SIZE = (91, 109, 91)
RESOLUTION = (2e6, 2e6, 2e6)


def gifti_arrays(path):
    image = nib.load(path)
    points = image.get_arrays_from_intent("NIFTI_INTENT_POINTSET")[0].data
    triangles = image.get_arrays_from_intent("NIFTI_INTENT_TRIANGLE")[0].data
    return points.astype(np.float64), triangles


def expected_model_nm(points_mm, transform_nm, extra_mm=None):
    """Plain numpy: extra affine in mm, then mm -> nm, then world -> model."""
    p = np.column_stack([points_mm, np.ones(len(points_mm))])
    if extra_mm is not None:
        p = p @ np.asarray(extra_mm, dtype=np.float64).T
    p[:, :3] *= 1e6
    return (p @ np.linalg.inv(np.asarray(transform_nm)).T)[:, :3]


def assert_float32_close(got, expected):
    """Equal to the float64 expectation up to one float32 step at the largest coordinate."""
    got = np.asarray(got)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= np.spacing(np.float32(np.abs(expected).max()))


def make_segmentation(root, labels: np.ndarray):
    """A one-scale uint32 segmentation, raw encoding, one chunk, with ``"mesh": "mesh"``."""
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": "uint32",
        "num_channels": 1,
        "mesh": "mesh",
        "scales": [
            {
                "key": "2mm",
                "size": list(labels.shape),
                "resolution": list(RESOLUTION),
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [list(labels.shape)],
                "encoding": "raw",
            }
        ],
    }
    (root / "2mm").mkdir(parents=True)
    (root / "info").write_text(json.dumps(info))
    name = "_".join(f"0-{n}" for n in labels.shape)
    (root / "2mm" / name).write_bytes(labels.astype("<u4").tobytes(order="F"))
    (root / "transform.json").write_text(json.dumps(TRANSFORM_NM))
    return root


def open_volume(url):
    return CloudVolume(url, fill_missing=False, progress=False, cache=False)


@pytest.fixture(scope="module")
def pial_dataset(tmp_path_factory):
    """fsaverage5's pial surfaces as segments 1 (left) and 2 (right) of a small segmentation,
    written through read_mesh -> to_model_space -> write_segment."""
    root = tmp_path_factory.mktemp("pial") / "atlas"
    labels = np.zeros(SIZE, np.uint32)
    labels[10:40, 20:80, 20:70] = 1
    labels[50:80, 20:80, 20:70] = 2
    make_segmentation(root, labels)
    write_mesh_info(root / "mesh")
    sources = {}
    for segment, side in ((1, "left"), (2, "right")):
        path = package_file(*PIAL[side])
        mesh = to_model_space(read_mesh(path), json.loads((root / "transform.json").read_text()))
        write_segment(root / "mesh", segment, [(f"{segment}:0:pial_{side}", mesh)])
        sources[segment] = path
    return root, labels, sources


def test_pial_surfaces_read_back_by_cloudvolume(pial_dataset):
    root, labels, sources = pial_dataset
    vol = open_volume(f"file://{root}")
    np.testing.assert_array_equal(np.asarray(vol[:, :, :])[..., 0], labels)
    mirror = np.linalg.det(np.asarray(TRANSFORM_NM)[:3, :3]) < 0
    assert mirror  # this test checks the winding flip
    for segment, path in sources.items():
        points, triangles = gifti_arrays(path)
        assert len(points) == 10242 and len(triangles) == 20480  # fsaverage5
        got = vol.mesh.get(segment, remove_duplicate_vertices=False)
        assert_float32_close(got.vertices, expected_model_nm(points, TRANSFORM_NM))
        np.testing.assert_array_equal(got.faces, triangles[:, ::-1])


def test_pial_mesh_files_match_the_spec(pial_dataset):
    """Byte layout read by neuroglancer-scripts, manifests and info as the spec words them."""
    from neuroglancer_scripts.mesh import read_precomputed_mesh

    root, _, sources = pial_dataset
    assert json.loads((root / "mesh" / "info").read_text()) == {"@type": "neuroglancer_legacy_mesh"}
    assert json.loads((root / "mesh" / "1:0").read_text()) == {"fragments": ["1:0:pial_left"]}
    points, triangles = gifti_arrays(sources[1])
    with open(root / "mesh" / "1:0:pial_left", "rb") as f:
        vertices, faces = read_precomputed_mesh(f)
    assert_float32_close(vertices, expected_model_nm(points, TRANSFORM_NM))
    np.testing.assert_array_equal(faces, triangles[:, ::-1])
    size = (root / "mesh" / "1:0:pial_left").stat().st_size
    assert size == 4 + 12 * len(points) + 12 * len(triangles)


def test_extra_transform_in_mm_applied_first(tmp_path):
    """An extra per-mesh affine (mm) with a mirror that cancels the volume's: no flip."""
    path = package_file(*PIAL["left"])
    extra = [[-1, 0, 0, 2.5], [0, 1, 0, -3], [0, 0, 1, 4], [0, 0, 0, 1]]
    root = make_segmentation(tmp_path / "ds", np.zeros((4, 4, 4), np.uint32))
    mesh = to_model_space(read_mesh(path), TRANSFORM_NM, extra)
    write_segment(root / "mesh", 7, [("7:0:a", mesh)])
    got = open_volume(f"file://{root}").mesh.get(7, remove_duplicate_vertices=False)
    points, triangles = gifti_arrays(path)
    assert_float32_close(got.vertices, expected_model_nm(points, TRANSFORM_NM, extra))
    np.testing.assert_array_equal(got.faces, triangles)


def test_several_fragments_and_json_manifest_through_the_server(tmp_path):
    """colon=False: ``<id>.json``; CloudVolume asks ``<id>:0`` over HTTP and the server maps it."""
    root = make_segmentation(tmp_path / "ds", np.zeros((4, 4, 4), np.uint32))
    a = Mesh(np.array([[0, 0, 0], [1e6, 0, 0], [0, 1e6, 0]]), np.array([[0, 1, 2]]))
    b = Mesh(
        np.array([[5e6, 5e6, 5e6], [6e6, 5e6, 5e6], [5e6, 6e6, 5e6], [5e6, 5e6, 6e6]]),
        np.array([[0, 1, 2], [0, 3, 1]]),
    )
    write_segment(root / "mesh", 12, [("12_a", a), ("12_b", b)], colon=False)
    write_mesh_info(root / "mesh")
    assert not (root / "mesh" / "12:0").exists()
    assert json.loads((root / "mesh" / "12.json").read_text()) == {"fragments": ["12_a", "12_b"]}
    server = make_server(tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        vol = open_volume(f"http://127.0.0.1:{port}/ds")
        got = vol.mesh.get(12, remove_duplicate_vertices=False)
    finally:
        server.shutdown()
        server.server_close()
    # CloudVolume concatenates the fragments in name order
    np.testing.assert_array_equal(got.vertices, np.vstack([a.vertices, b.vertices]))
    np.testing.assert_array_equal(got.faces, np.vstack([a.faces, b.faces + 3]))


def test_manifest_is_written_last(tmp_path, monkeypatch):
    written = []
    real = legacy.write_atomic

    def spy(path, data):
        written.append(path.name)
        real(path, data)

    monkeypatch.setattr(legacy, "write_atomic", spy)
    tri = Mesh(np.eye(3), np.array([[0, 1, 2]]))
    write_segment(tmp_path, 3, [("3:0:x", tri), ("3:0:y", tri)])
    assert written == ["3:0:x", "3:0:y", "3:0"]


def test_fragment_bytes_layout():
    mesh = Mesh(np.array([[1.5, -2, 3], [4, 5, 6.25], [7, 8, 9]]), np.array([[0, 2, 1]]))
    data = fragment_bytes(mesh)
    assert int.from_bytes(data[:4], "little") == 3
    np.testing.assert_array_equal(np.frombuffer(data[4:40], "<f4").reshape(3, 3), mesh.vertices)
    assert np.frombuffer(data[40:], "<u4").tolist() == [0, 2, 1]


# --- inputs --------------------------------------------------------------------------------


@pytest.fixture
def shape():
    """An octahedron with off-grid coordinates: 6 vertices, 8 triangles."""
    v = np.array(
        [[1.25, 0, 0], [-1, 0.5, 0], [0, 1.75, 0], [0, -1, 0.125], [0, 0, 1], [0.3, 0, -1]],
        np.float32,
    )
    f = np.array(
        [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]],
        np.uint32,
    )
    return v, f


def vtk_polydata(v, f):
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(v), deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(f) + 1, 3, dtype=np.int64)
    connectivity = np.ascontiguousarray(f.reshape(-1), dtype=np.int64)
    cells.SetData(
        numpy_to_vtkIdTypeArray(offsets, deep=True),
        numpy_to_vtkIdTypeArray(connectivity, deep=True),
    )
    data = vtkPolyData()
    data.SetPoints(points)
    data.SetPolys(cells)
    return data


def write_with_vtk(path, v, f, binary):
    """VTK's own writers (the library's other half) for the binary variants."""
    from vtkmodules.vtkIOGeometry import vtkSTLWriter
    from vtkmodules.vtkIOLegacy import vtkPolyDataWriter
    from vtkmodules.vtkIOPLY import vtkPLYWriter

    writer = {".vtk": vtkPolyDataWriter, ".ply": vtkPLYWriter, ".stl": vtkSTLWriter}[path.suffix]()
    writer.SetInputData(vtk_polydata(v, f))
    writer.SetFileName(str(path))
    writer.SetFileTypeToBinary() if binary else writer.SetFileTypeToASCII()
    assert writer.Write() == 1


@pytest.mark.parametrize("name", ["m.vtk", "m.ply"])
@pytest.mark.parametrize("binary", [False, True])
def test_vtk_written_files_read_exactly(tmp_path, shape, name, binary):
    v, f = shape
    write_with_vtk(tmp_path / name, v, f, binary)
    mesh = read_mesh(tmp_path / name)
    np.testing.assert_array_equal(mesh.vertices, v)
    np.testing.assert_array_equal(mesh.faces, f)


def stl_ascii(v, f) -> str:
    facets = "".join(
        "facet normal 0 0 0\n outer loop\n"
        + "".join(f"  vertex {x!r} {y!r} {z!r}\n" for x, y, z in v[tri].tolist())
        + " endloop\nendfacet\n"
        for tri in f
    )
    return f"solid octahedron\n{facets}endsolid octahedron\n"


def stl_binary(v, f) -> bytes:
    record = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attr", "<u2")])
    facets = np.zeros(len(f), record)
    facets["corners"] = v[f]
    return b"\0" * 80 + np.uint32(len(f)).astype("<u4").tobytes() + facets.tobytes()


@pytest.mark.parametrize("binary", [False, True])
def test_stl_triangles_keep_their_corners(tmp_path, shape, binary):
    """STL stores corners per facet; the reader merges and renumbers vertices, so triangles
    are compared by their corner coordinates. Written by hand and by VTK's writer."""
    v, f = shape
    by_hand = tmp_path / "hand.stl"
    if binary:
        by_hand.write_bytes(stl_binary(v, f))
    else:
        by_hand.write_text(stl_ascii(v, f))
    write_with_vtk(tmp_path / "vtk.stl", v, f, binary)
    for path in (by_hand, tmp_path / "vtk.stl"):
        mesh = read_mesh(path)
        assert len(mesh.vertices) == len(v)
        np.testing.assert_array_equal(mesh.vertices[mesh.faces], v[f])


def test_plain_text_ply_ascii_and_binary(tmp_path, shape):
    v, f = shape
    header = (
        "ply\nformat {}\ncomment by hand\nelement vertex 6\nproperty float x\nproperty float y\n"
        "property float z\nelement face 8\nproperty list uchar int vertex_indices\nend_header\n"
    )
    text = header.format("ascii 1.0")
    text += "".join(" ".join(repr(c) for c in p) + "\n" for p in v.tolist())
    text += "".join("3 " + " ".join(map(str, t)) + "\n" for t in f.tolist())
    (tmp_path / "a.ply").write_text(text)
    face = np.zeros(len(f), [("n", "u1"), ("i", "<i4", 3)])
    face["n"], face["i"] = 3, f
    (tmp_path / "b.ply").write_bytes(
        header.format("binary_little_endian 1.0").encode()
        + v.astype("<f4").tobytes()
        + face.tobytes()
    )
    for name in ("a.ply", "b.ply"):
        mesh = read_mesh(tmp_path / name)
        np.testing.assert_array_equal(mesh.vertices, v)
        np.testing.assert_array_equal(mesh.faces, f)


def test_plain_text_vtk_polygons_strips_and_unstructured_grid(tmp_path):
    """Legacy VTK by hand: a quad and a triangle strip in POLYDATA; an UNSTRUCTURED_GRID of
    triangles (cell type 5)."""
    head = "# vtk DataFile Version 3.0\nby hand\nASCII\n"
    points = "POINTS 5 float\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0.5 0.5 2\n"
    (tmp_path / "poly.vtk").write_text(
        head + "DATASET POLYDATA\n" + points + "POLYGONS 1 5\n4 0 1 2 3\n"
        "TRIANGLE_STRIPS 1 5\n4 0 1 4 2\n"
    )
    mesh = read_mesh(tmp_path / "poly.vtk")
    np.testing.assert_array_equal(mesh.vertices[4], [0.5, 0.5, 2])
    # the quad as two triangles covering its 4 corners, the strip as (0 1 4), (1 4 2) up to
    # the orientation VTK keeps along a strip
    corners = [sorted(t) for t in mesh.faces.tolist()]
    assert len(corners) == 4
    assert sorted(set(sum(corners[:2], []))) == [0, 1, 2, 3]
    assert corners[2:] == [[0, 1, 4], [1, 2, 4]]
    (tmp_path / "grid.vtk").write_text(
        head + "DATASET UNSTRUCTURED_GRID\n" + points + "CELLS 2 8\n3 0 1 4\n3 1 2 4\n"
        "CELL_TYPES 2\n5\n5\n"
    )
    grid = read_mesh(tmp_path / "grid.vtk")
    np.testing.assert_array_equal(grid.vertices[grid.faces], mesh.vertices[[[0, 1, 4], [1, 2, 4]]])


def test_plain_text_obj_with_quads_and_relative_indices(tmp_path):
    (tmp_path / "m.obj").write_text(
        "# a unit square and a pyramid side\n"
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0.5 0.5 2\n"
        "f 1 2 3 4\n"
        "f -5 -4 -1\n"  # relative: vertices 1, 2, 5
    )
    mesh = read_mesh(tmp_path / "m.obj")
    np.testing.assert_array_equal(mesh.vertices[:, 2], [0, 0, 0, 0, 2])
    corners = [sorted(t) for t in mesh.faces.tolist()]
    assert len(corners) == 3 and corners[2] == [0, 1, 4]
    assert sorted(set(corners[0] + corners[1])) == [0, 1, 2, 3]


def test_obj_with_texture_coordinates_and_normals(tmp_path, shape):
    """``f v/vt/vn`` faces (fewer vt and vn than v, as exporters write): same triangles."""
    v, f = shape
    text = "".join(f"v {x!r} {y!r} {z!r}\n" for x, y, z in v.tolist())
    text += "vt 0 0\nvt 1 0\nvn 0 0 1\n"
    text += "".join(
        "f " + " ".join(f"{i + 1}/{1 + k % 2}/1" for i in t) + "\n"
        for k, t in enumerate(f.tolist())
    )
    (tmp_path / "m.obj").write_text(text)
    mesh = read_mesh(tmp_path / "m.obj")
    np.testing.assert_array_equal(mesh.vertices[mesh.faces], v[f])


def test_plain_text_off(tmp_path):
    (tmp_path / "t.off").write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1.5\n3 0 1 2\n3 0 3 1\n")
    mesh = read_mesh(tmp_path / "t.off")
    np.testing.assert_array_equal(mesh.vertices[3], [0, 0, 1.5])
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 3, 1]]


def test_uncompressed_gifti(tmp_path):
    points, triangles = gifti_arrays(package_file(*PIAL["right"]))
    image = nib.gifti.GiftiImage(
        darrays=[
            nib.gifti.GiftiDataArray(points.astype(np.float32), "NIFTI_INTENT_POINTSET"),
            nib.gifti.GiftiDataArray(triangles.astype(np.int32), "NIFTI_INTENT_TRIANGLE"),
        ]
    )
    nib.save(image, tmp_path / "rh.pial.gii")
    mesh = read_mesh(tmp_path / "rh.pial.gii")
    np.testing.assert_array_equal(mesh.vertices, points.astype(np.float32))
    np.testing.assert_array_equal(mesh.faces, triangles)


@pytest.mark.filterwarnings("ignore:Unknown extension code")
def test_freesurfer_surface_in_scanner_space(tmp_path):
    """A FreeSurfer surface is in surface RAS; its recorded c_ras moves it to scanner RAS."""
    points, triangles = gifti_arrays(package_file(*PIAL["left"]))
    cras = np.array([1.5, -20.25, 3.0])
    info = {
        "head": np.array([2, 0, 20]),
        "valid": "1  # volume info valid",
        "filename": "orig.mgz",
        "volume": np.array([256, 256, 256]),
        "voxelsize": np.array([1.0, 1.0, 1.0]),
        "xras": np.array([-1.0, 0.0, 0.0]),
        "yras": np.array([0.0, 0.0, -1.0]),
        "zras": np.array([0.0, 1.0, 0.0]),
        "cras": cras,
    }
    nib.freesurfer.write_geometry(tmp_path / "lh.pial", points, triangles, volume_info=info)
    nib.freesurfer.write_geometry(tmp_path / "rh.white", points, triangles)
    with_cras = read_mesh(tmp_path / "lh.pial")
    plain = read_mesh(tmp_path / "rh.white")
    stored = nib.freesurfer.read_geometry(tmp_path / "rh.white")[0]
    np.testing.assert_array_equal(plain.vertices, stored.astype(np.float32))
    np.testing.assert_array_equal(with_cras.vertices, (stored + cras).astype(np.float32))
    np.testing.assert_array_equal(plain.faces, triangles)


def read_polydata(path):
    """VTK's legacy POLYDATA reader, straight: (points, triangles)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOLegacy import vtkPolyDataReader

    reader = vtkPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    data = reader.GetOutput()
    polys = data.GetPolys()
    assert (np.diff(vtk_to_numpy(polys.GetOffsetsArray())) == 3).all()
    triangles = vtk_to_numpy(polys.GetConnectivityArray()).reshape(-1, 3)
    return vtk_to_numpy(data.GetPoints().GetData()), triangles


def test_vtk_ascii_read_by_vtk_and_in_neuroglancers_subset(tmp_path):
    points, triangles = gifti_arrays(package_file(*PIAL["left"]))
    mesh = Mesh(points * 1e6, triangles)
    path = write_vtk(tmp_path / "lh.vtk", mesh, title="fsaverage5\nleft pial")
    back_points, back_triangles = read_polydata(path)
    assert back_points.dtype == np.float32
    np.testing.assert_array_equal(back_points, mesh.vertices)
    np.testing.assert_array_equal(back_triangles, triangles)
    # The line shapes Neuroglancer's vtk:// parser accepts (src/datasource/vtk/parse.ts)
    lines = path.read_text().split("\n")
    assert lines[0] == "# vtk DataFile Version 3.0"
    assert lines[1] == "fsaverage5 left pial"
    assert lines[2:5] == ["ASCII", "DATASET POLYDATA", f"POINTS {len(points)} float"]
    number = r"[-+0-9.eE]+"
    assert all(re.fullmatch(rf"{number} {number} {number}", s) for s in lines[5 : 5 + len(points)])
    k = 5 + len(points)
    assert lines[k] == f"POLYGONS {len(triangles)} {4 * len(triangles)}"
    assert all(re.fullmatch(r"3 \d+ \d+ \d+", s) for s in lines[k + 1 : k + 1 + len(triangles)])
    assert all(not s.strip() for s in lines[k + 1 + len(triangles) :])


def test_vtk_matches_neuroglancer_scripts_writer(tmp_path):
    """Same numbers as the reference converter's VTK writer (both parsed by VTK)."""
    import io

    from neuroglancer_scripts.mesh import save_mesh_as_neuroglancer_vtk

    points, triangles = gifti_arrays(package_file(*PIAL["right"]))
    mesh = Mesh(points, triangles)
    buf = io.StringIO()
    save_mesh_as_neuroglancer_vtk(buf, mesh.vertices, mesh.faces)
    (tmp_path / "ref.vtk").write_text(buf.getvalue())
    (tmp_path / "ours.vtk").write_text(vtk_ascii(mesh))
    ref, ours = (read_polydata(tmp_path / n) for n in ("ref.vtk", "ours.vtk"))
    np.testing.assert_array_equal(ours[0], ref[0])
    np.testing.assert_array_equal(ours[1], ref[1])
    np.testing.assert_array_equal(ours[1], triangles)


VTK_HEAD = (
    "# vtk DataFile Version 3.0\nx\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n0 0 0\n1 0 0\n0 1 0\n"
)

# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("broken.obj", "v 0 0 0\nv 1 x 0\nf 1 2 3\n", "not a readable OBJ"),
        ("broken.vtk", "this is not vtk\n", "not a readable VTK"),
        ("broken.ply", "ply\nformat nonsense\n", "not a readable PLY"),
        ("broken.gii", "<not gifti", "not a readable GIfTI"),
        ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no triangles"),
        ("past.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", "Invalid point index 3"),
        ("past.vtk", VTK_HEAD + "POLYGONS 1 4\n3 0 1 3\n", "triangle index 3 but only 3"),
        ("nan.vtk", VTK_HEAD.replace("1 0 0", "nan 0 0") + "POLYGONS 1 4\n3 0 1 2\n", "finite"),
        ("mesh.xyz", "1 2 3\n", "unknown mesh format"),
        ("lh.pial", "\xff\xff\xfe truncated", "not a readable FreeSurfer"),
    ],
)
def test_bad_mesh_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError) as err:
            read_mesh(path, where="dataset cortex")
    text = str(err.value)
    assert text.startswith(f"dataset cortex: {path}: ") and message in text
    assert "\n" not in text


def test_missing_mesh_file(tmp_path):
    with pytest.raises(InputError, match="lh.pial.gii: mesh file not found"):
        read_mesh(tmp_path / "lh.pial.gii")


@pytest.mark.parametrize(
    "matrix, message",
    [
        ([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "12 or 16 numbers, not 11"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "not 9"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], "last row"),
        ([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "singular"),
        ("a b c", "not a matrix"),
    ],
)
def test_bad_transforms(matrix, message):
    tri = Mesh(np.eye(3), np.array([[0, 1, 2]]))
    with pytest.raises(InputError) as err:
        to_model_space(tri, matrix, where="atlas/transform.json")
    assert str(err.value).startswith("atlas/transform.json: transform: ") and message in str(
        err.value
    )
    with pytest.raises(InputError, match="lh.gii: mesh transform: .*12 or 16"):
        to_model_space(tri, np.eye(4), [1, 2, 3], where="lh.gii")


def test_twelve_number_transform_is_3x4(tmp_path):
    tri = Mesh(np.array([[1, 2, 3], [4, 5, 6], [7, 8, 10]]), np.array([[0, 1, 2]]))
    flat = [1, 0, 0, 5e6, 0, 1, 0, 0, 0, 0, 1, 0]
    got = to_model_space(tri, flat)
    np.testing.assert_allclose(got.vertices, tri.vertices.astype(np.float64) * 1e6 - [5e6, 0, 0])
    assert got.faces.tolist() == [[0, 1, 2]]


def test_bad_fragment_names(tmp_path):
    tri = Mesh(np.eye(3), np.array([[0, 1, 2]]))
    with pytest.raises(InputError, match="cannot name a mesh fragment"):
        write_segment(tmp_path, 1, [("../x", tri)])
    with pytest.raises(InputError, match="colon=False"):
        write_segment(tmp_path, 1, [("1:0:x", tri)], colon=False)
    with pytest.raises(InputError, match="twice"):
        write_segment(tmp_path, 1, [("a", tri), ("a", tri)])
    with pytest.raises(InputError, match="not a uint64"):
        write_segment(tmp_path, -1, [("a", tri)])
    assert not list(tmp_path.iterdir())
