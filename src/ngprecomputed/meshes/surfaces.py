"""Mesh files tied to segments of a segmentation dataset by a mesh table (one job per dataset).

The table is a CSV with a header: ``segment`` (the label id), ``path`` (a mesh file, relative to
the table's folder) and optionally ``transform`` (12 or 16 numbers separated by spaces: an affine
in millimetres applied to the mesh first). Several rows may name one segment: its fragments.
Every segment must be present in the volume, which is checked slab by slab (bounded memory).
"""

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..plan import MESH_DIR, NAMES_DIR, Plan
from ..sources import open_source
from ..values import to_stored
from .legacy import as_affine, to_model_space, write_mesh_info, write_segment
from .read import read_mesh


def read_mesh_table(path: Path) -> dict[int, list[tuple[Path, np.ndarray | None]]]:
    """Mesh files and their optional transforms, by segment id."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: not a readable mesh table ({e})") from None
    if not rows or not {"segment", "path"} <= set(rows[0]):
        raise InputError(f"{path}: a mesh table needs the columns segment and path")
    out: dict[int, list] = defaultdict(list)
    for n, row in enumerate(rows, start=1):
        where = f"{path}: row {n}"
        try:
            segment = int(row["segment"])
        except (TypeError, ValueError):
            raise InputError(f"{where}, column segment: {row['segment']!r} is not an id") from None
        if not 0 < segment < 2**64:
            raise InputError(f"{where}, column segment: {segment} is not a label id (1..2^64-1)")
        mesh = path.parent / (row["path"] or "").strip()
        if not mesh.is_file():
            raise InputError(f"{where}, column path: no such file {mesh}")
        text = (row.get("transform") or "").split()
        try:
            numbers = [float(v) for v in text]
        except ValueError:
            raise InputError(f"{where}, column transform: not numbers") from None
        matrix = as_affine(numbers, where=f"{where}, column transform") if text else None
        out[segment].append((mesh, matrix))
    return dict(out)


def labels_present(plan: Plan) -> set[int]:
    """The label ids in the volume, read slab by slab like the pyramid's first stage."""
    source = open_source(plan.source, **plan.source_options)
    present: set[int] = set()
    for slab in range(plan.stages[0].count):
        box = plan.input_box(0, slab)
        present.update(int(v) for v in np.unique(to_stored(source.read(box), plan)))
    return present


def write_surfaces(plan: Plan, table: Path, root: Path, colon: bool) -> dict:
    """Every segment's meshes, in the volume's model space; then ``mesh/info``. What was
    written, by segment (for the job's manifest)."""
    meshes = read_mesh_table(table)
    present = labels_present(plan)
    for segment in meshes:
        if segment not in present:
            raise InputError(f"{table}: segment {segment} is not a label of {plan.source}")
    mesh_dir = Path(root) / MESH_DIR
    written = {}
    for segment, files in sorted(meshes.items()):
        fragments = []
        for k, (path, extra) in enumerate(files):
            mesh = to_model_space(read_mesh(path), plan.transform, extra, where=str(path))
            fragments.append((f"{segment}_{k}", mesh))
        manifest = write_segment(mesh_dir, segment, fragments, colon=colon)
        written[segment] = [manifest.name, *(name for name, _ in fragments)]
    write_mesh_info(mesh_dir, segment_properties=f"../{NAMES_DIR}" if plan.names else None)
    return written
