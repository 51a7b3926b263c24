"""Meshes generated from label volumes, region by region: legacy fragments and multi-resolution
Draco meshes.

Small synthetic label volumes (spheres, boxes, a one-voxel label, a one-voxel-thick plate, labels
touching each other and the volume's border) with anisotropic voxels are meshed whole and cut
into many regions. The files are read back with code written here from the Neuroglancer spec
(plain numpy for legacy fragments and manifests; DracoPy and numpy for multi-resolution ones),
and the meshes checked against the voxels: every label present has a mesh; the union of a
label's fragments is closed and consistently wound (each edge, after merging equal vertices, is
used once in each direction) also across region seams and at the volume's border (padded with
background, so labels touching it are capped there); its vertices lie in the label's bounding
box (nm, voxel corners at integers) with a voxel of tolerance; its enclosed volume is the
label's voxel volume, up to half a voxel times its area.
"""

import json
import struct

import DracoPy
import nibabel as nib
import numpy as np
import pytest

from ngprecomputed.errors import InputError
from ngprecomputed.meshes import generate, multilod
from ngprecomputed.plan import Options, make_plan
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
    """Spanning the label's bounding box (nm, voxel corners at integers) up to the
    simplification's error; enclosing its voxel volume."""
    where = np.argwhere(labels == label)
    lo, hi = where.min(0) * RES_NM, (where.max(0) + 1) * RES_NM
    tol = max_error_voxels * RES_NM.min() * (1 + 1e-6)
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
    for label in present:
        vertices, faces, names = read_legacy(mesh_dir, label)
        assert len(names) == counts[label] and len(faces) > 0
        what = f"label {label}, {regions.count} regions"
        assert_closed(vertices, faces, what)
        assert_fits_label(vertices, faces, labels, label, generate.MAX_ERROR, what)
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
            if lod > 0:
                for _, q, f, _ in nodes:
                    tri = q[f]  # [m, 3 corners, 3 axes]
                    one_side = (tri <= half).all(1) | (tri >= half).all(1)
                    assert one_side.all(), f"{what}: a triangle crosses a child boundary"
                children = {tuple(p // 2) for p, *_ in lods[lod - 1]}
                assert children == {tuple(p) for p, *_ in nodes}, f"{what}: parents != children"
        assert len(lods[-1]) >= 1 and len(per_lod[0][0]) >= len(per_lod[-1][0])


def test_quantize_puts_the_mid_plane_on_the_split_point():
    q = multilod.quantize(np.array([[0.0, 5.0, 10.0], [0.0, 0.0, 0.0]]), np.zeros(3), 10.0)
    np.testing.assert_array_equal(q, [[0, 2**15, 2**16 - 1], [0, 0, 0]])
    assert q.dtype == np.int32  # Neuroglancer's Draco decoder takes int32 or float32 positions


def test_morton_codes_interleave_x_lowest():
    positions = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 5, 6], [1023, 0, 7]])
    assert multilod.morton(positions).tolist() == [zorder(p) for p in positions]
