"""Every encoding end to end: lossless ones bit-identical to raw, jpeg within its error, and the
pyramid of a lossy dataset made from raw data, never from jpeg."""

import numpy as np
import pytest

from conftest import load_info, read_cloudvolume, read_tensorstore, snakemake, write_sheet
from ngprecomputed.encodings import codec

pytestmark = pytest.mark.workflow

ROWS = {
    "t1_raw": ("mni_t1", "image", "raw"),
    "t1_png": ("mni_t1", "image", "png"),
    "t1_jpeg": ("mni_t1", "image", "jpeg"),
    "labels_raw": ("aal", "segmentation", "raw"),
    "labels_cseg": ("aal", "segmentation", ""),  # the default for labels
}


@pytest.fixture(scope="module")
def results(tmp_path_factory, data):
    work = tmp_path_factory.mktemp("encodings")
    sheet = write_sheet(
        work / "samples.csv",
        [
            {
                "dataset": name,
                "path": data[src],
                "type": kind,
                "encoding": enc,
                "data_type": "uint32" if kind == "segmentation" else "",
            }
            for name, (src, kind, enc) in ROWS.items()
        ],
    )
    # small jobs: several stages, so coarse scales are made from stored finer ones
    snakemake(
        work, "--config", f"samples={sheet}", f"results={work / 'out'}", "voxels_per_job=1000000"
    )
    return work / "out"


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse) if mse else np.inf


def scales(out, name):
    return range(len(load_info(out / name)["scales"]))


@pytest.mark.parametrize(
    ("name", "reference"), [("t1_png", "t1_raw"), ("labels_cseg", "labels_raw")]
)
def test_lossless_encodings_equal_raw_at_every_scale(results, name, reference):
    info = load_info(results / name)
    assert info["scales"][0]["encoding"] == ("png" if "png" in name else "compressed_segmentation")
    for k in scales(results, name):
        expected = read_tensorstore(results / reference, k)
        np.testing.assert_array_equal(read_tensorstore(results / name, k), expected)
        np.testing.assert_array_equal(read_cloudvolume(results / name, k), expected)


def test_jpeg_is_within_its_documented_error(results):
    assert load_info(results / "t1_jpeg")["scales"][0]["encoding"] == "jpeg"
    for k in scales(results, "t1_jpeg"):
        raw = read_tensorstore(results / "t1_raw", k)
        got = read_tensorstore(results / "t1_jpeg", k)
        assert psnr(got, raw) >= 40, k
        assert psnr(read_cloudvolume(results / "t1_jpeg", k), raw) >= 40, k


def test_lossy_pyramid_is_made_from_raw(results):
    """The raw copies a jpeg dataset's later stages read are the raw dataset's own bytes, and
    every coarse jpeg chunk is exactly the jpeg of the raw pyramid's chunk (a coarse scale made
    from decoded jpeg would differ)."""
    copies = sorted((results / ".work" / "t1_jpeg" / "raw").iterdir())
    assert copies, "a multi-stage jpeg dataset keeps raw copies of its stage boundaries"
    for folder in copies:
        for chunk in folder.iterdir():
            assert (
                chunk.read_bytes() == (results / "t1_raw" / folder.name / chunk.name).read_bytes()
            )
    info = load_info(results / "t1_jpeg")
    assert len(info["scales"]) > 2
    for scale in info["scales"][1:]:
        chunks = sorted((results / "t1_jpeg" / scale["key"]).iterdir())
        assert chunks, scale["key"]
        for chunk in chunks:
            shape = [hi - lo for lo, hi in (map(int, r.split("-")) for r in chunk.name.split("_"))]
            raw = (results / "t1_raw" / scale["key"] / chunk.name).read_bytes()
            array = codec("raw").decode(raw, (*shape, 1), np.uint8)
            assert chunk.read_bytes() == codec("jpeg").encode(array, quality=90), chunk


def test_compressed_segmentation_is_much_smaller_than_raw(results):
    def size(name):
        return sum(p.stat().st_size for p in (results / name).rglob("*") if p.is_file())

    assert size("labels_cseg") * 5 < size("labels_raw")
