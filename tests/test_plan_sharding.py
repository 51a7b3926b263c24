"""Sharded plans: every slab is exactly one shard at every scale of its stage.

The shard of each chunk is computed here from the format's definition (compressed Morton code by
a plain bit loop, shifted by preshift + minishard bits), not with the package's code.
"""

import itertools

import numpy as np
import pytest

from conftest import morton
from ngprecomputed.plan import make_plan
from ngprecomputed.settings import Options
from ngprecomputed.sources.header import HeaderOnly


def shard_of_chunk(pos, grid, sharding) -> int:
    low = sharding["preshift_bits"] + sharding["minishard_bits"]
    return morton(pos, grid) >> low


SHAPES = [
    (788, 932, 756),  # the x4 MNI T1
    (197, 233, 189),
    (1000, 300, 130),  # flat, not a power of two anywhere
    (2000, 1500, 90),
    (130, 1200, 700),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("budget", [2**21, 2**24, 2**27])
def test_each_slab_is_one_whole_shard_at_every_scale(shape, budget):
    plan = make_plan(
        "v",
        HeaderOnly((*shape, 1), np.dtype("uint8"), (0.25, 0.25, 0.5)),
        Options(sharded=True, voxels_per_job=budget),
    )
    for s, stage in enumerate(plan.stages):
        for j in range(stage.first, stage.last + 1):
            scale = plan.scales[j]
            grid = scale.grid.shape
            owner = {}
            for slab in range(stage.count):
                box = plan.box_at(plan.slab(s, slab), stage.last, j)
                shards = {
                    shard_of_chunk(pos, grid, scale.sharding)
                    for pos, _ in scale.grid.chunks_in(box)
                }
                assert len(shards) == 1, (s, slab, j, shards)
                owner.setdefault(shards.pop(), []).append(slab)
            # no two slabs write the same shard, and every chunk belongs to some slab's shard
            assert all(len(v) == 1 for v in owner.values()), owner
            every = {
                shard_of_chunk(pos, grid, scale.sharding)
                for pos in itertools.product(*(range(g) for g in grid))
            }
            assert every == set(owner)
            bits = sum(max(g - 1, 0).bit_length() for g in grid)
            sh = scale.sharding
            assert sh["preshift_bits"] + sh["minishard_bits"] + sh["shard_bits"] == bits


def test_sharded_x4_is_a_few_dozen_files():
    plan = make_plan(
        "v",
        HeaderOnly((788, 932, 756, 1), np.dtype("uint8"), (0.25, 0.25, 0.25)),
        Options(sharded=True),
    )
    files = sum(stage.count * (stage.last - stage.first + 1) for stage in plan.stages)
    assert files <= 36


@pytest.mark.parametrize("size", [(788, 932, 756), (1000, 300, 130), (64, 64, 64)])
def test_reencoded_shards_are_cubes_of_at_most_2_27_voxels(size):
    """Re-encoding picks shards the way conversion does (one policy): with the identity hash,
    each shard is a cube of 2^k chunks per axis (cut by the grid's edge), the largest cube of
    at most 2^27 voxels; 64^3 chunks: 8 per axis."""
    from ngprecomputed.reencode import target_info

    info = {
        "type": "image",
        "data_type": "uint8",
        "num_channels": 1,
        "scales": [
            {
                "key": "s0",
                "size": list(size),
                "resolution": [1, 1, 1],
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [[64, 64, 64]],
                "encoding": "raw",
            }
        ],
    }
    scale = target_info(info, "raw", {}, "src", "identity")["scales"][0]
    grid = [-(-n // 64) for n in size]
    members = {}
    for pos in itertools.product(*(range(g) for g in grid)):
        members.setdefault(shard_of_chunk(pos, grid, scale["sharding"]), []).append(pos)
    for chunks in members.values():
        lo, hi = np.min(chunks, axis=0), np.max(chunks, axis=0) + 1
        corner = lo // 8 * 8
        assert (lo == corner).all() and (hi == np.minimum(corner + 8, grid)).all(), (lo, hi)
        assert len(chunks) == int(np.prod(hi - lo))
