"""The generated nginx and Apache configs, run by the real Debian servers, against serve.py.

Each server serves one small results folder made here by hand (raw, gzip-stored, nested-layout,
sharded volumes; legacy meshes with ``1:0`` and with ``1.json`` manifests). Every file a viewer
fetches is requested over loopback HTTP and compared with the numpy source; TensorStore (strict:
a missing chunk is an error) reads every scale through each server as an independent reader,
the sharded one with Range requests.
"""

import gzip
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ngprecomputed.errors import InputError
from ngprecomputed.serve import make_server
from ngprecomputed.webconfig import apache_config, apache_htaccess, nginx_config, write_configs

APACHE_MODULES = Path("/usr/lib/apache2/modules")
APACHE_LOAD = ["mpm_event", "authz_core", "alias", "mime", "rewrite", "headers"]
JSON = "application/json"
OCTETS = "application/octet-stream"
EXPOSED = ("Content-Range", "Content-Length", "Content-Encoding", "Accept-Ranges")

# --- the results folder -----------------------------------------------------------------------


def volume(shape, seed, dtype=np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 60000, size=shape).astype(dtype)


def scale(key, size, chunk, offset=(0, 0, 0), resolution=(1, 1, 1), **extra) -> dict:
    return {
        "key": key,
        "size": list(size),
        "resolution": list(resolution),
        "voxel_offset": list(offset),
        "chunk_sizes": [list(chunk)],
        "encoding": "raw",
        **extra,
    }


def image_info(*scales) -> dict:
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": "image",
        "data_type": "uint16",
        "num_channels": 1,
        "scales": list(scales),
    }


VOLUME_INFO = image_info(
    scale("s0", (37, 20, 9), (16, 16, 8)), scale("s1", (19, 10, 5), (8, 8, 8), resolution=(2, 2, 2))
)
NESTED_INFO = image_info(
    scale("s0", (37, 20, 9), (16, 16, 8), offset=(-16, 3, -4)),
    scale("s1", (19, 10, 5), (8, 8, 8), offset=(-8, 1, -2), resolution=(2, 2, 2)),
)
SHARDING = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 0,
    "hash": "identity",
    "minishard_bits": 0,
    "shard_bits": 0,
    "minishard_index_encoding": "raw",
    "data_encoding": "raw",
}
SHARDED_INFO = image_info(scale("s0", (96, 96, 64), (32, 32, 32), sharding=SHARDING))
VOLUMES = {
    "raw": [volume((37, 20, 9), 1), volume((19, 10, 5), 2)],
    "sharded": [volume((96, 96, 64), 3)],
}
VOLUMES["gz"] = VOLUMES["nested"] = VOLUMES["raw"]
INFOS = {"raw": VOLUME_INFO, "gz": VOLUME_INFO, "nested": NESTED_INFO, "sharded": SHARDED_INFO}
SEGMENTS = {1: 3, 2: 1}  # segment id: number of mesh fragments


