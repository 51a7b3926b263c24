"""Results straight into object storage, proven against a real S3 server (SeaweedFS, loopback).

A sheet of the MNI T1 (raw, gzip, sharded), the AAL atlas (compressed_segmentation, generated
meshes, names) and annotations (electrodes, a tractogram) is converted twice by the real
workflow: into a local folder and into ``s3://bucket/prefix``. Every object in the bucket is
the local file byte for byte (a ``name.gz`` chunk as ``name`` with ``Content-Encoding: gzip``),
with the Content-Type the local server gives; TensorStore (strict, its ``s3`` kvstore with the
endpoint) reads every scale from the bucket equal to the local conversion. A run killed half-way
finishes on rerun with the same objects; a missing bucket and refused credentials stop the run
in one line before any job.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorstore as ts
from s3 import S3Server, identities, s3_server  # noqa: F401 (a fixture)
from test_annotations import electrodes_tsv, nib_file
from test_viewer import CROSS_SECTION, MARGIN, browser, check_network, decode, read_printed, show  # noqa: F401

from conftest import snakemake, write_sheet

pytestmark = pytest.mark.workflow

SETTINGS = ["qc=false", "voxels_per_job=1000000"]  # several slab jobs per volume
BUCKET = "ngp-results"


def sheet_rows(data, tmp):
    return [
        {"dataset": "t1", "path": data["mni_t1"], "type": "image"},
        {"dataset": "t1_gz", "path": data["mni_t1"], "type": "image", "gzip": "true"},
        {"dataset": "t1_sharded", "path": data["mni_t1"], "type": "image", "sharded": "true"},
        {"dataset": "aal", "path": data["aal"], "type": "segmentation", "meshes": "generate"},
        {"dataset": "ieeg", "path": electrodes_tsv(tmp / "e.tsv"), "type": "points"},
        {
            "dataset": "tracts",
            "path": nib_file("standard.trk"),
            "type": "streamlines",
            "segmentation": "aal",
        },  # fmt: skip
    ]


def run(tmp, sheet, results, server, *more, check=True):
    env = {**server.env, "AWS_ENDPOINT_URL_S3": server.endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return snakemake(
            tmp, "--config", f"samples={sheet}", f"results={results}", *SETTINGS, *more, check=check
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def local_files(root):
    """Every file of the local results, by its path below them (no bookkeeping)."""
    return {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] not in (".work", "logs")
    }


def bucket_objects(server, prefix):
    client = server.client()
    out, token = {}, None
    while True:
        args = {"Bucket": BUCKET, "Prefix": prefix + "/"}
        if token:
            args["ContinuationToken"] = token
        page = client.list_objects_v2(**args)
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) + 1 :]] = o
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, data, s3_server):  # noqa: F811 (the fixture)
    tmp = tmp_path_factory.mktemp("s3")
    s3_server.make_bucket(BUCKET)
    sheet = write_sheet(tmp / "sheet.csv", sheet_rows(data, tmp))
    run(tmp, sheet, tmp / "local", s3_server)
    run(tmp, sheet, f"s3://{BUCKET}/run1", s3_server)
    return tmp, sheet


def test_every_object_is_the_local_file(converted, s3_server):  # noqa: F811
    tmp, _ = converted
    local = local_files(tmp / "local")
    objects = bucket_objects(s3_server, "run1")
    expected = {name.removesuffix(".gz") for name in local}
    assert set(objects) == expected
    client = s3_server.client()
    for name, path in local.items():
        key = name.removesuffix(".gz")
        got = client.get_object(Bucket=BUCKET, Key=f"run1/{key}")
        assert got["Body"].read() == path.read_bytes(), name
        leaf = key.rsplit("/", 1)[-1]
        is_json = leaf == "info" or leaf.endswith(".json") or leaf.endswith(":0")
        kind = "image/png" if leaf.endswith(".png") else "application/octet-stream"
        assert got["ContentType"] == ("application/json" if is_json else kind), key
        assert got.get("ContentEncoding") == ("gzip" if name.endswith(".gz") else None), name
    assert any(name.endswith(".gz") for name in local) and any(".shard" in n for n in local)


def test_the_mirror_keeps_only_bookkeeping(converted):
    tmp, _ = converted
    mirror = tmp / "s3-mirror" / BUCKET / "run1"
    kept = [p for p in local_files(mirror).values()]
    assert kept and all(p.name == "info" or p.suffix == ".json" for p in kept), kept


@pytest.mark.parametrize("name", ["t1", "t1_gz", "t1_sharded", "aal"])
def test_tensorstore_reads_every_scale_from_the_bucket(converted, s3_server, name):  # noqa: F811
    tmp, _ = converted
    info = json.loads((tmp / "local" / name / "info").read_text())
    for scale in range(len(info["scales"])):
        spec = {"driver": "neuroglancer_precomputed", "scale_index": scale}
        spec["fill_missing_data_reads"] = False
        remote = ts.open({**spec, "kvstore": s3_server.kvstore(BUCKET, f"run1/{name}/")}).result()
        same = "t1" if name == "t1_gz" else name  # the file kvstore cannot read .gz chunks
        local = ts.open({**spec, "kvstore": f"file://{tmp / 'local' / same}/"}).result()
        np.testing.assert_array_equal(remote.read().result(), local.read().result())


def test_a_killed_run_finishes_on_rerun(converted, s3_server):  # noqa: F811
    """Every job killed after its 3rd file (uploads in flight die with it): no info in the
    bucket for what did not finish; the rerun writes the same objects as a clean run."""
    tmp, sheet = converted
    os.environ["NGPRECOMPUTED_CRASH"] = "file:3"
    try:
        proc = run(tmp, sheet, f"s3://{BUCKET}/killed2", s3_server, "--keep-going", check=False)
    finally:
        del os.environ["NGPRECOMPUTED_CRASH"]
    assert proc.returncode != 0
    half = bucket_objects(s3_server, "killed2")
    done = {k.split("/")[0] for k in half if k.endswith("/info") and k.count("/") == 1}
    assert done != {"t1", "t1_gz", "t1_sharded", "aal", "ieeg", "tracts"}
    run(tmp, sheet, f"s3://{BUCKET}/killed2", s3_server)
    client = s3_server.client()
    clean = bucket_objects(s3_server, "run1")
    again = bucket_objects(s3_server, "killed2")
    assert set(again) == set(clean)
    for key in clean:
        a = client.get_object(Bucket=BUCKET, Key=f"run1/{key}")["Body"].read()
        b = client.get_object(Bucket=BUCKET, Key=f"killed2/{key}")["Body"].read()
        assert a == b, key


def test_a_missing_bucket_is_one_line(converted, s3_server):  # noqa: F811
    tmp, sheet = converted
    proc = run(tmp, sheet, "s3://no-such-bucket/x", s3_server, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert lines == [
        "ngprecomputed: error: results s3://no-such-bucket/x: no bucket 'no-such-bucket'"
    ]
    assert "Traceback" not in proc.stderr


def test_refused_credentials_are_one_line(tmp_path, data):
    config = identities(admin=("AKADMIN", "secret-admin"))
    with S3Server(config=config) as server:
        server.make_bucket(BUCKET)
        sheet = write_sheet(tmp_path / "sheet.csv", sheet_rows(data, tmp_path)[:1])
        server.secret_key = "wrong"
        proc = run(tmp_path, sheet, f"s3://{BUCKET}/x", server, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "credentials refused" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "s3-mirror" / BUCKET / "x" / "t1").exists()


def test_the_viewer_reads_the_bucket(converted, s3_server, browser):  # noqa: F811
    """CORS set by ``ngprecomputed webconfig s3://bucket``; ``view s3://...`` serves the client,
    the index page and the states, the data coming from the bucket's HTTP endpoint: the T1 and
    the atlas are drawn, every chunk fetched from the bucket, no console error."""
    tmp, _ = converted
    env = {**os.environ, **s3_server.env, "AWS_ENDPOINT_URL_S3": s3_server.endpoint}
    cli = [sys.executable, "-m", "ngprecomputed.cli"]
    done = subprocess.run([*cli, "webconfig", f"s3://{BUCKET}"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    cmd = [*cli, "view", f"s3://{BUCKET}/run1", "--mirror", str(tmp / "s3-mirror"), "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--offline"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        printed = read_printed(proc, "all")
        assert printed["Sources"]["t1"] == f"precomputed://{s3_server.url(BUCKET, 'run1/t1')}"
        for name in ("t1", "aal"):
            client, state = decode(printed["Views"][name])
            state.update(CROSS_SECTION)

            def wanted(panel, name=name):
                return [f"run1/{name}/info"]

            shown = show(browser, client, state, wanted)
            check_network(shown)
            from_bucket = [u for u in shown.responses if u.startswith(s3_server.endpoint)]
            chunks = [
                u for u in from_bucket if "/run1/" + name + "/" in u and not u.endswith("info")
            ]
            assert chunks, shown.responses
            b = shown.panel.box
            inner = shown.pixels[int(b["y"]) + MARGIN : int(b["y"] + b["height"]) - MARGIN]
            assert (inner.max(axis=2) > 40).mean() > 0.05, name  # drawn
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("name", ["t1", "t1_gz", "t1_sharded", "aal"])
def test_cloudvolume_reads_every_scale_from_the_bucket(converted, s3_server, name, monkeypatch):  # noqa: F811
    """CloudVolume (through a CloudFiles alias for the endpoint: it takes no endpoint of its
    own) reads every scale from the bucket equal to TensorStore reading the local folder."""
    import cloudfiles
    from cloudvolume import CloudVolume

    tmp, _ = converted
    # CloudFiles takes AWS_* variables only all three together (a KeyError else), and its
    # sharded reads do not pass ``secrets`` on: the environment it is
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "")
    alias = f"ngp{s3_server.port}"
    cloudfiles.paths.add_alias(alias, f"s3://{s3_server.endpoint}/")
    secrets = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    same = "t1" if name == "t1_gz" else name
    try:
        info = json.loads((tmp / "local" / name / "info").read_text())
        for scale in range(len(info["scales"])):
            vol = CloudVolume(
                f"{alias}://{BUCKET}/run1/{name}",
                mip=scale,
                fill_missing=False,
                progress=False,
                cache=False,
                secrets=secrets,
            )
            spec = {"driver": "neuroglancer_precomputed", "scale_index": scale}
            local = ts.open({**spec, "kvstore": f"file://{tmp / 'local' / same}/"}).result()
            np.testing.assert_array_equal(np.asarray(vol[:, :, :]), local.read().result())
    finally:
        cloudfiles.paths.remove_alias(alias)
