"""Writing a collection: ``by_id``, the spatial levels, the relationship indices, ``info`` last.

Every index is either one file per key (small collections: what the viewer fetches is then a
plain static file) or ``neuroglancer_uint64_sharded_v1`` (``sharding.write_shard_to``, the
library the volumes use), identity hash: ids ``0..N-1`` in consecutive blocks per minishard and
shard, spatial cells by compressed Morton code, so that a million streamlines are a few shard
files. Each file goes to a temporary name and is renamed; ``info`` is written last, so a dataset
is complete exactly when its ``info`` exists.

Nothing the viewer asks for is missing (a 404 is a console error in the browser): every cell of
an unsharded level has its file (an empty list where no annotation is), a level of more than
``UNSHARDED_CELLS`` cells is sharded, every shard file of a sharded index exists, and the
relationship indices are sharded (the viewer asks for any selected segment, related or not).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .. import crash
from ..sharding import (
    ShardingSpec,
    compressed_morton_codes,
    layout,
    shard_name,
    shard_of,
    write_shard_to,
)
from ..store import atomic_file, write_atomic
from . import spatial
from .collection import (
    KINDS,
    Annotations,
    Property,
    annotation_list,
    by_id_record,
    property_order,
    records,
)

log = logging.getLogger(__name__)

SHARD_ABOVE = 10_000  # annotations: above this, every index is sharded
UNSHARDED_CELLS = 4096  # cells of a level written one file each, at most
EMPTY_LIST = bytes(8)  # a uint64 count of 0
PER_SHARD_BITS = 15  # keys of a shard (by_id: 32768 annotations)
MM = [1e-3, "m"]


def index_sharding(max_key: int) -> ShardingSpec:
    """Identity-hash sharding over keys ``0..max_key``: ``2**PER_SHARD_BITS`` consecutive keys
    share a shard (``sharding.layout``)."""
    return layout(max(int(max_key), 1).bit_length(), PER_SHARD_BITS)


def bounds_of(batch: Annotations) -> tuple[list[float], list[float]]:
    """Whole millimetres around every annotation, a millimetre of margin (no flat axis)."""
    lo, hi = batch.bounds()
    return (np.floor(lo.min(0)) - 1).tolist(), (np.ceil(hi.max(0)) + 1).tolist()


def _write_index(folder: Path, keys: np.ndarray, encoded, sharding: ShardingSpec | None, name):
    """Every key's bytes ``encoded(key)``: one file per key (``name(key)``), or whole shards."""
    folder.mkdir(parents=True, exist_ok=True)
    if sharding is None:
        for key in keys:
            write_atomic(folder / name(int(key)), encoded(int(key)))
            crash.point("annotation")
        return
    shards = shard_of(sharding, keys)
    for shard in range(1 << sharding.shard_bits):  # empty ones too: no 404
        with atomic_file(folder / shard_name(sharding, int(shard))) as f:
            write_shard_to(f, sharding, keys[shards == shard], encoded)
        crash.point("annotation")


def _write_lists(folder, members: dict, words, starts, ids, sharding, name=str, keys=None):
    """An index of annotation lists: key -> the records at ``members[key]`` (``keys``: every
    key to write, an empty list for those without members)."""
    keys = np.array(sorted(members) if keys is None else keys, dtype=np.uint64)

    def encoded(key: int) -> bytes:
        found = members.get(key)
        return EMPTY_LIST if found is None else annotation_list(words, starts, found, ids)

    _write_index(folder, keys, encoded, sharding, name)


