"""A stack of 2D section images (histology, BigBrain-like data) read as one volume.

Inputs
    Each input is a folder (every ``.tif``/``.tiff``/``.png``/``.jpg``/``.jpeg`` file in it, other
    files ignored) or a glob pattern (every file it matches must be such an image). Files are
    sorted in natural order: case-insensitive, runs of digits compared as numbers wherever they
    are in the name (``s2.png`` before ``s10.png``). Several inputs are several channels and must
    hold the same number of images of the same size. An RGB image is 3 channels (then only one
    input is allowed). Values are 8- or 16-bit unsigned integers, the same type in every file.

Orientation
    The stack has three axes: image columns (x, left to right in the image), image rows (y, top
    to bottom) and the slice index (the sorted file order). ``orientation`` is a 3-letter code, as
    neuroglancer-scripts' ``--input-orientation``: letter 1 is the anatomical direction in which
    the column index increases, letter 2 the row index, letter 3 the slice index; letters are
    R/L, A/P, S/I, each anatomical axis once ("RAS": columns go Right, rows go Anterior, slices go
    Superior; "RIA": coronal sections from posterior to anterior, each image with its top
    superior).

    The volume this source exposes is reoriented to RAS (x increases to the Right, y to Anterior,
    z to Superior) by permuting and flipping the stack's axes, without resampling: voxel
    ``[i, j, k]`` of ``read`` is one pixel of one file, unchanged. ``voxel_size_mm`` is given in
    stack order (column spacing, row spacing, slice spacing) and permuted with the axes, so
    ``affine`` is diagonal (RAS voxel sizes in millimetres) with its origin at voxel 0.

What is read
    ``read(box)`` opens only the files of the slices the box covers. TIFF: only the strips (or
    tiles) that cover the box's rows (and, for tiles, columns) are read from disk and decoded,
    through ``tifffile``'s page offsets and ``page.decode`` (LZW, Deflate, JPEG... as
    ``imagecodecs`` provides); a TIFF layout this cannot address (RGB in separate colour planes)
    is decoded whole, then cropped. PNG and JPEG cannot be decoded by rows: each needed
    file is decoded whole, then cropped. Memory is therefore the box plus one decoded image (one
    strip or tile for TIFF), never the stack. The constructor reads every file's header (size,
    type) but no pixels.
"""

import contextlib
import copy
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..chunks import Box
from ..errors import InputError

_TIFF = (".tif", ".tiff")
_PIL = (".png", ".jpg", ".jpeg")
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
# letter -> (RAS axis, flipped)
_LETTERS = {
    "R": (0, False),
    "L": (0, True),
    "A": (1, False),
    "P": (1, True),
    "S": (2, False),
    "I": (2, True),
}
# Pillow mode -> (dtype, samples); "I" is how older Pillow opens 16-bit grayscale PNG.
_PIL_MODES = {
    "L": (np.uint8, 1),
    "RGB": (np.uint8, 3),
    "I;16": (np.uint16, 1),
    "I;16L": (np.uint16, 1),
    "I;16B": (np.uint16, 1),
}


def natural_key(path: str | Path) -> tuple:
    """Sort key: case-insensitive, digit runs as numbers (``s2`` < ``s10``), ties by the text."""
    text = str(path)
    parts = re.split(r"(\d+)", text.casefold())
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), text)


def parse_orientation(code: str, where: str = "") -> tuple[tuple[int, int, int], tuple[bool, ...]]:
    """``(perm, flips)``: RAS axis ``j`` is stack axis ``perm[j]``, reversed if ``flips[j]``."""
    prefix = f"{where}: " if where else ""
    letters = code.upper() if isinstance(code, str) else ""
    axes = [_LETTERS.get(c) for c in letters]
    if len(letters) != 3 or None in axes or len({a for a, _ in axes}) != 3:
        raise InputError(
            f"{prefix}orientation {code!r} is not valid: 3 letters from R/L, A/P, S/I, one per "
            "axis (image columns, image rows, slices), e.g. RAS or RIA"
        )
    perm = [0, 0, 0]
    flips = [False, False, False]
    for stack_axis, (ras_axis, flipped) in enumerate(axes):
        perm[ras_axis] = stack_axis
        flips[ras_axis] = flipped
    return tuple(perm), tuple(flips)


