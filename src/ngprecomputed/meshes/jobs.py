"""What the mesh rules run, each a whole job: its files, then its record (written last).

A rule's script hands over the dataset's plan (an object, as the workflow planned it) and the
row's settings; nothing is planned or parsed again here.
"""

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError, naming
from ..plan import Plan
from ..store import write_manifest

log = logging.getLogger(__name__)


def surfaces_job(plan: Plan, table: Path, root: Path, record: Path, colon: bool = True) -> None:
    """Mesh files tied to segments by the row's mesh table (``meshes``)."""
    from .surfaces import write_surfaces

    with naming(plan.dataset):
        written = write_surfaces(plan, Path(table), Path(root), colon)
    write_manifest(Path(record), {"dataset": plan.dataset, "segments": written})
    log.info("%s: meshes of %d segments", plan.dataset, len(written))


def _generated(plan: Plan, meshes: str, region_voxels: int):
    from .generate import FORMATS, plan_regions

    if meshes not in FORMATS:
        raise InputError(f"meshes is {meshes!r}: only generate and multilod are generated")
    return plan_regions(plan.scales[0].size, region_voxels)


def region_job(
    plan: Plan,
    meshes: str,
    region_voxels: int,
    region: int,
    root: Path,
    record: Path,
    gzip_index: Path | None = None,
) -> None:
    """One region of a segmentation meshed (``meshes``: generate, multilod)."""
    from .generate import mesh_region

    with naming(plan.dataset):
        regions = _generated(plan, meshes, region_voxels)
        done = mesh_region(
            plan, regions, region, Path(root), Path(record), meshes == "multilod", gzip_index
        )
    log.info("%s: region %d: %d fragments", plan.dataset, region, len(done["fragments"]))


def meshes_job(
    plan: Plan,
    meshes: str,
    region_voxels: int,
    records: Path,
    root: Path,
    record: Path,
    colon: bool = True,
) -> None:
    """Every segment's manifest and ``mesh/info`` from the regions' records."""
    from .generate import FORMATS, write_meshes

    with naming(plan.dataset):
        regions = _generated(plan, meshes, region_voxels)
        counts = write_meshes(plan, regions, Path(records), Path(root), colon, meshes == "multilod")
    write_manifest(
        Path(record),
        {
            "dataset": plan.dataset,
            "format": FORMATS[meshes],
            "regions": regions.count,
            "segments": {str(k): v for k, v in sorted(counts.items())},
        },
    )
    log.info("%s: %s meshes of %d segments", plan.dataset, FORMATS[meshes], len(counts))


def vtk_job(source: Path, out: Path, dataset: str) -> None:
    """One mesh file as Neuroglancer's VTK mesh (world millimetres to nanometres)."""
    from .legacy import MM_TO_NM, write_vtk
    from .read import read_mesh

    with naming(dataset):
        mesh = read_mesh(Path(source))
    write_vtk(Path(out), mesh.transformed(np.diag([MM_TO_NM] * 3 + [1.0])), title=dataset)
    log.info("%s: %d vertices, %d triangles", out, len(mesh.vertices), len(mesh.faces))
