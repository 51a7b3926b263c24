"""Re-encoding existing precomputed datasets, ours and neuroglancer-scripts', by subcommand
and by the workflow."""

import subprocess

import nibabel as nib
import numpy as np
import pytest

from conftest import check_pyramid, load_info, read_tensorstore, snakemake, write_sheet
from ngprecomputed.cli import main

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def theirs(tmp_path_factory, data):
    """The MNI T1 as neuroglancer-scripts writes it by default: gzipped raw chunks (.gz)."""
    out = tmp_path_factory.mktemp("ns") / "t1"
    subprocess.run(
        ["volume-to-precomputed-pyramid", "--flat", str(data["mni_t1"]), str(out)],
        check=True,
        capture_output=True,
    )
    assert any(p.suffix == ".gz" for p in out.rglob("*"))
    return out


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_reencode_a_neuroglancer_scripts_dataset(tmp_path, data, theirs, encoding):
    out = tmp_path / "t1"
    assert main(["reencode", str(theirs), str(out), "--encoding", encoding]) == 0
    info = load_info(out)
    assert {s["encoding"] for s in info["scales"]} == {encoding}
    expected = np.asanyarray(nib.load(data["mni_t1"]).dataobj)
    np.testing.assert_array_equal(read_tensorstore(out, 0)[..., 0], expected)


def test_workflow_reencodes_rows_that_are_datasets(tmp_path, data):
    sheet = write_sheet(
        tmp_path / "first.csv",
        [
            {"dataset": "labels", "path": data["aal"], "type": "segmentation"},
        ],
    )
    snakemake(tmp_path, "--config", f"samples={sheet}", f"results={tmp_path / 'a'}")
    again = write_sheet(
        tmp_path / "second.csv",
        [
            {
                "dataset": "labels_raw",
                "path": tmp_path / "a" / "labels",
                "type": "segmentation",
                "encoding": "raw",
            },
        ],
    )
    snakemake(tmp_path, "--config", f"samples={again}", f"results={tmp_path / 'b'}")
    first, second = tmp_path / "a" / "labels", tmp_path / "b" / "labels_raw"
    assert load_info(second)["scales"][0]["encoding"] == "raw"
    for k in range(len(load_info(first)["scales"])):
        np.testing.assert_array_equal(read_tensorstore(second, k), read_tensorstore(first, k))
    check_pyramid(second)


@pytest.mark.parametrize("shard", ["identity", "murmurhash3_x86_128"])
def test_reencode_into_shards_and_back(tmp_path, theirs, shard):
    """Any hash: each task owns whole shards and gathers their chunks wherever they are; a
    sharded dataset re-encodes back to chunk files."""
    from conftest import read_cloudvolume

    sharded, flat, ref = tmp_path / "sharded", tmp_path / "flat", tmp_path / "ref"
    small = ["--processes", "2", "--shard", shard]
    assert main(["reencode", str(theirs), str(ref), "--encoding", "raw"]) == 0
    assert main(["reencode", str(theirs), str(sharded), "--encoding", "raw", "--gzip", *small]) == 0
    assert main(["reencode", str(sharded), str(flat), "--encoding", "png"]) == 0
    info = load_info(sharded)
    for k, scale in enumerate(info["scales"]):
        assert scale["sharding"]["hash"] == shard and scale["sharding"]["data_encoding"] == "gzip"
        expected = read_tensorstore(ref, k)
        np.testing.assert_array_equal(read_tensorstore(sharded, k), expected)
        np.testing.assert_array_equal(read_cloudvolume(sharded, k), expected)
        np.testing.assert_array_equal(read_tensorstore(flat, k), expected)
    assert all(p.suffix == ".shard" for p in sharded.glob("*/*"))
