"""Neuroglancer viewer states and links for a results folder.

A state puts every dataset in one world space: millimetres, the axes of each source's NIfTI
world (RAS for the usual scanner/MNI affines). Each volume's source carries its ``transform.json``
(model space nm -> world nm, half-voxel shift included) as Neuroglancer applies a source
transform: the linear part acts on physical coordinates (metres to metres, so the 3x3 is used as
it is, whatever the voxel size), the translation is in the output unit (mm). The real viewer
confirms it (``tests/test_viewer.py``: a 1 mm T1 under a 2 mm, x-mirrored atlas).

* Image layers get a display range from the data: percentiles of a small scale read back from
  the chunks (no whole-volume read), set as the default shader's ``normalized`` range.
* Segmentation layers load their meshes and segment names by themselves (the info's ``mesh``
  and ``segment_properties`` keys); the state adds the label table's colours
  (``names/colors.json``, written next to the names by ``finalize``) as ``segmentColors`` and, when
  there are meshes, lists the segments that have one so that the 3D view shows them (the others
  keep showing in 2D, at the same alpha).
* Mesh datasets (``<ds>/<ds>.vtk``, world nm) become single-mesh layers; Neuroglancer converts
  their nanometres to the state's millimetres by itself.

Orientation. The world is RAS (x right, y anterior, z superior), so the conventions of FSLeyes,
Freeview or MRIcroGL follow from it, whatever the voxel order a file is stored in (LPS, LIA,
oblique: each source's transform puts it in RAS first). Every panel is given as the world
directions of its screen's right and down: axial anterior up, coronal and sagittal superior up,
the subject's left on the screen's left (neurological; ``radiological``: on the right). One
global orientation cannot show all three planes so (Neuroglancer's 4-panel layout turns its
``yz`` panel by a fixed 90 degrees): the layout is four panels of one layer group each, sagittal,
coronal, axial and 3D as Freeview's 2x2, the three cross-sections orientations *relative* to
the global one, so rotating one rotates them all. The 3D camera looks from the left, in front
and above.

A link is ``<client>#!<quoted JSON>``, or, when ``ngprecomputed view`` serves the state itself,
``<client>#!<state URL>`` (Neuroglancer reads a state from a URL in the fragment: a link short
enough to copy). The client is the public demo, or the one shipped in the ``neuroglancer`` wheel
(served by ``ngprecomputed view`` under ``/v/<token>/``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .annotations.collection import SUMMARY
from .errors import InputError
from .info import read_info
from .plan import NAMES_DIR
from .qc import count_values
from .store import ScaleStore, write_atomic

DEFAULT_CLIENT = "https://neuroglancer-demo.appspot.com/"
CLIENT_TOKEN = "ngprecomputed"  # the client starts only under /v/<token>/
COLORS_FILE = "colors.json"  # in NAMES_DIR: {"<id>": "#rrggbb"}, a state's segmentColors
MM = 1e-3  # the state's unit, in metres
NM_PER_MM = 1e6
RANGE_PERCENTILES = (0.5, 99.5)
RANGE_VOXELS = 128**3  # read at most about this many voxels for the display range
SEGMENT_ALPHA = 0.5  # Neuroglancer's default alpha of a shown segment in 2D
OVERLAY_ALPHA = 0.35  # a segmentation over an image: the image stays readable
OVERLAY_MESH_ALPHA = 0.3  # an atlas's meshes in 3D when a surface is shown with them
MAX_VISIBLE_SEGMENTS = 1000  # segments listed as visible (their meshes load in 3D)
ANNOTATIONS_TYPE = "neuroglancer_annotations_v1"
PANEL_PIXELS = 300  # a cross-section panel shows the whole volume in about this many pixels
CONVENTIONS = ("neurological", "radiological")
# (right, down) of each cross-section, world directions; neurological: the subject's left on
# the screen's left (radiological mirrors x in the axial and coronal panels)
PANELS = {
    "sagittal": ((0, -1, 0), (0, 0, -1)),  # seen from the left: anterior on the left
    "coronal": ((1, 0, 0), (0, 0, -1)),  # seen from behind
    "axial": ((1, 0, 0), (0, -1, 0)),  # seen from above
}
CAMERA_FROM = (-1.0, 0.6, 0.7)  # the 3D view looks from the left, in front and above
_MANIFEST = re.compile(r"^(\d+)(?::0|\.json|\.index)(?:\.gz)?$")


# --- the results folder -------------------------------------------------------------------


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def is_dataset(folder: Path) -> bool:
    """A volume (an ``info`` with scales: not a dataset's ``mesh/`` or ``names/``), an
    annotation collection, or a mesh dataset (``<name>.vtk``)."""
    folder = Path(folder)
    if (folder / f"{folder.name}.vtk").is_file():
        return True
    if not (folder / "info").is_file():
        return False
    try:
        info = json.loads((folder / "info").read_text())
        return "scales" in info or info.get("@type") == ANNOTATIONS_TYPE
    except (OSError, ValueError):
        return True  # a dataset whose info is broken: reading it says so


def datasets(results: Path) -> list[str]:
    """Dataset names in ``results`` (see :func:`is_dataset`)."""
    results = Path(results)
    if not results.is_dir():
        raise InputError(f"results folder {results}: not a directory")
    return sorted(
        d.name
        for d in results.iterdir()
        if d.is_dir() and not d.name.startswith(".") and is_dataset(d)
    )


def results_of(folder: Path, only: list[str] | None = None) -> tuple[Path, list[str] | None]:
    """``(results folder, datasets)`` for a results folder or one dataset's folder."""
    folder = Path(folder)
    if folder.is_dir() and is_dataset(folder):
        return folder.parent, [folder.name]
    return folder, only


def selected(results: Path, only: list[str] | None = None) -> list[str]:
    """The datasets of ``results`` to show: all, or those of ``only``."""
    names = datasets(results)
    if not names:
        raise InputError(
            f"{results}: no dataset here (a results folder holds <dataset>/info or "
            "<dataset>/<dataset>.vtk; a dataset folder its info)"
        )
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise InputError(f"results folder {results}: no dataset {', '.join(missing)}")
        names = [n for n in names if n in only]
    return names


def bundled_client() -> Path | None:
    """The web client shipped in the ``neuroglancer`` wheel, if it is installed (not imported:
    the package pulls in a web server and numpy extensions the client does not need)."""
    spec = importlib.util.find_spec("neuroglancer")
    if spec is None or not spec.submodule_search_locations:
        return None
    client = Path(next(iter(spec.submodule_search_locations))) / "static" / "client"
    return client if (client / "index.html").is_file() else None


def write_segment_colors(folder: Path, colors: dict[int, str]) -> Path | None:
    """``<folder>/colors.json`` from a label table's colours (``LabelTable.colors``); None when
    the table has none. Kept next to the segment names: the viewer needs only the results."""
    if not colors:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({str(k): v for k, v in sorted(colors.items())})
    write_atomic(folder / COLORS_FILE, text.encode())
    return folder / COLORS_FILE


def segment_colors(dataset: Path) -> dict[str, str]:
    path = Path(dataset) / NAMES_DIR / COLORS_FILE
    return read_json(path) if path.is_file() else {}


def meshed_segments(dataset: Path, info: dict, limit: int = MAX_VISIBLE_SEGMENTS) -> list[str]:
    """Ids that have a mesh (legacy ``<id>:0``/``<id>.json`` or multi-resolution ``<id>.index``
    manifests), sorted, at most ``limit`` (sharded meshes cannot be listed: none)."""
    mesh = info.get("mesh")
    folder = Path(dataset) / mesh if isinstance(mesh, str) else None
    if folder is None or not folder.is_dir():
        return []
    ids: set[int] = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _MANIFEST.match(entry.name)
            if match:
                ids.add(int(match[1]))
                if len(ids) >= limit:
                    break
    return [str(i) for i in sorted(ids)]


# --- coordinates --------------------------------------------------------------------------


def model_to_world(dataset: Path) -> np.ndarray:
    """4x4 from model space (nm) to world (nm): ``transform.json``, else the identity (a
    re-encoded dataset has none)."""
    path = Path(dataset) / "transform.json"
    if not path.is_file():
        return np.eye(4)
    try:
        t = np.asarray(read_json(path), dtype=float)
    except (TypeError, ValueError):
        t = np.zeros(0)
    if t.shape == (3, 4):
        t = np.vstack([t, [0, 0, 0, 1]])
    if t.shape != (4, 4) or not np.isfinite(t).all():
        raise InputError(f"{path}: not a 4x4 (or 3x4) matrix")
    return t


def source_transform(world_nm: np.ndarray) -> list[list[float]]:
    """A source transform's 3x4 ``matrix`` for output dimensions in millimetres.

    Neuroglancer applies the linear part to physical coordinates (metres in, metres out: the
    3x3 of ``transform.json`` is used as it is, whatever the voxel size) and takes the
    translation in output units (millimetres)."""
    m = np.asarray(world_nm, dtype=float)[:3].copy()
    m[:, 3] /= NM_PER_MM
    return [[float(v) for v in row] for row in m]


def world_box_mm(world_nm: np.ndarray, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper world corners (mm) of the volume's bounding box."""
    s0 = info["scales"][0]
    lo = np.asarray(s0.get("voxel_offset", (0, 0, 0)), float) * s0["resolution"]
    hi = lo + np.asarray(s0["size"], float) * s0["resolution"]
    corners = np.array(
        [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    world = (np.asarray(world_nm) @ corners.T)[:3].T / NM_PER_MM
    return world.min(axis=0), world.max(axis=0)


# --- display range ------------------------------------------------------------------------


def range_scale(info: dict) -> int | None:
    """The finest scale with at most ``RANGE_VOXELS`` voxels (else the coarsest): enough
    voxels for stable percentiles, read in milliseconds."""
    for k, s in enumerate(info["scales"]):
        if int(np.prod(s["size"])) <= RANGE_VOXELS:
            return k
    return len(info["scales"]) - 1 if info["scales"] else None


def read_scale(dataset: Path, info: dict, k: int) -> np.ndarray:
    """Every voxel of scale ``k``, from its chunks (flat names, ``.gz`` or not, or shards)."""
    store = ScaleStore.from_info(dataset, info, k)
    return store.read_box(tuple((0, n) for n in info["scales"][k]["size"]))


def percentiles(values: np.ndarray, q) -> np.ndarray:
    """``np.percentile(values, q)`` for a sequence ``q``, by numpy's arithmetic (its linear
    method); uint8 values from their counts: no partition of a copy of them (2 ms of a 1 mm
    T1's QC page). Signed integers are widened first: numpy subtracts neighbouring values in
    their own type, which wraps (int16 -20000 and 20000: a median of 32768)."""
    if values.dtype.kind == "i" and values.dtype.itemsize < 8:
        values = values.astype(np.int64)
    if values.dtype != np.uint8 or values.size == 0:
        return np.percentile(values, q)
    n = values.size
    virtual = (n - 1) * np.true_divide(np.asarray(q, dtype=np.float64), 100)
    below = np.minimum(np.floor(virtual), n - 1).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    order = np.cumsum(count_values(values.ravel(order="K"), 0, 256))
    a, b = (np.searchsorted(order, k, side="right").astype(np.uint8) for k in (below, above))
    t = virtual - below
    diff = b - a  # b >= a: no wrap
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def display_range(values: np.ndarray, data_type: str) -> list[float] | None:
    """Percentiles of the finite values (integers for integer data); None if flat or empty."""
    v = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel(order="K")
    if v.size == 0:
        return None
    lo, hi = percentiles(v, RANGE_PERCENTILES)
    if np.dtype(data_type).kind != "f":
        lo, hi = float(np.floor(lo)), float(np.ceil(hi))
    if not hi > lo:
        lo, hi = float(v.min()), float(v.max())
        if not hi > lo:
            return None
    return [float(lo), float(hi)]


def image_range(dataset: Path, info: dict) -> list[float] | None:
    k = range_scale(info)
    if k is None:
        return None
    try:
        values = read_scale(dataset, info, k)
    except (OSError, ValueError) as e:
        raise InputError(f"{dataset}: cannot read scale {info['scales'][k]['key']} ({e})") from None
    return display_range(values, info["data_type"])


# --- layers and states --------------------------------------------------------------------

RGB_SHADER = """void main() {
  emitRGB(vec3(toNormalized(getDataValue(0)), toNormalized(getDataValue(1)),
               toNormalized(getDataValue(2))));
}
"""


def _dims() -> dict:
    return {axis: [MM, "m"] for axis in "xyz"}


def quaternion(right, down) -> list[float]:
    """Neuroglancer's ``[x, y, z, w]`` for a view whose screen right and down are these world
    directions (into the screen: right x down). ``down`` is made orthogonal to ``right``."""
    r = np.asarray(right, float) / np.linalg.norm(right)
    d = np.asarray(down, float) - np.dot(down, r) * r
    d /= np.linalg.norm(d)
    m = np.column_stack([r, d, np.cross(r, d)])  # panel axes -> world
    w = np.sqrt(max(0.0, 1 + np.trace(m))) / 2
    if w > 1e-6:
        q = [(m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w)]
        q += [(m[1, 0] - m[0, 1]) / (4 * w), w]
    else:  # a half turn: about the axis m + I maps onto
        axis = np.argmax(np.diag(m))
        v = (m + np.eye(3))[:, axis]
        q = [*(v / np.linalg.norm(v)), 0.0]
    return [round(float(v), 9) + 0.0 for v in q]


def looking_from(direction, up=(0.0, 0.0, 1.0)) -> list[float]:
    """The orientation of a camera placed in world ``direction`` from the centre, looking at it,
    ``up`` (made orthogonal) at the screen's top."""
    into = -np.asarray(direction, float)
    down = -np.asarray(up, float)
    down = down - np.dot(down, into) / np.dot(into, into) * into
    return quaternion(np.cross(down, into), down)


def panel_orientation(plane: str, convention: str = "neurological") -> list[float]:
    right, down = PANELS[plane]
    if convention == "radiological" and plane != "sagittal":
        right = tuple(-v for v in right)
    return quaternion(right, down)


def layout(names: list[str], convention: str = "neurological", slices_3d: bool = True) -> dict:
    """Sagittal, coronal / axial, 3D: four layer groups showing every layer. ``slices_3d``: the
    3D view shows the three planes (a view of meshes shows only them: planes would hide them)."""

    def relative(plane):
        return {"link": "relative", "value": panel_orientation(plane, convention)}

    def panel(plane):
        return {
            "type": "viewer",
            "layers": names,
            "layout": "xy",
            "crossSectionOrientation": relative(plane),
        }

    three_d = {"type": "viewer", "layers": names, "layout": "3d"}
    if slices_3d:
        side = {"width": PANEL_PIXELS, "height": PANEL_PIXELS}
        planes = {plane: {**side, "orientation": relative(plane)} for plane in PANELS}
        three_d["layout"] = {"type": "3d", "crossSections": planes}
    return {
        "type": "column",
        "children": [
            {"type": "row", "children": [panel("sagittal"), panel("coronal")]},
            {"type": "row", "children": [panel("axial"), three_d]},
        ],
    }


def volume_layer(dataset: Path, info: dict, base_url: str) -> dict:
    """An image or segmentation layer for one precomputed dataset."""
    name = Path(dataset).name
    world = model_to_world(dataset)
    source = {
        "url": f"precomputed://{base_url.rstrip('/')}/{quote(name)}",
        "transform": {
            "matrix": source_transform(world),
            "outputDimensions": _dims(),
        },
    }
    if info.get("type") == "segmentation":
        layer = {"type": "segmentation", "source": source, "name": name}
        colors = segment_colors(dataset)
        if colors:
            layer["segmentColors"] = colors
        visible = meshed_segments(dataset, info)
        if visible:
            # listed segments show their meshes in 3D; the others still show in 2D, as
            # they do when none is listed
            layer.update(segments=visible, notSelectedAlpha=SEGMENT_ALPHA)
        return layer
    layer = {"type": "image", "source": source, "name": name}
    if info.get("num_channels") == 3 and np.dtype(info["data_type"]) == np.uint8:
        layer["shader"] = RGB_SHADER
        return layer
    bounds = image_range(dataset, info)
    if bounds:
        layer["shaderControls"] = {"normalized": {"range": bounds}}
    return layer


def mesh_layer(dataset: Path, base_url: str) -> dict:
    name = Path(dataset).name
    url = f"vtk://{base_url.rstrip('/')}/{quote(name)}/{quote(name)}.vtk"
    return {"type": "mesh", "source": url, "name": name}


def vtk_points_mm(path: Path) -> np.ndarray | None:
    """World points (mm) of an ASCII VTK mesh (our own writer's layout), else None."""
    try:
        lines = path.read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("POINTS"))
        count = int(lines[start].split()[1])
        values, i = [], start + 1
        while len(values) < 3 * count:
            values += lines[i].split()
            i += 1
        return np.asarray(values[: 3 * count], float).reshape(-1, 3) / NM_PER_MM
    except (OSError, StopIteration, ValueError, IndexError):
        return None  # not our writer's layout (the viewer still reads it)


def _box(points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    return (points.min(axis=0), points.max(axis=0)) if points is not None and len(points) else None


STREAMLINE_SHADER = "void main() {\n  setColor(prop_direction());\n}\n"
POINT_SHADER = """void main() {
  setPointMarkerSize(8.0);
  setColor(colormapJet(clamp((float(prop_%s()) - %r) / %r, 0.0, 1.0)));
}
"""


def annotation_layer(dataset: Path, info: dict, base_url: str) -> dict:
    """An annotation layer: streamlines coloured by direction, points by their first property
    that varies (its range from ``summary.json``), linked to the segmentations they relate to
    (kept only where those are in the same state)."""
    name = Path(dataset).name
    layer = {
        "type": "annotation",
        "source": f"precomputed://{base_url.rstrip('/')}/{quote(name)}",
        "name": name,
    }
    ids = [p["id"] for p in info.get("properties", [])]
    if info.get("annotation_type") == "POLYLINE" and "direction" in ids:
        layer["shader"] = STREAMLINE_SHADER
    else:
        ranges = annotation_summary(dataset).get("ranges", {})
        for pid in ids:
            lo, hi = ranges.get(pid, (0, 0))
            if hi > lo:
                layer["shader"] = POINT_SHADER % (pid, float(lo), float(hi - lo))
                break
    links = {rel["id"]: rel["id"] for rel in info.get("relationships", [])}
    if links:
        layer["linkedSegmentationLayer"] = links
    return layer


def annotation_summary(dataset: Path) -> dict:
    """``summary.json`` beside an annotation info: count, kind, property ranges."""
    path = Path(dataset) / SUMMARY
    return read_json(path) if path.is_file() else {}


def dataset_layer(results: Path, name: str, base_url: str) -> tuple[dict, tuple | None]:
    """A dataset's layer and its world box in mm (None: unknown)."""
    ds = Path(results) / name
    if not (ds / "info").is_file():
        if not (ds / f"{name}.vtk").is_file():
            raise InputError(f"{ds}: not a dataset (no info, no {name}.vtk)")
        return mesh_layer(ds, base_url), _box(vtk_points_mm(ds / f"{name}.vtk"))
    info = read_info(ds)
    if info.get("@type") == ANNOTATIONS_TYPE:
        box = (np.asarray(info["lower_bound"], float), np.asarray(info["upper_bound"], float))
        return annotation_layer(ds, info, base_url), box
    if not info.get("scales"):
        raise InputError(f"{ds / 'info'}: no scales")
    return volume_layer(ds, info, base_url), world_box_mm(model_to_world(ds), info)


# drawn in this order: labels over images, annotations over all
_ORDER = {"image": 0, "segmentation": 1, "mesh": 2, "annotation": 3}


def overlaid(layers: list[dict], focus: str | None = None) -> list[dict]:
    """The layers drawn together: images first, then segmentations, then surfaces; only one
    image and one segmentation visible (``focus``'s kind: it; else the first), the others
    listed, hidden; segmentations at partial opacity; an atlas's meshes translucent when a
    surface is shown with them, so that the surface is not buried."""

    def rank(layer):
        return _ORDER[layer["type"]], layer["name"] != focus

    ordered = sorted((dict(layer) for layer in layers), key=rank)
    surfaces = any(layer["type"] == "mesh" for layer in ordered)
    present = {layer["name"] for layer in ordered}
    shown: set[str] = set()
    for layer in ordered:
        kind = layer["type"]
        links = {k: v for k, v in layer.get("linkedSegmentationLayer", {}).items() if v in present}
        if links:
            layer["linkedSegmentationLayer"] = links
        else:
            layer.pop("linkedSegmentationLayer", None)
        if kind in ("mesh", "annotation"):
            continue
        if kind in shown:
            layer["visible"] = False
        shown.add(kind)
        if kind == "segmentation" and len(ordered) > 1:
            layer.update(selectedAlpha=OVERLAY_ALPHA, notSelectedAlpha=OVERLAY_ALPHA)
            if surfaces:
                layer["objectAlpha"] = OVERLAY_MESH_ALPHA
    return ordered


def compose(
    layers: list[tuple[dict, tuple | None]],
    convention: str = "neurological",
    focus: str | None = None,
) -> dict:
    """One state with these layers (:func:`overlaid`), centred on the union of their boxes and
    zoomed so that it fits a panel, in the panels of :func:`layout`."""
    boxes = [box for _, box in layers if box is not None]
    if boxes:
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
    else:
        lo, hi = np.zeros(3), np.ones(3)
    extent = float(max(hi - lo)) or 1.0
    ordered = overlaid([layer for layer, _ in layers], focus)
    names = [layer["name"] for layer in ordered]
    meshes = any(layer["type"] == "mesh" or layer.get("segments") for layer in ordered)
    surfaces_only = all(layer["type"] == "mesh" for layer in ordered)  # nothing in 2D
    return {
        "dimensions": _dims(),
        "position": [float(v) for v in (lo + hi) / 2],
        "crossSectionScale": extent / PANEL_PIXELS,
        "projectionOrientation": looking_from(CAMERA_FROM),
        "projectionScale": 1.5 * extent,  # the 3D panel's height, in mm
        "layers": ordered,
        "layout": "3d" if surfaces_only else layout(names, convention, not meshes),
        "hideCrossSectionBackground3D": True,
    }


def state(results: Path, names: list[str], base_url: str, convention="neurological") -> dict:
    """The state showing these datasets of ``results``, served at ``base_url``."""
    if not names:
        raise InputError(f"results folder {results}: no dataset (no <dataset>/info)")
    return compose([dataset_layer(results, name, base_url) for name in names], convention)


def state_json(state: dict) -> str:
    return json.dumps(state, separators=(",", ":"))


def state_url(state: dict, client: str = DEFAULT_CLIENT) -> str:
    """``<client>#!<state>``, the JSON percent-encoded as Neuroglancer's own links are: a link
    that needs no server of ours (a report page's)."""
    return f"{client}#!{quote(state_json(state), safe='')}"


def dataset_url(
    results: Path, name: str, base_url: str = "http://127.0.0.1:8000", client=DEFAULT_CLIENT
) -> str:
    """One dataset's viewer link, as ``ngprecomputed serve RESULTS`` serves it (port 8000)."""
    return state_url(compose([dataset_layer(Path(results), name, base_url)]), client)
