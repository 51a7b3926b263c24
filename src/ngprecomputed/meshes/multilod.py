"""Neuroglancer multi-resolution meshes (``neuroglancer_multilod_draco``), unsharded.

A segment's meshes are an octree of fragments: at level of detail (lod) ``k`` a node at grid
position ``p`` covers ``grid_origin + p * chunk_shape * 2**k`` to ``... + chunk_shape * 2**k`` in
"stored model" units. Here those units are voxels of the volume's scale 0 (voxel corners at
integers, as the volume's model space), and the mesh ``info``'s ``transform`` scales them to
nanometres. Every node's mesh is one Draco mesh whose vertex positions are integers in
``[0, 2**bits)`` across the node's box; Neuroglancer requires a position attribute of Draco type
int32 or float32 (DracoPy stores an int32 array as int32, any unsigned one as uint32, which the
viewer refuses), and no Draco quantization (the integers are the quantization).

Per segment, ``<id>`` holds the fragments (lod 0 first, each lod's nodes in Z-curve order) and
``<id>.index`` the manifest that locates them; the viewer reads fragments with Range requests.
The data file is written before its manifest, so a reader that finds the manifest finds the data.
"""

import json
import struct
from pathlib import Path

import DracoPy
import numpy as np

from ..store import write_atomic
from .mesh import Mesh

QUANTIZATION_BITS = 16  # 10 would put a node's vertices on a 1024^3 lattice: too coarse
DRACO_COMPRESSION_LEVEL = 7  # 0-10: higher is smaller and slower to encode, as fast to decode


def quantize(vertices: np.ndarray, origin, size, bits: int = QUANTIZATION_BITS) -> np.ndarray:
    """Vertex positions (stored model units) as integers across the box ``origin + [0, size]``.

    A vertex on the box's mid-plane lands on ``2**(bits-1)``, the integer the viewer splits a
    node's 2x2x2 children at (``rint`` rounds the half to the even neighbour, which that is).
    """
    top = 2**bits - 1
    q = (np.asarray(vertices, np.float64) - origin) / np.asarray(size, np.float64) * top
    return np.clip(np.rint(q), 0, top).astype(np.int32)


def encode_fragment(mesh: Mesh, origin, size) -> bytes:
    """One node's mesh as Draco bytes (empty when it has no triangle)."""
    if len(mesh.faces) == 0:
        return b""
    points = quantize(mesh.vertices, origin, size)
    return DracoPy.encode(
        points, mesh.faces, compression_level=DRACO_COMPRESSION_LEVEL, preserve_order=False
    )


def morton(positions: np.ndarray) -> np.ndarray:
    """Z-curve codes of grid positions (x in the lowest bit), to sort a lod's nodes by."""
    p = np.asarray(positions, np.uint64).reshape(-1, 3)
    code = np.zeros(len(p), np.uint64)
    for bit in range(21):
        for axis in range(3):
            code |= ((p[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return code


def manifest_bytes(
    chunk_shape, grid_origin, lod_scales, fragments: list[list[tuple[tuple[int, int, int], int]]]
) -> bytes:
    """The ``<id>.index`` file: ``fragments[lod]`` lists ``(position, size in bytes)`` in
    Z-curve order. Vertex offsets are zero."""
    lods = len(fragments)
    parts = [
        np.asarray(chunk_shape, "<f4").tobytes(),
        np.asarray(grid_origin, "<f4").tobytes(),
        struct.pack("<I", lods),
        np.asarray(lod_scales, "<f4").tobytes(),
        np.zeros((lods, 3), "<f4").tobytes(),
        np.asarray([len(f) for f in fragments], "<u4").tobytes(),
    ]
    for nodes in fragments:
        positions = np.asarray([p for p, _ in nodes], "<u4").reshape(-1, 3)
        parts.append(np.ascontiguousarray(positions.T).tobytes())  # C order [3, n]
        parts.append(np.asarray([n for _, n in nodes], "<u4").tobytes())
    return b"".join(parts)


def write_info(
    mesh_dir, resolution, *, lod_scale_multiplier: float = 1.0, segment_properties=None
) -> Path:
    """``<mesh_dir>/info``: stored model units (voxels) to model space (nm)."""
    rx, ry, rz = (float(r) for r in resolution)
    info = {
        "@type": "neuroglancer_multilod_draco",
        "vertex_quantization_bits": QUANTIZATION_BITS,
        "transform": [rx, 0, 0, 0, 0, ry, 0, 0, 0, 0, rz, 0],
        "lod_scale_multiplier": lod_scale_multiplier,
    }
    if segment_properties:
        info["segment_properties"] = segment_properties
    mesh_dir = Path(mesh_dir)
    mesh_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(mesh_dir / "info", json.dumps(info).encode())
    return mesh_dir / "info"
