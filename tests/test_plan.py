"""Planning from headers: pyramid shape, chunk shapes, stages and slabs, data type rules."""

import numpy as np
import pytest

from conftest import bare_plan
from ngprecomputed.chunks import Grid, voxels
from ngprecomputed.datatypes import output_data_type
from ngprecomputed.errors import InputError
from ngprecomputed.geometry import chunk_shape, pyramid, stages
from ngprecomputed.plan import Plan
from ngprecomputed.settings import Options


def make(size, res=(1e6, 1e6, 1e6), channels=1, **kw) -> Plan:
    opts = Options(**kw)
    plan = bare_plan(type=opts.type, num_channels=channels, scales=pyramid(size, res, opts))
    plan.stages = stages(plan, opts.voxels_per_job)
    return plan


def test_anisotropic_pyramid_halves_finest_axes_first():
    scales = pyramid((512, 512, 170), (1e6, 1e6, 3e6), Options())
    res = [s.resolution for s in scales]
    assert res[0] == (1e6, 1e6, 3e6)
    assert res[1] == (2e6, 2e6, 3e6)  # z waits while it is the coarsest axis
    assert res[2] == (4e6, 4e6, 3e6)
    assert res[3] == (8e6, 8e6, 6e6)  # near-isotropic: then all axes
    assert scales[0].chunk[0] > scales[0].chunk[2]  # chunks follow the voxel shape
    last = scales[-1]
    assert all(s <= c for s, c in zip(last.size, last.chunk, strict=True))
    assert all(
        s.size == tuple(-(-p // f) for p, f in zip(prev.size, s.factor, strict=True))
        for prev, s in zip(scales, scales[1:], strict=False)
    )


def test_chunk_shape_is_near_target_and_capped_by_the_volume():
    assert chunk_shape((1, 1, 1), (1000, 1000, 1000), 64**3) == (64, 64, 64)
    assert chunk_shape((1, 1, 1), (1000, 1000, 3), 64**3) == (256, 256, 4)
    c = chunk_shape((1, 1, 4), (1000, 1000, 1000), 64**3)
    assert np.prod(c) == 64**3 and c[0] == c[1] > c[2]


def test_max_scales_and_fixed_chunk_size():
    scales = pyramid((300, 300, 300), (1, 1, 1), Options(max_scales=2, chunk_size=(32, 32, 16)))
    assert len(scales) == 2 and all(s.chunk == (32, 32, 16) for s in scales)


@pytest.mark.parametrize("budget", [3000, 40_000, 10**6, 2**27])
def test_slabs_tile_every_scale_exactly_once(budget):
    plan = make((150, 97, 61), chunk_voxels=4096, voxels_per_job=budget)
    covered = {j: 0 for j in range(len(plan.scales))}
    for index, st in enumerate(plan.stages):
        src = max(st.first - 1, 0)
        for slab in range(st.count):
            box = plan.slab(index, slab)
            n_in = voxels(plan.input_box(index, slab))
            chunk_in = int(np.prod(plan.scales[st.last].chunk)) * int(
                np.prod(plan.factor_between(src, st.last))
            )
            assert n_in <= max(budget, chunk_in)  # a job reads at most its budget (or a chunk)
            for j in range(st.first, st.last + 1):
                sub = plan.box_at(box, st.last, j)
                grid = Grid(plan.scales[j].size, plan.scales[j].chunk)
                for _, cbox in grid.chunks_in(sub):  # chunk-aligned: whole chunks only
                    assert all(
                        a >= lo and b <= hi for (a, b), (lo, hi) in zip(cbox, sub, strict=True)
                    )
                covered[j] += voxels(sub)
    assert covered == {j: int(np.prod(s.size)) for j, s in enumerate(plan.scales)}


def test_small_volume_is_one_job_and_big_volume_fans_out():
    assert make((197, 233, 189)).jobs == 1
    assert 100 < make((6500, 7400, 5700), voxels_per_job=2**28).jobs < 10_000


def test_needs_are_exactly_the_overlapping_slabs():
    plan = make((200, 190, 170), chunk_voxels=4096, voxels_per_job=60_000)
    assert len(plan.stages) > 2
    for index in range(1, len(plan.stages)):
        prev = plan.stages[index - 1]
        for slab in range(plan.stages[index].count):
            inbox = plan.input_box(index, slab)
            overlapping = [
                i
                for i in range(prev.count)
                if all(
                    a < d and c < b
                    for (a, b), (c, d) in zip(plan.slab(index - 1, i), inbox, strict=True)
                )
            ]
            assert plan.needs(index, slab) == overlapping and overlapping


@pytest.mark.parametrize(
    ("src", "scaled", "kind", "override", "out"),
    [
        ("uint8", False, "image", None, "uint8"),
        ("int16", False, "image", None, "int16"),
        ("float64", False, "image", None, "float32"),
        ("int16", True, "image", None, "float32"),
        ("int16", False, "image", "uint8", "uint8"),
        ("uint16", False, "segmentation", None, "uint16"),
        ("int16", False, "segmentation", None, "uint32"),
        ("float32", False, "segmentation", None, "uint32"),
        ("int64", False, "segmentation", None, "uint64"),
    ],
)
def test_data_type_rules(src, scaled, kind, override, out):
    opts = Options(type=kind, data_type=override)
    assert output_data_type(np.dtype(src), scaled, opts, "x") == out


def test_data_type_errors_name_the_dataset():
    with pytest.raises(InputError, match="dataset d1"):
        output_data_type(np.dtype("int64"), False, Options(), "dataset d1")
    with pytest.raises(InputError, match="float32"):
        output_data_type(
            np.dtype("uint8"), False, Options(type="segmentation", data_type="float32"), "d"
        )


def test_plan_round_trips_through_json():
    plan = make((150, 97, 61), chunk_voxels=4096, voxels_per_job=40_000)
    assert Plan.from_json(plan.to_json()) == plan
