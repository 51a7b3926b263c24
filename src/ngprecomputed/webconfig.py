"""nginx and Apache configurations that serve a results folder the way ``serve.py`` does.

``ngprecomputed serve`` is for a desktop; a lab serves its results with a production web server.
These generators write that server's configuration so that it answers exactly like
:mod:`ngprecomputed.serve` (``tests/test_webconfig.py`` runs the three side by side):

* CORS on every answer: ``Access-Control-Allow-Origin: *`` and ``Access-Control-Expose-Headers``
  (Content-Range, Content-Length, Content-Encoding, Accept-Ranges); a preflight ``OPTIONS`` is
  answered 204 with Allow-Methods, Allow-Headers (``Range`` plus what was asked for), Max-Age.
* ``name`` missing but ``name.gz`` present: the stored gzip bytes, ``Content-Encoding: gzip`` and
  the Content-Type of ``name``.
* A chunk ``<key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` missing (plain and ``.gz``): the nested file
  ``<key>/<x0>-<x1>/<y0>-<y1>/<z0>-<z1>`` (neuroglancer-scripts' layout), or its ``.gz``.
* ``<id>:0`` missing (plain and ``.gz``): ``<id>.json``, or its ``.gz`` (filesystems without ``:``).
* Content-Type ``application/json`` for ``info``, ``*.json`` and ``*:0``, else
  ``application/octet-stream``; nothing is compressed on the fly (Range offsets are those of the
  stored bytes).
* A single byte range (``a-b``, ``a-``, ``-n``) answers 206 with Content-Range, an unsatisfiable
  one 416; several ranges in one request get the whole file (200), as ``serve.py`` does.

Differences, by design or by the servers:

* nginx (stock Debian build: ``gzip_static`` is compiled in) serves ``name.gz`` in preference to
  ``name`` when both exist (``gzip_static always``); Apache and ``serve.py`` prefer ``name``.
  A results folder never holds both.
* A range on a ``.gz``-served name: Apache (like ``serve.py``) answers 206 with a range of the
  stored gzip bytes; nginx's ``gzip_static`` ignores Range there and sends the whole stored file
  (200, a valid answer). Shards and multi-resolution mesh data, the files readers fetch by
  range, are stored uncompressed, so no reader asks for a range of a ``.gz`` file.
* The size in a 416's ``Content-Range: bytes */SIZE`` needs ``filesize()``, which Apache refuses
  in ``.htaccess``: there a 416 comes without Content-Range (the vhost config sends it).
* Directories are not listed (nginx answers 403 or a 301 to add ``/``, Apache 403, ``serve.py``
  404); nginx and Apache follow symlinks that leave the folder, ``serve.py`` does not.
* Apache's rewrites take the decoded request path, so a literal ``%`` in a file name is decoded
  twice; the names this package writes never contain one.

Modules: nginx needs nothing beyond Debian's ``nginx`` package (core, rewrite, headers,
gzip_static). Apache needs ``rewrite``, ``headers`` and ``mime`` (``a2enmod rewrite headers``;
``mime`` is on by default) and ``authz_core`` for ``Require``; ``.htaccess`` needs
``AllowOverride FileInfo`` on its folder, and ``MaxRanges`` cannot be set there (so several
ranges in one request get a ``multipart/byteranges`` answer).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import InputError
from .store import write_atomic

EXPOSE_HEADERS = "Content-Range, Content-Length, Content-Encoding, Accept-Ranges"
ALLOW_METHODS = "GET, HEAD, OPTIONS"
MAX_AGE = 86400
# a flat chunk name, split so that the nested one is "\1\2/\3/\4"
FLAT_CHUNK = r"^(.*/)(-?\d+--?\d+)_(-?\d+--?\d+)_(-?\d+--?\d+)$"
_UNSAFE_PATH = re.compile(r'["\\$*?\[\]{}\x00-\x1f\x7f]')
_LOCATION = re.compile(r"^/(?:[A-Za-z0-9._~-]+/)*$")
_NAME = re.compile(r"^[A-Za-z0-9._*-]+$")


def _root(root: Path) -> str:
    """The results folder as an absolute path both servers can quote."""
    text = str(Path(root).resolve())
    if _UNSAFE_PATH.search(text):
        raise InputError(f"results folder {text}: a web-server config cannot hold its name")
    return text


def _location(location: str) -> str:
    if not _LOCATION.match(location):
        raise InputError(
            f"location {location!r}: must be a URL path that starts and ends with '/', "
            "made of letters, digits and ._~-"
        )
    return location


def _port(port: int) -> int:
    if not isinstance(port, int) or not 0 < port < 65536:
        raise InputError(f"port {port!r}: must be an integer from 1 to 65535")
    return port


def _host(host: str | None) -> str:
    if host is None:
        return ""
    if not re.match(r"^[A-Za-z0-9.:\[\]-]+$", host):
        raise InputError(f"host {host!r}: not an address to listen on")
    return host


def _name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise InputError(f"{what} {value!r}: letters, digits, '.', '-', '*' or '_' only")
    return value


def nginx_config(
    root: Path,
    *,
    port: int = 8080,
    server_name: str = "_",
    location: str = "/",
    host: str | None = None,
) -> str:
    """An nginx ``server`` block (http context, e.g. ``/etc/nginx/conf.d/``) serving ``root``
    at URL ``location`` on ``host:port`` (``host`` None: every address)."""
    path = _root(root)
    location = _location(location)
    listen = f"{_host(host)}:{_port(port)}" if host else str(_port(port))
    server_name = _name(server_name, "server name")
    mapping = f'root "{path}";' if location == "/" else f'alias "{path}/";'
    return f"""\
