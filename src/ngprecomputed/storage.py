"""Results in object storage: a local mirror folder whose files go to an ``s3://`` bucket.

The workflow and every writer keep writing files under a results folder, through
:func:`ngprecomputed.store.atomic_file`; when that folder is the mirror of a bucket prefix
(registered by the workflow in the environment, :data:`ENV`, so every job, local or on a
cluster node, knows it), each finished file is uploaded by a thread pool of the job's process
with its ``Content-Type`` (and, for a ``name.gz`` chunk, as ``name`` with ``Content-Encoding:
gzip``, the way the viewer asks for it), then removed from the mirror unless it is small
bookkeeping that Snakemake tracks (``info``, JSON). Reads of a removed file (a coarser scale
made from the one above, QC, the viewer's display range) come from the bucket, ranges for
shards. A job's manifest and a dataset's ``info`` wait for every upload of the process before
them (:func:`flush`): a dataset is complete in the bucket exactly when its ``info`` is there.

Client: boto3 (well kept, thread-safe clients, already installed with CloudVolume); the endpoint
and credentials come the standard ways (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``~/.aws``), or the ``s3_endpoint`` config key.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import InputError

ENV = "NGPRECOMPUTED_REMOTES"  # JSON: {"<mirror folder>": {"url": "s3://b/p", "endpoint": e}}
UPLOADERS = 8  # concurrent uploads per process
KEEP = ("info",)  # kept in the mirror besides *.json: what Snakemake and the viewer read
LOCAL = (".work", "logs")  # top folders of a mirror that stay local: the run's bookkeeping


def is_remote(url) -> bool:
    return isinstance(url, str) and url.startswith("s3://")


def content_type(name: str) -> str:
    """The Content-Type of a file we write, by the name asked for (the local server's and the
    bucket's alike): JSON for ``info``, ``*.json`` and ``<id>:0``, PNG for a preview, else
    bytes (chunks, shards, mesh fragments, annotation lists)."""
    if name == "info" or name.endswith(".json") or name.endswith(":0"):
        return "application/json"
    if name.endswith(".png"):
        return "image/png"
    return "application/octet-stream"


@dataclass(frozen=True)
class Remote:
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty
    endpoint: str | None = None

    @classmethod
    def from_url(cls, url: str, endpoint: str | None = None) -> Remote:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise InputError(f"results {url}: not an s3://bucket/prefix URL")
        endpoint = (
            endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        return cls(parts.netloc, parts.path.strip("/"), endpoint or None)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def http_url(self) -> str:
        """The prefix over plain HTTP (path style), for the viewer."""
        base = (self.endpoint or f"https://{self.bucket}.s3.amazonaws.com").rstrip("/")
        path = f"{self.bucket}/{self.prefix}" if self.endpoint else self.prefix
        return f"{base}/{path}".rstrip("/")

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def client(self):
        return _client(self.endpoint)

    def check(self) -> None:
        """Stop before any job, in one line, when the bucket is missing or the credentials are
        refused."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client().head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchBucket") or status == 404:
                raise InputError(f"results {self.url}: no bucket {self.bucket!r}") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise InputError(
                    f"results {self.url}: credentials refused by {self.endpoint or 'S3'} ({code})"
                ) from None
            raise InputError(f"results {self.url}: {code or e}") from None
        except BotoCoreError as e:
            raise InputError(f"results {self.url}: {e}") from None

    def get(self, relative: str, start: int | None = None, end: int | None = None) -> bytes:
        """An object's stored bytes (``start``..``end`` exclusive, when given)."""
        stored = relative.endswith(".gz")  # asked for the gzip bytes themselves
        relative = relative.removesuffix(".gz")  # stored under the plain name
        args = {"Bucket": self.bucket, "Key": self.key(relative)}
        if start is not None:
            args["Range"] = f"bytes={start}-{end - 1}"
        from botocore.exceptions import ClientError

        try:
            got = self.client().get_object(**args)
            data = got["Body"].read()
            if got.get("ContentEncoding") == "gzip" and not stored and start is None:
                data = gzip.decompress(data)  # as an HTTP client would decode it
            return data
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{self.url}/{relative}: no such object") from None
            raise

    def put_file(self, path: Path, relative: str) -> None:
        """Upload a finished file: ``x.gz`` as ``x`` with ``Content-Encoding: gzip``."""
        extra = {}
        if relative.endswith(".gz"):
            relative = relative[:-3]
            extra["ContentEncoding"] = "gzip"
        from botocore.exceptions import BotoCoreError, ClientError

        with open(path, "rb") as f:
            body = f.read()
        try:
            self.client().put_object(
                Bucket=self.bucket,
                Key=self.key(relative),
                Body=body,
                ContentType=content_type(relative.rsplit("/", 1)[-1]),
                **extra,
            )
        except (BotoCoreError, ClientError) as e:
            raise InputError(f"{self.url}/{relative}: upload failed ({e})") from None


