"""An independent reader of Neuroglancer precomputed annotations, for the tests.

Written from the specification only (google/neuroglancer ``src/datasource/precomputed/``
``annotations.md``, ``sharded.md`` and the compressed Morton code of ``volume.md``); it shares no
code with the writer in ``ngprecomputed``. It is strict: a malformed file raises ``ValueError``,
an inconsistent collection fails ``check_collection`` with ``AssertionError``.
"""

import gzip
import itertools
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass

import mmh3
import numpy as np

KINDS = ("POINT", "LINE", "AXIS_ALIGNED_BOUNDING_BOX", "ELLIPSOID", "POLYLINE")
# property type -> numpy type; the encoding groups properties by the size of one component
PROPERTY_TYPES = {
    "uint32": "<u4", "int32": "<i4", "float32": "<f4", "uint16": "<u2", "int16": "<i2",
    "uint8": "u1", "int8": "i1", "rgb": "3u1", "rgba": "4u1",
}  # fmt: skip


def read_info(path) -> dict:
    """The parsed ``info`` JSON of a collection folder (or of the ``info`` file itself)."""
    path = os.fspath(path)
    with open(os.path.join(path, "info") if os.path.isdir(path) else path) as f:
        return json.load(f)


# ---------------------------------------------------------------- keys and hashes


def compressed_morton_code(cell, grid_shape) -> int:
    """Compressed Morton code of ``cell``: bit i of each dim with 2**i < grid_shape, interleaved."""
    code, j = 0, 0
    for i in range(max(int(g - 1).bit_length() for g in grid_shape)):
        for d, g in enumerate(grid_shape):
            if (1 << i) < g:
                code |= ((int(cell[d]) >> i) & 1) << j
                j += 1
    return code


def morton_to_cell(code: int, grid_shape) -> tuple:
    """Inverse of ``compressed_morton_code``; raises ValueError for a code outside the grid."""
    cell, j = [0] * len(grid_shape), 0
    for i in range(max(int(g - 1).bit_length() for g in grid_shape)):
        for d, g in enumerate(grid_shape):
            if (1 << i) < g:
                cell[d] |= ((code >> j) & 1) << i
                j += 1
    if code >> j or any(c >= g for c, g in zip(cell, grid_shape, strict=True)):
        raise ValueError(f"Morton code {code} is outside grid {list(grid_shape)}")
    return tuple(cell)


def murmurhash3_x86_128_low64(key: int) -> int:
    """Low 64 bits (little endian) of MurmurHash3_x86_128, seed 0, of the uint64le ``key``."""
    return int.from_bytes(
        mmh3.hash_bytes(key.to_bytes(8, "little"), 0, x64arch=False)[:8], "little"
    )


def shard_location(key: int, sharding: dict) -> tuple[int, int]:
    """(shard, minishard) of ``key`` under a ``neuroglancer_uint64_sharded_v1`` spec."""
    h = key >> sharding.get("preshift_bits", 0)
    if sharding["hash"] == "murmurhash3_x86_128":
        h = murmurhash3_x86_128_low64(h)
    elif sharding["hash"] != "identity":
        raise ValueError(f"unknown hash {sharding['hash']!r}")
    mb, sb = sharding["minishard_bits"], sharding["shard_bits"]
    return (h >> mb) & ((1 << sb) - 1), h & ((1 << mb) - 1)