# ngprecomputed: Neuroglancer precomputed data from {path}
# Stock Debian nginx (gzip_static and rewrite are built in). Include in the http context.
server {{
    listen {listen};
    server_name {server_name};

    gzip off;      # bytes as stored, so that Range offsets hold
    max_ranges 1;  # several ranges in one request: the whole file (200)
    autoindex off;
    types {{ application/json json; }}
    default_type application/octet-stream;

    # CORS on every answer, errors included; the preflight headers only on OPTIONS
    # (an empty add_header value sends no header).
    set $ngprecomputed_methods "";
    set $ngprecomputed_headers "";
    set $ngprecomputed_max_age "";
    if ($request_method = OPTIONS) {{
        set $ngprecomputed_methods "{ALLOW_METHODS}";
        set $ngprecomputed_headers "Range";
        set $ngprecomputed_max_age {MAX_AGE};
    }}
    set $ngprecomputed_preflight "$request_method $http_access_control_request_headers";
    if ($ngprecomputed_preflight ~ "^OPTIONS\\s*(\\S.*)$") {{
        set $ngprecomputed_headers "Range, $1";
    }}
    add_header Access-Control-Allow-Origin "*" always;
    add_header Access-Control-Expose-Headers "{EXPOSE_HEADERS}" always;
    add_header Access-Control-Allow-Methods $ngprecomputed_methods always;
    add_header Access-Control-Allow-Headers $ngprecomputed_headers always;
    add_header Access-Control-Max-Age $ngprecomputed_max_age always;
    if ($request_method = OPTIONS) {{
        return 204;
    }}

    location {location} {{
        {mapping}
        # name missing: name.gz with Content-Encoding gzip and the type of name
        gzip_static always;
        # neither: try the nested chunk layout and <id>.json (each with its .gz)
        error_page 404 = @ngprecomputed_alternatives;
        recursive_error_pages on;
        location ~ "(?:^|/)info$|:0$" {{
            default_type application/json;
        }}
    }}

    location @ngprecomputed_alternatives {{
        rewrite "{FLAT_CHUNK}" $1$2/$3/$4 last;
        rewrite "^(.+):0$" $1.json last;
        return 404;
    }}
}}
"""


def _apache_rules() -> str:
    """The per-directory rules, shared by the vhost's ``<Directory>`` and ``.htaccess``."""
    preflight = "expr=%{REQUEST_METHOD} == 'OPTIONS'"
    asked = "req('Access-Control-Request-Headers')"
    missing = "RewriteCond %{REQUEST_FILENAME} !-f\nRewriteCond %{REQUEST_FILENAME}.gz !-f\n"
    return f"""\
RewriteEngine On
# bytes as stored (no deflate/brotli on the fly), so that Range offsets hold
RewriteRule ^ - [E=no-gzip:1,E=no-brotli:1]
RewriteCond %{{REQUEST_METHOD}} =OPTIONS
RewriteRule ^ - [R=204,L]
# name missing, name.gz present: the stored gzip bytes with Content-Encoding gzip
RewriteCond %{{REQUEST_FILENAME}} !-f
RewriteCond %{{REQUEST_FILENAME}}.gz -f
RewriteRule ^ %{{REQUEST_URI}}.gz [E=NGPRECOMPUTED_GZ:1,END]
# a flat chunk name missing: the nested layout x0-x1/y0-y1/z0-z1
{missing}RewriteCond %{{REQUEST_URI}} "{FLAT_CHUNK}"
RewriteRule ^ %1%2/%3/%4 [L]
# <id>:0 missing: <id>.json
{missing}RewriteCond %{{REQUEST_URI}} "^(.+):0$"
RewriteRule ^ %1.json [L]

RemoveEncoding .gz
RemoveType .gz
ForceType application/octet-stream
<FilesMatch "(^info|\\.json|:0)(\\.gz)?$">
    ForceType application/json
</FilesMatch>
Header set Content-Encoding gzip env=REDIRECT_NGPRECOMPUTED_GZ
Header always set Access-Control-Allow-Origin "*"
Header always set Access-Control-Expose-Headers "{EXPOSE_HEADERS}"
Header always set Access-Control-Allow-Methods "{ALLOW_METHODS}" "{preflight}"
Header always set Access-Control-Allow-Headers "Range" "{preflight} && -z {asked}"
Header always set Access-Control-Allow-Headers \\
    "expr=Range, %{{req:Access-Control-Request-Headers}}" \\
    "{preflight} && -n {asked}"
Header always set Access-Control-Max-Age "{MAX_AGE}" "{preflight}"
"""


