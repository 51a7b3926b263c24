"""A small read-only HTTP server for a results folder, for Neuroglancer and TensorStore.

Standard library only: a :class:`http.server.ThreadingHTTPServer` (daemon threads) with a
:class:`http.server.BaseHTTPRequestHandler` subclass. What it does:

* ``GET``, ``HEAD`` and CORS preflight ``OPTIONS`` (204); every other method gets 405.
  ``Access-Control-Allow-Origin: *`` is on every response, and the headers a client needs to read
  (``Content-Range``, ``Content-Length``, ``Content-Encoding``, ``Accept-Ranges``) are exposed.
* Byte ranges on the bytes *as stored on disk*: a single range (``bytes=a-b``, ``bytes=a-``,
  ``bytes=-n``) answers 206 with ``Content-Range``; an unsatisfiable one answers 416 with
  ``Content-Range: bytes */SIZE``. A request for several ranges is deliberately refused in the
  way HTTP allows: it is answered 200 with the whole file (no ``multipart/byteranges``).
  A malformed ``Range`` header is ignored (200 with the whole file), as RFC 9110 allows.
* ``name`` missing but ``name.gz`` present: the stored gzip bytes are sent with
  ``Content-Encoding: gzip`` and the Content-Type of ``name`` (a Range applies to the gzip bytes).
* A flat chunk name ``<key>/<x0-x1>_<y0-y1>_<z0-z1>`` missing (plain and ``.gz``): the nested
  file ``<key>/<x0-x1>/<y0-y1>/<z0-z1>`` (neuroglancer-scripts' layout), or its ``.gz``; as the
  configurations of :mod:`ngprecomputed.webconfig` do.
* ``<id>:0`` missing but ``<id>.json`` present (mesh manifests on filesystems that forbid ``:``):
  ``<id>.json`` is served.
* Optionally a Neuroglancer web client folder under ``/v/<token>/`` (``ngprecomputed view``):
  the client only starts at such a path. Its files get their usual types (``.wasm`` as
  ``application/wasm``, which WebAssembly streaming compilation requires).
* Pages made in memory (``pages``: the index page at ``/``, the views' states, pictures; see
  :mod:`ngprecomputed.site`) are answered before any file.
* The client's ``index.html`` gets :data:`CLIENT_SHIM` first: the wheel's client is built for
  the Python integration and opens an ``EventSource`` on ``/events/<token>``; with no Python
  server it shows "Disconnected from Python server" forever. The shim answers that stream as
  connected (and holds no connection: a browser allows 6 per server, shared by every tab).
* Content-Type as a bucket gets it (:func:`ngprecomputed.storage.content_type`): JSON for
  ``info``, ``*.json`` and ``*:0``, PNG for previews, everything else (chunks, shards, mesh
  fragments, annotation lists) ``application/octet-stream``.
* Nothing outside the root: paths with ``..`` or ``.`` segments (also percent-encoded), empty
  segments (so ``//etc/passwd``), backslashes or NUL bytes are 404, and every file is resolved
  (symlinks included) and must stay inside the resolved root. Directories are 404 (no listings).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mimetypes
import os
import re
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from . import storage
from .errors import InputError

log = logging.getLogger(__name__)

ALLOW_METHODS = "GET, HEAD, OPTIONS"
EXPOSE_HEADERS = "Content-Range, Content-Length, Content-Encoding, Accept-Ranges"
BLOCK = 1 << 16
_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
# a flat chunk name x0-x1_y0-y1_z0-z1 (offsets may be negative), as webconfig.FLAT_CHUNK
_FLAT_CHUNK = re.compile(r"^(-?\d+--?\d+)_(-?\d+--?\d+)_(-?\d+--?\d+)$")
CLIENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",
    ".map": "application/json",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}


CLIENT_SHIM = b"""<script>
(() => {
  const Real = window.EventSource;  // ngprecomputed: no Python server behind this client
  window.EventSource = function (url, options) {
    if (!String(url).includes("/events/")) return new Real(url, options);
    const quiet = { url: String(url), readyState: 1, close() {} };
    setTimeout(() => quiet.onopen && quiet.onopen(), 0);
    return quiet;
  };
})();
</script>"""


def client_type(name: str) -> str:
    """The Content-Type of a web client file."""
    suffix = os.path.splitext(name)[1].lower()
    return CLIENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _inside(root: Path, path: Path) -> Path | None:
    """``path`` resolved (symlinks followed) if it is a file inside ``root``, else None."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_relative_to(root) and resolved.is_file() else None


