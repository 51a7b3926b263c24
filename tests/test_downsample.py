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