def _decode(data: bytes, encoding: str | None) -> bytes:
    if encoding in (None, "raw"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    raise ValueError(f"unknown encoding {encoding!r}")


# ---------------------------------------------------------------- key-value stores


class UnshardedKV:
    """Files named by decimal id, or ``x_y_z`` for spatial cells (keys are then tuples)."""

    def __init__(self, directory, spatial: bool = False):
        self.directory, self.spatial = os.fspath(directory), spatial

    def _name(self, key) -> str:
        return "_".join(str(int(k)) for k in key) if self.spatial else str(int(key))

    def get(self, key) -> bytes | None:
        path = os.path.join(self.directory, self._name(key))
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    def items(self):
        """Every (key, bytes) stored; a file with an unexpected name raises ValueError."""
        pattern = r"\d+(_\d+)*" if self.spatial else r"\d+"
        for name in sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else []:
            if not re.fullmatch(pattern, name):
                raise ValueError(f"unexpected file {name!r} in {self.directory}")
            key = tuple(map(int, name.split("_"))) if self.spatial else int(name)
            if self._name(key) != name:
                raise ValueError(f"non-canonical name {name!r} in {self.directory}")
            yield key, self.get(key)


class ShardedKV:
    """A ``neuroglancer_uint64_sharded_v1`` directory of ``<shard hex>.shard`` files."""

    def __init__(self, directory, sharding: dict):
        if sharding.get("@type") != "neuroglancer_uint64_sharded_v1":
            raise ValueError(f"not a sharding spec: {sharding}")
        self.directory, self.spec = os.fspath(directory), sharding
        self.index_end = 16 << sharding["minishard_bits"]

    def shard_name(self, shard: int) -> str:
        return format(shard, "x").zfill(-(-self.spec["shard_bits"] // 4)) + ".shard"

    def _minishard(self, data: bytes, minishard: int):
        """Decoded minishard index: (keys, starts, ends) as uint64 arrays (absolute offsets)."""
        start, end = (int(v) for v in np.frombuffer(data, "<u8", 2, 16 * minishard))
        if start == end:
            return (np.zeros(0, np.uint64),) * 3
        if not start < end <= len(data) - self.index_end:
            raise ValueError(f"minishard {minishard}: bad index range [{start}, {end})")
        raw = _decode(
            data[self.index_end + start : self.index_end + end],
            self.spec.get("minishard_index_encoding"),
        )
        if len(raw) % 24:
            raise ValueError(f"minishard {minishard}: index of {len(raw)} bytes")
        a = np.frombuffer(raw, "<u8").reshape(3, -1)
        starts = self.index_end + np.cumsum(a[1]) + np.cumsum(a[2]) - a[2]
        if (starts + a[2] > len(data)).any():
            raise ValueError(f"minishard {minishard}: data beyond the end of the shard")
        return np.cumsum(a[0], dtype=np.uint64), starts, starts + a[2]

    def _read(self, shard: int) -> bytes | None:
        path = os.path.join(self.directory, self.shard_name(shard))
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < self.index_end:
            raise ValueError(f"{path}: shorter than its shard index")
        return data

    def get(self, key: int) -> bytes | None:
        shard, minishard = shard_location(key, self.spec)
        data = self._read(shard)
        if data is None:
            return None
        keys, starts, ends = self._minishard(data, minishard)
        hit = np.flatnonzero(keys == np.uint64(key))
        if not len(hit):
            return None
        return _decode(
            data[int(starts[hit[0]]) : int(ends[hit[0]])], self.spec.get("data_encoding")
        )

    def items(self):
        """Every (key, bytes), reading each shard fully; checks file names and key placement."""
        names = sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else []
        for name in names:
            shard = int(name.split(".")[0], 16) if re.fullmatch(r"[0-9a-f]+\.shard", name) else -1
            if not 0 <= shard < 1 << self.spec["shard_bits"] or self.shard_name(shard) != name:
                raise ValueError(f"unexpected file {name!r} in {self.directory}")
            data = self._read(shard)
            for minishard in range(1 << self.spec["minishard_bits"]):
                for key, start, end in zip(*self._minishard(data, minishard), strict=True):
                    if shard_location(int(key), self.spec) != (shard, minishard):
                        raise ValueError(f"key {key} misplaced in {name} minishard {minishard}")
                    yield int(key), _decode(data[start:end], self.spec.get("data_encoding"))


def open_kv(directory, sharding: dict | None = None, spatial: bool = False):
    """A ShardedKV if ``sharding`` is given, else an UnshardedKV."""
    return ShardedKV(directory, sharding) if sharding else UnshardedKV(directory, spatial)


# ---------------------------------------------------------------- annotation encoding


@dataclass
class Record:
    """One decoded annotation: ``geometry`` is float32 (n_points, rank): the point, the two
    endpoints/corners, [centre, radii], or the polyline's points. ``encoded`` is its bytes
    (geometry, properties, padding); ``relationships`` is only known from by_id (else None)."""

    geometry: np.ndarray
    properties: dict
    encoded: bytes
    relationships: dict | None = None


class Layout:
    """Byte layout of one annotation for an info: geometry, then properties grouped by size."""

    def __init__(self, info: dict):
        self.kind = info["annotation_type"].upper()
        if self.kind not in KINDS:
            raise ValueError(f"unknown annotation_type {info['annotation_type']!r}")
        self.rank = len(info["dimensions"])
        self.points = {"POINT": 1, "POLYLINE": None}.get(self.kind, 2)
        self.relationships = [r["id"] for r in info.get("relationships", [])]
        props = info.get("properties", [])
        self.properties = sorted(
            props, key=lambda p: -np.dtype(PROPERTY_TYPES[p["type"]]).base.itemsize
        )
        formats = [np.dtype(PROPERTY_TYPES[p["type"]]) for p in self.properties]
        offsets = np.cumsum([0] + [f.itemsize for f in formats]).tolist()
        self.used, names = offsets[-1], [p["id"] for p in self.properties]
        layout = {"names": names, "formats": formats, "offsets": offsets[:-1]}
        self.props = np.dtype({**layout, "itemsize": -(-self.used // 4) * 4})

    def _values(self, row) -> dict:
        return {
            n: tuple(row[n].tolist()) if row[n].ndim else row[n].item() for n in row.dtype.names
        }

    def _props_at(self, buf: bytes, offset: int, count: int, stride: int):
        """Structured property rows of ``count`` records of ``stride`` bytes at ``offset``."""
        if offset + count * stride > len(buf):
            raise ValueError("annotation data truncated")
        raw = np.frombuffer(buf, np.uint8, count * stride, offset).reshape(count, stride)
        if raw[:, stride - self.props.itemsize + self.used :].any():
            raise ValueError("non-zero padding bytes")
        if not self.props.itemsize:
            return raw, np.zeros(count, self.props)
        tail = np.ascontiguousarray(raw[:, stride - self.props.itemsize :])
        return raw, tail.reshape(-1).view(self.props)

    def decode_many(self, buf: bytes, offset: int, count: int) -> tuple[list, int]:
        """``count`` consecutive annotations at ``offset``; returns (records, end offset)."""
        if self.points is not None:  # fixed size: one vectorised read
            g = 4 * self.points * self.rank
            raw, rows = self._props_at(buf, offset, count, g + self.props.itemsize)
            geom = raw[:, :g].copy().view("<f4").reshape(count, self.points, self.rank)
            recs = [Record(geom[i], self._values(rows[i]), raw[i].tobytes()) for i in range(count)]
            return recs, offset + raw.size
        recs = []
        for _ in range(count):
            if offset + 4 > len(buf):
                raise ValueError("annotation data truncated")
            n = int(np.frombuffer(buf, "<u4", 1, offset)[0])
            raw, rows = self._props_at(buf, offset, 1, 4 + 4 * n * self.rank + self.props.itemsize)
            geom = raw[0, 4 : 4 + 4 * n * self.rank].copy().view("<f4").reshape(n, self.rank)
            recs.append(Record(geom, self._values(rows[0]), raw[0].tobytes()))
            offset += raw.size
        return recs, offset

    def decode_single(self, buf: bytes) -> Record:
        """The by_id encoding: one annotation, then per relationship a uint32 count and ids."""
        (rec,), offset = self.decode_many(buf, 0, 1)
        rec.relationships = {}
        for rel in self.relationships:
            if offset + 4 > len(buf):
                raise ValueError("relationships truncated")
            n = int(np.frombuffer(buf, "<u4", 1, offset)[0])
            if offset + 4 + 8 * n > len(buf):
                raise ValueError("relationships truncated")
            rec.relationships[rel] = np.frombuffer(buf, "<u8", n, offset + 4).tolist()
            offset += 4 + 8 * n
        if offset != len(buf):
            raise ValueError(f"{len(buf) - offset} trailing bytes after the annotation")
        return rec

    def decode_list(self, buf: bytes) -> list[tuple[int, Record]]:
        """The multiple annotation encoding: uint64 count, annotations, their uint64 ids."""
        if len(buf) < 8:
            raise ValueError("annotation list shorter than its count")
        count = int(np.frombuffer(buf, "<u8", 1)[0])
        recs, offset = self.decode_many(buf, 8, count)
        if len(buf) != offset + 8 * count:
            raise ValueError(f"annotation list of {len(buf)} bytes, expected {offset + 8 * count}")
        return list(zip(np.frombuffer(buf, "<u8", count, offset).tolist(), recs, strict=True))


# ---------------------------------------------------------------- collection


class Collection:
    """A precomputed annotation collection folder, read through its info."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.info = read_info(self.folder)
        self.layout = Layout(self.info)
        self.kind, self.rank = self.layout.kind, self.layout.rank

    def _kv(self, entry: dict, spatial: bool = False):
        path = os.path.normpath(os.path.join(self.folder, *entry["key"].split("/")))
        return open_kv(path, entry.get("sharding"), spatial)

    def by_id(self, id: int) -> Record | None:
        data = self._kv(self.info["by_id"]).get(id)
        return None if data is None else self.layout.decode_single(data)

    def all_by_id(self) -> dict[int, Record]:
        return {k: self.layout.decode_single(v) for k, v in self._kv(self.info["by_id"]).items()}

    def spatial_level(self, i: int) -> dict[tuple, list[tuple[int, Record]]]:
        """Cell (tuple) -> [(id, record)] of spatial level ``i``."""
        level, out = self.info["spatial"][i], {}
        for key, data in self._kv(level, spatial=True).items():
            cell = morton_to_cell(key, level["grid_shape"]) if level.get("sharding") else key
            if len(cell) != self.rank or cell in out:
                raise ValueError(f"level {i}: bad or repeated cell {cell}")
            out[cell] = self.layout.decode_list(data)
        return out

    def related(self, relationship_id: str) -> dict[int, list[tuple[int, Record]]]:
        """Object id -> [(annotation id, record)] of one relationship index."""
        (entry,) = [r for r in self.info["relationships"] if r["id"] == relationship_id]
        return {k: self.layout.decode_list(v) for k, v in self._kv(entry).items()}


# ---------------------------------------------------------------- geometry and checks


def _hits(record: Record, kind: str, lower, upper) -> np.ndarray:
    """Whether the annotation meets each closed box ``[lower[m], upper[m]]`` (arrays (m, rank))."""
    g = record.geometry.astype(np.float64)
    lo, hi = np.atleast_2d(np.asarray(lower, np.float64)), np.atleast_2d(np.asarray(upper, float))
    if kind == "AXIS_ALIGNED_BOUNDING_BOX":
        return ((g.max(0) >= lo) & (g.min(0) <= hi)).all(1)
    if kind == "ELLIPSOID":  # the box point nearest the centre minimises the scaled distance too
        c, r = g[0], np.abs(g[1])
        d = np.clip(c, lo, hi) - c
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(r > 0, d / np.where(r > 0, r, 1), np.where(d == 0, 0.0, np.inf))
        return (t**2).sum(1) <= 1
    p0, p1 = (g[:1], g[:1]) if len(g) == 1 else (g[:-1], g[1:])  # points, segments (Liang-Barsky)
    d, p0, lo, hi = p1 - p0, p0[None], lo[:, None], hi[:, None]
    inside = (lo <= p0) & (p0 <= hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (lo - p0) / d, (hi - p0) / d
    flat = d == 0
    t0 = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(ta, tb)).max(2)
    t1 = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(ta, tb)).min(2)
    return (np.maximum(t0, 0) <= np.minimum(t1, 1)).any(1)


def intersects(record: Record, kind: str, lower, upper) -> bool:
    """Exact test: does the annotation meet the closed axis-aligned box [lower, upper]?"""
    return bool(_hits(record, kind.upper(), lower, upper)[0])


def _cells_met(record: Record, kind: str, lb, cs, grid, shrink) -> set:
    """Cells of a grid whose box, shrunk by ``shrink``, the annotation meets."""
    g = record.geometry.astype(np.float64)
    if not len(g):
        return set()
    if kind == "ELLIPSOID":
        bmin, bmax = g[:1] - abs(g[1:]), g[:1] + abs(g[1:])
    elif len(g) > 1 and kind in ("LINE", "POLYLINE"):  # per segment, for long streamlines
        bmin, bmax = np.minimum(g[:-1], g[1:]), np.maximum(g[:-1], g[1:])
    else:
        bmin, bmax = g.min(0, keepdims=True), g.max(0, keepdims=True)
    first = np.clip(np.floor((bmin - lb) / cs), 0, grid - 1).astype(int).tolist()
    last = np.clip(np.floor((bmax - lb) / cs), 0, grid - 1).astype(int).tolist()
    cand = set()
    for f, t in zip(first, last, strict=True):
        cand.update(itertools.product(*map(range, f, [x + 1 for x in t])))
    cand, met = np.array(sorted(cand)), set()
    step = max(1, 2**20 // (len(g) * len(lb)))  # bounds the (cells, segments, rank) arrays
    for k in range(0, len(cand), step):
        lo = lb + cand[k : k + step] * cs
        hit = _hits(record, kind, lo + shrink, lo + cs - shrink)
        met.update(map(tuple, cand[k : k + step][hit].tolist()))
    return met


def _require(condition, message: str):
    if not condition:
        raise AssertionError(message)


def check_collection(folder, tol: float = 1e-6) -> Collection:
    """Assert that a collection is self-consistent (see the module's tests); returns it.

    Cells are widened by ``tol * chunk_size`` when testing that an annotation may be in a cell,
    and shrunk by as much when testing that it must be (so boundary touches are not required).
    """
    c = Collection(folder)
    info = c.info
    _require(info.get("@type") == "neuroglancer_annotations_v1", "bad @type")
    lb, ub = np.asarray(info["lower_bound"], float), np.asarray(info["upper_bound"], float)
    _require(lb.shape == ub.shape == (c.rank,) and (lb < ub).all(), f"bad bounds {lb} {ub}")
    for p in info.get("properties", []):
        _require(re.fullmatch(r"[a-z][a-zA-Z0-9_]*", p["id"]), f"bad property id {p['id']!r}")
        _require(len(p.get("enum_values", [])) == len(p.get("enum_labels", [])), "enum lengths")
    by_id = c.all_by_id()
    level_of, previous = {}, None
    for i, level in enumerate(info["spatial"]):
        grid, cs = np.asarray(level["grid_shape"]), np.asarray(level["chunk_size"], float)
        _require(np.allclose(grid * cs, ub - lb, rtol=1e-9), f"level {i}: grid*chunk != extent")
        if previous is not None:
            _require(
                (np.isclose(cs, previous) | np.isclose(2 * cs, previous)).all(),
                f"level {i}: chunk_size {cs} after {previous}",
            )
        previous, eps, cells = cs, tol * cs, defaultdict(set)
        for cell, entries in c.spatial_level(i).items():
            _require(((np.array(cell) >= 0) & (np.array(cell) < grid)).all(), f"cell {cell}")
            ids = [aid for aid, _ in entries]
            _require(len(set(ids)) == len(ids), f"level {i} cell {cell}: repeated ids")
            lo = lb + np.array(cell) * cs
            for aid, rec in entries:
                _require(aid in by_id, f"level {i} cell {cell}: id {aid} not in by_id")
                _require(rec.encoded == by_id[aid].encoded, f"id {aid}: differs from by_id")
                _require(
                    intersects(rec, c.kind, lo - eps, lo + cs + eps),
                    f"level {i}: id {aid} outside cell {cell}",
                )
                cells[aid].add(cell)
        for aid, listed in cells.items():
            _require(aid not in level_of, f"id {aid} at levels {level_of.get(aid)} and {i}")
            level_of[aid] = i
            need = _cells_met(by_id[aid], c.kind, lb, cs, grid, eps)
            _require(need <= listed, f"id {aid}: missing from level {i} cells {need - listed}")
    _require(
        set(level_of) == set(by_id),
        f"ids not in the spatial index: {sorted(set(by_id) - set(level_of))[:10]}",
    )
    for rel in c.layout.relationships:
        expected = defaultdict(set)
        for aid, rec in by_id.items():
            for obj in rec.relationships[rel]:
                expected[obj].add(aid)
        got = {}
        for obj, entries in c.related(rel).items():
            ids = [aid for aid, _ in entries]
            _require(len(set(ids)) == len(ids), f"{rel} {obj}: repeated ids")
            for aid, rec in entries:
                _require(
                    aid in by_id and rec.encoded == by_id[aid].encoded,
                    f"{rel} {obj}: id {aid} differs from by_id",
                )
            if ids:
                got[obj] = set(ids)
        _require(got == dict(expected), f"relationship {rel!r}: index differs from by_id")
    return c
