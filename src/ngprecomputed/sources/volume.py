"""Volumes read through nibabel, slab by slab: every spatial image format nibabel loads.

Values are nibabel's: a box is ``img.dataobj[box]`` (scaled as nibabel scales it: NIfTI
``scl_slope``, MINC image ranges, PAR/REC display values, AFNI brick factors, ECAT calibration).
Whether a file is *scaled* is asked of nibabel itself (the type its proxy returns for one voxel
against the stored type), never of one format's proxy attributes.

Two faster paths give provably the same values: a plain, unscaled, uncompressed array file is read
directly by offset (cube boxes, whole rows), and a gzip-compressed array file (``.nii.gz``,
``.mgz``, ``.BRIK.gz``, ``.img.gz``) is read through an exported ``indexed_gzip`` index (built
once per file by the ``gzip_index`` rule), decompressed once, or decompressed band by band into a
ring that a job's workers read (``Window``); nibabel still decodes the bytes.
"""

import gzip
import io
import logging
import os
import shutil
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from ..chunks import Box
from ..errors import InputError, system_fault
from ..store import atomic_file

log = logging.getLogger(__name__)

# Header spatial units to nanometres.
_UNIT_NM = {"meter": 1e9, "mm": 1e6, "micron": 1e3, "unknown": 1e6}

# nibabel's image classes, by the name users know them by.
FORMATS = {
    "Nifti1Image": "NIfTI-1",
    "Nifti1Pair": "NIfTI-1 (.hdr/.img)",
    "Nifti2Image": "NIfTI-2",
    "Nifti2Pair": "NIfTI-2 (.hdr/.img)",
    "Cifti2Image": "CIFTI-2",
    "AnalyzeImage": "ANALYZE 7.5",
    "Spm99AnalyzeImage": "SPM99 ANALYZE",
    "Spm2AnalyzeImage": "SPM2 ANALYZE",
    "MGHImage": "MGH/MGZ",
    "Minc1Image": "MINC1",
    "Minc2Image": "MINC2",
    "PARRECImage": "PAR/REC",
    "AFNIImage": "AFNI BRIK/HEAD",
    "EcatImage": "ECAT 7",
    "GiftiImage": "GIfTI",
}

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\x28\xb5\x2f\xfd": "zstd"}


def compression(path: Path) -> str | None:
    """``gzip``, ``bzip2`` or ``zstd`` from the file's first bytes, else None."""
    with open(path, "rb") as f:
        head = f.read(4)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def _classes():
    return [*nib.all_image_classes, nib.ecat.EcatImage]  # nib.load does not try ECAT


def guess_format(path: Path) -> str | None:
    """The format nibabel takes the file for, from its name and first bytes, else from its
    name alone (a damaged file)."""
    name = path.name.lower()
    for suffix in (".gz", ".bz2", ".zst"):
        name = name.removesuffix(suffix)
    by_name = None
    for klass in _classes():
        try:
            if klass.path_maybe_image(str(path))[0]:
                return FORMATS.get(klass.__name__, klass.__name__)
        except Exception:  # a class's sniffing fails on files not of its kind
            pass
        if by_name is None and name.endswith(tuple(klass.valid_exts)):
            by_name = FORMATS.get(klass.__name__, klass.__name__)
    return by_name


_HEADERS = threading.Lock()


@contextmanager
def _header_reads():
    """nibabel opens a .gz through indexed_gzip when it is installed, whose first read
    decompresses 1 MiB: ~10 ms for a 348-byte header, paid twice by each ``nib.load`` (sniffing,
    then the header) and again by each reopening. Headers are read through Python's gzip
    instead (~1 ms): the same bytes, so the same image. A .gz's voxels are read through an index,
    a decompressed copy or ISA-L (``VolumeSource._image``); a read racing the switch is only
    slower."""
    from nibabel import _compression

    with _HEADERS:
        had = getattr(_compression, "HAVE_INDEXED_GZIP", False)
        _compression.HAVE_INDEXED_GZIP = False
        try:
            yield
        finally:
            _compression.HAVE_INDEXED_GZIP = had


def _load(path: Path):
    try:
        with _header_reads():
            return nib.load(path)
    except nib.filebasedimages.ImageFileError:
        if Path(path).suffix.lower() in nib.ecat.EcatImage.valid_exts:
            return nib.ecat.load(path)  # nib.load does not try ECAT
        raise