def safe_segments(raw_path: str) -> list[str] | None:
    """The path segments of a request target, or None when it could leave the root."""
    path = urlsplit(raw_path).path
    if "\\" in path or "\x00" in path or not path.startswith("/"):
        return None
    decoded = unquote(path, errors="strict")
    if "\\" in decoded or "\x00" in decoded:
        return None
    segments = decoded[1:].split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        return None
    return segments


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """A single byte range ``(start, end)`` (end inclusive), ``"unsatisfiable"``, or None.

    None means: send the whole file (no header, a malformed header, or several ranges).
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE.match(spec)
    if not match or (not match[1] and not match[2]):
        return None
    first, last = match[1], match[2]
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


class PrecomputedHandler(BaseHTTPRequestHandler):
    """Serves the files under ``self.server.root`` (read-only)."""

    protocol_version = "HTTP/1.1"
    server_version = "ngprecomputed"

    # --- plumbing -----------------------------------------------------------------------------

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", EXPOSE_HEADERS)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _reply_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        body = b"" if status == 204 else f"{status} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if status != 204:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _find(self) -> tuple[Path, str, bool] | None:
        """``(file on disk, requested name, stored gzipped)`` for the request, or None."""
        path = self.path
        if self.server.client is not None and urlsplit(path).path == self.server.client_path:
            path = self.server.client_path + "index.html"  # the client's own folder
        try:
            segments = safe_segments(path)
        except UnicodeDecodeError:
            return None
        if segments is None:
            return None
        client = self._client_file(segments)
        if client is not None:
            return client
        root: Path = self.server.root
        *parents, name = segments
        folder = root.joinpath(*parents)
        candidates = [(name, False), (name + ".gz", True)]
        nested = _FLAT_CHUNK.match(name)
        if nested and parents:
            layered = "/".join(nested.groups())
            candidates += [(layered, False), (layered + ".gz", True)]
        if name.endswith(":0") and len(name) > 2:
            stem = name[:-2]
            candidates += [(stem + ".json", False), (stem + ".json.gz", True)]
        for filename, gz in candidates:
            found = _inside(root, folder / filename)
            if found is not None:
                return found, name, gz
        return None

    def _client_file(self, segments: list[str]) -> tuple[Path, str, bool] | None:
        """A file of the web client for ``/v/<token>/...`` (``index.html`` for the folder)."""
        client: Path | None = self.server.client
        if client is None or segments[:2] != ["v", self.server.client_token]:
            return None
        rest = segments[2:] or ["index.html"]
        found = _inside(client, client.joinpath(*rest))
        return (found, rest[-1], False) if found is not None else None

    # --- methods ------------------------------------------------------------------------------

    def do_OPTIONS(self) -> None:
        allow = "Range"
        requested = self.headers.get("Access-Control-Request-Headers")
        if requested and requested.strip():
            allow = f"Range, {requested.strip()}"
        self._reply_empty(
            204,
            {
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": allow,
                "Access-Control-Max-Age": "86400",
            },
        )

    def do_GET(self) -> None:
        page = self.server.pages.get(urlsplit(self.path).path)
        if page is not None:
            self._reply_page(*page)
            return
        found = self._find()
        if found is None and self.server.client is not None and self.path == "/favicon.ico":
            self._reply_empty(204)  # browsers ask; the client has none: no console error
            return
        if found is None:
            self._reply_empty(404)
            return
        path, name, gz = found
        client = self.server.client
        if client is not None and not path.is_relative_to(client):
            client = None
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below)
        except OSError:
            self._reply_empty(404)
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            kind = storage.content_type(name) if client is None else client_type(name)
            headers = {"Content-Type": kind, "Accept-Ranges": "bytes"}
            if gz:
                headers["Content-Encoding"] = "gzip"
            wanted = parse_range(self.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                self._reply_empty(416, {"Content-Range": f"bytes */{size}", **headers})
                return
            if wanted is None:
                status, start, length = 200, 0, size
            else:
                start, end = wanted
                status, length = 206, end - start + 1
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command == "HEAD":
                return
            f.seek(start)
            while length > 0:
                block = f.read(min(BLOCK, length))
                if not block:
                    break
                self.wfile.write(block)
                length -= len(block)

    def _reply_page(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")  # a new `view` may serve other states
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self._reply_empty(405, {"Allow": ALLOW_METHODS})

    do_PUT = do_POST = do_DELETE = do_PATCH = _not_allowed


class PrecomputedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        root: Path,
        address: tuple[str, int],
        client: Path | None = None,
        client_token: str = "ngprecomputed",
    ):
        self.root = Path(root).resolve()
        self.client = Path(client).resolve() if client is not None else None
        self.client_token = client_token
        self.client_path = f"/v/{client_token}/"
        self.pages: dict[str, tuple[bytes, str]] = {}  # path -> (body, Content-Type)
        super().__init__(address, PrecomputedHandler)
        if self.client is not None:
            page = (self.client / "index.html").read_bytes()
            at = page.find(b"<head>")
            at = at + len(b"<head>") if at >= 0 else 0
            shimmed = (page[:at] + CLIENT_SHIM + page[at:], CLIENT_TYPES[".html"])
            self.pages[self.client_path] = self.pages[self.client_path + "index.html"] = shimmed

    def handle_error(self, request, client_address) -> None:
        log.debug("error while serving %s", client_address, exc_info=True)


def make_server(
    root: Path, host: str = "127.0.0.1", port: int = 0, client: Path | None = None
) -> ThreadingHTTPServer:
    """A server for ``root`` bound to ``host:port`` (port 0: any free port); not yet serving.
    ``client``: a Neuroglancer web client folder, served under ``/v/ngprecomputed/``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    try:
        return PrecomputedServer(root, (host, port), client)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is in use: choose another (--port)") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise InputError(f"{host} is not an address of this machine (--host)") from None
        raise


