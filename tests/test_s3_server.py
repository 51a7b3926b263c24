"""The S3 server the tests use (tests/s3.py: SeaweedFS on loopback) and what the independent
readers make of it: object metadata and ranges over plain HTTP, TensorStore's ``s3`` kvstore,
CloudVolume with a custom endpoint, CORS, anonymous reads, and the errors boto3 raises for a
missing bucket and refused credentials. Two servers run at once here: one without
``-s3.config`` (any credentials) and one with real identities."""

import gzip
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from botocore.exceptions import ClientError
from s3 import S3Server, S3ServerError, identities, s3_server  # noqa: F401 (a fixture)

ADMIN = ("AKADMIN", "admin-secret")
READER = ("AKREADER", "reader-secret")
PUBLIC, PRIVATE = "auth-public", "auth-private"
SHAPE = (64, 64, 32, 1)
SHARDING = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 0,
    "hash": "identity",
    "minishard_bits": 1,
    "shard_bits": 1,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}
LAYOUTS = {"plain": None, "sharded": SHARDING}
ORIGIN = "http://example.org"


def http(method: str, url: str, headers: dict | None = None):
    """A plain, unsigned HTTP request (urllib neither asks for nor decodes gzip)."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def cors_headers(headers) -> dict:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control")}


def error_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def write_volume(server, bucket: str, path: str, data: np.ndarray, sharding=None) -> None:
    """TensorStore creates a neuroglancer_precomputed volume in the bucket, credentials from
    the environment (``server.env``)."""
    import tensorstore as ts

    scale = {"size": list(data.shape[:3]), "resolution": [1, 1, 1], "chunk_size": [16, 16, 16]}
    scale["encoding"] = "raw"
    if sharding:
        scale["sharding"] = sharding
    with pytest.MonkeyPatch.context() as mp:
        for k, v in server.env.items():
            mp.setenv(k, v)
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": server.kvstore(bucket, path, credentials="environment"),
                "multiscale_metadata": {
                    "type": "image",
                    "data_type": data.dtype.name,
                    "num_channels": data.shape[3],
                },
                "scale_metadata": scale,
            },
            create=True,
        ).result()
        store.write(data).result()


def read_tensorstore(kvstore: dict) -> np.ndarray:
    """Strict: a missing chunk is an error, not zeros; nothing from a cache."""
    import tensorstore as ts

    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": kvstore,
            "scale_index": 0,
            "fill_missing_data_reads": False,
            "recheck_cached_data": "open",
        }
    ).result()
    return np.asarray(store.read().result())


@pytest.fixture(scope="module")
def volumes(s3_server):  # noqa: F811
    """The same random volume written by TensorStore, unsharded and sharded, to ``vol-bkt``."""
    data = np.random.default_rng(7).integers(0, 256, SHAPE, dtype=np.uint8)
    bucket = s3_server.make_bucket("vol-bkt")
    for name, sharding in LAYOUTS.items():
        write_volume(s3_server, bucket, f"{name}/", data, sharding)
    return bucket, data


@pytest.fixture(scope="module")
def auth():
    """A second server with real identities: an admin, a reader of the private bucket, and
    an anonymous identity that may read (and list) the public bucket only."""
    config = identities(
        admin=ADMIN,
        anonymous=[f"Read:{PUBLIC}", f"List:{PUBLIC}"],
        reader=(READER, [f"Read:{PRIVATE}", f"List:{PRIVATE}"]),
    )
    with S3Server(config=config) as server:
        for bucket in (PUBLIC, PRIVATE):
            server.make_bucket(bucket)
            server.client().put_object(Bucket=bucket, Key="d/info", Body=b"{}")
        yield server


# --- (a), (b): metadata and ranges over plain HTTP


def test_content_type_and_encoding_are_kept(s3_server):  # noqa: F811
    bucket = s3_server.make_bucket("meta-bkt")
    body = gzip.compress(json.dumps({"scales": list(range(200))}).encode())
    s3_server.client().put_object(
        Bucket=bucket,
        Key="ds/info",
        Body=body,
        ContentType="application/json",
        ContentEncoding="gzip",
    )
    status, headers, _ = http("HEAD", s3_server.url(bucket, "ds/info"))
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body)
    status, headers, got = http("GET", s3_server.url(bucket, "ds/info"))
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert got == body  # as stored: the server does not decode it

    status, headers, got = http("GET", s3_server.url(bucket, "ds/info"), {"Range": "bytes=5-20"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 5-20/{len(body)}"
    assert got == body[5:21]
    status, _, got = http("GET", s3_server.url(bucket, "ds/info"), {"Range": "bytes=-4"})
    assert (status, got) == (206, body[-4:])


# --- TensorStore and CloudVolume


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tensorstore_reads_what_it_wrote(s3_server, volumes, layout, monkeypatch):  # noqa: F811
    bucket, data = volumes
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"{layout}/")
    keys = {o["Key"] for o in listing["Contents"]}
    assert f"{layout}/info" in keys
    chunks = {k for k in keys if k.startswith(f"{layout}/1_1_1/")}
    if layout == "sharded":
        assert chunks and all(k.endswith(".shard") for k in chunks), chunks
    else:
        assert len(chunks) == 4 * 4 * 2
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    got = read_tensorstore(s3_server.kvstore(bucket, f"{layout}/", credentials="environment"))
    np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cloudvolume_reads_through_an_alias(s3_server, volumes, layout, monkeypatch):  # noqa: F811
    """CloudVolume has no endpoint argument and refuses ``s3://http://...`` paths; a CloudFiles
    alias naming ``s3://http://127.0.0.1:PORT/`` is its way to a custom endpoint."""
    import cloudfiles.paths
    from cloudvolume import CloudVolume

    bucket, data = volumes
    # CloudFiles reads AWS_* variables only together with AWS_SESSION_TOKEN (KeyError else)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    alias = f"seaweed{s3_server.port}"
    cloudfiles.paths.add_alias(alias, f"s3://{s3_server.endpoint}/")
    try:
        vol = CloudVolume(
            f"{alias}://{bucket}/{layout}",
            fill_missing=False,
            progress=False,
            cache=False,
            secrets={
                "AWS_ACCESS_KEY_ID": s3_server.access_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
            },
        )
        np.testing.assert_array_equal(np.asarray(vol[:, :, :]), data)
    finally:
        cloudfiles.paths.remove_alias(alias)


