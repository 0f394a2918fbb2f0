"""Reading, checking and writing images: float32 RGB in [0, 1], errors that name the file.

One convention for the whole library:

* :func:`read_image` returns ``float32 (H, W, 3)`` in ``[0, 1]``: 8-bit values ``v`` become
  ``v / 255``, 16-bit values ``v / 65535`` (exact to float32 rounding, the same numbers the
  ``tf.data`` pipeline of :mod:`tfdeblur.data` computes). Grayscale is replicated to three
  channels; an alpha channel (or a palette/tRNS transparency) is dropped when every pixel is
  fully opaque and the image is refused otherwise, since blending onto a made-up background
  would silently change the data. CMYK, 32-bit integer and floating-point images are refused.
* :func:`write_image` is the one place where values are clamped to ``[0, 1]`` and rounded,
  once, to 8 or 16 bits; it writes through a temporary file in the target directory and
  ``os.replace``, so a reader never sees a half-written file and a failed write leaves any
  existing file untouched.
* :func:`verify_image` checks, cheaply, what training data must satisfy before a ``tf.data``
  pipeline is built: a PNG or JPEG that is complete (a PNG ends with its ``IEND`` chunk; a
  JPEG with its EOI marker, else it is decoded in full), and that has no transparency.

Pillow decodes 8-bit images. Pillow truncates 16-bit RGB PNGs to 8 bits, so 16-bit PNGs are
decoded (and encoded) with TensorFlow's libpng instead, imported only when needed.
"""

from __future__ import annotations

import io
import os
import pathlib
import struct
from typing import NamedTuple

import numpy as np

from tfdeblur.fileio import write_bytes_atomic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

#: Formats a training/evaluation dataset may contain: the ``tf.data`` pipeline decodes these.
DATASET_FORMATS = ("PNG", "JPEG")

#: The one list of image file extensions (lower case) for scanning folders: what
#: :func:`read_image` reads (Pillow: PNG, JPEG, BMP, TIFF, WebP; 16-bit PNG via libpng).
#: ``tfdeblur deblur`` inputs and frame folders use it.
READ_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: The subset a dataset folder is scanned for: the extensions of :data:`DATASET_FORMATS`.
DATASET_EXTENSIONS = (".png", ".jpg", ".jpeg")

#: Extensions :func:`write_image` understands, and the format each writes.
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}

# PNG colour type -> samples per pixel (before palette expansion / tRNS).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class ImageInfo(NamedTuple):
    """What an image file's header says.

    Attributes:
        height: rows.
        width: columns.
        channels: samples per pixel as stored, after palette expansion: 1 (gray), 2 (gray +
            alpha), 3 (RGB) or 4 (RGBA). A palette or a tRNS chunk with transparency counts
            its alpha (e.g. a palette PNG with transparency reports 4).
        bit_depth: bits per sample after decoding, 8 or 16 (1/2/4-bit PNGs decode to 8).
    """

    height: int
    width: int
    channels: int
    bit_depth: int


def _as_file(path) -> pathlib.Path:
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        what = "is a directory, not an image file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"Image file {str(path)!r} {what}.")
    return path


def _sniff(head: bytes) -> str | None:
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if head.startswith(JPEG_SIGNATURE):
        return "JPEG"
    return None


# ---------------------------------------------------------------------------------------
# PNG structure (read without decompressing)
# ---------------------------------------------------------------------------------------


class _PngHeader(NamedTuple):
    width: int
    height: int
    bit_depth: int
    color_type: int
    has_trns: bool


