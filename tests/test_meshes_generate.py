"""Meshes generated from label volumes, region by region: legacy fragments and multi-resolution
Draco meshes, smoothed.

Small synthetic label volumes (spheres, boxes, a one-voxel label, a one-voxel-thick plate, labels
touching each other and the volume's border) with anisotropic voxels, and the AAL atlas, are
meshed whole and cut into many regions. The files are read back with code written here from the
Neuroglancer spec (plain numpy for legacy fragments and manifests; DracoPy and numpy for
multi-resolution ones), and the meshes checked against the voxels with numpy and scipy alone:
every label present has a mesh; the union of a label's fragments is closed and consistently
wound (each edge, after merging equal vertices, is used once in each direction) also across
region seams and at the volume's border (padded with background, so labels touching it are
capped there); every vertex lies within one voxel of its label's boundary (the squares between
a voxel of the label and one that is not); neighbouring labels meet (a vertex of A nearest an
A|B square lies near B's mesh); its enclosed volume is the label's voxel volume, up to half a
voxel times its area plus what smoothing and simplification may move; the sphere's faces face
away from its centre; a second run writes the same bytes.
"""

import json
import struct

import DracoPy
import nibabel as nib
import numpy as np
import pytest
import zmesh
from scipy.spatial import cKDTree

from ngprecomputed.errors import InputError
from ngprecomputed.meshes import generate, multilod, smooth
from ngprecomputed.plan import make_plan
from ngprecomputed.settings import Options
from ngprecomputed.sources import open_source

MM = (1.0, 1.5, 2.0)  # anisotropic voxels
RES_NM = np.array(MM) * 1e6


def synthetic_labels() -> np.ndarray:
    shape = (30, 26, 22)
    x, y, z = np.indices(shape)
    a = np.zeros(shape, np.uint16)
    a[(x - 12) ** 2 + (y - 12) ** 2 + (z - 10) ** 2 < 7.5**2] = 1  # sphere
    a[3:10, 16:22, 12:20] = 2  # box cutting into the sphere: the two touch
    a[18:27, 3:10, 4:18] = 7
    a[0:5, 15:24, 0:6] = 300  # touches two faces of the volume
    a[25, 20, 18] = 9  # one voxel
    a[20:28, 14:24, 15] = 5  # one voxel thick
    a[28:30, 0:26, 19:22] = 1000  # along a whole edge of the volume
    return a


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "labels.nii.gz"
    labels = synthetic_labels()
    nib.save(nib.Nifti1Image(labels, np.diag([*MM, 1.0])), path)
    return path, labels


def plan_for(path, meshes="generate"):
    return make_plan("synthetic", open_source(path), Options(type="segmentation", meshes=meshes))


def run_all(plan, budget, root, multi=False):
    regions = generate.plan_regions(plan.scales[0].size, budget)
    work = root / "work"
    for i in range(regions.count):
        generate.mesh_region(plan, regions, i, root, work / f"region{i}.json", multi)
    counts = generate.write_meshes(plan, regions, work, root, colon=True, multi_resolution=multi)
    return regions, counts


# ---------------------------------------------------------------- independent readers and checks


def read_legacy(mesh_dir, label):
    """A segment's fragments joined, read per the spec: uint32 n, float32 [n,3], uint32 [m,3]."""
    names = json.loads((mesh_dir / f"{label}:0").read_text())["fragments"]
    vertices, faces, base = [], [], 0
    for name in names:
        data = (mesh_dir / name).read_bytes()
        n = struct.unpack("<I", data[:4])[0]
        v = np.frombuffer(data, "<f4", 3 * n, 4).reshape(n, 3)
        f = np.frombuffer(data, "<u4", offset=4 + 12 * n).reshape(-1, 3)
        vertices.append(v.astype(np.float64))
        faces.append(f.astype(np.int64) + base)
        base += n
    return np.concatenate(vertices), np.concatenate(faces), names


