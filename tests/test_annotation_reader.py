"""The independent annotation reader (tests/annotation_reader.py) against third-party writers.

neuroglancer's ``AnnotationWriter`` (unsharded, one spatial level) writes the collections;
TensorStore writes the sharded key-value stores (any keys, both hashes, raw and gzip) and a sharded
volume whose chunk keys are compressed Morton codes. Byte layouts the writers cannot produce
(property order != encoding order, padding, a shard file) are built here from the specification.
"""

import json
import struct
from collections import defaultdict

import annotation_reader as ar
import numpy as np
import pytest
from neuroglancer import AnnotationPropertySpec, CoordinateSpace, write_annotations
from neuroglancer.write_annotations import AnnotationWriter

# declared in mixed order; the wheel re-orders by size, which matches the spec's grouping
PROPERTIES = [
    AnnotationPropertySpec(id="score", type="float32"),
    AnnotationPropertySpec(
        id="kind", type="uint8", enum_values=[0, 1, 2], enum_labels=["soma", "axon", "dendrite"]
    ),
    AnnotationPropertySpec(id="depth", type="int32"),
    AnnotationPropertySpec(id="offset", type="int16"),
    AnnotationPropertySpec(id="color", type="rgb"),
    AnnotationPropertySpec(id="tint", type="rgba"),
    AnnotationPropertySpec(id="weight", type="float32"),
    # third 4-byte property before uint32: the 2.41 wheel aligns uint32 to 3 bytes (see below)
    AnnotationPropertySpec(id="count", type="uint32"),
    AnnotationPropertySpec(id="level", type="uint16"),
    AnnotationPropertySpec(id="sign", type="int8"),
]
KINDS = ["point", "line", "axis_aligned_bounding_box", "ellipsoid", "polyline"]
SHARD = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 0,
    "hash": "identity",
    "minishard_bits": 1,
    "shard_bits": 1,
}


def _spec(hash="identity", preshift=0, minishard=1, shard=1, index="raw", data="raw"):
    return {
        **SHARD,
        "hash": hash,
        "preshift_bits": preshift,
        "minishard_bits": minishard,
        "shard_bits": shard,
        "minishard_index_encoding": index,
        "data_encoding": data,
    }


def _space():
    return CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[4, 4, 40])


def _properties(rng) -> dict:
    return {
        "score": float(np.float32(rng.normal())),
        "kind": int(rng.integers(3)),
        "depth": int(rng.integers(-(2**31), 2**31)),
        "offset": int(rng.integers(-(2**15), 2**15)),
        "color": tuple(int(v) for v in rng.integers(0, 256, 3)),
        "tint": tuple(int(v) for v in rng.integers(0, 256, 4)),
        "weight": float(np.float32(rng.uniform(0, 1e6))),
        "count": int(rng.integers(0, 2**32)),
        "level": int(rng.integers(0, 2**16)),
        "sign": int(rng.integers(-128, 128)),
    }


def _geometry(rng, kind) -> np.ndarray:
    """Points of one annotation inside [1, 99]^3 (ellipsoid: centre, radii)."""
    if kind == "point":
        return rng.uniform(1, 99, (1, 3))
    if kind == "axis_aligned_bounding_box":
        a = rng.uniform(1, 60, 3)
        return np.stack([a, a + rng.uniform(0.5, 39, 3)])
    if kind == "ellipsoid":
        return np.stack([rng.uniform(20, 80, 3), rng.uniform(0.5, 19, 3)])
    return rng.uniform(1, 99, (2 if kind == "line" else int(rng.integers(2, 7)), 3))


def _add(writer, annotation_type, geometry, aid, /, **kwargs):
    if annotation_type == "point":
        writer.add_point(geometry[0], id=aid, **kwargs)
    elif annotation_type == "polyline":
        writer.add_polyline(geometry, id=aid, **kwargs)
    else:
        add = getattr(writer, f"add_{annotation_type}")
        add(geometry[0], geometry[1], id=aid, **kwargs)


