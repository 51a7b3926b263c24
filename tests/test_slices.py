"""SliceSource: stacks of 2D section images read as a RAS volume.

Oracle: the MNI T1 template (RAS already) written out as sections in several formats and stack
orientations, each written with explicit numpy indexing per orientation (not through the module's
own axis logic); reading the stack back must give the NIfTI array exactly (lossless formats).
"""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import write_big_stack
from ngprecomputed.errors import InputError
from ngprecomputed.sources.slices import SliceSource, natural_key

MNI = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


@pytest.fixture(scope="module")
def mni() -> np.ndarray:
    spec = importlib.util.find_spec("nilearn")
    assert spec is not None, "nilearn is not installed (pip install -e '.[test]')"
    img = nib.load(Path(spec.submodule_search_locations[0]) / MNI)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint8 and data.shape == (197, 233, 189)
    return data


def save_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(image)).save(path)


def write_ras_png(folder: Path, vol: np.ndarray) -> Path:
    """Axial sections bottom to top; columns go Right, rows (top to bottom) go Anterior."""
    folder.mkdir()
    for k in range(vol.shape[2]):
        save_png(folder / f"slice_{k + 1}.png", vol[:, :, k].T)  # image[row=y, col=x]
    return folder


def write_ria_tiff(folder: Path, vol: np.ndarray) -> Path:
    """Coronal sections posterior to anterior; columns go Right, rows go Inferior; 16-bit LZW."""
    folder.mkdir()
    for k in range(vol.shape[1]):
        image = (vol[:, k, ::-1].T.astype(np.uint16)) * 200  # image[row, col] = vol[col, k, -1-row]
        tifffile.imwrite(folder / f"slice_{k + 1}.tif", image, compression="lzw", rowsperstrip=8)
    return folder


def write_ilp_tiled(folder: Path, vol: np.ndarray) -> Path:
    """Coronal sections anterior to posterior; columns go Inferior, rows go Left.

    image[row, col] of section k = vol[nx - 1 - row, ny - 1 - k, nz - 1 - col]; tiled 16x16 LZW.
    """
    folder.mkdir()
    ny = vol.shape[1]
    for k in range(ny):
        image = vol[::-1, ny - 1 - k, ::-1]
        tifffile.imwrite(folder / f"Sec_{k + 1}.TIF", image, compression="lzw", tile=(16, 16))
    return folder


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, mni) -> dict:
    root = tmp_path_factory.mktemp("stacks")
    return {
        "png8_RAS": (write_ras_png(root / "ras_png", mni), "RAS", mni),
        "tiff16_RIA": (
            write_ria_tiff(root / "ria_tiff", mni),
            "RIA",
            mni.astype(np.uint16) * 200,
        ),
        "tiled8_ILP": (write_ilp_tiled(root / "ilp_tiled", mni), "ILP", mni),
    }


@pytest.mark.parametrize("name", ["png8_RAS", "tiff16_RIA", "tiled8_ILP"])
def test_stack_reads_back_the_volume(stacks, name):
    folder, orientation, expected = stacks[name]
    src = SliceSource([folder], (1.0, 1.0, 1.0), orientation)
    assert src.shape == (*expected.shape, 1)
    assert src.dtype == expected.dtype and src.source_dtype == expected.dtype
    assert src.scaled is False
    assert src.path == Path(folder)
    full = src.read(tuple((0, n) for n in expected.shape))
    assert full.shape == (*expected.shape, 1) and full.dtype == expected.dtype
    np.testing.assert_array_equal(full[..., 0], expected)

    rng = np.random.default_rng(7)
    for _ in range(25):
        box = tuple(
            (int(a), int(b) + 1) for a, b in (sorted(rng.integers(0, n, 2)) for n in expected.shape)
        )
        part = src.read(box)
        sub = expected[tuple(slice(a, b) for a, b in box)]
        np.testing.assert_array_equal(part[..., 0], sub, err_msg=str(box))
    # boxes on the faces (first/last voxels of every axis, where flips go wrong)
    for j, n in enumerate(expected.shape):
        for edge in ((0, 1), (n - 1, n)):
            box = tuple(edge if i == j else (0, m) for i, m in enumerate(expected.shape))
            sub = expected[tuple(slice(a, b) for a, b in box)]
            np.testing.assert_array_equal(src.read(box)[..., 0], sub)