def load_image(path: Path):
    """``nib.load``, ECAT included; one line naming the file and its format if it fails (the
    format is guessed only then: sniffing every class costs half a load)."""
    try:
        img = _load(path)
    except Exception as e:  # nibabel raises many types for unreadable files
        fmt = guess_format(path)
        what = f"nibabel cannot read it as {fmt}" if fmt else "not a format nibabel reads"
        raise InputError(f"{path}: {what} ({_short(e)})") from None
    if not isinstance(img, nib.spatialimages.SpatialImage):
        name = FORMATS.get(type(img).__name__, type(img).__name__)
        raise InputError(f"{path}: a {name} file, not a volume")
    return img


# Formats that are one file whatever their header says (NIfTI-1/2 single files, MGH, MINC).
SINGLE_FILE = (".nii", ".nii.gz", ".mgh", ".mgz", ".mnc", ".mnc.gz")


def image_files(path: Path) -> list[Path]:
    """Every file nibabel reads for this image (a .HEAD's .BRIK(.gz), a .PAR's .REC, a
    .hdr's .img), the given one first: what a workflow should track."""
    out = [Path(path)]
    if str(path).lower().endswith(SINGLE_FILE):  # no sniffing (it decompresses a .gz header)
        return out
    for klass in _classes():
        try:
            if not klass.path_maybe_image(str(path))[0]:
                continue
            names = {h.filename for h in klass.filespec_to_file_map(str(path)).values()}
        except Exception:
            continue
        out += sorted(Path(n) for n in names if n and Path(n) != Path(path) and Path(n).exists())
        break
    return out


def _stored_dtype(img) -> np.dtype:
    try:
        return img.get_data_dtype()
    except TypeError:  # ECAT: a type per frame
        return img.get_data_dtype(0)


def _axes(img) -> tuple[list[int], list[int]]:
    """The file's spatial axes (the affine's columns, in order) and the others (channels).

    MINC files may store time (or a vector dimension) first: nibabel keeps the file's order
    and its affine maps the spatial dimensions only."""
    ndim = len(img.shape)
    names = getattr(getattr(img.dataobj, "minc_file", None), "_dim_names", None)
    if names is not None and len(names) == ndim:
        spatial = [i for i, name in enumerate(names) if str(name).endswith("space")]
    else:
        spatial = list(range(min(ndim, 3)))
    return spatial, [i for i in range(ndim) if i not in spatial]


