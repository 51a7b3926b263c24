"""Mean and mode against independent numpy computations, including edges, NaN and ties."""

import numpy as np
import pytest

from conftest import assert_is_mode, block_mean
from ngprecomputed.downsample import downsample

FACTORS = [(2, 2, 2), (2, 2, 1), (1, 1, 2), (2, 1, 1)]


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32", "uint32"])
def test_mean_is_rounded_block_mean(factor, dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    a = rng.integers(max(info.min, -(10**6)), min(info.max, 10**6), (9, 7, 5, 2)).astype(dtype)
    got = downsample(a, factor, "mean")
    expected = np.floor(block_mean(a, factor) + 0.5)
    np.testing.assert_array_equal(got, expected.astype(dtype))


def test_float_mean_ignores_nan():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 10, (8, 6, 7, 1)).astype(np.float32)
    a[rng.random(a.shape) < 0.3] = np.nan
    a[:2, :2, :2] = np.nan
    got = downsample(a, (2, 2, 2), "mean")
    assert np.isnan(got[0, 0, 0, 0])
    np.testing.assert_allclose(got, block_mean(a, (2, 2, 2)), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("factor", FACTORS)
def test_mode_is_a_true_mode_with_smallest_label_on_ties(factor):
    rng = np.random.default_rng(3)
    a = rng.choice(np.array([0, 5, 256, 70000], dtype=np.uint32), (11, 9, 7, 1))
    assert_is_mode(a, downsample(a, factor, "mode"), factor)


def test_mode_on_large_ids_and_uniform_regions():
    a = np.full((16, 16, 16, 1), 2**40 + 3, dtype=np.uint64)
    a[3:9, 2:5, 7:15] = 2**40 + 1
    assert_is_mode(a, downsample(a, (2, 2, 2), "mode"), (2, 2, 2))


def test_pieces_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(4)
    a = rng.integers(0, 255, (10, 12, 21, 1), dtype=np.uint8)
    whole = downsample(a, (2, 2, 2), "mean")
    monkeypatch.setattr("ngprecomputed.downsample._PIECE_VOXELS", 300)
    np.testing.assert_array_equal(downsample(a, (2, 2, 2), "mean"), whole)


def atlas_like(dtype, shape=(13, 11, 9), seed=7):
    """Regions of a few labels, 2x2x2 blocks of one label mostly, some voxels changed."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    labels = np.array([info.min, 0, 1, info.max // 3, info.max], dtype=dtype)
    coarse = rng.choice(labels, tuple(-(-n // 2) for n in shape))
    fine = np.repeat(np.repeat(np.repeat(coarse, 2, 0), 2, 1), 2, 2)[: shape[0], : shape[1]]
    fine = fine[..., : shape[2]].copy()
    flip = rng.random(shape) < 0.05
    fine[flip] = rng.choice(labels, int(flip.sum()))
    return fine[..., None]


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64"])
@pytest.mark.parametrize("layout", ["F", "C", "view"])
def test_mode_of_mostly_uniform_blocks_in_any_layout(factor, dtype, layout):
    """Uniform blocks are found by comparing rows (x pairs as one word): every type, odd edges,
    F- and C-ordered arrays and a strided view give a true mode, and the input is unchanged."""
    a = atlas_like(np.dtype(dtype))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "view":
        a = np.asfortranarray(atlas_like(np.dtype(dtype), (26, 11, 9)))[::2]
    before = a.copy()
    got = downsample(a, factor, "mode")
    np.testing.assert_array_equal(a, before)
    # the independent check takes labels >= 0 in int64: each label as its rank (same order)
    _, ranks = np.unique(np.concatenate([a.ravel(), got.ravel()]), return_inverse=True)
    assert_is_mode(ranks[: a.size].reshape(a.shape), ranks[a.size :].reshape(got.shape), factor)


def test_mode_of_channels_is_each_channels_mode():
    """Two channels of labels: each coarse channel is the true mode of its own fine channel."""
    a = np.concatenate([atlas_like(np.dtype("uint16"), seed=s) for s in (1, 2)], axis=3)
    got = downsample(np.asfortranarray(a), (2, 2, 2), "mode")
    for c in range(2):
        assert_is_mode(a[..., c : c + 1].astype(np.int64), got[..., c : c + 1], (2, 2, 2))
