"""Chunk encodings: each module has ``encode(array) -> bytes`` and ``decode(bytes, shape, dtype)``.

Arrays are ``[x, y, z, channel]``.
"""

from . import raw

CODECS = {"raw": raw}


def codec(name: str):
    return CODECS[name]
