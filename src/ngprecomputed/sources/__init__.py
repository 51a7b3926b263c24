"""Readers for input data: each answers "give me this box of voxels" without loading the rest.

A source has ``shape`` (x, y, z, channels), ``dtype`` (the values ``read`` returns, after the
header's scaling), ``affine`` (voxel centres to millimetres) and ``read(box)``.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from .volume import VolumeSource

if TYPE_CHECKING:  # imported when a stack is opened: a volume's job does without it
    from .slices import SliceSource

__all__ = ["VolumeSource", "is_precomputed", "is_slice_stack", "open_source"]


def is_precomputed(spec: str | Path) -> bool:
    """A precomputed dataset folder (re-encoded, not converted)."""
    return (Path(str(spec)) / "info").is_file()


def is_slice_stack(spec: str | Path) -> bool:
    """A folder of images, a glob pattern, or several of them separated by ``;``."""
    text = str(spec)
    if is_precomputed(text):
        return False
    return ";" in text or any(c in text for c in "*?[") or Path(text).is_dir()


def open_source(
    spec: str | Path,
    gzip_index: str | Path | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    orientation: str | None = None,
    decompressed: str | Path | None = None,
) -> "VolumeSource | SliceSource":
    """A volume file (``gzip_index``: an exported indexed_gzip index for .gz files;
    ``decompressed``: the file decompressed), or a stack of section images (``;`` separates
    channels), with its voxel size and orientation."""
    if is_slice_stack(spec):
        from .slices import SliceSource

        return SliceSource(
            str(spec).split(";"), voxel_size or (1.0, 1.0, 1.0), orientation or "RAS"
        )
    return VolumeSource(
        Path(spec),
        gzip_index=Path(gzip_index) if gzip_index else None,
        decompressed=Path(decompressed) if decompressed else None,
    )
