"""Slabs read from uncompressed files in pieces (cubes: not whole x rows) equal nibabel's
reads, for 3D, 4D, big-endian and RGB voxels."""

import nibabel as nib
import numpy as np
import pytest

from ngprecomputed.errors import InputError
from ngprecomputed.sources import open_source

BOXES = [
    ((3, 17), (0, 21), (2, 9)),
    ((0, 5), (4, 5), (0, 11)),
    ((10, 19), (20, 21), (10, 11)),
    ((0, 19), (0, 21), (0, 11)),
]


def save(tmp_path, data, name, dtype=None):
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 1.0, 1.0]))
    if dtype is not None:
        img.header.set_data_dtype(dtype)
    path = tmp_path / name
    nib.save(img, path)
    return path


@pytest.mark.parametrize("kind", ["uint8", "int16_4d", "big_endian", "rgb"])
def test_cube_reads_equal_nibabel(tmp_path, kind):
    rng = np.random.default_rng(3)
    shape = (19, 21, 11)
    if kind == "uint8":
        path = save(tmp_path, rng.integers(0, 255, shape, dtype=np.uint8), "a.nii")
    elif kind == "int16_4d":
        path = save(tmp_path, rng.integers(-900, 900, (*shape, 3), dtype=np.int16), "a.nii")
    elif kind == "big_endian":
        data = rng.integers(0, 60000, shape, dtype=np.uint16)
        header = nib.Nifti1Header(endianness=">")
        path = tmp_path / "a.nii"
        nib.save(nib.Nifti1Image(data.astype(">u2"), np.eye(4), header), path)
        assert nib.load(path).header.endianness == ">"
    else:
        rgb = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
        data = rng.integers(0, 255, (*shape, 3), dtype=np.uint8).copy().view(rgb)[..., 0]
        path = save(tmp_path, data, "a.nii", rgb)
    source = open_source(path)
    whole = np.asanyarray(nib.load(path).dataobj)
    if whole.dtype.names:
        whole = np.stack([whole[n] for n in whole.dtype.names], axis=-1)
    whole = whole.reshape(*shape, -1)
    for box in BOXES:
        got = source.read(box)
        want = whole[tuple(slice(lo, hi) for lo, hi in box)]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=str(box))


def test_decompressed_copy_reads_like_the_source(tmp_path, data):
    """A sharded dataset's cube slabs read the .nii.gz decompressed once: the same voxels."""
    from ngprecomputed.sources.volume import decompress

    copy = tmp_path / "source.raw"
    decompress(data["mni_t1"], copy)
    plain, fast = open_source(data["mni_t1"]), open_source(data["mni_t1"], decompressed=copy)
    for box in [((10, 90), (7, 200), (30, 31)), ((0, 197), (0, 233), (100, 140))]:
        np.testing.assert_array_equal(fast.read(box), plain.read(box))


def test_decompress_a_truncated_file_says_so(tmp_path, data):
    from ngprecomputed.errors import InputError
    from ngprecomputed.sources.volume import decompress

    cut = tmp_path / "cut.nii.gz"
    whole = data["mni_t1"].read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="cut.nii.gz: cannot decompress"):
        decompress(cut, tmp_path / "out.raw")
    assert not list(tmp_path.glob("*out.raw*"))  # nothing half-written


def test_a_damaged_deflate_stream_is_a_gzip_error(tmp_path):
    """ISA-L raises its own error type for an invalid deflate block: it becomes the one-line
    input error Python's gzip gives (never a traceback), when read and when decompressed."""
    import gzip

    from isal import igzip

    from ngprecomputed.errors import InputError
    from ngprecomputed.sources.volume import GzipStream, decompressing

    damaged = bytearray(gzip.compress(b"abc" * 300_000, mtime=0))
    damaged[20:70] = bytes(range(50))  # inside the first block's Huffman codes
    path = tmp_path / "damaged.nii.gz"
    path.write_bytes(bytes(damaged))
    with pytest.raises(gzip.BadGzipFile), GzipStream(path) as f:
        f.read(900_000)
    error = pytest.raises(InputError, match="damaged.nii.gz: cannot decompress")
    with error, decompressing(path), igzip.open(path) as f:
        f.read()


def test_image_files_are_what_nibabel_reads(tmp_path):
    """A workflow tracks every file of an image: an Analyze pair is two, a NIfTI one."""
    from ngprecomputed.sources.volume import image_files

    data = np.zeros((4, 4, 4), np.uint8)
    nib.AnalyzeImage(data, np.eye(4)).to_filename(tmp_path / "pair.hdr")
    nib.Nifti1Image(data, np.eye(4)).to_filename(tmp_path / "one.nii.gz")
    assert image_files(tmp_path / "pair.hdr") == [tmp_path / "pair.hdr", tmp_path / "pair.img"]
    assert image_files(tmp_path / "one.nii.gz") == [tmp_path / "one.nii.gz"]


def test_gz_headers_are_nibabels_and_indexed_gzip_is_restored(tmp_path):
    """A .gz header read through Python's gzip (the fast path) gives nibabel's own image, and
    nibabel's indexed_gzip reads are switched back on after it, also when the file is bad."""
    from nibabel import _compression

    before = _compression.HAVE_INDEXED_GZIP
    data = np.arange(19 * 21 * 11, dtype=np.int16).reshape(19, 21, 11)
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 1.0, 1.0]))
    img.header.set_slope_inter(0.5, 3.0)
    path = tmp_path / "a.nii.gz"
    nib.save(img, path)
    source = open_source(path)
    assert before == _compression.HAVE_INDEXED_GZIP
    want = nib.load(path)
    assert source.scaled and source.shape == (19, 21, 11, 1)
    np.testing.assert_array_equal(source.affine, want.affine)
    np.testing.assert_array_equal(source.read(BOXES[3])[..., 0], want.get_fdata())
    bad = tmp_path / "b.nii.gz"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="b.nii.gz"):
        open_source(bad)
    assert before == _compression.HAVE_INDEXED_GZIP


def test_a_gz_is_decompressed_once_per_read(tmp_path, monkeypatch):
    """nibabel would try to memory-map the ISA-L stream, and numpy's memmap seeks to its end
    first: a second decompression of the whole file. A read seeks forward only."""
    from ngprecomputed.sources.volume import GzipStream

    data = np.arange(19 * 21 * 11, dtype=np.uint8).reshape(19, 21, 11)
    path = save(tmp_path, data, "a.nii.gz")
    seeks = []
    seek = GzipStream.seek
    monkeypatch.setattr(GzipStream, "seek", lambda f, *a: seeks.append(a) or seek(f, *a))
    got = open_source(path).read(BOXES[3])[..., 0]
    np.testing.assert_array_equal(got, data)
    assert seeks and all(a[1:] in ((), (0,)) for a in seeks), seeks
