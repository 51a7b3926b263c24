"""Stored values from source values: rounding, clipping, rescaling, label checks."""

import numpy as np
import pytest

from conftest import bare_plan
from ngprecomputed.errors import InputError
from ngprecomputed.plan import Plan
from ngprecomputed.values import to_stored


def plan(kind="image", data_type="uint8", rescale=None) -> Plan:
    return bare_plan(
        source="src.nii", type=kind, data_type=data_type, source_dtype="<f4", rescale=rescale
    )


def test_float_to_integer_rounds_half_away_from_zero_clips_and_zeroes_nan():
    a = np.array([-1.5, -0.5, 0.5, 1.5, 2.4, 300.0, np.nan, -np.inf])
    got = to_stored(a, plan(data_type="int8"))
    np.testing.assert_array_equal(got, [-2, -1, 1, 2, 2, 127, 0, -128])


def test_input_range_maps_onto_the_whole_type():
    a = np.array([-100.0, 0.0, 50.0, 100.0, 200.0])
    np.testing.assert_array_equal(to_stored(a, plan(rescale=(0.0, 100.0))), [0, 0, 128, 255, 255])
    np.testing.assert_allclose(
        to_stored(a, plan(data_type="float32", rescale=(0.0, 100.0))), [0, 0, 0.5, 1, 1]
    )


@pytest.mark.parametrize(
    ("values", "words"),
    [([1.0, 2.5], "non-integer"), ([1, -3], "negative"), ([1, 70000], "does not fit")],
)
def test_bad_labels_are_input_errors(values, words):
    with pytest.raises(InputError, match=words):
        to_stored(np.array(values), plan("segmentation", "uint16"))
