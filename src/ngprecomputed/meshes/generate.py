"""Meshes generated from a segmentation: a closed, smooth surface for every label present, by
marching cubes (zmesh), smoothing and simplification (VTK, ``smooth.py``), region by region so
that a job holds one region of labels.

Geometry. Marching cubes joins voxel centres: cube ``j`` (along each axis) joins the centres of
voxels ``j - 1`` and ``j``, so it spans ``[j - 0.5, j + 0.5]`` in voxel units of the volume's
model space (voxel ``i`` covers ``[i, i + 1)``, as in Neuroglancer). The volume is padded with one
voxel of background on every side: ``n + 1`` cubes per axis of ``n`` voxels, and every surface is
closed, also where a label touches the volume's border (its cap lies on the border). Regions tile
the cubes. A region of cubes ``[a, b)`` reads voxels ``[a - 1, b)``, one voxel of overlap with
the region before it, so that neighbouring fragments meet on a shared plane of voxel centres.
Neither smoothing nor simplification moves a vertex on that plane, so those fragments share
their seam vertices exactly and their union is watertight.

Why this pipeline (numbers: ``benchmarks/meshes.md``). Marching-cubes surfaces are terraced: on
AAL, a quarter of the pairs of adjacent triangles of zmesh's simplified meshes are coplanar and
half meet at 30 to 60 degrees. Users expect what mesh-n-bone (Taubin smoothing, then decimation) or
3D Slicer (windowed-sinc smoothing) show. Here: marching cubes unsimplified; every label of the
block smoothed together by VTK's windowed-sinc filter (one vertex where two labels meet, so
neighbours keep sharing their boundary; smoothed one by one, AAL's neighbours came apart by a
quarter of a voxel on average and 1.5 voxels at most), each vertex kept within ``smooth.MAX_SHIFT``
of the voxel boundary marching cubes put it on; then each label simplified by ``vtkDecimatePro``,
which deletes vertices without moving any, keeps the topology and the open boundary, within
``MAX_ERROR`` times the smallest voxel edge (level of detail ``k`` of a multi-resolution mesh:
``2**k`` times that). zmesh's own simplifier cannot follow smoothing (it rounds vertices to the
half-voxel lattice), nor can VTK's quadric decimation (it moves the open boundary, which would
crack the seams). ``vtkSurfaceNets3D`` smooths all labels at once with shared faces, but its
constrained smoother has no fixed vertices, so region seams would not meet, and without decimation
its meshes are three times as large. The price: marching cubes, smoothing and decimation take two
to three times zmesh's time alone, and hold every label's unsimplified surface at once (three times
the memory); a piece is simplified less where more would flatten it onto its block's face or take a
quarter of its volume, so a multi-resolution mesh has 5 to 17% more triangles per level than
before; a seam's vertices keep their marching-cubes places, so a faint terraced line shows where
two regions (or, in a multi-resolution mesh, two blocks) meet.

Multi-resolution meshes: a region is one node of the coarsest lod (``LODS - 1``), cut into
``CELLS`` lod-0 nodes per axis. The mesh of a lod-``k`` node (``k > 0``) is the union of its 2x2x2
children's blocks, each meshed, smoothed and simplified on its own, so that no triangle crosses
the split the viewer draws them at. Every node of a region is made by the region's job.

Jobs: ``mesh_region`` writes one region's fragments (legacy: straight into the dataset's mesh
folder as ``<label>_<region>``; multi-resolution: Draco fragments into a file beside the job's
record) and records them; ``write_meshes`` then writes every segment's manifest and ``mesh/info``.
"""

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmesh

from .. import crash
from ..chunks import Box
from ..errors import InputError
from ..plan import MESH_DIR, NAMES_DIR, Plan
from ..sources import open_source
from ..store import atomic_file, write_atomic, write_manifest
from ..values import to_stored
from . import multilod
from .legacy import fragment_bytes, manifest_name, write_mesh_info
from .mesh import Mesh

log = logging.getLogger(__name__)

