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
* ``<id>:0`` missing but ``<id>.json`` present (mesh manifests on filesystems that forbid ``:``):
  ``<id>.json`` is served.
* Content-Type ``application/json`` for ``info``, ``*.json`` and ``*:0``; everything else
  (chunks, shards, mesh fragments) is ``application/octet-stream``.
* Nothing outside the root: paths with ``..`` or ``.`` segments (also percent-encoded), empty
  segments (so ``//etc/passwd``), backslashes or NUL bytes are 404, and every file is resolved
  (symlinks included) and must stay inside the resolved root. Directories are 404 (no listings).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

ALLOW_METHODS = "GET, HEAD, OPTIONS"
EXPOSE_HEADERS = "Content-Range, Content-Length, Content-Encoding, Accept-Ranges"
BLOCK = 1 << 16
_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def content_type(name: str) -> str:
    """The Content-Type for a requested file name (the name asked for, not the one on disk)."""
    if name == "info" or name.endswith(".json") or name.endswith(":0"):
        return "application/json"
    return "application/octet-stream"


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
        try:
            segments = safe_segments(self.path)
        except UnicodeDecodeError:
            return None
        if segments is None:
            return None
        root: Path = self.server.root
        *parents, name = segments
        folder = root.joinpath(*parents)
        candidates = [(name, False), (name + ".gz", True)]
        if name.endswith(":0") and len(name) > 2:
            stem = name[:-2]
            candidates += [(stem + ".json", False), (stem + ".json.gz", True)]
        for filename, gz in candidates:
            path = folder / filename
            try:
                resolved = path.resolve()
            except (OSError, RuntimeError):
                continue
            if resolved.is_relative_to(root) and resolved.is_file():
                return resolved, name, gz
        return None

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
        found = self._find()
        if found is None:
            self._reply_empty(404)
            return
        path, name, gz = found
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below)
        except OSError:
            self._reply_empty(404)
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            headers = {"Content-Type": content_type(name), "Accept-Ranges": "bytes"}
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

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self._reply_empty(405, {"Allow": ALLOW_METHODS})

    do_PUT = do_POST = do_DELETE = do_PATCH = _not_allowed


class PrecomputedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int]):
        self.root = Path(root).resolve()
        super().__init__(address, PrecomputedHandler)

    def handle_error(self, request, client_address) -> None:
        log.debug("error while serving %s", client_address, exc_info=True)


def make_server(root: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for ``root`` bound to ``host:port`` (port 0: any free port); not yet serving."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(root)
    return PrecomputedServer(root, (host, port))


def dataset_urls(root: Path, host: str, port: int) -> list[tuple[str, str]]:
    """``(dataset, precomputed URL)`` for every ``root/<dataset>/info``."""
    host_part = f"[{host}]" if ":" in host else host
    return [
        (info.parent.name, f"precomputed://http://{host_part}:{port}/{quote(info.parent.name)}")
        for info in sorted(Path(root).glob("*/info"))
        if info.is_file()
    ]


def serve(root: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Print one line per dataset with its Neuroglancer URL, then serve until interrupted."""
    server = make_server(root, host, port)
    bound_host, bound_port = server.server_address[:2]
    with server:
        for name, url in dataset_urls(root, str(bound_host), bound_port):
            print(f"{name}: {url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
