"""The pyramid's geometry: its scales (anisotropy-aware halving, chunks shaped to the voxel
size) and how its work is cut into stages and chunk-aligned slabs.

A stage makes a run of scales ``first..last`` from the scale above it (stage 0 from the
source). A slab is a chunk-aligned box of the stage's coarsest scale; one job reads the matching
box of its input (at most ``voxels_per_job`` voxels) once and writes every scale of the stage
for it. Sharded datasets have cube slabs, one shard each at every scale of their stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .chunks import Grid
from .settings import Options
from .sharding import shard_exponent

if TYPE_CHECKING:
    from .plan import Plan


@dataclass(frozen=True)
class Scale:
    key: str
    size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    chunk: tuple[int, int, int]
    factor: tuple[int, int, int]  # from the scale above; (1, 1, 1) for scale 0
    sharding: dict | None = None  # the info's "sharding" key of a sharded scale

    @property
    def grid(self) -> Grid:
        return Grid(self.size, self.chunk)


@dataclass(frozen=True)
class Stage:
    """Scales ``first..last`` made from scale ``first - 1`` (or the source for stage 0).

    Its slabs tile scale ``last`` as a regular grid: each holds ``per_slab`` chunks per axis
    (fewer at the far edges), numbered x fastest, then y, then z.
    """

    first: int
    last: int
    per_slab: tuple[int, int, int]
    grid: tuple[int, int, int]  # slabs per axis

    @property
    def count(self) -> int:
        return int(np.prod(self.grid))


def chunk_shape(resolution, size, target: int) -> tuple[int, int, int]:
    """Power-of-two chunk of about ``target`` voxels, balanced in physical extent.

    Doubles the axis with the smallest physical extent (x first on ties) until the chunk holds
    ``target`` voxels; an axis stops growing once it spans the whole volume.
    """
    chunk = [1, 1, 1]
    cap = [1 << max(int(n) - 1, 0).bit_length() for n in size]
    while np.prod(chunk) < target:
        growable = [a for a in range(3) if chunk[a] < cap[a]]
        if not growable:
            break
        a = min(growable, key=lambda a: (chunk[a] * resolution[a], a))
        chunk[a] *= 2
    return tuple(chunk)


def _scale_key(resolution) -> str:
    return "_".join(f"{r:.6f}".rstrip("0").rstrip(".") for r in resolution)


def pyramid(size, resolution, opts: Options) -> list[Scale]:
    """All scales, finest first."""

    def chunk_for(res, sz):
        return (
            tuple(opts.chunk_size) if opts.chunk_size else chunk_shape(res, sz, opts.chunk_voxels)
        )

    size = tuple(int(n) for n in size)
    resolution = tuple(float(r) for r in resolution)
    scales = [
        Scale(_scale_key(resolution), size, resolution, chunk_for(resolution, size), (1, 1, 1))
    ]
    while opts.max_scales is None or len(scales) < opts.max_scales:
        prev = scales[-1]
        if all(s <= c for s, c in zip(prev.size, prev.chunk, strict=True)):
            break
        finest = min(r for r, s in zip(prev.resolution, prev.size, strict=True) if s > 1)
        factor = tuple(
            2 if s > 1 and r < np.sqrt(2) * finest else 1
            for r, s in zip(prev.resolution, prev.size, strict=True)
        )
        size = tuple(-(-s // f) for s, f in zip(prev.size, factor, strict=True))
        res = tuple(r * f for r, f in zip(prev.resolution, factor, strict=True))
        scales.append(Scale(_scale_key(res), size, res, chunk_for(res, size), factor))
    return scales


def stages(plan: Plan, voxels_per_job: int) -> list[Stage]:
    """Cut the pyramid into stages and slabs (see the module docstring)."""
    out: list[Stage] = []
    n = len(plan.scales)
    ch = plan.num_channels
    first = 0
    while first < n:
        src = max(first - 1, 0)  # stage 0 reads the source, which has scale 0's geometry
        last = first
        while (
            last + 1 < n
            and _fits(plan, src, last + 1, voxels_per_job, ch)
            and _aligned(plan, first, last + 1)
            and (not plan.sharded or _shard_blocks(plan, first, last + 1, voxels_per_job, ch))
        ):
            last += 1
        if plan.sharded:
            per_slab = _cube_slab(plan, src, last, voxels_per_job, ch)
        else:
            per_slab = _per_slab(plan, src, last, voxels_per_job, ch)
        grid = tuple(
            -(-g // k) for g, k in zip(plan.scales[last].grid.shape, per_slab, strict=True)
        )
        out.append(Stage(first, last, per_slab, grid))
        first = last + 1
    return out


def _fits(plan: Plan, src: int, last: int, budget: int, ch: int) -> bool:
    """Does one row of chunks of scale ``last`` along x (one chunk in y and z) fit the budget
    at ``src``? Then slabs of such rows (split in y and z) make every scale down to ``last``
    from one read, instead of writing a scale and reading it back."""
    _, fy, fz = plan.factor_between(src, last)
    _, cy, cz = plan.scales[last].chunk
    sx, sy, sz = plan.scales[src].size
    return sx * min(cy * fy, sy) * min(cz * fz, sz) * ch <= budget


def _aligned(plan: Plan, first: int, last: int) -> bool:
    """Do slabs of scale ``last`` map onto whole chunks of every scale of the stage?"""
    cl = plan.scales[last].chunk
    for j in range(first, last + 1):
        f = plan.factor_between(j, last)
        cj = plan.scales[j].chunk
        if any((cl[a] * f[a]) % cj[a] for a in range(3)):
            return False
    return True


def _per_slab(plan: Plan, src: int, last: int, budget: int, ch: int) -> tuple[int, int, int]:
    """Chunks of scale ``last`` per slab: whole z rows when they fit, else split y, then x."""
    scale = plan.scales[last]
    f = plan.factor_between(src, last)
    # input voxels per chunk of scale ``last``
    per_chunk = int(np.prod([c * k for c, k in zip(scale.chunk, f, strict=True)])) * ch
    gx, gy, gz = scale.grid.shape
    room = max(budget // per_chunk, 1)  # chunks per slab
    if room >= gx * gy:
        return (gx, gy, min(max(room // (gx * gy), 1), gz))
    if room >= gx:
        return (gx, room // gx, 1)
    return (room, 1, 1)


def _cube_slab(plan: Plan, src: int, last: int, budget: int, ch: int) -> tuple[int, int, int]:
    """Sharded datasets: slabs are cubes of 2^m chunks of scale ``last`` (the largest whose
    input fits the budget; whole axes where the grid is smaller), so that a slab is exactly one
    shard of a compressed Morton layout at every scale of its stage."""
    scale = plan.scales[last]
    f = plan.factor_between(src, last)
    size = plan.scales[src].size
    grid = scale.grid.shape
    m = 0
    while (1 << m) < max(grid):
        side = 1 << (m + 1)
        box = [min(side * c * k, s) for c, k, s in zip(scale.chunk, f, size, strict=True)]
        if int(np.prod(box)) * ch > budget:
            break
        m += 1
    return tuple(min(1 << m, g) for g in grid)


def _shard_blocks(plan: Plan, first: int, last: int, budget: int, ch: int) -> bool:
    """Would cube slabs of scale ``last`` be whole shards at every scale ``first..last``?"""
    src = max(first - 1, 0)
    per_slab = _cube_slab(plan, src, last, budget, ch)
    return all(
        shard_exponent(block_at(plan, per_slab, last, j), plan.scales[j].grid.shape) is not None
        for j in range(first, last + 1)
    )


def block_at(plan: Plan, per_slab, last: int, j: int) -> tuple[int, ...]:
    """A slab of ``per_slab`` chunks of scale ``last``, in chunks of scale ``j`` (nominal)."""
    f = plan.factor_between(j, last)
    cl, cj = plan.scales[last].chunk, plan.scales[j].chunk
    return tuple(n * c * k // d for n, c, k, d in zip(per_slab, cl, f, cj, strict=True))
