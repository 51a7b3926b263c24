"""Viewer states and links from a small hand-made results folder; the web client next to the
data on one server. (The real viewer opens them in tests/test_viewer.py.)"""

import http.client
import json
import threading

import numpy as np
import pytest

from ngprecomputed import site
from ngprecomputed.cli import main
from ngprecomputed.errors import InputError
from ngprecomputed.plan import neuroglancer_transform
from ngprecomputed.serve import CLIENT_SHIM, make_server
from ngprecomputed.viewer import (
    OVERLAY_ALPHA,
    PANEL_PIXELS,
    datasets,
    display_range,
    looking_from,
    panel_orientation,
    percentiles,
    source_transform,
    state,
    state_url,
    write_segment_colors,
)

# 2 x 3 x 4 mm voxels, x mirrored, an origin off zero
AFFINE = np.array([[-2.0, 0, 0, 50], [0, 3, 0, -20], [0, 0, 4, 7], [0, 0, 0, 1]])
RES_NM = (2e6, 3e6, 4e6)
SHAPE = (4, 5, 6)
VALUES = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE, order="F") * 10


def scale(key, size, resolution, encoding="raw"):
    return {
        "key": key,
        "size": list(size),
        "resolution": list(resolution),
        "voxel_offset": [0, 0, 0],
        "chunk_sizes": [[64, 64, 64]],
        "encoding": encoding,
    }


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    img = root / "img"
    (img / "s0").mkdir(parents=True)
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "image",
        "data_type": "uint16",
        "num_channels": 1,
        "scales": [scale("s0", SHAPE, RES_NM)],
    }
    (img / "info").write_text(json.dumps(info))
    (img / "s0" / "0-4_0-5_0-6").write_bytes(VALUES.tobytes(order="F"))
    transform = neuroglancer_transform(AFFINE, 1e6, RES_NM)
    (img / "transform.json").write_text(json.dumps(transform))

    seg = root / "seg"
    (seg / "mesh").mkdir(parents=True)
    (seg / "names").mkdir()
    seg_info = {**info, "type": "segmentation", "data_type": "uint32", "mesh": "mesh"}
    seg_info["segment_properties"] = "names"
    (seg / "info").write_text(json.dumps(seg_info))
    for name in ("3:0", "5.json", "7.index", "12.json.gz", "info", "3:0:1", "junk"):
        (seg / "mesh" / name).write_bytes(b"{}")
    (seg / "names" / "colors.json").write_text(json.dumps({"3": "#ff0000"}))

    mesh = root / "surf"
    mesh.mkdir()
    (mesh / "surf.vtk").write_text(
        "# vtk DataFile Version 3.0\nsurf\nASCII\nDATASET POLYDATA\nPOINTS 2 float\n"
        "-1e6 2e6 3e6\n4e6 -5e6 6e6\nPOLYGONS 0 0\n"
    )
    (root / ".work" / "img").mkdir(parents=True)
    (root / "logs" / "img").mkdir(parents=True)
    return root


def test_source_transform_puts_voxel_centres_where_the_affine_does():
    """Neuroglancer applies a source matrix's linear part to metres and adds the translation
    in output units (mm here); the model space of a precomputed volume is in voxels of its
    resolution. A voxel's centre is at model voxel + 0.5 (Neuroglancer voxels are corners)."""
    rotation = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # 90 degrees about z
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.5, 0.7, -1.2])
    affine[:3, 3] = [10, -20, 30]
    res = (0.5e6, 0.7e6, 1.2e6)
    m = np.array(source_transform(np.array(neuroglancer_transform(affine, 1e6, res))))
    assert m.shape == (3, 4)
    for ijk in ([0, 0, 0], [3, 1, 2], [10, 20, 30]):
        metres = (np.array(ijk) + 0.5) * np.array(res) * 1e-9
        mm = m[:, :3] @ metres / 1e-3 + m[:, 3]
        np.testing.assert_allclose(mm, (affine @ [*ijk, 1])[:3], atol=1e-9)


