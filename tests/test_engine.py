"""Whole datasets in one process: slabs in forked workers, small datasets many to a job, the
.gz source inflated once, band after band, while its slabs run; the same bytes as one job per
slab."""

import gzip
import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import read_tensorstore
from ngprecomputed import engine
from ngprecomputed.batches import SPLIT_VOXELS, Batch, make_batches, plan_jobs
from ngprecomputed.cli import main
from ngprecomputed.engine import RING_SLOTS, Work, bands, convert, convert_all, finish
from ngprecomputed.errors import InputError
from ngprecomputed.job import Failed
from ngprecomputed.plan import make_plan
from ngprecomputed.pyramid import build_slab
from ngprecomputed.settings import Options
from ngprecomputed.sources import open_source
from ngprecomputed.sources.header import HeaderOnly
from ngprecomputed.sources.volume import GzipStream


def digest(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def header(shape, channels=1):
    return HeaderOnly((*shape, channels), np.dtype("uint8"), (1.0, 1.0, 1.0))


def test_small_datasets_go_many_to_a_job_in_sheet_order():
    sizes = {f"d{i}": 10 for i in range(7)}
    batches = make_batches(list(sizes), sizes, cores=2, job_voxels=30)
    assert [b.datasets for b in batches] == [
        ("d0", "d1", "d2"),
        ("d3", "d4", "d5"),
        ("d6",),
    ]
    assert [b.name for b in batches] == ["d0", "d3", "d6"]
    assert [b.workers for b in batches] == [2, 2, 1]


def test_jobs_a_sheet_makes():
    """Small ones share a job; a bigger one is a job with its workers and slabs of a share of
    voxels_per_job; beyond job_voxels a volume fans out (no job of its own)."""
    opts = Options(voxels_per_job=2**27)
    items = [
        ("small1", header((100, 100, 100)), opts),
        ("big", header((600, 600, 600)), opts),  # 216 M voxels
        ("small2", header((90, 90, 90)), opts),
        ("huge", header((2100, 2100, 2100)), opts),  # 9.3 G voxels
    ]
    plans, batches = plan_jobs(items, cores=2, job_voxels=2**33)
    assert Batch("big", ("big",), 2) in batches
    assert Batch("small1", ("small1", "small2"), 2) in batches
    assert len(batches) == 2  # huge fans out
    for name in ("big", "small1"):  # every slab of a job's worker fits its share
        plan = plans[name]
        for s, stage in enumerate(plan.stages):
            for i in range(stage.count):
                box = plan.input_box(s, i)
                assert np.prod([hi - lo for lo, hi in box]) <= 2**27 // 2
    assert plans["huge"].stages[0].count > 60  # slabs of voxels_per_job, one job each
    assert SPLIT_VOXELS >= 100**3


@pytest.fixture(scope="module")
def t1_copies(tmp_path_factory, data):
    """The MNI T1 as .nii and .nii.gz (the packaged file is .nii.gz)."""
    folder = tmp_path_factory.mktemp("t1")
    gz = folder / "t1.nii.gz"
    shutil.copy(data["mni_t1"], gz)
    plain = folder / "t1.nii"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    return {"nii": plain, "nii.gz": gz}


def one_job_per_slab(source, opts, root):
    """What the fanned-out workflow does: every slab alone, then the dataset's info."""
    plan = make_plan("t1", open_source(source), opts)
    for s, stage in enumerate(plan.stages):
        for i in range(stage.count):
            build_slab(plan, root, s, i)
    finish(plan, root)
    return plan


@pytest.mark.parametrize("suffix", ["nii", "nii.gz"])
def test_workers_write_the_bytes_one_job_per_slab_writes(tmp_path, t1_copies, data, suffix):
    """The T1 cut in ~40 slabs: two workers (the .nii.gz inflated once while slabs run) give
    the bytes of slabs written one by one, and TensorStore reads the T1's voxels back."""
    opts = Options(voxels_per_job=200_000, chunk_voxels=4096)
    one_job_per_slab(t1_copies["nii"], opts, tmp_path / "serial")
    plan = make_plan("t1", open_source(t1_copies[suffix]), opts)
    assert plan.stages[0].count > 20
    convert(Work(plan, tmp_path / "pooled", tmp_path / "work"), workers=2)
    assert digest(tmp_path / "pooled") == digest(tmp_path / "serial")
    assert not list((tmp_path / "work").glob("*"))  # the inflated copy is gone
    want = np.asanyarray(nib.load(data["mni_t1"]).dataobj)
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "pooled", 0)[..., 0], want)