def write_collection(
    folder: Path,
    batch: Annotations,
    properties: list[Property],
    relationships: list[str],
    sharded: bool | None = None,
    limit: int = spatial.LIMIT,
    scratch: Path | None = None,
) -> dict:
    """Write ``batch`` (ids ``0..N-1``) as a precomputed annotation collection in ``folder``;
    returns its info. ``sharded`` None: sharded above ``SHARD_ABOVE`` annotations.
    ``scratch``: a folder for the records as a memory map."""
    folder = Path(folder)
    n = len(batch)
    if not np.array_equal(batch.ids, np.arange(n, dtype=np.uint64)):
        raise ValueError("annotation ids must be 0..N-1")
    if sharded is None:
        sharded = n > SHARD_ABOVE
    properties = property_order(properties)
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    words, starts = records(batch, properties, scratch and Path(scratch) / "records.npy")
    lower, upper = bounds_of(batch) if n else ([0.0] * 3, [1.0] * 3)
    info = {
        "@type": "neuroglancer_annotations_v1",
        "dimensions": {axis: MM for axis in "xyz"},
        "lower_bound": lower,
        "upper_bound": upper,
        "annotation_type": KINDS[batch.kind],
        "properties": [p.to_info() for p in properties],
        "relationships": [],
        "by_id": {"key": "by_id"},
        "spatial": [],
    }

    # by_id: every annotation with its relationships
    spec = index_sharding(max(n - 1, 0)) if sharded else None
    if spec:
        info["by_id"]["sharding"] = spec.to_info()
    _write_index(
        folder / "by_id",
        batch.ids,
        lambda i: by_id_record(words[starts[i] : starts[i + 1]], batch, i, relationships),
        spec,
        str,
    )
    log.info("%s: %d annotations by id", folder.name, n)

    # the spatial index, coarse to fine
    for k, (level, owner, flat) in enumerate(
        spatial.assign(batch, lower, upper, limit) if n else []
    ):
        key = f"spatial{k}"
        order = np.lexsort((spatial.draw(batch.ids[owner], k), flat))
        owner, flat = owner[order], flat[order]
        cells, first, counts = np.unique(flat, return_index=True, return_counts=True)
        members = {int(c): owner[a : a + m] for c, a, m in zip(cells, first, counts, strict=True)}
        g = level.grid_shape
        xyz = np.stack([cells % g[0], (cells // g[0]) % g[1], cells // (g[0] * g[1])], 1)
        entry = {
            "key": key,
            "grid_shape": list(g),
            "chunk_size": list(level.chunk_size),
            "limit": int(counts.max()) if len(counts) else 1,
        }
        if sharded or level.cells > UNSHARDED_CELLS:
            codes = compressed_morton_codes(xyz, g).astype(np.int64)
            by_code = {int(code): members[int(c)] for code, c in zip(codes, cells, strict=True)}
            spec = index_sharding(int((1 << sum(max(v - 1, 0).bit_length() for v in g)) - 1))
            entry["sharding"] = spec.to_info()
            _write_lists(folder / key, by_code, words, starts, batch.ids, spec)
        else:  # every cell, empty ones too
            every = np.arange(level.cells)
            xyz = np.stack([every % g[0], (every // g[0]) % g[1], every // (g[0] * g[1])], 1)
            names = dict(enumerate("_".join(map(str, p)) for p in xyz.tolist()))
            lists = folder / key
            _write_lists(lists, members, words, starts, batch.ids, None, names.__getitem__, every)
        info["spatial"].append(entry)
        log.info("%s: spatial level %d, %d cells of %s", folder.name, k, len(cells), g)

    # relationship indices: object id -> the annotations related to it
    for rel in relationships:
        offsets, objects = batch.related[rel]
        owner = np.repeat(np.arange(n), np.diff(offsets))
        pairs = np.unique(
            np.stack([np.asarray(objects, np.uint64), owner.astype(np.uint64)]), axis=1
        )
        objects, owner = pairs[0], pairs[1].astype(np.int64)  # by object, then annotation; once
        keys, first, counts = np.unique(objects, return_index=True, return_counts=True)
        members = {int(o): owner[a : a + m] for o, a, m in zip(keys, first, counts, strict=True)}
        entry = {"id": rel, "key": f"rel_{rel}"}
        spec = index_sharding(int(keys.max()) if len(keys) else 0)
        entry["sharding"] = spec.to_info()
        _write_lists(folder / entry["key"], members, words, starts, batch.ids, spec)
        info["relationships"].append(entry)

    write_atomic(folder / "info", json.dumps(info, indent=1).encode())
    return info