def test_cloudvolume_reads_with_its_config_files(s3_server, volumes, tmp_path):  # noqa: F811
    """The offline configuration a user would write: ``$CLOUD_FILES_DIR/aliases.json`` maps
    a protocol name to the endpoint, ``$CLOUD_VOLUME_DIR/secrets/<alias>-secret.json`` holds
    its keys. A fresh HOME and both dirs under tmp_path: nothing is read from or left in
    the real home."""
    bucket, data = volumes
    (tmp_path / "cf").mkdir()
    (tmp_path / "cv" / "secrets").mkdir(parents=True)
    hosts = {"seaweed": {"host": f"s3://{s3_server.endpoint}/"}}
    (tmp_path / "cf" / "aliases.json").write_text(json.dumps(hosts))
    keys = {"AWS_ACCESS_KEY_ID": s3_server.access_key}
    keys["AWS_SECRET_ACCESS_KEY"] = s3_server.secret_key
    (tmp_path / "cv" / "secrets" / "seaweed-secret.json").write_text(json.dumps(keys))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "HOME": str(tmp_path),
        "CLOUD_FILES_DIR": str(tmp_path / "cf"),
        "CLOUD_VOLUME_DIR": str(tmp_path / "cv"),
    }
    code = (
        "import sys, numpy as np; from cloudvolume import CloudVolume\n"
        f"vol = CloudVolume('seaweed://{bucket}/sharded', fill_missing=False, progress=False,"
        " cache=False)\n"
        "np.save(sys.argv[1], np.asarray(vol[:, :, :]))\n"
    )
    out = tmp_path / "read.npy"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(out), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cf", "cv", "read.npy"]


def test_cloudvolume_refuses_an_endpoint_in_an_s3_path(s3_server, volumes):  # noqa: F811
    """CloudFiles takes ``s3://http://HOST:PORT/bucket/path``; CloudVolume's own path parser
    does not (a second protocol), so CloudVolume needs the alias."""
    from cloudfiles import CloudFiles
    from cloudvolume import CloudVolume
    from cloudvolume.exceptions import UnsupportedProtocolError

    bucket, _ = volumes
    path = f"s3://{s3_server.endpoint}/{bucket}/plain"
    keys = {"AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any"}
    info = json.loads(CloudFiles(path, secrets=keys).get("info"))
    assert info["@type"] == "neuroglancer_multiscale_volume"
    with pytest.raises(UnsupportedProtocolError):
        CloudVolume(path, secrets=keys, progress=False)