def test_read_opens_only_the_sections_of_the_box(tmp_path, mni):
    """Sections outside the box may vanish after opening: a read inside the box never sees it."""
    vol = mni[:, 100:140, :]
    folder = write_ria_tiff(tmp_path / "ria", vol)
    src = SliceSource([folder], (1, 1, 1), "RIA")
    for k in [*range(0, 10), *range(20, 40)]:  # keep sections 10..19 (y = 10..19)
        (folder / f"slice_{k + 1}.tif").unlink()
    box = ((3, 190), (10, 20), (50, 60))
    want = vol[3:190, 10:20, 50:60].astype(np.uint16) * 200
    np.testing.assert_array_equal(src.read(box)[..., 0], want)
    with pytest.raises(InputError, match="cannot read pixels"):
        src.read(((0, 1), (9, 11), (0, 1)))
    with pytest.raises(ValueError, match="outside"):
        src.read(((0, 1), (0, 41), (0, 1)))
    assert src.read(((0, 0), (0, 40), (0, 189))).shape == (0, 40, 189, 1)


def test_glob_input_and_jpeg(tmp_path, mni):
    """JPEG is lossy: the oracle is Pillow's decode of each file, plus closeness to the volume."""
    folder = tmp_path / "jpeg"
    folder.mkdir()
    for k in range(mni.shape[2]):
        Image.fromarray(np.ascontiguousarray(mni[:, :, k].T)).save(
            folder / f"z{k + 1}.jpg", quality=95
        )
    (folder / "notes.txt").write_text("not matched by the pattern")
    src = SliceSource([str(folder / "z*.jpg")], (0.5, 0.5, 0.5), "RAS")
    decoded = np.stack(
        [np.asarray(Image.open(folder / f"z{k + 1}.jpg")).T for k in range(mni.shape[2])], axis=2
    )
    box = ((20, 180), (3, 230), (40, 120))
    got = src.read(box)[..., 0]
    np.testing.assert_array_equal(got, decoded[20:180, 3:230, 40:120])
    assert np.abs(got.astype(int) - mni[20:180, 3:230, 40:120]).mean() < 2


def test_affine_follows_the_orientation(stacks):
    folder, orientation, _ = stacks["tiff16_RIA"]
    # stack order: column spacing 0.1, row spacing 0.2, slice spacing 0.3 (mm)
    src = SliceSource([folder], (0.1, 0.2, 0.3), orientation)
    np.testing.assert_allclose(src.affine, np.diag([0.1, 0.3, 0.2, 1.0]))
    assert src.unit_nm == 1e6
    np.testing.assert_allclose(src.voxel_size_nm, (1e5, 3e5, 2e5))
    folder, orientation, _ = stacks["tiled8_ILP"]
    src = SliceSource([folder], (0.1, 0.2, 0.3), orientation)  # I, L, P -> x=L, y=P, z=I
    np.testing.assert_allclose(src.affine, np.diag([0.2, 0.3, 0.1, 1.0]))


