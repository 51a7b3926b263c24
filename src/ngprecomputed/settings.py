"""A dataset's settings: a sample-sheet row (or ``convert``'s options) merged with the
config defaults, handed to every job as this object.

Defaults live in one place, the workflow's schemas: a sheet column's in samples.schema.json,
the workflow-wide ``gzip``, ``chunk_voxels`` and ``voxels_per_job`` in config.schema.json (an
empty cell takes the config's value)."""

import functools
import json
from dataclasses import asdict, dataclass

from .schemas import schema_defaults

SHEET_DEFAULTS = ("type", "jpeg_quality", "block_size", "sharded")
CONFIG_DEFAULTS = ("gzip", "chunk_voxels", "voxels_per_job")


def edges(text: str | None) -> tuple[int, int, int] | None:
    """``"64"`` or ``"128,128,16"`` (a sheet cell) as x, y, z."""
    if not text:
        return None
    values = tuple(int(v) for v in str(text).split(","))
    return values * 3 if len(values) == 1 else values


@functools.cache
def option_defaults() -> dict:
    """What an unset (None) setting of ``Options`` becomes, from the schemas."""
    sheet, config = schema_defaults("samples"), schema_defaults("config")
    values = {key: sheet[key] for key in SHEET_DEFAULTS}
    values["block_size"] = edges(values["block_size"])
    return values | {key: config[key] for key in CONFIG_DEFAULTS}


@dataclass(frozen=True)
class Options:
    """Per-dataset settings: a sample-sheet row merged with the config defaults. A setting
    left None takes the schemas' default (``option_defaults``)."""

    type: str | None = None
    data_type: str | None = None
    chunk_size: tuple[int, int, int] | None = None
    max_scales: int | None = None
    input_min: float | None = None
    input_max: float | None = None
    encoding: str | None = None  # None: the default for the type (see ``choose_encoding``)
    jpeg_quality: int | None = None
    block_size: tuple[int, int, int] | None = None  # compressed_segmentation
    gzip: bool | None = None
    sharded: bool | None = None  # neuroglancer_uint64_sharded_v1, one shard per slab block
    labels: str | None = None  # segmentations: a label table, for segment names and colours
    meshes: str | None = None  # segmentations: "generate", "multilod", or a mesh side table
    voxel_size: tuple[float, float, float] | None = None  # slice stacks, mm
    orientation: str | None = None  # slice stacks: column, row, slice directions
    segmentation: str | None = None  # annotations: a segmentation dataset of the same sheet
    chunk_voxels: int | None = None
    voxels_per_job: int | None = None

    def __post_init__(self):
        for key, value in option_defaults().items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

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
