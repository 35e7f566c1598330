"""The Kaggle LGG patients as per-patient volumes: each patient's slices stacked in slice order.

Same folders as the 2D ``lgg`` dataset (:mod:`segkit_builtins.datasets.lgg`)::

    kaggle_3m/TCGA_<inst>_<id>_<date>/TCGA_<inst>_<id>_<date>_<n>.tif        3 channels
    kaggle_3m/TCGA_<inst>_<id>_<date>/TCGA_<inst>_<id>_<date>_<n>_mask.tif   0 or 255

A patient is one case: its image is ``(3, H, W, S)``, slice ``n`` (numbered 1 .. S, in number
order, so 10 comes after 9) at index ``n - 1`` of the last axis, and its label ``(H, W, S)`` the
masks stacked the same way (0/255 -> 0/1). 2D models train on the last axis, the original slices,
so ``--dataset lgg_volumes --image-size 0`` sees the slices and masks ``--dataset lgg`` does.

The voxel spacing is not published (the slices were exported without their headers), so every
case has spacing 1 along each axis and :attr:`LGGVolumes.spacing` is None: boundary metrics
(HD95, ASSD, surface Dice) are in voxels, and the evaluation report says so ("pixels").

In the case table, ``image_paths`` is every slice file of the patient (each image, then its mask,
in slice order) and ``label_path`` is the patient's folder. Listing the masks among the image
paths keeps the volume cache honest: it fingerprints ``image_paths`` and ``label_path``, so a
changed image or mask file rebuilds that patient.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from segkit.data.io import read_image, read_mask
from segkit.data.volume_io import Volume
from segkit.data.volume import VolumeDataset
from segkit.errors import DataError
from segkit.labels import BINARY_NAMES
from segkit_builtins.datasets.lgg import _SLICE, LAYOUT, LGGDataset, _find_root

__all__ = ["LGGVolumes", "patient_slices"]

UNIT_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
"""Every case's spacing: the LGG slices carry none, so distances are in voxels."""


def patient_slices(patient: str, files: Iterable[str | Path]) -> list[tuple[str, str]]:
    """``(image, mask)`` paths of each slice of ``patient``, in slice-number order 1 .. S.

    ``files`` are the patient's files (others than slice TIFFs are ignored). A mask without its
    image, an image without its mask, or a slice number missing from 1 .. S is a one-line
    DataError naming the patient and the file.
    """
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for path in map(Path, files):
        match = _SLICE.match(path.name)
        if match:
            (masks if match["mask"] else images)[int(match["slice"])] = path
    for number, mask in sorted(masks.items()):
        if number not in images:
            raise DataError(f"patient {patient}: the mask {mask} has no image ({mask.name.replace('_mask', '')} is "
                            "not there); restore the image or remove the mask")
    for number, image in sorted(images.items()):
        if number not in masks:
            raise DataError(f"patient {patient}: the image {image} has no mask "
                            f"({image.stem}_mask{image.suffix} is not there); restore the mask or remove the image")
    if images:
        example = images[min(images)]
        stem = _SLICE.match(example.name)["stem"]  # type: ignore[index]
        for number in range(1, max(images) + 1):
            if number not in images:
                raise DataError(f"patient {patient}: slice {number} of 1 .. {max(images)} is missing "
                                f"({example.parent / f'{stem}_{number}{example.suffix}'} and its mask are not "
                                "there); a volume needs every slice: restore it or leave the patient out")
    return [(str(images[n]), str(masks[n])) for n in sorted(images)]


