"""Labels' marching-cubes surfaces smoothed together, then each simplified (VTK), the faces of
their block left in place.

Arrays in, arrays out, in units of the smallest voxel edge. Only mesh jobs import this module
(``generate.surfaces`` imports it when it runs): VTK is no business of the volume jobs.

Smoothing: ``vtkWindowedSincPolyDataFilter`` (Taubin's non-shrinking low-pass filter in its
windowed-sinc form) on all labels of a block at once: marching cubes puts the vertices of two
touching labels' surfaces at the same places (midway between a voxel of each), which become one
vertex, so that both surfaces move together and keep meeting; where labels meet along a line,
the filter smooths along it (``NonManifoldSmoothingOn``). Vertices on the block's faces do not
move, so that a surface cut there meets its neighbour block's exactly. Each vertex moves at most
``MAX_SHIFT`` from where marching cubes put it (on the face between a voxel of the label and one
that is not): a bound by construction on the distance from any vertex to its label's boundary.

Simplification: ``vtkDecimatePro``, label by label, piece by piece: it deletes vertices and
re-triangulates the holes, never moves a vertex, never deletes one on the boundary
(``BoundaryVertexDeletionOff``), keeps the topology, and stops where the surface would move more
than ``max_error`` (accumulated); edges sharper than ``FEATURE_ANGLE`` degrees per voxel of error
(15 at lod 0: VTK's default) are kept longer, so that coarser levels of detail are coarser. It can
leave a fold (one triangle both ways round), which is taken out. Where a piece is still not a
surface then (not seen on AAL or AAL3), where it lies flat on its block's low face along an axis (a
piece may be flattened onto its block's high faces, never onto the low ones, so that two blocks
never both lay triangles on the face they share: marching cubes lays none there), or where it
shrank below ``KEEP_VOLUME`` of its volume, it is simplified again within half the error, down to
an eighth, then left as it is. A piece that smoothing would shrink so (a label of a few voxels, a
rod one voxel thick: a low-pass filter takes them to a point or a line; 13 of AAL's 133 pieces, 17
of AAL3's 177) keeps its marching-cubes shape. An open piece's volume is that of the piece closed
by a fan over its open edges.

zmesh's simplifier is no use after smoothing: ``Mesher.simplify`` puts vertices on the half-voxel
lattice of marching cubes (it packs them into integer coordinates), which undoes the smoothing;
zmesh's ``simplify_fqmr`` keeps open boundaries but joins sheets into edges of four triangles
(seen on AAL); VTK's ``vtkQuadricDecimation`` moves the open boundary.
"""

import numpy as np
import zmesh
from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
from vtkmodules.vtkFiltersCore import vtkDecimatePro, vtkWindowedSincPolyDataFilter

ITERATIONS = 30  # of the windowed-sinc filter
PASS_BAND = 0.02  # lower smooths more: 0.02 takes out AAL3's two-voxel terraces
MAX_SHIFT = 0.75  # the farthest a vertex moves from its marching-cubes place
FEATURE_ANGLE = 30  # degrees per voxel of error: edges sharper than this are kept longer
KEEP_VOLUME = 0.75  # the least of its volume a piece keeps through smoothing, simplification


def smooth_and_simplify(
    meshes: dict[int, tuple[np.ndarray, np.ndarray]], shape, unit, max_error: float
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The marching-cubes surfaces of a block of ``shape`` voxels' labels (vertices on the
    half-voxel lattice, in ``unit``, the voxel in smallest voxel edges) smoothed together, then
    each simplified on its own. Vertices on the block's faces (planes of voxel centres) stay."""
    if not meshes:
        return {}
    lattice = np.concatenate([np.rint(v / unit * 2) for v, _ in meshes.values()]).astype(np.int64)
    keys, joint = np.unique(_key(lattice), return_inverse=True)
    v0 = np.empty((len(keys), 3))
    v0[joint] = np.concatenate([v for v, _ in meshes.values()])
    faces, base = {}, 0
    for label, (v, f) in meshes.items():
        faces[label] = joint[np.asarray(f, np.int64) + base]
        base += len(v)
    lattice = np.stack([keys & (2**21 - 1), (keys >> 21) & (2**21 - 1), keys >> 42], 1)
    seam = ((lattice == 1) | (lattice == 2 * np.asarray(shape) - 1)).any(1)
    v = smoothed(v0, np.concatenate(list(faces.values())), seam)
    out = {}
    for label, f in faces.items():
        pieces = []
        used, local = np.unique(f, return_inverse=True)
        for piece in zmesh.face_connected_components(zmesh.Mesh(v0[used], local.reshape(-1, 3))):
            at = np.searchsorted(keys, _key(np.rint(piece.vertices / unit * 2).astype(np.int64)))
            pieces.append(
                _simplified(v0[at], v[at], piece.faces.astype(np.int64), max_error, unit / 2)
            )
        starts = np.cumsum([0] + [len(pv) for pv, _ in pieces[:-1]])
        out[label] = (
            np.concatenate([pv for pv, _ in pieces]),
            np.concatenate([pf + s for (_, pf), s in zip(pieces, starts, strict=True)]),
        )
    return out


