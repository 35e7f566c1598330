"""Your own data as two folders, ``images/`` and ``masks/``, paired by file name.

    root/
      images/  a.png  b.tif  ...
      masks/   a.png  b.tif  ...      (or a_mask.png with mask_suffix="_mask")

Names that differ by more than a suffix pair by ``pair_pattern``, a regular expression whose group
``key`` (or first group) is the same in an image's name and its mask's (``21_training.tif`` and
``21_manual1.gif``: ``'^(\\d+)_'``). An optional third folder, ``roi``, holds a region of interest per
image (a retina's field of view), paired the same way: pixels outside it neither train nor score.

For 2.5D context the slice number comes from the file stem: ``slice_pattern``'s group
``slice`` (or first group), or a ``case_pattern`` with named groups ``case`` and
``slice``, e.g. ``^(?P<case>.+)_(?P<slice>\\d+)$`` for ``patient3_17.png``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from segkit.labels import check_classes, label_names
from segkit.components.params import check_spacing
from segkit.data import IMAGE_SUFFIXES, FilePairDataset, drop_missing
from segkit.data.base import check_context
from segkit.data.intensity import check_normalize
from segkit.errors import ConfigError, DataError
from segkit.tomlio import parse_toml_value

__all__ = ["FolderDataset", "case_ids", "slice_numbers", "mask_suffix_advice"]


def _listing(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem; DataError when two share a stem."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise DataError(f"{found[path.stem].name} and {path.name} in {folder} share the name "
                                f"{path.stem!r}; keep one file per image")
            found[path.stem] = path
    return found


def _pair(images: list[str], files: dict[str, Path], folder: Path, pair_pattern: str | None,
          suffix: str) -> dict[str, Path | None]:
    """The file of ``files`` (by stem) each image stem pairs with: ``stem + suffix``, or the same ``pair_pattern``
    key; None where there is none. A DataError when the pattern matches no name, or two files share a key."""
    if pair_pattern is None:
        return {stem: files.get(stem + suffix) for stem in images}
    image_keys = _group_texts(images, pair_pattern, "key", "pair_pattern")
    file_keys = _group_texts(list(files), pair_pattern, "key", "pair_pattern")
    for what, names, keys in (("image", images, image_keys), ("file", list(files), file_keys)):
        if names and all(key is None for key in keys):
            where = "the images" if what == "image" else str(folder)
            raise DataError(f"pair_pattern {pair_pattern!r} matches none of the {len(names)} names in {where} "
                            f"(e.g. {', '.join(names[:3])}); give a regular expression whose group 'key' (or first "
                            "group) is the part an image's name shares with its mask's, e.g. '^(\\d+)_' for "
                            "21_training.tif and 21_manual1.gif")
    by_key: dict[str, Path] = {}
    for stem, key in zip(files, file_keys, strict=True):
        if key is None:
            continue
        if key in by_key:
            raise DataError(f"{by_key[key].name} and {files[stem].name} in {folder} both match pair_pattern "
                            f"{pair_pattern!r} with the key {key!r}; keep one file per key")
        by_key[key] = files[stem]
    return {stem: by_key.get(key) if key is not None else None for stem, key in zip(images, image_keys, strict=True)}


def _group_texts(names: list[str], pattern_text: str, group_name: str, option: str) -> list[str | None]:
    """The text of ``pattern_text``'s group ``group_name`` (or first group, or whole match) in every name.

    None where the pattern does not match; ConfigError when it is not a valid regular expression.
    """
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise ConfigError(f"{option} {pattern_text!r} is not a valid regular expression: {exc}") from None
    group = group_name if group_name in pattern.groupindex else (1 if pattern.groups else 0)
    texts = []
    for name in names:
        match = pattern.search(name)
        texts.append(match.group(group) if match is not None else None)
    return texts


def case_ids(names: list[str], case_pattern: str | None) -> list[str]:
    """The case of every name: the regex's group ``case`` (or first group, or whole match), else the name."""
    if case_pattern is None:
        return list(names)
    cases = _group_texts(names, case_pattern, "case", "case_pattern")
    unmatched = [name for name, case in zip(names, cases, strict=True) if case is None]
    if unmatched:
        raise DataError(f"case_pattern {case_pattern!r} matches no case in {len(unmatched)} name(s), "
                        f"e.g. {', '.join(unmatched[:3])}")
    return cases  # type: ignore[return-value]


def _has_group(pattern: str | None, name: str) -> bool:
    """Whether ``pattern`` compiles and has the named group ``name``."""
    try:
        return pattern is not None and name in re.compile(pattern).groupindex
    except re.error:
        return False  # case_ids reports the bad pattern