def _walk_png(f, size: int, *, to_end: bool) -> tuple[_PngHeader | None, str | None]:
    """Walk a PNG's chunk headers, seeking over the chunk data (nothing is decompressed).

    Returns ``(header, problem)``: ``problem`` is None for a well-formed file, else a short
    description (truncation, missing IHDR/IDAT/IEND). With ``to_end=False`` it stops at the
    first IDAT (header only: IHDR and tRNS both precede the image data).
    """
    f.seek(0)
    if f.read(8) != PNG_SIGNATURE:
        return None, "is not a PNG file (bad signature)"
    header = None
    seen_idat = False
    end = 8  # byte offset where the current chunk ends
    while True:
        raw = f.read(8)
        if len(raw) < 8:
            if header is None:
                return None, f"is truncated: it ends at byte {size} before its IHDR header"
            return header, (
                f"is truncated: it ends at byte {size} without an IEND chunk "
                "(incomplete download or copy?)"
            )
        length, ctype = struct.unpack(">I4s", raw)
        if ctype == b"IDAT" and header is not None and not to_end:
            return header, None  # header only: the image data need not be there
        end += 12 + length
        if end > size:
            return header, (
                f"is truncated: its {ctype.decode('latin-1')!r} chunk needs {end} bytes "
                f"but the file has {size} (incomplete download or copy?)"
            )
        if header is None:
            if ctype != b"IHDR" or length != 13:
                return None, "is not a valid PNG: its first chunk is not IHDR"
            width, height, bit_depth, color_type = struct.unpack(">IIBB", f.read(10))
            if color_type not in _PNG_CHANNELS or bit_depth not in (1, 2, 4, 8, 16):
                return None, f"is not a valid PNG (colour type {color_type}, bit depth {bit_depth})"
            header = _PngHeader(width, height, bit_depth, color_type, False)
        elif ctype == b"tRNS":
            header = header._replace(has_trns=True)
        elif ctype == b"IDAT":
            seen_idat = True
        elif ctype == b"IEND":
            if not seen_idat:
                return header, "is not a valid PNG: it has no image data (IDAT)"
            return header, None
        f.seek(end)


def _png_info(header: _PngHeader) -> ImageInfo:
    channels = _PNG_CHANNELS[header.color_type]
    if header.has_trns and header.color_type in (0, 2, 3):
        channels += 1
    return ImageInfo(header.height, header.width, channels, 16 if header.bit_depth == 16 else 8)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------

# Pillow mode -> (channels as stored, has alpha). Modes not listed are refused.
_PIL_MODES = {
    "1": (1, False),
    "L": (1, False),
    "LA": (2, True),
    "La": (2, True),
    "P": (3, False),
    "PA": (4, True),
    "RGB": (3, False),
    "RGBA": (4, True),
    "RGBa": (4, True),
    "RGBX": (3, False),
    "YCbCr": (3, False),
    "I;16": (1, False),
    "I;16L": (1, False),
    "I;16B": (1, False),
    "I;16N": (1, False),
}


def _pil_open(data_or_file, path: pathlib.Path):
    from PIL import Image

    try:
        return Image.open(data_or_file)
    except Exception as err:  # UnidentifiedImageError, OSError, SyntaxError, ...
        raise ValueError(f"Cannot read image {str(path)!r}: {err}") from err


def _pil_info(im, path: pathlib.Path) -> ImageInfo:
    mode = im.mode
    if mode not in _PIL_MODES:
        raise ValueError(
            f"Image {str(path)!r} has unsupported mode {mode!r}; tfdeblur reads grayscale, "
            "RGB and RGBA images with 8 or 16 bits per sample. Convert it to RGB."
        )
    channels, _ = _PIL_MODES[mode]
    if mode in ("P", "L", "RGB") and "transparency" in im.info:
        channels += 1
    bit_depth = 16 if mode.startswith("I;16") else 8
    width, height = im.size
    return ImageInfo(height, width, channels, bit_depth)