def test_a_gz_source_is_inflated_into_a_ring_of_bands(tmp_path, t1_copies, monkeypatch):
    """The bands of a .nii.gz cover its voxels once, in file order, and the ring they are
    inflated into never holds more than two of them (not the whole decompressed file)."""
    opts = Options(voxels_per_job=200_000, chunk_voxels=4096)
    plan = make_plan("t1", open_source(t1_copies["nii.gz"]), opts)
    cut = bands(plan, open_source(t1_copies["nii.gz"]))
    img = nib.load(t1_copies["nii"])
    offset = int(img.dataobj.offset)
    assert cut[0].start == offset and cut[-1].end == t1_copies["nii"].stat().st_size
    assert all(a.end == b.start for a, b in zip(cut, cut[1:], strict=False))
    assert sorted(i for b in cut for i in b.slabs) == list(range(plan.stages[0].count))
    ends = []
    copy_to = GzipStream.copy_to

    def recording(self, fd, at, n):
        ends.append(at + n)
        return copy_to(self, fd, at, n)

    monkeypatch.setattr(GzipStream, "copy_to", recording)
    convert(Work(plan, tmp_path / "out", tmp_path / "work"), workers=2)
    assert len(ends) == len(cut) > RING_SLOTS
    assert max(ends) <= RING_SLOTS * max(b.end - b.start for b in cut) < cut[-1].end - offset


def gz_and_nii(img, folder, name):
    """``img`` saved as .nii and .nii.gz in ``folder``, the .nii converted slab by slab into
    ``folder/serial``; the .nii.gz's source and plan (small slabs)."""
    opts = Options(voxels_per_job=20_000, chunk_voxels=4096)
    for suffix in ("nii", "nii.gz"):
        nib.save(img, folder / f"{name}.{suffix}")
    one_job_per_slab(folder / f"{name}.nii", opts, folder / "serial")
    source = open_source(folder / f"{name}.nii.gz")
    return source, make_plan("t1", source, opts)


def test_a_scaled_gz_source_in_bands_reads_as_nibabel_scales_it(tmp_path):
    """A .nii.gz with a slope and an intercept is read from its bands by nibabel (not directly):
    the bytes of the same volume converted slab by slab from its .nii."""
    rng = np.random.default_rng(5)
    img = nib.Nifti1Image(rng.integers(-900, 900, (60, 70, 50), dtype=np.int16), np.eye(4))
    img.header.set_slope_inter(0.25, -3.0)
    source, plan = gz_and_nii(img, tmp_path, "scaled")
    assert source.scaled and len(bands(plan, source)) > 2
    convert(Work(plan, tmp_path / "pooled", tmp_path / "work"), workers=2)
    assert digest(tmp_path / "pooled") == digest(tmp_path / "serial")