def _pairs(paths: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(image, mask)`` slices among a case's ``image_paths``, in slice order (checked again)."""
    paths = [Path(p) for p in paths]
    patient = paths[0].parent.name if paths else "?"
    return patient_slices(patient, paths)


class LGGVolumes(VolumeDataset):
    """The LGG patients as volumes ``(3, H, W, S)`` (see the module docstring); 2D models see their slices.

    Args:
        root: the ``kaggle_3m`` folder or the folder that contains it.
        cache: keep decoded slices in memory after the first read (2D runs).
        context: 2.5D context: the ``k`` neighbouring slices on each side stacked as channels.

    The index has ``item`` (``PATIENT_NNN``, ``NNN`` from 000), ``case`` (the patient folder),
    ``slice`` (0-based: file number minus one) and ``has_lesion``; channels are
    pre-contrast, FLAIR, post-contrast; labels background and lesion.
    """

    display_channel = LGGDataset.display_channel
    missing_channel_fill = LGGDataset.missing_channel_fill

    def __init__(self, root: str, cache: bool = False, context: int = 0) -> None:
        folder = _find_root(Path(root).expanduser())
        rows = []
        for patient in sorted(p for p in folder.iterdir() if p.is_dir()):
            pairs = patient_slices(patient.name, patient.iterdir())
            if pairs:
                rows.append({"case": patient.name, "image_paths": tuple(p for pair in pairs for p in pair),
                             "label_path": str(patient)})
        if not rows:
            raise DataError(f"no LGG slices (*.tif) found under {folder}. Expected the Kaggle layout: {LAYOUT}")
        self.root = folder
        super().__init__(pd.DataFrame(rows), channels=LGGDataset.channel_names, labels=BINARY_NAMES, slice_axis=2,
                         cache=cache, context=context)
        self.spacing = None  # unknown: boundary metrics in voxels, reported as such

    def image_shape(self, paths: tuple[str, ...]) -> tuple[int, ...]:
        """``(H, W, S)`` from the TIFF headers; every image and mask of the patient must be ``H x W``."""
        from PIL import Image, UnidentifiedImageError

        sizes = []
        for image, mask in _pairs(paths):
            found = []
            for path in (image, mask):
                try:
                    with Image.open(path) as opened:
                        found.append(opened.size)
                except (OSError, UnidentifiedImageError) as exc:
                    raise DataError(f"cannot read {path}: {exc}") from None
            if found[0] != found[1]:
                raise DataError(f"image and mask sizes differ: {image} is {found[0][0]}x{found[0][1]} (WxH), "
                                f"{mask} is {found[1][0]}x{found[1][1]}")
            sizes.append((image, found[0]))
        first_path, first = sizes[0]
        for path, size in sizes:
            if size != first:
                raise DataError(f"{path} is {size[0]}x{size[1]} (WxH) but {first_path} is {first[0]}x{first[1]}; "
                                "the slices of a patient must have one size to form a volume")
        return (first[1], first[0], len(sizes))

    def image_spacing(self, paths: tuple[str, ...]) -> None:
        """Unknown: TIFF slices carry no voxel spacing (the label's is 1 per axis), so there is nothing to compare."""
        return None

    def read_image(self, paths: tuple[str, ...]) -> np.ndarray:
        """The patient's slices stacked as float32 ``(3, H, W, S)``, channels as the 2D lgg dataset reads them."""
        slices = [read_image(image, channels=3) for image, _ in _pairs(paths)]
        return np.stack(slices, axis=-1).transpose(2, 0, 1, 3).astype(np.float32)

    def read_label(self, path: str, classes: int) -> Volume:
        """The masks of the patient folder ``path`` stacked as uint8 ``(H, W, S)`` in {0, 1}, spacing 1 per axis."""
        folder = Path(path)
        if not folder.is_dir():
            raise DataError(f"LGG patient folder not found: {folder}")
        pairs = patient_slices(folder.name, folder.iterdir())
        if not pairs:
            raise DataError(f"patient {folder.name}: no slices (*.tif) in {folder}")
        masks = [read_mask(mask, classes) for _, mask in pairs]
        for (_, mask), array in zip(pairs, masks, strict=True):
            if array.shape != masks[0].shape:
                raise DataError(f"{mask} is {array.shape[1]}x{array.shape[0]} (WxH) but {pairs[0][1]} is "
                                f"{masks[0].shape[1]}x{masks[0].shape[0]}; the slices of a patient must have one size")
        return Volume(np.stack(masks, axis=-1), np.eye(4), UNIT_SPACING, folder)