def read_index(path):
    """The multi-resolution manifest, parsed per the spec."""
    b = path.read_bytes()
    chunk, origin = np.frombuffer(b, "<f4", 3, 0), np.frombuffer(b, "<f4", 3, 12)
    lods = struct.unpack_from("<I", b, 24)[0]
    at = 28
    scales = np.frombuffer(b, "<f4", lods, at)
    at += 4 * lods
    offsets = np.frombuffer(b, "<f4", 3 * lods, at).reshape(lods, 3)
    at += 12 * lods
    counts = np.frombuffer(b, "<u4", lods, at)
    at += 4 * lods
    per_lod = []
    for n in counts:
        positions = np.frombuffer(b, "<u4", 3 * n, at).reshape(3, n).T
        at += 12 * n
        sizes = np.frombuffer(b, "<u4", n, at)
        at += 4 * n
        per_lod.append((positions, sizes))
    assert at == len(b)
    return chunk, origin, scales, offsets, per_lod


def read_multilod(mesh_dir, label):
    """Per lod: [(node position, integer vertices, faces, vertices in nm)]."""
    info = json.loads((mesh_dir / "info").read_text())
    bits = info["vertex_quantization_bits"]
    transform = np.array(info["transform"]).reshape(3, 4)
    chunk, origin, _, offsets, per_lod = read_index(mesh_dir / f"{label}.index")
    data = (mesh_dir / str(label)).read_bytes()
    at, out = 0, []
    for lod, (positions, sizes) in enumerate(per_lod):
        nodes = []
        for p, size in zip(positions, sizes, strict=True):
            m = DracoPy.decode(data[at : at + size])
            at += int(size)
            q = np.asarray(m.points, np.float64)
            stored = origin + offsets[lod] + chunk * 2**lod * (p + q / (2**bits - 1))
            nm = stored @ transform[:, :3].T + transform[:, 3]
            nodes.append((p, q, np.asarray(m.faces, np.int64), nm))
        out.append(nodes)
    assert at == len(data)
    return out


def join(parts):
    vertices = np.concatenate([v for v, _ in parts])
    starts = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
    return vertices, np.concatenate([f + s for (_, f), s in zip(parts, starts, strict=True)])


def assert_closed(vertices, faces, what):
    """Every edge, once vertices at the same place (within 1e-3 voxel) are one, is used once in
    each direction: a closed surface, consistently wound."""
    key = np.round(vertices / (RES_NM * 1e-3)).astype(np.int64)
    _, same = np.unique(key, axis=0, return_inverse=True)
    f = same.reshape(-1)[faces]
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    unique, count = np.unique(directed, axis=0, return_counts=True)
    assert (count == 1).all(), f"{what}: an edge is used twice in one direction"
    reverse = {tuple(e) for e in unique[:, ::-1]}
    missing = [tuple(e) for e in unique if tuple(e) not in reverse]
    assert not missing, f"{what}: {len(missing)} edges without a neighbour triangle (a hole)"


def assert_fits_label(vertices, faces, labels, label, max_error_voxels, what):
    """Spanning the label's bounding box (nm, voxel corners at integers) up to the most a vertex
    moves; enclosing its voxel volume."""
    where = np.argwhere(labels == label)
    lo, hi = where.min(0) * RES_NM, (where.max(0) + 1) * RES_NM
    tol = smooth.MAX_SHIFT * RES_NM.min() * (1 + 1e-6)  # vertices are smoothed, never simplified
    assert (vertices >= lo - tol).all() and (vertices <= hi + tol).all(), what
    assert (vertices.min(0) <= lo + tol).all() and (vertices.max(0) >= hi - tol).all(), what
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2
    voxels = len(where) * np.prod(RES_NM)
    slack = (0.5 + max_error_voxels) * RES_NM.max() * area
    assert abs(volume - voxels) <= slack, (what, volume / voxels)
    if max_error_voxels <= 0.5:  # coarser levels may flatten a one-voxel label to nothing
        assert volume > 0, f"{what}: wound inside out"