_state = threading.local()
_lock = threading.Lock()
_pool: dict = {}  # pid -> (executor, pending futures)
_clients: dict = {}  # (pid, endpoint) -> boto3 client


def _client(endpoint):
    key = (os.getpid(), endpoint)
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(
                max_pool_connections=UPLOADERS * 2,
                retries={"max_attempts": 5},
                # S3-compatible servers (MinIO, SeaweedFS, Ceph) want path-style addresses,
                # and not all of them take the checksums newer SDKs send by default
                s3={"addressing_style": "path"} if endpoint else None,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            _clients[key] = boto3.client("s3", endpoint_url=endpoint, config=config)
        return _clients[key]


def register(mirror: Path, url: str, endpoint: str | None = None) -> Remote:
    """Make ``mirror`` the local side of ``url`` for this process and the jobs it starts."""
    remote = Remote.from_url(url, endpoint)
    found = json.loads(os.environ.get(ENV, "{}"))
    found[str(Path(mirror).resolve())] = {"url": remote.url, "endpoint": remote.endpoint}
    os.environ[ENV] = json.dumps(found)
    return remote


def remotes() -> dict[Path, Remote]:
    text = os.environ.get(ENV, "")
    cached = getattr(_state, "parsed", None)
    if cached is None or cached[0] != text:
        table = json.loads(text) if text else {}
        parsed = {Path(k): Remote.from_url(v["url"], v.get("endpoint")) for k, v in table.items()}
        _state.parsed = cached = (text, parsed)
    return cached[1]


def remote_of(path: Path) -> tuple[Remote, str] | None:
    """The remote that ``path`` mirrors and its key below the prefix, or None."""
    table = remotes()
    if not table:
        return None
    path = Path(path).resolve()
    for mirror, remote in table.items():
        if path.is_relative_to(mirror):
            relative = path.relative_to(mirror)
            if relative.parts and relative.parts[0] in LOCAL:
                return None
            return remote, relative.as_posix()
    return None


def _uploads():
    pid = os.getpid()
    with _lock:
        if pid not in _pool:
            _pool[pid] = (ThreadPoolExecutor(UPLOADERS, thread_name_prefix="upload"), [])
        return _pool[pid]


def published(path: Path) -> None:
    """A file just finished under a mirror: upload it (``info``: after every other upload of
    this process), then drop its local copy unless it is bookkeeping."""
    found = remote_of(path)
    if found is None:
        return
    remote, relative = found
    name = Path(path).name
    if name == "info":
        flush()
        remote.put_file(path, relative)
        return
    executor, pending = _uploads()

    def upload():
        remote.put_file(path, relative)
        if name not in KEEP and not name.endswith(".json"):
            Path(path).unlink(missing_ok=True)

    future: Future = executor.submit(upload)
    with _lock:
        pending.append(future)


def flush() -> None:
    """Wait for every upload this process started; the first failure is raised."""
    if not remotes():
        return
    executor, pending = _uploads()
    with _lock:
        waiting, pending[:] = list(pending), []
    for future in waiting:
        future.result()


def read_bytes(path: Path, start: int | None = None, end: int | None = None) -> bytes:
    """A file's bytes from the mirror, or, once uploaded and dropped, from the bucket."""
    path = Path(path)
    if path.exists():
        if start is None:
            return path.read_bytes()
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    found = remote_of(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no such file")
    remote, relative = found
    return remote.get(relative, start, end)