def _set_single_level(folder, lower, upper):
    """Give a one-level collection known bounds (the wheel bounds lines, boxes and ellipsoids by
    min(first vector), max(second vector): wrong for ellipsoids and reversed lines)."""
    info = ar.read_info(folder)
    info.update(lower_bound=list(lower), upper_bound=list(upper))
    info["spatial"][0]["chunk_size"] = [float(u - lo) for lo, u in zip(lower, upper, strict=True)]
    (folder / "info").write_text(json.dumps(info))


def _write_wheel(folder, kind, n, seed):
    """A collection written by the wheel; returns {id: (float32 geometry, properties, related)}."""
    rng = np.random.default_rng(seed)
    writer = AnnotationWriter(_space(), kind, relationships=["segments"], properties=PROPERTIES)
    ids = [0, 2**64 - 1, *{int(v) for v in rng.integers(1, 2**63, n - 2, dtype=np.uint64)}]
    expected = {}
    for i, aid in enumerate(ids):
        geometry, props = _geometry(rng, kind), _properties(rng)
        related = [int(v) for v in rng.choice(np.arange(1, 9), int(rng.integers(0, 4)), False)]
        segments = related[0] if len(related) == 1 and i % 2 else related  # the wheel takes an int
        _add(writer, kind, geometry, aid, segments=segments, **props)
        expected[aid] = (geometry.astype(np.float32), props, related)
    writer.write(folder)
    return expected


@pytest.mark.parametrize("kind", KINDS)
def test_wheel_collection_reads_back_exactly(tmp_path, kind):
    expected = _write_wheel(tmp_path, kind, 12, seed=KINDS.index(kind))
    c = ar.Collection(tmp_path)
    assert c.kind == kind.upper() and c.rank == 3
    enum = {p["id"]: p for p in c.info["properties"]}["kind"]
    assert enum["enum_labels"] == ["soma", "axon", "dendrite"] and enum["enum_values"] == [0, 1, 2]
    records = c.all_by_id()
    assert set(records) == set(expected)
    for aid, (geometry, props, related) in expected.items():
        rec = records[aid]
        assert rec.geometry.dtype == np.float32
        np.testing.assert_array_equal(rec.geometry, geometry)
        assert rec.properties == props
        assert rec.relationships == {"segments": related}
        assert c.by_id(aid).encoded == rec.encoded
    assert c.by_id(12345) is None
    cells = c.spatial_level(0)
    assert list(cells) == [(0, 0, 0)]
    assert sorted(aid for aid, _ in cells[(0, 0, 0)]) == sorted(expected)
    assert all(rec.encoded == records[aid].encoded for aid, rec in cells[(0, 0, 0)])
    inverse = defaultdict(set)
    for aid, (_, _, related) in expected.items():
        for obj in related:
            inverse[obj].add(aid)
    assert {obj: {aid for aid, _ in v} for obj, v in c.related("segments").items()} == inverse
    _set_single_level(tmp_path, [0, 0, 0], [100, 100, 100])
    ar.check_collection(tmp_path)


def test_wheel_bounds_pass_for_points_and_polylines(tmp_path):
    for kind in ("point", "polyline"):
        _write_wheel(tmp_path / kind, kind, 6, seed=7)
        ar.check_collection(tmp_path / kind)


@pytest.mark.skipif(
    write_annotations._PROPERTY_DTYPES["uint32"][1] == 4, reason="this wheel aligns uint32 to 4"
)
def test_wheel_misplaced_uint32_is_rejected(tmp_path):
    """neuroglancer 2.41's writer pads a uint32 that follows one float32 by 2 bytes (spec: none)."""
    specs = [
        AnnotationPropertySpec(id="a", type="float32"),
        AnnotationPropertySpec(id="b", type="uint32"),
    ]
    writer = AnnotationWriter(_space(), "point", properties=specs)
    writer.add_point([1, 2, 3], id=1, a=0.5, b=7)
    writer.write(tmp_path)
    with pytest.raises(ValueError, match="trailing bytes"):
        ar.Collection(tmp_path).all_by_id()
    with pytest.raises(ValueError, match="annotation list"):
        ar.Collection(tmp_path).spatial_level(0)