def boundary_squares(labels, label, res):
    """The squares between a voxel of ``label`` and one that is not (the volume padded with
    background), in nm: lower and upper corners, and the label on the other side."""
    padded = np.pad(labels, 1)
    inside = padded == label
    lows, highs, across = [], [], []
    for axis in range(3):
        cut = np.argwhere(np.diff(inside.astype(np.int8), axis=axis) != 0)  # padded i | i + 1
        lo = cut - 1.0  # padded voxel j is voxel j - 1: it spans [j - 1, j] ...
        lo[:, axis] = cut[:, axis]  # ... and the square lies on the plane between, at j
        hi = lo + 1
        hi[:, axis] = lo[:, axis]
        after = cut.copy()
        after[:, axis] += 1
        pair = padded[tuple(cut.T)], padded[tuple(after.T)]
        across.append(np.where(pair[0] == label, pair[1], pair[0]))
        lows.append(lo)
        highs.append(hi)
    return np.concatenate(lows) * res, np.concatenate(highs) * res, np.concatenate(across)


def boundary_distance(points, labels, label, res, k=8):
    """Each point's (nm) distance to its label's boundary in smallest voxel edges (an upper
    bound: the nearest of the ``k`` squares whose centres are nearest), and the label on the
    other side of that square."""
    lo, hi, across = boundary_squares(labels, label, res)
    _, near = cKDTree((lo + hi) / 2).query(points, k=min(k, len(lo)))
    near = near.reshape(len(points), -1)
    d = np.linalg.norm(points[:, None] - np.clip(points[:, None], lo[near], hi[near]), axis=2)
    best = np.arange(len(points)), d.argmin(1)
    return d[best] / res.min(), across[near[best]]


