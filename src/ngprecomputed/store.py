"""Chunk bytes on disk: written atomically, read back; the per-job manifest.

A chunk goes to ``.<name>.part`` then is renamed, so a reader never sees half a chunk and a killed
job leaves at most a ``.part`` file that its rerun overwrites. The name of the temporary file is
fixed per chunk (not per process), so a rerun leaves nothing behind.
"""

import errno
import gzip
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import crash, storage
from .chunks import Box, Grid, chunk_name
from .encodings import codec
from .errors import InputError, system_fault
from .sharding import (
    ShardingSpec,
    ShardReader,
    compressed_morton_codes,
    shard_name,
    shard_of,
    write_shard_to,
)


@contextmanager
def atomic_file(path: Path):
    """A file opened for writing under its temporary name, renamed to ``path`` when done; on
    any failure (a full disk included) the temporary file is removed and the error names
    ``path``."""
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
        storage.published(path)  # a bucket's mirror: uploaded (and dropped when data)
        crash.point("file")
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:
            e.filename = str(path)  # a failed write says only "No space left on device"
        raise


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def check_writable(folder: Path) -> None:
    """Stop before any job, in one line, when ``folder`` (or the folder it would be made in)
    cannot be written: a read-only file system, no permission, not a folder."""
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    fault = None
    if not existing.is_dir():
        raise InputError(f"results folder {folder}: {existing} is not a folder")
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        fault = errno.EROFS
    elif not os.access(existing, os.W_OK | os.X_OK):
        fault = errno.EACCES
    if fault is not None:
        raise InputError(f"results folder {system_fault(OSError(fault, '', str(existing)))}")