def read_image_info(path) -> ImageInfo:
    """Height, width, channels and bit depth of an image, from its header only.

    For PNG the IHDR chunk (and any tRNS before the image data) is parsed directly, since
    Pillow reports 16-bit RGB PNGs as 8-bit; other formats go through Pillow's lazy open.
    The pixel data is not read, so a truncated file still has an info.

    Args:
        path: image file.

    Returns:
        An :class:`ImageInfo` ``(height, width, channels, bit_depth)``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: not an image, or an unsupported mode (CMYK, 32-bit, float); the message
            names the file.
    """
    path = _as_file(path)
    with open(path, "rb") as f:
        if _sniff(f.read(8)) == "PNG":
            header, problem = _walk_png(f, os.fstat(f.fileno()).st_size, to_end=False)
            if header is None:
                raise ValueError(f"Image {str(path)!r} {problem}.")
            return _png_info(header)
        f.seek(0)
        with _pil_open(f, path) as im:
            return _pil_info(im, path)


def _to_rgb_float(array: np.ndarray, max_value: int, has_alpha: bool, path) -> np.ndarray:
    """(H, W[, C]) integer samples -> float32 (H, W, 3) in [0, 1] (see the module docstring)."""
    if array.ndim == 2:
        array = array[..., None]
    if has_alpha:
        alpha = array[..., -1]
        transparent = int(np.count_nonzero(alpha < max_value))
        if transparent:
            raise ValueError(
                f"Image {str(path)!r} has transparency ({transparent} of {alpha.size} pixels "
                "not fully opaque). tfdeblur refuses images with transparency rather than "
                "blend them onto an invented background; flatten it to RGB first."
            )
        array = array[..., :-1]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    # float32 division by the float32 maximum: the same rounding as the tf.data pipeline.
    return array.astype(np.float32) / np.float32(max_value)


def _decode_png16(data: bytes, path: pathlib.Path, header: _PngHeader) -> np.ndarray:
    import tensorflow as tf

    if header.has_trns:
        raise ValueError(
            f"Image {str(path)!r} is a 16-bit PNG with a tRNS transparency key, which "
            "tfdeblur does not read; remove the transparency or convert it to 8 bits."
        )
    try:
        array = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
    except tf.errors.OpError as err:
        raise ValueError(f"Cannot decode PNG {str(path)!r}: {err.message}") from err
    return _to_rgb_float(array, 65535, array.shape[-1] in (2, 4), path)


def _decode_pil(data: bytes, path: pathlib.Path, exif_orientation: bool = False) -> np.ndarray:
    im = _pil_open(io.BytesIO(data), path)
    with im:
        info = _pil_info(im, path)  # refuses unsupported modes
        try:
            im.load()
            if exif_orientation:
                from PIL import ImageOps

                im = ImageOps.exif_transpose(im)  # an upright copy (no tag: a plain copy)
            mode = im.mode
            if mode == "1":
                im, mode = im.convert("L"), "L"
            transparency = "transparency" in im.info
            if mode in ("P", "PA"):
                mode = "RGBA" if (transparency or mode == "PA") else "RGB"
                im = im.convert(mode)
            elif mode in ("L", "RGB") and transparency:
                mode = mode + "A"
                im = im.convert(mode)
            elif mode in ("La", "RGBa"):
                mode = mode.upper()
                im = im.convert(mode)
            elif mode in ("RGBX", "YCbCr"):
                im, mode = im.convert("RGB"), "RGB"
            array = np.asarray(im)
        except Exception as err:  # truncated data, zlib errors, ...
            raise ValueError(f"Cannot decode image {str(path)!r}: {err}") from err
    max_value = 65535 if info.bit_depth == 16 else 255
    return _to_rgb_float(array, max_value, mode in ("LA", "RGBA"), path)