def test_display_range():
    assert display_range(np.arange(1000, dtype=np.uint16), "uint16") == [4.0, 995.0]
    values = np.r_[np.linspace(0, 1, 999), np.nan, np.inf].astype(np.float32)
    lo, hi = display_range(values, "float32")
    assert 0 < lo < 0.01 and 0.99 < hi < 1
    spiky = np.zeros(1000, np.uint8)
    spiky[:3] = 9  # percentiles flat: the whole range instead
    assert display_range(spiky, "uint8") == [0.0, 9.0]
    assert display_range(np.full(10, 5, np.uint8), "uint8") is None


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32])
def test_signed_percentiles_do_not_wrap(dtype):
    """Neighbours further apart than the type holds (numpy's own subtraction wraps)."""
    info = np.iinfo(dtype)
    values = np.array([info.min, info.max, info.min, info.max], dtype)
    assert percentiles(values, (50,)).tolist() == [(int(info.min) + int(info.max)) / 2]
    assert display_range(values, np.dtype(dtype).name) == [float(info.min), float(info.max)]


@pytest.mark.parametrize("size", [1, 2, 5, 199, 12_345, 2**20 + 7])
def test_uint8_percentiles_from_counts_are_numpys_to_the_bit(size):
    """The same numbers as ``np.percentile`` (no tolerance) for uint8 values spread out,
    few, skewed and sparse, at the display range's percentiles and at arbitrary ones."""
    rng = np.random.default_rng(size)
    spread = rng.integers(0, 256, size)
    few = rng.integers(0, 3, size) * 85
    skewed = np.clip(rng.normal(100, 40, size), 0, 255)
    sparse = np.where(rng.random(size) < 0.99, 0, spread)
    for values in (spread, few, skewed, sparse):
        values = values.astype(np.uint8)
        for q in ((0.5, 99.5), tuple(rng.uniform(0, 100, 5)), (0, 50, 100)):
            want, got = np.percentile(values, q), percentiles(values, q)
            assert got.dtype == want.dtype and np.array_equal(got, want), (q, got, want)


def test_datasets_skip_work_and_logs(results):
    assert datasets(results) == ["img", "seg", "surf"]
    with pytest.raises(InputError, match="not a directory"):
        datasets(results / "missing")


def test_overlay_state(results):
    s = state(results, ["seg", "surf", "img"], "http://h:1")
    assert s["dimensions"] == {a: [0.001, "m"] for a in "xyz"}
    assert [lay["type"] for lay in s["layers"]] == ["image", "segmentation", "mesh"]
    img, seg, surf = s["layers"]
    assert img["source"]["url"] == "precomputed://http://h:1/img"
    assert img["source"]["transform"]["outputDimensions"] == s["dimensions"]
    values = VALUES.ravel()
    lo, hi = img["shaderControls"]["normalized"]["range"]
    assert lo == np.floor(np.percentile(values, 0.5)) and hi == np.ceil(np.percentile(values, 99.5))
    assert seg["segmentColors"] == {"3": "#ff0000"}
    assert seg["segments"] == ["3", "5", "7", "12"]  # meshed, in id order
    assert seg["notSelectedAlpha"] == seg["selectedAlpha"] == OVERLAY_ALPHA  # over the image
    assert seg["objectAlpha"] < 1  # a surface is shown with its meshes
    assert surf == {"type": "mesh", "source": "vtk://http://h:1/surf/surf.vtk", "name": "surf"}
    # the volume's world box: voxel centres 0..n-1 through the affine, half a voxel around
    corners = np.array([AFFINE @ [*c, 1] for c in ([0, 0, 0], np.array(SHAPE) - 1)])[:, :3]
    lo_mm = corners.min(0) - np.array([1, 1.5, 2])
    hi_mm = corners.max(0) + np.array([1, 1.5, 2])
    lo_mm, hi_mm = np.minimum(lo_mm, [-1, -5, 3]), np.maximum(hi_mm, [4, 2, 6])  # the mesh
    hi_mm = np.maximum(hi_mm, np.array(SHAPE) * RES_NM / 1e6)  # seg: no transform.json, from 0
    lo_mm = np.minimum(lo_mm, 0)
    np.testing.assert_allclose(s["position"], (lo_mm + hi_mm) / 2)
    assert s["crossSectionScale"] == pytest.approx(max(hi_mm - lo_mm) / PANEL_PIXELS)


