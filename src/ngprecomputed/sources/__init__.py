"""Readers for input data: each answers "give me this box of voxels" without loading the rest.

A source has ``shape`` (x, y, z, channels), ``dtype`` (the values ``read`` returns, after the
header's scaling), ``affine`` (voxel centres to millimetres) and ``read(box)``.
"""

from pathlib import Path

from .volume import VolumeSource

__all__ = ["VolumeSource", "open_source"]


def open_source(path: str | Path, gzip_index: str | Path | None = None) -> VolumeSource:
    """Open ``path``; ``gzip_index`` is an exported indexed_gzip index for .gz files."""
    return VolumeSource(Path(path), gzip_index=Path(gzip_index) if gzip_index else None)
