"""What a dataset will be, decided from the source header alone: data type, scales, stages, slabs.

The pyramid is anisotropy-aware (the finest axes are halved first, until near-isotropic, then all),
with chunks of about ``chunk_voxels`` shaped to each scale's voxel size, down to a scale that fits
in one chunk.

Work is cut into *stages* and *slabs*. A stage makes a run of scales ``first..last`` from the scale
above it (stage 0 from the source). A slab is a chunk-aligned box of the stage's coarsest scale;
one job reads the matching box of its input (at most ``voxels_per_job`` voxels) once and writes
every scale of the stage for it. Small volumes are one job; big ones fan out over y and z.
"""

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .chunks import Box, Grid, clip, voxels
from .errors import InputError
from .sources.volume import VolumeSource

MESH_DIR = "mesh"  # a segmentation's meshes, named in its info
NAMES_DIR = "names"  # its segment properties
NG_DATA_TYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "float32")
LABEL_DATA_TYPES = ("uint8", "uint16", "uint32", "uint64")


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


@dataclass(frozen=True)
class Scale:
    key: str
    size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    chunk: tuple[int, int, int]
    factor: tuple[int, int, int]  # from the scale above; (1, 1, 1) for scale 0
    sharding: dict | None = None  # the info's "sharding" key of a sharded scale

    @property
    def grid(self) -> Grid:
        return Grid(self.size, self.chunk)


@dataclass(frozen=True)
class Stage:
    """Scales ``first..last`` made from scale ``first - 1`` (or the source for stage 0).

    Its slabs tile scale ``last`` as a regular grid: each holds ``per_slab`` chunks per axis
    (fewer at the far edges), numbered x fastest, then y, then z.
    """

    first: int
    last: int
    per_slab: tuple[int, int, int]
    grid: tuple[int, int, int]  # slabs per axis

    @property
    def count(self) -> int:
        return int(np.prod(self.grid))


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
        from .store import write_atomic

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path), self.to_json().encode())


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def output_data_type(source: np.dtype, scaled: bool, opts: Options, where: str) -> str:
    """The stored data type: the documented pass-through rules, or the sheet's override."""
    labels = opts.type == "segmentation"
    allowed = LABEL_DATA_TYPES if labels else NG_DATA_TYPES
    if opts.data_type:
        if opts.data_type not in allowed:
            raise InputError(f"{where}: data_type {opts.data_type} is not one of {allowed}")
        return opts.data_type
    src = np.dtype(source)
    if src.kind == "b":
        return "uint8"
    if labels:
        if src.kind == "u" and not scaled:
            return src.name
        return "uint64" if src.itemsize == 8 else "uint32"
    if scaled or src.kind == "f":
        return "float32"
    if src.name in NG_DATA_TYPES:
        return src.name
    raise InputError(f"{where}: {src.name} voxels have no precomputed data type; set data_type")


def source_options(opts: Options) -> dict:
    """What ``open_source`` needs beyond the path (slice stacks only)."""
    if opts.voxel_size is None and opts.orientation is None:
        return {}
    return {"voxel_size": opts.voxel_size, "orientation": opts.orientation}


def codec_options(encoding: str, jpeg_quality: int, block_size) -> dict:
    """The keyword arguments of the encoding's ``encode``."""
    if encoding == "jpeg":
        return {"quality": jpeg_quality}
    if encoding == "compressed_segmentation":
        return {"block_size": tuple(block_size)}
    return {}


def default_encoding(kind: str) -> str:
    """Labels: compressed_segmentation (lossless, many times smaller than raw, read by every
    reader). Images: raw (lossless, exact, readable from file:// and any static server)."""
    return "compressed_segmentation" if kind == "segmentation" else "raw"