def test_only_one_atlas_and_one_image_visible(results):
    (results / "seg2").mkdir()
    (results / "seg2" / "info").write_text((results / "seg" / "info").read_text())
    (results / "img2").mkdir()
    (results / "img2" / "info").write_text((results / "img" / "info").read_text())
    (results / "img2" / "s0").symlink_to(results / "img" / "s0")
    s = state(results, ["seg2", "img2", "surf", "seg", "img"], "http://h:1")
    shown = [(lay["name"], lay.get("visible", True)) for lay in s["layers"]]
    assert shown == [("img2", True), ("img", False), ("seg2", True), ("seg", False), ("surf", True)]


def rotate(q, v):
    """``v`` rotated by the unit quaternion ``[x, y, z, w]`` (the textbook formula)."""
    x, y, z, w = q
    u = np.array([x, y, z])
    return 2 * np.dot(u, v) * u + (w * w - np.dot(u, u)) * np.asarray(v) + 2 * w * np.cross(u, v)


@pytest.mark.parametrize(
    ("plane", "convention", "right", "down"),
    [
        ("axial", "neurological", (1, 0, 0), (0, -1, 0)),
        ("coronal", "neurological", (1, 0, 0), (0, 0, -1)),
        ("sagittal", "neurological", (0, -1, 0), (0, 0, -1)),
        ("axial", "radiological", (-1, 0, 0), (0, -1, 0)),
        ("coronal", "radiological", (-1, 0, 0), (0, 0, -1)),
        ("sagittal", "radiological", (0, -1, 0), (0, 0, -1)),
    ],
)
def test_panel_orientations(plane, convention, right, down):
    """A panel's screen x and y axes, rotated by its orientation, are these world directions."""
    q = panel_orientation(plane, convention)
    assert np.linalg.norm(q) == pytest.approx(1)
    np.testing.assert_allclose(rotate(q, [1, 0, 0]), right, atol=1e-8)
    np.testing.assert_allclose(rotate(q, [0, 1, 0]), down, atol=1e-8)


def test_3d_camera_looks_from_the_left_front_and_above():
    q = looking_from((-1, 0.6, 0.7))
    into = rotate(q, [0, 0, 1])  # the camera looks along its z
    np.testing.assert_allclose(into, -np.array([-1, 0.6, 0.7]) / np.linalg.norm([-1, 0.6, 0.7]))
    assert rotate(q, [0, 1, 0])[2] < -0.5  # screen down is mostly inferior


def test_site_links_name_served_states(results):
    made = site.build(results, "http://h:1", "http://client/")
    assert [name for name, _ in made.links] == ["img", "seg", "surf", "all"]
    client, _, fragment = made.links[0][1].partition("#!")
    assert client == "http://client/"
    assert fragment == "http://h:1/v/ngprecomputed/states/img.json"
    body, kind = made.pages["/v/ngprecomputed/states/img.json"]
    assert kind == "application/json"
    assert json.loads(body) == state(results, ["img"], "http://h:1")
    page = made.pages["/"][0].decode()
    for name in ("img", "seg", "surf"):
        assert f"<b>{name}</b>" in page
        assert f"states/with/{name}.json" in page
    for name in ("img", "surf"):  # seg has no chunks here: no picture
        assert f"/v/ngprecomputed/pictures/{name}.png" in page
        assert made.pages[f"/v/ngprecomputed/pictures/{name}.png"][0].startswith(b"\x89PNG")
    assert "states/all.json" in page
    assert [n for n, _ in site.build(results, "http://h:1", "c/", only=["seg"]).links] == ["seg"]
    with pytest.raises(InputError, match="no dataset nope"):
        site.build(results, "http://h:1", "c/", only=["nope"])
    assert state_url({"a": 1}, "c/") == "c/#!%7B%22a%22%3A1%7D"


