"""Read a triangle mesh from the files neuroimaging and 3D tools write.

* GIfTI (``.gii``, ``.gii.gz``) and FreeSurfer surfaces (``lh.pial``, ``*.white``, ...) through
  nibabel, the library that reads our volumes too. Both are in millimetres in scanner (RAS)
  space; FreeSurfer stores surface RAS ("tkr"), so its volume centre (``c_ras``) is added when the
  file records it, as ``mris_convert --to-scanner`` does.
* VTK legacy, OBJ, PLY, STL and OFF through VTK itself (the ``vtk`` wheel, Kitware). It is the one
  maintained library that reads all five: meshio reads no legacy VTK ``POLYDATA`` (the kind every
  surface tool writes, Neuroglancer's ``vtk://`` included; meshio issue 527, open since 2019) and
  exits the process on a file it cannot parse; trimesh reads no VTK at all. VTK reports problems
  through its output window rather than exceptions, so they are captured and turned into one
  ``InputError``. Polygons and triangle strips are triangulated by VTK; a legacy VTK dataset that
  is not polygonal (an unstructured grid) contributes its surface. VTK's OBJ reader duplicates a
  vertex used with different texture coordinates or normals, as OBJ intends.

Every mesh is checked the same way: at least one triangle, finite vertices, indices within the
vertices. A file that fails raises one ``InputError`` naming it.
"""

import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .mesh import Mesh

# FreeSurfer surface files start with a 3-byte magic number; they have no standard suffix.
_FREESURFER_MAGIC = (b"\xff\xff\xfe", b"\xff\xff\xff", b"\xff\xff\xfd")
# suffix -> (VTK module, reader class)
_VTK_READERS = {
    ".vtk": ("vtkmodules.vtkIOLegacy", "vtkDataSetReader"),
    ".obj": ("vtkmodules.vtkIOGeometry", "vtkOBJReader"),
    ".ply": ("vtkmodules.vtkIOPLY", "vtkPLYReader"),
    ".stl": ("vtkmodules.vtkIOGeometry", "vtkSTLReader"),
    ".off": ("vtkmodules.vtkIOGeometry", "vtkOFFReader"),
}
_VTK_ERROR = re.compile(r"ERROR: In [^\n]*\n[^\n]*?\(0x[0-9a-fA-F]+\): ([^\n]*)")


def read_mesh(path, *, where: str = "") -> Mesh:
    """The triangle mesh stored in ``path`` (vertices as stored: mm for GIfTI and FreeSurfer)."""
    path = Path(path)
    prefix = f"{where}: {path}" if where else str(path)
    if not path.is_file():
        raise InputError(f"{prefix}: mesh file not found")
    name = path.name.lower()
    if name.endswith((".gii", ".gii.gz")):
        vertices, faces = _read_gifti(path, prefix)
    elif path.suffix.lower() in _VTK_READERS:
        vertices, faces = _read_vtk(path, prefix)
    elif _is_freesurfer(path):
        vertices, faces = _read_freesurfer(path, prefix)
    else:
        raise InputError(
            f"{prefix}: unknown mesh format (expected .gii, .gii.gz, .vtk, .obj, .ply, .stl, "
            ".off or a FreeSurfer surface)"
        )
    return _checked(vertices, faces, prefix)


