"""A dataset's QC page: what was written, checked by reading it back the way a viewer would.

One self-contained HTML page per dataset (images as data URIs), which Snakemake's
``--report`` embeds: per scale, thumbnails of three orthogonal central slices, chunks, files and
bytes on disk and the compression ratio against raw voxels; for images a value histogram, for
segmentations every label with its exact voxel count. The numbers come from ``qc``, in bounded
memory.
"""

import base64
import html
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .info import read_info
from .qc import (
    SLAB_VOXELS,
    Histogram,
    disk_usage,
    label_counts,
    sample_slice,
    scale_stats,
    segment_names,
    value_histogram,
)
from .store import write_atomic

log = logging.getLogger(__name__)

THUMB_PX = 256  # longest side of a thumbnail as shown
MAX_LABEL_ROWS = 1000  # a page lists at most this many labels (the largest)
# Snakemake's report shows a page in an iframe whose src is the page as a data URI, and
# Chromium loads no URL over 2 MiB: past this many bytes, thumbnails are made smaller.
MAX_PAGE_BYTES = 1_500_000
PLANES = (("xy", 2), ("xz", 1), ("yz", 0))  # name, the axis the slice is across


def thumbnail_shape(info: dict, axis: int, px: int = THUMB_PX) -> tuple[int, int]:
    """(columns, rows) of a slice across ``axis`` as shown: scale 0's physical aspect, at every
    scale, so the scales line up; the longest side of the three planes is ``px``."""
    s = info["scales"][0]
    extent = [n * r for n, r in zip(s["size"], s["resolution"], strict=True)]
    a, b = (d for d in range(3) if d != axis)
    big = max(extent)
    return max(round(px * extent[a] / big), 1), max(round(px * extent[b] / big), 1)


def sample_shape(info: dict, index: int, axis: int, shown: tuple[int, int]) -> tuple[int, int]:
    """Pixels of a thumbnail: as shown, or fewer for a coarse scale (one per voxel: the
    browser enlarges it, and the page stays small)."""
    size = info["scales"][index]["size"]
    a, b = (d for d in range(3) if d != axis)
    return min(shown[0], size[a]), min(shown[1], size[b])


