"""The multi-level spatial index: which cells each annotation goes to, and at which level.

Levels go from one cell over the bounds to finer grids, each halving the chunk along the axes
within a factor 2 of its longest (the most isotropic cells, as the specification suggests). An
annotation is listed in every cell of its level that it *intersects*, cells being closed boxes:
a point on a face is in both cells, a polyline in every cell one of its segments crosses
(exact slab clipping, not its bounding box: a streamline is not listed where it does not pass),
an ellipsoid where the cell's closest point to its centre is inside it.

Subsampling (``annotations.md``): at each level, of the annotations remaining in the cells, each
is emitted with probability ``min(1, limit / maxCount(level))``; the others pass to the next
level. The draw is a hash of the annotation's id and the level, not a random generator: the
same annotation is emitted in every cell of its level (a uniform subsample in each), the order
within a cell follows the same hash, and a rerun writes the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .collection import PART, Annotations

LIMIT = 1000  # target annotations per cell (the densest cell of a level holds about this many)
MAX_LEVELS = 12
KEEP_PAIRS = 1 << 23  # (annotation, cell) pairs of a level kept from counting to writing


@dataclass(frozen=True)
class Level:
    chunk_size: tuple[float, float, float]
    grid_shape: tuple[int, int, int]

    @property
    def cells(self) -> int:
        return int(np.prod(self.grid_shape))


def levels(lower, upper, count: int = MAX_LEVELS) -> list[Level]:
    """Level 0 (one cell) and up to ``count - 1`` finer ones."""
    chunk = np.asarray(upper, np.float64) - np.asarray(lower, np.float64)
    grid = np.ones(3, dtype=np.int64)
    out = []
    for _ in range(count):
        out.append(Level(tuple(float(c) for c in chunk), tuple(int(g) for g in grid)))
        halve = chunk > chunk.max() / 2
        chunk = np.where(halve, chunk / 2, chunk)
        grid = np.where(halve, grid * 2, grid)
    return out


def draw(ids: np.ndarray, level: int) -> np.ndarray:
    """A uniform number in [0, 1) per (id, level): splitmix64 of both."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(level + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def cell_range(lo: np.ndarray, hi: np.ndarray, lower, level: Level):
    """Per annotation, the first and last cell (inclusive) whose closed box meets ``[lo, hi]``."""
    size = np.asarray(level.chunk_size)
    grid = np.asarray(level.grid_shape) - 1
    a = (lo - np.asarray(lower)) / size
    b = (hi - np.asarray(lower)) / size
    first = np.clip(np.ceil(a).astype(np.int64) - 1, 0, grid)
    last = np.clip(np.floor(b).astype(np.int64), 0, grid)
    return first, np.maximum(last, first)