def test_a_dataset_folder_is_not_a_results_folder(results):
    assert datasets(results / "seg") == []  # its mesh/ and names/ hold an info, not scales
    with pytest.raises(InputError, match="no dataset here"):
        site.build(results / "seg", "http://h:1", "c/")


def test_bad_transform_is_one_line(results):
    (results / "img" / "transform.json").write_text("[[1, 2], [3, 4]]")
    with pytest.raises(InputError, match="transform.json: not a 4x4") as err:
        state(results, ["img"], "http://h:1")
    assert "\n" not in str(err.value)


def test_segment_colors_file(tmp_path):
    assert write_segment_colors(tmp_path / "names", {}) is None
    assert not (tmp_path / "names").exists()
    path = write_segment_colors(tmp_path / "names", {12: "#010203", 2: "#ffffff"})
    assert json.loads(path.read_text()) == {"2": "#ffffff", "12": "#010203"}


def test_view_unknown_dataset_exits_with_one_line(results, capsys):
    assert main(["view", str(results), "--port", "0", "--dataset", "nope"]) == 1
    err = capsys.readouterr().err
    assert "no dataset nope" in err and "Traceback" not in err


# --- the web client on the data server ---------------------------------------------------------


@pytest.fixture(scope="module")
def client_site(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("client_site")
    results = tmp_path / "results"
    (results / "img" / "s0").mkdir(parents=True)
    (results / "img" / "s0" / "0-4_0-5_0-6").write_bytes(VALUES.tobytes(order="F"))
    client = tmp_path / "client"
    client.mkdir()
    (client / "index.html").write_text("<html><head></head>ng</html>")
    (client / "a1.wasm").write_bytes(b"\0asm")
    (client / "main.js").write_text("x=1")
    (tmp_path / "secret.txt").write_text("SECRET")
    server = make_server(results, client=client)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


SHIMMED = b"<html><head>" + CLIENT_SHIM + b"</head>ng</html>"


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path, kind, body",
    [
        ("/v/ngprecomputed/", "text/html", b"<html><head>" + CLIENT_SHIM + b"</head>ng</html>"),
        (
            "/v/ngprecomputed/index.html",
            "text/html",
            b"<html><head>" + CLIENT_SHIM + b"</head>ng</html>",
        ),
        ("/v/ngprecomputed/a1.wasm", "application/wasm", b"\0asm"),
        ("/v/ngprecomputed/main.js", "text/javascript", b"x=1"),
        ("/img/s0/0-4_0-5_0-6", "application/octet-stream", VALUES.tobytes(order="F")),
    ],
    ids=["folder", "index", "wasm", "js", "data"],
)
def test_client_and_data_on_one_server(client_site, path, kind, body):
    status, headers, got = get(client_site, path)
    assert status == 200 and got == body
    assert headers.get_content_type() == kind


@pytest.mark.parametrize(
    "path",
    [
        "/v/ngprecomputed/../../secret.txt",
        "/v/ngprecomputed/%2e%2e/%2e%2e/secret.txt",
        "/v/ngprecomputed/missing.js",
        "/v/other/index.html",
        "/v/ngprecomputed//index.html",
    ],
)
def test_client_paths_stay_inside(client_site, path):
    status, _, body = get(client_site, path)
    assert status == 404 and b"SECRET" not in body


def test_favicon_is_no_content_with_a_client(client_site):
    assert get(client_site, "/favicon.ico")[0] == 204