def label_colors(ids: np.ndarray) -> np.ndarray:
    """A fixed, well-spread colour per label id (``[..., 3]`` uint8); label 0 is black."""
    with np.errstate(over="ignore"):
        h = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (56, 48, 40)], -1)
    rgb = (64 + rgb.astype(np.int64) * 191 // 255).astype(np.uint8)
    rgb[ids == 0] = 0
    return rgb


def window(hist: Histogram) -> tuple[float, float]:
    """Display range of an image: the 0.5th to 99.5th percentile of its histogram."""
    if not hist.edges:
        return 0.0, 1.0
    cum = np.cumsum(np.sum(hist.counts, axis=0))
    lo = int(np.searchsorted(cum, 0.005 * cum[-1], side="right"))
    hi = int(np.searchsorted(cum, 0.995 * cum[-1]))
    lo_v, hi_v = float(hist.edges[lo]), float(hist.edges[min(hi + 1, len(hist.edges) - 1)])
    return (lo_v, hi_v) if hi_v > lo_v else (lo_v, lo_v + 1)


def to_display(plane: np.ndarray, info: dict, span: tuple[float, float]) -> np.ndarray:
    """Display pixels of a sampled slice: labels coloured, 8-bit RGB as is, else channel 0
    in grey over ``span`` (one channel: a third of the bytes to compress and to show)."""
    if info["type"] == "segmentation":
        return label_colors(plane[..., 0])
    if plane.shape[2] == 3 and plane.dtype == np.uint8:
        return plane
    lo, hi = span
    if plane.dtype == np.uint8:  # each of the 256 levels mapped once, then looked up
        return _grey(np.arange(256, dtype=np.float64), lo, hi)[plane[..., 0]]
    return _grey(np.nan_to_num(plane[..., 0].astype(np.float64), nan=lo), lo, hi)


def _grey(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((v - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    # level 3: half the time of 6 for 4% more bytes; optimize=True: 5x the time, 10% smaller
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def histogram_png(hist: Histogram, width: int = 512, height: int = 160) -> bytes:
    """log(1 + count) per bin: grey bars for one row, red, green and blue outlines for three."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    counts = np.asarray(hist.counts, dtype=np.float64)
    if counts.size:
        heights = np.log1p(counts) / max(np.log1p(counts.max()), 1e-9) * (height - 4)
        bins = counts.shape[1]
        x = np.arange(bins + 1) * width / bins
        if len(heights) == 1:
            for k, h in enumerate(heights[0]):
                if h > 0:
                    draw.rectangle(
                        [x[k], height - 1 - h, max(x[k + 1] - 1, x[k]), height - 1], fill="#333333"
                    )
        else:
            for row, colour in zip(heights, ("#d62728", "#2ca02c", "#1f77b4"), strict=False):
                steps = [(x[k + d], height - 1 - h) for k, h in enumerate(row) for d in (0, 1)]
                draw.line(steps, fill=colour, width=1)
    draw.line([0, height - 1, width, height - 1], fill="black")
    return png_bytes(image)


def viewer_url(root: Path) -> str | None:
    """Hook for the viewer link: ``ngprecomputed.viewer.dataset_url(results, name)`` when that
    (optional) module is there; else no link, and the page names the dataset's folder."""
    try:
        from .viewer import dataset_url
    except ImportError:
        return None
    url = dataset_url(root.parent, root.name)
    return str(url) if url else None


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def qc_numbers(
    root: Path, slab_voxels: int = SLAB_VOXELS, held: dict | None = None
) -> tuple[dict, dict]:
    """The dataset's info, and every number of its page (JSON-ready); ``held``: scales still
    in memory (see ``qc.read_box``)."""
    root = Path(root)
    info = read_info(root)
    scales = [scale_stats(root, info, k) for k in range(len(info["scales"]))]
    files, size = disk_usage(root)
    data = {
        "dataset": root.name,
        "folder": str(root),
        "type": info["type"],
        "data_type": info["data_type"],
        "num_channels": info["num_channels"],
        "viewer_url": viewer_url(root),
        "scales": [{**asdict(s), "ratio": s.ratio} for s in scales],
        "dataset_files": files,
        "dataset_bytes": size,
    }
    if info["type"] == "segmentation":
        ids, counts = label_counts(root, info, slab_voxels, held)
        names = segment_names(root, info)
        shown = np.sort(np.argsort(-counts, kind="stable")[:MAX_LABEL_ROWS])
        data["labels"] = {
            "count": int(ids.size),
            "ids": [int(i) for i in ids[shown]],
            "voxels": [int(c) for c in counts[shown]],
            "names": [names.get(int(i), "") for i in ids[shown]],
            "total_voxels": int(counts.sum()),
        }
    else:
        hist = value_histogram(root, info, slab_voxels, held)
        data["histogram"] = dict(vars(hist))  # asdict would deep-copy every count (2 ms)
        data["window"] = list(window(hist))
    log.info("%s: counted scale 0", root.name)
    return info, data


def qc_images(
    root: Path,
    info: dict,
    data: dict,
    px: int = THUMB_PX,
    slab_voxels: int = SLAB_VOXELS,
    held: dict | None = None,
) -> dict:
    """PNG bytes and shown size of every thumbnail by (scale, plane); the histogram's."""
    span = tuple(data.get("window", (0.0, 1.0)))
    images = {}
    for k in range(len(info["scales"])):
        for name, axis in PLANES:
            shown = thumbnail_shape(info, axis, px)
            shape = sample_shape(info, k, axis, shown)
            plane = sample_slice(root, info, k, axis, shape, slab_voxels, held)
            plane = to_display(plane, info, span)
            images[k, name] = (png_bytes(Image.fromarray(np.ascontiguousarray(plane))), shown)
    if "histogram" in data:
        images["histogram"] = (histogram_png(Histogram(**data["histogram"])), (512, 160))
    return images


def qc_data(root: Path, slab_voxels: int = SLAB_VOXELS, px: int = THUMB_PX) -> tuple[dict, dict]:
    """Every number of the page, and its images (see ``qc_images``)."""
    info, data = qc_numbers(root, slab_voxels)
    return data, qc_images(Path(root), info, data, px, slab_voxels)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _xyz(v) -> str:
    return " × ".join(f"{x:g}" for x in v)


def _amount(x: float) -> str:
    return f"{x:,.1f}" if x >= 1 else f"{x:.3g}"


def _length(nm) -> str:
    """Voxel sizes (nm) in the largest unit that keeps them at least 1."""
    for unit, factor in (("mm", 1e6), ("µm", 1e3)):
        if min(nm) >= factor:
            return f"{_xyz(x / factor for x in nm)} {unit}"
    return f"{_xyz(nm)} nm"


_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0}td.l,th.l{text-align:left}
.thumbs td{text-align:center;vertical-align:top}
.thumbs img{image-rendering:pixelated;border:1px solid #999;display:block;margin:auto}
.sw{display:inline-block;width:1em;height:1em;border:1px solid #888;vertical-align:middle}
"""


def render_html(data: dict, thumbs: dict) -> str:
    """The page; its numbers also travel as JSON in ``<script id="qc-data">``."""
    e = html.escape
    name = data["dataset"]
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>QC {e(name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(name)}</h1>",
        f"<p>{e(data['type'])}, {e(data['data_type'])} × {data['num_channels']} channel(s), "
        f"{len(data['scales'])} scales; folder <code>{e(data['folder'])}</code>, "
        f"{data['dataset_files']} files, {_size(data['dataset_bytes'])} on disk.</p>",
    ]
    if data["viewer_url"]:
        out.append(f"<p><a id='viewer' href='{e(data['viewer_url'])}'>Open in Neuroglancer</a></p>")
    else:
        out.append("<p>Viewer: serve the results folder (<code>ngprecomputed serve</code>).</p>")
    out.append("<h2>Scales</h2><table id='scales'><tr><th>scale</th><th class='l'>key</th>")
    out.append("<th>size</th><th>voxel</th><th>chunk</th><th class='l'>encoding</th>")
    out.append("<th>chunks</th><th>files</th><th>on disk</th><th>raw</th><th>ratio</th></tr>")
    for k, s in enumerate(data["scales"]):
        ratio = f"{s['ratio']:.2f}" if s["ratio"] else "–"
        enc = s["encoding"] + (", sharded" if s["sharded"] else "")
        out.append(
            f"<tr><td>{k}</td><td class='l'>{e(s['key'])}</td><td>{_xyz(s['size'])}</td>"
            f"<td>{_length(s['resolution'])}</td><td>{_xyz(s['chunk'])}</td>"
            f"<td class='l'>{e(enc)}</td><td>{s['chunks']}</td><td>{s['files']}</td>"
            f"<td title='{s['bytes']} bytes'>{_size(s['bytes'])}</td>"
            f"<td title='{s['raw_bytes']} bytes'>{_size(s['raw_bytes'])}</td><td>{ratio}</td></tr>"
        )
    out.append("</table><h2>Central slices</h2>")
    out.append("<p>Nearest-sampled; the first axis to the right, the second up.</p>")
    out.append("<table class='thumbs'><tr><th>scale</th>")
    out += [f"<th>{p}</th>" for p, _ in PLANES]
    out.append("</tr>")
    for k in range(len(data["scales"])):
        out.append(f"<tr><td>{k}</td>")
        for p, _ in PLANES:
            png, (w, h) = thumbs[k, p]
            out.append(
                f"<td><img class='thumb' data-scale='{k}' data-plane='{p}' width='{w}' "
                f"height='{h}' alt='scale {k} {p}' src='{data_uri(png)}'></td>"
            )
        out.append("</tr>")
    out.append("</table>")
    if "histogram" in data:
        h = data["histogram"]
        out.append("<h2>Values of scale 0</h2>")
        if h["edges"]:
            means = ", ".join(f"{m:.4g}" for m in h["mean"] if m is not None)
            out.append(
                f"<img id='histogram' alt='histogram' src='{data_uri(thumbs['histogram'][0])}'>"
                f"<p>log(1 + count) in {len(h['counts'][0])} bins from {h['minimum']:g} to "
                f"{h['maximum']:g}; mean {means}; thumbnails show "
                f"{data['window'][0]:g} to {data['window'][1]:g}"
                + (f"; {h['nonfinite']} NaN or infinite" if h["nonfinite"] else "")
                + ".</p>"
            )
        else:
            out.append("<p>No finite value.</p>")
    if "labels" in data:
        lab = data["labels"]
        res = data["scales"][0]["resolution"]
        mm3 = float(np.prod(res)) * 1e-18  # nm³ to mm³
        shown = "" if lab["count"] == len(lab["ids"]) else f", the {len(lab['ids'])} largest"
        out.append(f"<h2>Labels of scale 0</h2><p>{lab['count']} labels{shown}.</p>")
        out.append("<table id='labels'><tr><th>label</th><th class='l'>name</th><th></th>")
        out.append("<th>voxels</th><th>mm³</th><th>%</th></tr>")
        colours = label_colors(np.array(lab["ids"], dtype=np.uint64)).tolist()
        for i, n, nm, c in zip(lab["ids"], lab["voxels"], lab["names"], colours, strict=True):
            out.append(
                f"<tr data-label='{i}' data-voxels='{n}'><td>{i}</td>"
                f"<td class='l'>{e(nm or ('(background)' if i == 0 else ''))}</td>"
                f"<td><span class='sw' style='background:rgb({c[0]},{c[1]},{c[2]})'></span></td>"
                f"<td>{n:,}</td><td>{_amount(n * mm3)}</td>"
                f"<td>{100 * n / lab['total_voxels']:.3g}</td></tr>"
            )
        out.append("</table>")
    payload = json.dumps(data).replace("</", "<\\/")
    out.append(f"<script type='application/json' id='qc-data'>{payload}</script>")
    out.append("</body></html>")
    return "\n".join(out)


def write_qc(
    root: Path, out: Path, slab_voxels: int = SLAB_VOXELS, held: dict | None = None
) -> dict:
    """Write the QC page of the dataset in ``root`` to ``out``; returns its numbers. Thumbnails
    shrink (down to a quarter) until the page fits ``MAX_PAGE_BYTES``. ``held``: scales the
    job that wrote them still holds, read from memory (see ``qc.read_box``)."""
    root, out = Path(root), Path(out)
    info, data = qc_numbers(root, slab_voxels, held)
    for px in (THUMB_PX, THUMB_PX // 2, THUMB_PX // 4):
        page = render_html(data, qc_images(root, info, data, px, slab_voxels, held)).encode()
        if len(page) <= MAX_PAGE_BYTES:
            break
        log.info("%s: page of %d bytes with %d px thumbnails; smaller", root.name, len(page), px)
    else:
        log.warning("%s: QC page of %d bytes: Chromium may not show it", root.name, len(page))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)
    log.info("%s: wrote %s", data["dataset"], out)
    return data


def points_picture(points: np.ndarray | None, pixels: int = 128) -> bytes | None:
    """World points (a mesh's vertices, annotations) seen from above (x right, y up)."""
    if points is None or not len(points):
        return None
    lo, hi = points.min(0), points.max(0)
    cells = pixels // 2  # vertices are sparse: coarse cells, shown twice as large
    scale = (cells - 1) / max(float(max(hi[:2] - lo[:2])), 1e-9)
    col = ((points[:, 0] - lo[0]) * scale).astype(int)
    row = ((hi[1] - points[:, 1]) * scale).astype(int)
    pixels = np.zeros((row.max() + 1, col.max() + 1), np.uint8)
    pixels[row, col] = 220
    image = Image.fromarray(pixels)
    return png_bytes(image.resize((image.width * 2, image.height * 2), Image.NEAREST))
