"""A dataset's fingerprint: what ``segkit plan`` decides from, read in one pass over the data.

It reuses ``segkit inspect``'s summaries (:func:`segkit.data.inspect.summarize` for images,
:func:`segkit.data.volume_summary.summarize_volumes` for volumes) and adds, from the same reads,
per-channel intensity statistics of 2D data (all pixels and foreground ones), object sizes (2D:
connected regions per slice; volumes: each label's voxels per case), the share of empty items and
cases, and the flags inspect raises. Volumes also keep each case's shape and spacing
(``case_geometry``), from which a planner derives a target spacing and the shapes after resampling,
as nnU-Net's fingerprint keeps them. :func:`check_fingerprint` refuses data a run cannot learn from.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from segkit.data.inspect import channel_names, summarize
from segkit.data.volume import VolumeDataset
from segkit.data.volume_summary import summarize_volumes
from segkit.errors import DataError

__all__ = ["fingerprint_dataset", "check_fingerprint", "PIXELS_PER_ITEM"]

PIXELS_PER_ITEM = 2_000
"""Pixels sampled (seeded) per 2D item and channel for the intensity statistics, all and foreground each."""
SCALE_RATIO_2D = 1.5
"""Cases of 2D data whose 99th percentiles differ by this factor or more are flagged (stored on other scales)."""


def _stats(values: np.ndarray) -> dict[str, float] | None:
    if values.size == 0:
        return None
    values = values.astype(np.float64)
    low, median, high = np.percentile(values, (0.5, 50.0, 99.5))
    return {"p0.5": float(low), "p50": float(median), "p99.5": float(high), "mean": float(values.mean()),
            "std": float(values.std()), "voxels": int(values.size)}


def _spread(values: list[float] | np.ndarray) -> dict[str, float] | None:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return None
    return {"count": int(array.size), "min": float(array.min()), "median": float(np.median(array)),
            "mean": float(array.mean()), "max": float(array.max())}


class _ImageSampler:
    """Collects, item by item, pixel samples per channel and the sizes of each label's regions (2D data)."""

    def __init__(self, dataset: Any, labels: list[str], seed: int = 0) -> None:
        self.channels = int(getattr(dataset, "slice_channels", dataset.in_channels))
        self.labels = labels
        self.cases = dataset.index["case"].astype(str).tolist()
        self.rng = np.random.default_rng(seed)
        self.all: list[list[np.ndarray]] = [[] for _ in range(self.channels)]
        self.foreground: list[list[np.ndarray]] = [[] for _ in range(self.channels)]
        self.case_pixels: dict[str, list[list[np.ndarray]]] = defaultdict(lambda: [[] for _ in range(self.channels)])
        self.regions: dict[str, list[int]] = {name: [] for name in labels[1:]}
        self.widths: dict[str, list[float]] = {name: [] for name in labels[1:]}

    def __call__(self, i: int, image: np.ndarray, mask: np.ndarray) -> None:
        import cv2

        pixels = np.asarray(image).reshape(-1, np.asarray(image).shape[-1])[:, : self.channels]
        flat = np.asarray(mask).reshape(-1)
        anywhere = self.rng.choice(flat.size, min(PIXELS_PER_ITEM, flat.size), replace=False)
        inside = np.flatnonzero(flat > 0)
        if inside.size > PIXELS_PER_ITEM:
            inside = self.rng.choice(inside, PIXELS_PER_ITEM, replace=False)
        for c in range(min(self.channels, pixels.shape[1])):
            self.all[c].append(pixels[anywhere, c])
            self.foreground[c].append(pixels[inside, c])
            self.case_pixels[self.cases[i]][c].append(pixels[anywhere, c])
        for value in np.unique(flat[flat > 0]).tolist():
            if 0 < value < len(self.labels):
                binary = (np.asarray(mask) == value).astype(np.uint8)
                count, _, stats, _ = cv2.connectedComponentsWithStats(binary)
                self.regions[self.labels[value]].extend(int(a) for a in stats[1:count, cv2.CC_STAT_AREA])
                self.widths[self.labels[value]].append(structure_width(binary))

    def intensity(self, names: list[str]) -> list[dict[str, Any]]:
        """Per channel: stats of all and foreground pixels, and the spread of the cases' 99th percentiles."""
        result = []
        for c in range(self.channels):
            tops = []
            for case, per_channel in self.case_pixels.items():
                values = np.concatenate(per_channel[c]) if per_channel[c] else np.zeros(0)
                bright = values[values > 0]
                if bright.size:
                    tops.append((case, float(np.percentile(bright, 99))))
            ratio = max(t for _, t in tops) / min(t for _, t in tops) if tops else None
            result.append({
                "channel": names[c] if c < len(names) else str(c),
                "all": _stats(np.concatenate(self.all[c])) if self.all[c] else None,
                "foreground": _stats(np.concatenate(self.foreground[c])) if self.foreground[c] else None,
                "case_p99": {"smallest": min(tops, key=lambda t: t[1]) if tops else None,
                             "largest": max(tops, key=lambda t: t[1]) if tops else None,
                             "ratio": ratio, "differs": bool(ratio is not None and ratio >= SCALE_RATIO_2D)},
            })
        return result