def fit_encoding(encoding: str, data_type: str, channels: int, opts: Options, where: str) -> str:
    """The data type the encoding stores (labels are promoted for compressed_segmentation);
    an input error where the encoding cannot hold the data."""
    if encoding == "compressed_segmentation":
        if opts.type != "segmentation":
            raise InputError(f"{where}: compressed_segmentation is for segmentations")
        if opts.data_type and data_type not in ("uint32", "uint64"):
            raise InputError(
                f"{where}: compressed_segmentation stores uint32 or uint64 labels, "
                f"not data_type {data_type}"
            )
        return "uint64" if data_type == "uint64" else "uint32"
    if encoding == "jpeg":
        if opts.type == "segmentation":
            raise InputError(f"{where}: jpeg is lossy: never for a segmentation")
        if data_type != "uint8" or channels not in (1, 3):
            raise InputError(
                f"{where}: jpeg needs uint8 with 1 or 3 channels, not {data_type} "
                f"x{channels} (set data_type: uint8, with input_min/input_max)"
            )
    if encoding == "png":
        ok = (data_type == "uint8" and channels <= 4) or (data_type == "uint16" and channels == 1)
        if not ok:
            raise InputError(
                f"{where}: png holds uint8 with 1-4 channels or uint16 with 1, "
                f"not {data_type} x{channels}"
            )
    return data_type


def chunk_shape(resolution, size, target: int) -> tuple[int, int, int]:
    """Power-of-two chunk of about ``target`` voxels, balanced in physical extent.

    Doubles the axis with the smallest physical extent (x first on ties) until the chunk holds
    ``target`` voxels; an axis stops growing once it spans the whole volume.
    """
    chunk = [1, 1, 1]
    cap = [1 << max(int(n) - 1, 0).bit_length() for n in size]
    while np.prod(chunk) < target:
        growable = [a for a in range(3) if chunk[a] < cap[a]]
        if not growable:
            break
        a = min(growable, key=lambda a: (chunk[a] * resolution[a], a))
        chunk[a] *= 2
    return tuple(chunk)


def _scale_key(resolution) -> str:
    return "_".join(f"{r:.6f}".rstrip("0").rstrip(".") for r in resolution)


