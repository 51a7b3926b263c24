"""What a dataset will be, decided from the source header alone (no voxel is read): its
``Plan``, made of the settings (``settings``), the data-type and encoding rules (``datatypes``),
the pyramid's scales, stages and slabs (``geometry``) and, for sharded datasets, each scale's
sharding (``sharding``). Small volumes are one job; big ones fan out over y and z.
"""

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .chunks import Box, clip, voxels
from .datatypes import codec_options, default_encoding, fit_encoding, output_data_type
from .errors import InputError, naming
from .geometry import Scale, Stage, block_at, pyramid, stages
from .settings import Options, source_options
from .sharding import shard_exponent, sharding_info
from .sources import open_source
from .sources.volume import VolumeSource
from .store import write_atomic

MESH_DIR = "mesh"  # a segmentation's meshes, named in its info
NAMES_DIR = "names"  # its segment properties


@dataclass
class Plan:
    dataset: str
    source: str
    type: str
    data_type: str
    num_channels: int
    source_dtype: str
    scaled: bool
    encoding: str
    encoding_options: dict  # keyword arguments of the codec's encode
    gzip: bool
    rescale: tuple[float, float] | None
    transform: list[list[float]]
    scales: list[Scale]
    stages: list[Stage] = field(default_factory=list)
    gzip_index: bool = False
    decompress: bool = False  # stage 0 reads the source decompressed once (sharded, .gz)
    gzip_source: bool = False  # a gzip-compressed volume file (an index or one decompression)
    sharded: bool = False
    meshes: bool = False  # the info names a mesh folder
    names: bool = False  # the info names a segment properties folder
    source_options: dict = field(default_factory=dict)  # open_source's, for slice stacks
    # scale 0 holds the source's values themselves (float32 rounding at most): no data_type
    # was asked for and no input range; what the scale-0 jobs check
    exact: bool = True

    def factor_between(self, fine: int, coarse: int) -> tuple[int, int, int]:
        """Downsampling factor per axis from scale ``fine`` to scale ``coarse``."""
        f = np.ones(3, dtype=np.int64)
        for s in self.scales[fine + 1 : coarse + 1]:
            f *= s.factor
        return tuple(int(v) for v in f)

    def box_at(self, box: Box, coarse: int, fine: int) -> Box:
        """The box of scale ``fine`` that covers ``box`` of scale ``coarse``."""
        f = self.factor_between(fine, coarse)
        return clip(
            tuple((lo * k, hi * k) for (lo, hi), k in zip(box, f, strict=True)),
            self.scales[fine].size,
        )

    def slab(self, stage_index: int, slab_index: int) -> Box:
        """The box of slab ``slab_index`` of a stage, in voxels of the stage's last scale."""
        stage = self.stages[stage_index]
        position = np.unravel_index(slab_index, stage.grid, order="F")
        scale = self.scales[stage.last]
        return clip(
            tuple(
                (int(p) * n * c, (int(p) + 1) * n * c)
                for p, n, c in zip(position, stage.per_slab, scale.chunk, strict=True)
            ),
            scale.size,
        )

    def slabs_over(self, stage_index: int, box: Box) -> list[int]:
        """Slabs of a stage that overlap ``box`` (voxels of the stage's last scale)."""
        stage = self.stages[stage_index]
        chunk = self.scales[stage.last].chunk
        ranges = [
            range(lo // (n * c), -(-hi // (n * c)))
            for (lo, hi), n, c in zip(box, stage.per_slab, chunk, strict=True)
        ]
        return sorted(
            int(np.ravel_multi_index((i, j, k), stage.grid, order="F"))
            for i in ranges[0]
            for j in ranges[1]
            for k in ranges[2]
        )

    def input_box(self, stage_index: int, slab_index: int) -> Box:
        """What a slab reads: a box of the source (stage 0) or of the scale above the stage."""
        stage = self.stages[stage_index]
        return self.box_at(self.slab(stage_index, slab_index), stage.last, max(stage.first - 1, 0))

    def needs(self, stage_index: int, slab_index: int) -> list[int]:
        """Slabs of the previous stage that a slab reads from."""
        if stage_index == 0:
            return []
        return self.slabs_over(stage_index - 1, self.input_box(stage_index, slab_index))

    @property
    def jobs(self) -> int:
        return sum(s.count for s in self.stages)

    def info(self) -> dict:
        """The volume ``info`` JSON that readers open."""
        scales = []
        for s in self.scales:
            scales.append(
                {
                    "key": s.key,
                    "size": list(s.size),
                    "resolution": list(s.resolution),
                    "voxel_offset": [0, 0, 0],
                    "chunk_sizes": [list(s.chunk)],
                    "encoding": self.encoding,
                    **self.encoding_info,
                    **({"sharding": s.sharding} if s.sharding else {}),
                }
            )
        return {
            "@type": "neuroglancer_multiscale_volume",
            "type": self.type,
            "data_type": self.data_type,
            "num_channels": self.num_channels,
            "scales": scales,
            **({"mesh": MESH_DIR} if self.meshes else {}),
            **({"segment_properties": NAMES_DIR} if self.names else {}),
        }

    @property
    def raw_copies(self) -> bool:
        """Does a stage read the scale above from raw copies rather than from the dataset?
        Lossy chunks are never read back to make a coarser scale."""
        return self.encoding == "jpeg"

    @property
    def encoding_info(self) -> dict:
        """Per-scale info keys of the encoding (readers need the block size)."""
        if self.encoding == "compressed_segmentation":
            return {"compressed_segmentation_block_size": list(self.encoding_options["block_size"])}
        if self.encoding == "jpeg":
            return {"jpeg_quality": self.encoding_options["quality"]}  # a hint readers ignore
        return {}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        d = json.loads(text)
        d["scales"] = [Scale(**{k: _tuple(v) for k, v in s.items()}) for s in d["scales"]]
        d["stages"] = [Stage(**{k: _tuple(v) for k, v in s.items()}) for s in d["stages"]]
        d["rescale"] = tuple(d["rescale"]) if d["rescale"] else None
        d["encoding_options"] = {k: _tuple(v) for k, v in d["encoding_options"].items()}
        d["source_options"] = {k: _tuple(v) for k, v in d.get("source_options", {}).items()}
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        return cls.from_json(Path(path).read_text())

    def save(self, path: str | Path) -> None:
        """The plan as JSON, written atomically (the plan checkpoint's output)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path), self.to_json().encode())


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def _with_sharding(plan: Plan) -> None:
    """Each scale's sharding parameters, from the slabs that write it."""
    for stage in plan.stages:
        for j in range(stage.first, stage.last + 1):
            grid = plan.scales[j].grid.shape
            block = block_at(plan, stage.per_slab, stage.last, j)
            info = sharding_info(grid, shard_exponent(block, grid), gzipped=plan.gzip)
            plan.scales[j] = replace(plan.scales[j], sharding=info)


def neuroglancer_transform(affine: np.ndarray, unit_nm: float, resolution) -> list[list[float]]:
    """``transform.json``: model space (voxel corners, nm) to the affine's space (nm).

    NIfTI affines address voxel centres, Neuroglancer voxel corners: the translation is shifted
    by half a voxel (the neuroglancer-scripts and siibra convention).
    """
    a = np.asarray(affine, dtype=float)
    zooms = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    t = np.eye(4)
    t[:3, :3] = a[:3, :3] / zooms
    t[:3, 3] = a[:3, 3] * unit_nm - t[:3, :3] @ (0.5 * np.asarray(resolution))
    return [[float(v) for v in row] for row in t]


def plan_dataset(dataset: str, spec, opts: Options) -> Plan:
    """A dataset's plan from its source's header and its row's settings (no voxel is read)."""
    with naming(dataset):
        return make_plan(dataset, open_source(spec, **source_options(opts)), opts)


def make_plan(dataset: str, source, opts: Options) -> Plan:
    """The whole plan of one dataset from its source's header (no voxel is read)."""
    where = f"dataset {dataset}: {getattr(source, 'spec', source.path)}"
    if opts.type == "segmentation" and source.shape[3] > 1:
        raise InputError(
            f"{where}: a segmentation must be 3D (this one has {source.shape[3]} volumes)"
        )
    data_type = output_data_type(source.source_dtype, source.scaled, opts, where)
    encoding = opts.encoding or default_encoding(opts.type)
    data_type = fit_encoding(encoding, data_type, source.shape[3], opts, where)
    options = codec_options(encoding, opts.jpeg_quality, opts.block_size)
    rescale = None
    if opts.input_min is not None or opts.input_max is not None:
        if opts.input_min is None or opts.input_max is None or opts.input_max <= opts.input_min:
            raise InputError(f"{where}: input_min and input_max must both be set, min < max")
        rescale = (opts.input_min, opts.input_max)
    resolution = source.voxel_size_nm
    plan = Plan(
        dataset=dataset,
        source=str(getattr(source, "spec", source.path)),
        type=opts.type,
        data_type=data_type,
        num_channels=source.shape[3],
        source_dtype=source.source_dtype.str,
        scaled=source.scaled,
        encoding=encoding,
        encoding_options=options,
        gzip=opts.gzip,
        rescale=rescale,
        transform=neuroglancer_transform(source.affine, source.unit_nm, resolution),
        scales=pyramid(source.shape[:3], resolution, opts),
        exact=opts.data_type is None and rescale is None,
    )
    plan.sharded = opts.sharded
    if opts.type != "segmentation" and (opts.labels or opts.meshes):
        raise InputError(f"{where}: labels and meshes are for segmentations")
    plan.meshes, plan.names = bool(opts.meshes), bool(opts.labels)
    plan.stages = stages(plan, opts.voxels_per_job)
    if plan.sharded:
        _with_sharding(plan)
    gzipped = isinstance(source, VolumeSource) and source.seekable_gzip
    plan.gzip_source = gzipped
    # row slabs seek in a .gz (an index); cube slabs (sharded) would each decompress whole
    # sections of their z range: the file is decompressed once instead
    plan.decompress = gzipped and plan.sharded and plan.stages[0].count > 1
    plan.gzip_index = gzipped and not plan.decompress and plan.stages[0].count > 2
    plan.source_options = source_options(opts)
    return plan


def chunk_counts(plan: Plan) -> list[dict]:
    """Per scale: chunks, files and uncompressed bytes (``ngprecomputed stats``)."""
    itemsize = np.dtype(plan.data_type).itemsize * plan.num_channels
    return [
        {
            "key": s.key,
            "size": list(s.size),
            "chunk": list(s.chunk),
            "chunks": s.grid.count,
            "files": _shard_count(plan, s) if s.sharding else s.grid.count,
            "bytes": voxels(tuple((0, n) for n in s.size)) * itemsize,
        }
        for s in plan.scales
    ]


def _shard_count(plan: Plan, scale: Scale) -> int:
    """Shards of a scale: one per slab of the stage that writes it."""
    return next(st.count for st in plan.stages if st.first <= plan.scales.index(scale) <= st.last)
