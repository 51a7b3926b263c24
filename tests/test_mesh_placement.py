"""Meshes sit where the anatomy is, to a fraction of a voxel: a labelled sphere of known world
centre and radius, in a volume with anisotropic voxels and a rotated, shifted affine, meshed by
the workflow (``generate`` and ``multilod``), and a mesh file of the same sphere tied to the
segment by a mesh table. CloudVolume reads the meshes back (model space, nm); ``transform.json``
takes them to world millimetres, where they are compared with the analytic sphere. A half-voxel
shift (the classic NIfTI corner/centre mistake) is 0.5 to 1 mm here: far outside the tolerances.
"""

import json

import nibabel as nib
import numpy as np
import pytest
from cloudvolume import CloudVolume

from conftest import snakemake, write_sheet

pytestmark = pytest.mark.workflow

SHAPE = (40, 36, 30)
ZOOMS = np.array([1.0, 1.5, 2.0])  # mm
CENTRE = np.array([3.7, -12.2, 18.9])  # world mm, off the voxel grid
RADIUS = 12.0  # mm


def affine() -> np.ndarray:
    """Rotated 20 degrees about z and 10 about x, voxel sizes ZOOMS, shifted."""
    a, b = np.radians(20), np.radians(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    out = np.eye(4)
    out[:3, :3] = rz @ rx @ np.diag(ZOOMS)
    centre_voxel = (np.array(SHAPE) - 1) / 2 + np.array([0.3, -0.4, 0.2])
    out[:3, 3] = CENTRE - out[:3, :3] @ centre_voxel
    return out


def icosphere(subdivisions: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A unit sphere of triangles (an icosahedron, each face split in four, ``subdivisions``
    times), outward-facing."""
    t = (1 + 5**0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t]]
    v += [[0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4]]
    f += [[11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8]]
    f += [[3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    vertices = [np.array(p, float) / np.linalg.norm(p) for p in v]
    faces = f
    middle: dict[tuple[int, int], int] = {}  # an edge's new vertex (edges never repeat)

    def mid(i, j):
        key = (min(i, j), max(i, j))
        if key not in middle:
            p = vertices[i] + vertices[j]
            vertices.append(p / np.linalg.norm(p))
            middle[key] = len(vertices) - 1
        return middle[key]

    for _ in range(subdivisions):
        faces = [
            face
            for a, b, c in faces
            for face in ([a, mid(a, b), mid(c, a)], [b, mid(b, c), mid(a, b)])
            + ([c, mid(c, a), mid(b, c)], [mid(a, b), mid(b, c), mid(c, a)])
        ]
    return np.array(vertices), np.array(faces)


@pytest.fixture(scope="module")
def sphere_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("placement")
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1)
    world = ijk @ affine()[:3, :3].T + affine()[:3, 3]
    labels = (np.linalg.norm(world - CENTRE, axis=-1) <= RADIUS).astype(np.uint8)
    volume = tmp / "sphere.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine()), volume)
    unit, faces = icosphere()
    surface = tmp / "sphere.gii"
    nib.save(
        nib.gifti.GiftiImage(
            darrays=[
                nib.gifti.GiftiDataArray(
                    (CENTRE + RADIUS * unit).astype(np.float32), intent="NIFTI_INTENT_POINTSET"
                ),
                nib.gifti.GiftiDataArray(faces.astype(np.int32), intent="NIFTI_INTENT_TRIANGLE"),
            ]
        ),
        surface,
    )
    (tmp / "meshes.csv").write_text(f"segment,path\n1,{surface}\n")
    rows = [
        {"dataset": name, "path": volume, "type": "segmentation", "meshes": meshes}
        for name, meshes in (
            ("generated", "generate"),
            ("multilod", "multilod"),
            ("table", tmp / "meshes.csv"),
        )
    ]
    sheet = write_sheet(tmp / "sheet.csv", rows)
    out = tmp / "results"
    snakemake(tmp, "--config", f"samples={sheet}", f"results={out}", "qc=false")
    return out


def world_mesh(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Segment 1's mesh as CloudVolume reads it, in world mm (through ``transform.json``)."""
    mesh = CloudVolume(f"file://{dataset}", progress=False, cache=False).mesh.get(1)
    mesh = mesh[1] if isinstance(mesh, dict) else mesh
    transform = np.array(json.loads((dataset / "transform.json").read_text()))
    v = np.asarray(mesh.vertices, np.float64)
    return (v @ transform[:3, :3].T + transform[:3, 3]) / 1e6, np.asarray(mesh.faces)


def surface_centroid(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """The area-weighted centroid of the triangles."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return ((a + b + c) / 3 * area[:, None]).sum(0) / area.sum()


def in_voxels(offset_mm: np.ndarray) -> np.ndarray:
    """A world offset along each voxel axis, in voxels of that axis."""
    axes = affine()[:3, :3] / ZOOMS
    return np.abs(axes.T @ offset_mm) / ZOOMS


@pytest.mark.parametrize("name", ["generated", "multilod"])
def test_meshes_from_labels_sit_on_the_sphere(sphere_results, name):
    v, f = world_mesh(sphere_results / name)
    assert len(f) > 100
    shift = in_voxels(surface_centroid(v, f) - CENTRE)
    assert (shift < 0.1).all(), f"centroid off by {shift} voxels"
    distance = np.linalg.norm(v - CENTRE, axis=1) - RADIUS
    assert np.abs(distance).max() < 0.5 * ZOOMS.max(), np.abs(distance).max()
    assert abs(distance.mean()) < 0.25 * ZOOMS.min(), distance.mean()


def test_a_mesh_table_mesh_keeps_its_world_coordinates(sphere_results):
    v, f = world_mesh(sphere_results / "table")
    unit, faces = icosphere()
    assert len(f) == len(faces)
    np.testing.assert_allclose(np.linalg.norm(v - CENTRE, axis=1), RADIUS, atol=1e-3)
    assert (in_voxels(surface_centroid(v, f) - CENTRE) < 1e-3).all()
