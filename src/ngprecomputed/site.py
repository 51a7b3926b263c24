"""What ``ngprecomputed view`` serves beside the files of a results folder: a front door.

* ``/``: an index page, one row per dataset (name, type, size, scales, a small picture of its
  data) with links to open it alone or with the others, and the overlay's link.
* ``/v/<token>/states/...json``: every view's state, so that a link is the client's address and
  the state's (``<client>#!<state URL>``, Neuroglancer fetches it), about 100 characters instead
  of 3,000.
* ``/v/<token>/pictures/<dataset>.png``: the middle axial plane of a small scale (or a mesh's
  outline from above), anterior up, the subject's left on the left, as the viewer shows it.

Everything is made once, before serving (bad input stops there), and kept in memory: nothing is
written into the results folder, which may be read-only.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from . import viewer
from .annotations.collection import PREVIEW
from .info import read_info
from .report import points_picture

PICTURE_PIXELS = 128
JSON = "application/json"


@dataclass
class Dataset:
    name: str
    kind: str  # image, segmentation, mesh
    layer: dict
    box: tuple | None
    about: str  # size, resolution, data type, scales
    picture: bytes | None


@dataclass
class Site:
    """The pages (path -> (body, content type)) and the printed links ``(label, URL)``."""

    pages: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)


def build(
    results: Path,
    base_url: str,
    client: str,
    only: list[str] | None = None,
    convention: str = "neurological",
    server_url: str | None = None,
) -> Site:
    """The index page, the states and the pictures of ``results`` as served at ``base_url``,
    the views opening in ``client``; the states served at ``server_url`` (default:
    ``base_url``; the data may be in a bucket)."""
    results = Path(results)
    entries = [describe(results, name, base_url) for name in viewer.selected(results, only)]
    prefix = f"/v/{viewer.CLIENT_TOKEN}"
    site = Site()

    def publish(path: str, state: dict) -> str:
        body = viewer.state_json(state).encode()
        site.pages[f"{prefix}/states/{path}"] = (body, JSON)
        return f"{client}#!{server_url or base_url}{prefix}/states/{quote(path)}"

    layers = [(e.layer, e.box) for e in entries]
    alone, together = {}, {}
    for e in entries:
        alone[e.name] = publish(f"{e.name}.json", viewer.compose([(e.layer, e.box)], convention))
        if len(entries) > 1:
            state = viewer.compose(layers, convention, focus=e.name)
            together[e.name] = publish(f"with/{e.name}.json", state)
        if e.picture:
            site.pages[f"{prefix}/pictures/{e.name}.png"] = (e.picture, "image/png")
    site.links = list(alone.items())
    overlay = None
    if len(entries) > 1:
        overlay = publish("all.json", viewer.compose(layers, convention))
        site.links.append(("all", overlay))
    left = "left" if convention == "neurological" else "right"
    page = index_page(results, entries, alone, together, overlay, prefix, left)
    site.pages["/"] = site.pages["/index.html"] = (page.encode(), "text/html; charset=utf-8")
    return site


def describe(results: Path, name: str, base_url: str) -> Dataset:
    """A dataset's layer, box, one line about it and its picture."""
    layer, box = viewer.dataset_layer(results, name, base_url)
    folder = results / name
    if layer["type"] == "mesh":
        points = viewer.vtk_points_mm(folder / f"{name}.vtk")
        count = "" if points is None else f"{len(points):,} vertices, "
        return Dataset(name, "mesh", layer, box, f"{count}world mm", points_picture(points))
    if layer["type"] == "annotation":
        summary = viewer.annotation_summary(folder)
        info = read_info(folder)
        kind = summary.get("kind", "annotations")
        count = f"{summary['count']:,} " if "count" in summary else ""
        props = ", ".join(p["id"] for p in info.get("properties", []))
        related = ", ".join(r["id"] for r in info.get("relationships", []))
        about = f"{count}{info['annotation_type'].lower()}s" + (
            f"; properties {props}" if props else ""
        )
        about += f"; related to {related}" if related else ""
        preview = folder / PREVIEW
        return Dataset(
            name, kind, layer, box, about, preview.read_bytes() if preview.is_file() else None
        )
    info = read_info(folder)
    s0 = info["scales"][0]
    size = " x ".join(str(n) for n in s0["size"])
    mm = " x ".join(f"{r / viewer.NM_PER_MM:g}" for r in s0["resolution"])
    channels = f", {info['num_channels']} channels" if info.get("num_channels", 1) > 1 else ""
    scales = len(info["scales"])
    about = (
        f"{size} voxels of {mm} mm, {info['data_type']}{channels}, {s0['encoding']}, "
        f"{scales} scale{'s' if scales > 1 else ''}"
    )
    return Dataset(name, info["type"], layer, box, about, volume_picture(folder, info, layer))