def read_image(path, *, exif_orientation: bool = False) -> np.ndarray:
    """Read an image as float32 ``(H, W, 3)`` RGB in ``[0, 1]``.

    Reads PNG (8 and 16 bit, gray/RGB/palette, with or without alpha), JPEG, BMP, TIFF and
    anything else Pillow reads in a supported mode. 8-bit samples map to ``v / 255``, 16-bit
    samples to ``v / 65535``. Grayscale is replicated to RGB. Alpha is dropped when fully
    opaque, refused otherwise. A PNG must be complete (chunks up to ``IEND``), the same rule
    TensorFlow's decoder applies in the training pipeline.

    Args:
        path: image file.
        exif_orientation: turn the pixels upright as the EXIF ``Orientation`` tag says
            (phone photos are often stored sideways with that tag), so that the array is
            the image as viewers show it. Default False: the pixels as stored, the same
            as ``tf.io.decode_jpeg`` gives the training pipeline. ``tfdeblur deblur``
            sets it, since it writes no EXIF: its output is upright pixels.

    Returns:
        ``np.ndarray`` float32 of shape ``(H, W, 3)``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: unreadable, truncated, transparent or unsupported image; the message
            names the file.
    """
    path = _as_file(path)
    data = path.read_bytes()
    if _sniff(data[:8]) == "PNG":
        header, problem = _walk_png(io.BytesIO(data), len(data), to_end=True)
        if problem:
            raise ValueError(f"Image {str(path)!r} {problem}.")
        if header.bit_depth == 16:
            return _decode_png16(data, path, header)
    return _decode_pil(data, path, exif_orientation)