def _write_list(pairs) -> bytes:
    """Multiple annotation encoding of [(id, encoded)]."""
    return (
        struct.pack("<Q", len(pairs))
        + b"".join(e for _, e in pairs)
        + b"".join(struct.pack("<Q", i) for i, _ in pairs)
    )


def test_property_grouping_and_padding_from_spec(tmp_path):
    """Rank 2, properties declared out of size order; bytes laid out by hand from the spec."""
    types = ["uint8", "float32", "rgb", "int16", "int8", "uint32", "uint16"]
    names = ["kind", "score", "color", "offset", "sign", "count", "level"]
    info = {
        "@type": "neuroglancer_annotations_v1",
        "dimensions": {"x": [1, "m"], "y": [1, "m"]},
        "lower_bound": [0, 0],
        "upper_bound": [10, 10],
        "annotation_type": "POINT",
        "properties": [{"id": n, "type": t} for n, t in zip(names, types, strict=True)],
        "relationships": [{"id": "cells", "key": "rel"}],
        "by_id": {"key": "by_id"},
        "spatial": [{"key": "s0", "grid_shape": [1, 1], "chunk_size": [10, 10], "limit": 1}],
    }
    encoded = (
        struct.pack("<2f", 1.5, 9.25)
        + struct.pack("<fI", -2.5, 4000000000)  # 4-byte
        + struct.pack("<hH", -300, 65535)
        + struct.pack("<B3Bb", 2, 10, 20, 30, -5)  # 2, 1
        + b"\0\0\0"
    )
    assert len(encoded) == 28  # 8 + 8 + 4 + 5, padded
    for d in ("by_id", "rel", "s0"):
        (tmp_path / d).mkdir()
    (tmp_path / "info").write_text(json.dumps(info))
    (tmp_path / "by_id" / "3").write_bytes(encoded + struct.pack("<IQQ", 2, 7, 2**64 - 2))
    (tmp_path / "s0" / "0_0").write_bytes(_write_list([(3, encoded)]))
    (tmp_path / "rel" / "7").write_bytes(_write_list([(3, encoded)]))
    (tmp_path / "rel" / str(2**64 - 2)).write_bytes(_write_list([(3, encoded)]))
    c = ar.check_collection(tmp_path)
    rec = c.by_id(3)
    np.testing.assert_array_equal(rec.geometry, np.float32([[1.5, 9.25]]))
    assert rec.properties == {
        "kind": 2,
        "score": -2.5,
        "color": (10, 20, 30),
        "offset": -300,
        "sign": -5,
        "count": 4000000000,
        "level": 65535,
    }
    assert rec.relationships == {"cells": [7, 2**64 - 2]} and rec.encoded == encoded
    by_id = tmp_path / "by_id" / "3"
    for bad, message in [
        (encoded[:-1] + b"\1" + by_id.read_bytes()[28:], "padding"),
        (by_id.read_bytes() + b"\0", "trailing"),
        (encoded[:20], "truncated"),
    ]:
        by_id.write_bytes(bad)
        with pytest.raises(ValueError, match=message):
            c.by_id(3)


# ---------------------------------------------------------------- keys, hashes, shards