def chunk_boxes(info_scale: dict):
    """(flat name, box in array coordinates) of every chunk of a scale, from its info alone."""
    size, offset = info_scale["size"], info_scale["voxel_offset"]
    chunk = info_scale["chunk_sizes"][0]
    grid = [-(-s // c) for s, c in zip(size, chunk, strict=True)]
    for k in range(grid[2]):
        for j in range(grid[1]):
            for i in range(grid[0]):
                box = [
                    (g * c, min((g + 1) * c, s))
                    for g, c, s in zip((i, j, k), chunk, size, strict=True)
                ]
                name = "_".join(
                    f"{lo + o}-{hi + o}" for (lo, hi), o in zip(box, offset, strict=True)
                )
                yield name, tuple(slice(lo, hi) for lo, hi in box)


def chunk_bytes(array: np.ndarray, box) -> bytes:
    return np.asfortranarray(array[box]).tobytes(order="F")


def morton(pos, grid) -> int:
    """The compressed Morton code of a grid position (FORMAT.md)."""
    code, bit = 0, 0
    for i in range(max(grid).bit_length()):
        for axis in range(3):
            if (1 << i) < grid[axis]:
                code |= ((pos[axis] >> i) & 1) << bit
                bit += 1
    return code


def write_single_shard(path: Path, chunks: dict[int, bytes]) -> None:
    """One shard, one minishard, raw encodings: [index][data][minishard index]."""
    ids = sorted(chunks)
    data = b"".join(chunks[i] for i in ids)
    deltas = np.diff(np.array([0, *ids], dtype=np.uint64))
    offsets = np.zeros(len(ids), dtype=np.uint64)  # each chunk right after the previous one
    sizes = np.array([len(chunks[i]) for i in ids], dtype=np.uint64)
    minishard = np.stack([deltas, offsets, sizes]).astype("<u8").tobytes()
    index = np.array([len(data), len(data) + len(minishard)], dtype="<u8").tobytes()
    path.write_bytes(index + data + minishard)


def fragment_bytes(segment: int, k: int) -> bytes:
    verts = np.random.default_rng(100 * segment + k).random((4, 3)).astype("<f4")
    faces = np.array([[0, 1, 2], [0, 2, 3]], dtype="<u4")
    return np.uint32(4).astype("<u4").tobytes() + verts.tobytes() + faces.tobytes()


def build_results(root: Path) -> None:
    for name in ("raw", "gz", "nested"):
        ds = root / name
        info = INFOS[name]
        ds.mkdir(parents=True)
        text = json.dumps(info).encode()
        if name == "gz":
            (ds / "info.gz").write_bytes(gzip.compress(text))
        else:
            (ds / "info").write_bytes(text)
        for k, sc in enumerate(info["scales"]):
            for flat, box in chunk_boxes(sc):
                data = chunk_bytes(VOLUMES[name][k], box)
                path = ds / sc["key"] / flat
                if name == "nested":
                    path = ds / sc["key"] / flat.replace("_", "/")
                if name == "gz" or (name == "nested" and k == 1):
                    path, data = path.with_name(path.name + ".gz"), gzip.compress(data)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)

    ds = root / "sharded"
    (ds / "s0").mkdir(parents=True)
    (ds / "info").write_text(json.dumps(SHARDED_INFO))
    sc = SHARDED_INFO["scales"][0]
    grid = [-(-s // c) for s, c in zip(sc["size"], sc["chunk_sizes"][0], strict=True)]
    chunks = {}
    for _, box in chunk_boxes(sc):
        pos = tuple(b.start // c for b, c in zip(box, sc["chunk_sizes"][0], strict=True))
        chunks[morton(pos, grid)] = chunk_bytes(VOLUMES["sharded"][0], box)
    write_single_shard(ds / "s0" / "0.shard", chunks)

    for name, colon in (("seg_colon", True), ("seg_json", False)):
        ds = root / name
        (ds / "mesh").mkdir(parents=True)
        info = {**image_info(), "type": "segmentation", "data_type": "uint32", "mesh": "mesh"}
        (ds / "info").write_text(json.dumps(info))
        (ds / "mesh" / "info").write_text(json.dumps({"@type": "neuroglancer_legacy_mesh"}))
        for segment, count in SEGMENTS.items():
            frags = [f"{segment}_{k}" for k in range(count)]
            manifest = json.dumps({"fragments": frags}).encode()
            if colon:
                (ds / "mesh" / f"{segment}:0").write_bytes(manifest)
            elif segment == 2:  # a gzip-stored manifest too
                (ds / "mesh" / f"{segment}.json.gz").write_bytes(gzip.compress(manifest))
            else:
                (ds / "mesh" / f"{segment}.json").write_bytes(manifest)
            for k, frag in enumerate(frags):
                (ds / "mesh" / frag).write_bytes(fragment_bytes(segment, k))


# --- the servers ----------------------------------------------------------------------------


def ensure_installed(binary: str, package: str) -> str:
    """The path of a Debian server binary; installs its package as root, else fails clearly."""
    for folder in (None, "/usr/sbin", "/usr/bin"):
        found = shutil.which(binary, path=folder)
        if found:
            return found
    if os.geteuid() != 0:
        pytest.fail(f"{binary} is missing: run 'apt-get install -y {package}' as root first")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = shutil.which(binary, path="/usr/sbin:/usr/bin")
    assert found, f"{binary} still missing after installing {package}"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    for _ in range(200):  # at most ~20 s
        if proc.poll() is not None:
            text = log.read_text() if log.exists() else ""
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}:\n{text[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{proc.args[0]} does not listen on port {port}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def start_nginx(base: Path, results: Path, port: int, location: str) -> subprocess.Popen:
    nginx = ensure_installed("nginx", "nginx")
    (base / "nginx-site.conf").write_text(
        nginx_config(results, port=port, host="127.0.0.1", location=location)
    )
    temps = "\n".join(
        f"    {kind}_temp_path {base}/nginx-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user www-data;" if os.geteuid() == 0 else ""  # workers as in production
    (base / "nginx.conf").write_text(
        f"""{user}
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temps}
    include {base}/nginx-site.conf;
}}
"""
    )
    cmd = [nginx, "-p", f"{base}/", "-c", f"{base}/nginx.conf", "-g", "daemon off;"]
    return subprocess.Popen(cmd, stderr=open(base / "nginx-stderr.log", "wb"))  # noqa: SIM115


def start_apache(base: Path, results: Path, port: int, variant: str) -> subprocess.Popen:
    apache = ensure_installed("apache2", "apache2")
    if variant == "htaccess":  # a host where the results folder may only hold a .htaccess
        shutil.copy(base / "conf" / ".htaccess", results / ".htaccess")
        site = f"""Listen 127.0.0.1:{port}
<VirtualHost 127.0.0.1:{port}>
    DocumentRoot "{results}"
    <Directory "{results}">
        AllowOverride FileInfo
        Require all granted
    </Directory>
</VirtualHost>
"""
    else:
        location = "/ngp/" if variant == "alias" else "/"
        site = apache_config(results, port=port, host="127.0.0.1", location=location)
    (base / "apache-site.conf").write_text(site)
    modules = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in APACHE_LOAD)
    user = "User www-data\nGroup www-data" if os.geteuid() == 0 else ""
    (base / "apache.conf").write_text(
        f"""ServerRoot "{base}"
{modules}
{user}
ServerName localhost
PidFile {base}/apache.pid
ErrorLog {base}/apache-error.log
LogLevel warn
Mutex file:{base} default
DefaultRuntimeDir {base}
TypesConfig /dev/null
StartServers 1
Include {base}/apache-site.conf
"""
    )
    cmd = [apache, "-f", f"{base}/apache.conf", "-DFOREGROUND"]
    return subprocess.Popen(cmd, stderr=open(base / "apache-stderr.log", "wb"))  # noqa: SIM115


@dataclass
class Server:
    name: str
    port: int
    prefix: str  # the URL path the results folder is served at


@pytest.fixture(scope="module")
def site():
    """A world-readable results folder (the servers' workers run as www-data) and config dir."""
    base = Path(tempfile.mkdtemp(prefix="ngp-webconfig-"))
    try:
        base.chmod(0o755)
        results = base / "results"
        build_results(results)
        write_configs(results, base / "conf")
        for folder, dirs, files in os.walk(base):
            for d in dirs:
                os.chmod(os.path.join(folder, d), 0o755)
            for f in files:
                os.chmod(os.path.join(folder, f), 0o644)
        yield base, results
    finally:
        shutil.rmtree(base, ignore_errors=True)


SERVERS = ["nginx", "nginx-alias", "apache", "apache-alias", "apache-htaccess", "serve.py"]


@pytest.fixture(scope="module", params=SERVERS)
def server(request, site):
    base, results = site
    name = request.param
    port = free_port()
    prefix = "/ngp/" if name.endswith("-alias") else "/"
    if name == "serve.py":
        httpd = make_server(results, port=port)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield Server(name, port, prefix)
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)
        return
    if name.startswith("nginx"):
        proc = start_nginx(base, results, port, prefix)
        log = base / "nginx-error.log"
    else:
        proc = start_apache(base, results, port, name.partition("-")[2])
        log = base / "apache-error.log"
    try:
        wait_until_listening(proc, port, log)
        yield Server(name, port, prefix)
    finally:
        stop(proc)
        (results / ".htaccess").unlink(missing_ok=True)


def fetch(server: Server, method: str, path: str, headers: dict | None = None):
    """(status, headers, body) of one request for ``path`` under the server's prefix."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.request(method, server.prefix + path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def check_file(server: Server, path: str, expected: bytes, *, gz: bool, json_type: bool) -> None:
    """A GET as a viewer makes it: status, CORS, types, encoding, bytes."""
    status, headers, body = fetch(server, "GET", path)
    assert status == 200, (path, status)
    assert headers["Access-Control-Allow-Origin"] == "*"
    exposed = [h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")]
    assert set(EXPOSED) <= set(exposed)
    assert headers.get_content_type() == (JSON if json_type else OCTETS), path
    assert headers["Content-Length"] == str(len(body))
    if gz:
        assert headers["Content-Encoding"] == "gzip", path
        body = gzip.decompress(body)
    else:
        assert headers["Content-Encoding"] is None, path
    assert body == expected, path


# --- what a viewer fetches ------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["raw", "gz", "nested"])
def test_every_chunk_of_every_scale(server, dataset):
    info = INFOS[dataset]
    check_file(
        server, f"{dataset}/info", json.dumps(info).encode(), gz=dataset == "gz", json_type=True
    )
    count = 0
    for k, sc in enumerate(info["scales"]):
        for name, box in chunk_boxes(sc):
            expected = chunk_bytes(VOLUMES[dataset][k], box)
            gz = dataset == "gz" or (dataset == "nested" and k == 1)
            check_file(server, f"{dataset}/{sc['key']}/{name}", expected, gz=gz, json_type=False)
            count += 1
    assert count == 3 * 2 * 2 + 3 * 2 * 1


@pytest.mark.parametrize("dataset", ["raw", "gz", "nested", "sharded"])
def test_tensorstore_reads_every_scale_over_http(server, dataset):
    """An independent reader through the server; the sharded scale is read by Range requests."""
    import tensorstore as ts

    for k, expected in enumerate(VOLUMES[dataset]):
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": f"http://127.0.0.1:{server.port}{server.prefix}{dataset}/",
                "scale_index": k,
                "fill_missing_data_reads": False,
                "recheck_cached_data": False,
                "context": {"http_request_retries": {"max_retries": 1}},  # fail, not retry
            }
        ).result()
        got = np.asarray(store.read().result())[..., 0]
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dataset", ["seg_colon", "seg_json"])
def test_meshes_manifests_and_fragments(server, dataset):
    """info -> mesh dir -> <id>:0 manifests -> fragments, as the viewer walks them."""
    status, _, body = fetch(server, "GET", f"{dataset}/info")
    assert status == 200
    mesh = json.loads(body)["mesh"]
    check_file(
        server,
        f"{dataset}/{mesh}/info",
        json.dumps({"@type": "neuroglancer_legacy_mesh"}).encode(),
        gz=False,
        json_type=True,
    )
    for segment, count in SEGMENTS.items():
        status, headers, body = fetch(server, "GET", f"{dataset}/{mesh}/{segment}:0")
        assert status == 200
        assert headers.get_content_type() == JSON
        stored_gz = dataset == "seg_json" and segment == 2
        assert headers["Content-Encoding"] == ("gzip" if stored_gz else None)
        manifest = json.loads(gzip.decompress(body) if stored_gz else body)
        assert manifest == {"fragments": [f"{segment}_{k}" for k in range(count)]}
        for k, frag in enumerate(manifest["fragments"]):
            check_file(
                server,
                f"{dataset}/{mesh}/{frag}",
                fragment_bytes(segment, k),
                gz=False,
                json_type=False,
            )


# --- headers ----------------------------------------------------------------------------------

SHARD = "sharded/s0/0.shard"


def shard_bytes(site) -> bytes:
    return (site[1] / SHARD).read_bytes()


def test_head_has_the_get_headers_and_no_body(server):
    status, headers, body = fetch(server, "HEAD", "raw/s0/0-16_0-16_0-8")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(16 * 16 * 8 * 2)
    assert headers.get_content_type() == OCTETS
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = fetch(server, "HEAD", "gz/info")
    assert status == 200 and body == b""
    assert headers["Content-Encoding"] == "gzip"
    assert headers.get_content_type() == JSON
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("asked", [None, "x-custom"])
def test_options_preflight(server, asked):
    headers = {"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"}
    if asked:
        headers["Access-Control-Request-Headers"] = asked
    status, got, body = fetch(server, "OPTIONS", "sharded/info", headers)
    assert status == 204 and body == b""
    assert got["Access-Control-Allow-Origin"] == "*"
    assert got["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    allowed = [h.strip().lower() for h in got["Access-Control-Allow-Headers"].split(",")]
    assert allowed == ["range"] + ([asked] if asked else [])
    assert got["Access-Control-Max-Age"] == "86400"
    assert set(EXPOSED) <= {h.strip() for h in got["Access-Control-Expose-Headers"].split(",")}


def test_preflight_headers_only_on_preflight(server):
    _, headers, _ = fetch(server, "GET", "raw/info", {"Access-Control-Request-Headers": "x"})
    assert headers["Access-Control-Allow-Methods"] is None
    assert headers["Access-Control-Allow-Headers"] is None


def test_missing_file_is_404_with_cors(server):
    for path in ("raw/s0/0-1_0-1_0-1", "seg_json/mesh/7:0", "nope/info"):
        status, headers, _ = fetch(server, "GET", path)
        assert status == 404, path
        assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "spec, start, end",
    [
        ("bytes=100-4195", 100, 4195),  # single
        ("bytes=-5000", -5000, -1),  # suffix
        ("bytes=1000000-", 1000000, -1),  # open-ended
        ("bytes=5-99999999", 5, -1),  # end past the size: clipped
    ],
)
def test_single_range_on_a_shard(server, site, spec, start, end):
    data = shard_bytes(site)
    size = len(data)
    start, end = start % size, end % size
    status, headers, body = fetch(server, "GET", SHARD, {"Range": spec})
    assert status == 206
    assert body == data[start : end + 1]
    assert headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert headers["Content-Length"] == str(end - start + 1)
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers.get_content_type() == OCTETS


def test_unsatisfiable_range_is_416(server, site):
    size = len(shard_bytes(site))
    status, headers, _ = fetch(server, "GET", SHARD, {"Range": f"bytes={size}-"})
    assert status == 416
    if server.name == "apache-htaccess":  # the size needs filesize(), refused in .htaccess
        assert headers["Content-Range"] is None
    else:
        assert headers["Content-Range"] == f"bytes */{size}"
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_several_ranges_get_the_whole_file(server, site):
    data = shard_bytes(site)
    status, headers, body = fetch(server, "GET", SHARD, {"Range": "bytes=0-9,20-29"})
    if server.name == "apache-htaccess":  # MaxRanges cannot be set in a .htaccess
        assert status == 206
        assert headers.get_content_type() == "multipart/byteranges"
        return
    assert status == 200 and body == data


def test_range_on_a_gz_chunk_applies_to_the_stored_bytes(server, site):
    """Apache and serve.py answer a range of the stored gzip bytes; nginx's gzip_static ignores
    Range (a valid answer: the whole file, 200). Readers never ask: ranged files are plain."""
    stored = (site[1] / "gz" / "s0" / "0-16_0-16_0-8.gz").read_bytes()
    status, headers, body = fetch(server, "GET", "gz/s0/0-16_0-16_0-8", {"Range": "bytes=0-9"})
    assert headers["Content-Encoding"] == "gzip"
    if server.name.startswith("nginx"):
        assert status == 200 and body == stored
        assert headers["Content-Range"] is None
        return
    assert status == 206
    assert headers["Content-Range"] == f"bytes 0-9/{len(stored)}"
    assert body == stored[:10]


# --- the generator itself ---------------------------------------------------------------------


def test_write_configs_writes_four_files(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    written = write_configs(results, tmp_path / "out", port=9000)
    names = sorted(p.name for p in written)
    assert names == [".htaccess", "apache.conf", "nginx.conf", "s3-cors.json"]
    rule = json.loads((tmp_path / "out" / "s3-cors.json").read_text())["CORSRules"][0]
    assert "Content-Range" in rule["ExposeHeaders"] and rule["AllowedMethods"] == ["GET", "HEAD"]
    assert (tmp_path / "out" / ".htaccess").read_text() == apache_htaccess()
    assert f'root "{results.resolve()}";' in (tmp_path / "out" / "nginx.conf").read_text()
    assert "Listen 9000" in (tmp_path / "out" / "apache.conf").read_text()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: write_configs(p / "missing", p / "out"), "not a directory"),
        (lambda p: nginx_config(p / 'a"b'), "cannot hold its name"),
        (lambda p: apache_config(p / "a$b"), "cannot hold its name"),
        (lambda p: nginx_config(p, location="data"), "location 'data'"),
        (lambda p: apache_config(p, port=70000), "port 70000"),
        (lambda p: nginx_config(p, server_name="a;b"), "server name"),
    ],
)
def test_bad_input_is_one_line(tmp_path, call, message):
    with pytest.raises(InputError, match=message) as err:
        call(tmp_path)
    assert "\n" not in str(err.value)


WEBCONFIG_FILES = ("nginx.conf", "apache.conf", ".htaccess", "s3-cors.json")


def test_webconfig_command(tmp_path, capsys):
    from ngprecomputed.cli import main

    results = tmp_path / "results"
    results.mkdir()
    assert main(["webconfig", str(results), "--out", str(tmp_path / "conf"), "--port", "9001"]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(tmp_path / "conf" / n) for n in WEBCONFIG_FILES)
    assert "listen 9001;" in (tmp_path / "conf" / "nginx.conf").read_text()
    assert main(["webconfig", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    assert "not a directory" in capsys.readouterr().err
