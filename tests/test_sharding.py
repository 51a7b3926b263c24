"""Shards written by ngprecomputed, read back by TensorStore (strict) and CloudVolume.

Grids are not powers of two, both hashes and both encodings of the index and the data are
used, and the parameters leave minishards (and whole shards) empty.
"""

import json

import numpy as np
import pytest

from conftest import morton, read_cloudvolume, read_tensorstore
from ngprecomputed.chunks import Grid
from ngprecomputed.sharding import ShardingSpec, compressed_morton_codes, minishard_of, shard_of
from ngprecomputed.store import ScaleStore

SIZE = (45, 70, 19)  # chunks of 16x16x8: a 3 x 5 x 3 grid
CHUNK = (16, 16, 8)


def test_morton_codes_match_a_bit_loop():
    grid = (3, 5, 3)
    positions = np.array([(x, y, z) for z in range(3) for y in range(5) for x in range(3)])
    codes = compressed_morton_codes(positions, grid)
    assert [int(c) for c in codes] == [morton(p, grid) for p in positions]
    assert len(set(codes.tolist())) == len(positions)


def write_dataset(root, spec: ShardingSpec, data: np.ndarray, encoding="raw", dtype="uint16"):
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "image" if encoding != "compressed_segmentation" else "segmentation",
        "data_type": dtype,
        "num_channels": 1,
        "scales": [
            {
                "key": "s0",
                "size": list(SIZE),
                "resolution": [1, 1, 1],
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [list(CHUNK)],
                "encoding": encoding,
                "sharding": spec.to_info(),
                **(
                    {"compressed_segmentation_block_size": [8, 8, 8]}
                    if encoding == "compressed_segmentation"
                    else {}
                ),
            }
        ],
    }
    opts = {"block_size": (8, 8, 8)} if encoding == "compressed_segmentation" else {}
    store = ScaleStore(
        root, "s0", Grid(SIZE, CHUNK), dtype, 1, encoding, opts, sharding=spec.to_info()
    )
    box = tuple((0, s) for s in SIZE)
    written = store.write_box(box, data)
    (root / "info").write_text(json.dumps(info))
    return store, written


SPECS = [
    ShardingSpec(0, 2, 2, "identity", "raw", "raw"),
    ShardingSpec(2, 3, 2, "identity", "gzip", "gzip"),
    ShardingSpec(0, 3, 2, "murmurhash3_x86_128", "gzip", "raw"),
    ShardingSpec(2, 1, 3, "murmurhash3_x86_128", "raw", "gzip"),
]


@pytest.mark.parametrize(
    "spec",
    SPECS,
    ids=lambda s: (
        f"{s.hash}-{s.minishard_index_encoding}"
        f"-{s.data_encoding}-p{s.preshift_bits}m{s.minishard_bits}"
    ),
)
def test_readers_read_shards_back(tmp_path, spec):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 60000, size=(*SIZE, 1), dtype=np.uint16)
    store, written = write_dataset(tmp_path, spec, data)
    grid = (3, 5, 3)
    ids = compressed_morton_codes(
        np.array([(x, y, z) for z in range(3) for y in range(5) for x in range(3)]), grid
    )
    shards = set(shard_of(spec, ids).tolist())
    assert len(written) == len(shards)  # one file per non-empty shard
    pairs = set(zip(shard_of(spec, ids).tolist(), minishard_of(spec, ids).tolist(), strict=True))
    assert len(pairs) < len(shards) << spec.minishard_bits  # some minishards are empty
    for reader in (read_tensorstore, read_cloudvolume):
        back = reader(tmp_path, 0)
        np.testing.assert_array_equal(back.reshape(data.shape), data, err_msg=reader.__name__)
    np.testing.assert_array_equal(store.read_box(tuple((0, s) for s in SIZE)), data)


def test_segmentation_inside_shards(tmp_path):
    labels = np.zeros((*SIZE, 1), dtype=np.uint32)
    labels[5:30, 10:60, 2:15] = 7
    labels[20:44, 0:20, 0:10] = 123456
    spec = ShardingSpec(0, 2, 2, "murmurhash3_x86_128", "gzip", "gzip")
    write_dataset(tmp_path, spec, labels, "compressed_segmentation", "uint32")
    for reader in (read_tensorstore, read_cloudvolume):
        np.testing.assert_array_equal(reader(tmp_path, 0).reshape(labels.shape), labels)
