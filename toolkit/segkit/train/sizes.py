"""A 2D run's image sizes, checked before the run writes anything.

A batch stacks images of one size. A set of images of several sizes trains only when something
brings them to one: ``train.image_size`` (every image resized to N x N) or a 2D ``train.patch_size``
(patches of one size cut from each image). Without either, such a set once failed at its first
batch, after the run folder was made; :func:`check_one_image_size` refuses it before.
"""

from __future__ import annotations

from typing import Any

from segkit.errors import DataError

__all__ = ["image_sizes", "check_one_image_size"]


def image_sizes(dataset: Any) -> dict[tuple[int, int], list[str]] | None:
    """``(height, width)`` -> the items of that size, from the image files' headers (nothing is decoded).

    None for a dataset whose index names no image files (generated items, or slices of volumes,
    which are padded to one size). Files that cannot be opened are left out: the data check names them.
    """
    if "image_path" not in dataset.index.columns:
        return None
    from PIL import Image, UnidentifiedImageError

    sizes: dict[tuple[int, int], list[str]] = {}
    for item, path in zip(dataset.index["item"].astype(str), dataset.index["image_path"], strict=True):
        try:
            with Image.open(path) as opened:
                width, height = opened.size
        except (OSError, UnidentifiedImageError, ValueError):
            continue
        sizes.setdefault((int(height), int(width)), []).append(item)
    return sizes


def check_one_image_size(config: Any, dataset: Any) -> None:
    """:class:`DataError` when the images of ``dataset`` have several sizes and ``config`` brings them to none
    (neither ``train.image_size`` nor ``train.patch_size`` set), naming the sizes and what to set."""
    if config.train.image_size or config.train.patch_size:
        return
    sizes = image_sizes(dataset)
    if not sizes or len(sizes) < 2:
        return
    ranked = sorted(sizes.items(), key=lambda entry: (-len(entry[1]), entry[0]))
    shown = "; ".join(f"{h}x{w} (HxW): {len(items)}, e.g. {items[0]}" for (h, w), items in ranked[:3])
    common = max(ranked[0][0])
    suggested = max(32, round(common / 32) * 32)
    raise DataError(f"the images have {len(sizes)} different sizes ({shown}{'; ...' if len(sizes) > 3 else ''}), "
                    f"and a batch stacks images of one size. Resize them all with --image-size N (e.g. --image-size "
                    f"{suggested}, about the most common size; train.image_size in a config file), or train on patches "
                    f"at their own size with --set 'train.patch_size=[{suggested // 2},{suggested // 2}]' (thin or "
                    "small structures keep their pixels); segkit plan chooses between them.")