def _boxes(first: np.ndarray, last: np.ndarray):
    """Every cell of each annotation's cell range: (annotation index, cell (n, 3))."""
    extent = last - first + 1
    counts = np.prod(extent, axis=1)
    owner = np.repeat(np.arange(len(first)), counts)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    e = extent[owner]
    cell = first[owner] + np.stack(
        [k % e[:, 0], (k // e[:, 0]) % e[:, 1], k // (e[:, 0] * e[:, 1])], 1
    )
    return owner, cell


def segment_hits(p: np.ndarray, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether each segment ``p -> q`` meets the closed box ``[lo, hi]`` (slab clipping)."""
    d = q - p
    t0 = np.zeros(len(p))
    t1 = np.ones(len(p))
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            da = d[:, axis]
            flat = da == 0
            inside = (p[:, axis] >= lo[:, axis]) & (p[:, axis] <= hi[:, axis])
            ta = (lo[:, axis] - p[:, axis]) / da
            tb = (hi[:, axis] - p[:, axis]) / da
            near, far = np.minimum(ta, tb), np.maximum(ta, tb)
            t0 = np.where(flat, np.where(inside, t0, 2.0), np.maximum(t0, near))
            t1 = np.where(flat, np.where(inside, t1, -1.0), np.minimum(t1, far))
    return t0 <= t1


def cells_of(batch: Annotations, lower, level: Level) -> tuple[np.ndarray, np.ndarray]:
    """``(annotation index, flat cell index)`` for every cell of ``level`` each annotation of
    ``batch`` intersects, unique, sorted by annotation."""
    lower = np.asarray(lower, np.float64)
    size = np.asarray(level.chunk_size)
    if batch.kind == "polyline":
        pts, off = batch.geometry.astype(np.float64), batch.offsets
        counts = np.diff(off)
        single = counts == 1  # a one-point streamline: its point
        seg_owner = np.repeat(np.arange(len(batch)), np.maximum(counts - 1, 0))
        ends = np.ones(len(pts), dtype=bool)
        ends[off[1:] - 1] = False
        starts = np.nonzero(ends)[0]
        p, q = pts[starts], pts[starts + 1]
        p = np.concatenate([p, pts[off[:-1][single]]])
        q = np.concatenate([q, pts[off[:-1][single]]])
        seg_owner = np.concatenate([seg_owner, np.nonzero(single)[0]])
        first, last = cell_range(np.minimum(p, q), np.maximum(p, q), lower, level)
        which, cell = _boxes(first, last)
        lo = lower + cell * size
        keep = segment_hits(p[which], q[which], lo, lo + size)
        owner = seg_owner[which][keep]
        cell = cell[keep]
    else:
        blo, bhi = batch.bounds()
        first, last = cell_range(blo, bhi, lower, level)
        owner, cell = _boxes(first, last)
        if batch.kind == "ellipsoid":
            lo = lower + cell * size
            c = batch.geometry[owner, :3].astype(np.float64)
            r = np.abs(batch.geometry[owner, 3:].astype(np.float64))
            nearest = np.clip(c, lo, lo + size)
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.where(r > 0, (nearest - c) / r, np.where(nearest == c, 0.0, np.inf))
            keep = (u * u).sum(axis=1) <= 1
            owner, cell = owner[keep], cell[keep]
    g = np.asarray(level.grid_shape)
    flat = cell[:, 0] + g[0] * (cell[:, 1] + g[1] * cell[:, 2])
    pairs = np.unique(owner.astype(np.int64) * level.cells + flat)
    return pairs // level.cells, pairs % level.cells


def _parts(batch: Annotations, index: np.ndarray):
    """``(indices, their annotations)``, ``PART`` at a time: the points of one part in memory
    (a polyline collection's points may be a memory map of the whole tractogram)."""
    for at in range(0, len(index), PART):
        part = index[at : at + PART]
        yield part, batch if len(part) == len(batch) else batch.take(part)


def cell_counts(batch: Annotations, index: np.ndarray, lower, level: Level):
    """The most annotations of ``index`` in one cell of ``level``, counted part by part, and
    the pairs ``(annotation, cell)`` themselves while there are at most ``KEEP_PAIRS`` (else
    None: they are found again for the emitted ones)."""
    cells, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    kept: list | None = []
    total = 0
    for part, some in _parts(batch, index):
        owner, flat = cells_of(some, lower, level)
        total += len(flat)
        if kept is not None and total <= KEEP_PAIRS:
            kept.append((part[owner], flat))
        else:
            kept = None
        new, n = np.unique(flat, return_counts=True)
        cells, where = np.unique(np.concatenate([cells, new]), return_inverse=True)
        counts = np.bincount(where, weights=np.concatenate([counts, n])).astype(np.int64)
    most = int(counts.max()) if len(counts) else 0
    if kept is None:
        return most, None
    empty = np.zeros(0, np.int64)
    return most, (
        np.concatenate([empty, *[o for o, _ in kept]]),
        np.concatenate([empty, *[f for _, f in kept]]),
    )


def assign(batch: Annotations, lower, upper, limit: int = LIMIT):
    """Where each annotation goes, level by level from the coarsest until none remain (the
    last level takes all that remain): yields ``(level, annotation indices, flat cells)``. Only
    the pairs of one level are in memory at a time (or, above ``KEEP_PAIRS``, of the
    annotations it emits)."""
    remaining = np.arange(len(batch))
    grids = levels(lower, upper)
    for k, level in enumerate(grids):
        if not len(remaining):
            break
        most, pairs = cell_counts(batch, remaining, lower, level)
        p = 1.0 if k == len(grids) - 1 else min(1.0, limit / most)
        chosen = draw(batch.ids[remaining], k) < p
        emitted = remaining[chosen]
        if pairs is not None:
            picked = np.zeros(len(batch), dtype=bool)
            picked[emitted] = True
            keep = picked[pairs[0]]
            yield level, pairs[0][keep], pairs[1][keep]
        else:
            owners, flats = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
            for part, some in _parts(batch, emitted):
                owner, flat = cells_of(some, lower, level)
                owners.append(part[owner])
                flats.append(flat)
            yield level, np.concatenate(owners), np.concatenate(flats)
        remaining = remaining[~chosen]