def list_images(spec: str | Path) -> list[Path]:
    """The image files of one input (a folder or a glob pattern), in natural order."""
    text = os.path.expanduser(str(spec))
    if os.path.isdir(text):
        files = [
            p
            for p in Path(text).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _TIFF + _PIL
        ]
        if not files:
            raise InputError(f"{spec}: no TIFF, PNG or JPEG images in this folder")
    elif glob.has_magic(text):
        files = [Path(p) for p in glob.glob(text, recursive=True) if os.path.isfile(p)]
        if not files:
            raise InputError(f"{spec}: no files match this pattern")
        for p in sorted(files, key=natural_key):
            if p.suffix.lower() not in _TIFF + _PIL:
                raise InputError(f"{p}: not a TIFF, PNG or JPEG image (judging by its extension)")
    elif os.path.isfile(text):
        files = [Path(text)]
        if files[0].suffix.lower() not in _TIFF + _PIL:
            raise InputError(f"{spec}: not a TIFF, PNG or JPEG image (judging by its extension)")
    else:
        raise InputError(f"{spec}: no such folder or file")
    return sorted(files, key=natural_key)


@dataclass(frozen=True)
class ImageInfo:
    height: int
    width: int
    samples: int
    dtype: np.dtype

    def describe(self) -> str:
        kind = "RGB" if self.samples == 3 else "grayscale"
        return f"{self.width}x{self.height} {kind} {self.dtype.itemsize * 8}-bit"


def inspect_image(path: Path) -> ImageInfo:
    """Size and type of one image from its header (no pixels decoded)."""
    try:
        if path.suffix.lower() in _TIFF:
            return _inspect_tiff(path)
        return _inspect_pil(path)
    except InputError:
        raise
    except Exception as e:  # tifffile and Pillow raise many types for unreadable files
        raise InputError(f"{path}: not a readable image ({_short(e)})") from None


def _inspect_tiff(path: Path) -> ImageInfo:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        others = [tif.pages[i] for i in range(1, len(tif.pages))]
        if any(not getattr(p, "is_reduced", False) for p in others):
            raise InputError(
                f"{path}: holds {len(others) + 1} images; one section per file expected"
            )
        dtype = np.dtype(page.dtype) if page.dtype is not None else None
        samples = int(page.samplesperpixel)
        photometric = int(page.photometric)
        if page.imagedepth != 1:
            raise InputError(f"{path}: a volumetric TIFF page; one 2D section per file expected")
        if dtype not in _DTYPES:
            raise InputError(
                f"{path}: {page.bitspersample}-bit {page.sampleformat.name.lower()} pixels; "
                "8- or 16-bit unsigned integers expected"
            )
        # 1 = MINISBLACK; 2 = RGB, 6 = YCbCr (decoded to RGB)
        if not ((samples == 1 and photometric == 1) or (samples == 3 and photometric in (2, 6))):
            raise InputError(
                f"{path}: {page.photometric.name} with {samples} samples per pixel; grayscale "
                "(MinIsBlack) or RGB expected"
            )
        return ImageInfo(int(page.imagelength), int(page.imagewidth), samples, dtype)