# RFC 9110: a 416 says the size, which Apache leaves out (filesize() is refused in .htaccess)
_APACHE_416 = """\
Header always set Content-Range "expr=bytes */%{filesize:%{REQUEST_FILENAME}}" \\
    "expr=%{REQUEST_STATUS} == 416"
"""


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def apache_config(
    root: Path,
    *,
    port: int = 8080,
    server_name: str | None = None,
    location: str = "/",
    host: str | None = None,
) -> str:
    """An Apache ``Listen`` + ``<VirtualHost>`` (e.g. ``/etc/apache2/sites-available/``) serving
    ``root`` at URL ``location`` on ``host:port`` (``host`` None: every address)."""
    path = _root(root)
    location = _location(location)
    port = _port(port)
    address = _host(host)
    listen = f"{address}:{port}" if address else str(port)
    lines = [f"ServerName {_name(server_name, 'server name')}"] if server_name else []
    if location == "/":
        lines.append(f'DocumentRoot "{path}"')
    else:
        lines.append(f'Alias "{location}" "{path}/"')
    lines += ["# several ranges in one request: the whole file (200)", "MaxRanges 1"]
    vhost = "\n".join(lines)
    return f"""\
# ngprecomputed: Neuroglancer precomputed data from {path}
# Needs mod_rewrite, mod_headers, mod_mime (a2enmod rewrite headers), mod_authz_core.
Listen {listen}
<VirtualHost {address or "*"}:{port}>
{_indent(vhost, 4)}
    <Directory "{path}">
        AllowOverride None
        Require all granted
        Options -Indexes -MultiViews +FollowSymLinks
{_indent(_apache_rules() + _APACHE_416, 8)}    </Directory>
</VirtualHost>
"""


def apache_htaccess() -> str:
    """A ``.htaccess`` for the results folder, for hosts where only that can be changed
    (needs ``AllowOverride FileInfo``; works under DocumentRoot and under an Alias). The folder
    must allow ``FollowSymLinks`` (Apache's default) for mod_rewrite; MultiViews should be off."""
    return (
        "# ngprecomputed: Neuroglancer precomputed data (CORS, Range, .gz, nested chunks)\n"
        "# Needs mod_rewrite, mod_headers, mod_mime and AllowOverride FileInfo.\n" + _apache_rules()
    )


def bucket_cors() -> dict:
    """A bucket's CORS configuration (S3's ``put-bucket-cors`` JSON) for the viewer: GET and
    HEAD from any origin, the Range header asked, the headers a client reads exposed."""
    return {
        "CORSRules": [
            {
                "AllowedOrigins": ["*"],
                "AllowedMethods": ["GET", "HEAD"],
                "AllowedHeaders": ["*"],
                "ExposeHeaders": [h.strip() for h in EXPOSE_HEADERS.split(",")],
                "MaxAgeSeconds": MAX_AGE,
            }
        ]
    }


def apply_bucket_cors(url: str) -> None:
    """Set :func:`bucket_cors` on the bucket of ``url`` (``s3://bucket[/prefix]``)."""
    from .storage import Remote

    remote = Remote.from_url(url)
    remote.check()
    remote.client().put_bucket_cors(Bucket=remote.bucket, CORSConfiguration=bucket_cors())


def write_configs(results: Path, out: Path, *, port: int = 8080) -> list[Path]:
    """Write ``nginx.conf``, ``apache.conf``, ``.htaccess`` for ``results`` and the bucket CORS
    configuration (``s3-cors.json``, for ``aws s3api put-bucket-cors``) into ``out``."""
    results = Path(results)
    if not results.is_dir():
        raise InputError(f"results folder {results}: not a directory")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "nginx.conf": nginx_config(results, port=port),
        "apache.conf": apache_config(results, port=port),
        ".htaccess": apache_htaccess(),
        "s3-cors.json": json.dumps(bucket_cors(), indent=1) + "\n",
    }
    for name, text in files.items():
        write_atomic(out / name, text.encode())
    return [out / name for name in files]


def configure(root, out: Path | None, port: int = 8080) -> list[str]:
    """``ngprecomputed webconfig``: a bucket gets its CORS set; a results folder, the web
    servers' configurations written to ``out``. What was done, a line each."""
    from .storage import is_remote

    if is_remote(root):
        apply_bucket_cors(root)
        return [f"{root}: CORS set for the viewer (GET, HEAD, Range from any origin)"]
    if out is None:
        raise InputError("webconfig: --out FOLDER is needed for a results folder")
    return [str(path) for path in write_configs(Path(root), out, port=port)]