def surface_distance(points, vertices, faces):
    """Each point's distance to the nearest triangle (VTK's cell locator: no code of ours)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import reference, vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData, vtkStaticCellLocator

    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(vertices, np.float64), deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    cells.SetData(
        numpy_to_vtkIdTypeArray(offsets, deep=True),
        numpy_to_vtkIdTypeArray(np.ascontiguousarray(faces, np.int64).ravel(), deep=True),
    )
    surface = vtkPolyData()
    surface.SetPoints(pts)
    surface.SetPolys(cells)
    locator = vtkStaticCellLocator()
    locator.SetDataSet(surface)
    locator.BuildLocator()
    closest, cell, sub, d2 = [0.0] * 3, reference(0), reference(0), reference(0.0)
    out = []
    for p in points:
        locator.FindClosestPoint(list(p), closest, cell, sub, d2)
        out.append(float(d2) ** 0.5)
    return np.array(out)


def assert_near_boundary(meshes, labels, res, what):
    """Every vertex within one voxel of its label's boundary: within ``MAX_SHIFT`` (a vertex
    moves no farther from where marching cubes put it, on that boundary), give or take the
    16-bit quantization of a multi-resolution node."""
    for label, (vertices, _) in meshes.items():
        d, _ = boundary_distance(vertices, labels, label, res)
        assert d.max() < 1 and d.max() <= smooth.MAX_SHIFT + 2e-3, (what, label, d.max())


def assert_neighbours_meet(meshes, labels, res, what):
    """Vertices of A whose nearest boundary square is an A|B square (B another label) lie near
    B's mesh: all within 1.5 voxels (twice the most a vertex moves: A's and B's vertices each
    move up to ``MAX_SHIFT`` from the squares they share), 99% within 0.75, on average within a
    tenth of a voxel (labels are smoothed together; smoothed one by one, AAL's came apart by a
    quarter of a voxel on average, and 1.5 at most)."""
    gaps = []
    for a, (vertices, _) in meshes.items():
        _, across = boundary_distance(vertices, labels, a, res)
        for b in set(np.unique(across).tolist()) & set(meshes) - {a}:
            gaps.append(surface_distance(vertices[across == b], *meshes[b]) / res.min())
    gaps = np.concatenate(gaps)
    assert len(gaps) > 0, what
    assert gaps.max() <= 1.5 and np.percentile(gaps, 99) <= 0.75, (what, gaps.max())
    assert gaps.mean() <= 0.1, (what, gaps.mean())


# ---------------------------------------------------------------- regions


@pytest.mark.parametrize("budget", [125, 1500, 20_000, 10**9])
def test_regions_tile_the_padded_cubes_within_the_budget(budget):
    size = (30, 26, 22)
    regions = generate.plan_regions(size, budget)
    assert regions.read_voxels <= budget
    assert all(e % generate.CELLS == 0 for e in regions.edge)
    seen = np.zeros([n + 1 for n in size], np.int64)  # cubes of the padded volume
    for i in range(regions.count):
        box = regions.cubes(i)
        seen[tuple(slice(lo, hi) for lo, hi in box)] += 1
    assert (seen == 1).all()


def test_a_budget_below_one_region_is_refused():
    with pytest.raises(InputError, match="mesh_region_voxels 100 is too small"):
        generate.plan_regions((30, 26, 22), 100)


def test_a_region_reads_its_voxels_with_one_voxel_of_overlap_and_padding(volume):
    path, labels = volume
    plan = plan_for(path)
    regions = generate.plan_regions(labels.shape, 1500)
    padded = np.pad(labels, 1)  # padded voxel j is voxel j - 1
    for i in range(regions.count):
        box = regions.cubes(i)
        got = generate.region_labels(open_source(path), plan, box)
        want = np.zeros([hi - lo + 1 for lo, hi in box], labels.dtype)
        part = padded[tuple(slice(lo, hi + 1) for lo, hi in box)]
        want[tuple(slice(0, n) for n in part.shape)] = part
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- legacy meshes


@pytest.mark.parametrize("budget", [10**9, 1500])
def test_every_label_gets_a_closed_mesh_that_fits_its_voxels(tmp_path, volume, budget):
    path, labels = volume
    regions, counts = run_all(plan_for(path), budget, tmp_path)
    present = set(np.unique(labels).tolist()) - {0}
    assert set(counts) == present
    mesh_dir = tmp_path / "mesh"
    assert json.loads((mesh_dir / "info").read_text()) == {"@type": "neuroglancer_legacy_mesh"}
    meshes = {}
    for label in present:
        vertices, faces, names = read_legacy(mesh_dir, label)
        assert len(names) == counts[label] and len(faces) > 0
        what = f"label {label}, {regions.count} regions"
        assert_closed(vertices, faces, what)
        assert_fits_label(vertices, faces, labels, label, generate.MAX_ERROR, what)
        meshes[label] = vertices, faces
    assert_near_boundary(meshes, labels, RES_NM, f"{regions.count} regions")
    assert_neighbours_meet(meshes, labels, RES_NM, f"{regions.count} regions")
    if budget == 1500:
        assert regions.count > 20 and max(counts.values()) > 8  # seams were crossed


def test_simplification_keeps_a_fraction_of_the_triangles(tmp_path, volume):
    """Checks the simplification happens: the sphere's marching-cubes mesh has far more."""
    path, labels = volume
    run_all(plan_for(path), 10**9, tmp_path)
    _, faces, _ = read_legacy(tmp_path / "mesh", 1)
    sphere = (labels == 1).astype(np.uint8)
    faces_of_voxels = sum(np.abs(np.diff(np.pad(sphere, 1), axis=a)).sum() for a in range(3))
    assert len(faces) < faces_of_voxels  # fewer triangles than the voxels' square faces