@contextlib.contextmanager
def _open_pil(path: Path):
    """``Image.open`` without Pillow's pixel limit: large sections are expected, not bombs."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            yield im
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _inspect_pil(path: Path) -> ImageInfo:
    with _open_pil(path) as im:
        mode = im.mode
        if mode == "I" and im.format == "PNG":
            mode = "I;16"
        if mode not in _PIL_MODES:
            raise InputError(
                f"{path}: {im.format} image in mode {im.mode}; 8/16-bit grayscale or 8-bit RGB "
                "expected"
            )
        dtype, samples = _PIL_MODES[mode]
        return ImageInfo(int(im.height), int(im.width), samples, np.dtype(dtype))


class SliceSource:
    """A folder or pattern of section images per channel, as a RAS volume (see module doc)."""

    def __init__(
        self,
        inputs: list[str | Path],
        voxel_size_mm: tuple[float, float, float],
        orientation: str = "RAS",
    ):
        if isinstance(inputs, str | Path):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs:
            raise InputError("slice stack: no input folder or pattern given")
        self.path = Path(inputs[0])
        self.inputs = inputs
        self.spec = ";".join(str(i) for i in inputs)  # what open_source takes back
        self.orientation = str(orientation).upper()
        self._perm, self._flips = parse_orientation(orientation, where=str(self.path))
        try:
            sizes = tuple(float(s) for s in voxel_size_mm)
        except (TypeError, ValueError):
            sizes = ()
        if len(sizes) != 3 or not all(np.isfinite(s) and s > 0 for s in sizes):
            raise InputError(
                f"{self.path}: voxel size {voxel_size_mm!r} is not valid; 3 positive sizes in mm "
                "(column spacing, row spacing, slice spacing)"
            )
        self.voxel_size_mm = tuple(float(s) for s in sizes)

        self._files = [list_images(spec) for spec in inputs]
        for spec, files in zip(inputs[1:], self._files[1:], strict=True):
            if len(files) != len(self._files[0]):
                raise InputError(
                    f"{spec}: {len(files)} images, but {inputs[0]} has {len(self._files[0])}; "
                    "every channel needs one image per section"
                )
        self._info = self._check_images()
        self._samples = self._info.samples
        self.source_dtype = self._info.dtype
        self.dtype = self._info.dtype
        self.scaled = False
        stack = (self._info.width, self._info.height, len(self._files[0]))
        self._stack_shape = stack
        channels = len(self._files) * self._samples
        self.shape = (*(stack[a] for a in self._perm), channels)
        self.affine = np.diag([*(self.voxel_size_mm[a] for a in self._perm), 1.0])
        self._window = None  # (ring file, first section, sections, byte offset): see windowed

    def _check_images(self) -> ImageInfo:
        first = self._files[0][0]
        ref = inspect_image(first)
        if ref.samples != 1 and len(self._files) > 1:
            raise InputError(
                f"{first}: an RGB image is 3 channels by itself; with several inputs (one "
                "channel each) the images must be grayscale"
            )
        for files in self._files:
            for path in files:
                info = ref if path == first else inspect_image(path)
                if info != ref:
                    raise InputError(
                        f"{path}: {info.describe()}, but {first.name} is {ref.describe()}; "
                        "every section must have the same size and type"
                    )
        return ref

    @property
    def unit_nm(self) -> float:
        """Nanometres per affine unit (millimetres)."""
        return 1e6

    @property
    def voxel_size_nm(self) -> tuple[float, float, float]:
        """RAS voxel sizes in nanometres."""
        sizes = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)) * self.unit_nm
        return tuple(float(s) for s in sizes)

    @property
    def files(self) -> list[list[Path]]:
        """The image files, per channel input, in slice order."""
        return [list(f) for f in self._files]

    @property
    def decodes_whole(self) -> bool:
        """Is every section decoded whole to read any box of it (PNG, JPEG; a TIFF is read by
        strips or tiles)? Then slabs side by side share their sections' decoding (a ring)."""
        return all(p.suffix.lower() in _PIL for files in self._files for p in files)

    @property
    def section_bytes(self) -> int:
        """Bytes of one decoded image: ``[rows, cols, samples]``."""
        info = self._info
        return info.height * info.width * info.samples * info.dtype.itemsize

    def slice_axis(self) -> tuple[int, bool]:
        """The RAS axis along which the sections follow each other, and whether it is flipped."""
        axis = self._perm.index(2)
        return axis, self._flips[axis]

    def decode_section(self, index: int) -> np.ndarray:
        """Section ``index`` of every channel input, decoded whole, one after the other (what
        ``windowed`` reads back): ``[channel input, rows, cols, samples]``, C order."""
        out = np.empty(
            (len(self._files), self._info.height, self._info.width, self._samples), dtype=self.dtype
        )
        whole = ((0, self._info.height), (0, self._info.width))
        for c, files in enumerate(self._files):
            _read_region(files[index], *whole, out[c], self._info)
        return out

    def windowed(self, ring: Path, first: int, count: int, at: int) -> "SliceSource":
        """This stack reading sections ``first..first+count`` from ``ring`` (bytes from ``at``,
        as ``decode_section`` gave them) instead of decoding their files again."""
        other = copy.copy(self)
        other._window = (Path(ring), int(first), int(count), int(at))
        return other

    def _ring_reader(self, stack: contextlib.ExitStack, rows: tuple[int, int]):
        """None without a ring; else ``put(index, c, target, cols)``, which fills ``target``
        ``[rows, cols, samples]`` from the ring and says whether it held section ``index`` of
        channel input ``c``: the ring opened once per read, each section's whole rows read in
        one ``preadv`` into one buffer (a new buffer, or a memory map, faults every page in
        again), then cut."""
        if self._window is None:
            return None
        ring, first, count, at = self._window
        fd = os.open(ring, os.O_RDONLY)
        stack.callback(os.close, fd)
        info = self._info
        row = info.width * self._samples * info.dtype.itemsize
        buffer = np.empty((rows[1] - rows[0], info.width, self._samples), self.dtype)

        def put(index: int, c: int, target: np.ndarray, cols: tuple[int, int]) -> bool:
            if not first <= index < first + count:
                return False
            section = (index - first) * len(self._files) + c
            if (
                os.preadv(fd, [buffer], at + section * self.section_bytes + rows[0] * row)
                < buffer.nbytes
            ):
                raise InputError(f"{ring}: shorter than the sections it should hold")
            target[...] = buffer[:, cols[0] : cols[1]]
            return True

        return put

    def read(self, box: Box) -> np.ndarray:
        """Voxels of ``box`` (RAS voxel grid) as an array ``[x, y, z, channel]``."""
        box = tuple((int(a), int(b)) for a, b in box)
        for (a, b), n in zip(box, self.shape[:3], strict=True):
            if not 0 <= a <= b <= n:
                raise ValueError(f"box {box} is outside the volume {self.shape[:3]}")
        # Fortran order: x varies fastest, so the rows of a section written as x (any stack
        # whose sections lie in the x-y plane) are contiguous in memory.
        out = np.zeros((*(b - a for a, b in box), self.shape[3]), dtype=self.dtype, order="F")
        if out.size == 0:
            return out
        # The box in stack coordinates, and ``out`` seen in stack order (writable views).
        ranges = [(0, 0)] * 3
        for j, (a, b) in enumerate(box):
            n = self.shape[j]
            ranges[self._perm[j]] = (n - b, n - a) if self._flips[j] else (a, b)
        ras_axis = [self._perm.index(s) for s in range(3)]
        view = out.transpose(*ras_axis, 3)
        for s in range(3):
            if self._flips[ras_axis[s]]:
                view = np.flip(view, s)
        cols, rows, (s0, s1) = ranges
        k = self._samples
        with contextlib.ExitStack() as stack:
            from_ring = self._ring_reader(stack, rows)
            for i, index in enumerate(range(s0, s1)):
                for c, files in enumerate(self._files):
                    # [rows, cols, samples] of this section, written in place into ``out``
                    target = view[:, :, i, c * k : (c + 1) * k].transpose(1, 0, 2)
                    if from_ring is None or not from_ring(index, c, target, cols):
                        _read_region(files[index], rows, cols, target, self._info)
        return out