def slice_numbers(names: list[str], slice_pattern: str, option: str = "slice_pattern") -> list[int]:
    """The slice number of every name: the regex's group ``slice`` (or first group, or whole match), an integer."""
    numbers, unmatched = [], []
    for name, text in zip(names, _group_texts(names, slice_pattern, "slice", option), strict=True):
        try:
            numbers.append(int(text))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            unmatched.append(name if text is None else f"{name} ({text!r})")
    if unmatched:
        raise DataError(f"{option} {slice_pattern!r} finds no integer slice number in {len(unmatched)} name(s), "
                        f"e.g. {', '.join(unmatched[:3])}")
    return numbers


def mask_suffix_advice(unpaired: list[str], mask_files: dict[str, Path], mask_dir: Path) -> str:
    """What pairs the images ``unpaired`` (stems) with masks: the suffix that most mask stems add to theirs,
    as the ``--set`` that sets it, naming a mask it pairs; "" when no mask stem extends an image stem."""
    suffixes: dict[str, list[str]] = {}
    for stem in unpaired:
        for mask_stem in mask_files:
            if mask_stem.startswith(stem) and len(mask_stem) > len(stem):
                suffixes.setdefault(mask_stem[len(stem):], []).append(mask_stem)
    if not suffixes:
        return ""
    suffix, masks = max(suffixes.items(), key=lambda entry: (len(entry[1]), -len(entry[0])))
    value = suffix if parse_toml_value(suffix) == suffix else f'"{suffix}"'
    setting = f"--set dataset.mask_suffix={value}" if value == suffix else f"--set 'dataset.mask_suffix={value}'"
    rest = len(unpaired) - len(masks)
    return (f"The masks carry a suffix: {mask_files[masks[0]].name} in {mask_dir} is the mask of image "
            f"{masks[0][:-len(suffix)]}, and '{suffix}' pairs {len(masks)} of these {len(unpaired)} image(s). "
            f"Pair them with {setting} (mask_suffix = \"{suffix}\" under [dataset] in a config file)"
            + (f"; the other {rest} then still need a mask, or on_missing='skip' to leave them out." if rest else "."))


