"""Look at a dataset before training: counts, sizes, mask values and a picture of samples."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segkit.data.base import SegmentationDataset
from segkit.data.io import raw_mask_values
from segkit.figures.overlays import label_colour
from segkit.figures.plots import grey_picture
from segkit.progress import track

__all__ = ["summarize", "sample_grid", "channel_names"]

def summarize(dataset: SegmentationDataset, progress: bool = False,
              on_item: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> dict[str, Any]:
    """Read every item once and count what is there (reporting how far it got with ``progress``).

    ``on_item(i, image, mask)`` sees each item as it is read, so a caller that needs more from the
    pixels (``segkit plan``'s fingerprint) does not read the dataset a second time.

    Returns a dict with ``cases``, ``images``, ``lesion_slices``, ``empty_slices``,
    ``image_sizes`` (``"HxW"`` -> count), ``channels`` (channel counts found),
    ``in_channels``, ``mask_values`` (the values stored in the mask files when
    the index has ``mask_path``, else those that ``read`` returns), ``copied_channels``
    (case -> ``[a, b]`` channel pairs, ``a < b``, equal in every slice of the case: a missing
    sequence stored as a copy of another, as LGG stores FLAIR; see ``train.modality_dropout``);
    for a dataset with several labels also ``labels`` (the name of each label value) and
    ``label_slices`` (label name -> slices holding it).
    """
    sizes: Counter[str] = Counter()
    channels: set[int] = set()
    values: set[int] = set()
    names = list(getattr(dataset, "labels", None) or ("background", "lesion"))
    label_slices: Counter[str] = Counter()
    equal_pairs: dict[str, set[tuple[int, int]]] = {}
    cases = dataset.index["case"].astype(str).tolist()
    lesion = 0

    for i, case in track(enumerate(cases), total=len(cases), desc="inspect", enabled=progress):
        image, mask = dataset.read(i)
        if on_item is not None:
            on_item(i, image, mask)
        pairs = _equal_channel_pairs(image, getattr(dataset, "slice_channels", image.shape[2]))
        equal_pairs[case] = equal_pairs[case] & pairs if case in equal_pairs else pairs
        sizes[f"{image.shape[0]}x{image.shape[1]}"] += 1
        channels.add(int(image.shape[2]))
        lesion += bool(mask.any())
        for value in np.unique(mask[mask > 0]).tolist():
            label_slices[names[int(value)] if int(value) < len(names) else str(value)] += 1
        if "mask_path" not in dataset.index.columns:
            values.update(int(v) for v in np.unique(mask))
    if "mask_path" in dataset.index.columns:
        paths = dataset.index["mask_path"]
        for path in track(paths, total=len(paths), desc="inspect, mask files", unit="masks", enabled=progress):
            values.update(raw_mask_values(path))
    summary = {
        "cases": int(dataset.index["case"].nunique()),
        "images": len(dataset),
        "lesion_slices": lesion,
        "empty_slices": len(dataset) - lesion,
        "image_sizes": dict(sizes.most_common()),
        "channels": sorted(channels),
        "in_channels": dataset.in_channels,
        "mask_values": sorted(values),
        "copied_channels": {case: [list(pair) for pair in sorted(pairs)]
                            for case, pairs in equal_pairs.items() if pairs},
    }
    if len(names) > 2:
        summary["labels"] = names
        summary["label_slices"] = {name: label_slices[name] for name in names[1:]}
    return summary


def _equal_channel_pairs(image: np.ndarray, slice_channels: int) -> set[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a < b``, of one slice's channels that hold the same pixels (the first slice of a stack)."""
    if image.ndim < 3 or image.shape[2] < slice_channels:
        return set()
    return {(a, b) for a in range(slice_channels) for b in range(a + 1, slice_channels)
            if np.array_equal(image[:, :, a], image[:, :, b])}


def _display(image: np.ndarray, mask: np.ndarray, channel: int = 0, slice_channels: int | None = None,
             context: int = 0) -> np.ndarray:
    """An RGB uint8 picture of one channel of the slice in grey, each label's mask outlined in its colour.

    ``channel`` counts within a slice; with 2.5D context (``context`` slices stacked on each
    side, ``slice_channels`` each) it is taken from the middle slice, the one the mask belongs to.
    """

    per_slice = slice_channels or image.shape[2]
    picture = np.ascontiguousarray(np.round(grey_picture(image, context * per_slice + channel) * 255).astype(np.uint8))
    thickness = max(1, image.shape[0] // 128)
    for value in np.unique(mask[mask > 0]).tolist():
        contours, _ = cv2.findContours((mask == value).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        colour = tuple(int(round(c * 255)) for c in label_colour(int(value) - 1))
        cv2.drawContours(picture, contours, -1, colour, thickness=thickness)
    return picture


def sample_grid(dataset: SegmentationDataset, path: str | os.PathLike, n: int = 5, seed: int = 0) -> Path:
    """Write a PNG of up to ``n`` random lesion slices (top row) and ``n`` empty ones (bottom row).

    Each slice shows the dataset's ``display_channel`` in grey with each label's mask outlined
    in its colour (a legend names them); matplotlib's Agg canvas is used without pyplot state.
    The file is written atomically; returns its path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    rng = np.random.default_rng(seed)
    flags = dataset.index["has_lesion"].astype(bool).to_numpy()
    rows = []
    for label, chosen in (("lesion", np.flatnonzero(flags)), ("empty", np.flatnonzero(~flags))):
        if len(chosen):
            picks = rng.choice(chosen, size=min(n, len(chosen)), replace=False)
            rows.append((label, np.sort(picks)))
    columns = max((len(picks) for _, picks in rows), default=1)
    height = 2.6 * max(len(rows), 1) + 0.7  # the legend below
    figure = Figure(figsize=(2.2 * columns, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(len(rows), 1), columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (label, picks) in enumerate(rows):
        for c, i in enumerate(picks):
            image, mask = dataset.read(int(i))
            axes[r, c].imshow(_display(image, mask, int(getattr(dataset, "display_channel", 0)),
                                       getattr(dataset, "slice_channels", None), int(getattr(dataset, "context", 0))))
            axes[r, c].set_title(str(dataset.index["item"].iloc[i])[-24:], fontsize=7)
        axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=10)
    names = list(getattr(dataset, "labels", None) or ("background", "lesion"))[1:]
    figure.legend(handles=[Patch(facecolor="white", edgecolor=label_colour(k), linewidth=2, label=name)
                           for k, name in enumerate(names)], loc="lower center", ncol=min(len(names), 6),
                  fontsize=8, frameon=False, title="outlined: true mask", title_fontsize=8)
    figure.tight_layout(rect=(0, 0.7 / height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temp, dpi=100, format="png")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def channel_names(dataset: Any) -> tuple[str, ...] | None:
    """The dataset's names for the channels of one slice (``channel_names``), when it has them for each channel."""
    names = getattr(dataset, "channel_names", None)
    if names is None or len(names) != getattr(dataset, "slice_channels", len(names)):
        return None
    return tuple(str(name) for name in names)