def decode_image(contents):
    """Decode PNG (8/16 bit) or JPEG bytes to float32 ``(H, W, 3)`` in ``[0, 1]``, in graph.

    Args:
        contents: scalar string tensor, the file's bytes.

    Returns:
        float32 tensor ``(H, W, 3)``.
    """
    import tensorflow as tf  # only the tf.data pipelines call this; reading files needs no TF

    def png():
        image = tf.io.decode_png(contents, channels=3, dtype=tf.uint16)
        return tf.cast(image, tf.float32) / 65535.0

    def jpeg():
        image = tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")
        return tf.cast(image, tf.float32) / 255.0

    is_png = tf.equal(tf.strings.substr(contents, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    image = tf.cond(is_png, png, jpeg)
    image.set_shape([None, None, 3])
    return image


_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, CRC


def _png_ends_with_iend(f, size: int) -> bool:
    """True when the file's last 12 bytes are the IEND chunk: O(1), no full walk."""
    if size < 8 + 25 + len(_IEND_CHUNK):
        return False
    f.seek(size - len(_IEND_CHUNK))
    return f.read(len(_IEND_CHUNK)) == _IEND_CHUNK


def _jpeg_complete(f, size: int) -> bool:
    """True when the JPEG ends with its EOI marker (trailing zero padding allowed)."""
    tail = min(size, 4096)
    f.seek(size - tail)
    end = f.read(tail).rstrip(b"\x00")
    return end.endswith(b"\xff\xd9")


def verify_image(path, *, decode: bool = False) -> ImageInfo:
    """Check that ``path`` is usable as training/evaluation data, cheaply.

    Checks that it is a PNG or JPEG (the formats the ``tf.data`` pipeline decodes; the
    format is read from the file's signature, not its extension), that it is complete (a
    PNG must end with its IEND chunk, else its chunk structure is walked to find where it
    breaks; a JPEG must end with its EOI marker, else it is decoded in full to decide; both
    checks read a few bytes, not the whole file), that its mode is supported,
    and, for images with an alpha channel, that every pixel is opaque (decodes the image).

    Args:
        path: image file.
        decode: also decode every image in full (slower; catches corrupt compressed data
            inside an otherwise well-formed file). Default False.

    Returns:
        The file's :class:`ImageInfo`.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: naming the file and what is wrong with it.
    """
    path = _as_file(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        fmt = _sniff(f.read(8))
        if fmt is None:
            f.seek(0)
            with _pil_open(f, path) as im:
                found = im.format or "unknown"
            raise ValueError(
                f"Image {str(path)!r} is {found}, which datasets may not contain: the "
                f"tf.data pipeline decodes {' and '.join(DATASET_FORMATS)} only. "
                "Convert it to PNG."
            )
        if fmt == "PNG":
            header, problem = _walk_png(f, size, to_end=False)  # header chunks only
            if not problem and not _png_ends_with_iend(f, size):
                # Trailing bytes after IEND, or truncation: walk every chunk to tell.
                header, problem = _walk_png(f, size, to_end=True)
            if problem:
                raise ValueError(f"Image {str(path)!r} {problem}.")
            info = _png_info(header)
        else:
            f.seek(0)
            with _pil_open(f, path) as im:
                info = _pil_info(im, path)
            if not _jpeg_complete(f, size):
                decode = True  # no EOI marker at the end: only a full decode can tell
    if decode or info.channels in (2, 4):
        read_image(path)
    return info


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _quantize(array, bit_depth: int, path: pathlib.Path) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]  # a batch of one, e.g. a model output
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(
            f"write_image({str(path)!r}): expected an (H, W), (H, W, 1) or (H, W, 3) array, "
            f"got shape {array.shape}."
        )
    if min(array.shape[:2]) < 1:
        raise ValueError(f"write_image({str(path)!r}): empty image of shape {array.shape}.")
    max_value = 65535 if bit_depth == 16 else 255
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    if array.dtype == dtype:
        return array  # already quantised to this depth
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"write_image({str(path)!r}): expected floats in [0, 1] (or {np.dtype(dtype).name} "
            f"for bit_depth={bit_depth}), got dtype {array.dtype}."
        )
    if np.isnan(array).any():
        raise ValueError(f"write_image({str(path)!r}): the array contains NaN.")
    # Clamp, then round once (to nearest, ties to even) in float64.
    scaled = np.clip(array.astype(np.float64), 0.0, 1.0) * max_value
    return np.rint(scaled).astype(dtype)


def write_image(
    path, array, bit_depth: int = 8, *, quality: int = 95, compress_level: int = 6
) -> pathlib.Path:
    """Write a float image in ``[0, 1]`` to ``path``, atomically.

    Values are clamped to ``[0, 1]`` and rounded once to the nearest 8- or 16-bit level
    (``round(x * 255)`` / ``round(x * 65535)``). The format follows the extension: ``.png``
    (8 or 16 bit), ``.jpg``/``.jpeg`` (8 bit, ``quality``), ``.bmp`` (8 bit). Parent
    directories are created. The file is written to a temporary file beside it and moved into
    place with ``os.replace``: no partial file is ever visible, and a failure leaves an
    existing file untouched.

    Args:
        path: destination file.
        array: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` floats (a leading batch axis of 1
            is dropped); ``uint8`` / ``uint16`` arrays matching ``bit_depth`` are written
            unchanged. NaN is refused.
        bit_depth: 8 or 16 (PNG only). Default 8.
        quality: JPEG quality, 1-100. Default 95.
        compress_level: PNG zlib level, 0-9 (the pixels are the same; 1 is ~3x faster
            than 6 and ~10% larger). Default 6.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        ValueError: bad extension, bit depth, shape, dtype or NaN values; names the path.
    """
    path = pathlib.Path(path).expanduser()
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"write_image({str(path)!r}): unknown extension {path.suffix!r}; "
            f"use one of {sorted(WRITE_FORMATS)}."
        )
    if bit_depth not in (8, 16):
        raise ValueError(
            f"write_image({str(path)!r}): bit_depth must be 8 or 16, got {bit_depth!r}."
        )
    if bit_depth == 16 and fmt != "PNG":
        raise ValueError(f"write_image({str(path)!r}): 16-bit output needs a .png file.")
    pixels = _quantize(array, bit_depth, path)

    if bit_depth == 16:
        import tensorflow as tf

        pixels = pixels if pixels.ndim == 3 else pixels[..., None]
        data = tf.io.encode_png(pixels, compression=int(compress_level)).numpy()
    else:
        from PIL import Image

        buffer = io.BytesIO()
        options = {"quality": int(quality)} if fmt == "JPEG" else {}
        if fmt == "PNG":
            options = {"compress_level": int(compress_level)}
        Image.fromarray(pixels).save(buffer, format=fmt, **options)
        data = buffer.getvalue()
    write_bytes_atomic(path, data)
    return path
