"""Your own data listed in a table: one row per image, with its mask and optionally its case.

    image,mask,patient
    scans/a.png,labels/a.png,p01
    ...

CSV (comma-separated, or tab-separated when named ``.tsv``) or parquet (``.parquet``, ``.pq``; needs pyarrow).
Relative paths start at ``root`` (default: the table's folder) and must stay inside it: a ``..``
that leads out of it is refused (:mod:`segkit.data.contained`), so a table someone hands you reads
only files beside it. An absolute path is taken as written: spelling one out is the table's
author's explicit choice; set ``root`` to a common folder instead to keep the check.
For 2.5D context add a case column and a column of integer slice numbers
(``slice_column``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from segkit.labels import check_classes, label_names
from segkit.components.params import check_spacing
from segkit.data import FilePairDataset, drop_missing
from segkit.data.contained import inside_folder
from segkit.data.base import check_context
from segkit.data.intensity import check_normalize
from segkit.errors import ConfigError, DataError, unknown_name

__all__ = ["TableDataset"]

PARQUET_SUFFIXES = (".parquet", ".pq")


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"table not found: {path}. Expected a CSV or parquet file with image and mask columns")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        if importlib.util.find_spec("pyarrow") is None:
            raise DataError(f"reading {path} needs pyarrow, which is not installed: "
                            f"'pip install pyarrow', or save the table as CSV")
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
    try:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _slice_numbers(table: pd.DataFrame, column: str, path: Path) -> list[int]:
    """The integer slice numbers in ``column``; a DataError naming the first row that is not one."""
    numbers = []
    for row, value in enumerate(table[column].tolist()):
        try:
            number = float(str(value).strip())
            if number != int(number):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"table {path}: row {row + 2} has {value!r} in the slice column {column!r}; "
                            "slice numbers must be integers") from None
        numbers.append(int(number))
    return numbers


class TableDataset(FilePairDataset):
    """Images and masks listed in a CSV or parquet table.

    Args:
        path: the table.
        image_column: the column of image paths.
        mask_column: the column of mask paths (an empty cell is a missing mask).
        case_column: the column of case ids; None makes every image its own case.
        root: the folder that relative paths start from and stay inside; default the table's folder.
        cache: keep decoded images in memory after the first read.
        on_missing: ``"error"`` for images without a mask (empty cell or no file),
            or ``"skip"`` to warn and leave them out.
        slice_column: the column of integer slice numbers within a case; needed for ``context``.
        context: 2.5D context ``k``: stack the ``k`` neighbouring slices of the same case on each
            side as extra channels, in slice order; past a case's first or last slice the edge
            slice repeats. Needs ``case_column`` and ``slice_column``. 0 reads single images.
        normalize: ``"case"`` rescales each channel of each case so its 99th percentile of
            non-zero pixels is 204, putting every case on one intensity scale; ``"none"``
            (default) keeps the stored pixels. See :mod:`segkit.data.intensity`.
            Without ``case_column`` every image is its own case.
        classes: the number of label values in the masks, background 0 included: 2 (default) for
            binary masks stored as 0/1 or 0/255; ``C > 2`` for masks whose pixels are the labels
            ``0 .. C-1`` (multi-class).
        labels: optional names of the label values: a list of ``classes`` names, background first,
            or a table from label value to name, e.g. ``{1 = "core", 2 = "oedema"}``.
        spacing: optional physical pixel size, ``[row, column]`` or ``[slice, row, column]``
            (e.g. millimetres): ``segkit evaluate`` then gives boundary distances in those
            units instead of pixels.
        roi_column: a column of region-of-interest images, one per row: pixels outside (0) neither
            train nor score (a retina's field of view).
        ignore_label: a value stored in the masks for pixels that neither train nor score (partial
            annotations), e.g. 128; it must not be one of the label values.
    """

    def __init__(self, path: str, image_column: str = "image", mask_column: str = "mask",
                 case_column: str | None = None, root: str | None = None, cache: bool = False,
                 on_missing: str = "error", slice_column: str | None = None, context: int = 0,
                 normalize: str = "none", classes: int = 2,
                 labels: list[str] | dict[str, str] | None = None, spacing: list[float] | None = None,
                 roi_column: str | None = None, ignore_label: int | None = None) -> None:
        context = check_context(context)
        names = label_names(check_classes(classes, "csv dataset"), labels, "csv dataset")
        spacing = check_spacing(spacing, "csv dataset")
        check_normalize(normalize)
        if context and (case_column is None or slice_column is None):
            absent = " and ".join(n for n, v in (("case_column", case_column), ("slice_column", slice_column))
                                  if v is None)
            raise ConfigError(f"csv dataset: context = {context} stacks neighbouring slices of the same case, so it "
                              f"needs {absent}: the table's columns of case ids and of integer slice numbers "
                              "within a case.")
        table_path = Path(path).expanduser()
        table = _read_table(table_path)
        columns = [str(c) for c in table.columns]
        for option, column in (("image_column", image_column), ("mask_column", mask_column),
                               ("case_column", case_column), ("slice_column", slice_column),
                               ("roi_column", roi_column)):
            if column is not None and column not in table.columns:
                raise unknown_name(f"{option} of {table_path.name}", column, columns)
        if table.empty:
            raise DataError(f"table {table_path} has no rows")
        for column in (image_column, case_column, slice_column, roi_column):
            if column is not None and table[column].isna().any():
                row = int(table[column].isna().to_numpy().argmax())
                raise DataError(f"table {table_path}: row {row + 2} has an empty {column!r} cell")
        base = Path(root).expanduser() if root is not None else table_path.parent

        def resolve(value: object, row: int, column: str) -> str | None:
            if value is None or pd.isna(value) or str(value).strip() == "":
                return None
            full = Path(str(value).strip()).expanduser()
            if full.is_absolute():  # written out in full by whoever made the table: their choice
                return str(full)
            return str(inside_folder(full, base, entry=f"row {row + 2}, column {column!r},",
                                     source=f"table {table_path}", what="the table's root folder"))

        image_paths = [resolve(v, row, image_column) for row, v in enumerate(table[image_column])]
        absent = [p for p in image_paths if not Path(p).is_file()]
        if absent:
            raise DataError(f"{len(absent)} image(s) listed in {table_path} do not exist, e.g. "
                            f"{', '.join(absent[:3])} (relative paths start at {base})")
        mask_paths = [resolve(v, row, mask_column) for row, v in enumerate(table[mask_column])]
        mask_paths = [p if p is not None and Path(p).is_file() else None for p in mask_paths]
        stems = [Path(p).stem for p in image_paths]
        items = stems if len(set(stems)) == len(stems) else [str(v).strip() for v in table[image_column]]
        index = pd.DataFrame({
            "item": items,
            "case": table[case_column].astype(str).to_numpy() if case_column else items,
            **({"slice": _slice_numbers(table, slice_column, table_path)} if slice_column else {}),
            "image_path": image_paths,
            "mask_path": mask_paths,
            **({"roi_path": [resolve(v) for v in table[roi_column]]} if roi_column else {}),
        })
        if roi_column:
            absent = [p for p in index["roi_path"] if not Path(p).is_file()]
            if absent:
                raise DataError(f"{len(absent)} region-of-interest image(s) listed in {table_path} do not exist, "
                                f"e.g. {', '.join(absent[:3])} (relative paths start at {base})")
        index = drop_missing(index, index["mask_path"].isna(), on_missing, str(table_path))
        self.path = table_path
        super().__init__(index, cache=cache, context=context, normalize=normalize,
                         labels=names, ignore_label=ignore_label)
        self.spacing = spacing