def test_compressed_morton_code_hand_values():
    assert [
        ar.compressed_morton_code(c, [4, 4, 4])
        for c in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (3, 3, 3)]
    ] == [1, 2, 4, 8, 63]
    # grid (4, 1, 2): bit 0 of x, bit 0 of z, bit 1 of x
    assert ar.compressed_morton_code((3, 0, 1), [4, 1, 2]) == 0b111
    assert ar.compressed_morton_code((2, 0, 1), [4, 1, 2]) == 0b110
    assert ar.compressed_morton_code((2, 0, 0), [4, 1, 2]) == 0b100
    # grid (5, 3, 1): x0 y0 x1 y1 x2
    assert ar.compressed_morton_code((4, 2, 0), [5, 3, 1]) == 0b11000
    assert ar.compressed_morton_code((1, 1, 0), [5, 3, 1]) == 0b00011
    assert ar.compressed_morton_code((0,), [1]) == 0 and ar.compressed_morton_code((6,), [7]) == 6
    for grid in ([5, 3, 2], [4, 1, 2], [1, 1, 1], [9, 2], [3, 17, 1, 2]):
        cells = list(np.ndindex(*grid))
        codes = [ar.compressed_morton_code(c, grid) for c in cells]
        assert len(set(codes)) == len(cells)
        assert [ar.morton_to_cell(k, grid) for k in codes] == [tuple(c) for c in cells]
    with pytest.raises(ValueError):
        ar.morton_to_cell(5, [5, 1, 1])  # bits fit but x = 5 is outside the grid
    with pytest.raises(ValueError):
        ar.morton_to_cell(8, [2, 2, 2])


def _murmur3_x86_128(data: bytes, seed: int) -> bytes:
    """MurmurHash3_x86_128 from its public definition (SMHasher's MurmurHash3.cpp)."""
    m, c = 0xFFFFFFFF, (0x239B961B, 0xAB0E9789, 0x38B34AE5, 0xA1E38B93)
    rotations, lane_rotations = (15, 16, 17, 18), (19, 17, 15, 13)
    adds = (0x561CCD1B, 0x0BCAA747, 0x96CD1C35, 0x32AC3B17)

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & m

    def mix_k(k, i):
        return rotl(k * c[i] & m, rotations[i]) * c[(i + 1) % 4] & m

    def fmix(h):
        h = (h ^ h >> 16) * 0x85EBCA6B & m
        h = (h ^ h >> 13) * 0xC2B2AE35 & m
        return h ^ h >> 16

    h = [seed] * 4
    blocks = len(data) // 16
    for b in range(blocks):
        k = struct.unpack_from("<4I", data, 16 * b)
        for i in range(4):
            h[i] = rotl(h[i] ^ mix_k(k[i], i), lane_rotations[i])
            h[i] = ((h[i] + h[(i + 1) % 4]) * 5 + adds[i]) & m
    tail = data[16 * blocks :]
    k = struct.unpack("<4I", tail.ljust(16, b"\0"))
    for i in range(4):
        if len(tail) > 4 * i:
            h[i] ^= mix_k(k[i], i)
    h = [x ^ len(data) for x in h]
    for final in (False, True):
        h[0] = sum(h) & m
        h[1:] = [(x + h[0]) & m for x in h[1:]]
        h = h if final else [fmix(x) for x in h]
    return struct.pack("<4I", *h)


def test_murmurhash_against_the_published_definition():
    # SMHasher's verification value of MurmurHash3_x86_128 checks the reference itself
    key = bytes(range(256))
    hashes = b"".join(_murmur3_x86_128(key[:i], 256 - i) for i in range(256))
    assert struct.unpack_from("<I", _murmur3_x86_128(hashes, 0))[0] == 0xB3ECE62A
    keys = [0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, *range(2, 300, 7)]
    keys += [int(v) for v in np.random.default_rng(1).integers(0, 2**64, 200, dtype=np.uint64)]
    for key in keys:
        low = int.from_bytes(_murmur3_x86_128(key.to_bytes(8, "little"), 0)[:8], "little")
        assert ar.murmurhash3_x86_128_low64(key) == low, key
    spec = _spec("murmurhash3_x86_128", 2, 3, 4)
    h = int.from_bytes(_murmur3_x86_128((12345 >> 2).to_bytes(8, "little"), 0)[:8], "little")
    assert ar.shard_location(12345, spec) == ((h >> 3) & 15, h & 7)