# --- (c) CORS


def test_bucket_cors_rules_are_applied(s3_server):  # noqa: F811
    bucket = s3_server.make_bucket("cors-bkt")
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="ds/info", Body=b"{}")
    rule = {
        "AllowedOrigins": [ORIGIN],
        "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["Content-Range", "Content-Length", "ETag"],
        "MaxAgeSeconds": 600,
    }
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    assert client.get_bucket_cors(Bucket=bucket)["CORSRules"] == [rule]
    url = s3_server.url(bucket, "ds/info")

    status, headers, _ = http("GET", url, {"Origin": ORIGIN, "Range": "bytes=0-0"})
    cors = cors_headers(headers)
    assert status == 206
    assert cors["access-control-allow-origin"] == ORIGIN
    assert "Content-Range" in cors["access-control-expose-headers"]
    assert cors["access-control-max-age"] == "600"  # the bucket's rule, not a default

    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range",
    }
    status, headers, _ = http("OPTIONS", url, preflight)
    cors = cors_headers(headers)
    assert status == 200
    assert cors["access-control-allow-origin"] == ORIGIN
    assert "GET" in cors["access-control-allow-methods"]
    assert "range" in cors["access-control-allow-headers"].lower()

    other = "http://other.example"
    status, headers, _ = http("GET", url, {"Origin": other})
    assert status == 200 and not cors_headers(headers)
    status, headers, _ = http("OPTIONS", url, {**preflight, "Origin": other})
    assert status == 403 and not cors_headers(headers)


def test_without_cors_rules_any_origin_is_answered(s3_server, volumes):  # noqa: F811
    """SeaweedFS's default for a bucket without CORS rules: permissive, but Content-Range is
    not among the headers it exposes."""
    bucket, _ = volumes
    status, headers, _ = http("GET", s3_server.url(bucket, "plain/info"), {"Origin": ORIGIN})
    cors = cors_headers(headers)
    assert status == 200
    assert cors["access-control-allow-origin"] == ORIGIN
    assert "Content-Range" not in cors["access-control-expose-headers"]


# --- (d) anonymous reads


def test_without_s3_config_unsigned_requests_are_allowed(s3_server, volumes):  # noqa: F811
    bucket, _ = volumes
    status, _, body = http("GET", s3_server.url(bucket, "plain/info"))
    assert status == 200 and json.loads(body)["data_type"] == "uint8"
    status, _, _ = http("PUT", s3_server.url(bucket, "anon-put"))
    assert status == 200  # writes too: no authentication at all


def test_an_anonymous_identity_makes_one_bucket_public(auth):
    from cloudvolume import CloudVolume

    status, _, body = http("GET", auth.url(PUBLIC, "d/info"))
    assert (status, body) == (200, b"{}")
    status, _, body = http("GET", auth.url(PUBLIC, "d/info"), {"Range": "bytes=1-1"})
    assert (status, body) == (206, b"}")
    status, _, body = http("GET", auth.url(PRIVATE, "d/info"))
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    status, _, body = http("PUT", auth.url(PUBLIC, "d/x"))
    assert status == 403  # read only
    # a browser's preflight is never signed: answered on the public bucket
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    status, headers, _ = http("OPTIONS", auth.url(PUBLIC, "d/info"), preflight)
    assert status == 200 and cors_headers(headers)["access-control-allow-origin"] == ORIGIN

    # a dataset in the public bucket, read by CloudVolume over plain HTTP, no credentials
    data = np.arange(16 * 16 * 16, dtype=np.uint16).reshape(16, 16, 16, 1)
    write_volume(auth, PUBLIC, "ds/", data)
    vol = CloudVolume(
        f"precomputed://{auth.url(PUBLIC, 'ds')}", fill_missing=False, progress=False, cache=False
    )
    np.testing.assert_array_equal(np.asarray(vol[:, :, :]), data)


