"""``neuroglancer_uint64_sharded_v1``: chunk ids, hashing, and whole shard files.

A shard file is written in one piece from the encoded chunks it holds (one job owns each shard,
so no locks and no appends): the shard index (one ``[start, end)`` pair per minishard, in
minishard order, empty minishards included as empty ranges), then per minishard its chunks in
id order followed by its minishard index. Offsets are relative to the end of the shard index.

One policy (``layout``) sets every sharding parameter: converted scales, re-encoded scales and
annotation indices differ only in which ids share a shard. A converted dataset has one shard per
slab block at every scale, re-encoding another writer's dataset makes cube shards of at most
2^27 voxels (``cube_exponent``), an annotation index 2^15 consecutive keys per shard.
"""

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import crash

HASHES = ("identity", "murmurhash3_x86_128")
ENCODINGS = ("raw", "gzip")


@dataclass(frozen=True)
class ShardingSpec:
    preshift_bits: int
    minishard_bits: int
    shard_bits: int
    hash: str = "identity"
    minishard_index_encoding: str = "raw"
    data_encoding: str = "raw"

    @classmethod
    def from_info(cls, info: dict) -> "ShardingSpec":
        spec = cls(
            preshift_bits=int(info["preshift_bits"]),
            minishard_bits=int(info["minishard_bits"]),
            shard_bits=int(info["shard_bits"]),
            hash=info["hash"],
            minishard_index_encoding=info.get("minishard_index_encoding", "raw"),
            data_encoding=info.get("data_encoding", "raw"),
        )
        if spec.hash not in HASHES:
            raise ValueError(f"sharding hash {spec.hash!r} is not one of {HASHES}")
        if {spec.minishard_index_encoding, spec.data_encoding} - set(ENCODINGS):
            raise ValueError(f"sharding encodings must be one of {ENCODINGS}")
        return spec

    def to_info(self) -> dict:
        return {
            "@type": "neuroglancer_uint64_sharded_v1",
            "preshift_bits": self.preshift_bits,
            "hash": self.hash,
            "minishard_bits": self.minishard_bits,
            "shard_bits": self.shard_bits,
            "minishard_index_encoding": self.minishard_index_encoding,
            "data_encoding": self.data_encoding,
        }


MINISHARD_BITS = 9  # ids per minishard: up to 512 (a minishard index of about 12 KB)


def layout(total_bits: int, shard_low_bits: int, hash="identity", gzipped=False) -> ShardingSpec:
    """The one sharding policy: ids that differ only in their low ``shard_low_bits`` bits share
    a shard file, the lowest 9 of those bits (up to 512 ids) a minishard; minishard indices
    gzipped, the data gzipped inside the shard when the dataset asks for gzip."""
    low = min(shard_low_bits, total_bits)
    preshift = min(low, MINISHARD_BITS)
    data = "gzip" if gzipped else "raw"
    return ShardingSpec(preshift, low - preshift, total_bits - low, hash, "gzip", data)


def compressed_morton_codes(positions: np.ndarray, grid) -> np.ndarray:
    """Chunk ids of grid positions ``(n, 3)``: bit i of each axis in turn, for the axes whose
    grid still has a bit i."""
    positions = np.asarray(positions, dtype=np.uint64).reshape(-1, 3)
    bits = [max(int(g) - 1, 0).bit_length() for g in grid]
    codes = np.zeros(len(positions), dtype=np.uint64)
    j = 0
    for i in range(max(bits, default=0)):
        for axis in range(3):
            if i < bits[axis]:
                bit = (positions[:, axis] >> np.uint64(i)) & np.uint64(1)
                codes |= bit << np.uint64(j)
                j += 1
    return codes


def hashed(spec: ShardingSpec, ids: np.ndarray) -> np.ndarray:
    """The hash of each id after the preshift (low 64 bits of murmurhash3_x86_128, seed 0, of
    the id's 8 little-endian bytes)."""
    shifted = np.asarray(ids, dtype=np.uint64) >> np.uint64(spec.preshift_bits)
    if spec.hash == "identity":
        return shifted
    import mmh3

    return np.array(
        [mmh3.hash64(int(v).to_bytes(8, "little"), 0, False)[0] for v in shifted], dtype=np.int64
    ).view(np.uint64)


def _bits(spec: ShardingSpec, ids: np.ndarray, shift: int, count: int) -> np.ndarray:
    mask = np.uint64((1 << count) - 1)
    return (hashed(spec, ids) >> np.uint64(shift)) & mask


def shard_of(spec: ShardingSpec, ids: np.ndarray) -> np.ndarray:
    return _bits(spec, ids, spec.minishard_bits, spec.shard_bits)


def minishard_of(spec: ShardingSpec, ids: np.ndarray) -> np.ndarray:
    return _bits(spec, ids, 0, spec.minishard_bits)


def shard_name(spec: ShardingSpec, shard: int) -> str:
    width = -(-spec.shard_bits // 4)
    return f"{shard:0{width}x}.shard" if width else "0.shard"


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)  # mtime 0: byte-identical reruns


