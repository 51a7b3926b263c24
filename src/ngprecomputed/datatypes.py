"""Which data type and encoding a dataset stores: nibabel's type passed through by documented
rules (or the sheet's override), each encoding's limits, and its codec's settings."""

import numpy as np

from .errors import InputError
from .settings import Options

NG_DATA_TYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "float32")
LABEL_DATA_TYPES = ("uint8", "uint16", "uint32", "uint64")


def output_data_type(source: np.dtype, scaled: bool, opts: Options, where: str) -> str:
    """The stored data type: the documented pass-through rules, or the sheet's override."""
    labels = opts.type == "segmentation"
    allowed = LABEL_DATA_TYPES if labels else NG_DATA_TYPES
    if opts.data_type:
        if opts.data_type not in allowed:
            raise InputError(f"{where}: data_type {opts.data_type} is not one of {allowed}")
        return opts.data_type
    src = np.dtype(source)
    if src.kind == "b":
        return "uint8"
    if labels:
        if src.kind == "u" and not scaled:
            return src.name
        return "uint64" if src.itemsize == 8 else "uint32"
    if scaled or src.kind == "f":
        return "float32"
    if src.name in NG_DATA_TYPES:
        return src.name
    raise InputError(f"{where}: {src.name} voxels have no precomputed data type; set data_type")


def codec_options(encoding: str, jpeg_quality: int, block_size) -> dict:
    """The keyword arguments of the encoding's ``encode``."""
    if encoding == "jpeg":
        return {"quality": jpeg_quality}
    if encoding == "compressed_segmentation":
        return {"block_size": tuple(block_size)}
    return {}


def default_encoding(kind: str) -> str:
    """Labels: compressed_segmentation (lossless, many times smaller than raw, read by every
    reader). Images: raw (lossless, exact, readable from file:// and any static server)."""
    return "compressed_segmentation" if kind == "segmentation" else "raw"


def fit_encoding(encoding: str, data_type: str, channels: int, opts: Options, where: str) -> str:
    """The data type the encoding stores (labels are promoted for compressed_segmentation);
    an input error where the encoding cannot hold the data."""
    if encoding == "compressed_segmentation":
        if opts.type != "segmentation":
            raise InputError(f"{where}: compressed_segmentation is for segmentations")
        if opts.data_type and data_type not in ("uint32", "uint64"):
            raise InputError(
                f"{where}: compressed_segmentation stores uint32 or uint64 labels, "
                f"not data_type {data_type}"
            )
        return "uint64" if data_type == "uint64" else "uint32"
    if encoding == "jpeg":
        if opts.type == "segmentation":
            raise InputError(f"{where}: jpeg is lossy: never for a segmentation")
        if data_type != "uint8" or channels not in (1, 3):
            raise InputError(
                f"{where}: jpeg needs uint8 with 1 or 3 channels, not {data_type} "
                f"x{channels} (set data_type: uint8, with input_min/input_max)"
            )
    if encoding == "png":
        ok = (data_type == "uint8" and channels <= 4) or (data_type == "uint16" and channels == 1)
        if not ok:
            raise InputError(
                f"{where}: png holds uint8 with 1-4 channels or uint16 with 1, "
                f"not {data_type} x{channels}"
            )
    return data_type