def structure_width(binary: np.ndarray) -> float:
    """How wide a label's structures are, in pixels: twice their area over their boundary pixels.

    A line ``w`` pixels wide gives ``w``; a disk of radius ``r`` gives ``r``; what matters to a planner is
    how few pixels a structure keeps across when the image is resized (vessels: 2-3, polyps: hundreds).
    """
    import cv2

    inside = binary > 0
    area = int(inside.sum())
    if not area:
        return 0.0
    padded = np.pad(binary, 1)  # the image border is a boundary too
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8))[1:-1, 1:-1] > 0
    boundary = int((inside & ~eroded).sum())
    return 2.0 * area / max(boundary, 1)


def _stored_channels(dataset: Any) -> dict[int, list[str]]:
    """Channel counts as stored in the image files (read from their headers), with up to 3 items each.

    A reader may convert every image to the first one's channels; the files still tell when cases differ.
    Empty for datasets without ``image_path`` or files Pillow cannot open.
    """
    if "image_path" not in dataset.index.columns:
        return {}
    from PIL import Image, UnidentifiedImageError

    found: dict[int, list[str]] = {}
    for item, path in zip(dataset.index["item"].astype(str), dataset.index["image_path"], strict=True):
        try:
            with Image.open(path) as image:
                bands = len([band for band in image.getbands() if band != "A"])  # alpha is not a channel
        except (OSError, UnidentifiedImageError):
            continue
        items = found.setdefault(bands, [])
        if len(items) < 3:
            items.append(item)
    return found


def _empty_cases(dataset: Any) -> int:
    """Cases none of whose items holds a label."""
    table = dataset.index[["case", "has_lesion"]].astype({"has_lesion": bool})
    return int((~table.groupby("case")["has_lesion"].any()).sum())