def volume_picture(folder: Path, info: dict, layer: dict) -> bytes | None:
    """The middle axial plane of the finest scale of at most ``RANGE_VOXELS`` voxels, in RAS
    (``nibabel.orientations``: whatever order the voxels are stored in), anterior up."""
    from nibabel.orientations import apply_orientation, io_orientation
    from PIL import Image

    from .report import label_colors, png_bytes, to_display

    k = viewer.range_scale(info)
    try:
        values = viewer.read_scale(folder, info, k)
    except (OSError, ValueError):
        return None  # the viewer will say what is wrong with the chunks
    ras = apply_orientation(values, io_orientation(viewer.model_to_world(folder)))
    plane = ras[:, :, ras.shape[2] // 2]  # x, y, channels
    if info["type"] == "segmentation":
        rgb = label_colors(plane[..., 0])
        colours = layer.get("segmentColors", {})
        for key, hexa in colours.items():
            rgb[plane[..., 0] == int(key)] = [int(hexa[i : i + 2], 16) for i in (1, 3, 5)]
    else:
        span = layer.get("shaderControls", {}).get("normalized", {}).get("range")
        span = tuple(span) if span else (float(plane.min()), float(plane.max()) + 1)
        rgb = to_display(plane, info, span)  # grey: one channel
    image = Image.fromarray(np.ascontiguousarray(np.swapaxes(rgb, 0, 1)[::-1]))
    image.thumbnail((PICTURE_PIXELS, PICTURE_PIXELS), Image.NEAREST)
    return png_bytes(image)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse}} td,th{{padding:.4em .8em;text-align:left;vertical-align:middle}}
tr+tr{{border-top:1px solid #ddd}}
img{{image-rendering:pixelated;background:#000;width:96px;height:96px;object-fit:contain}}
.small{{color:#666;font-size:90%}}
</style></head><body>
<h1>{title}</h1>
<p class="small">{count}, served by ngprecomputed. The views open in Neuroglancer:
axial anterior up, coronal and sagittal superior up, the subject's left on the {left}.</p>
{overlay}
<table>
<tr><th></th><th>dataset</th><th>type</th><th>data</th><th>open</th></tr>
{rows}
</table>
</body></html>
"""


def index_page(results, entries, alone, together, overlay, prefix, left) -> str:
    rows = []
    for e in entries:
        picture = f'<img src="{prefix}/pictures/{quote(e.name)}.png" alt="">' if e.picture else ""
        opens = [f'<a href="{html.escape(alone[e.name])}">alone</a>']
        if e.name in together:
            opens.append(f'<a href="{html.escape(together[e.name])}">with the others</a>')
        rows.append(
            f"<tr><td>{picture}</td><td><b>{html.escape(e.name)}</b></td><td>{e.kind}</td>"
            f'<td class="small">{html.escape(e.about)}</td><td>{" | ".join(opens)}</td></tr>'
        )
    link = ""
    if overlay:
        link = f'<p><a href="{html.escape(overlay)}"><b>Open all datasets together</b></a></p>'
    n = len(entries)
    return PAGE.format(
        title=html.escape(f"{Path(results).resolve().name}: datasets"),
        count=f"{n} dataset{'s' if n != 1 else ''} in {html.escape(str(Path(results).resolve()))}",
        left=left,
        overlay=link,
        rows="\n".join(rows),
    )