def _read_region(
    path: Path, rows: tuple[int, int], cols: tuple[int, int], out: np.ndarray, info: ImageInfo
) -> None:
    """Fill ``out`` ``[rows, cols, samples]`` with pixels ``rows x cols`` of image ``path``."""
    try:
        if path.suffix.lower() in _TIFF:
            _read_tiff(path, rows, cols, out, info)
        else:
            _read_pil(path, rows, cols, out, info)
    except InputError:
        raise
    except Exception as e:  # decoders raise many types for damaged files
        raise InputError(f"{path}: cannot read pixels ({_short(e)}); damaged file?") from None


def _read_tiff(
    path: Path, rows: tuple[int, int], cols: tuple[int, int], out: np.ndarray, info: ImageInfo
) -> None:
    import tifffile

    (r0, r1), (c0, c1) = rows, cols
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        height, width = int(page.imagelength), int(page.imagewidth)
        _check_same(path, height, width, info)
        if page.is_tiled:
            th, tw = int(page.tilelength), int(page.tilewidth)
        else:  # strips: full-width chunks of rowsperstrip rows
            th, tw = min(int(page.rowsperstrip) or height, height), width
        down = -(-height // th)
        across = -(-width // tw)
        chunked = (
            page.imagedepth == 1
            and (page.samplesperpixel == 1 or page.planarconfig == 1)
            and len(page.dataoffsets) == down * across
        )
        if not chunked:
            data = page.asarray()
            if data.ndim == 3 and page.planarconfig == 2:  # separate planes: [sample, y, x]
                data = np.moveaxis(data, 0, -1)
            out[...] = data.reshape(height, width, -1)[r0:r1, c0:c1]
            return
        fh = tif.filehandle
        for ty in range(r0 // th, -(-r1 // th)):
            for tx in range(c0 // tw, -(-c1 // tw)):
                index = ty * across + tx
                count = int(page.databytecounts[index])
                if count == 0:  # sparse file: an absent chunk is zeros (``out`` is zeroed)
                    continue
                fh.seek(int(page.dataoffsets[index]))
                raw = fh.read(count)
                chunk, (_, _, y, x, _), _ = page.decode(raw, index, jpegtables=page.jpegtables)
                if chunk is None:
                    continue
                chunk = chunk.reshape(chunk.shape[-3:])
                ya, yb = max(r0, y), min(r1, y + chunk.shape[0])
                xa, xb = max(c0, x), min(c1, x + chunk.shape[1])
                if ya < yb and xa < xb:
                    out[ya - r0 : yb - r0, xa - c0 : xb - c0] = chunk[
                        ya - y : yb - y, xa - x : xb - x
                    ]


def _read_pil(
    path: Path, rows: tuple[int, int], cols: tuple[int, int], out: np.ndarray, info: ImageInfo
) -> None:
    (r0, r1), (c0, c1) = rows, cols
    with _open_pil(path) as im:
        _check_same(path, im.height, im.width, info)
        im.load()  # the whole image: PNG and JPEG cannot be decoded by rows here
        crop = np.asarray(im.crop((c0, r0, c1, r1)))
    out[...] = crop.reshape(crop.shape[:2] + (-1,))


def _check_same(path: Path, height: int, width: int, info: ImageInfo) -> None:
    """Catch a file replaced between the header scan (constructor) and the read."""
    if (height, width) != (info.height, info.width):
        raise InputError(
            f"{path}: {width}x{height} pixels, but the stack is {info.width}x{info.height}; "
            "changed since the stack was opened?"
        )


def _short(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
