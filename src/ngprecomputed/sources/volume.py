"""Volumes read through nibabel (NIfTI-1/2, MGH/MGZ, ANALYZE, ...), slab by slab.

Uncompressed files are read through nibabel's array proxy (only the bytes of the box). For
gzip-compressed files (``.nii.gz``, ``.mgz``) a seek would decompress from the start of the file
for every slab; with an exported ``indexed_gzip`` index (built once per file by the ``gzindex``
stage) each slab decompresses only from the nearest index point.
"""

import gzip
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from ..chunks import Box
from ..errors import InputError

log = logging.getLogger(__name__)

# Header spatial units to nanometres.
_UNIT_NM = {"meter": 1e9, "mm": 1e6, "micron": 1e3, "unknown": 1e6}


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


class VolumeSource:
    """One nibabel-readable volume; 4D volumes are channels (the fourth axis)."""

    def __init__(
        self, path: Path, gzip_index: Path | None = None, decompressed: Path | None = None
    ):
        self.path = path
        self.gzip_index = gzip_index
        self.decompressed = decompressed  # the same file, decompressed (see decompress)
        try:
            self._img = nib.load(path)
        except Exception as e:  # nibabel raises many types for unreadable files
            raise InputError(f"{path}: not a readable volume ({_short(e)})") from None
        header_shape = tuple(int(n) for n in self._img.shape)
        raw_dtype = self._img.get_data_dtype()
        self._check(header_shape, raw_dtype)
        # RGB(A) voxels (NIfTI RGB24/RGBA32: one field per colour) are channels, like 4D volumes
        self._fields = list(raw_dtype.names or ())
        channels = len(self._fields) or int(np.prod(header_shape[3:], dtype=np.int64))
        self.shape = (*header_shape[:3], *([1] * (3 - len(header_shape[:3]))), channels)
        if self._fields:
            raw_dtype = raw_dtype[self._fields[0]]
        self.scaled = self._is_scaled()
        self.source_dtype = raw_dtype
        self.dtype = np.dtype(np.float64) if self.scaled else raw_dtype.newbyteorder("=")
        self.affine = np.asarray(self._img.affine, dtype=float)
        self._check_size()

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

    def _is_scaled(self) -> bool:
        """nibabel moves scl_slope/scl_inter from the header to the array proxy on load."""
        slope = getattr(self._img.dataobj, "slope", 1.0)
        inter = getattr(self._img.dataobj, "inter", 0.0)
        return (float(slope), float(inter)) != (1.0, 0.0)

    def _check_size(self) -> None:
        """Catch truncated uncompressed files from their size, before any job reads them."""
        if not hasattr(self._img.dataobj, "offset") or is_gzip(self.path):
            return
        proxy = self._img.dataobj
        data_path = Path(self._img.file_map["image"].filename)
        need = proxy.offset + int(np.prod(proxy.shape)) * proxy.dtype.itemsize
        have = data_path.stat().st_size
        if have < need:
            raise InputError(f"{data_path}: file is truncated ({have} bytes, header needs {need})")

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

    def _raw_file(self, img) -> str | None:
        """The image file, when it is uncompressed, unscaled, Fortran-ordered voxels at an
        offset (plain .nii, .img, .mgh): it can then be read in pieces directly."""
        proxy = img.dataobj
        name = img.file_map["image"].filename
        if not name or self._is_scaled() or getattr(proxy, "order", "F") != "F":
            return None
        if not hasattr(proxy, "offset") or not hasattr(proxy, "dtype"):
            return None
        with open(name, "rb") as f:
            magic = f.read(4)
        if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\x28\xb5\x2f\xfd":
            return None  # gzip, bzip2, zstd
        return name

    def _read_rows(self, img, name: str, slicer: tuple) -> np.ndarray:
        """A box whose x range is not whole rows (a cube of a sharded dataset), read plane by
        plane as whole rows of its y range, then cropped: one contiguous read per plane instead
        of one per row segment (about 2.4x faster), one plane of rows held at a time."""
        proxy = img.dataobj
        shape = proxy.shape
        (x0, x1), (y0, y1), (z0, z1) = ((s.start, s.stop) for s in slicer[:3])
        nx, ny, nz = shape[:3]
        volumes = int(np.prod(shape[3:], dtype=int))
        out = np.empty((x1 - x0, y1 - y0, z1 - z0, volumes), dtype=proxy.dtype, order="F")
        row = nx * proxy.dtype.itemsize
        with open(name, "rb") as f:
            for t in range(volumes):
                for z in range(z0, z1):
                    f.seek(proxy.offset + ((t * nz + z) * ny + y0) * row)
                    rows = np.fromfile(f, dtype=proxy.dtype, count=(y1 - y0) * nx)
                    if rows.size != (y1 - y0) * nx:
                        raise EOFError(f"{name}: file ends early")
                    out[:, :, z - z0, t] = rows.reshape(y1 - y0, nx)[:, x0:x1].T
        return out

    def read(self, box: Box) -> np.ndarray:
        """Voxels of ``box`` as an array ``[x, y, z, channel]`` in ``self.dtype`` (scaled)."""
        # a 2D (or 1D) file has fewer axes than the box: slice only those it has
        slicer = tuple(slice(lo, hi) for lo, hi in box)[: len(self._img.shape)]
        try:
            if self.gzip_index is not None:
                import indexed_gzip

                with indexed_gzip.IndexedGzipFile(
                    str(self.path), index_file=str(self.gzip_index)
                ) as f:
                    img = type(self._img).from_stream(f)
                    data = img.dataobj[slicer]
            else:
                img = self._img
                if self.decompressed is not None:
                    holder = nib.FileHolder(filename=str(self.decompressed))
                    img = type(self._img).from_file_map({"image": holder})
                if len(slicer) >= 3 and slicer[0] != slice(0, self.shape[0]):
                    name = self._raw_file(img)
                    data = self._read_rows(img, name, slicer) if name else img.dataobj[slicer]
                else:
                    data = img.dataobj[slicer]
        except (EOFError, OSError, ValueError, gzip.BadGzipFile) as e:
            raise InputError(f"{self.path}: cannot read voxels ({_short(e)}); truncated?") from None
        data = np.asarray(data)
        box_shape = tuple(hi - lo for lo, hi in box)
        if self._fields:
            return np.stack([data[name] for name in self._fields], axis=-1).reshape(
                box_shape + (self.shape[3],), order="F"
            )
        return data.reshape(box_shape + (self.shape[3],), order="F")


def _short(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def decompress(path: Path, out: Path) -> None:
    """The gzip-compressed source decompressed once (a .nii.gz becomes its .nii, byte for
    byte): cube-shaped slabs (sharded datasets) then read only their part of each section
    instead of decompressing whole sections of their z range each."""
    from isal import igzip  # Intel's ISA-L: 4x Python's zlib here

    tmp = out.with_name(f".{out.name}.part")
    try:
        with igzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 2**22)
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot decompress ({_short(e)}); truncated?") from None
    tmp.replace(out)


def build_gzip_index(path: Path, out: Path, spacing: int = 4 * 2**20) -> None:
    """Decompress ``path`` once and export the seek points that make slab reads cheap."""
    import indexed_gzip

    tmp = out.with_name(out.name + ".tmp")
    try:
        with indexed_gzip.IndexedGzipFile(str(path), spacing=spacing) as f:
            f.build_full_index()
            f.export_index(str(tmp))
    except (EOFError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot decompress ({_short(e)}); truncated?") from None
    tmp.replace(out)
