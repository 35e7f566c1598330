"""The Kaggle LGG brain MRI segmentation data (Buda et al. 2019), in its published layout.

    kaggle_3m/
      data.csv                                  optional: one row per patient
      TCGA_<inst>_<id>_<date>/
        TCGA_<inst>_<id>_<date>_<n>.tif         256x256 RGB: pre-contrast, FLAIR, post-contrast
        TCGA_<inst>_<id>_<date>_<n>_mask.tif    256x256, 0 or 255

Cases are patient folders; slices are sorted by their number ``n``. With
``context = k`` each item also carries slices ``n - k .. n + k`` of its patient as
channels (3 per slice), the edge slice repeated past the first and last.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from segkit.data import FilePairDataset, drop_missing
from segkit.data.base import check_context
from segkit.data.intensity import check_normalize
from segkit.errors import DataError

__all__ = ["LGGDataset"]

LAYOUT = ("kaggle_3m/TCGA_<inst>_<id>_<date>/TCGA_<inst>_<id>_<date>_<n>.tif, each with "
          "TCGA_<inst>_<id>_<date>_<n>_mask.tif beside it (kaggle_3m/data.csv optional)")
_SLICE = re.compile(r"^(?P<stem>.+)_(?P<slice>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


def _find_root(root: Path) -> Path:
    """``root`` itself or its ``kaggle_3m`` folder; DataError showing the layout when absent."""
    if not root.is_dir():
        raise DataError(f"LGG data folder not found: {root}. Expected the Kaggle layout: {LAYOUT}")
    nested = root / "kaggle_3m"
    return nested if nested.is_dir() else root


def _patient_table(path: Path) -> pd.DataFrame | None:
    """``data.csv`` indexed by patient id, or None when absent."""
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if "Patient" not in table.columns:
        raise DataError(f"{path} has no 'Patient' column; found {', '.join(map(str, table.columns[:8]))}")
    return table.drop_duplicates("Patient").set_index("Patient")


class LGGDataset(FilePairDataset):
    """Kaggle LGG slices (3-channel 256x256 TIFFs) with FLAIR abnormality masks.

    Args:
        root: the ``kaggle_3m`` folder or the folder that contains it.
        cache: keep decoded slices in memory after the first read.
        on_missing: ``"error"`` for images without a mask, or ``"skip"`` to warn and leave them out.
        context: 2.5D context ``k``: stack the ``k`` neighbouring slices on each side as extra
            channels, ``3 * (2k + 1)`` in all, in slice order ``n - k .. n + k``; past a patient's
            first or last slice the edge slice repeats. 0 reads single slices.
        normalize: ``"case"`` rescales each channel of each patient so its 99th percentile of
            non-zero pixels is 204, putting every case on one intensity scale; ``"none"``
            (default) keeps the stored pixels. See :mod:`segkit.data.intensity`.

    The index has ``item``, ``case`` (patient folder), ``patient`` (``TCGA_<inst>_<id>``),
    ``slice``, ``image_path``, ``mask_path``, ``has_lesion`` and, when ``data.csv`` is
    present, its per-patient columns.
    """

    channel_names = ("pre-contrast", "FLAIR", "post-contrast")

    display_channel = 1
    """Figures show FLAIR (channel 1) in grey: the sequence the masks were drawn on."""

    missing_channel_fill = 1
    """Where a patient lacks the pre- or post-contrast sequence, the set stores FLAIR (channel 1) in its
    place; ``train.modality_dropout`` imitates that (:mod:`segkit.data.modality`)."""

    def __init__(self, root: str, cache: bool = False, on_missing: str = "error", context: int = 0,
                 normalize: str = "none") -> None:
        check_context(context)
        check_normalize(normalize)
        folder = _find_root(Path(root).expanduser())
        images: dict[tuple[str, int], Path] = {}
        masks: dict[tuple[str, int], Path] = {}
        for case_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for path in case_dir.iterdir():
                match = _SLICE.match(path.name)
                if match:
                    key = (case_dir.name, int(match["slice"]))
                    (masks if match["mask"] else images)[key] = path
        if not images:
            raise DataError(f"no LGG slices (*.tif) found under {folder}. Expected the Kaggle layout: {LAYOUT}")
        orphans = sorted(set(masks) - set(images))
        if orphans:
            warnings.warn(f"{len(orphans)} mask(s) in {folder} have no image, e.g. {masks[orphans[0]]}",
                          UserWarning, stacklevel=2)
        keys = sorted(images)
        index = pd.DataFrame({
            "item": [images[k].stem for k in keys],
            "case": [k[0] for k in keys],
            "patient": ["_".join(k[0].split("_")[:3]) for k in keys],
            "slice": [k[1] for k in keys],
            "image_path": [str(images[k]) for k in keys],
            "mask_path": [str(masks[k]) if k in masks else None for k in keys],
        })
        index = drop_missing(index, index["mask_path"].isna(), on_missing, str(folder))
        self.root = folder
        super().__init__(index, in_channels=3, cache=cache, context=context, normalize=normalize)
        patients = _patient_table(folder / "data.csv")
        if patients is not None:
            extra = patients.drop(columns=[c for c in patients.columns if c in self.index.columns])
            self.index = self.index.join(extra, on="patient")