def test_a_4d_gz_source_is_decompressed_whole_and_reads_like_its_nii(tmp_path):
    """A 4D .nii.gz (its z planes are not one after another: a volume after the other) is
    not cut in bands: it is decompressed whole, and converts to the bytes of its .nii."""
    rng = np.random.default_rng(6)
    img = nib.Nifti1Image(rng.integers(0, 255, (50, 60, 40, 2), dtype=np.uint8), np.eye(4))
    source, plan = gz_and_nii(img, tmp_path, "two")
    assert plan.stages[0].count > 4 and bands(plan, source) is None
    convert(Work(plan, tmp_path / "pooled", tmp_path / "work"), workers=2)
    assert digest(tmp_path / "pooled") == digest(tmp_path / "serial")
    assert not list((tmp_path / "work").glob("*"))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("cut", "cut.nii.gz: cannot decompress"),  # the gzip stream itself cut short
        ("short", "short.nii.gz: ends before the voxels its header describes"),  # a whole stream
    ],
)
def test_a_gz_source_cut_short_fails_in_one_line(tmp_path, t1_copies, damage, said):
    """A .nii.gz that ends before its voxels do: the job says so, naming it, and writes no
    info; its workers are not left waiting for bands that never come."""
    bad = tmp_path / f"{damage}.nii.gz"
    if damage == "cut":
        whole = t1_copies["nii.gz"].read_bytes()
        bad.write_bytes(whole[: len(whole) * 2 // 3])
    else:
        whole = t1_copies["nii"].read_bytes()
        bad.write_bytes(gzip.compress(whole[: len(whole) * 2 // 3], compresslevel=1))
    plan = make_plan("t1", open_source(bad), Options(voxels_per_job=200_000, chunk_voxels=4096))
    with pytest.raises(InputError, match=said):
        convert(Work(plan, tmp_path / "out", tmp_path / "work"), workers=2)
    assert not (tmp_path / "out" / "info").exists()
    assert not list((tmp_path / "work").glob("*"))


def test_a_failing_slab_of_a_band_fails_the_job(tmp_path, t1_copies, monkeypatch):
    """A slab that fails (here: a bug raised in its worker) before it has read its band: the
    job stops with that error instead of waiting forever for the band's slot."""
    build = engine.build_slab

    def failing(plan, root, stage, slab, **kw):
        if slab == 3:
            raise RuntimeError("slab 3 failed")
        return build(plan, root, stage, slab, **kw)

    monkeypatch.setattr(engine, "build_slab", failing)  # the forked workers inherit it
    plan = make_plan(
        "t1", open_source(t1_copies["nii.gz"]), Options(voxels_per_job=200_000, chunk_voxels=4096)
    )
    with pytest.raises(RuntimeError, match="slab 3 failed"):
        convert(Work(plan, tmp_path / "out", tmp_path / "work"), workers=2)
    assert not (tmp_path / "out" / "info").exists()


def test_a_failing_dataset_leaves_the_others_done(tmp_path, t1_copies):
    """Three small datasets in one job, the second's .nii.gz cut short: the others complete,
    the failure is in its own log, the job fails and writes no manifest."""
    cut = tmp_path / "cut.nii.gz"
    whole = t1_copies["nii.gz"].read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    works = []
    for name, path in (("a", t1_copies["nii.gz"]), ("b", cut), ("c", t1_copies["nii"])):
        plan = make_plan(name, open_source(path), Options())
        log = tmp_path / "logs" / name / "convert.log"
        works.append(Work(plan, tmp_path / name, tmp_path / ".work" / name, log=log))
    manifest = tmp_path / "job.json"
    with pytest.raises(Failed, match="1 of this job's 3 datasets failed"):
        convert_all(works, workers=2, manifest=manifest)
    assert (tmp_path / "a" / "info").is_file() and (tmp_path / "c" / "info").is_file()
    assert not (tmp_path / "b" / "info").exists()
    assert "cut.nii.gz" in (tmp_path / "logs" / "b" / "convert.log").read_text()
    assert " ERROR " not in (tmp_path / "logs" / "a" / "convert.log").read_text()
    assert not manifest.exists()


def test_convert_one_file_without_a_sheet(tmp_path, t1_copies, data):
    """`ngprecomputed convert` writes what the workflow writes for the same row."""
    out = tmp_path / "t1"
    assert main(["convert", str(t1_copies["nii.gz"]), str(out), "--processes", "2"]) == 0
    one_job_per_slab(t1_copies["nii.gz"], Options(), tmp_path / "serial")
    assert digest(out) == digest(tmp_path / "serial")
    assert json.loads((out / "info").read_text())["type"] == "image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serial", "t1"]  # no scratch left


def png_stack(folder, vol, orientation="RAS"):
    """``vol`` (RAS) as PNG sections in stack order for ``orientation`` RAS (axial) or RIA
    (coronal, posterior to anterior, rows going inferior)."""
    from PIL import Image

    folder.mkdir()
    sections = (
        [vol[:, :, k].T for k in range(vol.shape[2])]
        if orientation == "RAS"
        else [vol[:, k, ::-1].T for k in range(vol.shape[1])]
    )
    for k, image in enumerate(sections):
        Image.fromarray(np.ascontiguousarray(image)).save(folder / f"s{k}.png")
    return folder


@pytest.mark.parametrize("orientation", ["RAS", "RIA"])
def test_a_png_stack_is_decoded_once_into_a_ring(tmp_path, data, orientation, monkeypatch):
    """The slabs side by side of a band read its sections from the ring: every section file
    is decoded once (not once per slab), the bytes are those of slabs decoding their own
    sections, TensorStore reads the stack's voxels back, and the ring is gone after."""
    from ngprecomputed.sources import slices

    vol = np.asanyarray(nib.load(data["mni_t1"]).dataobj)[:, :, 40:120]
    stack = png_stack(tmp_path / "stack", vol, orientation)
    opts = Options(voxels_per_job=300_000, chunk_voxels=4096, orientation=orientation)
    source = open_source(str(stack), **engine.source_options(opts))
    plan = make_plan("s", source, opts)
    cut = engine.section_bands(plan, source)
    assert max(len(b.slabs) for b in cut) > 1 and engine._banded(
        Work(plan, tmp_path, tmp_path), source
    )
    assert sorted(i for b in cut for i in b.slabs) == list(range(plan.stages[0].count))
    decoded = tmp_path / "decoded.txt"  # appended to by every worker (forked after this)
    read_region = slices._read_region

    def counting(path, *args):
        with open(decoded, "a") as f:
            f.write(f"{path.name}\n")
        return read_region(path, *args)

    monkeypatch.setattr(slices, "_read_region", counting)
    convert(Work(plan, tmp_path / "ring", tmp_path / "work"), workers=2)
    names = decoded.read_text().split()
    assert sorted(names) == sorted(p.name for p in stack.iterdir())  # each file once
    assert not list((tmp_path / "work").glob("*"))
    monkeypatch.setattr(engine, "_banded", lambda work, source: False)
    convert(Work(plan, tmp_path / "own", tmp_path / "work2"), workers=2)
    assert len(decoded.read_text().split()) > 2 * len(names)  # the slabs decoding their own
    assert digest(tmp_path / "ring") == digest(tmp_path / "own")
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "ring", 0)[..., 0], vol)


def test_a_damaged_section_fails_the_ring_in_one_line(tmp_path, data):
    vol = np.asanyarray(nib.load(data["mni_t1"]).dataobj)[:, :, 40:120]
    stack = png_stack(tmp_path / "stack", vol)
    (stack / "s50.png").write_bytes((stack / "s50.png").read_bytes()[:300])
    opts = Options(voxels_per_job=300_000, chunk_voxels=4096)
    plan = make_plan("s", open_source(str(stack)), opts)
    with pytest.raises(InputError) as e:
        convert(Work(plan, tmp_path / "out", tmp_path / "work"), workers=2)
    assert "s50.png" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out" / "info").exists()
    assert not list((tmp_path / "work").glob("*"))
