"""``jpeg``: uint8, 1 or 3 channels, lossy (never for labels, never the source of a downscale).

Readers (Neuroglancer, TensorStore) only require ``width * height == x * y * z`` and the right
component count, and read the pixels in raster order as the Fortran-flattened ``[x, y, z]``
array, channels interleaved per pixel. We write width ``x``, height ``y * z`` (JPEG caps both at
65535). Three channels are data, not a photograph: no chroma subsampling (4:4:4). CloudVolume
12 writes the same layout but its reader takes 3-channel pixels as planar (pinned in the tests).

Library: simplejpeg (libjpeg-turbo), about 15% faster than pillow at the same settings: on a
64^3 MNI T1 chunk 0.48 ms to encode and 0.57 ms to decode (grey; 3 channels 1.26 / 1.61 ms)
against pillow's 0.56 / 0.69 ms (1.42 / 1.72 ms), same size and PSNR. A C-ordered chunk adds
~0.6 ms of transposing. Pillow is the fallback when simplejpeg is not installed.
"""

import io

import numpy as np

try:
    import simplejpeg
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    simplejpeg = None

MAX_SIDE = 65535


def to_image(array: np.ndarray) -> np.ndarray:
    """``[x, y, z, c]`` -> C-ordered ``[y*z, x, c]`` pixels (shared with ``png``)."""
    if array.ndim != 4:
        raise ValueError(f"expected an [x, y, z, channel] array, got shape {array.shape}")
    x, y, z, c = array.shape
    return np.ascontiguousarray(array.transpose(2, 1, 0, 3)).reshape(y * z, x, c)


def from_image(pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Raster-order pixels of any width -> ``[x, y, z, c]`` (shared with ``png``)."""
    x, y, z, c = shape
    if pixels.size != x * y * z * c:
        raise ValueError(
            f"image has {pixels.size} samples, chunk {tuple(shape)} needs {x * y * z * c}"
        )
    return pixels.reshape(z, y, x, c).transpose(2, 1, 0, 3)


def encode(array: np.ndarray, quality: int) -> bytes:
    """``quality`` has no default here: it is a setting (``Options``), one default for all."""
    if array.dtype != np.uint8:
        raise ValueError(f"jpeg encodes uint8 only, got {array.dtype}")
    pixels = to_image(array)
    height, width, channels = pixels.shape
    if channels not in (1, 3):
        raise ValueError(f"jpeg encodes 1 or 3 channels, got {channels}")
    if max(height, width) > MAX_SIDE:
        raise ValueError(f"chunk {array.shape[:3]} gives a {width}x{height} image; JPEG max 65535")
    if simplejpeg is not None:
        if channels == 1:
            return simplejpeg.encode_jpeg(
                pixels, quality=quality, colorspace="GRAY", colorsubsampling="Gray"
            )
        return simplejpeg.encode_jpeg(
            pixels, quality=quality, colorspace="RGB", colorsubsampling="444"
        )
    from PIL import Image

    out = io.BytesIO()
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    image.save(out, format="JPEG", quality=quality, subsampling=0)
    return out.getvalue()


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype) != np.uint8:
        raise ValueError(f"jpeg decodes to uint8 only, not {np.dtype(dtype)}")
    if simplejpeg is not None:
        grey = simplejpeg.decode_jpeg_header(data)[2] == "Gray"
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if grey else "RGB")
    else:
        from PIL import Image

        image = Image.open(io.BytesIO(data))
        pixels = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels != shape[3]:
        raise ValueError(f"jpeg has {channels} channel(s), chunk {tuple(shape)} expects {shape[3]}")
    return from_image(pixels, shape)
