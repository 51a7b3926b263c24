"""Annotations in memory and their bytes: the one place that knows the binary layout.

A collection is of one kind (``point``, ``ellipsoid`` or ``polyline``), in world millimetres
(the state's space: RAS, as every volume we write is placed), with typed properties and
relationships to segment ids. :class:`Annotations` holds a batch of them as arrays (a polyline's
points as one ``(P, 3)`` array and offsets, as nibabel's ``ArraySequence``), so that encoding is
vectorised: every field of a record is 4-byte aligned (geometry as float32, a polyline's point
count as uint32, the properties block padded to 4 bytes), so a batch of records is built as one
array of uint32 words.

Record layout (``annotations.md``): the geometry; the properties, 4-byte types first, then
2-byte, then 1-byte (declaration order within each); zero padding to 4 bytes. ``by_id`` appends
each relationship's uint32 count and uint64 ids. A list (a spatial cell, a related object): a
uint64 count, the records, then their uint64 ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TYPES = {  # annotation info type name -> numpy dtype
    "float32": "<f4",
    "uint32": "<u4",
    "int32": "<i4",
    "uint16": "<u2",
    "int16": "<i2",
    "uint8": "u1",
    "int8": "i1",
    "rgb": ("u1", 3),
    "rgba": ("u1", 4),
}
SUMMARY = "summary.json"  # beside a collection's info: count, kind, property ranges
PREVIEW = "preview.png"  # its points seen from above, for the index page
KINDS = {"point": "POINT", "ellipsoid": "ELLIPSOID", "polyline": "POLYLINE"}
WIDTH = {"point": 3, "ellipsoid": 6}  # float32 values of a fixed-size geometry
PART = 50_000  # annotations handled at once where a collection may not fit in memory


@dataclass(frozen=True)
class Property:
    id: str
    type: str
    description: str = ""
    enum_labels: tuple[str, ...] = ()  # labels of the values 0, 1, ... (enum-labelled)

    def to_info(self) -> dict:
        out = {"id": self.id, "type": self.type}
        if self.description:
            out["description"] = self.description
        if self.enum_labels:
            out["enum_values"] = list(range(len(self.enum_labels)))
            out["enum_labels"] = list(self.enum_labels)
        return out

    @property
    def size(self) -> int:
        return np.dtype(TYPES[self.type]).itemsize

    @property
    def alignment(self) -> int:
        return np.dtype(TYPES[self.type]).base.itemsize  # rgb, rgba: bytes


def property_order(properties: list[Property]) -> list[Property]:
    """The order of the properties in a record: 4-byte, then 2-byte, then 1-byte types (rgb
    and rgba too), each in declaration order (as the viewer reads them). Declaring them in
    this order as well makes every reader agree."""
    return sorted(properties, key=lambda p: -p.alignment)


@dataclass
class Annotations:
    """A batch of one collection's annotations."""

    kind: str
    ids: np.ndarray  # uint64, (N,)
    geometry: np.ndarray  # float32: (N, 3) points, (N, 6) centre and radii, (P, 3) polyline points
    offsets: np.ndarray | None = None  # polylines: (N + 1,) int64 into geometry
    values: dict[str, np.ndarray] = field(default_factory=dict)  # property id -> (N,) or (N, k)
    related: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # relationship id -> (offsets (N + 1,), object ids): annotation i relates to ids[o[i]:o[i+1]]

    def __len__(self) -> int:
        return len(self.ids)

    def points_of(self) -> tuple[np.ndarray, np.ndarray]:
        """Every annotation's points and offsets (a point: itself; an ellipsoid: its centre)."""
        if self.kind == "polyline":
            return self.geometry, self.offsets
        return self.geometry[:, :3], np.arange(len(self) + 1, dtype=np.int64)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Each annotation's lower and upper corner, ``(N, 3)`` float64 each."""
        if self.kind == "point":
            g = self.geometry.astype(np.float64)
            return g, g
        if self.kind == "ellipsoid":
            c, r = self.geometry[:, :3].astype(np.float64), np.abs(self.geometry[:, 3:])
            return c - r, c + r
        lo, hi = np.empty((len(self), 3)), np.empty((len(self), 3))
        for a, part in self.parts():  # the points of one part in memory at a time
            pts, starts = part.geometry.astype(np.float64), part.offsets[:-1]
            lo[a : a + len(part)] = np.minimum.reduceat(pts, starts, axis=0)
            hi[a : a + len(part)] = np.maximum.reduceat(pts, starts, axis=0)
        return lo, hi

    def parts(self, size: int = PART):
        """``(first index, annotations first..first + size)``: consecutive parts, a polyline
        part's points a slice of the whole (read when used: the whole may be a memory map)."""
        for a in range(0, len(self), size):
            b = min(a + size, len(self))
            values = {k: v[a:b] for k, v in self.values.items()}
            related = {k: _slice_csr(o, v, a, b) for k, (o, v) in self.related.items()}
            if self.kind == "polyline":
                o = self.offsets[a : b + 1]
                part = Annotations(
                    self.kind, self.ids[a:b], self.geometry[o[0] : o[-1]], o - o[0], values, related
                )
            else:
                part = Annotations(
                    self.kind, self.ids[a:b], self.geometry[a:b], None, values, related
                )
            yield a, part

    def take(self, index: np.ndarray) -> Annotations:
        """The annotations at ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        related = {k: _take_csr(o, v, index) for k, (o, v) in self.related.items()}
        values = {k: v[index] for k, v in self.values.items()}
        if self.kind != "polyline":
            return Annotations(
                self.kind, self.ids[index], self.geometry[index], None, values, related
            )
        offsets, points = _take_csr(self.offsets, self.geometry, index)
        return Annotations(self.kind, self.ids[index], points, offsets, values, related)


def _slice_csr(offsets: np.ndarray, values: np.ndarray, a: int, b: int):
    o = offsets[a : b + 1]
    return o - o[0], values[o[0] : o[-1]]


def _take_csr(offsets: np.ndarray, values: np.ndarray, index: np.ndarray):
    counts = (offsets[1:] - offsets[:-1])[index]
    new = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(counts, out=new[1:])
    rows = np.repeat(offsets[:-1][index] - new[:-1], counts) + np.arange(new[-1])
    return new, values[rows]


def properties_block(batch: Annotations, properties: list[Property]) -> np.ndarray:
    """The properties of every annotation, ``(N, words)`` uint32, padded to 4 bytes."""
    ordered = property_order(properties)
    size = sum(p.size for p in ordered)
    fields = [(p.id, TYPES[p.type]) for p in ordered]
    if size % 4:
        fields.append(("_pad", f"V{4 - size % 4}"))
    rec = np.zeros(len(batch), dtype=np.dtype(fields) if fields else np.dtype([]))
    for p in ordered:
        rec[p.id] = batch.values[p.id]
    if not fields:
        return np.zeros((len(batch), 0), dtype="<u4")
    return rec.view("u1").reshape(len(batch), -1).view("<u4")


def records(batch: Annotations, properties: list[Property], scratch: Path | None = None):
    """Every annotation's record (no relationships) as one uint32 array, and each record's
    start in it (``(N + 1,)`` word offsets). ``scratch``: built part by part into this file,
    returned as a memory map (a tractogram's records need not fit in memory)."""
    words = -(-sum(p.size for p in properties) // 4)  # the properties, padded to 4 bytes
    if batch.kind == "polyline":
        sizes = 1 + 3 * np.diff(batch.offsets) + words
    else:
        sizes = np.full(len(batch), WIDTH[batch.kind] + words, dtype=np.int64)
    starts = np.zeros(len(batch) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    if scratch is None:
        out = np.zeros(starts[-1], dtype="<u4")
    else:
        out = np.lib.format.open_memmap(scratch, "w+", "<u4", (int(starts[-1]),))
    for a, part in batch.parts():
        at = starts[a]
        block = _records(part, properties)
        out[at : at + len(block)] = block
    return out, starts


def _records(batch: Annotations, properties: list[Property]) -> np.ndarray:
    """The records of a batch, one after another, as uint32 words."""
    props = properties_block(batch, properties)
    n, words = len(batch), props.shape[1]
    if batch.kind != "polyline":
        geometry = np.ascontiguousarray(batch.geometry, dtype="<f4").view("<u4")
        return np.concatenate([geometry, props], axis=1).ravel()
    counts = np.diff(batch.offsets)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(1 + 3 * counts + words, out=starts[1:])
    out = np.zeros(starts[-1], dtype="<u4")
    out[starts[:-1]] = counts
    point_words = np.ascontiguousarray(batch.geometry, dtype="<f4").view("<u4").reshape(-1)
    first = np.repeat(starts[:-1] + 1 - 3 * batch.offsets[:-1], 3 * counts)
    out[first + np.arange(len(point_words))] = point_words
    if words:
        at = (starts[1:] - words)[:, None] + np.arange(words)
        out[at] = props
    return out


def by_id_record(words: np.ndarray, batch: Annotations, i: int, relationships: list[str]) -> bytes:
    """Annotation ``i``'s record followed by its relationships, for ``by_id``."""
    parts = [words.tobytes()]
    for rel in relationships:
        offsets, ids = batch.related[rel]
        mine = np.asarray(ids[offsets[i] : offsets[i + 1]], dtype="<u8")
        parts += [np.uint32(len(mine)).astype("<u4").tobytes(), mine.tobytes()]
    return b"".join(parts)


def annotation_list(words: np.ndarray, starts: np.ndarray, index: np.ndarray, ids) -> bytes:
    """The multiple-annotation encoding of the records at ``index`` (in that order)."""
    index = np.asarray(index, dtype=np.int64)
    lengths = starts[index + 1] - starts[index]
    total = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(lengths, out=total[1:])
    rows = np.repeat(starts[index] - total[:-1], lengths) + np.arange(total[-1])
    head = np.uint64(len(index)).astype("<u8").tobytes()
    return head + words[rows].tobytes() + np.asarray(ids, dtype="<u8")[index].tobytes()