LODS = 3  # levels of detail of a multi-resolution mesh
CELLS = 2 ** (LODS - 1)  # lod-0 nodes per region edge
MAX_ERROR = 0.5  # in smallest voxel edges, at lod 0 (and for legacy meshes)
FORMATS = {"generate": "legacy", "multilod": "multilod"}


@dataclass(frozen=True)
class Regions:
    """The cubes of a volume of ``size`` voxels cut into regions of ``edge`` cubes per axis
    (a multiple of ``CELLS``), numbered x fastest."""

    size: tuple[int, int, int]
    edge: tuple[int, int, int]

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(-(-(n + 1) // e) for n, e in zip(self.size, self.edge, strict=True))

    @property
    def count(self) -> int:
        return int(np.prod(self.grid))

    @property
    def chunk(self) -> tuple[int, int, int]:
        """Cubes per edge of a lod-0 node of a multi-resolution mesh."""
        return tuple(e // CELLS for e in self.edge)

    @property
    def read_voxels(self) -> int:
        """Voxels one region holds (with its overlap and padding)."""
        return int(np.prod([e + 1 for e in self.edge]))

    def cubes(self, index: int) -> Box:
        if not 0 <= index < self.count:
            raise ValueError(f"region {index} of {self.count}")
        position = np.unravel_index(index, self.grid, order="F")
        return tuple(
            (int(p) * e, (int(p) + 1) * e) for p, e in zip(position, self.edge, strict=True)
        )


def plan_regions(size, budget: int) -> Regions:
    """Regions that read at most ``budget`` voxels each: the whole volume if it fits, else the
    longest axis halved until they do (region edges stay multiples of ``CELLS``)."""
    edge = [_round_up(int(n) + 1, CELLS) for n in size]
    while np.prod([e + 1 for e in edge]) > budget:
        axis = int(np.argmax(edge))
        if edge[axis] <= CELLS:
            raise InputError(
                f"mesh_region_voxels {budget} is too small: a region needs "
                f"{(CELLS + 1) ** 3} voxels at least"
            )
        edge[axis] = _round_up(-(-edge[axis] // 2), CELLS)
    return Regions(tuple(int(n) for n in size), tuple(edge))


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def region_labels(source, plan: Plan, cubes: Box) -> np.ndarray:
    """The voxels under cubes ``[a, b)``: voxels ``[a - 1, b)``, background outside the volume."""
    size = plan.scales[0].size
    shape = tuple(hi - lo + 1 for lo, hi in cubes)
    inside = tuple((max(lo - 1, 0), min(hi, n)) for (lo, hi), n in zip(cubes, size, strict=True))
    read = to_stored(source.read(inside), plan)[..., 0]
    out = np.zeros(shape, read.dtype, order="F")
    at = tuple(
        slice(i0 - (lo - 1), i1 - (lo - 1)) for (i0, i1), (lo, _) in zip(inside, cubes, strict=True)
    )
    out[at] = read
    return out


def surfaces(labels: np.ndarray, corner, resolution, max_error: float) -> dict[int, Mesh]:
    """Every label's smoothed, simplified surface in ``labels`` (whose first voxel is voxel
    ``corner`` of the volume), in voxel units of the volume's model space. ``max_error`` is in
    smallest voxel edges; open boundaries (the block's faces) are kept as they are."""
    if labels.min() == labels.max():
        return {}  # one value: no surface
    from .smooth import smooth_and_simplify  # VTK: only in mesh jobs

    unit = np.asarray(resolution, np.float64) / min(resolution)  # zmesh works in these units
    mesher = zmesh.Mesher(tuple(unit))
    mesher.mesh(labels)
    found = {}
    for label in mesher.ids():
        if label != 0:
            m = mesher.get(label, reduction_factor=0, voxel_centered=True)  # marching cubes
            found[int(label)] = (m.vertices.astype(np.float64), m.faces)
    return {
        label: Mesh(_snapped(v / unit + corner), f)
        for label, (v, f) in smooth_and_simplify(found, labels.shape, unit, max_error).items()
        if len(f)
    }


def _snapped(v: np.ndarray) -> np.ndarray:
    """Coordinates within 1e-4 voxel of a half voxel put on it: seam vertices computed in two
    regions (from different offsets) become the same float."""
    half = np.round(v * 2) / 2
    return np.where(np.abs(v - half) < 1e-4, half, v)


def mesh_region(
    plan: Plan,
    regions: Regions,
    index: int,
    root: Path,
    record: Path,
    multi_resolution: bool,
    gzip_index: Path | None = None,
) -> dict:
    """Mesh region ``index``; write its fragments, then its record (the job's output)."""
    cubes = regions.cubes(index)
    source = open_source(plan.source, gzip_index, **plan.source_options)
    log.info("%s: meshing region %d of %d, cubes %s", plan.dataset, index, regions.count, cubes)
    labels = region_labels(source, plan, cubes)
    corner = np.array([lo - 1 for lo, _ in cubes])
    resolution = plan.scales[0].resolution
    if multi_resolution:
        entries = _region_nodes(labels, corner, cubes, regions, resolution, record)
        content = {"region": index, "format": "multilod", "fragments": entries}
    else:
        mesh_dir = Path(root) / MESH_DIR
        mesh_dir.mkdir(parents=True, exist_ok=True)
        fragments = {}
        for label, mesh in surfaces(labels, corner, resolution, MAX_ERROR).items():
            name = f"{label}_{index}"
            nm = Mesh(mesh.vertices.astype(np.float64) * resolution, mesh.faces)
            write_atomic(mesh_dir / name, fragment_bytes(nm))
            crash.point("fragment")
            fragments[str(label)] = name
        content = {"region": index, "format": "legacy", "fragments": fragments}
    write_manifest(record, content)
    return content


def _region_nodes(labels, corner, cubes: Box, regions: Regions, resolution, record: Path):
    """Every octree node of the region, at every lod, Draco-encoded into ``record``'s ``.bin``
    file; one entry ``[label, lod, x, y, z, offset, size]`` per node."""
    chunk = np.array(regions.chunk)
    first = np.array([lo for lo, _ in cubes])
    entries, offset = [], 0
    data = record.with_suffix(".bin")
    data.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(data) as out:
        for lod in range(LODS):
            node = chunk * 2**lod
            block = chunk * 2 ** max(lod - 1, 0)  # meshed on its own: a lod-0 node, or a child
            pieces: dict[tuple, list[Mesh]] = defaultdict(list)
            for b in np.ndindex(*(np.array(regions.edge) // block)):
                lo = np.array(b) * block
                view = labels[tuple(slice(s, s + n + 1) for s, n in zip(lo, block, strict=True))]
                found = surfaces(view, corner + lo, resolution, MAX_ERROR * 2**lod)
                position = tuple(int(p) for p in (first + lo) // node)
                for label, mesh in found.items():
                    pieces[(label, position)].append(mesh)
            for (label, position), meshes in sorted(pieces.items()):
                origin = -0.5 + np.array(position) * node  # cube 0 starts half a voxel out
                encoded = multilod.encode_fragment(_joined(meshes), origin, node)
                out.write(encoded)
                crash.point("fragment")
                entries.append([label, lod, *position, offset, len(encoded)])
                offset += len(encoded)
    return entries


def _joined(meshes: list[Mesh]) -> Mesh:
    if len(meshes) == 1:
        return meshes[0]
    starts = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.faces + np.uint32(s) for m, s in zip(meshes, starts, strict=True)]),
    )


def write_meshes(
    plan: Plan, regions: Regions, records: Path, root: Path, colon: bool, multi_resolution: bool
) -> dict[int, int]:
    """Every segment's manifest from the regions' records, then ``mesh/info``; the number of
    fragments per segment."""
    mesh_dir = Path(root) / MESH_DIR
    mesh_dir.mkdir(parents=True, exist_ok=True)
    properties = f"../{NAMES_DIR}" if plan.names else None
    read = [
        json.loads((Path(records) / f"region{i}.json").read_text()) for i in range(regions.count)
    ]
    if multi_resolution:
        counts = _write_multilod(read, regions, Path(records), mesh_dir)
        multilod.write_info(mesh_dir, plan.scales[0].resolution, segment_properties=properties)
    else:
        by_label: dict[int, list[str]] = defaultdict(list)
        for r in read:
            for label, name in r["fragments"].items():
                by_label[int(label)].append(name)
        for label, names in sorted(by_label.items()):
            path = mesh_dir / manifest_name(label, colon=colon)
            write_atomic(path, json.dumps({"fragments": names}).encode())
        counts = {label: len(names) for label, names in by_label.items()}
        write_mesh_info(mesh_dir, segment_properties=properties)
    return counts


def _write_multilod(read: list[dict], regions: Regions, records: Path, mesh_dir: Path):
    """Each segment's data file (its nodes copied from the regions' files, lod by lod in
    Z-curve order), then its ``.index``."""
    nodes: dict[int, list] = defaultdict(list)
    for r in read:
        for label, lod, x, y, z, offset, size in r["fragments"]:
            nodes[label].append((lod, (x, y, z), r["region"], offset, size))
    scales = [float(2**lod) for lod in range(LODS)]  # detail of each lod, in voxels
    for label, items in sorted(nodes.items()):
        codes = multilod.morton(np.array([p for _, p, *_ in items]))
        items = [items[i] for i in np.lexsort((codes, [lod for lod, *_ in items]))]
        data = mesh_dir / str(label)
        with atomic_file(data) as out:
            for _, _, region, offset, size in items:
                with open(records / f"region{region}.bin", "rb") as f:
                    f.seek(offset)
                    out.write(f.read(size))
        fragments = [[(p, size) for lod, p, _, _, size in items if lod == k] for k in range(LODS)]
        index = multilod.manifest_bytes(regions.chunk, (-0.5,) * 3, scales, fragments)
        write_atomic(mesh_dir / f"{label}.index", index)
    return {label: len(items) for label, items in nodes.items()}


# What a job asks the scheduler for. Measured on this project's 2-core machine, one region job
# (``mesh_region`` called directly): AAL3 (7.6 M uint8 voxels, one region) peaked at 396 MiB
# (legacy; 167 multi-resolution), about 40 bytes per voxel besides the interpreter: every label's
# unsimplified surface, smoothed together, held at once; AAL3 x2 (15 M voxels, a quarter of it
# per region) at 412 MiB. Both meshed 1.2 M voxels per second; three levels of detail are three
# times the work. Before smoothing (zmesh alone): 121 MiB and 1.5 M voxels per second.
_BASELINE_MB = 200  # Python, numpy, nibabel, zmesh, VTK
_MESH_BYTES_PER_VOXEL = 32  # of dense atlas surfaces (AAL3 at 1 mm), the 1.2 margin below added
_VOXELS_PER_S = 5e5  # with room for a busy node
_MIN_RUNTIME_MIN = 10


def region_mem_mb(plan: Plan, regions: Regions, attempt: int = 1) -> int:
    """Peak memory of one region job: the region as read, as stored, padded, and its meshes."""
    n = regions.read_voxels
    read = 8 if plan.scaled else np.dtype(plan.source_dtype).itemsize
    stored = np.dtype(plan.data_type).itemsize
    peak = n * (read + 2 * stored + _MESH_BYTES_PER_VOXEL)
    return int((_BASELINE_MB + peak / 2**20 * 1.2) * (1 + 0.5 * (attempt - 1)))


def region_runtime_min(regions: Regions, multi_resolution: bool, attempt: int = 1) -> int:
    work = regions.read_voxels * (LODS if multi_resolution else 1)
    minutes = _MIN_RUNTIME_MIN + int(np.ceil(work / _VOXELS_PER_S / 60))
    return minutes * 2 ** (attempt - 1)