class ScaleStore:
    """The chunk files of one scale of one dataset (flat layout, optional ``.gz``)."""

    def __init__(
        self,
        root: Path,
        key: str,
        grid: Grid,
        dtype: str,
        channels: int,
        encoding: str = "raw",
        options: dict | None = None,
        gzipped: bool = False,
        offset: tuple[int, int, int] = (0, 0, 0),
        sharding: dict | None = None,
    ):
        self.dir = Path(root) / key
        self.grid = grid
        self.dtype = np.dtype(dtype)
        self.channels = channels
        self.codec = codec(encoding)
        self.options = options or {}
        # decoding needs only the block size (compressed_segmentation)
        self.decode_options = {k: v for k, v in self.options.items() if k == "block_size"}
        self.gzipped = gzipped
        self.offset = offset  # voxel_offset: chunk names are in absolute voxel coordinates
        # the scale's "sharding" info, if any: boxes are written as whole shards
        self.spec = ShardingSpec.from_info(sharding) if sharding else None
        self._readers: dict[Path, ShardReader] = {}

    @classmethod
    def from_info(
        cls, root: Path, info: dict, index: int, options: dict | None = None, gzipped=False
    ) -> "ScaleStore":
        """Scale ``index`` of a dataset's ``info`` (any writer's): its encoding, block size,
        voxel offset and sharding; ``options`` are encoder settings for writing."""
        s = info["scales"][index]
        block = s.get("compressed_segmentation_block_size")
        return cls(
            root,
            s["key"],
            Grid(tuple(s["size"]), tuple(s["chunk_sizes"][0])),
            info["data_type"],
            info["num_channels"],
            s["encoding"],
            {"block_size": tuple(block)} if block else (options or {}),
            gzipped and "sharding" not in s,
            tuple(s.get("voxel_offset", (0, 0, 0))),
            sharding=s.get("sharding"),
        )

    def path(self, box: Box) -> Path:
        named = tuple((lo + o, hi + o) for (lo, hi), o in zip(box, self.offset, strict=True))
        return self.dir / (chunk_name(named) + (".gz" if self.gzipped else ""))

    def read_chunk(self, box: Box) -> bytes:
        """A chunk's encoded bytes; a foreign dataset may store any chunk gzipped (``.gz``)."""
        if self.spec:
            return self._read_sharded(box)
        path = self.path(box)
        gz = path.with_name(path.name + ".gz")
        if self.foreign_gz and not path.exists() and gz.exists():
            return gzip.decompress(gz.read_bytes())
        data = storage.read_bytes(path)  # the file, or its object in a bucket
        return gzip.decompress(data) if self.gzipped else data

    @property
    def foreign_gz(self) -> bool:
        """Chunks of a dataset we did not write may be stored gzipped one by one."""
        return not self.gzipped and storage.remote_of(self.dir) is None

    def _read_sharded(self, box: Box) -> bytes:
        """A chunk from its shard (the shards' indices are kept, never their data)."""
        cid = int(compressed_morton_codes(np.array([self._position(box)]), self.grid.shape)[0])
        path = self.dir / shard_name(self.spec, int(self._shards(np.array([cid]))[0]))
        if path not in self._readers:
            self._readers[path] = ShardReader(path, self.spec)
        data = self._readers[path].chunk(cid)
        if data is None:
            raise FileNotFoundError(f"{path}: no chunk {chunk_name(box)}")
        return data

    def write_chunk(self, box: Box, array: np.ndarray) -> tuple[str, int]:
        data = self.codec.encode(array.astype(self.dtype, copy=False), **self.options)
        if self.gzipped:
            # mtime=0: identical input gives identical bytes (reruns are byte-identical)
            data = gzip.compress(data, compresslevel=6, mtime=0)
        path = self.path(box)
        write_atomic(path, data)
        return path.name, len(data)

    def write_box(self, box: Box, array: np.ndarray, threads: int = 1) -> list[tuple[str, int]]:
        """Write every chunk inside ``box`` (chunk-aligned) from ``array`` covering ``box``,
        ``threads`` chunks at a time (codecs, gzip and file writes release the GIL); for a
        sharded scale, ``box`` is whole shards and each is written in one piece."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.spec:
            return self._write_shards(box, array)
        pieces = [(cbox, sl) for _, cbox, sl in self._pieces(box)]
        if threads < 2 or len(pieces) < 2:
            return [self.write_chunk(cbox, array[sl]) for cbox, sl in pieces]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda p: self.write_chunk(p[0], array[p[1]]), pieces))

    def _pieces(self, box: Box):
        """Grid position, box and slice into an array covering ``box`` of each chunk."""
        origin = [lo for lo, _ in box]
        for pos, cbox in self.grid.chunks_in(box):
            sl = tuple(slice(lo - o, hi - o) for (lo, hi), o in zip(cbox, origin, strict=True))
            yield pos, cbox, sl

    def _write_shards(self, box: Box, array: np.ndarray) -> list[tuple[str, int]]:
        pieces = {cbox: sl for _, cbox, sl in self._pieces(box)}
        ids = compressed_morton_codes(
            np.array([self._position(b) for b in pieces]), self.grid.shape
        )
        shards = self._shards(ids)
        return [
            self.write_shard(
                [b for b, s in zip(pieces, shards, strict=True) if s == shard],
                lambda b: array[pieces[b]],
            )
            for shard in np.unique(shards)
        ]

    def _position(self, box: Box) -> list[int]:
        return [lo // c for (lo, _), c in zip(box, self.grid.chunk, strict=True)]

    def write_shard(self, boxes: list, array_of: Callable[[Box], np.ndarray]) -> tuple[str, int]:
        """Write one whole shard holding the chunks ``boxes``; ``array_of(box)`` gives a chunk's
        voxels when it is written, so one chunk at a time is in memory."""
        ids = compressed_morton_codes(np.array([self._position(b) for b in boxes]), self.grid.shape)
        shards = np.unique(self._shards(ids))
        if len(shards) != 1:
            raise ValueError(f"{self.dir}: chunks of {len(shards)} shards given as one")
        box_of = dict(zip(ids.tolist(), boxes, strict=True))

        def encoded(cid: int) -> bytes:
            data = array_of(box_of[cid]).astype(self.dtype, copy=False)
            return self.codec.encode(data, **self.options)

        path = self.dir / shard_name(self.spec, int(shards[0]))
        with atomic_file(path) as f:
            size = write_shard_to(f, self.spec, box_of, encoded)
        return path.name, size

    def files_in(self, box: Box) -> list[Path]:
        """The files that hold the chunks of ``box``: chunk files, or shards."""
        if not self.spec:
            return [self.path(cbox) for _, cbox in self.grid.chunks_in(box)]
        positions = np.array([pos for pos, _ in self.grid.chunks_in(box)])
        ids = compressed_morton_codes(positions, self.grid.shape)
        return [self.dir / shard_name(self.spec, int(s)) for s in np.unique(self._shards(ids))]

    def _shards(self, ids: np.ndarray) -> np.ndarray:
        return shard_of(self.spec, ids)

    def read_box(self, box: Box) -> np.ndarray:
        """Voxels of ``box`` assembled from the chunks that cover it."""
        shape = tuple(hi - lo for lo, hi in box) + (self.channels,)
        out = np.empty(shape, dtype=self.dtype, order="F")
        for _, cbox in self.grid.chunks_in(box):
            data = self.read_chunk(cbox)
            cshape = tuple(hi - lo for lo, hi in cbox) + (self.channels,)
            chunk = self.codec.decode(data, cshape, self.dtype, **self.decode_options)
            inter = [
                (max(a0, b0), min(a1, b1)) for (a0, a1), (b0, b1) in zip(cbox, box, strict=True)
            ]
            dst = tuple(
                slice(lo - b0, hi - b0) for (lo, hi), (b0, _) in zip(inter, box, strict=True)
            )
            src = tuple(
                slice(lo - c0, hi - c0) for (lo, hi), (c0, _) in zip(inter, cbox, strict=True)
            )
            out[dst] = chunk[src]
        return out


def write_manifest(path: Path, entries: dict) -> None:
    """The job's Snakemake output, written last: its presence means the job finished (every
    upload of the job to a bucket done first)."""
    storage.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(entries, indent=1, sort_keys=True).encode())
