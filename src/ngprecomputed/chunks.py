"""The chunk grid of one scale: where chunks are, what they are called, which cover a box.

Pure arithmetic (no I/O). Boxes are half-open ``(start, stop)`` voxel ranges per axis (x, y, z).
"""

from collections.abc import Iterator
from dataclasses import dataclass

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Grid:
    """The chunks of one scale: ``size`` voxels cut into ``chunk`` pieces (edges truncated)."""

    size: tuple[int, int, int]
    chunk: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Number of chunks along each axis."""
        return tuple(-(-s // c) for s, c in zip(self.size, self.chunk, strict=True))

    @property
    def count(self) -> int:
        gx, gy, gz = self.shape
        return gx * gy * gz

    def chunk_box(self, index: tuple[int, int, int]) -> Box:
        """Voxel box of the chunk at grid position ``index``."""
        return tuple(
            (i * c, min((i + 1) * c, s))
            for i, c, s in zip(index, self.chunk, self.size, strict=True)
        )

    def chunks_in(self, box: Box) -> Iterator[tuple[tuple[int, int, int], Box]]:
        """Grid positions and boxes of every chunk that overlaps ``box``, x fastest."""
        ranges = [
            range(lo // c, -(-min(hi, s) // c))
            for (lo, hi), c, s in zip(box, self.chunk, self.size, strict=True)
        ]
        for k in ranges[2]:
            for j in ranges[1]:
                for i in ranges[0]:
                    yield (i, j, k), self.chunk_box((i, j, k))


def chunk_name(box: Box) -> str:
    """Flat chunk file name ``x0-x1_y0-y1_z0-z1``: the name the viewer requests."""
    return "_".join(f"{lo}-{hi}" for lo, hi in box)


def clip(box: Box, size: tuple[int, int, int]) -> Box:
    return tuple((max(lo, 0), min(hi, s)) for (lo, hi), s in zip(box, size, strict=True))


def voxels(box: Box) -> int:
    n = 1
    for lo, hi in box:
        n *= max(hi - lo, 0)
    return n
