"""``png``: uint8 (1-4 channels) or uint16 (1 channel), lossless, same geometry as ``jpeg``.

Readers (Neuroglancer since its 2024 multi-channel fix, TensorStore) decode the PNG and read its
pixels in raster order as the Fortran-flattened ``[x, y, z]`` array, channels interleaved per
pixel (grey, grey + alpha, RGB, RGBA for 1-4 channels). We write width ``x``, height ``y * z``,
with pillow. CloudVolume 12 misreads multi-channel (as planar) and 16-bit grey (pyspng).

uint16 with more than one channel raises ``ValueError``: pillow cannot write 16-bit LA/RGB/RGBA,
and Neuroglancer's de-interleaving of multi-channel PNG works on bytes, not 16-bit samples. Use
``raw`` for such data. 16-bit grey is written and read back big-endian by the PNG rules
(checked bit-exact in the tests).
"""

import io

import numpy as np
from PIL import Image

from .jpeg import from_image, to_image

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def encode(array: np.ndarray, compress_level: int = 6) -> bytes:
    """``compress_level``: zlib level 0-9 (pillow's default 6)."""
    if array.dtype.kind != "u" or array.dtype.itemsize > 2:
        raise ValueError(f"png encodes uint8 or uint16 only, got {array.dtype}")
    pixels = to_image(array)
    channels = pixels.shape[2]
    if channels not in MODES:
        raise ValueError(f"png encodes 1-4 channels, got {channels}")
    if array.dtype.itemsize == 2:
        if channels != 1:
            raise ValueError(f"png: uint16 with {channels} channels is not supported; use raw")
        image = Image.fromarray(pixels[..., 0].astype("<u2", copy=False))  # mode I;16
    else:
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)  # L, LA, RGB, RGBA
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"png decodes to uint8 or uint16 only, not {dtype}")
    image = Image.open(io.BytesIO(data))
    # pillow names 16-bit grey "I;16" (older versions: "I", read as int32)
    expected = ("I;16", "I;16B", "I") if dtype == np.uint16 else (MODES.get(shape[3]),)
    if image.mode not in expected or (dtype == np.uint16 and shape[3] != 1):
        raise ValueError(f"png of mode {image.mode} does not fit a {tuple(shape)} {dtype} chunk")
    pixels = np.asarray(image)
    if pixels.dtype != dtype:  # older pillow reads 16-bit grey as int32 mode "I"
        pixels = pixels.astype(dtype)
    return from_image(pixels, shape)
