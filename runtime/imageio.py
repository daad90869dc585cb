"""Reading photos and ground-truth masks into the two array forms the whole toolkit uses.

Images come back as uint8 HxWx3 RGB, masks as float32 HxW with 1 = blur, whatever the file held:
benchmarks ship a zoo of formats (upper-case .JPG, RGBA and palettised masks, 16-bit PNGs, phone
photos that are only upright once their EXIF orientation is applied). Normalising here, once, keeps
every consumer (training, calibration, benchmarks, the predictor) free of format special cases.

A file that cannot be decoded completely is a user problem, not a crash: it raises `DBDError` with
one line naming the file and the fix. Decoding is forced with `.load()` so a truncated JPEG fails
here rather than as half-grey pixels in a training batch; PIL's global LOAD_TRUNCATED_IMAGES is left
alone on purpose.
"""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dbd.core import DBDError, reraise_interrupt

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
"""Accepted for images and masks alike, in any letter case (CUHK has both .jpg and .JPG)."""

POLARITIES = ("blur_white", "sharp_white")
"""How a mask file stores its labels: white = blurred (CUHK, CTCUG, SZU-BD) or white = sharp (DUT)."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

LARGE_PHOTO_PIXELS = 64_000_000
"""Photos above this many pixels are decoded at 1/2, 1/4 or 1/8 size (JPEG: DCT scaling in the
decoder, so the full image never exists in memory; other formats: decoded, then box-reduced), to
at most REDUCED_PIXELS: the models see about 320x320, and a 110-megapixel PNG decoded whole, then
converted to float, peaked at 4 GB. A note on stderr says so; the outputs are at the reduced size."""
REDUCED_PIXELS = 24_000_000
MAX_JPEG_PIXELS = 1_600_000_000
"""The largest JPEG decoded (at 1/8 size: the decoder never holds more than ~25 megapixels). PIL's
own limit (DecompressionBombError above 179 megapixels) is replaced by these two."""
MAX_OTHER_PIXELS = 400_000_000
"""The largest PNG/BMP/... decoded: those decoders hold the whole image (1.2 GB at this size) before
it is reduced."""
_PIL_LIMIT = threading.Lock()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _open_decoded(path: str | Path, what: str) -> Image.Image:
    """Open and fully decode `path` with its EXIF orientation applied; broken files -> DBDError.

    `what` ("image" or "mask") only words the message.
    """
    path = Path(path)
    prefix = f"cannot read {what} '{path}'"
    if not path.exists():
        raise DBDError(f"{prefix}: no such file; check the path")
    if path.is_dir():
        raise DBDError(f"{prefix}: it is a folder, not an image file; pass a file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DBDError(f"{prefix}: {err.strerror}; check the file's permissions") from None
    if size == 0:
        raise DBDError(f"{prefix}: file is empty (0 bytes); re-save or remove it")
    try:
        with warnings.catch_warnings(), _PIL_LIMIT:  # PIL's bomb limits: large photos are decoded reduced below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                opened = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with opened as im:
            full = im.size
            jpeg = im.format in ("JPEG", "MPO")
            limit = MAX_JPEG_PIXELS if jpeg else MAX_OTHER_PIXELS
            if full[0] * full[1] > limit:
                raise DBDError(
                    f"{prefix}: {full[0]}x{full[1]} is {full[0] * full[1] / 1e6:.0f} megapixels, more than "
                    f"{limit / 1e6:.0f} megapixels ({'JPEG' if jpeg else 'formats other than JPEG'}); downscale it"
                    + ("" if jpeg else f" or save it as JPEG (decoded reduced, up to {MAX_JPEG_PIXELS / 1e6:.0f} MP)")
                )
            factor = _reduction(full)
            if factor > 1 and im.format in ("JPEG", "MPO"):  # MPO: phones' multi-picture JPEGs
                im.draft(im.mode, (-(-full[0] // factor), -(-full[1] // factor)))  # decode at 1/factor
            im.load()
            reduced = _reduce(im, factor) if factor > 1 and im.size == full else im
            # exif_transpose returns a new image (or a copy), so it survives closing the file.
            upright = ImageOps.exif_transpose(reduced)
        if factor > 1:
            w, h = upright.size
            print(
                f"note: {what} '{path}' has {full[0] * full[1] / 1e6:.0f} megapixels; decoded at "
                f"1/{round(full[0] / reduced.width)} size ({w}x{h}) to save memory (the model sees about "
                f"320x320); results are at that size",
                file=sys.stderr,
            )
        return upright
    except UnidentifiedImageError:
        raise DBDError(f"{prefix}: not a recognisable image (expected JPG, PNG or BMP); re-save or remove it") from None
    except PermissionError as err:  # an OSError, but not a damaged file: say what it is
        raise DBDError(f"{prefix}: {err.strerror or 'permission denied'}; check the file's permissions") from None
    except Image.DecompressionBombError as err:
        raise DBDError(f"{prefix}: image is too large ({_one_line(err)}); downscale it") from None
    except OSError as err:
        detail = _one_line(err)
        reason = "file is truncated" if "truncat" in detail.lower() else "file is corrupt"
        raise DBDError(f"{prefix}: {reason} ({detail}); re-save or remove it") from None
    except Exception as err:  # PIL decoders also raise SyntaxError, ValueError, struct.error, ...
        reraise_interrupt(err)
        raise DBDError(
            f"{prefix}: file is corrupt ({type(err).__name__}: {_one_line(err)}); re-save or remove it"
        ) from None


def _reduction(size: tuple[int, int]) -> int:
    """1 for ordinary photos; above LARGE_PHOTO_PIXELS the smallest of 2, 4, 8 that brings the
    photo to at most REDUCED_PIXELS (the scales a JPEG decoder can produce directly)."""
    pixels = size[0] * size[1]
    if pixels <= LARGE_PHOTO_PIXELS:
        return 1
    return next((f for f in (2, 4) if pixels / (f * f) <= REDUCED_PIXELS), 8)


def _reduce(im: Image.Image, factor: int) -> Image.Image:
    """Box-average `factor` x `factor` blocks. Palette indices and bits are not brightnesses, and
    PIL has no 16-bit reduce: those are converted first."""
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode in _SIXTEEN_BIT_MODES:
        im = im.convert("I")
    return im.reduce(factor)


def _high_depth_to_8bit(im: Image.Image) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float single-channel image to float 0..255.

    PIL's own convert("L") clips these (every 16-bit value above 255 becomes white), which turns a
    16-bit PNG into an almost all-white picture.
    """
    values = np.asarray(im)
    if im.mode in _SIXTEEN_BIT_MODES:
        return values.astype(np.float32) / 257.0
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if im.mode == "F" and low >= 0.0 and high <= 1.0:  # float images on [0, 1]
        return (values * 255.0).astype(np.float32)
    if low >= 0.0 and high <= 65535.0:  # mode I: PIL's container for 16-bit data
        return (values / 257.0).astype(np.float32) if high > 255.0 else values.astype(np.float32)
    # Anything else (negative or huge values) has no fixed range: stretch what is there.
    span = high - low if high > low else 1.0
    return ((values - low) * (255.0 / span)).astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Read a photo as uint8 HxWx3 RGB, upright (EXIF orientation applied), alpha dropped."""
    im = _open_decoded(path, "image")
    if im.mode in _SIXTEEN_BIT_MODES or im.mode in ("I", "F"):
        grey = np.clip(np.rint(_high_depth_to_8bit(im)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode != "RGB":
        try:
            # Covers L, LA, 1, P, PA, RGBA, RGBX, CMYK, YCbCr: convert drops alpha for RGB output.
            im = im.convert("RGB")
        except (ValueError, OSError) as err:
            raise DBDError(
                f"cannot read image '{path}': colour mode {im.mode} is not supported "
                f"({_one_line(err)}); re-save it as an RGB JPG or PNG"
            ) from None
    return np.array(im, dtype=np.uint8)


def _varies(channel: np.ndarray) -> bool:
    return bool(channel.size) and bool(channel.min() != channel.max())


def _mask_grey(im: Image.Image, path: str | Path) -> np.ndarray:
    """The mask's grey level per pixel as float 0..255, whatever the file's mode.

    Palettes are looked up (a palette index is not a brightness), colour masks are reduced to
    luminance, and a mask drawn only in the alpha channel (constant colour, varying alpha: what some
    editors export) is read from its alpha.
    """
    if im.mode in _SIXTEEN_BIT_MODES or im.mode in ("I", "F"):
        return _high_depth_to_8bit(im)
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32)
    if im.mode == "LA":
        grey, alpha = (np.asarray(band, dtype=np.float32) for band in im.split())
        return alpha if (not _varies(grey) and _varies(alpha)) else grey
    if im.mode != "RGB":  # P, PA, RGBA, CMYK, ...: look colours up, then decide colour vs alpha
        try:
            rgba = np.asarray(im.convert("RGBA"))
        except (ValueError, OSError) as err:
            raise DBDError(
                f"cannot read mask '{path}': colour mode {im.mode} is not supported "
                f"({_one_line(err)}); re-save it as a greyscale PNG"
            ) from None
        colour, alpha = rgba[:, :, :3], rgba[:, :, 3]
        colour_constant = not any(_varies(colour[:, :, c]) for c in range(3))
        if colour_constant and _varies(alpha):
            return alpha.astype(np.float32)
        im = Image.fromarray(np.ascontiguousarray(colour), "RGB")
    return np.asarray(im.convert("L"), dtype=np.float32)


def read_mask(path: str | Path, stored_polarity: str, threshold: int = 128) -> np.ndarray:
    """Read a ground-truth mask as float32 HxW in {0, 1} with 1 = blur.

    `stored_polarity` says what white means in this file ("blur_white" or "sharp_white"); grey
    levels >= `threshold` (on 0..255) count as white, which binarises the grey edges that resized
    masks (DUT, SZU-BD) carry.
    """
    if stored_polarity not in POLARITIES:
        raise DBDError(f"unknown mask polarity {stored_polarity!r} for '{path}'; use blur_white or sharp_white")
    grey = _mask_grey(_open_decoded(path, "mask"), path)
    top = float(grey.max()) if grey.size else 0.0
    if 0.0 < top <= 1.0 < threshold and np.count_nonzero(grey) >= 0.001 * grey.size:
        # Labels stored as 0/1 (a numpy bool saved as-is): every pixel is below the threshold, so
        # the whole mask would read as one class and train "everything sharp" (or blur) silently.
        raise DBDError(
            f"mask '{path}' stores its labels as 0 and 1 (max grey level {top:g} of 255), so every pixel "
            f"would read as {'sharp' if stored_polarity == 'blur_white' else 'blur'}; re-save the masks "
            f"with white = 255 (e.g. mask * 255)"
        )
    white = grey >= threshold
    blur = white if stored_polarity == "blur_white" else ~white
    return blur.astype(np.float32)
