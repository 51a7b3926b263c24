"""A dataset's settings: a sample-sheet row (or ``convert``'s options) merged with the
config defaults, handed to every job as this object."""

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Options:
    """Per-dataset settings: a sample-sheet row merged with the config defaults."""

    type: str = "image"
    data_type: str | None = None
    chunk_size: tuple[int, int, int] | None = None
    max_scales: int | None = None
    input_min: float | None = None
    input_max: float | None = None
    encoding: str | None = None  # None: the default for the type (see ``choose_encoding``)
    jpeg_quality: int = 90
    block_size: tuple[int, int, int] = (8, 8, 8)  # compressed_segmentation
    gzip: bool = False
    sharded: bool = False  # neuroglancer_uint64_sharded_v1, one shard per slab and scale
    labels: str | None = None  # segmentations: a label table, for segment names and colours
    meshes: str | None = None  # segmentations: "generate", "multilod", or a mesh side table
    voxel_size: tuple[float, float, float] | None = None  # slice stacks, mm
    orientation: str | None = None  # slice stacks: column, row, slice directions
    segmentation: str | None = None  # annotations: a segmentation dataset of the same sheet
    chunk_voxels: int = 64**3
    voxels_per_job: int = 2**27

    def to_json(self) -> str:
        """As the command line takes them (``--options``)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Options":
        d = json.loads(text) if text else {}
        for key in ("chunk_size", "block_size", "voxel_size"):
            if d.get(key):
                d[key] = tuple(d[key])
        return cls(**d)


def source_options(opts: Options) -> dict:
    """What ``open_source`` needs beyond the path (slice stacks only)."""
    if opts.voxel_size is None and opts.orientation is None:
        return {}
    return {"voxel_size": opts.voxel_size, "orientation": opts.orientation}