def _ts_kvstore(path, sharding, items: dict):
    """Write ``items`` into a sharded store with TensorStore's neuroglancer_uint64_sharded."""
    ts = pytest.importorskip("tensorstore")
    kv = ts.KvStore.open(
        {"driver": "neuroglancer_uint64_sharded", "metadata": sharding, "base": f"file://{path}/"}
    ).result()
    txn = ts.Transaction()
    for key, value in items.items():
        kv.with_transaction(txn).write(struct.pack(">Q", key), value)
    txn.commit_async().result()


@pytest.mark.parametrize(
    "sharding",
    [
        _spec(minishard=2),
        _spec("murmurhash3_x86_128", 2, 3, 2, "gzip", "gzip"),
        _spec("murmurhash3_x86_128", 0, 0, 0, "raw", "gzip"),
        _spec("identity", 3, 1, 5, "gzip"),
    ],
)
def test_sharded_kv_against_tensorstore(tmp_path, sharding):
    rng = np.random.default_rng(sharding["shard_bits"])
    keys = {0, 2**64 - 1, *(int(v) for v in rng.integers(0, 2**64, 150, dtype=np.uint64))}
    keys |= set(range(1, 40))
    items = {
        k: rng.integers(0, 256, int(rng.integers(1, 60))).astype(np.uint8).tobytes() for k in keys
    }
    _ts_kvstore(tmp_path, sharding, items)
    kv = ar.open_kv(tmp_path, sharding)
    got = list(kv.items())
    assert len(got) == len(items) and dict(got) == items
    assert all(kv.get(k) == v for k, v in items.items())
    assert kv.get(40) is None and kv.get(2**64 - 2) is None
    width = -(-sharding["shard_bits"] // 4)
    assert all(len(p.stem) == max(width, 1) for p in tmp_path.iterdir())


def _shard(entries: dict, minishard_bits: int, preshift: int = 0) -> bytes:
    """One shard file (identity hash, raw), from the spec: per minishard its chunks, then its
    [3, n] uint64 index (ids delta-coded, offsets delta-coded from the previous chunk's end)."""
    index, body = [], b""
    for m in range(1 << minishard_bits):
        keys = sorted(k for k in entries if (k >> preshift) & ((1 << minishard_bits) - 1) == m)
        rows, previous_key, previous_end = [], 0, 0
        for k in keys:
            rows.append((k - previous_key, len(body) - previous_end, len(entries[k])))
            body += entries[k]
            previous_key, previous_end = k, len(body)
        start = len(body)
        body += np.array(rows, "<u8").reshape(-1, 3).T.tobytes()
        index.append((start, len(body)))
    return np.array(index, "<u8").tobytes() + body


def test_sharded_kv_hand_built(tmp_path):
    # one key, no minishard bits, byte by byte: shard index [3, 27), the data, the [3, 1] index
    (tmp_path / "a").mkdir()
    shard = struct.pack("<2Q", 3, 27) + b"abc" + struct.pack("<3Q", 5, 0, 3)
    (tmp_path / "a" / "0.shard").write_bytes(shard)
    one = {**SHARD, "minishard_bits": 0, "shard_bits": 0}
    assert list(ar.open_kv(tmp_path / "a", one).items()) == [(5, b"abc")]
    assert ar.open_kv(tmp_path / "a", one).get(5) == b"abc"
    assert _shard({5: b"abc"}, 0) == shard
    # identity hash, preshift 1: minishard = bit 1 of the key, shard = bit 2
    spec = {**SHARD, "preshift_bits": 1}
    entries = {0: b"zero", 1: b"one", 2: b"two", 3: b"", 14: b"fourteen", 15: b"x" * 9}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "0.shard").write_bytes(_shard({k: entries[k] for k in range(4)}, 1, 1))
    (tmp_path / "b" / "1.shard").write_bytes(_shard({14: b"fourteen", 15: b"x" * 9}, 1, 1))
    kv = ar.open_kv(tmp_path / "b", spec)
    assert dict(kv.items()) == entries and all(kv.get(k) == v for k, v in entries.items())
    assert kv.get(4) is None and kv.get(6) is None and kv.get(8) is None  # empty, absent, absent
    (tmp_path / "b" / "0.shard").write_bytes(_shard({0: b"zero", 14: b"fourteen"}, 1, 1))
    with pytest.raises(ValueError, match="misplaced"):
        list(kv.items())
    (tmp_path / "b" / "0.shard").write_bytes(_shard({0: b"zero"}, 1, 1))
    (tmp_path / "b" / "02.shard").write_bytes(b"")
    with pytest.raises(ValueError, match="unexpected file"):
        list(kv.items())