def _simplified(v0: np.ndarray, v: np.ndarray, f: np.ndarray, max_error: float, low):
    """One piece of surface (``v``: smoothed, ``v0``: as marching cubes put it) simplified
    within ``max_error``, or within a half, a quarter, an eighth of it where that leaves no
    surface, lays a triangle on the block's ``low`` faces or takes too much of its volume; else
    left as it is."""
    edge = _open_edges(f)  # the piece closed by a fan to the middle of its open edges
    about = v0[edge].mean((0, 1)) if len(edge) else np.zeros(3)
    volume = _volume(v, f, about)
    if volume < KEEP_VOLUME * _volume(v0, f, about):
        v, volume = v0, _volume(v0, f, about)
    for error in max_error / 2 ** np.arange(4):
        vd, fd = decimated(v, f, error)
        if (
            _manifold(fd)
            and not _on_low_face(vd, fd, low)
            and _volume(vd, fd, about) >= KEEP_VOLUME * volume
        ):
            return vd, fd
    return v, f


def _key(lattice: np.ndarray) -> np.ndarray:
    """One integer per lattice point (coordinates below 2**21)."""
    return lattice[:, 0] + (lattice[:, 1] << 21) + (lattice[:, 2] << 42)


def smoothed(vertices: np.ndarray, faces: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """The vertices after the filter, each within ``MAX_SHIFT`` of where it was, the ``fixed``
    ones (and those of open edges) where they were. Two labels' triangles share an edge of
    theirs on a block's face: the filter takes it for an inner edge, hence ``fixed``."""
    f = vtkWindowedSincPolyDataFilter()
    f.SetInputData(polydata(vertices, faces))
    f.SetNumberOfIterations(ITERATIONS)
    f.SetPassBand(PASS_BAND)
    f.BoundarySmoothingOff()
    f.FeatureEdgeSmoothingOff()
    f.NonManifoldSmoothingOn()  # where labels meet: smoothed along the line they meet on
    f.NormalizeCoordinatesOn()  # numerically stable, as VTK advises
    f.Update()
    moved = vtk_to_numpy(f.GetOutput().GetPoints().GetData()).astype(np.float64)
    shift = moved - vertices
    shift[fixed] = 0
    length = np.linalg.norm(shift, axis=1, keepdims=True)
    return vertices + shift * np.minimum(1.0, MAX_SHIFT / np.maximum(length, 1e-12))


def decimated(vertices: np.ndarray, faces: np.ndarray, max_error: float):
    """Vertices deleted (none moved, none of the boundary's) while the surface stays within
    ``max_error``; the vertices used and the triangles."""
    d = vtkDecimatePro()
    d.SetInputData(polydata(vertices, faces))
    d.SetTargetReduction(0.99)  # the error bound stops it first
    d.PreserveTopologyOn()
    d.SplittingOff()
    d.BoundaryVertexDeletionOff()
    d.SetErrorIsAbsolute(True)
    d.SetAbsoluteError(max_error)
    d.SetFeatureAngle(min(FEATURE_ANGLE * max_error, 90))
    d.AccumulateErrorOn()
    d.Update()
    out = d.GetOutput()
    v = vtk_to_numpy(out.GetPoints().GetData()).astype(np.float64)
    f = vtk_to_numpy(out.GetPolys().GetConnectivityArray()).reshape(-1, 3).astype(np.int64)
    triangle, count = np.unique(np.sort(f, 1), axis=0, return_inverse=True, return_counts=True)[1:]
    f = f[count[triangle.ravel()] == 1]  # a fold it can leave: one triangle both ways round
    used, f = np.unique(f, return_inverse=True)
    return v[used], f.reshape(-1, 3)


def polydata(vertices: np.ndarray, faces: np.ndarray) -> vtkPolyData:
    """A triangle mesh as VTK holds it (float64 points, one cell per face)."""
    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(vertices, np.float64), deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    connectivity = np.ascontiguousarray(faces, np.int64).ravel()
    cells.SetData(
        numpy_to_vtkIdTypeArray(offsets, deep=True),
        numpy_to_vtkIdTypeArray(connectivity, deep=True),
    )
    data = vtkPolyData()
    data.SetPoints(points)
    data.SetPolys(cells)
    return data


def _manifold(faces: np.ndarray) -> bool:
    """Each edge used by two triangles at most, once in each direction."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = int(faces.max()) + 1 if len(faces) else 1
    once = len(np.unique(directed[:, 0] * n + directed[:, 1])) == len(directed)
    lo, hi = directed.min(1), directed.max(1)
    return once and np.unique(lo * n + hi, return_counts=True)[1].max(initial=0) <= 2


def _on_low_face(vertices: np.ndarray, faces: np.ndarray, low) -> bool:
    """Whether a triangle lies on the block's low face along an axis (coordinates ``low``):
    simplification may flatten a piece onto its block's face, but only on the high ones, so
    that two blocks never both lay triangles on the face they share (marching cubes lays none)."""
    corners = vertices[faces]  # [triangles, 3 corners, 3 axes]
    return bool((np.abs(corners - low) < 1e-6).all(1).any())


def _open_edges(faces: np.ndarray) -> np.ndarray:
    """The edges of one triangle only, as vertex pairs."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    n = int(faces.max(initial=0)) + 1
    keys, count = np.unique(edges[:, 0] * n + edges[:, 1], return_counts=True)
    once = keys[count == 1]
    return np.stack([once // n, once % n], 1)


def _volume(vertices: np.ndarray, faces: np.ndarray, about) -> float:
    """The volume the triangles enclose with the cones from ``about`` over their open edges (which
    add nothing to the sum), the same whether the piece is wound outwards or (a cavity) in."""
    a, b, c = (vertices[faces[:, i]] - about for i in range(3))
    return abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum())) / 6