class VolumeSource:
    """One nibabel-readable volume; axes beyond the three spatial ones are channels."""

    def __init__(
        self,
        path: Path,
        gzip_index: Path | None = None,
        decompressed: Path | None = None,
        window: "Window | None" = None,
    ):
        self.path = path
        self.gzip_index = gzip_index
        self.decompressed = decompressed  # the image file, decompressed (see decompress)
        self.window = window  # a band of the decompressed image file (see Window)
        self.read_direct = False  # the last read bypassed nibabel's proxy (see read)
        self._img = load_image(path)
        self.format = FORMATS.get(type(self._img).__name__, type(self._img).__name__)
        self.data_path = Path(self._img.file_map["image"].filename or path)
        if not self.data_path.is_file():
            raise InputError(f"{path}: its {self.format} image file {self.data_path} is missing")
        self.compression = compression(self.data_path)
        file_shape = tuple(int(n) for n in self._img.shape)
        raw_dtype = np.dtype(_stored_dtype(self._img))
        self._check(file_shape, raw_dtype)
        self._spatial, self._other = _axes(self._img)
        self._other_shape = tuple(file_shape[i] for i in self._other)
        # RGB(A) voxels (NIfTI RGB24/RGBA32: one field per colour) are channels, like 4D volumes
        self._fields = list(raw_dtype.names or ())
        channels = len(self._fields) or int(np.prod(self._other_shape, dtype=np.int64))
        spatial = [file_shape[i] for i in self._spatial]
        self.shape = (*spatial, *([1] * (3 - len(spatial))), channels)
        if self._fields:
            raw_dtype = raw_dtype[self._fields[0]]
        self.source_dtype = raw_dtype
        out = self._output_dtype()
        # nibabel returns another type than the stored one exactly when it scales the values
        self.scaled = out.newbyteorder("=") != raw_dtype.newbyteorder("=")
        self.dtype = np.dtype(np.float64) if self.scaled else raw_dtype.newbyteorder("=")
        self.affine = np.asarray(self._img.affine, dtype=float)
        self._check_size()

    @property
    def seekable_gzip(self) -> bool:
        """A gzip-compressed array file that an index (or one decompression) makes fast."""
        return self.compression == "gzip" and isinstance(self._img.dataobj, ArrayProxy)

    def _check(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if len(shape) > 4 and any(n != 1 for n in shape[4:]):
            raise InputError(
                f"{self.path}: {len(shape)}D volumes are not supported "
                f"(shape {shape}); at most 4D, the fourth axis becoming channels"
            )
        if any(n == 0 for n in shape):
            raise InputError(f"{self.path}: an axis has zero length (shape {shape})")
        if dtype.names:
            kinds = {dtype[name] for name in dtype.names}
            if len(kinds) != 1 or next(iter(kinds)).kind not in "ui" or len(shape) > 3:
                raise InputError(
                    f"{self.path}: structured voxels {dtype} are not supported "
                    "(RGB/RGBA of one integer type, 3D, are)"
                )
            return
        if dtype.kind == "c":
            raise InputError(f"{self.path}: complex voxels ({dtype}) are not supported")
        if dtype.kind not in "uifb":
            raise InputError(f"{self.path}: unsupported voxel type {dtype}")

    def _output_dtype(self) -> np.dtype:
        """The type nibabel returns: one voxel read, as the proxy of every format answers;
        without the read for nibabel's plain ArrayProxy with no scaling (its read then returns
        the stored array as it is: ``apply_read_scaling`` with slope 1, intercept 0), which
        saves decompressing the start of a .gz file once more for each open."""
        proxy = self._img.dataobj
        if type(proxy) is ArrayProxy and _no_scaling(proxy):
            dtype = proxy.dtype
            return dtype[self._fields[0]] if self._fields else dtype
        first = tuple(slice(0, 1) for _ in self._img.shape)
        try:
            value = np.asanyarray(self._img.dataobj[first])
        except Exception as e:  # nibabel raises many types for unreadable data
            raise InputError(f"{self.path}: cannot read voxels ({_short(e)}); truncated?") from None
        return value.dtype[self._fields[0]] if self._fields else value.dtype

    def _check_size(self) -> None:
        """Catch truncated uncompressed array files from their size, before any job reads them.
        A compressed file's size says nothing of its content: its truncation is found when it is
        decompressed (the gzip index stage, or the read)."""
        proxy = self._img.dataobj
        if not isinstance(proxy, ArrayProxy) or self.compression:
            return
        need = proxy.offset + int(np.prod(proxy.shape)) * proxy.dtype.itemsize
        have = self.data_path.stat().st_size
        if have < need:
            raise InputError(
                f"{self.data_path}: file is truncated ({have} bytes, header needs {need})"
            )

    @property
    def unit_nm(self) -> float:
        """Nanometres per header spatial unit (mm unless the header says otherwise)."""
        get_units = getattr(self._img.header, "get_xyzt_units", None)
        return _UNIT_NM.get(get_units()[0], 1e6) if get_units else 1e6

    @property
    def voxel_size_nm(self) -> tuple[float, float, float]:
        """Voxel sizes from the affine's column norms, in nanometres."""
        sizes = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)) * self.unit_nm
        return tuple(float(s) for s in sizes)

    @contextmanager
    def _image(self):
        """The image to read voxels from: through the gzip index, the decompressed copy, or
        the file itself (nibabel decodes the bytes in every case)."""
        if self.gzip_index is not None:
            import indexed_gzip

            with indexed_gzip.IndexedGzipFile(
                str(self.data_path), index_file=str(self.gzip_index)
            ) as f:
                yield self._with_image_file(nib.FileHolder(fileobj=f))
        elif self.decompressed is not None:
            yield self._with_image_file(nib.FileHolder(filename=str(self.decompressed)))
        elif self.window is not None:
            yield self._with_image_file(nib.FileHolder(fileobj=self.window))
        elif self.compression == "gzip" and type(self._img.dataobj) in _PLAIN_PROXIES:
            with GzipStream(self.data_path) as f:
                yield self._with_image_file(nib.FileHolder(fileobj=f))
        else:
            yield self._img

    def _with_image_file(self, holder):
        """The image with its voxels in ``holder``. A stream (an index's, a band's, ISA-L's)
        is never memory-mapped: numpy's memmap tries it by seeking to its end first, which
        decompresses a .gz to its end before nibabel reads it from the start again."""
        files = {k: nib.FileHolder(filename=v.filename) for k, v in self._img.file_map.items()}
        files["image"] = holder
        with _header_reads():
            return type(self._img).from_file_map(files, mmap=holder.fileobj is None)

    def _plain(self, img) -> bool:
        """Plain voxels of the stored type in Fortran order at an offset (unscaled .nii, .img,
        .mgh, .BRIK): read in pieces directly, they are exactly what nibabel gives."""
        proxy = img.dataobj
        if self.scaled or type(proxy) not in _PLAIN_PROXIES:
            return False
        return proxy.order == "F" and getattr(proxy, "scaling", None) is None

    def _raw_file(self, img) -> str | None:
        """The image file, when it is plain (``_plain``) and uncompressed."""
        name = img.file_map["image"].filename
        if not name or not self._plain(img):
            return None
        # the decompressed copy is plain by construction; an index's stream has no file name
        return None if img is self._img and self.compression else name

    def _read_rows(self, img, f, slicer: tuple) -> np.ndarray:
        """A box of a plain image file ``f`` (open, binary), plane by plane: one contiguous read
        per plane of its y range's rows, straight into the box when its x range is whole rows,
        else cropped (about 2.4x faster than a read per row segment for cubes). nibabel's own
        read of such a box copies it twice, through a new shared memory map (0.57 s more for
        555 MB here)."""
        proxy = img.dataobj
        shape = proxy.shape
        (x0, x1), (y0, y1), (z0, z1) = ((s.start, s.stop) for s in slicer[:3])
        nx, ny, nz = shape[:3]
        volumes = int(np.prod(shape[3:], dtype=int))
        out = np.empty((x1 - x0, y1 - y0, z1 - z0, volumes), dtype=proxy.dtype, order="F")
        row = nx * proxy.dtype.itemsize
        whole = (x0, x1) == (0, nx)
        rows = None if whole else np.empty((y1 - y0, nx), dtype=proxy.dtype)
        for t in range(volumes):
            for z in range(z0, z1):
                f.seek(proxy.offset + ((t * nz + z) * ny + y0) * row)
                into = out[:, :, z - z0, t].T if whole else rows  # C order: the file's
                if f.readinto(into) != into.nbytes:
                    raise EOFError(f"{getattr(f, 'name', 'the image file')}: file ends early")
                if not whole:
                    out[:, :, z - z0, t] = rows[:, x0:x1].T
        return out

    def _slicer(self, box: Box) -> tuple:
        """``box`` (spatial axes, in the affine's order) as an index in the file's axis order."""
        index = [slice(None)] * len(self._img.shape)
        for axis, (lo, hi) in zip(self._spatial, box, strict=False):
            index[axis] = slice(lo, hi)
        return tuple(index)

    def _as_channels(self, data: np.ndarray, box_shape: tuple[int, ...]) -> np.ndarray:
        """File-order voxels as ``[x, y, z, channel]``."""
        if self._fields:
            data = np.stack([data[name] for name in self._fields], axis=-1)
            return data.reshape(box_shape + (self.shape[3],), order="F")
        data = np.transpose(data, self._spatial + self._other)
        return data.reshape(box_shape + (self.shape[3],), order="F")

    def read(self, box: Box) -> np.ndarray:
        """Voxels of ``box`` as an array ``[x, y, z, channel]`` in ``self.dtype`` (scaled)."""
        slicer = self._slicer(box)
        box_shape = tuple(hi - lo for lo, hi in box)
        ordered = self._spatial == [0, 1, 2]
        try:
            with self._image() as img:
                name = self._raw_file(img) if ordered else None
                # read directly, not by nibabel: a job checks it (values.py)
                self.read_direct = bool(name) or (
                    ordered and self.window is not None and self._plain(img)
                )
                if self.read_direct:
                    with open(name, "rb") if name else nullcontext(self.window) as f:
                        data = self._read_rows(img, f, slicer)
                    data = data.reshape(box_shape + self._other_shape)
                else:
                    data = np.asarray(img.dataobj[slicer])
        except (EOFError, OSError, ValueError, gzip.BadGzipFile) as e:
            raise InputError(f"{self.path}: cannot read voxels ({_short(e)}); truncated?") from None
        return self._as_channels(data, box_shape)

    def planes(self) -> tuple[int, int] | None:
        """``(offset, bytes per z plane)`` of a 3D plain array file in Fortran order (its
        decompressed bytes for a .gz), whose z planes come one after another; else None."""
        proxy = self._img.dataobj
        if type(proxy) not in _PLAIN_PROXIES or proxy.order != "F" or len(proxy.shape) != 3:
            return None
        if self._spatial != [0, 1, 2] or self._fields:
            return None
        nx, ny, _ = proxy.shape
        return int(proxy.offset), int(nx * ny * proxy.dtype.itemsize)

    def nibabel_values(self, box: Box) -> np.ndarray:
        """nibabel's own values in ``box``, ``[x, y, z, channel]``: one proxy read, none of
        this reader's faster paths; a job checks what it writes against these."""
        with self._image() as img:
            data = np.asanyarray(img.dataobj[self._slicer(box)])
        return self._as_channels(data, tuple(hi - lo for lo, hi in box))


