"""Sharded datasets end to end: every scale read by TensorStore (strict) and CloudVolume equals
the unsharded output of the same dataset, with few files."""

import numpy as np
import pytest

from conftest import load_info, read_cloudvolume, read_tensorstore, snakemake, write_sheet

pytestmark = pytest.mark.workflow

ROWS = {
    # name: (source, type, encoding, sharded, gzip)
    "t1": ("mni_t1", "image", "raw", False, False),
    "t1_sharded": ("mni_t1", "image", "raw", True, False),
    "t1_sharded_gz": ("mni_t1", "image", "raw", True, True),
    "t1_jpeg": ("mni_t1", "image", "jpeg", False, False),
    "t1_jpeg_sharded": ("mni_t1", "image", "jpeg", True, False),
    "aal": ("aal", "segmentation", "compressed_segmentation", False, False),
    "aal_sharded": ("aal", "segmentation", "compressed_segmentation", True, True),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory, data):
    work = tmp_path_factory.mktemp("sharded")
    sheet = write_sheet(
        work / "samples.csv",
        [
            {
                "dataset": name,
                "path": data[src],
                "type": kind,
                "encoding": enc,
                "sharded": str(sharded).lower(),
                "gzip": str(gz).lower(),
            }
            for name, (src, kind, enc, sharded, gz) in ROWS.items()
        ],
    )
    # small jobs: several stages and several shards per scale
    snakemake(
        work,
        "--config",
        f"samples={sheet}",
        f"results={work / 'out'}",
        "voxels_per_job=1000000",
        "job_voxels=1",
    )
    return work / "out"


def test_gz_sources_are_decompressed_once_then_removed(results):
    """Cube slabs of a .nii.gz read one decompressed copy (a temporary output)."""
    logs = results / "logs" / "t1_sharded"
    assert (logs / "decompress.log").exists()
    assert not (logs / "gzip_index.log").exists()
    assert not (results / ".work" / "t1_sharded" / "source.raw").exists()


def files(dataset):
    return [p for p in dataset.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("t1_sharded", "t1"),
        ("t1_sharded_gz", "t1"),
        ("t1_jpeg_sharded", "t1_jpeg"),
        ("aal_sharded", "aal"),
    ],
)
def test_sharded_scales_equal_unsharded(results, name, reference):
    info = load_info(results / name)
    assert len(info["scales"]) == len(load_info(results / reference)["scales"]) >= 2
    for k, scale in enumerate(info["scales"]):
        assert scale["sharding"]["@type"] == "neuroglancer_uint64_sharded_v1"
        expected = read_tensorstore(results / reference, k)
        np.testing.assert_array_equal(read_tensorstore(results / name, k), expected)
        np.testing.assert_array_equal(read_cloudvolume(results / name, k), expected)


@pytest.fixture(scope="module")
def default_jobs(tmp_path_factory, data):
    """The MNI T1 with the default job size, sharded and not."""
    work = tmp_path_factory.mktemp("sharded_default")
    rows = [
        {"dataset": n, "path": data["mni_t1"], "type": "image", "sharded": s}
        for n, s in SHARDED.items()
    ]
    sheet = write_sheet(work / "samples.csv", rows)
    snakemake(work, "--config", f"samples={sheet}", f"results={work / 'out'}")
    return work / "out"


SHARDED = {"flat": "false", "sharded": "true"}


def test_sharded_data_is_in_few_files(default_jobs):
    info = load_info(default_jobs / "sharded")
    sharded, flat = files(default_jobs / "sharded"), files(default_jobs / "flat")
    shards = [p for p in sharded if p.suffix == ".shard"]
    assert {p.parent.name for p in shards} == {s["key"] for s in info["scales"]}
    assert len(shards) == len(info["scales"])  # one job: one shard per scale
    assert len(sharded) <= len(shards) + 2  # and info, transform.json
    assert len(flat) > 5 * len(sharded)
    for k in range(len(info["scales"])):
        np.testing.assert_array_equal(
            read_tensorstore(default_jobs / "sharded", k),
            read_tensorstore(default_jobs / "flat", k),
        )
