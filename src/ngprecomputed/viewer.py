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

A link is ``<client>#!<quoted JSON>``; the client is the public demo, or the one shipped in the
``neuroglancer`` wheel (served by ``ngprecomputed view`` under ``/v/<token>/``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .errors import InputError
from .plan import NAMES_DIR
from .store import ScaleStore, write_atomic

DEFAULT_CLIENT = "https://neuroglancer-demo.appspot.com/"
CLIENT_TOKEN = "ngprecomputed"  # the client starts only under /v/<token>/
COLORS_FILE = "colors.json"  # in NAMES_DIR: {"<id>": "#rrggbb"}, a state's segmentColors
MM = 1e-3  # the state's unit, in metres
NM_PER_MM = 1e6
RANGE_PERCENTILES = (0.5, 99.5)
RANGE_VOXELS = 128**3  # read at most about this many voxels for the display range
SEGMENT_ALPHA = 0.5  # Neuroglancer's default alpha of a shown segment in 2D
MAX_VISIBLE_SEGMENTS = 1000  # segments listed as visible (their meshes load in 3D)
PANEL_PIXELS = 400  # a cross-section panel shows the whole volume in about this many pixels
_MANIFEST = re.compile(r"^(\d+)(?::0|\.json|\.index)(?:\.gz)?$")


# --- the results folder -------------------------------------------------------------------


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def datasets(results: Path) -> list[str]:
    """Dataset names in ``results``: folders with an ``info``, or with ``<name>.vtk``."""
    results = Path(results)
    if not results.is_dir():
        raise InputError(f"results folder {results}: not a directory")
    return sorted(
        d.name
        for d in results.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and ((d / "info").is_file() or (d / f"{d.name}.vtk").is_file())
    )


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


def display_range(values: np.ndarray, data_type: str) -> list[float] | None:
    """Percentiles of the finite values (integers for integer data); None if flat or empty."""
    v = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if v.size == 0:
        return None
    lo, hi = np.percentile(v, RANGE_PERCENTILES)
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


def _vtk_box_mm(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """World box (mm) of an ASCII VTK mesh's points (our own writer's layout)."""
    try:
        lines = path.read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("POINTS"))
        count = int(lines[start].split()[1])
        values, i = [], start + 1
        while len(values) < 3 * count:
            values += lines[i].split()
            i += 1
        pts = np.asarray(values[: 3 * count], float).reshape(-1, 3) / NM_PER_MM
    except (OSError, StopIteration, ValueError, IndexError):
        return None  # not our writer's layout: no box (the viewer still reads it)
    return (pts.min(axis=0), pts.max(axis=0)) if len(pts) else None


def dataset_layer(results: Path, name: str, base_url: str) -> tuple[dict, tuple | None]:
    """A dataset's layer and its world box in mm (None: unknown)."""
    ds = Path(results) / name
    if not (ds / "info").is_file():
        if not (ds / f"{name}.vtk").is_file():
            raise InputError(f"{ds}: not a dataset (no info, no {name}.vtk)")
        return mesh_layer(ds, base_url), _vtk_box_mm(ds / f"{name}.vtk")
    info = read_json(ds / "info")
    if not info.get("scales"):
        raise InputError(f"{ds / 'info'}: no scales")
    return volume_layer(ds, info, base_url), world_box_mm(model_to_world(ds), info)


_ORDER = {"image": 0, "segmentation": 1, "mesh": 2}  # drawn in this order: labels over images


def compose(layers: list[tuple[dict, tuple | None]]) -> dict:
    """One state with these layers (images first, then segmentations, then meshes), centred on
    the union of their boxes and zoomed so that it fits a panel."""
    boxes = [box for _, box in layers if box is not None]
    if boxes:
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
    else:
        lo, hi = np.zeros(3), np.ones(3)
    extent = float(max(hi - lo)) or 1.0
    ordered = sorted((layer for layer, _ in layers), key=lambda layer: _ORDER[layer["type"]])
    return {
        "dimensions": _dims(),
        "position": [float(v) for v in (lo + hi) / 2],
        "crossSectionScale": extent / PANEL_PIXELS,
        "projectionScale": 1.25 * extent,  # the 3D panel's height, in mm
        "layers": ordered,
        "layout": "4panel",
    }


def state(results: Path, names: list[str], base_url: str) -> dict:
    """The state showing these datasets of ``results``, served at ``base_url``."""
    if not names:
        raise InputError(f"results folder {results}: no dataset (no <dataset>/info)")
    return compose([dataset_layer(results, name, base_url) for name in names])


def state_url(state: dict, client: str = DEFAULT_CLIENT) -> str:
    """``<client>#!<state>``, the JSON percent-encoded as Neuroglancer's own links are."""
    text = json.dumps(state, separators=(",", ":"))
    return f"{client}#!{quote(text, safe='')}"


def dataset_url(
    results: Path, name: str, base_url: str = "http://127.0.0.1:8000", client=DEFAULT_CLIENT
) -> str:
    """One dataset's viewer link, as ``ngprecomputed serve RESULTS`` serves it (port 8000)."""
    return state_url(compose([dataset_layer(Path(results), name, base_url)]), client)


def links(
    results: Path, base_url: str, client: str = DEFAULT_CLIENT, only: list[str] | None = None
) -> list[tuple[str, str]]:
    """``(label, viewer URL)``: one per dataset, then ``all`` overlaying them (if several)."""
    names = datasets(results)
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise InputError(f"results folder {results}: no dataset {', '.join(missing)}")
        names = [n for n in names if n in only]
    layers = {name: dataset_layer(results, name, base_url) for name in names}  # read once
    out = [(name, state_url(compose([layers[name]]), client)) for name in names]
    if len(names) > 1:
        out.append(("all", state_url(compose(list(layers.values())), client)))
    return out