_PLAIN_PROXIES = (ArrayProxy, nib.brikhead.AFNIArrayProxy)


class GzipStream(io.RawIOBase):
    """A gzip file read through ISA-L (4x zlib here) by nibabel: whole reads land in one
    buffer, filled 4 MiB at a time (ISA-L's own ``read(n)`` of a large ``n`` is 4x slower);
    no ``fileno``, so nibabel does not try to memory-map it."""

    PIECE = 2**22

    def __init__(self, path: Path):
        from isal import igzip

        super().__init__()
        self._f = igzip.open(path, "rb")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from isal.isal_zlib import error as IsalError

        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            try:
                n = self._f.readinto(view[done : done + self.PIECE])
            except IsalError as e:  # a damaged deflate stream: as Python's gzip says it
                raise gzip.BadGzipFile(str(e)) from None
            if not n:
                break
            done += n
        return done

    def read(self, n: int = -1) -> bytes | bytearray:
        """``n`` bytes (fewer at the end), in a bytearray: no copy of a whole volume."""
        if n is None or n < 0:
            return self._f.read()
        buffer = bytearray(n)
        got = self.readinto(buffer)
        return buffer if got == n else buffer[:got]

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def copy_to(self, fd: int, at: int, n: int) -> int:
        """The next ``n`` bytes written to the file ``fd`` at offset ``at``, a piece at a time
        through one buffer; how many there were (fewer: the file ended)."""
        piece = memoryview(bytearray(min(n, self.PIECE)))
        done = 0
        while done < n and (got := self.readinto(piece[: min(len(piece), n - done)])):
            os.pwrite(fd, piece[:got], at + done)
            done += got
        return done

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()


