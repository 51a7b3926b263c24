"""``compressed_segmentation``: uint32/uint64 labels, lossless, what the viewer draws labels from.

Neuroglancer decodes these blocks on the GPU; TensorStore and CloudVolume read them too. The
block size must match the scale's ``compressed_segmentation_block_size`` in ``info``.

- uint8/uint16 labels are promoted to uint32 by ``encode`` (the format has no smaller type):
  the scale's ``data_type`` must then say ``uint32``. Signed labels are refused.
- One channel only: the format allows several, but the ``compressed-segmentation`` package
  (2.3.3) crashes the interpreter on a 4-D array with more than one channel, and a segmentation
  volume has exactly one channel anyway.
- A chunk whose lookup tables pass the format's 24-bit offset (large chunks with many labels per
  block) raises ``OverflowError`` from the package: use smaller chunks.
"""

import compressed_segmentation as cseg
import numpy as np

LABEL_TYPES = (np.uint32, np.uint64)


def encode(array: np.ndarray, block_size: tuple[int, int, int] = (8, 8, 8)) -> bytes:
    if array.ndim != 4 or array.shape[3] != 1:
        raise ValueError(f"compressed_segmentation encodes one channel, got shape {array.shape}")
    if array.dtype.kind != "u":
        raise ValueError(f"compressed_segmentation encodes unsigned labels, got {array.dtype}")
    dtype = np.uint64 if array.dtype.itemsize == 8 else np.uint32
    # the package needs a native, writeable, Fortran-ordered buffer
    labels = np.require(array[..., 0], dtype=dtype, requirements=["F", "W"])
    return cseg.compress(labels, block_size=tuple(block_size), order="F")


def decode(
    data: bytes,
    shape: tuple[int, ...],
    dtype: np.dtype,
    block_size: tuple[int, int, int] = (8, 8, 8),
) -> np.ndarray:
    if np.dtype(dtype) not in LABEL_TYPES:
        raise ValueError(f"compressed_segmentation holds uint32 or uint64, not {np.dtype(dtype)}")
    if len(shape) != 4 or shape[3] != 1:
        raise ValueError(f"compressed_segmentation decodes one channel, not shape {tuple(shape)}")
    labels = cseg.decompress(bytes(data), tuple(shape[:3]), dtype, tuple(block_size), order="F")
    return labels[..., np.newaxis]