def test_no_colon_names_the_manifests_json(tmp_path, volume):
    path, labels = volume
    plan = plan_for(path)
    regions = generate.plan_regions(labels.shape, 10**9)
    generate.mesh_region(plan, regions, 0, tmp_path, tmp_path / "work" / "region0.json", False)
    generate.write_meshes(plan, regions, tmp_path / "work", tmp_path, False, False)
    names = sorted(p.name for p in (tmp_path / "mesh").iterdir())
    assert "1.json" in names and not any(":" in n for n in names)


def test_the_sphere_faces_away_from_its_centre(tmp_path, volume):
    """Smoothed, the sphere's faces (in voxel space, where it is round) are less than 10 degrees
    off the radial direction on average (weighted by area; 8 when written), where zmesh's terraced
    mesh of it (marching cubes and its simplification, as before smoothing) is off by 19."""
    path, labels = volume
    run_all(plan_for(path), 10**9, tmp_path)
    vertices, faces, _ = read_legacy(tmp_path / "mesh", 1)

    def off_radial(v, f):
        a, b, c = (v[f[:, i]] for i in range(3))
        normal = np.cross(b - a, c - a)
        radial = (a + b + c) / 3 - (np.array([12, 12, 10]) + 0.5)  # the centre voxel's centre
        cos = np.einsum("ij,ij->i", normal, radial) / np.linalg.norm(normal, axis=1)
        area = np.linalg.norm(normal, axis=1)
        angle = np.degrees(np.arccos(np.clip(cos / np.linalg.norm(radial, axis=1), -1, 1)))
        return (angle * area).sum() / area.sum()

    mesher = zmesh.Mesher((1.0, 1.0, 1.0))
    mesher.mesh(np.pad(labels == 1, 1).astype(np.uint8))
    terraced = mesher.get(1, reduction_factor=100, max_error=0.5, voxel_centered=True)
    ours = off_radial(vertices / RES_NM, faces)
    theirs = off_radial(terraced.vertices.astype(np.float64) - 1, terraced.faces.astype(np.int64))
    assert ours < 10 and theirs > 15 and ours < theirs / 2, (ours, theirs)


@pytest.mark.parametrize("multi", [False, True])
def test_a_rerun_writes_the_same_bytes(tmp_path, volume, multi):
    path, _ = volume
    plan = plan_for(path, "multilod" if multi else "generate")
    for run in ("a", "b"):
        run_all(plan, 1500, tmp_path / run, multi=multi)
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) > 20
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


# ---------------------------------------------------------------- the AAL atlas

AAL_BUDGET = 200_000  # AAL's 76x93x76 cubes in 2 x 2 x 1 regions


@pytest.fixture(scope="module")
def aal(data, tmp_path_factory):
    img = nib.load(data["aal"])
    res = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0)) * 1e6  # nm
    plan = make_plan(
        "aal", open_source(data["aal"]), Options(type="segmentation", meshes="generate")
    )
    return plan, np.asarray(img.dataobj), res, tmp_path_factory


def test_aal_meshes_are_closed_near_their_labels_and_meet(aal):
    plan, labels, res, tmp = aal
    root = tmp.mktemp("aal_legacy")
    regions, counts = run_all(plan, AAL_BUDGET, root)
    assert regions.count == 4 and set(counts) == set(np.unique(labels).tolist()) - {0}
    meshes = {label: read_legacy(root / "mesh", label)[:2] for label in counts}
    for label, mesh in meshes.items():
        assert_closed(*mesh, f"AAL label {label}")
    assert_near_boundary(meshes, labels, res, "AAL")
    assert_neighbours_meet(meshes, labels, res, "AAL")
    assert sum(n > 1 for n in counts.values()) > 10  # many labels cross a region seam


