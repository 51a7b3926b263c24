"""From source values to stored values: the documented type rules, applied per slab.

- Scaled sources (NIfTI ``scl_slope``/``scl_inter``) are read scaled (float).
- ``input_min``/``input_max``: values are mapped linearly from that range onto the whole range of
  an integer data type (or onto [0, 1] for float32), then clipped.
- Float to integer: rounded to nearest, halves away from zero, clipped to the type's range;
  NaN becomes 0.
- Segmentations: labels must be whole, finite and not negative; anything else is an input error.
  Unsigned labels keep their width in memory (the mode is computed on them) and are widened to
  the stored type (e.g. uint32 for compressed_segmentation) chunk by chunk as they are written.
"""

import random

import numpy as np

from .errors import InputError
from .plan import Plan


def to_stored(array: np.ndarray, plan: Plan) -> np.ndarray:
    """``array`` (as read from the source) in the plan's data type."""
    out = np.dtype(plan.data_type)
    if plan.type == "segmentation":
        return _labels(array, out, plan)
    if plan.rescale is not None:
        lo, hi = plan.rescale
        scaled = (array.astype(np.float64) - lo) / (hi - lo)
        if out.kind == "f":
            return np.clip(scaled, 0, 1).astype(out)
        info = np.iinfo(out)
        array = scaled * (float(info.max) - float(info.min)) + float(info.min)
    if array.dtype == out:
        return array
    if out.kind == "f":
        return array.astype(out)
    if array.dtype.kind == "f":
        info = np.iinfo(out)
        rounded = np.trunc(array + np.copysign(0.5, array))
        rounded = np.nan_to_num(rounded, nan=0, posinf=info.max, neginf=info.min)
        return np.clip(rounded, info.min, info.max).astype(out)
    info = np.iinfo(out)
    return np.clip(array, info.min, info.max).astype(out)


def _labels(array: np.ndarray, out: np.dtype, plan: Plan) -> np.ndarray:
    where = f"dataset {plan.dataset}: {plan.source}"
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise InputError(
                f"{where}: segmentation has non-integer labels "
                f"(e.g. {array[bad].flat[0]}); is it an image?"
            )
    if array.dtype.kind in "if" and array.size and array.min() < 0:
        raise InputError(f"{where}: segmentation has negative labels (min {array.min()})")
    if array.size and array.max() > np.iinfo(out).max:
        raise InputError(f"{where}: label {array.max()} does not fit {out.name}; set data_type")
    if array.dtype.kind == "u" and array.dtype.itemsize <= out.itemsize:
        return array  # widened chunk by chunk when written: a uint8 atlas stays 1 byte a voxel
    return array.astype(out)


SAMPLE_BOXES = 4  # small boxes of each scale-0 slab checked against nibabel (one read each)
SAMPLE_EDGE = (3, 3, 2)


class ValueMismatch(InputError):
    """What a job was about to write differs from nibabel's values: a reader bug, caught
    before anything is written."""


def check_sample(
    source,
    plan: Plan,
    box,
    stored: np.ndarray,
    read: np.ndarray | None = None,
    n: int = SAMPLE_BOXES,
) -> None:
    """A few small boxes of ``stored`` (scale 0 of ``box``, about to be written), its corners
    among them, against what nibabel itself returns for them: the documented conversion of
    nibabel's values, and, when the plan keeps values as they are (``plan.exact``), those values
    up to float32 rounding. ``read``: the box's values when nibabel's proxy read them (they are
    nibabel's values: a small .nii.gz is not decompressed four more times to get them again)."""
    lo = np.array([b[0] for b in box])
    hi = np.array([b[1] for b in box])
    edge = np.minimum(SAMPLE_EDGE, hi - lo)
    # the stdlib's generator: numpy.random costs a job 9 ms to import
    rng = random.Random(",".join(map(str, [*lo, *hi])))
    top = hi - edge
    starts = [lo, top, *(np.array(list(map(rng.randint, lo, top))) for _ in range(n - 2))]
    for start in starts:
        sub = [(int(a), int(a + e)) for a, e in zip(start, edge, strict=True)]
        inside = tuple(slice(a - o, b - o) for (a, b), o in zip(sub, lo, strict=True))
        want = source.nibabel_values(sub) if read is None else read[inside]
        got = stored[inside]
        bad = ~_same(got, to_stored(want, plan))
        if plan.exact and np.dtype(plan.data_type).kind in "iuf":
            bad |= ~np.isclose(
                got.astype(np.float64),
                want.astype(np.float64),
                rtol=2e-7,
                atol=float(np.finfo(np.float32).tiny),
                equal_nan=True,
            )
        if bad.any():
            at = tuple(int(v) for v in np.argwhere(bad)[0])
            voxel = tuple(int(v) for v in np.add(start, at[:3]))
            channel = f" channel {at[3]}" if got.shape[3] > 1 else ""
            raise ValueMismatch(
                f"dataset {plan.dataset}: {plan.source}: voxel {voxel}{channel} would be written"
                f" as {got[at]!r} but nibabel reads {want[at]!r}; nothing was written (a bug:"
                " please report it; data_type or input_min/input_max convert with rounding)"
            )


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a == b) | (np.isnan(a) & np.isnan(b))
