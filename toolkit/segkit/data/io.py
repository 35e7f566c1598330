"""Reading images and masks from disk, with checks that name the offending file.

Images come back as ``H x W x C`` uint8 arrays in RGB order, masks as ``H x W``
uint8 arrays in {0, 1}. OpenCV decodes every format (PNG, JPEG, 8- and 16-bit
TIFF, compressed or not); files are read as bytes first so paths with any
characters work on every platform.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from segkit.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "read_image",
    "read_mask",
    "read_pair",
    "raw_mask_values",
    "check_same_size",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File name endings that the on-disk datasets look for (case-insensitive)."""


def _decode(path: str | os.PathLike) -> np.ndarray:
    """Decode a file with ``cv2.IMREAD_UNCHANGED``; DataError if that is impossible."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if pixels is None:
        raise DataError(f"cannot decode {path}: the file is empty, corrupt or not an image (png, jpg, tif)")
    return pixels


def _to_uint8(pixels: np.ndarray, path: Path) -> np.ndarray:
    """8-bit as is; 16-bit rescaled by the image's own maximum to 0..255."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        top = int(pixels.max())
        if top == 0:
            return np.zeros(pixels.shape, np.uint8)
        return np.round(pixels.astype(np.float32) * (255.0 / top)).astype(np.uint8)
    raise DataError(f"{path}: unsupported pixel type {pixels.dtype}; save images as 8- or 16-bit integers")


def read_image(path: str | os.PathLike, channels: int | None = None) -> np.ndarray:
    """Read an image as ``H x W x C`` uint8, RGB order.

    16-bit images are rescaled by their maximum to 0..255. An alpha channel is
    dropped. ``channels=None`` keeps what the file has (1 or 3); ``channels=1``
    turns colour into grey and ``channels=3`` repeats grey three times.
    """
    path = Path(path)
    pixels = _to_uint8(_decode(path), path)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    elif pixels.ndim != 3:
        raise DataError(f"{path}: expected a 2-D image, got an array of shape {pixels.shape}")
    found = pixels.shape[2]
    if found == 4:
        pixels, found = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB), 3
    elif found == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if channels is None or channels == found:
        return np.ascontiguousarray(pixels)
    if channels == 1 and found == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
    if channels == 3 and found == 1:
        return np.repeat(pixels, 3, axis=2)
    raise DataError(f"{path}: has {found} channel(s), expected {channels}")


def _mask_pixels(path: Path) -> np.ndarray:
    """The mask's raw values as ``H x W``; a colour mask must be grey (equal channels)."""
    pixels = _decode(path)
    if pixels.ndim == 3:
        if pixels.shape[2] == 4:
            pixels = pixels[:, :, :3]
        if not all(np.array_equal(pixels[:, :, 0], pixels[:, :, c]) for c in range(1, pixels.shape[2])):
            raise DataError(f"{path}: the mask has colour; expected one channel of 0/1 or 0/255")
        pixels = pixels[:, :, 0]
    return pixels


def raw_mask_values(path: str | os.PathLike) -> list[int]:
    """The distinct pixel values stored in a mask file, before conversion to {0, 1}."""
    return [int(v) for v in np.unique(_mask_pixels(Path(path)))]


def read_mask(path: str | os.PathLike, classes: int = 2) -> np.ndarray:
    """Read a mask and return ``H x W`` uint8 label values.

    Binary masks (``classes = 2``) are stored as 0/1 or 0/255 and come back in {0, 1}.
    With ``classes = C > 2`` the stored values are the labels ``0 .. C-1`` themselves.
    """
    path = Path(path)
    pixels = _mask_pixels(path)
    if pixels.dtype.kind not in "ui":
        raise DataError(f"{path}: unsupported mask pixel type {pixels.dtype}; save masks as 8-bit 0/255")
    values = np.unique(pixels)
    hint = " JPEG compression changes mask values: save masks as PNG or TIFF." if path.suffix.lower() in (
        ".jpg", ".jpeg") else ""
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    if classes > 2:
        if int(values.max()) < classes:
            return pixels.astype(np.uint8)
        raise DataError(f"{path}: mask values must be label values 0..{classes - 1} (classes = {classes}), found "
                        f"{shown}. Set the dataset's classes to the number of label values including background.{hint}")
    if np.isin(values, (0, 1)).all() or np.isin(values, (0, 255)).all():
        return (pixels > 0).astype(np.uint8)
    more = (" For masks with several labels, set the dataset's classes to the number of label values including "
            "background (e.g. --set dataset.classes=3).") if int(values.max()) < 32 else ""
    raise DataError(f"{path}: mask values must be 0/1 or 0/255, found {len(values)} values ({shown}).{more}{hint}")


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str | os.PathLike = "image",
                    mask_path: str | os.PathLike = "mask") -> None:
    """DataError naming both files when the image and mask heights or widths differ."""
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"image and mask sizes differ: {image_path} is {image.shape[1]}x{image.shape[0]} (WxH), "
            f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}")


def read_pair(image_path: str | os.PathLike, mask_path: str | os.PathLike,
              channels: int | None = None, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask (label values, see :func:`read_mask`) and check that their sizes match."""
    image = read_image(image_path, channels)
    mask = read_mask(mask_path, classes)
    check_same_size(image, mask, image_path, mask_path)
    return image, mask