def write_shard_to(f: BinaryIO, spec: ShardingSpec, ids, encoded: Callable[[int], bytes]) -> int:
    """Write a whole shard holding the chunks ``ids`` to the seekable file ``f``, encoding each
    chunk only when it is written (``encoded(id)``), so that one chunk is in memory at a time;
    the shard index goes in last, over its placeholder. Returns the bytes written."""
    ids = np.array(sorted(int(i) for i in ids), dtype=np.uint64)
    minishards = minishard_of(spec, ids)
    index = np.zeros((1 << spec.minishard_bits, 2), dtype="<u8")
    f.write(index.tobytes())  # placeholder
    offset = 0
    for m in range(1 << spec.minishard_bits):
        members = ids[minishards == m]
        if not len(members):
            index[m] = offset, offset
            continue
        table = np.empty((3, len(members)), dtype="<u8")
        end = 0  # of the previous chunk
        for k, cid in enumerate(members):
            data = encoded(int(cid))
            if spec.data_encoding == "gzip":
                data = _gzip(data)
            f.write(data)
            crash.point("shard")
            table[1, k], table[2, k] = offset - end, len(data)
            offset += len(data)
            end = offset
        table[0] = np.diff(members, prepend=np.uint64(0))
        data = table.tobytes()
        if spec.minishard_index_encoding == "gzip":
            data = _gzip(data)
        f.write(data)
        index[m] = offset, offset + len(data)
        offset += len(data)
    f.seek(0)
    f.write(index.tobytes())
    return index.nbytes + offset


class ShardReader:
    """Chunks of one shard file, read through its indices: only the indices stay in memory,
    each chunk is one seek and read (as a reader over HTTP would do with Range)."""

    def __init__(self, path: Path, spec: ShardingSpec):
        self.path = Path(path)
        self.spec = spec
        self.base = 16 << spec.minishard_bits
        raw = self._read(0, self.base)
        self.index = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        self._minishards: dict[int, dict[int, tuple[int, int]]] = {}

    def _read(self, start: int, end: int) -> bytes:
        from .storage import read_bytes  # the mirror's file, or its object in a bucket

        data = read_bytes(self.path, start, end)
        if len(data) != end - start:
            raise ValueError(f"{self.path}: truncated shard")
        return data

    def _minishard(self, m: int) -> dict[int, tuple[int, int]]:
        if m not in self._minishards:
            start, end = (int(v) + self.base for v in self.index[m])
            raw = self._read(start, end)
            if self.spec.minishard_index_encoding == "gzip" and raw:
                raw = gzip.decompress(raw)
            table = np.frombuffer(raw, dtype="<u8").reshape(3, -1)
            ids = np.cumsum(table[0], dtype=np.uint64)
            ends = np.cumsum(table[1] + table[2], dtype=np.uint64)
            starts = ends - table[2]
            self._minishards[m] = {
                int(i): (int(s) + self.base, int(e) + self.base)
                for i, s, e in zip(ids, starts, ends, strict=True)
            }
        return self._minishards[m]

    def chunk(self, cid: int) -> bytes | None:
        m = int(minishard_of(self.spec, np.array([cid], dtype=np.uint64))[0])
        where = self._minishard(m).get(int(cid))
        if where is None:
            return None
        data = self._read(*where)
        return gzip.decompress(data) if self.spec.data_encoding == "gzip" else data


def shard_exponent(block, grid) -> int | None:
    """The k for which ``block`` chunks (per axis) are one shard of a compressed Morton layout
    of ``grid``: the low bits of the code cycle through the axes that still have bits, so a
    shard is 2^k chunks along every axis with more than k bits, and the whole of the others."""
    bits = [max(int(g) - 1, 0).bit_length() for g in grid]
    for k in range(max(bits) + 1):
        if all(
            (b == 1 << k) if nb > k else (b >= g)
            for b, g, nb in zip(block, grid, bits, strict=True)
        ):
            return k
    return None


def cube_exponent(chunk_voxels: int, shard_voxels: int = 2**27) -> int:
    """The largest k for which a cube of 2^k chunks per axis holds at most ``shard_voxels``."""
    k = 0
    while int(chunk_voxels) << (3 * (k + 1)) <= shard_voxels:
        k += 1
    return k


def sharding_info(grid, k: int, hash="identity", gzipped: bool = False) -> dict:
    """A scale's "sharding" info: each shard holds the ids sharing all but their low
    ``sum(min(k, bits))`` bits; with the identity hash that is 2^k chunks along every axis of a
    compressed Morton layout of ``grid`` (``shard_exponent``: a slab block; ``cube_exponent``),
    with murmurhash as many chunks, scattered."""
    bits = [max(int(g) - 1, 0).bit_length() for g in grid]
    return layout(sum(bits), sum(min(k, nb) for nb in bits), hash, gzipped).to_info()