def test_natural_order(tmp_path):
    names = ["brain_s10_x.png", "Brain_s2_x.png", "brain_S1_x.png", "brain_s2_y.png", "s02b.PNG"]
    expected = ["brain_S1_x.png", "Brain_s2_x.png", "brain_s2_y.png", "brain_s10_x.png"]
    assert sorted(names[:4], key=natural_key) == expected
    assert sorted(["a100", "A20", "a3b7", "a3b10"], key=natural_key) == [
        "a3b7",
        "a3b10",
        "A20",
        "a100",
    ]
    for rank, name in enumerate(expected):
        save_png(tmp_path / name, np.full((4, 5), rank, np.uint8))
    src = SliceSource([tmp_path], (1, 1, 1))
    assert src.shape == (5, 4, 4, 1)
    np.testing.assert_array_equal(src.read(((0, 5), (0, 4), (0, 4)))[2, 1, :, 0], [0, 1, 2, 3])


def test_two_inputs_are_channels(tmp_path, mni):
    vol = mni[:, :, 60:90]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for k in range(vol.shape[2]):
        save_png(a / f"s{k}.png", vol[:, :, k].T)
        save_png(b / f"other_{k}.png", 255 - vol[:, :, k].T)
    src = SliceSource([a, str(b / "other_*.png")], (1, 1, 1))
    assert src.shape == (*vol.shape, 2)
    box = ((5, 150), (0, 233), (3, 27))
    got = src.read(box)
    np.testing.assert_array_equal(got[..., 0], vol[5:150, :, 3:27])
    np.testing.assert_array_equal(got[..., 1], 255 - vol[5:150, :, 3:27])


