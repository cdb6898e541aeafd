"""Reading images: a folder, a list of paths, arrays or encoded bytes, into rows of pixels.

Every image is checked before any work (a corrupt or truncated file, a non-image, a decompression
bomb beyond Pillow's pixel limit, an image under ``MIN_SIDE`` pixels, a channel count other than 1,
3 or 4): the error names the image and what was wrong. Accepted: PNG, JPEG, TIFF, BMP, GIF (first
frame), WebP; 8- or 16-bit; grey, grey + alpha, RGB, RGBA (alpha dropped); EXIF orientation applied.

The resize policy: each image is resized to ``size x size`` pixels (bilinear, aspect ratio not kept);
grey images are kept grey when the model is grey, repeated to three channels when it is RGB; an RGB
image given to a grey model is converted (ITU-R 601-2 luma). Pixels are floats in [0, 1].
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.errors import InputError
from anomalens.text import clip

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGES", "MIN_SIDE", "Image", "image_paths", "pixel_rows", "read_images", "to_pixels"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
MIN_SIDE = 8  # an image smaller than this on either side holds no patch to judge
MAX_IMAGES = 100_000
MAX_PIXELS = 89_478_485  # Pillow's default limit on one image (beyond it: a decompression bomb)


@dataclass(frozen=True)
class Image:
    """One image as read: its id (the file name, or its position), pixels (channels, h, w) in [0, 1]
    at the size it came in, and its channel count."""

    id: str
    pixels: np.ndarray


def image_paths(source: str | os.PathLike) -> list[Path]:
    """The image files of a folder (sorted by name; other files and sub-folders skipped), or the file."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"images must be an existing folder or image file, got {clip(str(path), 200)!r} (no such path)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"the folder {clip(str(path), 200)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return files
    return [path]


def _decode(raw: bytes | Path, name: str) -> np.ndarray:
    """(channels, h, w) floats in [0, 1] of an encoded image, or an InputError naming it."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():  # Pillow only warns up to twice its limit: an error here
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            im = PILImage.open(io.BytesIO(raw) if isinstance(raw, bytes) else raw)
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise InputError(f"{name} is {w} x {h} pixels, beyond the limit of {MAX_PIXELS:,} (a decompression bomb?)")
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_pixels(np.asarray(_plain(im)), name)
    except InputError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise InputError(f"{name} is beyond the limit of {MAX_PIXELS:,} pixels (a decompression bomb?)") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{name} is not an image Pillow can read (PNG, JPEG, TIFF, BMP, GIF, WebP)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} is a corrupt or truncated image ({clip(str(exc), 120)})") from exc


def _plain(im: Any) -> Any:
    """A Pillow image in a mode numpy reads as numbers: L, LA, RGB, RGBA or I;16 / I / F kept."""
    if im.mode in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F"):
        return im
    if im.mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        return im.convert("RGBA" if "A" in im.mode or im.info.get("transparency") is not None else
                          "L" if im.mode == "1" else "RGB")
    raise InputError(f"image mode {im.mode!r} is not supported")


def to_pixels(a: Any, name: str) -> np.ndarray:
    """(channels, h, w) float pixels in [0, 1] from an array (h, w), (h, w, c) or (c, h, w): 8-bit
    and 16-bit integers are divided by their maximum, floats must already be in [0, 1]."""
    arr = np.asarray(a)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "uif":
        raise InputError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        if arr.shape[-1] in (1, 2, 3, 4) and arr.shape[0] not in (1, 2, 3, 4):
            arr = np.moveaxis(arr, -1, 0)  # (h, w, c)
        elif arr.shape[0] not in (1, 2, 3, 4):
            raise InputError(f"{name} must have 1, 3 or 4 channels, got shape {arr.shape}")
    else:
        raise InputError(f"{name} must be a 2-D (grey) or 3-D (channels) array, got {arr.ndim} dimension(s)")
    if arr.shape[0] in (2, 4):
        arr = arr[:-1]  # alpha dropped
    h, w = arr.shape[1:]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{name} must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {w} x {h}")
    if arr.dtype.kind in "ui":
        top = 255 if arr.max(initial=0) <= 255 and arr.dtype.itemsize == 1 else 65535 if arr.dtype.itemsize <= 2 \
            else max(int(arr.max(initial=0)), 1)
        if arr.dtype.kind == "i" and arr.min(initial=0) < 0:
            raise InputError(f"{name} holds negative pixel values (min {arr.min()})")
        return arr.astype(np.float32) / top
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} holds NaN or infinite pixel values")
    if arr.min() < 0 or arr.max() > 1:
        raise InputError(f"{name}: float pixels must be in [0, 1], got {arr.min():.4g} to {arr.max():.4g}")
    return arr


def _resized(px: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(channels, size, size) of (c, h, w) pixels."""
    import torch
    import torch.nn.functional as F

    if px.shape[0] == 3 and channels == 1:
        px = (0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2])[None]
    elif px.shape[0] == 1 and channels == 3:
        px = np.repeat(px, 3, 0)
    if px.shape[1:] == (size, size):
        return px
    t = torch.from_numpy(np.ascontiguousarray(px))[None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0].numpy()
    return np.clip(out, 0.0, 1.0)  # the weights are non-negative: only float rounding leaves [0, 1] (1 + 1e-7)