def pyramid(size, resolution, opts: Options) -> list[Scale]:
    """All scales, finest first."""

    def chunk_for(res, sz):
        return (
            tuple(opts.chunk_size) if opts.chunk_size else chunk_shape(res, sz, opts.chunk_voxels)
        )

    size = tuple(int(n) for n in size)
    resolution = tuple(float(r) for r in resolution)
    scales = [
        Scale(_scale_key(resolution), size, resolution, chunk_for(resolution, size), (1, 1, 1))
    ]
    while opts.max_scales is None or len(scales) < opts.max_scales:
        prev = scales[-1]
        if all(s <= c for s, c in zip(prev.size, prev.chunk, strict=True)):
            break
        finest = min(r for r, s in zip(prev.resolution, prev.size, strict=True) if s > 1)
        factor = tuple(
            2 if s > 1 and r < np.sqrt(2) * finest else 1
            for r, s in zip(prev.resolution, prev.size, strict=True)
        )
        size = tuple(-(-s // f) for s, f in zip(prev.size, factor, strict=True))
        res = tuple(r * f for r, f in zip(prev.resolution, factor, strict=True))
        scales.append(Scale(_scale_key(res), size, res, chunk_for(res, size), factor))
    return scales


def stages(plan: Plan, voxels_per_job: int) -> list[Stage]:
    """Cut the pyramid into stages and slabs (see the module docstring)."""
    out: list[Stage] = []
    n = len(plan.scales)
    ch = plan.num_channels
    first = 0
    while first < n:
        src = max(first - 1, 0)  # stage 0 reads the source, which has scale 0's geometry
        last = first
        while (
            last + 1 < n
            and _fits(plan, src, last + 1, voxels_per_job, ch)
            and _aligned(plan, first, last + 1)
            and (not plan.sharded or _shard_blocks(plan, first, last + 1, voxels_per_job, ch))
        ):
            last += 1
        if plan.sharded:
            per_slab = _cube_slab(plan, src, last, voxels_per_job, ch)
        else:
            per_slab = _per_slab(plan, src, last, voxels_per_job, ch)
        grid = tuple(
            -(-g // k) for g, k in zip(plan.scales[last].grid.shape, per_slab, strict=True)
        )
        out.append(Stage(first, last, per_slab, grid))
        first = last + 1
    return out


def _fits(plan: Plan, src: int, last: int, budget: int, ch: int) -> bool:
    """Does one row of chunks of scale ``last`` along x (one chunk in y and z) fit the budget
    at ``src``? Then slabs of such rows (split in y and z) make every scale down to ``last``
    from one read, instead of writing a scale and reading it back."""
    _, fy, fz = plan.factor_between(src, last)
    _, cy, cz = plan.scales[last].chunk
    sx, sy, sz = plan.scales[src].size
    return sx * min(cy * fy, sy) * min(cz * fz, sz) * ch <= budget


def _aligned(plan: Plan, first: int, last: int) -> bool:
    """Do slabs of scale ``last`` map onto whole chunks of every scale of the stage?"""
    cl = plan.scales[last].chunk
    for j in range(first, last + 1):
        f = plan.factor_between(j, last)
        cj = plan.scales[j].chunk
        if any((cl[a] * f[a]) % cj[a] for a in range(3)):
            return False
    return True


def _per_slab(plan: Plan, src: int, last: int, budget: int, ch: int) -> tuple[int, int, int]:
    """Chunks of scale ``last`` per slab: whole z rows when they fit, else split y, then x."""
    scale = plan.scales[last]
    f = plan.factor_between(src, last)
    # input voxels per chunk of scale ``last``
    per_chunk = int(np.prod([c * k for c, k in zip(scale.chunk, f, strict=True)])) * ch
    gx, gy, gz = scale.grid.shape
    room = max(budget // per_chunk, 1)  # chunks per slab
    if room >= gx * gy:
        return (gx, gy, min(max(room // (gx * gy), 1), gz))
    if room >= gx:
        return (gx, room // gx, 1)
    return (room, 1, 1)


def _cube_slab(plan: Plan, src: int, last: int, budget: int, ch: int) -> tuple[int, int, int]:
    """Sharded datasets: slabs are cubes of 2^m chunks of scale ``last`` (the largest whose
    input fits the budget; whole axes where the grid is smaller), so that a slab is exactly one
    shard of a compressed Morton layout at every scale of its stage."""
    scale = plan.scales[last]
    f = plan.factor_between(src, last)
    size = plan.scales[src].size
    grid = scale.grid.shape
    m = 0
    while (1 << m) < max(grid):
        side = 1 << (m + 1)
        box = [min(side * c * k, s) for c, k, s in zip(scale.chunk, f, size, strict=True)]
        if int(np.prod(box)) * ch > budget:
            break
        m += 1
    return tuple(min(1 << m, g) for g in grid)


def _shard_blocks(plan: Plan, first: int, last: int, budget: int, ch: int) -> bool:
    """Would cube slabs of scale ``last`` be whole shards at every scale ``first..last``?"""
    src = max(first - 1, 0)
    per_slab = _cube_slab(plan, src, last, budget, ch)
    return all(
        shard_exponent(_block_at(plan, per_slab, last, j), plan.scales[j].grid.shape) is not None
        for j in range(first, last + 1)
    )


def _block_at(plan: Plan, per_slab, last: int, j: int) -> tuple[int, ...]:
    """A slab of ``per_slab`` chunks of scale ``last``, in chunks of scale ``j`` (nominal)."""
    f = plan.factor_between(j, last)
    cl, cj = plan.scales[last].chunk, plan.scales[j].chunk
    return tuple(n * c * k // d for n, c, k, d in zip(per_slab, cl, f, cj, strict=True))


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


def sharding_info(block, grid, gzipped: bool = False) -> dict:
    """The scale's "sharding" info: identity hash, one shard per slab block, minishards of
    up to 2^9 chunks (a minishard index of ~12 KB), gzipped minishard indices; chunk data
    gzipped inside the shard when the dataset asks for gzip."""
    bits = [max(int(g) - 1, 0).bit_length() for g in grid]
    k = shard_exponent(block, grid)
    low = sum(min(k, nb) for nb in bits)
    preshift = min(low, 9)
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": preshift,
        "hash": "identity",
        "minishard_bits": low - preshift,
        "shard_bits": sum(bits) - low,
        "minishard_index_encoding": "gzip",
        "data_encoding": "gzip" if gzipped else "raw",
    }


def _with_sharding(plan: Plan) -> None:
    """Each scale's sharding parameters, from the slabs that write it."""
    for stage in plan.stages:
        for j in range(stage.first, stage.last + 1):
            grid = plan.scales[j].grid.shape
            block = _block_at(plan, stage.per_slab, stage.last, j)
            info = sharding_info(block, grid, plan.gzip)
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
    from .errors import naming
    from .sources import open_source

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