class FolderDataset(FilePairDataset):
    """Images and masks in two folders, paired by file stem (png, jpg, jpeg, tif, tiff).

    Args:
        root: the folder holding ``images`` and ``masks``.
        images: the image folder, relative to ``root``.
        masks: the mask folder, relative to ``root``.
        case_pattern: a regex on the image stem whose named group ``case`` (or first
            group) is the case id, e.g. ``r"^(patient\\d+)_"``; None makes every image its own case.
            A named group ``slice`` also gives the slice number.
        mask_suffix: what the mask stem adds to the image stem, e.g. ``"_mask"``.
        cache: keep decoded images in memory after the first read.
        on_missing: ``"error"`` for images without a mask, or ``"skip"`` to warn and leave them out.
        slice_pattern: a regex on the image stem whose named group ``slice`` (or first group)
            is the slice number within the case, e.g. ``r"_(\\d+)$"``; needed for ``context``
            unless ``case_pattern`` has a group ``slice``.
        context: 2.5D context ``k``: stack the ``k`` neighbouring slices of the same case on each
            side as extra channels, in slice order; past a case's first or last slice the edge
            slice repeats. Needs ``case_pattern`` and a slice number. 0 reads single images.
        normalize: ``"case"`` rescales each channel of each case so its 99th percentile of
            non-zero pixels is 204, putting every case on one intensity scale; ``"none"``
            (default) keeps the stored pixels. See :mod:`segkit.data.intensity`.
            Without ``case_pattern`` every image is its own case.
        classes: the number of label values in the masks, background 0 included: 2 (default) for
            binary masks stored as 0/1 or 0/255; ``C > 2`` for masks whose pixels are the labels
            ``0 .. C-1`` (multi-class).
        labels: optional names of the label values: a list of ``classes`` names, background first,
            or a table from label value to name, e.g. ``{1 = "core", 2 = "oedema"}``.
        spacing: optional physical pixel size, ``[row, column]`` or ``[slice, row, column]``
            (e.g. millimetres): ``segkit evaluate`` then gives boundary distances in those
            units instead of pixels.
        pair_pattern: a regex whose group ``key`` (or first group) pairs an image with the mask (and
            region of interest) whose name holds the same key, e.g. ``'^(\\d+)_'``; None pairs by
            ``stem + mask_suffix``.
        roi: a folder (relative to ``root``) of region-of-interest images, one per image, paired like the
            masks (``stem + roi_suffix``, or ``pair_pattern``): pixels outside (0) neither train nor score.
        roi_suffix: what a region of interest's stem adds to the image's stem.
        ignore_label: a value stored in the masks for pixels that neither train nor score (partial
            annotations), e.g. 128; it must not be one of the label values.
    """

    def __init__(self, root: str, images: str = "images", masks: str = "masks", case_pattern: str | None = None,
                 mask_suffix: str = "", cache: bool = False, on_missing: str = "error",
                 slice_pattern: str | None = None, context: int = 0,
                 normalize: str = "none", classes: int = 2,
                 labels: list[str] | dict[str, str] | None = None, spacing: list[float] | None = None,
                 pair_pattern: str | None = None, roi: str | None = None, roi_suffix: str = "",
                 ignore_label: int | None = None) -> None:
        context = check_context(context)
        names = label_names(check_classes(classes, "folder dataset"), labels, "folder dataset")
        spacing = check_spacing(spacing, "folder dataset")
        check_normalize(normalize)
        if context and case_pattern is None:
            raise ConfigError(f"folder dataset: context = {context} stacks neighbouring slices of the same case, "
                              "but without case_pattern every image is its own case. Set case_pattern, e.g. "
                              "'^(?P<case>.+)_(?P<slice>\\d+)$' for files named <case>_<slice>.png.")
        slice_source = slice_pattern
        if slice_source is None and _has_group(case_pattern, "slice"):
            slice_source = case_pattern
        if context and slice_source is None:
            raise ConfigError(f"folder dataset: context = {context} needs the slice number of every image: set "
                              "slice_pattern (a regular expression whose group 'slice', or first group, is the "
                              "number in the file name, e.g. '_(\\d+)$'), or give case_pattern a named group "
                              "'slice', e.g. '^(?P<case>.+)_(?P<slice>\\d+)$'.")
        base = Path(root).expanduser()
        image_dir, mask_dir = base / images, base / masks
        roi_dir = base / roi if roi is not None else None
        for name, folder in (("image", image_dir), ("mask", mask_dir)) + ((("region-of-interest", roi_dir),)
                                                                          if roi_dir is not None else ()):
            if not folder.is_dir():
                raise DataError(f"{name} folder not found: {folder}. Expected {base}/{images}/ and "
                                f"{base}/{masks}/ with files paired by name (png, jpg, tif)")
        image_files = _listing(image_dir)
        if not image_files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        mask_files = _listing(mask_dir)
        stems = list(image_files)
        paired = _pair(stems, mask_files, mask_dir, pair_pattern, mask_suffix)
        unused = len(mask_files) - sum(p is not None for p in paired.values())
        unpaired = [stem for stem in stems if paired[stem] is None]
        if unused and not unpaired:  # where images lack masks too, the error below says it all
            warnings.warn(f"{unused} file(s) in {mask_dir} match no image", UserWarning, stacklevel=2)
        index = pd.DataFrame({
            "item": stems,
            "case": case_ids(stems, case_pattern),
            **({"slice": slice_numbers(stems, slice_source, "slice_pattern" if slice_pattern else "case_pattern")}
               if slice_source is not None else {}),
            "image_path": [str(image_files[s]) for s in stems],
            "mask_path": [str(paired[s]) if paired[s] is not None else None for s in stems],
        })
        if roi_dir is not None:
            regions = _pair(stems, _listing(roi_dir), roi_dir, pair_pattern, roi_suffix)
            absent = [s for s in stems if regions[s] is None]
            if absent:
                raise DataError(f"{len(absent)} image(s) have no region of interest in {roi_dir}, e.g. "
                                f"{', '.join(absent[:3])} (looked for "
                                + (f"pair_pattern {pair_pattern!r}'s key" if pair_pattern else f"<stem>{roi_suffix}.<ext>")
                                + "); give every image one, or leave roi out")
            index["roi_path"] = [str(regions[s]) for s in stems]
        looked = f"pair_pattern {pair_pattern!r}'s key" if pair_pattern else f"<stem>{mask_suffix}.<ext>"
        hint = f" (looked for {looked} in {mask_dir})"
        index = drop_missing(index, index["mask_path"].isna(), on_missing, f"{image_dir}{hint}",
                             None if pair_pattern else mask_suffix_advice(unpaired, mask_files, mask_dir))
        self.root = base
        super().__init__(index, cache=cache, context=context, normalize=normalize,
                         labels=names, ignore_label=ignore_label)
        self.spacing = spacing