def _read_gifti(path: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        image = nib.load(path)
    except Exception as e:  # nibabel raises many kinds on a damaged file
        raise InputError(f"{prefix}: not a readable GIfTI file ({_first_line(e)})") from None
    if not isinstance(image, nib.gifti.GiftiImage):
        raise InputError(f"{prefix}: not a GIfTI file")
    points = image.get_arrays_from_intent("NIFTI_INTENT_POINTSET")
    triangles = image.get_arrays_from_intent("NIFTI_INTENT_TRIANGLE")
    if len(points) != 1 or len(triangles) != 1:
        raise InputError(
            f"{prefix}: a GIfTI surface needs one POINTSET and one TRIANGLE array "
            f"(this one has {len(points)} and {len(triangles)})"
        )
    return points[0].data, triangles[0].data


def _is_freesurfer(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) in _FREESURFER_MAGIC


def _read_freesurfer(path: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with warnings.catch_warnings():  # a surface without volume info is normal
            warnings.filterwarnings("ignore", "No volume information", UserWarning)
            vertices, faces, meta = nib.freesurfer.read_geometry(path, read_metadata=True)
    except Exception as e:  # truncated or damaged file
        raise InputError(
            f"{prefix}: not a readable FreeSurfer surface ({_first_line(e)})"
        ) from None
    if meta.get("valid", "").startswith("1") and "cras" in meta:
        vertices = vertices + np.asarray(meta["cras"], dtype=np.float64)
    return vertices, faces


def _read_vtk(path: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    import importlib

    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkFiltersCore import vtkTriangleFilter
    from vtkmodules.vtkFiltersGeometry import vtkGeometryFilter

    module, name = _VTK_READERS[path.suffix.lower()]
    kind = path.suffix[1:].upper()
    reader = getattr(importlib.import_module(module), name)()
    reader.SetFileName(str(path))
    with _vtk_errors() as errors:
        reader.Update()
        data = reader.GetOutputDataObject(0)
        if data is not None and not errors and not isinstance(data, vtkPolyData):
            surface = vtkGeometryFilter()
            surface.SetInputData(data)
            surface.Update()
            data = surface.GetOutput()
        if data is not None and not errors:
            triangles = vtkTriangleFilter()
            triangles.PassVertsOff()
            triangles.PassLinesOff()
            triangles.SetInputData(data)
            triangles.Update()
            data = triangles.GetOutput()
    if data is None or errors:
        why = errors[0] if errors else "no data"
        raise InputError(f"{prefix}: not a readable {kind} mesh ({why})")
    if data.GetNumberOfPoints() == 0 or data.GetPolys().GetNumberOfCells() == 0:
        return np.empty((0, 3)), np.empty((0, 3), np.int64)
    points = vtk_to_numpy(data.GetPoints().GetData()).copy()
    polys = data.GetPolys()
    sizes = np.diff(vtk_to_numpy(polys.GetOffsetsArray()))
    if (sizes != 3).any():  # vtkTriangleFilter leaves only triangles; a bug otherwise
        raise RuntimeError(f"{path}: VTK left polygons of {sorted(set(sizes.tolist()))} corners")
    return points, vtk_to_numpy(polys.GetConnectivityArray()).reshape(-1, 3).copy()


@contextmanager
def _vtk_errors():
    """The error messages VTK emits inside the block, kept off stderr."""
    from vtkmodules.vtkCommonCore import vtkLogger, vtkOutputWindow, vtkStringOutputWindow

    window = vtkStringOutputWindow()
    previous = vtkOutputWindow.GetInstance()
    verbosity = vtkLogger.GetCurrentVerbosityCutoff()
    vtkOutputWindow.SetInstance(window)
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
    errors: list[str] = []
    try:
        yield errors
    finally:
        errors += _VTK_ERROR.findall(window.GetOutput())
        vtkLogger.SetStderrVerbosity(verbosity)
        vtkOutputWindow.SetInstance(previous)


def _checked(vertices, faces, prefix: str) -> Mesh:
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"{prefix}: vertices must be an (N, 3) array, not {v.shape}")
    if f.size == 0:
        raise InputError(f"{prefix}: the mesh has no triangles")
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
        raise InputError(f"{prefix}: triangles must be an (M, 3) integer array, not {f.shape}")
    if not np.isfinite(v).all():
        raise InputError(f"{prefix}: some vertex coordinates are not finite")
    if f.min() < 0:
        raise InputError(f"{prefix}: negative triangle index {int(f.min())}")
    if f.max() >= len(v):
        raise InputError(f"{prefix}: triangle index {int(f.max())} but only {len(v)} vertices")
    if len(v) > np.iinfo(np.uint32).max:
        raise InputError(f"{prefix}: more vertices than uint32 indices can address")
    return Mesh(v, f)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
