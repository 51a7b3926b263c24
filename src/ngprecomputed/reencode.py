"""Re-encode an existing precomputed dataset (ours or anyone's) into another encoding.

Same scales, same chunks, chunk by chunk; work is spread over processes by chunk rows, and the
new ``info`` is written last. A lossy source stays as lossy as it was: re-encoding cannot
restore what jpeg removed.
"""

import json
import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .chunks import Grid
from .errors import InputError
from .plan import Options, fit_encoding
from .store import ScaleStore, write_atomic

log = logging.getLogger(__name__)


def read_info(src: Path) -> dict:
    try:
        return json.loads((Path(src) / "info").read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{src}: not a precomputed dataset (no readable info: {e})") from None


def target_info(info: dict, encoding: str, options: dict, where: str = "") -> dict:
    """``info`` with every scale in ``encoding`` (the same rules as a conversion: labels
    promoted for compressed_segmentation, jpeg and png only for what they can hold)."""
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
    return new


def _store(root: Path, info: dict, index: int, options: dict, gzipped: bool = False):
    s = info["scales"][index]
    block = s.get("compressed_segmentation_block_size")
    opts = {"block_size": tuple(block)} if block else options
    return ScaleStore(
        root,
        s["key"],
        Grid(tuple(s["size"]), tuple(s["chunk_sizes"][0])),
        info["data_type"],
        info["num_channels"],
        s["encoding"],
        opts,
        gzipped,
        tuple(s.get("voxel_offset", (0, 0, 0))),
    )


def _rows(args) -> int:
    """Re-encode chunk rows ``z0..z1`` (in chunks) of one scale; returns the chunks written."""
    src, dst, info, new, index, z0, z1, options, gzipped = args
    reader = _store(src, info, index, {})
    writer = _store(dst, new, index, options, gzipped)
    g = reader.grid
    box = ((0, g.size[0]), (0, g.size[1]), (z0 * g.chunk[2], min(z1 * g.chunk[2], g.size[2])))
    count = 0
    writer.dir.mkdir(parents=True, exist_ok=True)
    for _, cbox in g.chunks_in(box):
        chunk = reader.read_box(cbox)  # widened to the new data type as it is written
        writer.write_chunk(cbox, chunk)
        count += 1
    return count


def reencode(
    src: Path,
    dst: Path,
    encoding: str,
    options: dict,
    gzipped: bool = False,
    processes: int = 1,
    voxels_per_task: int = 2**25,
) -> None:
    """Write ``src`` re-encoded to ``dst``; ``info`` (and ``transform.json``) last."""
    src, dst = Path(src), Path(dst)
    info = read_info(src)
    new = target_info(info, encoding, options, str(src))
    tasks = []
    for index, s in enumerate(info["scales"]):
        if "sharding" in s:
            raise InputError(f"{src}: scale {s['key']} is sharded; not supported yet")
        grid = Grid(tuple(s["size"]), tuple(s["chunk_sizes"][0]))
        row = s["size"][0] * s["size"][1] * grid.chunk[2] * info["num_channels"]
        per = max(voxels_per_task // max(row, 1), 1)
        for z0 in range(0, grid.shape[2], per):
            z1 = min(z0 + per, grid.shape[2])
            tasks.append((src, dst, info, new, index, z0, z1, options, gzipped))
    dst.mkdir(parents=True, exist_ok=True)
    if processes > 1:
        with ProcessPoolExecutor(processes) as pool:
            done = sum(pool.map(_rows, tasks))
    else:
        done = sum(map(_rows, tasks))
    log.info("%s: %d chunks re-encoded as %s", dst, done, encoding)
    if (src / "transform.json").exists():
        shutil.copyfile(src / "transform.json", dst / "transform.json")
    write_atomic(dst / "info", json.dumps(new, indent=1).encode())
