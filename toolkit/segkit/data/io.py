"""Reading images and masks from disk, with checks that name the offending file.

Images come back as ``H x W x C`` uint8 arrays in RGB order, masks as ``H x W``
uint8 label values. OpenCV decodes every format (PNG, JPEG, 8- and 16-bit TIFF,
BMP, GIF); files are read as bytes first so paths with any characters work on
every platform. What public datasets hold is read as what it means:

- a TIFF whose photometric tag says grey but which stores three or four samples per
  pixel (OpenCV would read one of them without a word) is read with every sample;
- masks saved lossy (JPEG) have each value snapped to the nearest label value and the
  pixels that moved are counted (:class:`MaskReading`); a lossy mask with many values far
  from every label is refused as ambiguous;
- palette masks (PNG, GIF) are read as their grey levels when the palette is grey, else as
  the palette indices (a label map with a colour palette, as PASCAL VOC stores them);
- 16-bit masks hold 0/65535 (binary) or the label values themselves;
- a mask value named ``ignore`` (a partial annotation's "not annotated") becomes
  :data:`IGNORE`, which neither trains nor scores.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segkit.errors import DataError
from segkit.labels import IGNORE

__all__ = [
    "IMAGE_SUFFIXES",
    "LOSSY_SUFFIXES",
    "IGNORE",
    "MaskReading",
    "read_image",
    "read_mask",
    "decode_mask",
    "read_pair",
    "raw_mask_values",
    "check_same_size",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
"""File name endings that the on-disk datasets look for (case-insensitive)."""
LOSSY_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")
"""Files whose pixel values compression changes: masks stored so are snapped to their label values."""
AMBIGUOUS_SHARE = 0.005
"""A lossy mask with more than this share of its pixels far from every label value is refused as ambiguous."""


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV's own warnings (libtiff's notes on odd headers) off: segkit says what matters itself."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def _tiff_colour_fix(data: np.ndarray) -> np.ndarray | None:
    """The bytes of a TIFF whose first image is tagged grey (photometric 0 or 1) but stores 3 or 4 samples per
    pixel, re-tagged RGB so that every sample is read; None for any other file (BigTIFF and the like included)."""
    raw = data.tobytes()
    if raw[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if raw[:2] == b"II" else ">"
    try:
        offset = struct.unpack(order + "I", raw[4:8])[0]
        count = struct.unpack(order + "H", raw[offset:offset + 2])[0]
        photometric_at, photometric, samples = None, None, 1
        for entry in range(count):
            at = offset + 2 + 12 * entry
            tag, kind = struct.unpack(order + "HH", raw[at:at + 4])
            value = struct.unpack(order + ("H" if kind == 3 else "I"), raw[at + 8:at + (10 if kind == 3 else 12)])[0]
            if tag == 262:
                photometric_at, photometric = at + 8, value
            elif tag == 277:
                samples = value
    except struct.error:
        return None
    if photometric not in (0, 1) or samples not in (3, 4) or photometric_at is None:
        return None
    fixed = bytearray(raw)
    fixed[photometric_at:photometric_at + 2] = struct.pack(order + "H", 2)
    return np.frombuffer(bytes(fixed), dtype=np.uint8)


def _decode(path: str | os.PathLike) -> np.ndarray:
    """Decode a file with ``cv2.IMREAD_UNCHANGED``; DataError if that is impossible."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    with _quiet_opencv():
        pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if pixels is not None and pixels.ndim == 2 and path.suffix.lower() in (".tif", ".tiff"):
            fixed = _tiff_colour_fix(data)  # tagged grey, holding colour: read every sample
            if fixed is not None:
                pixels = cv2.imdecode(fixed, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise DataError(f"cannot decode {path}: the file is empty, corrupt or not an image (png, jpg, tif, bmp, gif)")
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


def _palette_indices(path: Path) -> np.ndarray | None:
    """A palette (PNG, GIF) mask's indices when its palette holds colours (a label map, as PASCAL VOC stores
    them); None when the file has no palette or a grey one (its grey levels are then the values)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode != "P":
                return None
            indices = np.array(image)
            palette = np.array(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    except (OSError, ValueError):
        return None
    used = palette[np.unique(indices)[np.unique(indices) < len(palette)]]
    grey = bool((used[:, 0] == used[:, 1]).all() and (used[:, 1] == used[:, 2]).all()) if len(used) else True
    return None if grey else indices.astype(np.uint8)


def _mask_pixels(path: Path, lossy: bool = False) -> np.ndarray:
    """The mask's raw values as ``H x W``; a colour mask must be grey (equal channels; for a lossy file, nearly
    equal: their mean is taken), a colour palette gives its indices."""
    if path.suffix.lower() in (".png", ".gif"):
        indices = _palette_indices(path)
        if indices is not None:
            return indices
    pixels = _decode(path)
    if pixels.ndim == 3:
        if pixels.shape[2] == 4:
            pixels = pixels[:, :, :3]
        first, second, third = pixels[:, :, 0], pixels[:, :, 1], pixels[:, :, 2]
        spread = (int((np.maximum(np.maximum(first, second), third) - np.minimum(np.minimum(first, second), third))
                      .max()) if pixels.size else 0)
        top = 65535 if pixels.dtype == np.uint16 else 255
        if spread > (top // 8 if lossy else 0):
            raise DataError(f"{path}: the mask has colour; expected one channel of label values (0/1 or 0/255)")
        pixels = _channel_mean(first, second, third) if lossy and spread else np.ascontiguousarray(first)
    return pixels


def _channel_mean(first: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """The three channels' mean rounded to the nearest whole value, in their type. A third of a whole sum is never
    a half, so adding one before the floor division rounds it exactly; whole-number arithmetic keeps it fast."""
    wide = np.uint32 if first.dtype == np.uint16 else np.int64 if first.dtype.kind == "i" else np.uint16
    total = first.astype(wide) + second + third
    return ((total + 1) // 3).astype(first.dtype)


def raw_mask_values(path: str | os.PathLike) -> list[int]:
    """The distinct pixel values stored in a mask file, before conversion to label values.

    A lossy (JPEG) file's values are the stored label values they snap to (0 and 255, not the 0-8 and
    247-255 compression left), as reading the mask takes them (:func:`decode_mask`).
    """
    path = Path(path)
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    pixels = _mask_pixels(path, lossy=lossy)
    values = _value_counts(pixels)[0].astype(np.int64)
    if not lossy or pixels.dtype.kind not in "ui":
        return [int(v) for v in values]
    levels, _labels = _levels(values, 2, 65535 if pixels.dtype == np.uint16 else 255)
    nearest = levels[np.abs(values[:, None] - levels[None, :]).argmin(axis=1)]
    return sorted({int(v) for v in nearest})


@dataclass
class MaskReading:
    """A mask read from a file: ``mask`` ``H x W`` uint8 label values (:data:`IGNORE` where ignored), and
    ``snapped``, the pixels of a lossy (JPEG) file whose stored value was not exactly a label value and was
    moved to the nearest one (0 for lossless files)."""

    mask: np.ndarray
    snapped: int = 0


def _levels(values: np.ndarray, classes: int, top: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored value of each label and the label it stands for, for a mask holding ``values``; None when the
    values follow none of segkit's conventions (binary 0/1, 0/255 or 0/65535; several labels: 0 .. C-1)."""
    if classes > 2:
        return np.arange(classes), np.arange(classes)
    if values.size and int(values.max()) > 1:
        high = 65535 if top == 65535 and int(values.max()) > 255 else 255
        return np.array([0, high]), np.array([0, 1])
    return np.array([0, 1]), np.array([0, 1])


