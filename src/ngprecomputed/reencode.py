"""Re-encode an existing precomputed dataset (ours or anyone's) into another encoding.

Same scales, same chunks, chunk by chunk; work is spread over processes by chunk rows (or, for
a sharded target, by sets of whole shards: any hash, since a task gathers its shards' chunks
wherever they are), and the new ``info`` is written last. A lossy source stays as lossy as it
was: re-encoding cannot restore what jpeg removed.
"""

import json
import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .chunks import Grid
from .datatypes import codec_options, default_encoding, fit_encoding
from .info import read_info, write_info
from .settings import Options
from .sharding import compressed_morton_codes, cube_exponent, shard_of, sharding_info
from .store import ScaleStore

log = logging.getLogger(__name__)


def reencode_with(
    src: Path,
    dst: Path,
    encoding: str | None,
    jpeg_quality: int | None,
    block_size: tuple[int, int, int] | None,
    gzipped: bool = False,
    processes: int = 1,
    shard: str | None = None,
) -> None:
    """``reencode`` with settings as people give them: no ``encoding``, the default one for
    the dataset's type; no quality or block size, the defaults (``Options``)."""
    encoding = encoding or default_encoding(read_info(src)["type"])
    given = Options(jpeg_quality=jpeg_quality, block_size=block_size)
    options = codec_options(encoding, given.jpeg_quality, given.block_size)
    reencode(src, dst, encoding, options, gzipped, processes, shard=shard)


def reencode_as(src: Path, dst: Path, opts: Options, processes: int = 1) -> None:
    """A sheet row whose path is a precomputed dataset, re-encoded as the row says."""
    shard = "identity" if opts.sharded else None
    reencode_with(
        src, dst, opts.encoding, opts.jpeg_quality, opts.block_size, opts.gzip, processes, shard
    )


def target_info(
    info: dict,
    encoding: str,
    options: dict,
    where: str = "",
    shard: str | None = None,
    gzipped: bool = False,
) -> dict:
    """``info`` with every scale in ``encoding`` (the same rules as a conversion: labels
    promoted for compressed_segmentation, jpeg and png only for what they can hold), sharded
    with hash ``shard`` when given (gzip then applies to the data inside the shards)."""
    new = json.loads(json.dumps(info))
    new["data_type"] = fit_encoding(
        encoding, info["data_type"], info["num_channels"], Options(type=info["type"]), where
    )
    for scale in new["scales"]:
        scale["encoding"] = encoding
        scale.pop("compressed_segmentation_block_size", None)
        scale.pop("sharding", None)
        if encoding == "compressed_segmentation":
            scale["compressed_segmentation_block_size"] = list(options["block_size"])
        if shard:
            grid = Grid(tuple(scale["size"]), tuple(scale["chunk_sizes"][0]))
            k = cube_exponent(int(np.prod(grid.chunk)))
            scale["sharding"] = sharding_info(grid.shape, k, shard, gzipped)
    return new


def _task(args) -> int:
    """Re-encode chunk rows ``z0..z1`` (in chunks) of one scale, or, for a sharded target,
    the whole shards whose chunks are at grid ``positions`` (one list per shard); returns the
    chunks written."""
    src, dst, info, new, index, (z0, z1), shards, options, gzipped = args
    reader = ScaleStore.from_info(src, info, index)
    writer = ScaleStore.from_info(dst, new, index, options, gzipped)
    g = reader.grid
    writer.dir.mkdir(parents=True, exist_ok=True)
    if shards is None:
        box = ((0, g.size[0]), (0, g.size[1]), (z0 * g.chunk[2], min(z1 * g.chunk[2], g.size[2])))
        for _, cbox in g.chunks_in(box):
            writer.write_chunk(cbox, reader.read_box(cbox))  # widened to the new data type
        return sum(1 for _ in g.chunks_in(box))
    for positions in shards:
        boxes = [g.chunk_box(tuple(pos)) for pos in positions]
        writer.write_shard(boxes, reader.read_box)  # chunk by chunk
    return sum(len(positions) for positions in shards)


def _shard_members(store: ScaleStore) -> list[list[list[int]]]:
    """The grid positions of the chunks of each shard of a sharded scale (shards in order)."""
    gx, gy, gz = store.grid.shape
    z, y, x = np.mgrid[0:gz, 0:gy, 0:gx]
    positions = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    owner = shard_of(store.spec, compressed_morton_codes(positions, store.grid.shape))
    return [positions[owner == shard].tolist() for shard in np.unique(owner)]


def reencode(
    src: Path,
    dst: Path,
    encoding: str,
    options: dict,
    gzipped: bool = False,
    processes: int = 1,
    voxels_per_task: int = 2**25,
    shard: str | None = None,
) -> None:
    """Write ``src`` re-encoded to ``dst`` (sharded with hash ``shard`` when given);
    ``info`` (and ``transform.json``) last."""
    src, dst = Path(src), Path(dst)
    info = read_info(src)
    new = target_info(info, encoding, options, str(src), shard, gzipped)
    tasks = []
    for index, s in enumerate(info["scales"]):
        grid = Grid(tuple(s["size"]), tuple(s["chunk_sizes"][0]))
        if shard:  # the shard map is made once per scale, each task gets its shards' chunks
            members = _shard_members(ScaleStore.from_info(dst, new, index, options))
            sharding = new["scales"][index]["sharding"]
            voxels = np.prod(grid.chunk) << (sharding["preshift_bits"] + sharding["minishard_bits"])
            per = max(voxels_per_task // int(voxels), 1)
            for k in range(0, len(members), per):
                part = members[k : k + per]
                tasks.append((src, dst, info, new, index, (0, 0), part, options, gzipped))
            continue
        row = s["size"][0] * s["size"][1] * grid.chunk[2] * info["num_channels"]
        per = max(voxels_per_task // max(row, 1), 1)
        for z0 in range(0, grid.shape[2], per):
            z1 = min(z0 + per, grid.shape[2])
            tasks.append((src, dst, info, new, index, (z0, z1), None, options, gzipped))
    dst.mkdir(parents=True, exist_ok=True)
    if processes > 1:
        with ProcessPoolExecutor(processes) as pool:
            done = sum(pool.map(_task, tasks))
    else:
        done = sum(map(_task, tasks))
    log.info("%s: %d chunks re-encoded as %s", dst, done, encoding)
    if (src / "transform.json").exists():
        shutil.copyfile(src / "transform.json", dst / "transform.json")
    write_info(dst, new)
