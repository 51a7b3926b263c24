"""Neuroglancer legacy (single-resolution) meshes and the standalone VTK mesh.

A legacy mesh lives in the ``mesh`` directory of a segmentation dataset: per segment a JSON
manifest ``<id>:0`` lists fragment files, each a little-endian vertex count, float32 positions
(nanometres, in the volume's model space) and uint32 triangles. The manifest is written last, so a
reader that finds it finds every fragment it names. ``colon=False`` names it ``<id>.json`` for
filesystems that forbid ``:``; ``ngprecomputed serve`` answers ``<id>:0`` with that file.

The VTK ASCII file is what Neuroglancer's ``vtk://`` source reads (and neuroglancer-scripts
writes): a mesh layer without a volume. Its parser accepts one point and one ``3 a b c`` triangle
per line only, so that is what is written.
"""

import io
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..store import write_atomic
from .mesh import Mesh

MM_TO_NM = 1e6


def fragment_bytes(mesh: Mesh) -> bytes:
    """One legacy fragment: uint32 vertex count, float32 xyz, uint32 triangles (little-endian)."""
    return b"".join(
        [
            np.uint32(len(mesh.vertices)).astype("<u4").tobytes(),
            mesh.vertices.astype("<f4").tobytes(),
            mesh.faces.astype("<u4").tobytes(),
        ]
    )


def manifest_name(segment_id: int, *, colon: bool = True) -> str:
    return f"{segment_id}:0" if colon else f"{segment_id}.json"


def write_segment(
    mesh_dir, segment_id: int, fragments: list[tuple[str, Mesh]], *, colon: bool = True
) -> Path:
    """Write a segment's fragment files, then its manifest; returns the manifest's path."""
    mesh_dir = Path(mesh_dir)
    if not 0 <= int(segment_id) < 2**64:
        raise InputError(f"{mesh_dir}: segment id {segment_id} is not a uint64")
    manifest = manifest_name(segment_id, colon=colon)
    names = [name for name, _ in fragments]
    for name in names:
        if not name or "/" in name or "\\" in name or name in (".", "..", manifest, "info"):
            raise InputError(f"{mesh_dir}: {name!r} cannot name a mesh fragment")
        if not colon and ":" in name:
            raise InputError(f"{mesh_dir}: fragment name {name!r} has ':' but colon=False")
    if len(set(names)) != len(names):
        raise InputError(f"{mesh_dir}: segment {segment_id} names a fragment twice")
    mesh_dir.mkdir(parents=True, exist_ok=True)
    for name, mesh in fragments:
        write_atomic(mesh_dir / name, fragment_bytes(mesh))
    path = mesh_dir / manifest
    write_atomic(path, json.dumps({"fragments": names}).encode())
    return path


def write_mesh_info(mesh_dir, *, segment_properties: str | None = None) -> Path:
    """``<mesh_dir>/info`` marking the directory as legacy meshes (optionally naming the
    segment properties directory, relative to the mesh directory)."""
    mesh_dir = Path(mesh_dir)
    info: dict = {"@type": "neuroglancer_legacy_mesh"}
    if segment_properties:
        info["segment_properties"] = segment_properties
    mesh_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(mesh_dir / "info", json.dumps(info).encode())
    return mesh_dir / "info"


def as_affine(matrix, *, where: str = "transform") -> np.ndarray:
    """A 4x4 float64 affine from 16 numbers, or 12 (3x4, last row implied), flat or nested."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: not a matrix of numbers") from None
    if m.size == 12:
        m = np.vstack([m.reshape(3, 4), [0, 0, 0, 1]])
    elif m.size == 16:
        m = m.reshape(4, 4)
    else:
        raise InputError(f"{where}: an affine needs 12 or 16 numbers, not {m.size}")
    if not np.isfinite(m).all():
        raise InputError(f"{where}: the affine has non-finite numbers")
    if not np.allclose(m[3], [0, 0, 0, 1]):
        raise InputError(f"{where}: the affine's last row must be 0 0 0 1")
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise InputError(f"{where}: the affine is singular")
    return m


def to_model_space(mesh_mm: Mesh, transform_nm, extra_mm=None, *, where: str = "") -> Mesh:
    """A mesh in world millimetres (e.g. a GIfTI surface) in the volume's model space (nm).

    ``transform_nm`` is the dataset's ``transform.json`` (model nm -> world nm); ``extra_mm``, an
    optional affine applied to the mesh first, in millimetres. The whole is one matrix, so the
    winding is flipped once, when that matrix mirrors.
    """
    prefix = f"{where}: " if where else ""
    transform = as_affine(transform_nm, where=f"{prefix}transform")
    extra = np.eye(4) if extra_mm is None else as_affine(extra_mm, where=f"{prefix}mesh transform")
    scale = np.diag([MM_TO_NM, MM_TO_NM, MM_TO_NM, 1.0])
    return mesh_mm.transformed(np.linalg.inv(transform) @ scale @ extra)


def vtk_ascii(mesh: Mesh, title: str = "") -> str:
    """The mesh as legacy VTK ASCII POLYDATA (Neuroglancer's ``vtk://`` reads nm)."""
    title = " ".join(title.split())[:255] or "Written by ngprecomputed"
    out = io.StringIO()
    out.write(f"# vtk DataFile Version 3.0\n{title}\nASCII\nDATASET POLYDATA\n")
    out.write(f"POINTS {len(mesh.vertices)} float\n")
    np.savetxt(out, mesh.vertices, fmt="%.9g")  # 9 significant digits: float32 round-trips
    out.write(f"POLYGONS {len(mesh.faces)} {4 * len(mesh.faces)}\n")
    np.savetxt(out, mesh.faces, fmt="3 %d %d %d")
    return out.getvalue()


def write_vtk(path, mesh: Mesh, title: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, vtk_ascii(mesh, title).encode())
    return path
