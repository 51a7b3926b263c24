"""The read-only HTTP server: real sockets on 127.0.0.1, a server thread, urllib/http.client."""

import gzip
import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ngprecomputed.serve import dataset_urls, make_server, parse_range

SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"
RAW = bytes(range(10))  # a raw chunk: 0..9
GZ_ORIGINAL = bytes(range(200)) * 3
MESH_MANIFEST = {"fragments": ["5:0:1"]}
INFO = {"@type": "neuroglancer_multiscale_volume", "type": "image", "scales": []}

TS_INFO = {
    "@type": "neuroglancer_multiscale_volume",
    "type": "image",
    "data_type": "uint8",
    "num_channels": 1,
    "scales": [
        {
            "key": "s0",
            "size": [20, 10, 6],
            "resolution": [1, 1, 1],
            "voxel_offset": [0, 0, 0],
            "chunk_sizes": [[16, 16, 16]],
            "encoding": "raw",
        }
    ],
}


def ts_volume() -> np.ndarray:
    return (np.arange(20 * 10 * 6, dtype=np.uint32) * 7 % 251).astype(np.uint8).reshape(20, 10, 6)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    root = base / "results"
    outside = base / "outside.txt"
    outside.write_bytes(SECRET)

    ds = root / "ds"
    (ds / "s0").mkdir(parents=True)
    (ds / "info").write_text(json.dumps(INFO))
    (ds / "s0" / "0-2_0-5_0-1").write_bytes(RAW)
    (ds / "s0" / "2-4_0-5_0-1.gz").write_bytes(gzip.compress(GZ_ORIGINAL))
    (ds / "mesh").mkdir()
    (ds / "mesh" / "5.json").write_text(json.dumps(MESH_MANIFEST))
    (ds / "mesh" / "5:0:1").write_bytes(b"\x01\x02\x03")
    (ds / "escape").symlink_to(outside)
    (ds / "escape_dir").symlink_to(base, target_is_directory=True)
    (ds / "inside").symlink_to(ds / "info")

    # A tiny real dataset for TensorStore: x split in two chunks, the second one gz-only.
    vol = ts_volume()
    tsds = root / "tsds"
    (tsds / "s0").mkdir(parents=True)
    (tsds / "info").write_text(json.dumps(TS_INFO))
    (tsds / "s0" / "0-16_0-10_0-6").write_bytes(vol[0:16].tobytes(order="F"))
    (tsds / "s0" / "16-20_0-10_0-6.gz").write_bytes(gzip.compress(vol[16:20].tobytes(order="F")))

    server = make_server(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def request(port, method, path, headers=None):
    """(status, headers, body) for one request; the path is sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, resp.headers, body
    finally:
        conn.close()


def test_get_info_with_cors_and_json(site):
    _, port = site
    status, headers, body = request(port, "GET", "/ds/info")
    assert status == 200
    assert json.loads(body) == INFO
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Accept-Ranges"] == "bytes"
    assert "Content-Range" in headers["Access-Control-Expose-Headers"]


def test_symlink_inside_the_root_is_served(site):
    _, port = site
    status, headers, body = request(port, "GET", "/ds/inside")
    assert status == 200 and json.loads(body) == INFO


def test_head_has_headers_no_body(site):
    _, port = site
    status, headers, body = request(port, "HEAD", "/ds/s0/0-2_0-5_0-1")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(len(RAW))
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_options_preflight(site):
    _, port = site
    status, headers, body = request(
        port,
        "OPTIONS",
        "/ds/info",
        {"Origin": "http://example.org", "Access-Control-Request-Headers": "x-custom"},
    )
    assert status == 204 and body == b""
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    allowed = [h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")]
    assert "range" in allowed and "x-custom" in allowed
    exposed = headers["Access-Control-Expose-Headers"]
    for name in ("Content-Range", "Content-Length", "Content-Encoding", "Accept-Ranges"):
        assert name in exposed


@pytest.mark.parametrize(
    "spec, start, end",
    [("bytes=2-5", 2, 5), ("bytes=-3", 7, 9), ("bytes=4-", 4, 9), ("bytes=8-100", 8, 9)],
)
def test_single_range(site, spec, start, end):
    _, port = site
    status, headers, body = request(port, "GET", "/ds/s0/0-2_0-5_0-1", {"Range": spec})
    assert status == 206
    assert body == RAW[start : end + 1]
    assert headers["Content-Range"] == f"bytes {start}-{end}/{len(RAW)}"
    assert headers["Content-Length"] == str(end - start + 1)
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_unsatisfiable_range(site):
    _, port = site
    status, headers, body = request(port, "GET", "/ds/s0/0-2_0-5_0-1", {"Range": "bytes=999999-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(RAW)}"
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_multiple_ranges_get_whole_file(site):
    _, port = site
    status, headers, body = request(port, "GET", "/ds/s0/0-2_0-5_0-1", {"Range": "bytes=0-1,4-5"})
    assert status == 200 and body == RAW
    assert "Content-Range" not in headers


def test_parse_range_edges():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=5-2", 10) is None  # invalid: ignored
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=-0", 10) == "unsatisfiable"
    assert parse_range("bytes=-50", 10) == (0, 9)
    assert parse_range("bytes=0-", 0) == "unsatisfiable"


def test_gz_only_chunk(site):
    _, port = site
    status, headers, body = request(port, "GET", "/ds/s0/2-4_0-5_0-1")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/octet-stream"
    assert gzip.decompress(body) == GZ_ORIGINAL


def test_gz_only_chunk_range_is_on_stored_bytes(site):
    root, port = site
    stored = (root / "ds" / "s0" / "2-4_0-5_0-1.gz").read_bytes()
    status, headers, body = request(port, "GET", "/ds/s0/2-4_0-5_0-1", {"Range": "bytes=0-9"})
    assert status == 206 and body == stored[:10]
    assert headers["Content-Range"] == f"bytes 0-9/{len(stored)}"
    assert headers["Content-Encoding"] == "gzip"


@pytest.mark.parametrize("path", ["/ds/mesh/5:0", "/ds/mesh/5%3A0", "/ds/mesh/5%3a0"])
def test_manifest_falls_back_to_json(site, path):
    _, port = site
    status, headers, body = request(port, "GET", path)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == MESH_MANIFEST


def test_mesh_fragment_is_binary(site):
    _, port = site
    status, headers, body = request(port, "GET", "/ds/mesh/5:0:1")
    assert status == 200 and body == b"\x01\x02\x03"
    assert headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    "path",
    [
        "/ds/../outside.txt",
        "/../outside.txt",
        "/ds/%2e%2e/%2e%2e/outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E%2Foutside.txt",
        "/ds/..%2F..%2Foutside.txt",
        "//etc/passwd",
        "/ds\\..\\..\\outside.txt",
        "/ds/%5c..%5coutside.txt",
        "/ds/info%00",
        "/ds/escape",
        "/ds/escape_dir/outside.txt",
        "/ds/./info",
        "/ds/missing",
        "/%ff",
    ],
)
def test_nothing_outside_the_root(site, path):
    _, port = site
    status, headers, body = request(port, "GET", path)
    assert status == 404
    assert SECRET not in body
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/ds", "/ds/", "/ds/s0", "/", ""])
def test_directories_are_404(site, path):
    _, port = site
    status, _, body = request(port, "GET", path or "/")
    assert status == 404
    assert b"0-2_0-5_0-1" not in body


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
def test_writes_are_405(site, method):
    root, port = site
    before = (root / "ds" / "info").read_bytes()
    status, headers, _ = request(port, method, "/ds/info", {"Content-Length": "0"})
    assert status == 405
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert (root / "ds" / "info").read_bytes() == before


def test_concurrent_gets(site):
    _, port = site
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: request(port, "GET", "/ds/s0/0-2_0-5_0-1"), range(20)))
    assert all(status == 200 and body == RAW for status, _, body in results)


def test_dataset_urls(site):
    root, port = site
    (root / "surf").mkdir()
    (root / "surf" / "surf.vtk").write_text("# vtk DataFile Version 3.0\n")
    try:
        urls = dict(dataset_urls(root, f"http://127.0.0.1:{port}", ["ds", "surf", "tsds"]))
    finally:
        (root / "surf" / "surf.vtk").unlink()
        (root / "surf").rmdir()
    assert urls == {
        "ds": f"precomputed://http://127.0.0.1:{port}/ds",
        "surf": f"vtk://http://127.0.0.1:{port}/surf/surf.vtk",
        "tsds": f"precomputed://http://127.0.0.1:{port}/tsds",
    }


def test_tensorstore_reads_over_http(site):
    ts = pytest.importorskip("tensorstore")
    _, port = site
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": f"http://127.0.0.1:{port}/tsds/",
            "scale_index": 0,
            "fill_missing_data_reads": False,
        }
    ).result()
    data = store.read().result()
    assert data.shape == (20, 10, 6, 1)
    np.testing.assert_array_equal(data[..., 0], ts_volume())