class Window(io.RawIOBase):
    """A decompressed image file as nibabel reads it, from two parts of it: its first
    ``len(head)`` bytes (the header) and bytes ``start..start + length`` (a band of z planes),
    which lie at offset ``at`` of the file ``path`` (a job's ring of bands, see engine.py).
    Reading anything else is a bug."""

    def __init__(self, head: bytes, path: Path, start: int, length: int, at: int):
        super().__init__()
        self.name = str(path)
        self._head, self._start, self._end, self._at = head, start, start + length, at
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = (0, self._pos, self._end)[whence] + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        pos, n = self._pos, len(view)
        if pos + n <= len(self._head):
            view[:] = self._head[pos : pos + n]
        elif self._start <= pos and pos + n <= self._end:
            if os.preadv(self._f.fileno(), [view], self._at + pos - self._start) != n:
                raise EOFError(f"{self.name}: the band ends early")
        else:
            raise RuntimeError(  # not an input error: the band was cut wrong
                f"bytes {pos}..{pos + n} are outside the band {self._start}..{self._end}"
            )
        self._pos += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _no_scaling(proxy: ArrayProxy) -> bool:
    """nibabel's own test (``apply_read_scaling``): slope 1 and intercept 0 leave the array
    as read."""
    try:
        return (float(proxy.slope), float(proxy.inter)) == (1.0, 0.0)
    except (TypeError, ValueError):  # an array of factors: let the read answer
        return False


def _short(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def decompress(path: Path, out: Path) -> None:
    """The volume's gzip-compressed image file decompressed once (a .nii.gz becomes its .nii,
    byte for byte): cube-shaped slabs (sharded datasets) then read only their part of each
    section instead of decompressing whole sections of their z range each."""
    from isal import igzip  # Intel's ISA-L: 4x Python's zlib here

    data = image_file(path)
    with decompressing(data), igzip.open(data, "rb") as src, atomic_file(out) as dst:
        shutil.copyfileobj(src, dst, 2**22)


@contextmanager
def decompressing(data: Path):
    """A damaged compressed file as one line; a full or read-only disk stays the disk's fault."""
    from isal.isal_zlib import error as IsalError

    try:
        yield
    except (EOFError, OSError, ValueError, IsalError) as e:
        if isinstance(e, OSError) and system_fault(e):
            raise
        raise InputError(f"{data}: cannot decompress ({_short(e)}); truncated?") from None


def image_file(path: Path) -> Path:
    """The file that holds the voxels (a .HEAD's .BRIK.gz; a .nii.gz itself)."""
    return Path(load_image(Path(path)).file_map["image"].filename or path)


def build_gzip_index(path: Path, out: Path, spacing: int = 4 * 2**20) -> None:
    """Decompress the volume's image file once and export the seek points that make slab reads
    cheap."""
    import indexed_gzip

    data = image_file(path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with decompressing(data), indexed_gzip.IndexedGzipFile(str(data), spacing=spacing) as f:
            f.build_full_index()
            f.export_index(str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