def _value_counts(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct stored value of a mask, ascending, and how many pixels hold it (a histogram for unsigned
    pixels, which is many times faster than sorting them)."""
    if pixels.dtype in (np.uint8, np.uint16):
        counts = np.bincount(pixels.ravel(), minlength=1)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(pixels, return_counts=True)


def _snap(pixels: np.ndarray, values: np.ndarray, counts: np.ndarray, levels: np.ndarray, labels: np.ndarray,
          path: Path) -> tuple[np.ndarray, int]:
    """Each lossy pixel moved to the nearest stored label value: ``(label values, pixels moved)``; a DataError
    when more than :data:`AMBIGUOUS_SHARE` of them lie farther than a quarter of the levels' gap from every one.
    ``values`` and ``counts`` are the pixels' :func:`_value_counts`: the decision is made once per stored value."""
    distance = np.abs(values.astype(np.int64)[:, None] - levels[None, :])
    nearest, away = distance.argmin(axis=1), distance.min(axis=1)
    gap = int(np.diff(levels).min()) if len(levels) > 1 else 1
    far = counts[away * 4 > gap].sum() / max(pixels.size, 1)
    if far > AMBIGUOUS_SHARE:
        shown = ", ".join(str(int(v)) for v in levels)
        raise DataError(f"{path}: a lossy (JPEG) mask whose values are not near its label values ({shown}): "
                        f"{far:.1%} of its pixels lie far from all of them, so which label they hold is "
                        "ambiguous. Save masks as PNG or TIFF (lossless), or check the dataset's classes.")
    moved = int(counts[away > 0].sum())
    snapped = labels[nearest].astype(np.uint8)
    if pixels.dtype.kind == "u" and values.size:
        table = np.zeros(int(values.max()) + 1, np.uint8)
        table[values] = snapped
        return table[pixels], moved
    return snapped[np.searchsorted(values, pixels)], moved


def decode_mask(path: str | os.PathLike, classes: int = 2, ignore: int | None = None) -> MaskReading:
    """Read a mask as label values (see :func:`read_mask`), with the count of lossy pixels snapped."""
    path = Path(path)
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    pixels = _mask_pixels(path, lossy)
    if pixels.dtype.kind not in "ui":
        raise DataError(f"{path}: unsupported mask pixel type {pixels.dtype}; save masks as 8-bit 0/255")
    ignored = pixels == ignore if ignore is not None else None
    stored, counts = _value_counts(pixels)
    values = stored[stored != ignore] if ignore is not None else stored
    hint = " JPEG compression changes mask values: save masks as PNG or TIFF." if lossy else ""
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    top = 65535 if pixels.dtype == np.uint16 else 255
    levels, labels = _levels(values, classes, top)
    snapped = 0
    if lossy:
        mask, snapped = _snap(pixels, stored, counts, levels, labels, path)
    elif classes > 2:
        if values.size and int(values.max()) >= classes:
            raise DataError(f"{path}: mask values must be label values 0..{classes - 1} (classes = {classes}), "
                            f"found {shown}. Set the dataset's classes to the number of label values including "
                            f"background.{hint}")
        mask = pixels.astype(np.uint8)
    elif np.isin(values, levels).all():
        mask = (pixels > 0).astype(np.uint8)
    else:
        more = (" For masks with several labels, set the dataset's classes to the number of label values including "
                "background (e.g. --set dataset.classes=3).") if values.size and int(values.max()) < 32 else ""
        extra = " or 0/65535" if top == 65535 else ""
        raise DataError(f"{path}: mask values must be 0/1 or 0/255{extra}, found {len(values)} values ({shown}).{more}"
                        f"{hint}")
    if ignored is not None and ignored.any():
        mask = mask.copy()
        mask[ignored] = IGNORE
    return MaskReading(mask, snapped)


def read_mask(path: str | os.PathLike, classes: int = 2, ignore: int | None = None) -> np.ndarray:
    """Read a mask and return ``H x W`` uint8 label values.

    Binary masks (``classes = 2``) are stored as 0/1, 0/255 or (16-bit) 0/65535 and come back in {0, 1}.
    With ``classes = C > 2`` the stored values are the labels ``0 .. C-1`` themselves. A lossy (JPEG)
    mask has every value snapped to the nearest label value (:func:`decode_mask` counts them). Pixels
    storing ``ignore`` come back as :data:`IGNORE`.
    """
    return decode_mask(path, classes, ignore).mask


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str | os.PathLike = "image",
                    mask_path: str | os.PathLike = "mask") -> None:
    """DataError naming both files when the image and mask heights or widths differ."""
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"image and mask sizes differ: {image_path} is {image.shape[1]}x{image.shape[0]} (WxH), "
            f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}")


def read_pair(image_path: str | os.PathLike, mask_path: str | os.PathLike,
              channels: int | None = None, classes: int = 2, ignore: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask (label values, see :func:`read_mask`) and check that their sizes match."""
    image = read_image(image_path, channels)
    mask = read_mask(mask_path, classes, ignore)
    check_same_size(image, mask, image_path, mask_path)
    return image, mask