def test_aal_multilod_meshes_are_closed_and_near_their_labels_at_every_lod(aal):
    plan, labels, res, tmp = aal
    root = tmp.mktemp("aal_multilod")
    _, counts = run_all(plan, AAL_BUDGET, root, multi=True)
    joined = {lod: {} for lod in range(generate.LODS)}
    for label in counts:
        for lod, nodes in enumerate(read_multilod(root / "mesh", label)):
            joined[lod][label] = join([(nm, f) for _, _, f, nm in nodes])
            assert_closed(*joined[lod][label], f"AAL label {label}, lod {lod}")
    for lod, meshes in joined.items():
        assert_near_boundary(meshes, labels, res, f"AAL, lod {lod}")
    assert_neighbours_meet(joined[0], labels, res, "AAL, lod 0")


# ---------------------------------------------------------------- multi-resolution meshes


def zorder(p):
    code = 0
    for bit in range(21):
        for axis in range(3):
            code |= ((int(p[axis]) >> bit) & 1) << (3 * bit + axis)
    return code


@pytest.mark.parametrize("budget", [10**9, 1500])
def test_multilod_meshes_are_closed_octrees_at_every_lod(tmp_path, volume, budget):
    path, labels = volume
    regions, counts = run_all(plan_for(path, "multilod"), budget, tmp_path, multi=True)
    present = set(np.unique(labels).tolist()) - {0}
    assert set(counts) == present
    info = json.loads((tmp_path / "mesh" / "info").read_text())
    assert info["@type"] == "neuroglancer_multilod_draco"
    assert info["vertex_quantization_bits"] == 16 and info["lod_scale_multiplier"] == 1.0
    half = 2**15  # where the viewer splits a lod > 0 node into its 2x2x2 children
    joined = {lod: {} for lod in range(generate.LODS)}
    for label in present:
        lods = read_multilod(tmp_path / "mesh", label)
        _, _, scales, _, per_lod = read_index(tmp_path / "mesh" / f"{label}.index")
        assert len(lods) == generate.LODS and (np.diff(scales) > 0).all()
        for lod, nodes in enumerate(lods):
            what = f"label {label}, lod {lod}, {regions.count} regions"
            codes = [zorder(p) for p, *_ in nodes]
            assert codes == sorted(codes) and len(set(codes)) == len(codes), what
            assert_closed(*join([(nm, f) for _, _, f, nm in nodes]), what)
            error = generate.MAX_ERROR * 2**lod
            assert_fits_label(*join([(nm, f) for _, _, f, nm in nodes]), labels, label, error, what)
            joined[lod][label] = join([(nm, f) for _, _, f, nm in nodes])
            if lod > 0:
                for _, q, f, _ in nodes:
                    tri = q[f]  # [m, 3 corners, 3 axes]
                    one_side = (tri <= half).all(1) | (tri >= half).all(1)
                    assert one_side.all(), f"{what}: a triangle crosses a child boundary"
                children = {tuple(p // 2) for p, *_ in lods[lod - 1]}
                assert children == {tuple(p) for p, *_ in nodes}, f"{what}: parents != children"
        assert len(lods[-1]) >= 1 and len(per_lod[0][0]) >= len(per_lod[-1][0])
    for lod, meshes in joined.items():
        assert_near_boundary(meshes, labels, RES_NM, f"lod {lod}, {regions.count} regions")
    assert_neighbours_meet(joined[0], labels, RES_NM, f"lod 0, {regions.count} regions")


def test_quantize_puts_the_mid_plane_on_the_split_point():
    q = multilod.quantize(np.array([[0.0, 5.0, 10.0], [0.0, 0.0, 0.0]]), np.zeros(3), 10.0)
    np.testing.assert_array_equal(q, [[0, 2**15, 2**16 - 1], [0, 0, 0]])
    assert q.dtype == np.int32  # Neuroglancer's Draco decoder takes int32 or float32 positions


def test_morton_codes_interleave_x_lowest():
    positions = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 5, 6], [1023, 0, 7]])
    assert multilod.morton(positions).tolist() == [zorder(p) for p in positions]