def test_morton_keys_of_a_tensorstore_sharded_volume(tmp_path):
    """TensorStore keys each chunk of a sharded volume by its compressed Morton code."""
    ts = pytest.importorskip("tensorstore")
    sharding = _spec("identity", 0, 2, 1, "raw", "gzip")
    grid = (5, 3, 2)
    volume = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": f"file://{tmp_path}",
            "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
            "scale_metadata": {
                "size": [10, 6, 4],
                "chunk_size": [2, 2, 2],
                "encoding": "raw",
                "resolution": [1, 1, 1],
                "sharding": sharding,
            },
            "create": True,
        }
    ).result()
    data = np.zeros((10, 6, 4, 1), np.uint8)
    for x, y, z in np.ndindex(*grid):
        data[2 * x : 2 * x + 2, 2 * y : 2 * y + 2, 2 * z : 2 * z + 2] = 1 + x + 5 * y + 15 * z
    volume.write(data).result()
    seen = {}
    for key, chunk in ar.open_kv(tmp_path / "1_1_1", sharding).items():
        assert len(set(chunk)) == 1
        v = chunk[0] - 1
        seen[ar.morton_to_cell(key, grid)] = (v % 5, v // 5 % 3, v // 15)
    assert len(seen) == 30 and all(cell == xyz for cell, xyz in seen.items())


# ---------------------------------------------------------------- geometry


def _rec(points) -> ar.Record:
    return ar.Record(np.float32(points), {}, b"")


def test_intersects_exact_cases():
    box = ([0, 0], [1, 1])
    point = [
        ("POINT", [[1, 1]], True),
        ("POINT", [[1, 1.0001]], False),
        ("POINT", [[0.5, 0.5]], True),
    ]
    line = [
        ("LINE", [[0, 2], [2, 0]], True),  # touches the corner (1, 1)
        ("LINE", [[0, 2.1], [2.1, 0]], False),  # its bounding box overlaps, the line does not
        ("LINE", [[0.2, 0.3], [0.4, 0.5]], True),
        ("LINE", [[-1, 0.5], [3, 0.5]], True),
        ("LINE", [[-1, 1.5], [3, 1.5]], False),
        ("LINE", [[2, 2], [3, 3]], False),
    ]
    poly = [
        ("POLYLINE", [[0, 2.1], [2.1, 0], [2.1, 0.5], [0.9, 0.5]], True),
        ("POLYLINE", [[0, 2.1], [2.1, 0], [5, 5]], False),
        ("POLYLINE", [[0.5, 0.5]], True),
    ]
    aabb = [
        ("AXIS_ALIGNED_BOUNDING_BOX", [[3, 3], [1, 1]], True),  # corners in any order
        ("AXIS_ALIGNED_BOUNDING_BOX", [[-1, -1], [2, 2]], True),
        ("AXIS_ALIGNED_BOUNDING_BOX", [[1.1, 0], [2, 1]], False),
    ]
    for kind, points, hit in point + line + poly + aabb:
        assert ar.intersects(_rec(points), kind, *box) is hit, (kind, points)
    # centre (0, 0), radii (2, 1): scaled distance to the nearest box point, not Euclidean
    ellipse = _rec([[0, 0], [2, 1]])
    assert ar.intersects(ellipse, "ELLIPSOID", [1.5, 0.5], [3, 3])  # 0.75^2 + 0.5^2 <= 1
    assert not ar.intersects(ellipse, "ELLIPSOID", [1.8, 0.6], [3, 3])  # 0.81 + 0.36 > 1
    assert ar.intersects(ellipse, "ELLIPSOID", [-5, -5], [5, 5])  # contains it
    assert ar.intersects(ellipse, "ELLIPSOID", [-0.1, -0.1], [0.1, 0.1])  # inside it
    flat = _rec([[0, 0, 5], [1, 1, 0]])  # zero radius along z
    assert ar.intersects(flat, "ELLIPSOID", [0, 0, 4], [1, 1, 5])
    assert not ar.intersects(flat, "ELLIPSOID", [0, 0, 5.5], [1, 1, 7])
    # a long streamline: vectorised over its segments
    t = np.linspace(0, 2 * np.pi, 2000)
    circle = _rec(np.stack([np.cos(t), np.sin(t), 0 * t], 1) * 10)
    assert not ar.intersects(circle, "POLYLINE", [-5, -5, -1], [5, 5, 1])
    assert ar.intersects(circle, "POLYLINE", [9.9, -0.1, 0], [11, 0.1, 0])


# ---------------------------------------------------------------- a multi-level collection


def _lines(rng):
    """Lines in a 2x2x2 grid of 50-unit cells over [0, 100]^3 with the cells each one meets:
    inside one cell, or crossing a face into the neighbour (the other coordinates stay inside)."""
    lines = []
    for cell in np.ndindex(2, 2, 2):
        lo = 50 * np.array(cell)
        for _ in range(4):
            lines.append((lo + rng.uniform(1, 49, (2, 3)), {cell}))
    for axis in range(3):
        a = rng.uniform(1, 49, 3)
        b = a.copy()
        b[axis] += 50
        other = tuple(1 if d == axis else 0 for d in range(3))
        lines.append((np.stack([a, b]), {(0, 0, 0), other}))
    return lines


def _build(tmp_path, sharded=True, defect=None):
    """A two-level collection from wheel-written lines; ``defect`` breaks it in one way."""
    rng = np.random.default_rng(5)
    writer = AnnotationWriter(_space(), "line", relationships=["segments"], properties=PROPERTIES)
    lines, related = _lines(rng), {}
    for aid, (points, _) in enumerate(lines):
        related[aid] = [int(v) for v in rng.choice(np.arange(1, 6), int(rng.integers(0, 3)), False)]
        writer.add_line(points[0], points[1], id=aid, segments=related[aid], **_properties(rng))
    writer.write(tmp_path / "wheel")
    by_id = {aid: (tmp_path / "wheel" / "by_id" / str(aid)).read_bytes() for aid in related}
    encoded = {aid: b[: len(b) - 4 - 8 * len(related[aid])] for aid, b in by_id.items()}
    level0 = {(0, 0, 0): [0, 8, 16, 24, 32]}  # some within one fine cell, one crossing
    level1 = defaultdict(list)
    for aid, (_, cells) in enumerate(lines):
        for cell in cells if aid not in level0[(0, 0, 0)] else ():
            level1[cell].append(aid)
    rel = {
        p.name: (tmp_path / "wheel" / "rel_segments" / p.name).read_bytes()
        for p in (tmp_path / "wheel" / "rel_segments").iterdir()
    }
    info = ar.read_info(tmp_path / "wheel")
    info.update(lower_bound=[0, 0, 0], upper_bound=[100, 100, 100])
    grid1, chunk1 = [2, 2, 2], [50, 50, 50]
    if defect == "outside":
        level1[(1, 1, 1)].append(level1[(0, 0, 0)].pop(0))
    elif defect == "missing":
        level1[(0, 1, 0)].pop(0)
    elif defect == "two levels":
        level0[(0, 0, 0)].append(level1[(1, 0, 0)][0])
    elif defect == "half listed":
        level1[(0, 0, 1)].remove(34)  # the line crossing from (0, 0, 0) into (0, 0, 1)
    elif defect == "differs":
        e = encoded[3]
        encoded[3] = e[:24] + bytes([e[24] ^ 1]) + e[25:]  # the low byte of "score"
    elif defect == "relationship":
        del rel[sorted(rel)[0]]
    elif defect == "grid":
        grid1 = [2, 2, 3]
    elif defect == "chunk":
        grid1, chunk1 = [2, 2, 4], [50, 50, 25]
    spatial1 = {"key": "fine", "grid_shape": grid1, "chunk_size": chunk1, "limit": 4}
    info["spatial"] = [
        {"key": "coarse", "grid_shape": [1, 1, 1], "chunk_size": [100] * 3, "limit": 5},
        spatial1,
    ]
    root = tmp_path / "collection"
    fine = {cell: _write_list([(a, encoded[a]) for a in ids]) for cell, ids in level1.items()}
    stores = [
        (info["by_id"], by_id, _spec(minishard=2, index="gzip")),
        (spatial1, fine, _spec("murmurhash3_x86_128", 0, 1, 1, "raw", "gzip")),
        (
            info["relationships"][0],
            {int(k): v for k, v in rel.items()},
            _spec("murmurhash3_x86_128", 1, 2, 0, "gzip", "gzip"),
        ),
    ]
    for entry, items, sharding in stores:
        (root / entry["key"]).mkdir(parents=True)
        if sharded:
            entry["sharding"] = sharding
            morton = {
                (k[0] + 2 * k[1] + 4 * k[2] if isinstance(k, tuple) else k): v
                for k, v in items.items()
            }
            _ts_kvstore(root / entry["key"], sharding, morton)
        else:
            for k, v in items.items():
                name = "_".join(map(str, k)) if isinstance(k, tuple) else str(k)
                (root / entry["key"] / name).write_bytes(v)
    (root / "coarse").mkdir()
    coarse = [(a, encoded[a]) for a in level0[(0, 0, 0)]]
    (root / "coarse" / "0_0_0").write_bytes(_write_list(coarse))
    (root / "info").write_text(json.dumps(info))
    return root, lines, related


@pytest.mark.parametrize("sharded", [True, False])
def test_multilevel_collection(tmp_path, sharded):
    """Two levels (coarse unsharded; by_id, fine level and relationship sharded or not)."""
    root, lines, related = _build(tmp_path, sharded)
    c = ar.check_collection(root)
    wheel = ar.Collection(tmp_path / "wheel").all_by_id()
    records = c.all_by_id()
    assert set(records) == set(wheel) == set(related)
    for aid, rec in records.items():
        assert rec.encoded == wheel[aid].encoded and rec.properties == wheel[aid].properties
        assert rec.relationships == {"segments": related[aid]}
        np.testing.assert_array_equal(rec.geometry, np.float32(lines[aid][0]))
        assert c.by_id(aid).encoded == rec.encoded
    fine = c.spatial_level(1)
    expected = defaultdict(set)
    for aid, (_, cells) in enumerate(lines):
        for cell in cells if aid not in (0, 8, 16, 24, 32) else ():
            expected[cell].add(aid)
    assert {cell: {a for a, _ in v} for cell, v in fine.items()} == expected
    assert {a for a, _ in c.spatial_level(0)[(0, 0, 0)]} == {0, 8, 16, 24, 32}
    assert c.by_id(999) is None


@pytest.mark.parametrize(
    "defect, message",
    [
        ("outside", "outside cell"),
        ("missing", "not in the spatial index"),
        ("two levels", "at levels"),
        ("half listed", "missing from level 1"),
        ("differs", "differs from by_id"),
        ("relationship", "relationship 'segments'"),
        ("grid", "grid\\*chunk"),
        ("chunk", "chunk_size"),
    ],
)
def test_check_collection_detects(tmp_path, defect, message):
    root, _, _ = _build(tmp_path, sharded=defect in ("outside", "half listed"), defect=defect)
    with pytest.raises(AssertionError, match=message):
        ar.check_collection(root)
