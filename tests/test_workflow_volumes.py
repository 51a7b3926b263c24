"""Real Snakemake runs on real and synthetic volumes, read back by TensorStore and CloudVolume.

Scale 0 must equal nibabel's array (after the documented type rules); every coarser scale must
equal an independent numpy computation from the scale above (see conftest.check_pyramid).
"""

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import check_pyramid, read_cloudvolume, snakemake, write_sheet
from ngprecomputed.plan import make_plan
from ngprecomputed.settings import Options
from ngprecomputed.sources import open_source

pytestmark = pytest.mark.workflow


def synthetic(folder):
    """Small volumes for the edge cases no package ships, each with what scale 0 must be."""
    rng = np.random.default_rng(42)
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}

    def save(name, array, zooms=(1, 1, 1), klass=nib.Nifti1Image, affine=None, **header):
        aff = np.diag([*zooms, 1.0]) if affine is None else affine
        img = klass(array, aff)
        for key, value in header.items():
            img.header[key] = value
        path = folder / name
        nib.save(img, path)
        return path

    # odd size, 1x1x3 mm voxels, int16 with negatives
    a = rng.integers(-3000, 3000, (37, 29, 23), dtype=np.int16)
    cases["aniso_int16"] = (save("aniso.nii.gz", a, (1, 1, 3)), "image", a)
    # float32 with NaN and negative values
    f = rng.normal(0, 100, (21, 18, 19)).astype(np.float32)
    f[rng.random(f.shape) < 0.2] = np.nan
    f[:4, :4, :4] = np.nan  # an all-NaN block
    cases["float_nan"] = (save("float_nan.nii", f), "image", f)
    # float64 becomes float32
    d = rng.normal(0, 1, (17, 16, 15))
    cases["float64"] = (save("float64.nii.gz", d), "image", d.astype(np.float32))
    # slope/intercept applied: float32 out
    s = rng.integers(0, 1000, (16, 20, 12), dtype=np.int16)
    img = nib.Nifti1Image(s, np.eye(4))
    img.header.set_slope_inter(0.5, -10)
    path = folder / "scaled.nii"
    nib.save(img, path)
    cases["scaled"] = (path, "segmentation_no", (s * 0.5 - 10).astype(np.float32))
    cases["scaled"] = (path, "image", (s * 0.5 - 10).astype(np.float32))
    # labels: sparse uint32 ids above 65535, blocks with ties, non-RAS orientation (LIA)
    labels = rng.choice(np.array([0, 7, 300, 70000, 123456], dtype=np.uint32), (30, 26, 22))
    lia = np.array([[-1, 0, 0, 15], [0, 0, 1, -11], [0, -1, 0, 13], [0, 0, 0, 1]], float)
    cases["labels_sparse"] = (save("labels.nii.gz", labels, affine=lia), "segmentation", labels)
    # a 4D image: volumes become channels
    v = rng.integers(0, 255, (19, 17, 13, 3), dtype=np.uint8)
    cases["fourd"] = (save("fourd.nii", v), "image", v)
    # an RGB NIfTI (RGB24): a 3-channel uint8 image whose channels are R, G and B
    rgb = np.zeros((18, 15, 11), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for name in "RGB":
        rgb[name] = rng.integers(0, 255, rgb.shape, dtype=np.uint8)
    channels = np.stack([rgb[name] for name in "RGB"], axis=-1)
    cases["rgb"] = (save("rgb.nii.gz", rgb), "image", channels)
    # a 2D image (one section), an ANALYZE pair, float labels (atlases saved as float)
    flat = rng.integers(0, 255, (100, 80), dtype=np.uint8)
    cases["twod"] = (save("twod.nii.gz", flat), "image", flat[:, :, None])
    ana = rng.integers(-500, 500, (30, 20, 10), dtype=np.int16)
    nib.save(nib.AnalyzeImage(ana, np.eye(4)), folder / "analyze.img")
    cases["analyze"] = (folder / "analyze.hdr", "image", ana)
    fl = np.zeros((40, 30, 20), np.float32)
    fl[5:10, 5:10, 5:10], fl[20:30, 10:20, 2:9] = 3.0, 700.0
    cases["float_labels"] = (save("float_labels.nii.gz", fl), "segmentation", fl.astype(np.uint32))
    return cases


@pytest.fixture(scope="session")
def converted(tmp_path_factory, data):
    """One workflow run over every case, with the default config."""
    work = tmp_path_factory.mktemp("volumes")
    cases = synthetic(work / "inputs")
    for name, path_type in {
        "mni_t1": ("mni_t1", "image"),
        "stat_map": ("stat_map", "image"),
        "aal3": ("aal3", "segmentation"),
        "aal": ("aal", "segmentation"),
        "desikan": ("desikan", "segmentation"),
        "anatomical": ("anatomical", "image"),
        "example_4d": ("example_4d", "image"),
        "nifti2": ("nifti2", "image"),
        "mgz": ("mgz", "image"),
        "standard": ("standard", "image"),
    }.items():
        path = data[path_type[0]]
        cases[name] = (path, path_type[1], None)
    sheet = write_sheet(
        work / "samples.csv",
        [{"dataset": name, "path": path, "type": kind} for name, (path, kind, _) in cases.items()],
    )
    snakemake(work, "--config", f"samples={sheet}", f"results={work / 'results'}")
    return work / "results", cases


def nibabel_expected(path, kind):
    """Scale 0 as the documented type rules make it, computed from nibabel directly."""
    img = nib.load(path)
    a = np.asanyarray(img.dataobj)
    if a.dtype.kind == "f" and kind == "image":
        a = a.astype(np.float32)
    return a.astype(a.dtype.newbyteorder("="))  # big-endian files are stored little-endian


CASES = [
    "twod",
    "analyze",
    "float_labels",
    "rgb",
    "aniso_int16",
    "float_nan",
    "float64",
    "scaled",
    "labels_sparse",
    "fourd",
    "mni_t1",
    "stat_map",
    "aal3",
    "aal",
    "desikan",
    "anatomical",
    "example_4d",
    "nifti2",
    "mgz",
    "standard",
]


@pytest.mark.parametrize("name", CASES)
def test_every_scale_reads_back_right(converted, name):
    results, cases = converted
    path, kind, expected = cases[name]
    checked = check_pyramid(results / name)
    info = checked["info"]
    if expected is None:
        expected = nibabel_expected(path, kind)
    if kind == "segmentation" and expected.dtype.itemsize < 4:
        expected = expected.astype(np.uint32)  # compressed_segmentation, the label default
    expected = expected.reshape(expected.shape[:3] + (-1,), order="F")
    assert info["type"] == kind
    assert info["num_channels"] == expected.shape[3]
    assert np.dtype(info["data_type"]) == expected.dtype
    np.testing.assert_array_equal(checked["scale0"], expected)
    # the last scale fits in about one chunk
    last = info["scales"][-1]
    assert all(s <= c for s, c in zip(last["size"], last["chunk_sizes"][0], strict=True))


def test_resolution_and_transform_follow_the_affine(converted):
    results, cases = converted
    img = nib.load(cases["labels_sparse"][0])
    info = json.loads((results / "labels_sparse" / "info").read_text())
    transform = np.array(json.loads((results / "labels_sparse" / "transform.json").read_text()))
    res = np.array(info["scales"][0]["resolution"])
    np.testing.assert_allclose(res, np.array(img.header.get_zooms()[:3]) * 1e6)
    # the centre of voxel (i, j, k) in Neuroglancer's model space is ((i, j, k) + 0.5) * res
    ijk = np.array([3, 5, 7])
    centre_nm = transform @ np.append((ijk + 0.5) * res, 1)
    np.testing.assert_allclose(centre_nm[:3], (img.affine @ np.append(ijk, 1))[:3] * 1e6)


def test_fan_out_matches_single_job(tmp_path, data, converted):
    """Tiny jobs (slabs split in x, y and z, several stages) give the same bytes as one job."""
    results, cases = converted
    names = ["aniso_int16", "labels_sparse", "fourd", "float_nan"]
    sheet = write_sheet(
        tmp_path / "samples.csv",
        [{"dataset": n, "path": cases[n][0], "type": cases[n][1]} for n in names],
    )
    out = tmp_path / "results"
    snakemake(
        tmp_path,
        "--config",
        f"samples={sheet}",
        f"results={out}",
        "voxels_per_job=5000",
        "chunk_voxels=512",
    )
    plan = make_plan(
        "aniso_int16",
        open_source(cases["aniso_int16"][0]),
        Options(voxels_per_job=5000, chunk_voxels=512),
    )
    assert len(plan.stages) > 1 and plan.stages[0].count > 4
    for n in names:
        check_pyramid(out / n)
        np.testing.assert_array_equal(
            check_pyramid(out / n)["scale0"], check_pyramid(results / n)["scale0"]
        )


def test_sheet_overrides_and_gzip(tmp_path, converted):
    """data_type, input range, max_scales, chunk_size and gzip from the sheet, end to end."""
    _, cases = converted
    path = cases["aniso_int16"][0]
    sheet = tmp_path / "samples.csv"
    sheet.write_text(
        "dataset,path,type,data_type,input_min,input_max,max_scales,chunk_size,gzip\n"
        f"over,{path},image,uint8,-3000,3000,2,16,true\n"
    )
    out = tmp_path / "results"
    snakemake(tmp_path, "--config", f"samples={sheet}", f"results={out}")
    info = json.loads((out / "over" / "info").read_text())
    assert info["data_type"] == "uint8" and len(info["scales"]) == 2
    assert info["scales"][0]["chunk_sizes"] == [[16, 16, 16]]
    chunks = [p for p in (out / "over" / info["scales"][0]["key"]).iterdir()]
    assert chunks and all(p.suffix == ".gz" for p in chunks)
    source = np.asanyarray(nib.load(path).dataobj).astype(np.float64)
    expected = np.clip((source + 3000) / 6000 * 255, 0, 255)
    expected = np.trunc(expected + 0.5).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(read_cloudvolume(out / "over", 0), expected)
