"""``raw``: little-endian values, Fortran order ``[x, y, z, channel]``, no header."""

import numpy as np


def encode(array: np.ndarray) -> bytes:
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="F")


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    dt = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(shape)) * dt.itemsize
    if len(data) != expected:
        raise ValueError(f"raw chunk has {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=dt).reshape(shape, order="F")