def base_url(host: str, port: int) -> str:
    """``http://host:port`` as a browser elsewhere reaches it (a wildcard address: this host)."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    host_part = f"[{host}]" if ":" in host else host
    return f"http://{host_part}:{port}"


def dataset_urls(root: Path, url: str, names: list[str]) -> list[tuple[str, str]]:
    """``(dataset, source URL)``: ``precomputed://`` for a volume, ``vtk://`` for a mesh."""
    out = []
    for name in names:
        if (Path(root) / name / "info").is_file():
            out.append((name, f"precomputed://{url}/{quote(name)}"))
        else:
            out.append((name, f"vtk://{url}/{quote(name)}/{quote(name)}.vtk"))
    return out


def serve(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    client: Path | None = None,
    client_url: str | None = None,
    only: list[str] | None = None,
    convention: str = "neurological",
    mirror: Path = Path("s3-mirror"),
) -> None:
    """Serve a results folder (or one dataset's folder) with an index page at ``/``; print what
    is served, where, each dataset's source URL and its views' links, then serve until
    interrupted. An ``s3://bucket/prefix`` is read from its bucket's HTTP endpoint (its info
    files from ``mirror``, the workflow's ``s3_mirror``): the viewer fetches the data there.

    ``client``: serve this web client folder and link to it; else link to ``client_url``
    (default: the public Neuroglancer demo)."""
    from . import site
    from .viewer import CLIENT_TOKEN, DEFAULT_CLIENT, results_of

    data_url = None
    if storage.is_remote(str(root)):  # a bucket: its mirror's info files, its HTTP endpoint
        remote = storage.Remote.from_url(str(root))
        root = Path(mirror) / remote.bucket / remote.prefix
        storage.register(root, remote.url, remote.endpoint)
        data_url = remote.http_url
    root, only = results_of(root, only)
    server = make_server(root, host, port, client)
    bound_host, bound_port = server.server_address[:2]
    url = base_url(str(bound_host), bound_port)
    viewer = f"{url}/v/{CLIENT_TOKEN}/" if client is not None else client_url or DEFAULT_CLIENT
    with server:
        made = site.build(root, data_url or url, viewer, only, convention, server_url=url)
        server.pages.update(made.pages)
        names = [name for name, _ in made.links if name != "all" or len(made.links) == 1]
        n = len(names)
        where = data_url or Path(root).resolve()
        print(f"Serving {n} dataset{'s' if n != 1 else ''} of {where}", flush=True)
        print(f"Index page: {url}/   (Ctrl+C stops the server)", flush=True)
        print("Sources:", flush=True)
        for name, source in dataset_urls(root, data_url or url, names):
            print(f"  {name}: {source}", flush=True)
        print(f"Views (Neuroglancer at {viewer}, {convention}):", flush=True)
        for name, link in made.links:
            print(f"  {name}: {link}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def view(
    root,
    host: str = "127.0.0.1",
    port: int = 8000,
    client_url: str | None = None,
    offline: bool = False,
    only: list[str] | None = None,
    convention: str = "neurological",
    mirror: Path = Path("s3-mirror"),
) -> None:
    """``serve`` with, unless a client URL is given, the web client of the ``neuroglancer``
    wheel (no internet needed; the same origin as the data)."""
    from .viewer import bundled_client

    client = None if client_url else bundled_client()
    if offline and client is None:
        raise InputError(
            "view --offline: the neuroglancer package (its web client) is not installed "
            "(pip install neuroglancer)" + (", and --client was given" if client_url else "")
        )
    if client is None and not client_url:
        log.warning("neuroglancer is not installed: links use the public demo client")
    serve(
        root,
        host,
        port,
        client=client,
        client_url=client_url,
        only=only,
        convention=convention,
        mirror=mirror,
    )