def test_rgb_stack_is_three_channels(tmp_path, mni):
    vol = mni[:, :, 80:100]
    rgb = np.stack([vol, 255 - vol, vol // 2], axis=-1)  # [x, y, z, 3]
    for k in range(vol.shape[2]):
        save_png(tmp_path / f"rgb{k}.png", rgb[:, :, k].transpose(1, 0, 2))
    src = SliceSource([tmp_path], (1, 1, 1), "RAS")
    assert src.shape == (*vol.shape, 3) and src.dtype == np.uint8
    np.testing.assert_array_equal(src.read(((0, 197), (0, 233), (0, 20))), rgb)
    np.testing.assert_array_equal(src.read(((9, 99), (50, 51), (4, 17))), rgb[9:99, 50:51, 4:17])
    with pytest.raises(InputError, match="RGB") as e:
        SliceSource([tmp_path, tmp_path], (1, 1, 1))
    assert_one_line(e, "rgb0.png")


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_rgb_tiff(tmp_path, mni, planar):
    """RGB TIFF, samples interleaved (strips read partially) or in planes (decoded whole)."""
    vol = mni[:, 100:110, :]
    rgb = np.stack([vol, 255 - vol, vol // 3], axis=-1)  # [x, y, z, 3]
    for k in range(vol.shape[1]):  # RIA: image[row, col, c] = rgb[col, k, -1 - row, c]
        image = rgb[:, k, ::-1].transpose(1, 0, 2)
        if planar == "separate":
            image = np.moveaxis(image, -1, 0)
        tifffile.imwrite(
            tmp_path / f"c{k}.tif",
            image,
            photometric="rgb",
            planarconfig=planar,
            compression="lzw",
            rowsperstrip=8,
        )
    src = SliceSource([tmp_path], (1, 1, 1), "RIA")
    assert src.shape == (*vol.shape, 3)
    box = ((10, 150), (2, 9), (33, 170))
    np.testing.assert_array_equal(src.read(box), rgb[10:150, 2:9, 33:170])


def assert_one_line(excinfo, *needles: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


def small_stack(folder: Path, n: int = 3, size=(6, 8), dtype=np.uint8) -> Path:
    folder.mkdir(exist_ok=True)
    for k in range(n):
        save_png(folder / f"s{k + 1}.png", np.full(size, k, dtype))
    return folder


@pytest.mark.parametrize("code", ["RAX", "RRS", "RA", "RASL", "RLS", "ASA", "", "SPQ"])
def test_bad_orientation(tmp_path, code):
    folder = small_stack(tmp_path / "ok")
    with pytest.raises(InputError, match="orientation") as e:
        SliceSource([folder], (1, 1, 1), code)
    assert_one_line(e, repr(code), "R/L, A/P, S/I")


def test_lowercase_orientation_is_accepted(tmp_path):
    src = SliceSource([small_stack(tmp_path / "ok")], (1, 1, 1), "lpi")
    assert src.shape == (8, 6, 3, 1)
    np.testing.assert_array_equal(src.read(((0, 1), (0, 1), (0, 3)))[0, 0, :, 0], [2, 1, 0])


def test_mismatched_sizes(tmp_path):
    folder = small_stack(tmp_path / "stack", n=4)
    save_png(folder / "s3.png", np.zeros((6, 9), np.uint8))
    save_png(folder / "s4.png", np.zeros((7, 8), np.uint8))
    with pytest.raises(InputError, match="same size") as e:
        SliceSource([folder], (1, 1, 1))
    assert_one_line(e, "s3.png", "9x6", "8x6")


def test_mixed_dtypes(tmp_path):
    folder = small_stack(tmp_path / "stack", n=3)
    save_png(folder / "s2.png", np.zeros((6, 8), np.uint16))
    with pytest.raises(InputError) as e:
        SliceSource([folder], (1, 1, 1))
    assert_one_line(e, "s2.png", "16-bit", "8-bit")


def test_channel_inputs_must_match(tmp_path):
    a = small_stack(tmp_path / "a", n=3)
    b = small_stack(tmp_path / "b", n=4)
    with pytest.raises(InputError, match="4 images") as e:
        SliceSource([a, b], (1, 1, 1))
    assert_one_line(e, str(b))
    c = small_stack(tmp_path / "c", n=3, size=(6, 7))
    with pytest.raises(InputError, match="same size") as e:
        SliceSource([a, c], (1, 1, 1))
    assert_one_line(e, "s1.png")


def test_empty_and_missing_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("no images here")
    with pytest.raises(InputError, match="no TIFF, PNG or JPEG images") as e:
        SliceSource([empty], (1, 1, 1))
    assert_one_line(e, str(empty))
    with pytest.raises(InputError, match="no files match") as e:
        SliceSource([str(tmp_path / "nothing_*.png")], (1, 1, 1))
    assert_one_line(e)
    with pytest.raises(InputError, match="no such folder or file"):
        SliceSource([tmp_path / "absent"], (1, 1, 1))
    with pytest.raises(InputError, match="no input"):
        SliceSource([], (1, 1, 1))
    with pytest.raises(InputError, match="extension") as e:
        SliceSource([str(empty / "*")], (1, 1, 1))
    assert_one_line(e, "README.txt")


def test_bad_files(tmp_path):
    folder = small_stack(tmp_path / "text", n=2)
    (folder / "s3.png").write_text("not a png")
    with pytest.raises(InputError, match="not a readable image") as e:
        SliceSource([folder], (1, 1, 1))
    assert_one_line(e, "s3.png")

    rgba = tmp_path / "rgba"
    rgba.mkdir()
    save_png(rgba / "a.png", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(InputError, match="RGBA") as e:
        SliceSource([rgba], (1, 1, 1))
    assert_one_line(e, "a.png")

    multi = tmp_path / "multi"
    multi.mkdir()
    tifffile.imwrite(multi / "m.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="one section per file") as e:
        SliceSource([multi], (1, 1, 1))
    assert_one_line(e, "m.tif")

    floats = tmp_path / "float"
    floats.mkdir()
    tifffile.imwrite(floats / "f.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="unsigned") as e:
        SliceSource([floats], (1, 1, 1))
    assert_one_line(e, "f.tif")

    for bad in [(1, 0, 1), (1, 1), ("a", 1, 1), (1, float("nan"), 1), 1.0]:
        with pytest.raises(InputError, match="voxel size"):
            SliceSource([small_stack(tmp_path / "ok")], bad)


def test_damaged_tiff_fails_at_read(tmp_path):
    folder = tmp_path / "damaged"
    folder.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    for k in range(2):
        tifffile.imwrite(folder / f"s{k}.tif", image, compression="lzw", rowsperstrip=8)
    path = folder / "s1.tif"
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        end = int(page.dataoffsets[-1]) + int(page.databytecounts[-1])
        last = int(page.dataoffsets[-1])
    data = bytearray(path.read_bytes())
    data[last:end] = b"\xff" * (end - last)  # garbage LZW codes in the last strip
    path.write_bytes(bytes(data))
    src = SliceSource([folder], (1, 1, 1))
    # the first rows come from intact strips, so they still read
    np.testing.assert_array_equal(src.read(((0, 64), (0, 8), (1, 2)))[:, :, 0, 0], image[:8].T)
    with pytest.raises(InputError, match="cannot read pixels") as e:
        src.read(((0, 64), (0, 64), (0, 2)))
    assert_one_line(e, "s1.tif")


# -- memory: the box, not the stack -----------------------------------------------------------

BIG_N, BIG_SIDE, STRIP = 300, 2000, 16
MB = 2**20

PROBE = """
import json, sys, time
import numpy as np
from ngprecomputed.sources.slices import SliceSource

folder, box = sys.argv[1], tuple(tuple(b) for b in json.loads(sys.argv[2]))
t = time.perf_counter()
src = SliceSource([folder], (0.02, 0.02, 0.02), "RAI")
opened = time.perf_counter() - t
t = time.perf_counter()
data = src.read(box)
read = time.perf_counter() - t
status = open("/proc/self/status").read()
hwm = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]) * 1024
# values (after the peak is taken): the first strip (16 rows) of section k holds k % 256, the
# others (row // 8 + column // 500) % 256; z runs Superior, sections run Inferior
(x0, x1), (y0, y1), (z0, z1) = box
n = src.shape[2]
for j, y in enumerate(range(y0, y1)):
    for i, z in enumerate(range(z0, z1)):
        x = np.arange(x0, x1)
        want = (n - 1 - z) % 256 if y < 16 else (y // 8 + x // 500) % 256
        assert (data[:, j, i, 0] == want).all(), (y, z)
print(json.dumps({"hwm": hwm, "nbytes": data.nbytes, "open_s": opened, "read_s": read}))
"""


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory) -> Path:
    return write_big_stack(tmp_path_factory.mktemp("big"), BIG_N, BIG_SIDE, STRIP)


def probe(folder: Path, box) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder), json.dumps(box)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "box",
    [
        ((0, BIG_SIDE), (0, BIG_SIDE), (100, 164)),  # 64 sections, every row: 256 MB
        ((0, BIG_SIDE), (1000, 1004), (0, BIG_N)),  # 4 rows of every section: 2.4 MB
    ],
    ids=["z-slab", "rows"],
)
def test_memory_is_bounded_by_the_box(big_stack, box):
    stack_bytes = BIG_N * BIG_SIDE * BIG_SIDE
    t = time.perf_counter()
    out = probe(big_stack, box)
    elapsed = time.perf_counter() - t
    box_bytes = int(np.prod([b - a for a, b in box]))
    assert out["nbytes"] == box_bytes
    bound = box_bytes * 3 // 2 + 150 * MB
    assert bound < stack_bytes / 2
    assert out["hwm"] < bound, (
        f"peak {out['hwm'] / MB:.0f} MB for a {box_bytes / MB:.0f} MB box (bound "
        f"{bound / MB:.0f} MB, stack {stack_bytes / MB:.0f} MB)"
    )
    # the measurement does see the box (the peak is not just the interpreter)
    assert out["hwm"] > box_bytes
    print(
        f"{box}: peak {out['hwm'] / MB:.0f} MB, box {box_bytes / MB:.1f} MB, "
        f"open {out['open_s']:.2f} s, read {out['read_s']:.2f} s, subprocess {elapsed:.1f} s"
    )