def test_a_bucket_policy_or_acl_makes_a_bucket_public(auth):
    client = auth.client()
    for bucket in ("auth-policy", "auth-acl"):
        auth.make_bucket(bucket)
        client.put_object(Bucket=bucket, Key="d/info", Body=b"{}")
        assert http("GET", auth.url(bucket, "d/info"))[0] == 403
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": ["arn:aws:s3:::auth-policy/*"],
            }
        ],
    }
    client.put_bucket_policy(Bucket="auth-policy", Policy=json.dumps(policy))
    client.put_bucket_acl(Bucket="auth-acl", ACL="public-read")
    for bucket in ("auth-policy", "auth-acl"):
        status, _, body = http("GET", auth.url(bucket, "d/info"))
        assert (status, body) == (200, b"{}")
    assert http("GET", auth.url(PRIVATE, "d/info"))[0] == 403


# --- (e) errors


def test_a_missing_bucket(s3_server):  # noqa: F811
    """boto3's NoSuchBucket (a ClientError) for objects, a bare 404 from head_bucket; writes
    do not create the bucket (S3Server runs with -s3.autoCreateBucket=false, as AWS)."""
    client = s3_server.client()
    with pytest.raises(client.exceptions.NoSuchBucket) as e:
        client.get_object(Bucket="no-such-bucket", Key="k")
    assert isinstance(e.value, ClientError) and error_of(e) == ("NoSuchBucket", 404)
    with pytest.raises(client.exceptions.NoSuchBucket) as e:
        client.put_object(Bucket="no-such-bucket", Key="k", Body=b"1")
    assert error_of(e) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as e:
        client.head_bucket(Bucket="no-such-bucket")
    assert error_of(e) == ("404", 404)
    with pytest.raises(client.exceptions.NoSuchKey) as e:
        client.get_object(Bucket=s3_server.make_bucket("key-bkt"), Key="missing")
    assert error_of(e) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as e:
        client.create_bucket(Bucket="ab")
    assert error_of(e) == ("InvalidBucketName", 400)


def test_refused_credentials(auth):
    with pytest.raises(ClientError) as e:
        auth.client("AKUNKNOWN", "whatever").get_object(Bucket=PRIVATE, Key="d/info")
    assert error_of(e) == ("InvalidAccessKeyId", 403)
    with pytest.raises(ClientError) as e:
        auth.client(ADMIN[0], "wrong-secret").put_object(Bucket=PRIVATE, Key="x", Body=b"1")
    assert error_of(e) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as e:
        auth.client(anonymous=True).get_object(Bucket=PRIVATE, Key="d/info")
    assert error_of(e) == ("AccessDenied", 403)
    reader = auth.client(*READER)
    assert reader.get_object(Bucket=PRIVATE, Key="d/info")["Body"].read() == b"{}"
    with pytest.raises(ClientError) as e:
        reader.put_object(Bucket=PRIVATE, Key="x", Body=b"1")
    assert error_of(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        auth.client("AKUNKNOWN", "whatever").head_bucket(Bucket=PRIVATE)
    assert error_of(e) == ("403", 403)  # HEAD has no body: no code


def test_tensorstore_refused_credentials(auth, monkeypatch):
    import tensorstore as ts

    for k, v in {**auth.env, "AWS_SECRET_ACCESS_KEY": "wrong-secret"}.items():
        monkeypatch.setenv(k, v)
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": auth.kvstore(PRIVATE, "ts/", credentials="environment"),
        "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
        "scale_metadata": {"size": [8, 8, 8], "resolution": [1, 1, 1], "encoding": "raw"},
    }
    with pytest.raises(ValueError, match="PERMISSION_DENIED.*SignatureDoesNotMatch"):
        ts.open(spec, create=True).result()


def test_two_servers_run_at_once(s3_server, auth):  # noqa: F811
    assert not set(s3_server.ports.values()) & set(auth.ports.values())
    assert http("GET", s3_server.endpoint + "/")[0] == 200
    assert http("GET", auth.url(PUBLIC, "d/info"))[0] == 200


def test_a_server_that_is_not_ready_in_time_says_why():
    server = S3Server(startup_timeout=1.0, stop_grace=0)
    with pytest.raises(S3ServerError, match=r"not ready after 1 s \(S3 http://127.0.0.1:") as e:
        server.start()
    tail = str(e.value).splitlines()[1:]  # the tail of weed's log, kept after the stop
    assert tail and all(line in server.log_tail(10**6) for line in tail)
    assert server.proc is None and server.data_dir is None and not server.ports