def fingerprint_dataset(dataset: Any, name: str, progress: bool = False) -> dict[str, Any]:
    """Read ``dataset`` once and describe it (see the module docstring); ``name`` is its registry name."""

    labels = list(getattr(dataset, "labels", None) or ("background", "lesion"))
    names = list(channel_names(dataset) or [str(c) for c in range(int(getattr(dataset, "slice_channels",
                                                                              dataset.in_channels)))])
    per_case = dataset.index.groupby("case").size().to_numpy()
    fingerprint: dict[str, Any] = {"dataset": name, "kind": "images", "labels": labels, "channel_names": names}
    if isinstance(dataset, VolumeDataset):
        both = summarize_volumes(dataset, progress=progress)
        summary, volumes = both["slices"], both["volumes"]
        fingerprint.update(kind="volumes", shape=volumes["shape"], spacing=volumes["spacing"],
                           anisotropy=volumes["anisotropy"], slice_axis=volumes["slice_axis"],
                           slice_size=list(dataset.slice_shape), intensity=volumes["intensity"]["channels"],
                           object_sizes={label: entry["voxels"] for label, entry in volumes["label_volumes"].items()},
                           object_sizes_unit="voxels of the label per case holding it",
                           label_cases={label: entry["cases"] for label, entry in volumes["label_volumes"].items()},
                           case_geometry={"shape": [[int(n) for n in shape] for shape in dataset.cases_table["shape"]],
                                          "spacing": [[float(s) for s in spacing]
                                                      for spacing in dataset.cases_table["spacing"]]})
    else:
        sampler = _ImageSampler(dataset, labels)
        summary = summarize(dataset, progress=progress, on_item=sampler)
        fingerprint.update(intensity=sampler.intensity(names),
                           object_sizes={label: _spread(sizes) for label, sizes in sampler.regions.items()},
                           object_sizes_unit="pixels per connected region of the label in a slice",
                           structure_width={label: _spread(widths) for label, widths in sampler.widths.items()},
                           structure_width_unit="pixels across a label's structures (2 x area / boundary) per slice")
    items = int(summary["images"])
    fingerprint.update(
        cases=int(summary["cases"]), items=items, items_per_case=_spread(per_case),
        image_sizes=summary["image_sizes"], channels=summary["channels"], in_channels=int(dataset.in_channels),
        mask_values=summary["mask_values"],
        label_items=summary.get("label_slices", {labels[1]: summary["lesion_slices"]} if len(labels) > 1 else {}),
        empty={"items": summary["empty_slices"], "items_share": summary["empty_slices"] / items if items else 0.0,
               "cases": _empty_cases(dataset)},
        copied_channels=summary["copied_channels"],
        stored_channels=_stored_channels(dataset),
        slice_numbers="slice" in dataset.index.columns,
    )
    fingerprint["flags"] = _flags(fingerprint)
    return fingerprint


def _flags(fingerprint: dict[str, Any]) -> list[str]:
    """What ``segkit inspect`` warns about, as sentences: missing sequences, intensity scales that differ."""
    flags = []
    copied = fingerprint["copied_channels"]
    if copied and len(copied) < fingerprint["cases"]:
        flags.append(f"{len(copied)} case(s) store a channel as a copy of another (a missing sequence)")
    elif copied:
        flags.append("every case stores its channels as copies of one another (grey images in colour files?)")
    for channel in fingerprint["intensity"]:
        scale = channel.get("scale") or channel.get("case_p99") or {}
        if scale.get("differs"):
            flags.append(f"channel {channel['channel']}: the cases' intensity scales differ x{scale['ratio']:.3g}")
    if fingerprint["empty"]["cases"]:
        flags.append(f"{fingerprint['empty']['cases']} case(s) hold no label at all")
    stored = fingerprint.get("stored_channels") or {}
    if len(stored) > 1:
        shown = "; ".join(f"{count} in {', '.join(items)}" for count, items in sorted(stored.items()))
        flags.append(f"the image files store different channel counts ({shown}); every image is read with "
                     f"{fingerprint['in_channels']} channel(s), as the first one stores (grey repeated, or colour "
                     "turned grey)")
    return flags


def check_fingerprint(fingerprint: dict[str, Any], name: str) -> None:
    """A one-line :class:`DataError` for data no run can learn from: empty, labels absent or out of range.

    Images that store different channel counts are read with the first one's (as ``segkit run`` reads them),
    which :func:`_flags` says."""
    if fingerprint["items"] == 0:
        raise DataError(f"dataset {name!r} has no items: nothing to plan for. Check --data-root and its parameters.")
    labels = fingerprint["labels"]
    allowed = set(range(len(labels))) | ({255} if len(labels) == 2 else set())
    outside = [v for v in fingerprint["mask_values"] if v not in allowed]
    if outside:
        raise DataError(f"dataset {name!r}: mask values {outside} are outside its labels 0..{len(labels) - 1} "
                        f"({', '.join(labels)}); fix the masks or declare the labels (see 'segkit inspect').")
    if not any(v > 0 for v in fingerprint["mask_values"]):
        raise DataError(f"dataset {name!r}: no item holds a label (every mask is empty or missing); a model cannot "
                        "learn to segment from it.")
    absent = [label for label in labels[1:] if not fingerprint["label_items"].get(label)]
    if absent:
        raise DataError(f"dataset {name!r}: label(s) {', '.join(absent)} appear in no item; remove them from the "
                        "dataset's labels or add cases that hold them.")
