"""Chunk encodings: each module has ``encode(array) -> bytes`` and ``decode(bytes, shape, dtype)``.

Arrays are ``[x, y, z, channel]``.
"""

from . import compressed_segmentation, jpeg, png, raw

CODECS = {
    "raw": raw,
    "jpeg": jpeg,
    "png": png,
    "compressed_segmentation": compressed_segmentation,
}


def codec(name: str):
    return CODECS[name]