def read_images(data: Any, name: str = "images") -> list[Image]:
    """Images from a folder or file path, a list of paths, encoded bytes, or arrays (one (h, w[, c])
    array, a list of them, or a stacked (n, h, w[, c]) / (n, c, h, w) array); a dict maps ids to any
    of those. Raises InputError before any work for the first bad one."""
    if data is None:
        raise InputError(f"{name} must be a folder, image paths, bytes or arrays, got None")
    if isinstance(data, dict):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, (str, os.PathLike)):
        items = [(p.name, p) for p in image_paths(data)]
    elif isinstance(data, (bytes, bytearray)):
        items = [("image", bytes(data))]
    elif isinstance(data, np.ndarray) and data.ndim == 4:
        items = [(str(i), a) for i, a in enumerate(data)]
    elif isinstance(data, np.ndarray) and data.ndim in (2, 3) and not (data.ndim == 3 and data.shape[0] > 4
                                                                        and data.shape[-1] > 4):
        items = [("image", data)]
    elif isinstance(data, np.ndarray) and data.ndim == 3:  # (n, h, w) grey
        items = [(str(i), a) for i, a in enumerate(data)]
    elif isinstance(data, (list, tuple)):
        items = []
        for i, v in enumerate(data):
            if isinstance(v, (str, os.PathLike)):
                p = Path(v)
                if p.is_dir():
                    items += [(q.name, q) for q in image_paths(p)]
                else:
                    items.append((p.name, p))
            else:
                items.append((str(i), v))
    else:
        raise InputError(f"{name} must be a folder, image paths, bytes or arrays, got {type(data).__name__}")
    if not items:
        raise InputError(f"{name} holds no images")
    if len(items) > MAX_IMAGES:
        raise InputError(f"{name} holds {len(items):,} images, more than {MAX_IMAGES:,} at once")
    ids = [k for k, _ in items]
    if len(set(ids)) != len(ids):
        dup = next(k for k in ids if ids.count(k) > 1)
        raise InputError(f"{name} must have distinct image names, got {clip(dup, 80)!r} more than once")
    out = []
    for key, v in items:
        label = f"image {clip(key, 120)!r}"
        if isinstance(v, Path):
            if not v.is_file():
                raise InputError(f"{label} is not an existing file")
            px = _decode(v, label)
        elif isinstance(v, (bytes, bytearray)):
            px = _decode(bytes(v), label)
        else:
            px = to_pixels(v, label)
        out.append(Image(key, px))
    return out


def pixel_rows(images: list[Image], size: int, channels: int) -> np.ndarray:
    """(n, channels x size x size) float64 rows of the images, resized (see the module docstring)."""
    return np.stack([_resized(im.pixels, size, channels).reshape(-1) for im in images]).astype(np.float64)
